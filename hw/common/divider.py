"""Restoring division of a constant dividend by a run-time divisor.

Both accelerators need reciprocals: the ViTCoD softmax divides ``2**RECIP_BITS``
by a row's exponent sum, the linear datapath's ``relu_norm`` map divides
``2**(RECIP_BITS - 1)`` by a normalized denominator. Both use restoring
division, one quotient bit per step (``restoring_step``), MSB first:

* ``SerialDivider`` runs a few steps per cycle in one register set
  (small, several cycles per result);
* ``PipelinedDivider`` unrolls the steps over registered stages (one result
  per cycle, a fixed latency).

The dividend's bits above the quotient (``dividend >> quotient_bits``) are the
first remainder. For a divisor above that value the quotient is exactly
``dividend // divisor`` (it then fits ``quotient_bits``); a divisor of 0 gives
0 (an empty softmax row, a zero denominator); a divisor from 1 up to
``dividend >> quotient_bits`` gives an unspecified value, so callers size the
quotient for their smallest divisor (``attnforge.softmax_int``: a non-empty
row's sum is at least ``2**EXP_BITS``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError, check_int

__all__ = ["restoring_step", "SerialDivider", "PipelinedDivider"]


def restoring_step(remainder, divisor, bit_in=0):
    """One step of restoring division: ``(remainder', quotient bit)``.

    The remainder is shifted left with ``bit_in`` (the dividend's next bit) coming in;
    when the result reaches the divisor, the divisor is subtracted and the quotient bit is 1.
    The returned remainder is one bit wider than ``remainder``; the caller stores it in
    its register (``divisor_width + 1`` bits hold every remainder below the divisor).
    """
    shifted = Cat(Const(bit_in, 1), remainder)
    ge = shifted >= divisor
    return Mux(ge, shifted - divisor, shifted), ge


def _check(dividend, divisor_width, quotient_bits):
    check_int("divider dividend", dividend, 1)
    check_int("divider divisor_width", divisor_width, 1, 64)
    check_int("divider quotient_bits", quotient_bits, 1, 64)
    if (dividend >> quotient_bits).bit_length() > divisor_width + 1:
        raise ConfigError(f"divider dividend {dividend} >> quotient_bits={quotient_bits} does not fit the "
                          f"remainder register of divisor_width + 1 = {divisor_width + 1} bits")


class SerialDivider(wiring.Component):
    """``dividend // divisor`` with ``bits_per_cycle`` quotient bits per cycle.

    The dividend is a multiple of ``2**quotient_bits`` (its low bits shift in as
    zeros, so no dividend register is needed), e.g. ``2**RECIP_BITS``.

    Timing: ``start`` in an idle cycle latches ``divisor``; the divider then runs
    ``ceil(quotient_bits / bits_per_cycle)`` cycles (one when the divisor is 0) and
    spends one more cycle with ``done`` high and ``quotient`` valid; ``busy`` is high
    from the cycle after ``start`` through the ``done`` cycle. ``start`` while busy
    is ignored.

    Members
    -------
    start : ``In(1)``
    divisor : ``In(divisor_width)``
    busy : ``Out(1)``
    done : ``Out(1)``
        One cycle, with the quotient.
    quotient : ``Out(quotient_bits)``
        ``dividend // divisor``, valid while ``done``; 0 for a divisor of 0.
    """

    def __init__(self, *, dividend: int, divisor_width: int, quotient_bits: int, bits_per_cycle: int = 1):
        _check(dividend, divisor_width, quotient_bits)
        if dividend % (1 << quotient_bits):
            raise ConfigError(f"serial divider dividend {dividend} must be a multiple of 2**quotient_bits = "
                              f"{1 << quotient_bits} (its low bits shift in as zeros)")
        check_int("divider bits_per_cycle", bits_per_cycle, 1, quotient_bits)
        self.dividend, self.divisor_width = dividend, divisor_width
        self.quotient_bits, self.bits_per_cycle = quotient_bits, bits_per_cycle
        super().__init__({
            "start": In(1),
            "divisor": In(divisor_width),
            "busy": Out(1),
            "done": Out(1),
            "quotient": Out(quotient_bits),
        })

    def elaborate(self, platform):
        m = Module()
        qb, per = self.quotient_bits, self.bits_per_cycle
        divisor = Signal(self.divisor_width)
        remainder = Signal(self.divisor_width + 1)
        quotient = Signal(qb)
        step = Signal(range(qb + per + 1))
        with m.FSM(name="divider") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [divisor.eq(self.divisor), remainder.eq(self.dividend >> qb),
                                 quotient.eq(0), step.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                r, q = remainder, quotient
                for k in range(per):
                    active = step + k < qb
                    r_next, ge = restoring_step(r, divisor)
                    # named per step: a chain of unnamed expressions grows exponentially in amaranth.sim
                    r_step, q_step = Signal(len(remainder), name=f"remainder_step{k}"), Signal(qb, name=f"quotient_step{k}")
                    m.d.comb += [r_step.eq(Mux(active, r_next, r)), q_step.eq(Mux(active, Cat(ge, q), q))]
                    r, q = r_step, q_step
                m.d.sync += [remainder.eq(r), quotient.eq(q), step.eq(step + per)]
                with m.If((divisor == 0) | (step + per >= qb)):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.done.eq(1), self.quotient.eq(Mux(divisor == 0, 0, quotient))]
                m.next = "IDLE"
        # a plain assignment: Icarus would leave an FSM-state process that never ran at X
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class PipelinedDivider(wiring.Component):
    """``dividend // divisor``, one result per cycle, ``stages - 1`` cycles of latency.

    The quotient bits are split over ``stages`` stages of ``ceil(quotient_bits / stages)``
    steps; a register set sits between stages, the last stage is combinational, so
    the result of the inputs presented in cycle t is on the outputs in cycle
    t + stages - 1 (the caller registers it, typically where it stores the result).
    ``tag`` travels alongside (an index or context the caller needs with the result).

    Members
    -------
    i_valid : ``In(1)``
    i_divisor : ``In(divisor_width)``
    i_tag : ``In(tag_shape)``
    o_valid : ``Out(1)``
    o_quotient : ``Out(quotient_bits)``
        ``dividend // divisor``; 0 for a divisor of 0.
    o_tag : ``Out(tag_shape)``
    """

    def __init__(self, *, dividend: int, divisor_width: int, quotient_bits: int, stages: int, tag_shape=0):
        _check(dividend, divisor_width, quotient_bits)
        check_int("divider stages", stages, 1, quotient_bits)
        self.dividend, self.divisor_width = dividend, divisor_width
        self.quotient_bits, self.stages = quotient_bits, stages
        self.steps_per_stage = -(-quotient_bits // stages)
        self.tag_shape = tag_shape
        super().__init__({
            "i_valid": In(1),
            "i_divisor": In(divisor_width),
            "i_tag": In(tag_shape),
            "o_valid": Out(1),
            "o_quotient": Out(quotient_bits),
            "o_tag": Out(tag_shape),
        })

    def elaborate(self, platform):
        m = Module()
        qb, dw = self.quotient_bits, self.divisor_width
        valid, divisor, tag = self.i_valid, self.i_divisor, self.i_tag
        remainder, quotient = Const(self.dividend >> qb, dw + 1), Const(0, qb)
        bit = qb - 1
        for stage in range(self.stages):
            r, q = remainder, quotient
            for _ in range(self.steps_per_stage):
                if bit < 0:
                    break
                r_next, ge = restoring_step(r, divisor, (self.dividend >> bit) & 1)
                # named per step: a chain of unnamed expressions grows exponentially in amaranth.sim
                r_step, q_step = Signal(dw + 1, name=f"remainder_bit{bit}"), Signal(qb, name=f"quotient_bit{bit}")
                m.d.comb += [r_step.eq(r_next), q_step.eq(q | (ge << bit))]
                r, q = r_step, q_step
                bit -= 1
            if stage == self.stages - 1:
                m.d.comb += [self.o_valid.eq(valid), self.o_tag.eq(tag),
                             self.o_quotient.eq(Mux(divisor == 0, 0, q))]
            else:
                k = stage + 1
                n_valid, n_divisor = Signal(name=f"valid{k}"), Signal(dw, name=f"divisor{k}")
                n_tag = Signal(self.tag_shape, name=f"tag{k}")
                n_rem, n_quo = Signal(dw + 1, name=f"remainder{k}"), Signal(qb, name=f"quotient{k}")
                m.d.sync += [n_valid.eq(valid), n_divisor.eq(divisor), n_tag.eq(tag),
                             n_rem.eq(r), n_quo.eq(q)]
                valid, divisor, tag, remainder, quotient = n_valid, n_divisor, n_tag, n_rem, n_quo
        return m
