"""A random integer model's MLP half (LN -> fc1 -> GELU -> fc2 -> residual add) as a model-level program.

Shared by the cocotb testbench (``tb/vitmodel_tb.py``) and the plain tests: the program
(``hw/vitmodel``'s instructions, every intermediate tensor STOREd) and the tensors computed
directly with ``attnforge.int_ops`` (not through the ISA's reference executor), so a run can be
checked against both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnforge.formats.csr import csr_to_dense, dense_to_csr
from attnforge.hw.vitmodel import Add, Gelu, LayerNorm, Load, Matmul, Region, Store, VitModelConfig
from attnforge.hw.vitmodel.isa import int32_to_raw_halves
from attnforge.hw.vitmodel.program import assemble, disassemble
from attnforge.int_ops import INT16, gelu, gelu_constants, layernorm, linear_acc, requantize_columns, residual_add
from attnforge.numfmt import INT8, IntFormat, Requantizer

__all__ = ["MlpCase", "mlp_case", "TENSORS", "save_program_case", "load_program_case"]

#: The STOREd tensors, in program order (``raw_lo``/``raw_hi``: a raw int32 MATMUL's halves, as the classifier's).
TENSORS = ("norm2", "fc1", "gelu", "fc2_dense", "fc2_csr", "add2", "raw_lo", "raw_hi")


@dataclass
class MlpCase:
    program: list
    expected: dict          # tensor name -> int64 array, from int_ops directly
    regions: dict


def _column_requantizers(acc, out: IntFormat, rng, mw: int = 16) -> tuple:
    """Per output channel, a requantizer whose output reaches about 3/4 of ``out``'s range on ``acc``."""
    span = np.abs(acc).max(axis=0) + 1
    return tuple(Requantizer.from_scale(float(out.max * rng.uniform(0.5, 1.0) / s), out=out, multiplier_width=mw)
                 for s in span)


def mlp_case(config: VitModelConfig, seed: int, *, tokens: int, dim: int, hidden: int,
             sparsity: float = 0.75) -> MlpCase:
    """The MLP half of one block on random weights and a random int16 residual ``x [tokens, dim]``, then a
    raw (int32) MATMUL of P channels on the norm, with biases that use the sums' whole int32 range."""
    rng = np.random.default_rng(seed)
    P = config.lanes
    names = ("x", "norm2", "fc1", "gelu", "fc2_dense", "fc2_csr", "add2", "raw_lo", "raw_hi")
    widths = dict(x=dim, norm2=dim, fc1=hidden, gelu=hidden, fc2_dense=dim, fc2_csr=dim, add2=dim, raw_lo=P, raw_hi=P)
    regions, base = {}, int(rng.integers(0, 3))
    for name in names:
        regions[name] = Region(base, tokens, widths[name])
        base = regions[name].end(P) + int(rng.integers(0, 2))
    x = rng.integers(-20000, 20001, (tokens, dim))
    x[0, :] = 7                                   # a constant row: sigma from E alone
    gamma = rng.integers(-4096, 4097, dim)
    beta = rng.integers(-(1 << 20), 1 << 20, dim)
    ln_rq = Requantizer.from_scale(127 / (1 << 27) * rng.uniform(0.5, 2.0))
    eps = int(rng.integers(1, 1 << 20))
    a = layernorm(x, gamma, beta, ln_rq, eps)
    w1 = rng.integers(-128, 128, (hidden, dim))
    b1 = rng.integers(-5000, 5001, hidden)
    acc1 = linear_acc(a, w1, b1)
    rq1 = _column_requantizers(acc1, INT16, rng)
    h = requantize_columns(acc1, rq1)
    t, c, g_scale = gelu_constants(6.0 / 32767)
    rq_g = Requantizer.from_scale(g_scale / (6.0 / 127))
    g = rq_g(gelu(h, t, c))
    w2 = rng.integers(-128, 128, (dim, hidden))
    b2 = rng.integers(-5000, 5001, dim)
    acc2 = linear_acc(g, w2, b2)
    rq2 = _column_requantizers(acc2, INT8, rng)
    f_dense = requantize_columns(acc2, rq2)
    mag = np.abs(w2) * 4096 + rng.integers(0, 4096, w2.shape)
    keep = np.zeros(w2.shape, bool)
    keep.flat[np.argsort(mag, axis=None)[-int(round(w2.size * (1 - sparsity))):]] = True
    keep[-1] = False                              # one output channel keeps nothing: bias only
    csr = dense_to_csr(w2.astype(np.int8), keep=keep)
    acc2s = linear_acc(g, csr_to_dense(csr), b2)
    f_csr = requantize_columns(acc2s, rq2)
    wide = IntFormat(INT16.width + 2)
    rq_a = Requantizer.from_scale(rng.uniform(0.5, 1.0), out=wide)
    rq_b = Requantizer.from_scale(rng.uniform(50, 200), out=wide)
    y = residual_add(x, rq_a, f_csr, rq_b, INT16)
    w3 = rng.integers(-128, 128, (P, dim))
    room = (1 << 31) - 1 - int(np.abs(w3).sum(axis=1).max()) * 128      # the sums stay within int32
    b3 = rng.integers(-room, room + 1, P)
    b3[0], b3[-1] = room, -room
    lo, hi = int32_to_raw_halves(linear_acc(a, w3, b3))
    R = regions
    program = [
        Load(R["x"], x),
        LayerNorm(R["x"], R["norm2"], gamma, beta, ln_rq, eps), Store(R["norm2"]),
        Matmul(R["norm2"], R["fc1"], w1.astype(np.int8), b1, rq1), Store(R["fc1"]),
        Gelu(R["fc1"], R["gelu"], t, c, rq_g), Store(R["gelu"]),
        Matmul(R["gelu"], R["fc2_dense"], w2.astype(np.int8), b2, rq2), Store(R["fc2_dense"]),
        Matmul(R["gelu"], R["fc2_csr"], csr, b2, rq2), Store(R["fc2_csr"]),
        Add(R["x"], R["fc2_csr"], R["add2"], rq_a, rq_b), Store(R["add2"]),
        Matmul(R["norm2"], R["raw_lo"], w3.astype(np.int8), b3, None, R["raw_hi"]), Store(R["raw_lo"]),
        Store(R["raw_hi"]),
    ]
    expected = dict(norm2=a, fc1=h, gelu=g, fc2_dense=f_dense, fc2_csr=f_csr, add2=y, raw_lo=lo, raw_hi=hi)
    return MlpCase(program, expected, regions)


def save_program_case(path, case: MlpCase, names, config: VitModelConfig) -> Path:
    """Write a compiled program and its expected tensors for the testbench as plain data (``.npz``, no
    pickle): the program as its host beats (decimal strings: a beat may be wider than 64 bits), the STOREd
    tensors' ``names`` in order, and each expected tensor as an int64 array."""
    meta = {"beats": [str(b) for b in assemble(case.program, config)], "names": list(names)}
    arrays = {f"expected_{k}": np.asarray(v, dtype=np.int64) for k, v in case.expected.items()}
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return Path(path)


def load_program_case(path, config: VitModelConfig) -> tuple[MlpCase, tuple]:
    """``(case, names)`` from ``save_program_case``'s file; the program comes back through ``disassemble``."""
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        expected = {k[len("expected_"):]: f[k] for k in f.files if k.startswith("expected_")}
    program = disassemble([int(b) for b in meta["beats"]], config)
    return MlpCase(program, expected, {}), tuple(meta["names"])
