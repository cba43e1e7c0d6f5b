"""Requantization in hardware: wide accumulators back to int8 by multiply, rounding shift, saturation.

The arithmetic is ``attnforge.numfmt.Requantizer``'s, which the golden models
call. ``requant_product`` and ``requant_round`` are its two halves as Amaranth
expressions (an engine may put a register between them); ``requantize`` is
both at once; ``RequantLine`` is a stream stage for M lanes with the multiplier
and shift set at run time (they change per head or per tensor).
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError, check_int
from attnforge.numfmt import INT8, IntFormat, Requantizer

from .component import ConfiguredComponent
from .trees import saturate

__all__ = ["requant_product", "requant_round", "requant_shift", "requant_shift_amount", "requant_finish", "requantize",
           "RequantLineConfig", "RequantLine", "MAX_SHIFT"]

#: Largest right shift the hardware supports (as ``Requantizer``).
MAX_SHIFT = 62


def requant_product(value, multiplier):
    """Signed ``value`` times unsigned ``multiplier`` (the multiply of ``requantize``)."""
    return value * Cat(multiplier, Const(0, 1)).as_signed()


def requant_round(product, shift, out: IntFormat = INT8):
    """``saturate((product + round) >> shift, out)``: the rounding half of ``requantize``.

    The result has ``out``'s shape (``signed(out.width)`` for a signed format).

    ``shift`` is an unsigned value in ``[0, MAX_SHIFT]``; the rounding term is
    ``1 << (shift - 1)`` (none when ``shift == 0``), i.e. round half up, exactly
    as ``Requantizer.__call__``.
    """
    rounding = (Const(1, 1) << shift) >> 1
    # the clamped value fits ``out``: narrow it, so the expression has the format's shape
    narrowed = saturate((product + rounding) >> shift, out)[:out.width]
    return narrowed.as_signed() if out.signed else narrowed


def requant_shift(product, shift):
    """``product >> max(shift - 1, 0)``: the first of ``requant_round``'s two halves when a register
    goes between them (``requant_finish`` is the second; the barrel shift and the rounding adder
    are then in different stages).

    Exact: with ``q = floor(p / 2**(s - 1))``, ``floor((p + 2**(s - 1)) / 2**s) = floor((q + 1) / 2)``
    for every integer ``p`` and ``s >= 1`` (write ``p = q 2**(s-1) + r``, ``0 <= r < 2**(s-1)``: the
    ``r / 2**s < 1/2`` left over never carries into the quotient).
    """
    return product >> requant_shift_amount(shift)


def requant_shift_amount(shift):
    """``max(shift - 1, 0)``, the amount ``requant_shift`` shifts by (a stage before it may register
    it, so the barrel shifter's select comes from a register)."""
    return Mux(shift == 0, 0, shift - 1)[:len(shift)]


def requant_finish(shifted, rounds, out: IntFormat = INT8):
    """``saturate((shifted + 1) >> 1, out)`` when ``rounds`` (the shift was not 0), else
    ``saturate(shifted, out)``: ``requant_round`` after ``requant_shift`` (same shape)."""
    value = Mux(rounds, (shifted + 1) >> 1, shifted)
    narrowed = saturate(value, out)[:out.width]
    return narrowed.as_signed() if out.signed else narrowed


def requantize(value, multiplier, shift, out: IntFormat = INT8):
    """Amaranth expression: ``saturate((value * multiplier + round) >> shift, out)``."""
    return requant_round(requant_product(value, multiplier), shift, out)


@dataclass(frozen=True)
class RequantLineConfig:
    """Parameters of a requantization stage.

    Parameters
    ----------
    lanes : int
        Values per transfer, 1..1024.
    in_width : int
        Width of the signed input values, 2..64.
    multiplier_width : int
        Width of the unsigned run-time multiplier, 1..32 (as ``Requantizer``).
    out_width : int
        Width of the signed outputs, 2..32 (int8 by default).
    """

    lanes: int = 8
    in_width: int = 28
    multiplier_width: int = 16
    out_width: int = INT8.width

    def __post_init__(self):
        for name, lo, hi in [("lanes", 1, 1024), ("in_width", 2, 64), ("multiplier_width", 1, 32),
                             ("out_width", 2, 32)]:
            check_int(f"requant line {name}", getattr(self, name), lo, hi)
        if self.out_width > self.in_width:
            raise ConfigError(f"requant line out_width={self.out_width} is wider than in_width={self.in_width}; "
                              f"requantization narrows, use out_width <= in_width")

    @property
    def in_format(self) -> IntFormat:
        return IntFormat(self.in_width)

    @property
    def out_format(self) -> IntFormat:
        return IntFormat(self.out_width)

    @property
    def input_layout(self):
        return data.ArrayLayout(signed(self.in_width), self.lanes)

    @property
    def output_layout(self):
        return data.ArrayLayout(signed(self.out_width), self.lanes)

    def golden(self, multiplier: int, shift: int) -> Requantizer:
        """The ``Requantizer`` this stage computes for a given run-time setting."""
        return Requantizer(multiplier, shift, self.out_format, self.multiplier_width)


class RequantLine(ConfiguredComponent):
    """Requantizes M lanes per transfer, one transfer per cycle, one cycle of latency.

    Members
    -------
    multiplier : ``In(unsigned(multiplier_width))``
        Run-time multiplier; must hold still while transfers are in flight.
    shift : ``In(range(MAX_SHIFT + 1))``
        Run-time right shift; likewise.
    i : ``In(stream.Signature(ArrayLayout(signed(in_width), lanes)))``
        Wide values, e.g. accumulator results of a MAC line.
    o : ``Out(stream.Signature(ArrayLayout(signed(out_width), lanes)))``
        The requantized values.
    """

    config_type = RequantLineConfig

    @classmethod
    def signature_of(cls, config: RequantLineConfig):
        return {
            "multiplier": In(unsigned(config.multiplier_width)),
            "shift": In(range(MAX_SHIFT + 1)),
            "i": In(stream.Signature(config.input_layout)),
            "o": Out(stream.Signature(config.output_layout)),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        # A one-entry pipeline register: take a new input whenever the output is free or being taken.
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                for lane in range(cfg.lanes):
                    m.d.sync += self.o.p[lane].eq(
                        requantize(self.i.p[lane], self.multiplier, self.shift, cfg.out_format))
        return m
