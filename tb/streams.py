"""Cycle-stepped drivers and monitors for Amaranth valid/ready streams in cocotb.

Amaranth emits a stream member ``i`` as ports ``i__valid``, ``i__ready`` and
``i__payload`` (one flat vector, first field in the low bits). ``pack`` and
``unpack`` convert between that vector and Python values using the component's
own ``amaranth.lib.data`` layout, so testbenches never re-type bit offsets.

Timing discipline (the same on Verilator and Icarus): every part drives its
inputs just after the falling clock edge, then everything settles, and at
``ReadOnly`` each part samples whether a transfer happens at the next rising
edge. ``StreamBench.step`` runs that for all parts, one await pair per cycle.
"""

from __future__ import annotations

import random
import re
from collections import deque

from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

__all__ = ["pack", "unpack", "StreamSource", "StreamSink", "StreamBench", "reset_quiet", "failure", "FAILURE_KINDS"]

#: what a failed fuzz stream is counted as (``failure``)
FAILURE_KINDS = ("hang", "wrong_verdict", "wrong_output", "protocol")


def pack(layout, value) -> int:
    """Flatten a Python value (dict for structs, list for arrays, int for scalars) to an unsigned int."""
    if isinstance(layout, data.StructLayout):
        if set(value) != set(layout.members):
            raise ValueError(f"payload fields {sorted(value)} do not match layout fields {sorted(layout.members)}")
        return sum(pack(field.shape, value[name]) << field.offset for name, field in layout)
    if isinstance(layout, data.ArrayLayout):
        if len(value) != layout.length:
            raise ValueError(f"payload array has {len(value)} elements, layout needs {layout.length}")
        width = Shape.cast(layout.elem_shape).width
        return sum(pack(layout.elem_shape, v) << (i * width) for i, v in enumerate(value))
    shape = Shape.cast(layout)
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"value {value} does not fit {shape}")
    return value & ((1 << shape.width) - 1)


def unpack(layout, raw: int):
    """Inverse of ``pack``: signed fields come back as negative ints where their sign bit is set."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(field.shape, raw >> field.offset) for name, field in layout}
    if isinstance(layout, data.ArrayLayout):
        width = Shape.cast(layout.elem_shape).width
        return [unpack(layout.elem_shape, raw >> (i * width)) for i in range(layout.length)]
    shape = Shape.cast(layout)
    raw &= (1 << shape.width) - 1
    if shape.signed and raw >> (shape.width - 1):
        raw -= 1 << shape.width
    return raw



async def reset_quiet(dut, parts, cycles: int = 2) -> None:
    """Hold ``dut.rst`` for ``cycles`` cycles with every source and sink of ``parts`` quiet (no valid, no
    ready), from a falling edge to a falling edge."""
    await FallingEdge(dut.clk)
    for part in parts:
        part.quiet()
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def failure(index: int, exc: BaseException) -> dict:
    """A failed fuzz stream for the report: its index, its kind (``FAILURE_KINDS``) and the message.

    ``hang``: ``StreamBench.run_until`` ran out of cycles; ``protocol``: the output broke the
    stream rules; ``wrong_output``: an output differs from the golden model, or one came out too
    many; ``wrong_verdict``: anything else the stream checks (error and overflow flags, the head
    counters, busy at the end)."""
    text = str(exc)
    if "timed out after" in text:
        kind = "hang"
    elif "while valid and not ready" in text or "valid dropped before" in text:
        kind = "protocol"
    elif "output beat(s) after the last expected" in text or "differs from the golden" in text or \
            re.search(r"output \d+: RTL .* != golden", text) or " outputs, the whole program has " in text or \
            re.search(r"got \d+ outputs, expected \d+", text):
        kind = "wrong_output"
    else:
        kind = "wrong_verdict"
    return {"stream": index, "kind": kind, "message": text[:500]}


class StreamSource:
    """Drives a stream: sends queued payloads in order, with random idle cycles.

    ``idle`` is the probability of holding ``valid`` low in a cycle in which a
    payload could be offered; once offered, a payload stays until it is taken.
    """

    def __init__(self, dut, name: str, layout, *, idle: float = 0.0, rng: random.Random | None = None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout = layout
        self.idle = idle
        self.rng = rng or random.Random(0)
        self.queue: deque = deque()
        self.offering = False
        self.sent = 0
        self.transfer_cycles: list[int] = []

    def quiet(self) -> None:
        """Offer nothing (call outside ReadOnly, e.g. during reset)."""
        self.valid.value = 0

    def send(self, payload) -> None:
        self.queue.append(payload)

    @property
    def done(self) -> bool:
        return not self.queue and not self.offering

    def drive(self, cycle: int) -> None:
        if not self.offering and self.queue and self.rng.random() >= self.idle:
            self.payload.value = pack(self.layout, self.queue[0])
            self.offering = True
        self.valid.value = int(self.offering)

    def sample(self, cycle: int) -> None:
        if self.offering and int(self.ready.value):
            self.queue.popleft()
            self.offering = False
            self.sent += 1
            self.transfer_cycles.append(cycle)


class StreamSink:
    """Takes a stream's transfers with random backpressure, and checks the stream rules.

    ``stall`` is the probability of holding ``ready`` low in a cycle. While the
    DUT's ``valid`` is high and not yet taken, its payload must not change and
    ``valid`` must not drop (``amaranth.lib.stream`` rules); a breach raises.
    """

    def __init__(self, dut, name: str, layout, *, stall: float = 0.0, rng: random.Random | None = None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout = layout
        self.stall = stall
        self.rng = rng or random.Random(1)
        self.received: list = []
        self.transfer_cycles: list[int] = []
        self._pending: int | None = None  # payload seen valid but not taken

    def quiet(self) -> None:
        """Take nothing (call outside ReadOnly, e.g. during reset)."""
        self.ready.value = 0

    def drive(self, cycle: int) -> None:
        self.ready.value = int(self.rng.random() >= self.stall)

    def sample(self, cycle: int) -> None:
        valid = int(self.valid.value)
        if self._pending is not None:
            if not valid:
                raise AssertionError(f"cycle {cycle}: valid dropped before the payload was taken")
            if int(self.payload.value) != self._pending:
                raise AssertionError(f"cycle {cycle}: payload changed while valid and not ready")
        if valid:
            raw = int(self.payload.value)
            if int(self.ready.value):
                self.received.append(unpack(self.layout, raw))
                self.transfer_cycles.append(cycle)
                self._pending = None
            else:
                self._pending = raw


class StreamBench:
    """Steps a clocked DUT cycle by cycle, calling ``drive`` then ``sample`` on each part."""

    def __init__(self, clk, parts):
        self.clk = clk
        self.parts = list(parts)
        self.cycle = 0

    async def step(self) -> None:
        await FallingEdge(self.clk)
        self.cycle += 1
        for part in self.parts:
            part.drive(self.cycle)
        await ReadOnly()
        for part in self.parts:
            part.sample(self.cycle)

    async def expect_quiet(self, sink: "StreamSink", cycles: int) -> None:
        """Step ``cycles`` more cycles (the design's pipeline depth and some) and raise if ``sink``
        takes anything: nothing may come out after the last expected beat."""
        before = len(sink.received)
        for _ in range(cycles):
            await self.step()
        extra = len(sink.received) - before
        if extra:
            raise AssertionError(f"{extra} output beat(s) after the last expected one (within {cycles} cycles): "
                                 f"{sink.received[before:before + 3]}")

    async def run_until(self, condition, max_cycles: int) -> int:
        """Step until ``condition()`` holds; raise if it takes more than ``max_cycles``."""
        start = self.cycle
        while not condition():
            if self.cycle - start >= max_cycles:
                raise AssertionError(f"timed out after {max_cycles} cycles (DUT hung or too slow)")
            await self.step()
        return self.cycle - start
