"""Host-side compiler: the integer ViT (``intvit.IntViT``) into programs of the model-level accelerator.

Milestone 1 of issue 17 compiles what the accelerator runs today from a block's integer constants
alone (``IntBlock``): no hand-written program, no constant re-derived. ``mlp_half_program``: the
MLP half (``norm2 -> fc1 -> i-GELU -> fc2 -> add2``). ``block_program``: the whole block, its
attention output **replayed**: the heads are not an instruction yet (milestone 2: the ViTCoD
head), so the program LOADs the attention output the caller gives (the integer golden model's,
in the tests) where the ATTENTION instructions will go, and runs ``norm1``, ``qkv``, ``proj``,
``add1`` and the MLP half on the hardware.

Milestone 2 (host side): ``attention_instructions`` turns a block's heads into ATTENTION
instructions (the ViTCoD head on the qkv region, ``isa.Attention``); ``block_program`` with
``attention=None`` computes the heads instead of replaying them, and ``model_program`` compiles a
whole image: the patch embedding (a host im2col LOADed as int8 patches, MATMUL, then ADD of the
position constant), every block, the final LayerNorm of the class token and the classifier (a raw
MATMUL: the int32 logits leave as two int16 halves, ``isa.raw_halves_to_int32`` joins them;
``model_logits`` is the same classifier on the host, for a final norm alone). These programs run on
``ReferenceMachine`` (with ``vitcod_head_golden`` as its head) and on the RTL.

Linear layers go out dense, or (``sparse``) as CSR of their non-zero weights: a robust ticket's
pruned weights are zeros in ``IntLinear.weight``, and a kept weight that quantized to zero adds
nothing, so the CSR computes the same sums with fewer weight beats.
"""

from __future__ import annotations

import numpy as np

from attnforge.errors import ConfigError
from attnforge.formats.csr import dense_to_csr
from attnforge.hw.vitmodel import (Add, Attention, Gelu, LayerNorm, Load, Matmul, Region, Store, VitModelConfig,
                                   check_program)
from attnforge.int_ops import INT16
from attnforge.numfmt import Requantizer

from .golden import HeadParams, vitcod_head_golden
from .intvit import IntBlock, IntLinear, IntViT, _patches

__all__ = ["RegionAllocator", "mlp_half_instructions", "mlp_half_program", "block_program", "MLP_TENSORS",
           "BLOCK_TENSORS", "ATTENTION_BLOCK_TENSORS", "attention_instructions", "model_program", "model_tensors",
           "head_function", "reference_machine", "model_logits", "classifier_instructions", "pad_classes", "LOGITS_TENSORS"]

#: The classifier's STOREs: the int32 logits' low and high int16 halves (``isa.raw_halves_to_int32``).
LOGITS_TENSORS = ("logits.lo", "logits.hi")
#: The MLP half's tensors in the order its program STOREs them (names as ``intvit.trace_image``'s, per layer).
MLP_TENSORS = ("norm2", "fc1", "gelu", "fc2", "add2")
#: A block's STOREd tensors (``qkv``: the int8 matmul output, columns ``[3, H, d]`` as timm's).
BLOCK_TENSORS = ("norm1", "qkv", "proj", "add1") + MLP_TENSORS
#: The same with the heads computed by ATTENTION instructions (their output STOREd as ``attn``).
ATTENTION_BLOCK_TENSORS = ("norm1", "qkv", "attn", "proj", "add1") + MLP_TENSORS


def head_function(q, k, v, g, csr, exp_rq, out_rq):
    """The ViTCoD head as ``ReferenceMachine``'s ATTENTION runs it: ``vitcod_head_golden``."""
    return vitcod_head_golden(q, k, v, g, csr, HeadParams(exp_rq, out_rq))


def reference_machine(config: VitModelConfig):
    """A ``ReferenceMachine`` whose ATTENTION is the ViTCoD head golden model."""
    from attnforge.hw.vitmodel import ReferenceMachine

    return ReferenceMachine(config, attention=head_function)


def attention_instructions(blk: IntBlock, qkv: Region, out: Region) -> list:
    """One ATTENTION per head of ``blk``: the heads of the int8 ``qkv [N, 3 H d]`` into ``out [N, H d]``."""
    H = len(blk.heads)
    return [Attention(qkv, out, h, H, np.asarray(head.order, np.int64), int(head.n_global), head.csr,
                      head.params.exp, head.params.out) for h, head in enumerate(blk.heads)]

class RegionAllocator:
    """Hands out consecutive regions of the activation buffer; ``ConfigError`` when it is full."""

    def __init__(self, config: VitModelConfig, first_tile: int = 0):
        self.config = config
        self.next = first_tile

    def __call__(self, rows: int, cols: int, name: str = "tensor") -> Region:
        reg = Region(self.next, rows, cols)
        if reg.end(self.config.lanes) > self.config.buffer_tiles:
            raise ConfigError(f"the activation buffer ({self.config.buffer_tiles} tiles) is full: {name} "
                              f"({rows} x {cols}) needs tiles {reg.base}..{reg.end(self.config.lanes) - 1}")
        self.next = reg.end(self.config.lanes)
        return reg


def _matmul(lin: IntLinear, src: Region, dst: Region, sparse: bool) -> Matmul:
    if lin.requant is None:
        raise ConfigError("a raw int32 matmul (the classifier) is not an instruction of this hardware yet")
    w = np.asarray(lin.weight, np.int8)
    weight = dense_to_csr(w) if sparse else w
    return Matmul(src, dst, weight, np.asarray(lin.bias, np.int64), tuple(lin.requant))


def mlp_half_instructions(blk: IntBlock, x: Region, alloc: RegionAllocator, *, sparse: bool = False,
                          store: bool = True, out: Region | None = None) -> tuple[list, Region]:
    """The instructions of ``add2(x, fc2(gelu(fc1(norm2(x)))))`` on the int16 residual in region ``x``;
    with ``store`` every tensor is STOREd after the op that writes it (``MLP_TENSORS``' order). Returns the
    instructions and the region of add2 (``out`` if given: a region disjoint from ``x``)."""
    rows = x.rows
    hidden = blk.fc1.weight.shape[0]
    a = alloc(rows, x.cols, "norm2")
    h = alloc(rows, hidden, "fc1")
    g = alloc(rows, hidden, "gelu")
    f = alloc(rows, x.cols, "fc2")
    y = alloc(rows, x.cols, "add2") if out is None else out
    ops = [LayerNorm(x, a, blk.norm2.gamma, blk.norm2.beta, blk.norm2.requant, int(blk.norm2.eps)),
           _matmul(blk.fc1, a, h, sparse),
           Gelu(h, g, blk.gelu.t, blk.gelu.c, blk.gelu.requant),
           _matmul(blk.fc2, g, f, sparse),
           Add(x, f, y, blk.add2.a_rq, blk.add2.b_rq)]
    out = []
    for ins, reg in zip(ops, (a, h, g, f, y)):
        out.append(ins)
        if store:
            out.append(Store(reg))
    return out, y


def _check_call(qm: IntViT, layer: int, residual) -> np.ndarray:
    if not 0 <= layer < len(qm.blocks):
        raise ConfigError(f"layer must be in [0, {len(qm.blocks) - 1}], not {layer!r}")
    residual = np.asarray(residual, np.int64)
    if residual.ndim != 2 or residual.shape[1] != qm.config["embed_dim"]:
        raise ConfigError(f"the residual must be [tokens, {qm.config['embed_dim']}], not {residual.shape}")
    return residual


def block_instructions(blk: IntBlock, x: Region, x1: Region, alloc: RegionAllocator, *, attention=None,
                       sparse: bool = False, store: bool = True) -> tuple[list, Region]:
    """Block ``blk`` on the int16 residual in region ``x``: add1 goes to ``x1``, add2 back to ``x``
    (two residual regions in turn), the rest to scratch from ``alloc`` (reused by each half). The heads:
    ATTENTION instructions, or with ``attention`` (int8 ``[tokens, D]``) that output LOADed instead.
    With ``store`` every tensor is STOREd (``ATTENTION_BLOCK_TENSORS``, or ``BLOCK_TENSORS`` when replayed).
    Returns the instructions and the region of add2 (``x``)."""
    rows, dim = x.rows, x.cols
    scratch = alloc.next
    a, qkv = alloc(rows, dim, "norm1"), alloc(rows, blk.qkv.weight.shape[0], "qkv")
    o, pr = alloc(rows, dim, "the attention output"), alloc(rows, dim, "proj")
    heads = [Load(o, attention)] if attention is not None else [*attention_instructions(blk, qkv, o), Store(o)]
    ops = [LayerNorm(x, a, blk.norm1.gamma, blk.norm1.beta, blk.norm1.requant, int(blk.norm1.eps)), Store(a),
           _matmul(blk.qkv, a, qkv, sparse), Store(qkv), *heads,
           _matmul(blk.proj, o, pr, sparse), Store(pr),
           Add(x, pr, x1, blk.add1.a_rq, blk.add1.b_rq), Store(x1)]
    alloc.next = scratch
    body, y = mlp_half_instructions(blk, x1, alloc, sparse=sparse, out=x)
    program = [ins for ins in ops + body if store or not isinstance(ins, Store)]
    return program, y


def block_program(qm: IntViT, layer: int, residual, attention, config: VitModelConfig, *,
                  sparse: bool = False) -> list:
    """Block ``layer`` on the int16 residual ``[tokens, D]`` entering it. The heads: with ``attention``
    (int8 ``[tokens, D]``, heads concatenated as ``proj`` takes it) that output is LOADed instead of
    computed and ``BLOCK_TENSORS`` are STOREd; with ``attention`` None they are ATTENTION instructions
    and ``ATTENTION_BLOCK_TENSORS`` are STOREd."""
    residual = _check_call(qm, layer, residual)
    if attention is not None:
        attention = np.asarray(attention, np.int64)
        if attention.shape != residual.shape:
            raise ConfigError(f"the attention output must be {list(residual.shape)} like the residual, not "
                              f"{list(attention.shape)}")
    rows, dim = residual.shape
    alloc = RegionAllocator(config)
    x, x1 = alloc(rows, dim, "the residual"), alloc(rows, dim, "add1")
    body, _ = block_instructions(qm.blocks[layer], x, x1, alloc, attention=attention, sparse=sparse)
    program = [Load(x, residual), *body]
    check_program(program, config)
    return program


#: identity requantizers of the patch embedding's ADD (``embed = sat16(patch + pos)``)
def _identity(config: VitModelConfig) -> Requantizer:
    return Requantizer(1, 0, config.add.wide_format, config.multiplier_width)


def model_tensors(qm: IntViT) -> list[str]:
    """The names (``intvit.trace_image``'s) of what ``model_program`` STOREs, in order; ``patch`` here has
    the class token's row first (the embedding MATMUL's output for an all-zero patch)."""
    names = ["patch", "embed"]
    for layer in range(len(qm.blocks)):
        names += [f"blocks.{layer}.{t}" for t in ATTENTION_BLOCK_TENSORS]
    return names + ["norm", *LOGITS_TENSORS]


def model_program(qm: IntViT, image_q, config: VitModelConfig, *, sparse: bool = False) -> list:
    """One int8 image ``[C, S, S]`` (``intvit.quantize_image``'s) through the whole integer ViT to the
    class token's logits, STOREing ``model_tensors(qm)`` (the logits as their low and high int16 halves,
    ``LOGITS_TENSORS``).

    Patch embedding: the host's im2col of the image (``intvit._patches``), with an all-zero row for the
    class token, is LOADed; the embedding MATMUL writes ``rq(bias)`` in that row, so the LOADed position
    constant is ``pos`` with that row corrected (``pos[0] - rq(bias)``), and an ADD with identity
    requantizers gives ``sat16(e + pos)`` as ``int_forward`` does (checked to fit int16)."""
    cfg = qm.config
    xq = np.asarray(image_q)
    if xq.dtype != np.int8 or xq.ndim != 3:
        raise ConfigError(f"model_program takes one int8 image [C, S, S], got {xq.dtype} shape {xq.shape}")
    if qm.patch.requant is None or qm.patch.requant[0].out != INT16:
        raise ConfigError("model_program needs the int16 residual stream (compile_int_vit's default "
                          "stream_bits=16)")
    patches = _patches(xq[None], cfg["patch_size"])[0].astype(np.int64)
    n, dim = patches.shape[0] + 1, cfg["embed_dim"]
    rows = np.concatenate([np.zeros((1, patches.shape[1]), np.int64), patches])
    alloc = RegionAllocator(config)
    x, x1 = alloc(n, dim, "the residual"), alloc(n, dim, "add1")
    scratch = alloc.next
    p_in, e, pos_r = alloc(n, patches.shape[1], "the patches"), alloc(n, dim, "patch"), alloc(n, dim, "pos")
    zero_row = np.asarray([rq(np.int64(b)) for rq, b in zip(qm.patch.requant, qm.patch.bias)], np.int64)
    pos = np.asarray(qm.pos, np.int64).copy()
    pos[0] -= zero_row
    if pos[0].min() < INT16.min or pos[0].max() > INT16.max:
        raise ConfigError(f"the class token's position constant minus the embedding's rq(bias) leaves int16 "
                          f"([{pos[0].min()}, {pos[0].max()}]); this compiler cannot place it")
    program = [Load(p_in, rows), _matmul(qm.patch, p_in, e, sparse), Store(e), Load(pos_r, pos),
               Add(e, pos_r, x, _identity(config), _identity(config)), Store(x)]
    for blk in qm.blocks:
        alloc.next = scratch                # every block's scratch from the same tile: the buffer does not
        body, x = block_instructions(blk, x, x1, alloc, sparse=sparse)     # grow with the depth
        program += body
    cls = Region(x.base, 1, dim)           # the first row group's tiles hold row 0 (the class token)
    out = alloc(1, dim, "norm")
    program += [LayerNorm(cls, out, qm.norm.gamma, qm.norm.beta, qm.norm.requant, int(qm.norm.eps)), Store(out)]
    program += classifier_instructions(qm.head, out, alloc)
    check_program(program, config)
    return program


def classifier_instructions(head: IntLinear, norm: Region, alloc: RegionAllocator) -> list:
    """The classifier on the final norm ``[1, D]``: a raw (int32) dense MATMUL whose logits' low and high
    halves are STOREd (``LOGITS_TENSORS``). The output channels are padded to a multiple of the lanes P
    (a STORE moves vectors of P) with zero weights and bias: logits ``classes ..`` are 0 and not classes."""
    if head.requant is not None:
        raise ConfigError("the classifier must be the raw int32 matmul (IntLinear without a requantizer)")
    weight = pad_classes(head.weight, alloc.config.lanes).astype(np.int8)
    bias = pad_classes(head.bias, alloc.config.lanes)
    lo, hi = alloc(1, len(bias), "logits (low halves)"), alloc(1, len(bias), "logits (high halves)")
    return [Matmul(norm, lo, weight, bias, None, hi), Store(lo), Store(hi)]


def pad_classes(per_class, lanes: int) -> np.ndarray:
    """``per_class`` (weight rows, biases or logits, classes first) with zero rows up to a multiple of
    ``lanes``: the classifier's channels as ``classifier_instructions`` compiles and STOREs them."""
    per_class = np.asarray(per_class, np.int64)
    padded = np.zeros((-(-len(per_class) // lanes) * lanes, *per_class.shape[1:]), np.int64)
    padded[:len(per_class)] = per_class
    return padded


def model_logits(qm: IntViT, norm) -> np.ndarray:
    """The classifier on the host: int32 logits ``[classes]`` from a final norm ``[1, D]`` (``IntLinear``
    with no requantizer; ``classifier_instructions`` is the same on the accelerator)."""
    acc, _ = qm.head.run(np.asarray(norm, np.int64))
    return acc[0]


def mlp_half_program(qm: IntViT, layer: int, residual, config: VitModelConfig, *, sparse: bool = False) -> list:
    """A program that LOADs the int16 residual ``[tokens, D]`` entering block ``layer``'s MLP half (the trace's
    ``blocks.L.add1``) and runs that half, STOREing ``MLP_TENSORS``."""
    residual = _check_call(qm, layer, residual)
    alloc = RegionAllocator(config)
    x = alloc(*residual.shape, "the residual")
    body, _ = mlp_half_instructions(qm.blocks[layer], x, alloc, sparse=sparse)
    program = [Load(x, residual), *body]
    check_program(program, config)
    return program
