"""The model-level accelerator's instruction set: opcodes, beat layouts, instructions.

One host stream carries everything, one beat (``beat_width`` bits, the config's) at a
time: an instruction is one **header** beat (the fields of ``HEADER_FIELDS`` in the
low bits) followed by its **payload** beats:

========== ============================================== ===========================================
opcode     header fields used                             payload beats
========== ============================================== ===========================================
LOAD       d (destination), rows, cols                    ``rows * cols / P`` tensor beats (``P`` int16)
STORE      a (source), rows, cols                         none; ``rows * cols / P`` beats leave on ``o``
LAYERNORM  a, d, rows, cols (D), m0/s0 (rq), k0 (E)       ``D / P`` gamma/beta beats
GELU       a, d, rows, cols, m0/s0 (rq), k0 (C), k1 (T)   none
ADD        a (residual), b (branch), d, rows, cols,       none
           m0/s0 (rq_a), m1/s1 (rq_b)
MATMUL     a (x), d (y), rows, cols (in), out_cols (out), one weight beat per kept weight (dense: all
           dense, out8; raw: b (y's high halves)          ``in`` of each output channel, in order)
ATTENTION  a (qkv), d (output), rows (N), cols (d),       index beats of ``P / 2`` unsigned 16-bit values:
           head, heads, g, nnz, m0/s0 (exp),              the key order (N), the 2 N + 1 half-row
           m1/s1 (out)                                    pointers, the nnz columns (each list padded)
========== ============================================== ===========================================

ATTENTION runs on the configuration's attention unit (``VitModelConfig.attention``, a ViTCoD
accelerator whose stream beats are ``8 P`` bits: one int8 row vector, or ``P / 2`` indices, the ISA's
index beat).

Tensors live in the on-chip activation buffer as **regions**: a region is a tile
index ``base`` plus the tensor's shape; a ``rows x cols`` tensor occupies
``ceil(rows / P) * ceil(cols / P)`` consecutive ``P x P`` tiles, row groups outer
(``Region.tiles``). Tensor beats (LOAD, STORE) are row vectors in row-major order:
beat ``r * ceil(cols/P) + g`` holds channels ``g*P .. g*P+P-1`` of row ``r``.

Every field is fixed-width in the ISA (the header is ``HEADER_WIDTH`` bits whatever
the configuration); a configuration accepts the values it has room for
(``program.check_program``). This module is pure Python: the RTL builds its
layouts from the same tables (``layout``), the assembler packs with ``pack``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from attnforge.errors import ConfigError, check_int
from attnforge.formats.csr import CSR
from attnforge.numfmt import Requantizer

__all__ = ["Op", "HEADER_FIELDS", "WEIGHT_FIELDS", "HEADER_WIDTH", "WEIGHT_WIDTH", "ELEMENT_WIDTH",
           "GAMMA_WIDTH", "BETA_WIDTH", "INDEX_WIDTH", "field_width", "pack", "unpack", "pack_indices",
           "unpack_indices", "raw_halves_to_int32", "int32_to_raw_halves", "Region", "Load", "Store", "LayerNorm",
           "Gelu", "Add", "Matmul", "Attention", "Instruction"]


class Op(enum.IntEnum):
    """Opcodes (0 is no instruction: a zero beat read as a header halts the machine)."""

    LOAD = 1
    STORE = 2
    LAYERNORM = 3
    GELU = 4
    ADD = 5
    MATMUL = 6
    ATTENTION = 7       # one ViTCoD head on the attention unit


#: (name, width, signed) of the header beat, low bits first.
HEADER_FIELDS = (
    ("opcode", 4, False),
    ("a", 16, False),           # source region's first tile (ADD: the residual)
    ("b", 16, False),           # ADD: the branch's first tile
    ("d", 16, False),           # destination region's first tile
    ("rows", 16, False),        # tokens
    ("cols", 16, False),        # channels (MATMUL: in_features; LAYERNORM: D)
    ("out_cols", 16, False),    # MATMUL: out_features
    ("dense", 1, False),        # MATMUL: every weight sent, the index ignored
    ("out8", 1, False),         # MATMUL: int8 output (else int16)
    ("m0", 32, False),          # requantizer multiplier (LAYERNORM, GELU: output; ADD: rq_a)
    ("s0", 6, False),           # its shift
    ("m1", 32, False),          # ADD: rq_b's multiplier
    ("s1", 6, False),           # ADD: rq_b's shift
    ("k0", 61, False),          # LAYERNORM: E; GELU: C
    ("k1", 20, False),          # GELU: T
    ("head", 8, False),         # ATTENTION: the head h (q, k, v columns h d .. h d + d - 1 of each third)
    ("heads", 8, False),        # ATTENTION: the block's heads H (the qkv region has 3 H d columns)
    ("g", 16, False),           # ATTENTION: global keys G
    ("nnz", 20, False),         # ATTENTION: CSR entries of the sparse part
    ("raw", 1, False),          # MATMUL: raw int32 sums, low halves into d, high halves into b (the classifier)
)
#: (name, width, signed) of a MATMUL weight beat: ``VitMatmul``'s ``w`` with the ISA's fixed widths.
WEIGHT_FIELDS = (
    ("value", 8, True),
    ("index", 16, False),
    ("last", 1, False),
    ("bias", 32, True),
    ("multiplier", 32, False),
    ("shift", 6, False),
)
ELEMENT_WIDTH = 16              # buffer elements and tensor beats: int16 (int8 tensors sign-extended)
INDEX_WIDTH = 16                # ATTENTION's index beats: P / 2 unsigned 16-bit values
GAMMA_WIDTH, BETA_WIDTH = 16, 32


def field_width(fields) -> int:
    return sum(w for _, w, _ in fields)


HEADER_WIDTH = field_width(HEADER_FIELDS)
WEIGHT_WIDTH = field_width(WEIGHT_FIELDS)


def pack(fields, values: dict) -> int:
    """The fields' values as one unsigned int, first field in the low bits; a value that does not fit
    its field raises ``ConfigError`` naming it."""
    unknown = set(values) - {name for name, _, _ in fields}
    if unknown:
        raise ConfigError(f"unknown beat fields {sorted(unknown)}")
    word, offset = 0, 0
    for name, width, signed in fields:
        v = int(values.get(name, 0))
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        check_int(f"beat field {name}", v, lo, hi)
        word |= (v & ((1 << width) - 1)) << offset
        offset += width
    return word


def unpack(fields, word: int) -> dict:
    out, offset = {}, 0
    for name, width, signed in fields:
        v = (word >> offset) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        out[name] = v
        offset += width
    return out


def raw_halves_to_int32(lo, hi) -> np.ndarray:
    """The int32 sums of a raw MATMUL from its two int16 regions: ``hi * 2**16 + (lo mod 2**16)``."""
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    return hi * (1 << 16) + (lo & 0xFFFF)


def int32_to_raw_halves(value) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) int16 halves a raw MATMUL writes for int32 ``value``."""
    v = np.asarray(value, np.int64)
    lo = v & 0xFFFF
    return np.where(lo >= 1 << 15, lo - (1 << 16), lo), v >> 16


def pack_lanes(values, width: int) -> int:
    """P signed values of ``width`` bits, lane 0 in the low bits."""
    word = 0
    for k, v in enumerate(values):
        v = int(v)
        check_int(f"lane {k}", v, -(1 << (width - 1)), (1 << (width - 1)) - 1)
        word |= (v & ((1 << width) - 1)) << (k * width)
    return word


def unpack_lanes(word: int, width: int, lanes: int) -> list[int]:
    out = []
    for k in range(lanes):
        v = (word >> (k * width)) & ((1 << width) - 1)
        out.append(v - (1 << width) if v >> (width - 1) else v)
    return out


def pack_indices(values, lanes: int, what: str = "index") -> list[int]:
    """Unsigned 16-bit values, ``lanes`` per beat (value 0 of a beat in the low bits; the last beat
    zero-padded)."""
    values = [int(v) for v in values]
    beats = []
    for b in range(0, len(values), lanes):
        word = 0
        for k, v in enumerate(values[b:b + lanes]):
            check_int(what, v, 0, (1 << INDEX_WIDTH) - 1)
            word |= v << (k * INDEX_WIDTH)
        beats.append(word)
    return beats


def unpack_indices(beats, count: int, lanes: int) -> list[int]:
    mask = (1 << INDEX_WIDTH) - 1
    out = [(b >> (k * INDEX_WIDTH)) & mask for b in beats for k in range(lanes)]
    return out[:count]


@dataclass(frozen=True)
class Region:
    """A ``rows x cols`` tensor in the activation buffer, from tile ``base`` on."""

    base: int
    rows: int
    cols: int

    def __post_init__(self):
        check_int("region base tile", self.base, 0, (1 << 16) - 1)
        check_int("region rows", self.rows, 1, (1 << 16) - 1)
        check_int("region cols", self.cols, 1, (1 << 16) - 1)

    def groups(self, lanes: int) -> tuple[int, int]:
        """(row groups, channel groups) of ``lanes`` each."""
        return -(-self.rows // lanes), -(-self.cols // lanes)

    def tiles(self, lanes: int) -> int:
        g, c = self.groups(lanes)
        return g * c

    def end(self, lanes: int) -> int:
        """One past the last tile."""
        return self.base + self.tiles(lanes)


@dataclass(frozen=True)
class Load:
    """Host tensor ``data [rows, cols]`` (int16 values) into region ``dst``."""

    dst: Region
    data: np.ndarray

    op = Op.LOAD

    def header(self) -> dict:
        return dict(opcode=self.op, d=self.dst.base, rows=self.dst.rows, cols=self.dst.cols)


@dataclass(frozen=True)
class Store:
    """Region ``src`` out to the host on ``o``."""

    src: Region

    op = Op.STORE

    def header(self) -> dict:
        return dict(opcode=self.op, a=self.src.base, rows=self.src.rows, cols=self.src.cols)


@dataclass(frozen=True)
class LayerNorm:
    """``int_ops.layernorm`` of each row of ``src`` (int16) into ``dst`` (int8)."""

    src: Region
    dst: Region
    gamma: np.ndarray           # int16 [D]
    beta: np.ndarray            # int32 [D]
    rq: Requantizer             # int8 out
    eps: int                    # the integer E

    op = Op.LAYERNORM

    def header(self) -> dict:
        return dict(opcode=self.op, a=self.src.base, d=self.dst.base, rows=self.src.rows, cols=self.src.cols,
                    m0=self.rq.multiplier, s0=self.rq.shift, k0=self.eps)


@dataclass(frozen=True)
class Gelu:
    """``rq(int_ops.gelu(q, T, C))`` of every element of ``src`` (int16) into ``dst`` (int8)."""

    src: Region
    dst: Region
    t: int
    c: int
    rq: Requantizer             # int8 out

    op = Op.GELU

    def header(self) -> dict:
        return dict(opcode=self.op, a=self.src.base, d=self.dst.base, rows=self.src.rows, cols=self.src.cols,
                    m0=self.rq.multiplier, s0=self.rq.shift, k0=self.c, k1=self.t)


@dataclass(frozen=True)
class Add:
    """``int_ops.residual_add(a, rq_a, b, rq_b)`` element-wise into ``dst`` (int16)."""

    a: Region
    b: Region
    dst: Region
    rq_a: Requantizer           # int18 out (the stream's int16 + 2)
    rq_b: Requantizer

    op = Op.ADD

    def header(self) -> dict:
        return dict(opcode=self.op, a=self.a.base, b=self.b.base, d=self.dst.base, rows=self.a.rows,
                    cols=self.a.cols, m0=self.rq_a.multiplier, s0=self.rq_a.shift, m1=self.rq_b.multiplier,
                    s1=self.rq_b.shift)


@dataclass(frozen=True)
class Matmul:
    """``y[r, o] = rq_o(sum_i x[r, i] W[o, i] + b[o])``: ``src`` (int8 values) times ``weight`` into ``dst``.

    ``weight``: a dense int8 ``[out, in]`` array (``dense`` True: every weight is streamed), or a
    ``formats.csr.CSR`` with values (only the kept weights are streamed; an output channel that keeps
    none costs one zero beat). ``requant``: one ``numfmt.Requantizer`` per output channel, all int16
    or all int8 (that is the output format, ``out8``); or None for the **raw** int32 sums (the
    classifier's logits, ``intvit.IntLinear`` without a requantizer): their low 16 bits go into ``dst``
    and their high 16 bits into ``dst_hi`` (both int16 bit patterns; ``raw_halves_to_int32`` joins them).
    """

    src: Region
    dst: Region
    weight: object
    bias: np.ndarray            # int32 [out]
    requant: tuple | None
    dst_hi: Region | None = None

    op = Op.MATMUL

    @property
    def dense(self) -> bool:
        return not isinstance(self.weight, CSR)

    @property
    def raw(self) -> bool:
        return self.requant is None

    @property
    def out8(self) -> bool:
        return not self.raw and self.requant[0].out.width == 8

    def header(self) -> dict:
        return dict(opcode=self.op, a=self.src.base, d=self.dst.base, rows=self.src.rows, cols=self.src.cols,
                    out_cols=self.dst.cols, dense=int(self.dense), out8=int(self.out8), raw=int(self.raw),
                    b=self.dst_hi.base if self.raw and self.dst_hi is not None else 0)

    def channels(self):
        """Per output channel: the (value, input index) pairs streamed, at least one (a zero for none)."""
        if self.dense:
            w = np.asarray(self.weight)
            return [[(int(v), i) for i, v in enumerate(row)] for row in w]
        csr = self.weight
        out = []
        for o in range(csr.shape[0]):
            lo, hi = int(csr.row_ptr[o]), int(csr.row_ptr[o + 1])
            out.append([(int(csr.values[k]), int(csr.col_idx[k])) for k in range(lo, hi)] or [(0, 0)])
        return out

    def nnz_per_column(self) -> list[int]:
        if self.dense:
            return [self.src.cols] * self.dst.cols
        return [int(k) for k in np.diff(self.weight.row_ptr)]


@dataclass(frozen=True)
class Attention:
    """Head ``head`` of a block: ``q, k, v`` are columns ``h d .. h d + d - 1`` of the first, second
    and third ``H d`` columns of ``qkv`` (int8 values, timm's ``[3, H, d]`` column order); its int8
    output ``[N, d]`` goes to the same columns of ``dst`` (``[N, H d]``, what ``proj`` takes), which
    the other heads' instructions fill.

    The head is the ViTCoD head (``algo.vitcod.golden.vitcod_head_golden``): ``k`` and ``v`` in the
    polarized key ``order`` (position -> token), the first ``n_global`` positions kept for every
    query, the ``csr`` sparse part (columns in polarized positions ``[G, N)``), the exponent and
    output requantizers ``exp_rq`` and ``out_rq`` (``HeadParams.exp`` / ``.out``). ``balance``: how the
    host splits each row's CSR entries between the unit's Denser and Sparser Engines
    (``hw.vitcod.balance``: ``balanced`` or ``none``); the output does not depend on it, the cycles do.
    """

    qkv: Region
    dst: Region
    head: int
    heads: int
    order: np.ndarray           # int [N]
    n_global: int
    csr: CSR
    exp_rq: Requantizer
    out_rq: Requantizer
    balance: str = "balanced"

    op = Op.ATTENTION

    @property
    def head_dim(self) -> int:
        return self.qkv.cols // (3 * self.heads)

    @property
    def nnz(self) -> int:
        return int(self.csr.row_ptr[-1])

    def columns(self, which: int) -> slice:
        """Columns of q (0), k (1) or v (2) of this head in the qkv region; ``which`` 3: in ``dst``."""
        d, D = self.head_dim, self.heads * self.head_dim
        base = (which % 3) * D + self.head * d if which < 3 else self.head * d
        return slice(base, base + d)

    def half_row_pointers(self, unit) -> np.ndarray:
        """The ``2 N + 1`` pointers of the unit's stream (``unit``: its ``VitcodConfig``)."""
        from ..vitcod.balance import half_row_pointers, split_rows

        rp = np.asarray(self.csr.row_ptr, np.int64)
        return half_row_pointers(rp, split_rows(unit, self.n_global, np.diff(rp), self.balance))

    def header(self) -> dict:
        return dict(opcode=self.op, a=self.qkv.base, d=self.dst.base, rows=self.qkv.rows, cols=self.head_dim,
                    head=self.head, heads=self.heads, g=self.n_global, nnz=self.nnz,
                    m0=self.exp_rq.multiplier, s0=self.exp_rq.shift, m1=self.out_rq.multiplier,
                    s1=self.out_rq.shift)


Instruction = Load | Store | LayerNorm | Gelu | Add | Matmul | Attention
