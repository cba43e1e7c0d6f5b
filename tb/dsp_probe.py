"""A probe of ``registered_split_product``: the portable form and the ``MULT18X18D`` form side by side on the
same operands, for tb/dsp_tb.py (tests/rtl/test_dsp_primitive.py)."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from attnforge.hw.common.dsp import registered_split_product
from attnforge.hw.common.trees import product_pieces

__all__ = ["MUTANTS", "DspProbe"]


#: What a mutant changes in every MULT18X18D of the probe's instantiated form: the sign setting of the
#: wide operand's piece (matters where a piece's product is wider than the DSP's 18-bit operands), or
#: no input registers (the product a cycle early).
MUTANTS = {"sign": ("port", "SIGNEDB"), "unregistered": ("parameter", ("REG_INPUTA_CLK", "REG_INPUTB_CLK"))}


class DspProbe(wiring.Component):
    """``narrow * wide`` three cycles later, as ``portable`` and as ``instantiated`` (the
    ``MULT18X18D`` form; ``primitive`` is a Verilog keyword).

    ``cut`` is ``split_product``'s (piece, top). ``mutant`` (a key of ``MUTANTS``): every instance of
    the instantiated form changed so, for the tests' proof that a wrong instantiation is caught.
    """

    def __init__(self, narrow: Shape, wide: Shape, cut: tuple[int, int], *, mutant: str | None = None):
        if mutant is not None and mutant not in MUTANTS:
            raise ValueError(f"DspProbe mutant must be one of {sorted(MUTANTS)}, not {mutant!r}")
        self._narrow, self._wide, self._cut, self._mutant = Shape.cast(narrow), Shape.cast(wide), cut, mutant
        shape = (Const(0, self._narrow) * Const(0, self._wide)).shape()
        super().__init__({"narrow": In(self._narrow), "wide": In(self._wide),
                          "portable": Out(shape), "instantiated": Out(shape)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.portable.eq(registered_split_product(m, self.narrow, self.wide, "portable", *self._cut))
        product = registered_split_product(m, self.narrow, self.wide, "dsp", *self._cut, dsp_primitive=True)
        m.d.comb += self.instantiated.eq(product)
        if self._mutant:
            kind, what = MUTANTS[self._mutant]
            for n in range(len(product_pieces(self.wide, *self._cut))):
                instance = m.submodules[f"dsp_piece{n}_dsp"]
                if kind == "port":
                    value, direction = instance.ports[what]
                    instance.ports[what] = (~value, direction)
                else:
                    instance.parameters.update({p: "NONE" for p in what})
        return m
