"""Element-wise units of the integer-only ViT: i-GELU and the residual add, P lanes, one beat per cycle.

Each is a ``LockstepPipeline`` (all stages stall together on backpressure) that
reproduces one op of ``attnforge.int_ops`` bit for bit:

* ``GeluUnit``: ``rq(gelu(q, T, C))``, int16 in, int8 out (``IntGelu``);
* ``ResidualAddUnit``: ``sat16(rq_a(a) + rq_b(b))``, the residual ``a`` int16 and the
  branch ``b`` int8, each requantizer to a format 2 bits wider than the output
  (``IntAdd``).

The constants (``T``, ``C``, the requantizers' multipliers and shifts) are
run-time input ports, like ``RequantLine``'s: they change per layer and must
hold still while beats are in flight. Cycle model: the first beat comes out
``latency`` cycles after it went in; ``beats`` back-to-back beats take
``beats + latency`` cycles from the first input transfer to the last output
transfer inclusive (``cycles``), with no idle input cycle and no backpressure.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError, check_int
from attnforge.int_ops import GELU_T_BITS, INT16, gelu, residual_add
from attnforge.numfmt import INT8, IntFormat, Requantizer

from ..common.component import ConfiguredComponent
from ..common.requant import MAX_SHIFT, requant_product, requant_round
from ..common.stream import LockstepPipeline
from ..common.trees import saturate

__all__ = ["GeluUnitConfig", "GeluUnit", "ResidualAddUnitConfig", "ResidualAddUnit", "check_requantizer_fits"]


def check_requantizer_fits(what: str, rq: Requantizer, multiplier_width: int, out: IntFormat) -> None:
    """``ConfigError`` unless ``rq`` is what a unit with ``multiplier_width`` bits and output ``out`` computes."""
    if not isinstance(rq, Requantizer):
        raise TypeError(f"{what} must be a numfmt.Requantizer, not {rq!r}")
    check_int(f"{what} multiplier", rq.multiplier, 0, (1 << multiplier_width) - 1)
    check_int(f"{what} shift", rq.shift, 0, MAX_SHIFT)
    if rq.out != out:
        raise ConfigError(f"{what} writes {rq.out}; this unit's requantizer writes {out}")


@dataclass(frozen=True)
class GeluUnitConfig:
    """Parameters of the i-GELU unit.

    Parameters
    ----------
    lanes : int
        Values per beat (P), 1..64.
    t_width : int
        Bits of the run-time clip threshold T, 1..20 (``int_ops.GELU_T_BITS``); C gets ``2 * t_width + 1`` bits.
    multiplier_width : int
        Bits of the output requantizer's run-time multiplier, 1..32 (16 as the golden model's).
    """

    lanes: int = 4
    t_width: int = GELU_T_BITS
    multiplier_width: int = 16

    #: Pipeline stages: |q| and min, (m - T)**2, L + C, q (L + C), requantizer product, rounding.
    latency = 6

    def __post_init__(self):
        check_int("GELU unit lanes", self.lanes, 1, 64)
        check_int("GELU unit t_width", self.t_width, 1, GELU_T_BITS)
        check_int("GELU unit multiplier_width", self.multiplier_width, 1, 32)

    @property
    def c_width(self) -> int:
        """Bits of C: ``gelu_constants`` gives ``C ~ 1.11 T**2 < 2**(2 t_width + 1)``."""
        return 2 * self.t_width + 1

    @property
    def input_layout(self):
        return data.ArrayLayout(signed(INT16.width), self.lanes)

    @property
    def output_layout(self):
        return data.ArrayLayout(signed(INT8.width), self.lanes)

    def cycles(self, beats: int) -> int:
        """First input transfer to last output transfer, inclusive, for back-to-back beats and no backpressure."""
        check_int("GELU unit beats", beats, 1)
        return beats + self.latency

    def check_constants(self, t: int, c: int, rq: Requantizer) -> None:
        """``ConfigError`` naming the constant unless ``(T, C, rq)`` fit this unit's ports."""
        check_int("GELU constant T", t, 1, (1 << self.t_width) - 1)
        check_int("GELU constant C", c, 0, (1 << self.c_width) - 1)
        check_requantizer_fits("GELU output requantizer", rq, self.multiplier_width, INT8)

    def golden(self, q, t: int, c: int, rq: Requantizer) -> list[int]:
        """What the unit outputs for int16 values ``q``: ``rq(int_ops.gelu(q, T, C))``, on Python ints.

        Python ints, not numpy: ``g * multiplier`` reaches 2**73 for T near 2**20 (``|g| < 2**57``),
        beyond int64; the hardware's widths hold it exactly.
        """
        self.check_constants(t, c, rq)
        return [rq(gelu(int(v), t, c)) for v in q]


class GeluUnit(ConfiguredComponent):
    """i-GELU on P int16 lanes per beat, one beat per cycle, ``latency`` = 6 cycles.

    Per lane: ``m = min(|q|, T)``; ``w = L + C`` (``2C - (m - T)**2`` for q > 0,
    ``(m - T)**2`` for q < 0, ``C`` for q = 0); ``g = q * w``; ``y = rq(g)`` to int8.

    Members
    -------
    t : ``In(unsigned(t_width))``
        The clip threshold T (``int_ops.gelu_constants``); holds still while beats are in flight.
    c : ``In(unsigned(2 * t_width + 1))``
        The constant C; likewise.
    multiplier : ``In(unsigned(multiplier_width))``
        Output requantizer's multiplier; likewise.
    shift : ``In(range(MAX_SHIFT + 1))``
        Output requantizer's shift; likewise.
    i : ``In(stream.Signature(ArrayLayout(signed(16), lanes)))``
        GELU inputs (the fc1 output, int16).
    o : ``Out(stream.Signature(ArrayLayout(signed(8), lanes)))``
        ``rq(gelu(q))``, int8.
    """

    config_type = GeluUnitConfig

    @classmethod
    def signature_of(cls, config: GeluUnitConfig):
        return {
            "t": In(unsigned(config.t_width)),
            "c": In(unsigned(config.c_width)),
            "multiplier": In(unsigned(config.multiplier_width)),
            "shift": In(range(MAX_SHIFT + 1)),
            "i": In(stream.Signature(config.input_layout)),
            "o": Out(stream.Signature(config.output_layout)),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        pipe = LockstepPipeline(m, depth=cfg.latency, ready=self.o.ready, name="gelu")
        m.d.comb += [self.i.ready.eq(pipe.advance), self.o.valid.eq(pipe.valid[-1])]
        t = self.t
        for lane in range(cfg.lanes):
            x = self.i.payload[lane]
            valid = {"valid": self.i.valid} if lane == 0 else {}
            absx = Mux(x < 0, -x, x)[:INT16.width + 1]
            q0 = pipe.stage(0, x, name=f"q0_{lane}", **valid)
            m0 = pipe.stage(0, Mux(absx < t, absx, t)[:cfg.t_width], name=f"m0_{lane}")
            q1 = pipe.stage(1, q0, name=f"q1_{lane}")
            d1 = pipe.stage(1, (m0 - t) * (m0 - t), name=f"d1_{lane}")    # (m - T)**2 <= T**2
            q2 = pipe.stage(2, q1, name=f"q2_{lane}")
            w2 = pipe.stage(2, Mux(q1 > 0, (self.c << 1) - d1, Mux(q1 < 0, d1, self.c)), name=f"w2_{lane}")
            g3 = pipe.stage(3, q2 * w2, name=f"g3_{lane}")
            p4 = pipe.stage(4, requant_product(g3, self.multiplier), name=f"p4_{lane}")
            y5 = pipe.stage(5, requant_round(p4, self.shift, INT8), name=f"y5_{lane}")
            m.d.comb += self.o.payload[lane].eq(y5)
        return m


@dataclass(frozen=True)
class ResidualAddUnitConfig:
    """Parameters of the residual-add unit: ``sat(rq_a(a) + rq_b(b), out)``.

    Parameters
    ----------
    lanes : int
        Values per beat (P), 1..64.
    a_width : int
        Bits of the residual operand a, 2..32 (the int16 stream).
    b_width : int
        Bits of the branch operand b, 2..32 (int8: proj and fc2 outputs).
    out_width : int
        Bits of the saturated sum, 2..32 (int16); the requantizers write ``out_width + 2`` bits.
    multiplier_width : int
        Bits of each requantizer's run-time multiplier, 1..32 (16 as the golden model's).
    """

    lanes: int = 4
    a_width: int = INT16.width
    b_width: int = INT8.width
    out_width: int = INT16.width
    multiplier_width: int = 16

    #: Pipeline stages: both requantizer products, both roundings, the saturating add.
    latency = 3

    def __post_init__(self):
        check_int("residual add unit lanes", self.lanes, 1, 64)
        for name in ("a_width", "b_width", "out_width"):
            check_int(f"residual add unit {name}", getattr(self, name), 2, 32)
        check_int("residual add unit multiplier_width", self.multiplier_width, 1, 32)

    @property
    def wide_format(self) -> IntFormat:
        """The requantizers' output format: ``out_width + 2`` bits (``intvit._quantize_add``)."""
        return IntFormat(self.out_width + 2)

    @property
    def out_format(self) -> IntFormat:
        return IntFormat(self.out_width)

    def layout(self, width: int):
        return data.ArrayLayout(signed(width), self.lanes)

    def cycles(self, beats: int) -> int:
        """First input transfer to last output transfer, inclusive, for back-to-back beats and no backpressure."""
        check_int("residual add unit beats", beats, 1)
        return beats + self.latency

    def golden(self, a, rq_a: Requantizer, b, rq_b: Requantizer):
        """What the unit outputs: ``int_ops.residual_add(a, rq_a, b, rq_b, out)``."""
        check_requantizer_fits("residual requantizer rq_a", rq_a, self.multiplier_width, self.wide_format)
        check_requantizer_fits("branch requantizer rq_b", rq_b, self.multiplier_width, self.wide_format)
        return residual_add(a, rq_a, b, rq_b, self.out_format)


class ResidualAddUnit(ConfiguredComponent):
    """Residual add on P lanes: two operand streams joined, one beat per cycle, ``latency`` = 3 cycles.

    A beat moves when both ``a`` and ``b`` offer one (each ``ready`` waits for the
    other's ``valid``) and the pipeline can advance.

    Members
    -------
    a_multiplier, b_multiplier : ``In(unsigned(multiplier_width))``
        The requantizers' multipliers; hold still while beats are in flight.
    a_shift, b_shift : ``In(range(MAX_SHIFT + 1))``
        The requantizers' shifts; likewise.
    a : ``In(stream.Signature(ArrayLayout(signed(a_width), lanes)))``
        The residual stream.
    b : ``In(stream.Signature(ArrayLayout(signed(b_width), lanes)))``
        The branch (attention projection or MLP output).
    o : ``Out(stream.Signature(ArrayLayout(signed(out_width), lanes)))``
        ``sat(rq_a(a) + rq_b(b))``.
    """

    config_type = ResidualAddUnitConfig

    @classmethod
    def signature_of(cls, config: ResidualAddUnitConfig):
        return {
            "a_multiplier": In(unsigned(config.multiplier_width)),
            "a_shift": In(range(MAX_SHIFT + 1)),
            "b_multiplier": In(unsigned(config.multiplier_width)),
            "b_shift": In(range(MAX_SHIFT + 1)),
            "a": In(stream.Signature(config.layout(config.a_width))),
            "b": In(stream.Signature(config.layout(config.b_width))),
            "o": Out(stream.Signature(config.layout(config.out_width))),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        pipe = LockstepPipeline(m, depth=cfg.latency, ready=self.o.ready, name="add")
        both = self.a.valid & self.b.valid
        m.d.comb += [self.a.ready.eq(pipe.advance & self.b.valid), self.b.ready.eq(pipe.advance & self.a.valid),
                     self.o.valid.eq(pipe.valid[-1])]
        wide = cfg.wide_format
        for lane in range(cfg.lanes):
            valid = {"valid": both} if lane == 0 else {}
            pa = pipe.stage(0, requant_product(self.a.payload[lane], self.a_multiplier), name=f"pa0_{lane}", **valid)
            pb = pipe.stage(0, requant_product(self.b.payload[lane], self.b_multiplier), name=f"pb0_{lane}")
            ra = pipe.stage(1, requant_round(pa, self.a_shift, wide), name=f"ra1_{lane}")
            rb = pipe.stage(1, requant_round(pb, self.b_shift, wide), name=f"rb1_{lane}")
            y = pipe.stage(2, saturate(ra + rb, cfg.out_format)[:cfg.out_width].as_signed(), name=f"y2_{lane}")
            m.d.comb += self.o.payload[lane].eq(y)
        return m
