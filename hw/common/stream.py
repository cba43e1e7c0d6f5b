"""Stream helpers: a skid buffer and registered stages that stall together."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "LockstepPipeline"]


class SkidBuffer(wiring.Component):
    """A two-entry stream register: full throughput, and ``i.ready`` is a register.

    Cuts the combinational path of ``ready`` (and of ``valid``/``payload``) between two
    stream components: ``o`` is driven by a register, and ``i.ready`` depends only on
    the buffer's own state, so a long ready chain is broken in the middle without
    losing a cycle per transfer.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.i.payload, name="skid")
        skid_full = Signal()
        m.d.comb += self.i.ready.eq(~skid_full)
        with m.If(self.o.ready | ~self.o.valid):
            # the output register takes the skid entry first, else the input
            with m.If(skid_full):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_full.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            # output stalled: park the accepted transfer
            m.d.sync += [skid.eq(self.i.payload), skid_full.eq(1)]
        return m


class LockstepPipeline:
    """Registered stages in one clock enable: all move when the last one is free or taken.

    ``advance = ~valid[-1] | ready``; every stage register made by ``stage`` updates
    only when ``advance`` is high, so the whole pipeline stalls together on
    backpressure (no per-stage handshakes, no bubbles lost). Use inside ``elaborate``::

        pipe = LockstepPipeline(m, depth=2, ready=self.o.ready, name="out")
        prod = pipe.stage(0, a * b, valid=in_valid)     # stage 0 register
        lane = pipe.stage(1, round(prod))                # stage 1 register
        m.d.comb += [self.o.valid.eq(pipe.valid[-1]), self.o.payload.eq(lane)]
    """

    def __init__(self, m: Module, *, depth: int, ready, name: str = "pipe"):
        if depth < 1:
            raise ValueError(f"LockstepPipeline depth must be >= 1, not {depth}")
        self._m, self.name = m, name
        self.valid = [Signal(name=f"{name}{k}_valid") for k in range(depth)]
        self.advance = Signal(name=f"{name}_advance")
        m.d.comb += self.advance.eq(~self.valid[-1] | ready)
        self._fed = [False] * depth

    def stage(self, k: int, value, *, valid=None, name: str | None = None):
        """A register of stage ``k`` holding ``value`` (loaded when the pipeline advances).

        The first ``stage`` call of each ``k`` passes ``valid`` for stage 0 (the
        input's valid) and, for later stages, may omit it: stage k's valid follows
        stage k - 1's.
        """
        value = Value.cast(value)
        reg = Signal(value.shape(), name=name or f"{self.name}{k}_r")
        if not self._fed[k]:
            source = valid if valid is not None else (self.valid[k - 1] if k else None)
            if source is None:
                raise ValueError("stage 0 needs valid= on its first register")
            with self._m.If(self.advance):
                self._m.d.sync += self.valid[k].eq(source)
            self._fed[k] = True
        with self._m.If(self.advance):
            self._m.d.sync += reg.eq(value)
        return reg
