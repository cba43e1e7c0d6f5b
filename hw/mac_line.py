"""MAC line: M multiply-accumulate units sharing one input vector.

This is the building block of the ViTCoD engines and the linear-attention
datapath: each beat brings one element ``x`` of a shared vector and one element
of each of M weight rows; after the beat marked ``last``, the M dot products
leave on the output stream. The line accepts one beat per cycle in steady state,
also across vector boundaries (the first product of a new vector replaces the
accumulator instead of adding to it), so a vector of length K costs K cycles.

Pipeline: product register -> accumulator -> output register. The input is
stalled only when a finished result would overwrite an output that the sink
has not taken yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from attnforge.errors import check_int
from attnforge.numfmt import IntFormat, accumulator_width

__all__ = ["MacLineConfig", "MacLine"]

#: Largest accumulator the generator emits; golden models compute in int64.
MAX_ACC_WIDTH = 64
MAX_MACS = 1024


@dataclass(frozen=True)
class MacLineConfig:
    """Generator parameters of a MAC line.

    Parameters
    ----------
    macs : int
        Number of MAC units M (dot products computed at once), 1..1024.
    operand_width : int
        Width of the signed operands x and w, 2..16 bits (int8 by default).
    max_length : int
        Longest vector (number of beats before ``last``) the line must sum
        without overflow. Together with ``operand_width`` it sets the least
        accumulator width.
    acc_width : int or None
        Accumulator width; ``None`` picks the least width that cannot overflow.
        A narrower value is refused; at most 64.
    """

    macs: int = 8
    operand_width: int = 8
    max_length: int = 4096
    acc_width: int | None = None

    def __post_init__(self):
        check_int("MAC line macs (M)", self.macs, 1, MAX_MACS)
        check_int("MAC line operand_width", self.operand_width, 2, 16)
        check_int("MAC line max_length", self.max_length, 1)
        needed = accumulator_width(self.operand_format, self.operand_format, self.max_length)
        if needed > MAX_ACC_WIDTH:
            raise ValueError(
                f"MAC line with operand_width={self.operand_width} and max_length={self.max_length} "
                f"needs a {needed}-bit accumulator; at most {MAX_ACC_WIDTH} bits are supported"
            )
        if self.acc_width is None:
            object.__setattr__(self, "acc_width", needed)
        check_int("MAC line acc_width", self.acc_width, 1)
        if self.acc_width < needed:
            raise ValueError(
                f"MAC line acc_width={self.acc_width} is narrower than the {needed} bits that "
                f"{self.max_length} products of two {self.operand_format} operands can need; "
                f"use acc_width >= {needed} or a smaller max_length"
            )
        if self.acc_width > MAX_ACC_WIDTH:
            raise ValueError(f"MAC line acc_width must be at most {MAX_ACC_WIDTH}, not {self.acc_width}")

    @property
    def operand_format(self) -> IntFormat:
        return IntFormat(self.operand_width, signed=True)

    @property
    def acc_format(self) -> IntFormat:
        return IntFormat(self.acc_width, signed=True)

    @property
    def input_layout(self) -> data.StructLayout:
        return data.StructLayout({
            "x": signed(self.operand_width),
            "w": data.ArrayLayout(signed(self.operand_width), self.macs),
            "last": 1,
        })

    @property
    def output_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.acc_width), self.macs)

    @property
    def latency(self) -> int:
        """Cycles from accepting the ``last`` beat to the result being valid."""
        return 2


class MacLine(wiring.Component):
    """M signed multiply-accumulate units sharing one input vector.

    Parameters
    ----------
    config : MacLineConfig

    Members
    -------
    i : ``In(stream.Signature(config.input_layout))``
        One beat per vector element: ``x``, ``w[0..M-1]`` and ``last``. A transfer
        multiplies ``x`` with each ``w[m]`` and adds the product to dot product m.
        ``last`` marks the final element of a vector.
    o : ``Out(stream.Signature(config.output_layout))``
        The M dot products of one vector, one transfer per vector.
    """

    def __init__(self, config: MacLineConfig):
        if not isinstance(config, MacLineConfig):
            raise TypeError(f"MacLine needs a MacLineConfig, not {config!r}")
        self._config = config
        super().__init__({
            "i": In(stream.Signature(config.input_layout)),
            "o": Out(stream.Signature(config.output_layout)),
        })

    @property
    def config(self) -> MacLineConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        m = Module()

        prod_width = 2 * cfg.operand_width
        p_valid = Signal()
        p_last = Signal()
        prods = [Signal(signed(prod_width), name=f"prod{i}") for i in range(cfg.macs)]
        accs = [Signal(signed(cfg.acc_width), name=f"acc{i}") for i in range(cfg.macs)]
        acc_fresh = Signal(init=1)  # next product starts a new vector

        out_free = ~self.o.valid | self.o.ready
        # The accumulator stage takes the product register unless it would have
        # to write a result into an output register that is still full.
        acc_take = p_valid & (~p_last | out_free)
        p_free = ~p_valid | acc_take
        m.d.comb += self.i.ready.eq(p_free)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(p_free):
            m.d.sync += [p_valid.eq(self.i.valid), p_last.eq(self.i.p.last)]
            with m.If(self.i.valid):
                m.d.sync += [prods[i].eq(self.i.p.x * self.i.p.w[i]) for i in range(cfg.macs)]

        with m.If(acc_take):
            for i in range(cfg.macs):
                total = Mux(acc_fresh, 0, accs[i]) + prods[i]
                m.d.sync += accs[i].eq(total)
                with m.If(p_last):
                    m.d.sync += self.o.p[i].eq(total)
            m.d.sync += acc_fresh.eq(p_last)
            with m.If(p_last):
                m.d.sync += self.o.valid.eq(1)

        return m
