"""The reference executor of the model-level accelerator's ISA: what a program computes, without the RTL.

Independent of the hardware's storage: the activation buffer is a numpy array of
``buffer_tiles`` logical ``P x P`` tiles (no skew, no banks), and each instruction is
the ``attnforge.int_ops`` function of the integer ViT (``layernorm``, ``gelu`` and a
requantizer, ``residual_add``, ``linear_acc`` + ``requantize_columns``). ``run``
returns what every STORE sent to the host.

ATTENTION runs the ViTCoD head function given as ``attention`` (the algorithm side's
``algo.vitcod.golden.vitcod_head_golden``: this package sits below ``algo`` and does not import it),
with the instruction's q, k and v columns, k and v in its key order; without one, ATTENTION is refused.
"""

from __future__ import annotations

import numpy as np

from attnforge.errors import ConfigError
from attnforge.formats.csr import csr_to_dense
from attnforge.int_ops import INT16, gelu, layernorm, linear_acc, requantize_columns, residual_add
from attnforge.numfmt import INT8

from .config import VitModelConfig
from .isa import Add, Attention, Gelu, LayerNorm, Load, Matmul, Region, Store, int32_to_raw_halves
from .program import check_program

__all__ = ["ReferenceMachine"]


class ReferenceMachine:
    """A ``VitModelConfig``'s buffer and instructions in numpy; ``run(program)`` -> the STOREd tensors.

    ``attention(q, k, v, g, csr, exp_rq, out_rq) -> int8 [N, d]``: the head function ATTENTION runs
    (``k``, ``v`` already in the polarized key order)."""

    def __init__(self, config: VitModelConfig, attention=None):
        self.config = config
        self.attention = attention
        P = config.lanes
        self.tiles = np.zeros((config.buffer_tiles, P, P), np.int64)

    def _tile_slices(self, reg: Region):
        P = self.config.lanes
        groups, chans = reg.groups(P)
        for g in range(groups):
            for c in range(chans):
                yield reg.base + g * chans + c, g * P, c * P

    def read(self, reg: Region) -> np.ndarray:
        P = self.config.lanes
        groups, chans = reg.groups(P)
        out = np.zeros((groups * P, chans * P), np.int64)
        for t, r, c in self._tile_slices(reg):
            out[r:r + P, c:c + P] = self.tiles[t]
        return out[:reg.rows, :reg.cols]

    def write(self, reg: Region, x) -> None:
        x = np.asarray(x, np.int64)
        assert x.shape == (reg.rows, reg.cols), (x.shape, reg)
        INT16.check_array("a value written to the buffer", x)
        P = self.config.lanes
        for t, r, c in self._tile_slices(reg):
            part = x[r:r + P, c:c + P]
            self.tiles[t, :part.shape[0], :part.shape[1]] = part

    def step(self, k: int, ins):
        """Run instruction ``k``; a STORE returns its tensor."""
        if isinstance(ins, Load):
            self.write(ins.dst, ins.data)
        elif isinstance(ins, Store):
            return self.read(ins.src)
        elif isinstance(ins, LayerNorm):
            self.write(ins.dst, layernorm(self.read(ins.src), ins.gamma, ins.beta, ins.rq, ins.eps))
        elif isinstance(ins, Gelu):
            self.write(ins.dst, ins.rq(gelu(self.read(ins.src), ins.t, ins.c)))
        elif isinstance(ins, Add):
            self.write(ins.dst, residual_add(self.read(ins.a), ins.rq_a, self.read(ins.b), ins.rq_b, INT16))
        elif isinstance(ins, Matmul):
            x = self.read(ins.src)
            if x.min() < INT8.min or x.max() > INT8.max:
                raise ConfigError(f"instruction {k} (MATMUL): its source region at tile {ins.src.base} holds "
                                  f"values in [{x.min()}, {x.max()}]; the matmul takes int8 activations "
                                  f"[{INT8.min}, {INT8.max}]")
            w = np.asarray(ins.weight) if ins.dense else csr_to_dense(ins.weight)
            acc = linear_acc(x, w, ins.bias)
            if ins.raw:                     # the int32 sums (check_program bounds them) as two int16 halves
                lo, hi = int32_to_raw_halves(acc)
                self.write(ins.dst, lo)
                self.write(ins.dst_hi, hi)
            else:
                self.write(ins.dst, requantize_columns(acc, ins.requant))
        elif isinstance(ins, Attention):
            if self.attention is None:
                raise ConfigError(f"instruction {k} (ATTENTION): this ReferenceMachine has no head function; "
                                  "give ReferenceMachine(config, attention=vitcod_head_golden-like function)")
            qkv = self.read(ins.qkv)
            order = np.asarray(ins.order, np.int64)
            q, kk, vv = (qkv[:, ins.columns(w)] for w in range(3))
            out = np.asarray(self.attention(q.astype(np.int8), kk[order].astype(np.int8), vv[order].astype(np.int8),
                                            ins.n_global, ins.csr, ins.exp_rq, ins.out_rq), np.int64)
            y = self.read(ins.dst)
            y[:, ins.columns(3)] = out
            self.write(ins.dst, y)
        return None

    def run(self, program) -> list[np.ndarray]:
        check_program(program, self.config)
        stored = []
        for k, ins in enumerate(program):
            out = self.step(k, ins)
            if out is not None:
                stored.append(out)
        return stored
