"""Integer LayerNorm in hardware: ``int_ops.layernorm`` bit for bit, one row of D channels at a time.

Dataflow of one row (P channels per beat, ``B = D / P`` beats), in two halves:
the **front** (steps 1-4) and the **back** (step 5), each with its own half of a
double row buffer (a memory of ``2 max_channels / P`` words of P int16), so the
back's output pass of one row overlaps the front's input pass of the next:

1. **input pass** (B cycles): each beat is written to the front's row buffer while
   two accumulators add ``sum x`` and ``sum x**2`` (P squares and an adder tree per beat);
2. **statistics** (2 cycles): ``v = D (D sum x**2 - s**2) + E``, which is
   ``sum_i (D x_i - s)**2 + E`` (step 2 of ``int_ops.layernorm``) exactly: the
   identity ``sum (D x_i - s)**2 = D**2 sum x_i**2 - D s**2`` holds in integers,
   so the golden model's second pass over the row is not needed;
3. **square root** (``ceil(31 / isqrt_steps)`` cycles): the golden model's bit-by-bit
   ``isqrt``, ``isqrt_steps`` of its 31 iterations per cycle;
4. **reciprocal** (``ceil(48 / div_bits) + 2`` cycles): ``r = 2**48 // sigma`` on
   ``hw/common/divider.SerialDivider`` (``div_bits`` quotient bits per cycle); sigma = 1
   (r = 2**48, one bit too wide for the divider) and sigma = 0 (r = 0) are chosen
   by a multiplexer, so the time does not depend on the data; then one **handover**
   cycle (HOLD) gives the row (its buffer half, ``s`` and ``r``) to the back once the
   back has issued its previous row, and the front takes the next row;
5. **output pass** (B issue cycles + 7 pipeline stages): the row buffer and the
   gamma/beta memory are read again, beat by beat, through a ``LockstepPipeline``:
   ``c = D x - s``; ``c r``; ``n = sat16((c r + 2**32) >> 33)``; ``acc = n g + b``;
   the requantizer's product; its rounding to int8.

Cycle model, inputs offered every cycle and no backpressure: a row takes
``row_latency = 2 B + ceil(31 / isqrt_steps) + ceil(48 / div_bits) + 12`` cycles from
its first input transfer to its last output transfer inclusive; back-to-back
rows start every ``row_period = B + ceil(31 / isqrt_steps) + ceil(48 / div_bits) + 5``
cycles (the front's time, always longer than the back's B issue cycles).

Constants: gamma (int16) and beta (int32) of each channel are written into an
on-chip memory through the ``param`` stream (one beat of P channels with its
beat index), accepted only between rows (the front waiting for a row's first
beat, the back idle); the channel count D, the integer
``E`` and the output requantizer are run-time ports that hold still while a row
is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError, check_int
from attnforge.int_ops import (INT16, INT32, ISQRT_INPUT_BITS, ISQRT_ITERATIONS, LN_RECIP_BITS, LN_SHIFT,
                               check_layernorm_width, layernorm)
from attnforge.numfmt import INT8, Requantizer

from ..common.component import ConfiguredComponent
from ..common.divider import SerialDivider
from ..common.requant import MAX_SHIFT, requant_product, requant_round
from ..common.stream import LockstepPipeline
from ..common.trees import saturate, tree_sum
from .eltwise import check_requantizer_fits

__all__ = ["LayerNormUnitConfig", "LayerNormUnit", "OUTPUT_STAGES", "SIGMA_BITS"]

#: Output pass pipeline: memory read, c, c*r, n, n*g+b, requantizer product, rounding.
OUTPUT_STAGES = 7
#: sigma = isqrt(v) < 2**(ISQRT_INPUT_BITS / 2).
SIGMA_BITS = ISQRT_INPUT_BITS // 2


@dataclass(frozen=True)
class LayerNormUnitConfig:
    """Parameters of the integer LayerNorm unit.

    Parameters
    ----------
    lanes : int
        Channels per beat (P), 1..64.
    max_channels : int
        Largest row length D the buffers hold, a multiple of lanes (192: DeiT-Tiny); at most what
        ``int_ops.check_layernorm_width`` allows for int16 inputs.
    isqrt_steps : int
        Square-root iterations per cycle, 1..31 (31 iterations in all).
    div_bits : int
        Reciprocal quotient bits per cycle, 1..48 (48 in all).
    multiplier_width : int
        Bits of the output requantizer's run-time multiplier, 1..32 (16 as the golden model's).
    """

    lanes: int = 4
    max_channels: int = 192
    isqrt_steps: int = 1
    div_bits: int = 1
    multiplier_width: int = 16

    def __post_init__(self):
        check_int("LayerNorm unit lanes", self.lanes, 1, 64)
        check_int("LayerNorm unit max_channels", self.max_channels, 1)
        check_layernorm_width(self.max_channels)
        if self.max_channels % self.lanes:
            raise ConfigError(f"LayerNorm unit max_channels={self.max_channels} must be a multiple of "
                              f"lanes={self.lanes}")
        check_int("LayerNorm unit isqrt_steps", self.isqrt_steps, 1, ISQRT_ITERATIONS)
        check_int("LayerNorm unit div_bits", self.div_bits, 1, LN_RECIP_BITS)
        check_int("LayerNorm unit multiplier_width", self.multiplier_width, 1, 32)

    @property
    def max_beats(self) -> int:
        return self.max_channels // self.lanes

    @property
    def input_layout(self):
        return data.ArrayLayout(signed(INT16.width), self.lanes)

    @property
    def output_layout(self):
        return data.ArrayLayout(signed(INT8.width), self.lanes)

    @property
    def param_layout(self):
        """One beat of constants: channels ``index * P .. index * P + P - 1``."""
        return data.StructLayout({
            "index": range(max(self.max_beats, 2)),     # 1 bit at least: no zero-width port
            "gamma": data.ArrayLayout(signed(INT16.width), self.lanes),
            "beta": data.ArrayLayout(signed(INT32.width), self.lanes),
        })

    @property
    def isqrt_cycles(self) -> int:
        return -(-ISQRT_ITERATIONS // self.isqrt_steps)

    @property
    def div_cycles(self) -> int:
        """The divider's start cycle, its ``ceil(48 / div_bits)`` steps and its done cycle."""
        return -(-LN_RECIP_BITS // self.div_bits) + 2

    def check_channels(self, channels: int) -> int:
        """``channels`` if this unit can normalize rows of that length (a multiple of lanes up to max_channels)."""
        check_int("LayerNorm channels", channels, self.lanes, self.max_channels)
        if channels % self.lanes:
            raise ConfigError(f"LayerNorm channels={channels} must be a multiple of lanes={self.lanes}")
        return channels

    def row_latency(self, channels: int) -> int:
        """One row alone, first input transfer to last output transfer inclusive, inputs offered every
        cycle, no backpressure: ``2 B + ceil(31 / isqrt_steps) + ceil(48 / div_bits) + 12``, ``B = channels / lanes``."""
        beats = self.check_channels(channels) // self.lanes
        # B input + 2 statistics + isqrt + divider + 1 handover + B issue + OUTPUT_STAGES to the last output transfer
        return 2 * beats + 2 + self.isqrt_cycles + self.div_cycles + 1 + OUTPUT_STAGES

    def row_period(self, channels: int) -> int:
        """Cycles between the first input transfers of back-to-back rows (the front's time; the back's output
        pass of one row overlaps the next row's input pass): ``B + ceil(31 / isqrt_steps) + ceil(48 / div_bits) + 5``."""
        beats = self.check_channels(channels) // self.lanes
        return beats + 2 + self.isqrt_cycles + self.div_cycles + 1

    def cycles(self, rows: int, channels: int) -> int:
        """``rows`` back-to-back rows, first input transfer to last output transfer inclusive:
        ``row_latency + (rows - 1) * row_period``."""
        check_int("LayerNorm rows", rows, 1)
        return self.row_latency(channels) + (rows - 1) * self.row_period(channels)

    def check_constants(self, gamma, beta, rq: Requantizer, eps: int) -> None:
        """``ConfigError`` naming the constant unless gamma, beta, ``rq`` and ``E`` fit this unit."""
        if len(gamma) != len(beta):
            raise ConfigError(f"LayerNorm gamma ({len(gamma)}) and beta ({len(beta)}) differ in length")
        self.check_channels(len(gamma))
        INT16.check_array("LayerNorm gamma", np.asarray(gamma, np.int64))
        INT32.check_array("LayerNorm beta", np.asarray(beta, np.int64))
        check_int("LayerNorm eps E", eps, 0, (1 << (ISQRT_INPUT_BITS - 1)) - 1)
        check_requantizer_fits("LayerNorm output requantizer", rq, self.multiplier_width, INT8)

    def golden(self, x, gamma, beta, rq: Requantizer, eps: int):
        """What the unit outputs for rows ``x [rows, D]``: ``int_ops.layernorm``."""
        self.check_constants(gamma, beta, rq, eps)
        return layernorm(x, gamma, beta, rq, eps)


class LayerNormUnit(ConfiguredComponent):
    """Integer LayerNorm of rows of D int16 channels, P per beat, to int8 (see the module docstring).

    Members
    -------
    channels : ``In(range(max_channels + 1))``
        Row length D, a multiple of lanes in [lanes, max_channels]; holds still while a row is in flight.
    eps : ``In(unsigned(61))``
        The integer E of ``int_ops.layernorm``; likewise.
    multiplier : ``In(unsigned(multiplier_width))``
        Output requantizer's multiplier; likewise.
    shift : ``In(range(MAX_SHIFT + 1))``
        Output requantizer's shift; likewise.
    param : ``In(stream.Signature(StructLayout(index, gamma[lanes] int16, beta[lanes] int32)))``
        Writes gamma and beta of channels ``index * P ..`` into the constant memory; taken only
        between rows (no row beat accepted yet, none in flight).
    i : ``In(stream.Signature(ArrayLayout(signed(16), lanes)))``
        Row beats, D / P per row, channel order.
    o : ``Out(stream.Signature(ArrayLayout(signed(8), lanes)))``
        The normalized, scaled, requantized row, same beat order.
    """

    config_type = LayerNormUnitConfig

    @classmethod
    def signature_of(cls, config: LayerNormUnitConfig):
        return {
            "channels": In(range(config.max_channels + 1)),
            "eps": In(unsigned(ISQRT_INPUT_BITS - 1)),
            "multiplier": In(unsigned(config.multiplier_width)),
            "shift": In(range(MAX_SHIFT + 1)),
            "param": In(stream.Signature(config.param_layout)),
            "i": In(stream.Signature(config.input_layout)),
            "o": Out(stream.Signature(config.output_layout)),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        # two row buffers: the front fills one while the back reads the other
        m.submodules.x_mem = x_mem = memory.Memory(shape=cfg.input_layout, depth=2 * cfg.max_beats, init=[])
        gb_layout = data.StructLayout({"gamma": cfg.param_layout.members["gamma"],
                                       "beta": cfg.param_layout.members["beta"]})
        # depth 2 at least: a one-word memory has a zero-width address, which lint refuses
        m.submodules.gb_mem = gb_mem = memory.Memory(shape=gb_layout, depth=max(cfg.max_beats, 2), init=[])
        m.submodules.divider = divider = SerialDivider(dividend=1 << LN_RECIP_BITS, divisor_width=SIGMA_BITS,
                                                       quotient_bits=LN_RECIP_BITS, bits_per_cycle=cfg.div_bits)
        # front (input pass and statistics): counters, bank, sum, sum of squares, sigma, r
        smax = cfg.max_channels * -INT16.min
        s = Signal(signed(smax.bit_length() + 1), name="row_sum")
        q = Signal(unsigned((cfg.max_channels * INT16.min ** 2).bit_length()), name="row_sum_sq")
        elems = Signal(range(cfg.max_channels + 1))
        beat = Signal(range(max(cfg.max_beats, 2)))
        in_bank = Signal(name="in_bank")
        recip = Signal(LN_RECIP_BITS + 1, name="recip")
        sigma = Signal(SIGMA_BITS, name="sigma")
        # back (output pass): its row's sum, r and bank, its counters
        s_out, r_out = Signal.like(s, name="out_sum"), Signal.like(recip, name="out_recip")
        out_bank, issuing = Signal(name="out_bank"), Signal(name="issuing")
        o_elems = Signal(range(cfg.max_channels + 1))
        o_beat = Signal(range(max(cfg.max_beats, 2)))
        pipe = LockstepPipeline(m, depth=OUTPUT_STAGES, ready=self.o.ready, name="out")
        x_rd = x_mem.read_port(domain="sync")
        gb_rd = gb_mem.read_port(domain="sync")
        m.d.comb += [x_rd.addr.eq(Mux(out_bank, o_beat + cfg.max_beats, o_beat)), gb_rd.addr.eq(o_beat),
                     x_rd.en.eq(pipe.advance), gb_rd.en.eq(pipe.advance)]
        x_wr, gb_wr = x_mem.write_port(), gb_mem.write_port()
        m.d.comb += [x_wr.addr.eq(Mux(in_bank, beat + cfg.max_beats, beat)), x_wr.data.eq(self.i.payload),
                     x_wr.en.eq(self.i.valid & self.i.ready),
                     gb_wr.addr.eq(self.param.payload.index), gb_wr.data.gamma.eq(self.param.payload.gamma),
                     gb_wr.data.beta.eq(self.param.payload.beta),
                     gb_wr.en.eq(self.param.valid & self.param.ready)]
        # the back takes a row when it has issued its last one and that one's last beat leaves stage 0 (which
        # reads s_out when it moves on); stage 1 keeps its own copy of r
        handover = ~issuing & (~pipe.valid[0] | pipe.advance)
        isqrt = self._isqrt_steps(m)
        with m.FSM(name="layernorm") as fsm:
            with m.State("IN"):
                self._input_pass(m, s, q, elems, beat)
            self._statistics(m, s, q, sigma, recip, divider, isqrt)
            with m.State("HOLD"):
                with m.If(handover):
                    m.d.sync += [s_out.eq(s), r_out.eq(recip), out_bank.eq(in_bank), in_bank.eq(~in_bank),
                                 issuing.eq(1)]
                    m.next = "IN"
        with m.If(issuing & pipe.advance):
            m.d.sync += [o_elems.eq(o_elems + cfg.lanes), o_beat.eq(o_beat + 1)]
            with m.If(o_elems + cfg.lanes == self.channels):
                m.d.sync += [o_elems.eq(0), o_beat.eq(0), issuing.eq(0)]
        # plain assignments, not inside the states: Icarus leaves an FSM-state process that never ran at X
        m.d.comb += [self.i.ready.eq(fsm.ongoing("IN")),
                     self.param.ready.eq(fsm.ongoing("IN") & (elems == 0) & ~issuing),
                     divider.start.eq(fsm.ongoing("DIV")), divider.divisor.eq(Mux(sigma == 0, 1, sigma))]
        self._output_pipeline(m, pipe, issuing, x_rd.data, gb_rd.data, s_out, r_out)
        return m

    def _input_pass(self, m, s, q, elems, beat):
        """IN state: take row beats into the buffer, accumulate sum x and sum x**2; constants only between rows."""
        cfg = self._config
        with m.If(self.i.valid):
            lanes = [self.i.payload[k] for k in range(cfg.lanes)]
            beat_sum = tree_sum(lanes)
            beat_sq = tree_sum([(x * x).as_unsigned() for x in lanes])
            with m.If(elems == 0):
                m.d.sync += [s.eq(beat_sum), q.eq(beat_sq)]
            with m.Else():
                m.d.sync += [s.eq(s + beat_sum), q.eq(q + beat_sq)]
            m.d.sync += [elems.eq(elems + cfg.lanes), beat.eq(beat + 1)]
            with m.If(elems + cfg.lanes == self.channels):
                m.d.sync += [elems.eq(0), beat.eq(0)]
                m.next = "STAT"

    def _isqrt_steps(self, m):
        """The isqrt registers (remainder, result, one-hot bit) and ``isqrt_steps`` iterations on them."""
        rem = Signal(ISQRT_INPUT_BITS, name="isqrt_rem")
        res = Signal(ISQRT_INPUT_BITS, name="isqrt_res")
        bit = Signal(ISQRT_INPUT_BITS - 1, name="isqrt_bit")
        n_, r_, b_ = rem, res, bit
        for k in range(self._config.isqrt_steps):
            t = r_ + b_
            ge = (n_ >= t) & (b_ != 0)      # past the 31st iteration bit is 0: hold
            n_k, r_k = Signal.like(rem, name=f"isqrt_rem{k}"), Signal.like(res, name=f"isqrt_res{k}")
            b_k = Signal.like(bit, name=f"isqrt_bit{k}")
            m.d.comb += [n_k.eq(Mux(ge, n_ - t, n_)),
                         r_k.eq(Mux(b_ == 0, r_, Mux(ge, (r_ >> 1) + b_, r_ >> 1))), b_k.eq(b_ >> 2)]
            n_, r_, b_ = n_k, r_k, b_k
        return (rem, res, bit), (n_, r_, b_)

    def _statistics(self, m, s, q, sigma, recip, divider, isqrt):
        """STAT, SUM, SQRT, DIV, WAIT: v = D (D sum x**2 - s**2) + E, sigma = isqrt(v), r = 2**48 // sigma."""
        d_q = Signal(len(q) + len(self.channels), name="d_sum_sq")
        s_sq = Signal(2 * len(s) - 1, name="sum_squared")
        (rem, res, bit), (n_, r_, b_) = isqrt
        with m.State("STAT"):
            m.d.sync += [d_q.eq(self.channels * q), s_sq.eq(s * s)]
            m.next = "SUM"
        with m.State("SUM"):
            # sum c**2 = D (D sum x**2 - s**2) >= 0; with E below 2**62 (int_ops.check_layernorm_width)
            m.d.sync += [rem.eq(self.channels * (d_q - s_sq) + self.eps), res.eq(0),
                         bit.eq(1 << (ISQRT_INPUT_BITS - 2))]
            m.next = "SQRT"
        with m.State("SQRT"):
            m.d.sync += [rem.eq(n_), res.eq(r_), bit.eq(b_)]
            with m.If(b_ == 0):
                m.d.sync += sigma.eq(r_[:SIGMA_BITS])
                m.next = "DIV"
        with m.State("DIV"):
            # the divider starts (divisor max(sigma, 1): sigma 0 and 1 are chosen below, the time is fixed)
            m.next = "WAIT"
        with m.State("WAIT"):
            with m.If(divider.done):
                m.d.sync += recip.eq(Mux(sigma == 0, 0, Mux(sigma == 1, 1 << LN_RECIP_BITS, divider.quotient)))
                m.next = "HOLD"

    def _output_pipeline(self, m, pipe, issuing, x, gb, s, recip):
        """The output pass: memory data (stage 0) to the int8 beat (stage 6)."""
        cfg = self._config
        pipe.stage(0, Const(0, 1), valid=issuing, name="out0_issue")    # stage 0's data are the memories' outputs
        m.d.comb += [self.o.valid.eq(pipe.valid[-1])]
        rounding = 1 << (LN_SHIFT - 1)
        r1 = pipe.stage(1, recip, name="r1")        # the row's r travels with it: the back may take the next row
        for k in range(cfg.lanes):
            g, b = gb.gamma[k], gb.beta[k]
            c1 = pipe.stage(1, self.channels * x[k] - s, name=f"c1_{k}")
            g1, b1 = pipe.stage(1, g, name=f"g1_{k}"), pipe.stage(1, b, name=f"b1_{k}")
            cr2 = pipe.stage(2, c1 * r1, name=f"cr2_{k}")
            g2, b2 = pipe.stage(2, g1, name=f"g2_{k}"), pipe.stage(2, b1, name=f"b2_{k}")
            n3 = pipe.stage(3, saturate((cr2 + rounding) >> LN_SHIFT, INT16)[:INT16.width].as_signed(), name=f"n3_{k}")
            g3, b3 = pipe.stage(3, g2, name=f"g3_{k}"), pipe.stage(3, b2, name=f"b3_{k}")
            acc4 = pipe.stage(4, n3 * g3 + b3, name=f"acc4_{k}")
            p5 = pipe.stage(5, requant_product(acc4, self.multiplier), name=f"p5_{k}")
            y6 = pipe.stage(6, requant_round(p5, self.shift, INT8), name=f"y6_{k}")
            m.d.comb += self.o.payload[k].eq(y6)
