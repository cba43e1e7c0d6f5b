"""A ViTCoD MAC line: M multipliers that serve both halves of attention.

The engines time-share their lines between the two products of attention, so
the same M multipliers ``a[m] * b[m]`` are summed in two ways:

* **score** (SDDMM): one query-key dot product at a time, M channels per cycle:
  the M products go through an adder tree into one accumulator
  (``a`` = a chunk of q, ``b`` = the same chunk of k); ``d / M`` cycles per score;
* **P·V** (SpMM): ``a[m]`` is the probability ``P_j`` in every lane and ``b``
  is a chunk of ``v_j``: each lane accumulates its own output channel, exactly
  like ``hw/mac_line.py``'s MAC line (one shared input, M accumulators).

That is why this line differs from ``MacLine``: a score needs the products of
one beat summed across lanes (the shared-input MAC line cannot do that without
M copies of the key buffer). Pipeline: product register, accumulator; a result
is valid two cycles after the beat marked ``last``. The line never stalls: the
engine's sequencer issues one beat per cycle and takes every result.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from attnforge.errors import check_int
from attnforge.hw.common import tree_sum
from attnforge.numfmt import INT8
from attnforge.softmax_int import PROB_FORMAT

__all__ = ["AttentionLine"]


class AttentionLine(wiring.Component):
    """M MACs with a score (adder tree) mode and a P·V (per-lane accumulate) mode.

    Parameters
    ----------
    macs : int
        M, multipliers of the line.
    score_width, pv_width : int
        Widths of the score accumulator and of each P·V lane accumulator.

    Members
    -------
    valid, pv, first, last : ``In(1)``
        Sampled every cycle: a beat, its mode (1: P·V, 0: score), and whether it is the
        first / last beat of a score or of a P·V chunk.
    a : ``In(ArrayLayout(signed(16), M))``
        q chunk (score) or the probability P in every lane (P·V).
    b : ``In(ArrayLayout(signed(8), M))``
        k chunk (score) or v chunk (P·V).
    dot_valid : ``Out(1)``, dot : ``Out(signed(score_width))``
        One-cycle pulse with a finished score, two cycles after its ``last`` beat.
    vec_valid : ``Out(1)``, vec : ``Out(ArrayLayout(signed(pv_width), M))``
        One-cycle pulse with one finished chunk of P·V.
    """

    def __init__(self, macs: int, score_width: int, pv_width: int):
        self._macs = check_int("AttentionLine macs", macs, 1, 64)
        self._score_width = check_int("AttentionLine score_width", score_width, 2, 64)
        self._pv_width = check_int("AttentionLine pv_width", pv_width, 2, 64)
        super().__init__({
            "valid": In(1), "pv": In(1), "first": In(1), "last": In(1),
            "a": In(data.ArrayLayout(signed(PROB_FORMAT.width), macs)),
            "b": In(data.ArrayLayout(signed(INT8.width), macs)),
            "dot_valid": Out(1), "dot": Out(signed(score_width)),
            "vec_valid": Out(1), "vec": Out(data.ArrayLayout(signed(pv_width), macs)),
        })

    @property
    def macs(self) -> int:
        return self._macs

    def elaborate(self, platform):
        m = Module()
        M = self._macs
        # stage 1: the products, with the beat's flags
        valid, pv, first, last = (Signal(name=f"beat_{flag}") for flag in ("valid", "pv", "first", "last"))
        products = [Signal(signed(PROB_FORMAT.width + INT8.width), name=f"product{i}") for i in range(M)]
        m.d.sync += [valid.eq(self.valid), pv.eq(self.pv), first.eq(self.first), last.eq(self.last)]
        m.d.sync += [products[i].eq(self.a[i] * self.b[i]) for i in range(M)]

        # stage 2: accumulate (one score across the lanes, or one output channel per lane)
        dot_acc = Signal(signed(self._score_width))
        vec_acc = [Signal(signed(self._pv_width), name=f"acc{i}") for i in range(M)]
        dot_sum = Signal(signed(self._score_width))
        m.d.comb += dot_sum.eq(Mux(first, 0, dot_acc) + tree_sum(products))

        m.d.sync += [self.dot_valid.eq(0), self.vec_valid.eq(0)]
        with m.If(valid):
            with m.If(pv):
                for i in range(M):
                    total = Mux(first, 0, vec_acc[i]) + products[i]
                    m.d.sync += vec_acc[i].eq(total)
                    with m.If(last):
                        m.d.sync += self.vec[i].eq(total)
                with m.If(last):
                    m.d.sync += self.vec_valid.eq(1)
            with m.Else():
                m.d.sync += dot_acc.eq(dot_sum)
                with m.If(last):
                    m.d.sync += [self.dot.eq(dot_sum), self.dot_valid.eq(1)]
        return m
