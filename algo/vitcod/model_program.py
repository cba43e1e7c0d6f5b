"""Host-side compiler: the integer ViT (``intvit.IntViT``) into programs of the model-level accelerator.

Milestone 1 of issue 17 compiles the part of a block the accelerator runs today, the MLP half
(``norm2 -> fc1 -> i-GELU -> fc2 -> add2``), from the block's integer constants alone
(``IntBlock``): no hand-written program, no constant re-derived. Attention (the ViTCoD head
instruction) and the whole-model program come with milestone 2.

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

__all__ = ["RegionAllocator", "mlp_half_instructions", "mlp_half_program", "MLP_TENSORS"]

#: The MLP half's tensors in the order its program STOREs them (names as ``intvit.trace_image``'s, per layer).
MLP_TENSORS = ("norm2", "fc1", "gelu", "fc2", "add2")


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


def mlp_half_program(qm: IntViT, layer: int, residual, config: VitModelConfig, *, sparse: bool = False) -> list:
    """A program that LOADs the int16 residual ``[tokens, D]`` entering block ``layer``'s MLP half (the trace's
    ``blocks.L.add1``) and runs that half, STOREing ``MLP_TENSORS``."""
    if not 0 <= layer < len(qm.blocks):
        raise ConfigError(f"layer must be in [0, {len(qm.blocks) - 1}], not {layer!r}")
    residual = np.asarray(residual, np.int64)
    if residual.ndim != 2 or residual.shape[1] != qm.config["embed_dim"]:
        raise ConfigError(f"the residual must be [tokens, {qm.config['embed_dim']}], not {residual.shape}")
    alloc = RegionAllocator(config)
    x = alloc(*residual.shape, "the residual")
    body, _ = mlp_half_instructions(qm.blocks[layer], x, alloc, sparse=sparse)
    program = [Load(x, residual), *body]
    check_program(program, config)
    return program
