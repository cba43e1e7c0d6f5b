"""Linear layers of the integer ViT in hardware: int8 x int8 matmuls, dense or weight-sparse (CSR).

Computes ``y[r, o] = rq_o(sum_i x[r, i] W[o, i] + b[o])`` for an activation tile
``x [rows, in]`` and a weight matrix ``W [out, in]`` (``attnforge.int_ops.linear_acc``
then ``requantize_columns``; with CSR weights ``algo.tickets.export.sparse_linear_golden``).

Dataflow (docs/vit-hw.md, "Linear layers"): the activation tile stays on chip,
column-wise: one memory word holds ``x[g*P .. g*P+P-1, i]``, the ``P = lines * macs``
rows of row group ``g`` for input channel ``i`` (line ``l`` keeps lanes
``l*M .. l*M+M-1`` in its own bank). Weights then stream in per output channel
``o``: one beat per kept weight ``W[o, i]`` (its value and, in CSR mode, ``i``), the
column's bias and requantizer on its ``last`` beat. A beat is held for ``G =
ceil(rows / P)`` cycles; in cycle ``g`` the P lanes multiply it with their rows of
group ``g`` and accumulate into accumulator set ``g``. At the ``last`` beat each
group's P sums get the bias, are requantized (or passed raw) and leave as one output
beat. So a kept weight costs ``G`` cycles whatever the sparsity pattern, a column
with no kept weight costs one zero beat, and consecutive columns follow each other
without bubbles. The pipeline (issue, memory read, multiply, accumulate and bias, a
register, the requantizer) moves in lockstep and stalls as a whole only on
output backpressure.

``matmul_cycles`` is the cycle model; ``tests/rtl/test_vit_matmul.py`` checks it
against the RTL's measured cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError, check_choice, check_int
from attnforge.numfmt import INT8, IntFormat, Requantizer, accumulator_width

from ..common.component import ConfiguredComponent
from ..common.requant import MAX_SHIFT, requantize
from ..common.trees import saturate

__all__ = ["VitMatmulConfig", "VitMatmul", "MatmulCycles", "matmul_cycles", "MATMUL_LATENCY", "BIAS_FORMAT",
           "OUT_WIDTHS", "RAW_FORMAT"]

#: Output widths: int8 and int16 are requantized, 32 is the raw int32 accumulator (``requant`` None).
OUT_WIDTHS = (8, 16, 32)
#: The bias, as ``intvit.IntLinear.bias``.
BIAS_FORMAT = IntFormat(32)
#: The raw output (``out_width`` 32, or a ``raw`` tile of a ``raw_port`` matmul): the sum saturated to int32.
RAW_FORMAT = IntFormat(32)
#: Cycles from a column's last beat being taken to its first output beat being offered, minus one:
#: issue, memory read, multiply, accumulate (+ bias), sum register, requantizer into the output register.
MATMUL_LATENCY = 6
MAX_LANES = 1024
MAX_GROUPS = 64


@dataclass(frozen=True)
class VitMatmulConfig:
    """Generator parameters of the ViT matmul.

    Parameters
    ----------
    lines : int
        MAC lines L, 1..64; each has its own activation bank and M multipliers.
    macs : int
        MACs per line M, 1..256; ``lines * macs`` (the lanes P, rows computed at once) at most 1024.
    max_rows : int
        Most activation rows (tokens) one tile may hold, 1..65536; the accumulators hold
        ``ceil(max_rows / P)`` row groups (at most 64) of P sums each.
    max_in : int
        Most input channels, 1..65536 (sets the activation memory's depth and the accumulator width).
    out_width : int
        Output width: 8 or 16 (requantized per output channel), 32 (the raw int32 accumulator).
    multiplier_width : int
        Width of the per-channel requantizer multiplier, 1..32 (as ``numfmt.Requantizer``).
    raw_port : bool
        With an out_width of 8 or 16: a run-time ``raw`` input that switches a tile to the raw int32
        sums (the classifier of the model-level accelerator); the output lanes are then 32 bits wide,
        the requantized values sign-extended.
    """

    lines: int = 1
    macs: int = 8
    max_rows: int = 65
    max_in: int = 256
    out_width: int = 8
    multiplier_width: int = 16
    raw_port: bool = False

    def __post_init__(self):
        check_int("ViT matmul lines", self.lines, 1, 64)
        check_int("ViT matmul macs", self.macs, 1, 256)
        check_int("ViT matmul lanes (lines * macs)", self.lines * self.macs, 1, MAX_LANES)
        check_int("ViT matmul max_rows", self.max_rows, 1, 65536)
        check_int("ViT matmul max_in", self.max_in, 1, 65536)
        check_choice("ViT matmul out_width", self.out_width, OUT_WIDTHS)
        check_int("ViT matmul multiplier_width", self.multiplier_width, 1, 32)
        if not isinstance(self.raw_port, bool):
            raise ConfigError(f"ViT matmul raw_port must be True or False, not {self.raw_port!r}")
        if self.raw_port and self.raw:
            raise ConfigError("ViT matmul raw_port switches a requantized output (out_width 8 or 16) to the raw "
                              "sums; with out_width=32 the output is always raw: use raw_port=False")
        if self.groups > MAX_GROUPS:
            raise ConfigError(f"ViT matmul max_rows={self.max_rows} needs {self.groups} row groups of "
                              f"{self.lanes} lanes; at most {MAX_GROUPS} are supported: use max_rows <= "
                              f"{MAX_GROUPS * self.lanes} or more lanes")

    @property
    def lanes(self) -> int:
        """P: rows computed per cycle (all lines together)."""
        return self.lines * self.macs

    @property
    def groups(self) -> int:
        """Row groups the accumulators hold: ``ceil(max_rows / P)``."""
        return -(-self.max_rows // self.lanes)

    @property
    def raw(self) -> bool:
        return self.out_width == 32

    @property
    def acc_width(self) -> int:
        """Accumulator of the products alone (``max_in`` int8 x int8 terms)."""
        return accumulator_width(INT8, INT8, self.max_in)

    @property
    def sum_width(self) -> int:
        """Accumulator plus the int32 bias: what the requantizer takes (one bit more than either)."""
        return max(self.acc_width, BIAS_FORMAT.width) + 1

    @property
    def out_format(self) -> IntFormat:
        return IntFormat(self.out_width)

    @property
    def x_layout(self) -> data.ArrayLayout:
        """One activation beat: lanes ``0..P-1`` are rows ``g*P .. g*P+P-1`` of one input channel."""
        return data.ArrayLayout(signed(INT8.width), self.lanes)

    @property
    def w_layout(self) -> data.StructLayout:
        """One weight beat: a kept weight; ``bias``, ``multiplier``, ``shift`` are read on ``last`` beats only."""
        return data.StructLayout({
            "value": signed(INT8.width),
            "index": range(self.max_in),
            "last": 1,
            "bias": signed(BIAS_FORMAT.width),
            "multiplier": unsigned(self.multiplier_width),
            "shift": range(MAX_SHIFT + 1),
        })

    @property
    def o_width(self) -> int:
        """Width of an output lane: 32 when the raw sums can come out (``out_width`` 32 or ``raw_port``)."""
        return RAW_FORMAT.width if self.raw_port else self.out_width

    @property
    def o_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.o_width), self.lanes)

    def requantizer(self, multiplier: int, shift: int) -> Requantizer | None:
        """The ``numfmt.Requantizer`` a column with this run-time setting gets (None: raw output)."""
        if self.raw:
            return None
        return Requantizer(multiplier, shift, self.out_format, self.multiplier_width)


@dataclass(frozen=True)
class MatmulCycles:
    """Cycles of one tile (``matmul_cycles``): ``load`` activation beats, then ``compute`` issue cycles,
    then ``latency`` until the last output beat; ``ideal`` is the kept MACs over the lanes."""

    load: int
    compute: int
    latency: int
    macs: int
    lanes: int

    @property
    def total(self) -> int:
        """First activation transfer to last output transfer, both included, with no stalls."""
        return self.load + self.compute + self.latency

    @property
    def ideal(self) -> float:
        return self.macs / self.lanes

    @property
    def ratio(self) -> float:
        """``total / ideal`` (the issue's bound: <= 1.3 for CSR)."""
        return self.total / self.ideal if self.macs else math.inf

    @property
    def utilization(self) -> float:
        return self.ideal / self.total


def matmul_cycles(config: VitMatmulConfig, nnz_per_column, rows: int, in_features: int) -> MatmulCycles:
    """The cycle model of one tile: ``G * in`` load beats, ``G`` cycles per weight beat, ``MATMUL_LATENCY``.

    ``nnz_per_column``: kept weights of each output channel (the dense layer: ``in`` each); a column
    with none is sent as one zero beat. ``G = ceil(rows / P)``. Tiles back to back overlap only in
    the latency: ``n`` tiles take the sum of their ``load + compute`` plus one ``latency``.
    """
    check_int("matmul rows", rows, 1, config.max_rows)
    check_int("matmul in_features", in_features, 1, config.max_in)
    nnz = [check_int("matmul nnz of a column", int(k), 0, in_features) for k in nnz_per_column]
    if not nnz:
        raise ConfigError("matmul needs at least one output column, got none")
    groups = -(-rows // config.lanes)
    beats = sum(max(k, 1) for k in nnz)
    return MatmulCycles(load=groups * in_features, compute=groups * beats, latency=MATMUL_LATENCY,
                        macs=rows * sum(nnz), lanes=config.lanes)


class VitMatmul(ConfiguredComponent):
    """``y[r, o] = rq_o(sum_i x[r, i] W[o, i] + b[o])``: activation tile on chip, weights streamed.

    A tile: ``G * in_features`` beats on ``x`` (``G = ceil(rows / P)``; beat ``g * in + i`` holds rows
    ``g*P .. g*P+P-1`` of channel ``i``), then the weight beats of ``out_features`` columns on ``w``,
    then the next tile's ``x``. ``rows``, ``in_features``, ``out_features`` and ``dense`` must hold
    still from a tile's first ``x`` beat until its last output beat.

    Members
    -------
    rows : ``In(range(max_rows + 1))``
        Activation rows of the tile, 1..max_rows.
    in_features : ``In(range(max_in + 1))``
        Input channels of the tile, 1..max_in.
    out_features : ``In(unsigned(16))``
        Output columns of the tile, >= 1: the count of ``last`` weight beats that ends it.
    dense : ``In(1)``
        1: every column sends all ``in_features`` weights in order and ``w.index`` is ignored.
    raw : ``In(1)`` (only with ``raw_port``)
        1: the tile's output is the raw sum saturated to int32, the requantizer settings ignored.
    x : ``In(stream.Signature(ArrayLayout(signed(8), P)))``
        Activation beats (taken only between tiles' weight phases).
    w : ``In(stream.Signature(w_layout))``
        Weight beats: ``value``, ``index`` (the input channel, CSR mode), ``last`` (the column's final
        beat; a column without kept weights sends one beat of value 0), and on ``last`` beats the
        column's ``bias``, requantizer ``multiplier`` and ``shift`` (ignored when out_width is 32).
    o : ``Out(stream.Signature(ArrayLayout(signed(o_width), P)))``
        For each column, G beats: group g's lanes are rows ``g*P ..`` (lanes past ``rows`` carry the
        sums of whatever those rows of ``x`` held).
    """

    config_type = VitMatmulConfig

    @classmethod
    def signature_of(cls, config: VitMatmulConfig):
        ports = {
            "rows": In(range(config.max_rows + 1)),
            "in_features": In(range(config.max_in + 1)),
            "out_features": In(unsigned(16)),
            "dense": In(1),
            "x": In(stream.Signature(config.x_layout)),
            "w": In(stream.Signature(config.w_layout)),
            "o": Out(stream.Signature(config.o_layout)),
        }
        if config.raw_port:
            ports["raw"] = In(1)
        return ports

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        groups = Signal(range(cfg.groups + 1))       # G = ceil(rows / P), as a sum of comparisons
        m.d.comb += groups.eq(sum((self.rows > k * cfg.lanes).as_unsigned() for k in range(cfg.groups)))
        run = Signal()                               # 0: loading x, 1: weight phase
        advance = Signal()                           # the whole pipeline moves this cycle
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        banks = self._load(m, cfg, groups, run)
        issue = self._issue(m, cfg, groups, run, advance)
        x_row = [self._bank_read(m, cfg, bank, issue["addr"], advance, l) for l, bank in enumerate(banks)]
        self._datapath(m, cfg, issue, [v for line in x_row for v in line], advance)
        return m

    def _load(self, m, cfg, groups, run):
        """The activation banks and the ``x`` write side: beat ``g * in + i`` goes to word ``g * max_in + i``."""
        load_g = Signal(range(max(cfg.groups, 2)))
        load_i = Signal(range(max(cfg.max_in, 2)))
        banks = []
        for line in range(cfg.lines):
            mem = Memory(shape=unsigned(INT8.width * cfg.macs), depth=cfg.groups * cfg.max_in, init=[])
            m.submodules[f"x_bank{line}"] = mem
            wr = mem.write_port()
            lo = line * cfg.macs * INT8.width
            m.d.comb += [wr.addr.eq(load_g * cfg.max_in + load_i),
                         wr.data.eq(self.x.payload.as_value()[lo:lo + cfg.macs * INT8.width]),
                         wr.en.eq(self.x.valid & self.x.ready)]
            banks.append(mem)
        m.d.comb += self.x.ready.eq(~run)
        with m.If(self.x.valid & self.x.ready):
            with m.If(load_i == self.in_features - 1):
                m.d.sync += load_i.eq(0)
                with m.If(load_g == groups - 1):
                    m.d.sync += [load_g.eq(0), run.eq(1)]
                with m.Else():
                    m.d.sync += load_g.eq(load_g + 1)
            with m.Else():
                m.d.sync += load_i.eq(load_i + 1)
        return banks

    def _bank_read(self, m, cfg, mem, addr, advance, line):
        """Line ``line``'s M activations of the issued (group, channel), one cycle after the issue."""
        rd = mem.read_port(domain="sync", transparent_for=())
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(advance)]
        return [rd.data[k * INT8.width:(k + 1) * INT8.width].as_signed() for k in range(cfg.macs)]

    def _issue(self, m, cfg, groups, run, advance):
        """Takes weight beats and issues each for G cycles (row groups 0..G-1); ends the tile."""
        cur = Signal(cfg.w_layout)
        # named: a tuple of Signal() leaves them "$signal" (tb/formal.py's harness probes cur_valid by name)
        cur_valid, cur_first = Signal(name="cur_valid"), Signal(name="cur_first")
        cur_final = Signal(name="cur_final")
        cur_index = Signal(range(max(cfg.max_in, 2)))
        g = Signal(range(max(cfg.groups, 2)))
        col_start = Signal(init=1)                   # the next beat taken starts a column
        dense_i = Signal(range(max(cfg.max_in, 2)))
        cols = Signal(16)                            # columns whose last beat was taken
        final_taken = Signal()                       # the tile's last beat was taken
        last_group = g == groups - 1
        m.d.comb += self.w.ready.eq(run & advance & (~cur_valid | last_group) & ~final_taken)
        with m.If(advance & cur_valid):
            m.d.sync += g.eq(Mux(last_group, 0, g + 1))
            with m.If(last_group):
                m.d.sync += cur_valid.eq(0)
                with m.If(cur_final):
                    m.d.sync += [run.eq(0), final_taken.eq(0), cols.eq(0)]
        with m.If(self.w.valid & self.w.ready):
            p = self.w.payload
            m.d.sync += [cur.eq(p), cur_valid.eq(1), cur_first.eq(col_start), col_start.eq(p.last),
                         cur_index.eq(Mux(self.dense, dense_i, p.index)),
                         dense_i.eq(Mux(p.last, 0, dense_i + 1)), cur_final.eq(0)]
            with m.If(p.last):
                m.d.sync += cols.eq(cols + 1)
                with m.If(cols == self.out_features - 1):
                    m.d.sync += [final_taken.eq(1), cur_final.eq(1)]
        addr = Signal(range(cfg.groups * cfg.max_in))
        m.d.comb += addr.eq(g * cfg.max_in + cur_index)
        return dict(addr=addr, valid=cur_valid, g=g, first=cur_first, beat=cur)

    def _datapath(self, m, cfg, issue, x_lanes, advance):
        """Multiply, accumulate into group g's sums, add the bias on the last beat, requantize."""
        beat = issue["beat"]

        def stage(value, name):
            reg = Signal.like(value, name=name) if isinstance(value, Signal) else Signal(value.shape(), name=name)
            with m.If(advance):
                m.d.sync += reg.eq(value)
            return reg

        # stage a: the memory read is under way; carry the beat along
        a_valid, a_g, a_first = stage(issue["valid"], "a_valid"), stage(issue["g"], "a_g"), stage(issue["first"], "a_first")
        a_beat = stage(beat, "a_beat")
        # stage b: products
        b_valid, b_g, b_first, b_beat = stage(a_valid, "b_valid"), stage(a_g, "b_g"), stage(a_first, "b_first"), \
            stage(a_beat, "b_beat")
        b_prod = [stage(x * a_beat.value, f"b_prod{k}") for k, x in enumerate(x_lanes)]
        # stage c: accumulate; the last beat's sums plus the bias go on
        accs = [[Signal(signed(cfg.acc_width), name=f"acc_g{g}_{k}") for k in range(cfg.lanes)]
                for g in range(cfg.groups)]
        sums = []
        for k in range(cfg.lanes):
            column = Array(accs[g][k] for g in range(cfg.groups))
            total = Signal(signed(cfg.acc_width), name=f"total{k}")
            m.d.comb += total.eq(Mux(b_first, 0, column[b_g]) + b_prod[k])
            with m.If(advance & b_valid):
                for g in range(cfg.groups):
                    with m.If(b_g == g):
                        m.d.sync += accs[g][k].eq(total)
            sums.append(stage((total + b_beat.bias)[:cfg.sum_width].as_signed(), f"c_sum{k}"))
        c_valid = stage(b_valid & b_beat.last, "c_valid")
        c_mult, c_shift = stage(b_beat.multiplier, "c_mult"), stage(b_beat.shift, "c_shift")
        # stage d: the sum again (a register ahead of the requantizer, not between its product and its
        # rounding: there YoWASP's Yosys 0.70 exits in ECP5 LUT mapping); stage e: the requantizer
        d_valid, d_mult, d_shift = stage(c_valid, "d_valid"), stage(c_mult, "d_mult"), stage(c_shift, "d_shift")
        for k, s in enumerate(sums):
            d = stage(s, f"d_sum{k}")
            if cfg.raw:
                out = saturate(d, cfg.out_format)[:cfg.out_width].as_signed()
            else:
                out = requantize(d, d_mult, d_shift, cfg.out_format)
            if cfg.raw_port:
                out = Mux(self.raw, saturate(d, RAW_FORMAT)[:RAW_FORMAT.width].as_signed(), out)
            with m.If(advance):
                m.d.sync += self.o.payload[k].eq(out)
        with m.If(advance):
            m.d.sync += self.o.valid.eq(d_valid)
