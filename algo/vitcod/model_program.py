"""Host-side compiler: the integer ViT (``intvit.IntViT``) into programs of the model-level accelerator.

Milestone 1 of issue 17 compiles what the accelerator runs today from a block's integer constants
alone (``IntBlock``): no hand-written program, no constant re-derived. ``mlp_half_program``: the
MLP half (``norm2 -> fc1 -> i-GELU -> fc2 -> add2``). ``block_program``: the whole block, its
attention output **replayed**: the heads are not an instruction yet (milestone 2: the ViTCoD
head), so the program LOADs the attention output the caller gives (the integer golden model's,
in the tests) where the ATTENTION instructions will go, and runs ``norm1``, ``qkv``, ``proj``,
``add1`` and the MLP half on the hardware.

Linear layers go out dense, or (``sparse``) as CSR of their non-zero weights: a robust ticket's
pruned weights are zeros in ``IntLinear.weight``, and a kept weight that quantized to zero adds
nothing, so the CSR computes the same sums with fewer weight beats.
"""

from __future__ import annotations

import numpy as np

from attnforge.errors import ConfigError
from attnforge.formats.csr import dense_to_csr
from attnforge.hw.vitmodel import Add, Gelu, LayerNorm, Load, Matmul, Region, Store, VitModelConfig, check_program

from .intvit import IntBlock, IntLinear, IntViT

__all__ = ["RegionAllocator", "mlp_half_instructions", "mlp_half_program", "block_program", "MLP_TENSORS",
           "BLOCK_TENSORS"]

#: The MLP half's tensors in the order its program STOREs them (names as ``intvit.trace_image``'s, per layer).
MLP_TENSORS = ("norm2", "fc1", "gelu", "fc2", "add2")
#: A block's STOREd tensors (``qkv``: the int8 matmul output, columns ``[3, H, d]`` as timm's).
BLOCK_TENSORS = ("norm1", "qkv", "proj", "add1") + MLP_TENSORS


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
                          store: bool = True) -> tuple[list, Region]:
    """The instructions of ``add2(x, fc2(gelu(fc1(norm2(x)))))`` on the int16 residual in region ``x``;
    with ``store`` every tensor is STOREd after the op that writes it (``MLP_TENSORS``' order). Returns the
    instructions and the region of add2."""
    rows = x.rows
    hidden = blk.fc1.weight.shape[0]
    a = alloc(rows, x.cols, "norm2")
    h = alloc(rows, hidden, "fc1")
    g = alloc(rows, hidden, "gelu")
    f = alloc(rows, x.cols, "fc2")
    y = alloc(rows, x.cols, "add2")
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


def block_program(qm: IntViT, layer: int, residual, attention, config: VitModelConfig, *,
                  sparse: bool = False) -> list:
    """Block ``layer`` on the int16 residual ``[tokens, D]`` entering it, with the heads' int8 output
    ``attention [tokens, D]`` (heads concatenated, as ``proj`` takes it) LOADed instead of computed;
    STOREs ``BLOCK_TENSORS``. Regions: two residual regions in turn, then scratch reused by each half."""
    residual = _check_call(qm, layer, residual)
    attention = np.asarray(attention, np.int64)
    if attention.shape != residual.shape:
        raise ConfigError(f"the attention output must be {list(residual.shape)} like the residual, not "
                          f"{list(attention.shape)}")
    blk = qm.blocks[layer]
    rows, dim = residual.shape
    alloc = RegionAllocator(config)
    x, x1 = alloc(rows, dim, "the residual"), alloc(rows, dim, "add1")
    scratch = alloc.next
    a, qkv = alloc(rows, dim, "norm1"), alloc(rows, blk.qkv.weight.shape[0], "qkv")
    o, pr = alloc(rows, dim, "the attention output"), alloc(rows, dim, "proj")
    program = [Load(x, residual),
               LayerNorm(x, a, blk.norm1.gamma, blk.norm1.beta, blk.norm1.requant, int(blk.norm1.eps)), Store(a),
               _matmul(blk.qkv, a, qkv, sparse), Store(qkv),
               Load(o, attention),                                   # milestone 2: the ATTENTION instructions
               _matmul(blk.proj, o, pr, sparse), Store(pr),
               Add(x, pr, x1, blk.add1.a_rq, blk.add1.b_rq), Store(x1)]
    alloc.next = scratch
    body, y = mlp_half_instructions(blk, x1, alloc, sparse=sparse)
    program += body
    check_program(program, config)
    return program


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
