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
M copies of the key buffer). Pipeline (``LINE_LATENCY`` = 4 stages, for timing
closure: every multiplier between registers, the adder tree apart from the
accumulator): operand registers, product registers, the score's adder tree
(P·V: the products once more), accumulator; a result is valid four cycles after
the beat marked ``last``. The beat's flags are registered once per lane where
they steer the accumulators (``replica``: each copy drives one lane). The line
never stalls: the engine's sequencer issues one beat per cycle and takes every
result.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from attnforge.errors import check_int
from attnforge.hw.common import tree_sum
from attnforge.numfmt import INT8
from attnforge.softmax_int import PROB_FORMAT

__all__ = ["AttentionLine", "LINE_LATENCY"]

#: cycles from a beat at the line's inputs to its result (with the beat marked ``last``)
LINE_LATENCY = 4


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
        One-cycle pulse with a finished score, ``LINE_LATENCY`` cycles after its ``last`` beat.
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
        flags = ("valid", "pv", "first", "last")

        def delayed(values, stage):
            regs = {f: Signal(name=f"s{stage}_{f}") for f in flags}
            m.d.sync += [regs[f].eq(values[f]) for f in flags]
            return regs

        # stage 0: the operands (from registers straight into the multipliers)
        beat0 = delayed({f: getattr(self, f) for f in flags}, 0)
        a = Signal.like(self.a, name="a_reg")
        b = Signal.like(self.b, name="b_reg")
        m.d.sync += [a.eq(self.a), b.eq(self.b)]
        # stage 1: the products
        beat1 = delayed(beat0, 1)
        products = [Signal(signed(PROB_FORMAT.width + INT8.width), name=f"product{i}") for i in range(M)]
        m.d.sync += [products[i].eq(a[i] * b[i]) for i in range(M)]
        # stage 2: the score's adder tree; the P.V lanes' products once more (one copy of the flags
        # per lane, which steer that lane's accumulator)
        beat2 = delayed(beat1, 2)
        tree = Signal(signed(self._score_width), name="product_sum")
        m.d.sync += tree.eq(tree_sum(products))
        lane_products = [Signal.like(products[i], name=f"lane_product{i}") for i in range(M)]
        m.d.sync += [lane_products[i].eq(products[i]) for i in range(M)]
        lane_beat = []
        for i in range(M):
            regs = {f: Signal(name=f"lane{i}_{f}") for f in flags}
            m.d.sync += [regs[f].eq(beat1[f]) for f in flags]
            lane_beat.append(regs)

        # stage 3: accumulate (one score across the lanes, or one output channel per lane)
        dot_acc = Signal(signed(self._score_width))
        vec_acc = [Signal(signed(self._pv_width), name=f"acc{i}") for i in range(M)]
        dot_sum = Signal(signed(self._score_width))
        m.d.comb += dot_sum.eq(Mux(beat2["first"], 0, dot_acc) + tree)

        m.d.sync += [self.dot_valid.eq(0), self.vec_valid.eq(0)]
        for i in range(M):
            lb = lane_beat[i]
            with m.If(lb["valid"] & lb["pv"]):
                total = Mux(lb["first"], 0, vec_acc[i]) + lane_products[i]
                m.d.sync += vec_acc[i].eq(total)
                with m.If(lb["last"]):
                    m.d.sync += self.vec[i].eq(total)
        with m.If(beat2["valid"]):
            with m.If(beat2["pv"]):
                with m.If(beat2["last"]):
                    m.d.sync += self.vec_valid.eq(1)
            with m.Else():
                m.d.sync += dot_acc.eq(dot_sum)
                with m.If(beat2["last"]):
                    m.d.sync += [self.dot.eq(dot_sum), self.dot_valid.eq(1)]
        return m
