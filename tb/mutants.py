"""Deliberately broken designs, to show that a testbench's scoreboard can fail."""

from amaranth.hdl import Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["FlipOutputBit"]


class FlipOutputBit(wiring.Component):
    """``inner`` with every port passed through, except that the lowest bit of one
    output (``o.payload`` by default) is flipped. Same signature, same Verilog ports."""

    def __init__(self, inner, path=("o", "payload")):
        self._inner = inner
        self._path = tuple(path)
        super().__init__(dict(inner.signature.members))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self._inner
        outer = {path: Value.cast(value) for path, _, value in self.signature.flatten(self)}
        flipped = False
        for path, member, value in self._inner.signature.flatten(self._inner):
            value = Value.cast(value)
            if member.flow == In:
                m.d.comb += value.eq(outer[path])
            elif path == self._path:
                m.d.comb += outer[path].eq(value ^ 1)
                flipped = True
            else:
                m.d.comb += outer[path].eq(value)
        if not flipped:
            raise ValueError(f"{self._inner!r} has no output port {'.'.join(map(str, self._path))}")
        return m
