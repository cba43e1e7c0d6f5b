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

from amaranth.hdl import Elaboratable, Module, Mux, Signal, signed

from attnforge.softmax_int import PROB_FORMAT

__all__ = ["AttentionLine"]


class AttentionLine(Elaboratable):
    """M MACs with a score (adder tree) mode and a P·V (per-lane accumulate) mode.

    Inputs (sampled every cycle): ``valid``, ``pv`` (mode), ``first``, ``last``,
    ``a[M]`` (signed 16: q or P), ``b[M]`` (int8: k or v).
    Outputs (registered, one-cycle pulses): ``dot_valid``/``dot`` (a score) and
    ``vec_valid``/``vec[M]`` (one chunk of P·V).
    """

    def __init__(self, macs: int, score_width: int, pv_width: int):
        self.macs = macs
        self.valid = Signal()
        self.pv = Signal()
        self.first = Signal()
        self.last = Signal()
        self.a = [Signal(signed(PROB_FORMAT.width), name=f"a{i}") for i in range(macs)]
        self.b = [Signal(signed(8), name=f"b{i}") for i in range(macs)]
        self.dot_valid = Signal()
        self.dot = Signal(signed(score_width))
        self.vec_valid = Signal()
        self.vec = [Signal(signed(pv_width), name=f"vec{i}") for i in range(macs)]
        self._score_width = score_width
        self._pv_width = pv_width

    def elaborate(self, platform):
        m = Module()
        M = self.macs
        p_valid, p_pv, p_first, p_last = Signal(), Signal(), Signal(), Signal()
        prods = [Signal(signed(PROB_FORMAT.width + 8), name=f"prod{i}") for i in range(M)]
        m.d.sync += [p_valid.eq(self.valid), p_pv.eq(self.pv), p_first.eq(self.first), p_last.eq(self.last)]
        m.d.sync += [prods[i].eq(self.a[i] * self.b[i]) for i in range(M)]

        acc_dot = Signal(signed(self._score_width))
        acc_vec = [Signal(signed(self._pv_width), name=f"acc{i}") for i in range(M)]
        tree = list(prods)
        while len(tree) > 1:  # balanced adder tree
            tree = [tree[i] + tree[i + 1] if i + 1 < len(tree) else tree[i] for i in range(0, len(tree), 2)]
        dot_sum = Signal(signed(self._score_width))
        m.d.comb += dot_sum.eq(Mux(p_first, 0, acc_dot) + tree[0])

        m.d.sync += [self.dot_valid.eq(0), self.vec_valid.eq(0)]
        with m.If(p_valid):
            with m.If(p_pv):
                for i in range(M):
                    total = Mux(p_first, 0, acc_vec[i]) + prods[i]
                    m.d.sync += acc_vec[i].eq(total)
                    with m.If(p_last):
                        m.d.sync += self.vec[i].eq(total)
                with m.If(p_last):
                    m.d.sync += self.vec_valid.eq(1)
            with m.Else():
                m.d.sync += acc_dot.eq(dot_sum)
                with m.If(p_last):
                    m.d.sync += [self.dot.eq(dot_sum), self.dot_valid.eq(1)]
        return m
