"""Formal harnesses: each block with its stream rules, accounting and latency as properties.

A harness holds one block (``dut``), drives every input of it with ``AnySeq``
(a free value each cycle) and states, with Amaranth's ``Assert``/``Assume``/``Cover``:

* **stream rules** on every stream port (``stream_rules``): once ``valid`` is
  high and ``ready`` low, the next cycle has ``valid`` high and the same
  payload. *Assumed* of the ports the block receives on, *asserted* of the
  ports it sends on. Amaranth 0.5 has no ``Past``: the harness keeps the
  previous cycle's ``valid``, ``ready`` and payload in registers.
* **accounting** (``Outstanding``): a counter of items accepted minus items
  sent, asserted ``>= 0`` ("no output beat without an input") and equal to the
  items the block holds (registers of the block read through ``probe``), which
  makes the properties inductive: ``prove`` mode shows them for every cycle.
* **completion** (``mode="completion"``, for ``bmc``): with ``ready`` held high
  on the output, an item held by the block leaves within ``latency`` cycles.
* covers: an output transfer, and the block holding its most items at once.

The reset is a free input too: every property holds across resets at any time.
"""

from __future__ import annotations

import re

from amaranth.hdl import Assert, Assume, Cover, Elaboratable, Fragment, Module, Signal, Value, signed
from amaranth.asserts import AnySeq   # a free value each cycle; amaranth.hdl does not re-export it in 0.5
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from attnforge.hw.common.requant import RequantLine, RequantLineConfig
from attnforge.hw.common.stream import SkidBuffer
from attnforge.hw.mac_line import MacLine, MacLineConfig
from attnforge.hw.vitcod.config import VitcodConfig
from attnforge.hw.vitcod.loader import Loader
from attnforge.hw.vitcod.output import OutputStage

__all__ = ["probe", "stream_rules", "Outstanding", "Harness", "HARNESSES", "harness",
           "SkidBufferHarness", "RequantLineHarness", "MacLineHarness", "OutputStageHarness",
           "LoaderHarness", "sticky"]

HARNESS_MODES = ("safety", "completion")


def probe(fragment: Fragment, name: str) -> Signal:
    """The signal called ``name`` that ``fragment`` (an elaborated block, not its submodules) assigns.

    Lets a harness state invariants over a block's registers without the block
    exporting them; raises ``KeyError`` listing the names there are.
    """
    found = {}
    for statements in fragment.statements.values():
        for stmt in statements:
            for sig in stmt._lhs_signals():
                found.setdefault(sig.name, []).append(sig)
    matches = {id(s): s for s in found.get(name, [])}
    if len(matches) != 1:
        raise KeyError(f"{name!r}: {'ambiguous' if matches else 'no such signal'} in the block; "
                       f"it assigns {', '.join(sorted(found))}")
    return next(iter(matches.values()))


class _History:
    """The previous cycle's valid, ready and payload of a stream port (reset to idle)."""

    def __init__(self, m: Module, port, name: str):
        payload = Value.cast(port.payload)
        self.valid = Signal(name=f"{name}_was_valid")
        self.ready = Signal(name=f"{name}_was_ready")
        self.payload = Signal(len(payload), name=f"{name}_was_payload")
        m.d.sync += [self.valid.eq(port.valid), self.ready.eq(port.ready), self.payload.eq(payload)]
        self.stalled = self.valid & ~self.ready


def stream_rules(m: Module, port, name: str, *, receive: bool) -> None:
    """Valid held until ready, payload stable while stalled: assumed if ``receive``, else asserted."""
    prop = Assume if receive else Assert
    past = _History(m, port, name)
    m.d.comb += [
        prop(~past.stalled | port.valid, f"{name}: valid held until ready"),
        prop(~past.stalled | (Value.cast(port.payload) == past.payload), f"{name}: payload stable while stalled"),
    ]


class Outstanding:
    """``accepted - sent`` items, with ``sent`` never ahead (asserted) and equal to what the block holds."""

    def __init__(self, m: Module, accepted, sent, *, held, capacity: int, name: str, per_item: int = 1):
        # capacity: the most output beats the block can hold; an accepted input is per_item beats
        width = (capacity + per_item + 1).bit_length() + 2
        self.count = Signal(signed(width), name=f"{name}_outstanding")
        m.d.sync += self.count.eq(self.count + Value.cast(accepted) * per_item - Value.cast(sent))
        m.d.comb += [
            Assert(self.count >= 0, f"{name}: no output beat without an input"),
            Assert(self.count == held, f"{name}: outstanding items are the ones the block holds"),
            Assert(self.count <= capacity, f"{name}: at most {capacity} items held"),
            Cover(self.count == capacity),
        ]


def sticky(m: Module, bits, name: str) -> None:
    """Asserts that no bit of ``bits`` falls (until a reset, which clears the history too)."""
    was = Signal(len(Value.cast(bits)), name=re.sub(r"\W", "_", name) + "_was")
    m.d.sync += was.eq(bits)
    m.d.comb += Assert((Value.cast(bits) & was) == was, f"{name}: sticky until reset")


class Harness(Elaboratable):
    """Base: ``dut`` (elaborated once, so ``probe`` sees its registers), free inputs, properties.

    ``mode`` ``"safety"`` states the stream rules and the accounting (for
    ``prove`` and ``cover``); ``"completion"`` also holds the output's ready
    high and asserts that items leave within ``latency`` cycles (for ``bmc``).
    Subclasses set ``inputs`` (stream ports received), ``outputs`` (stream
    ports sent) and implement ``properties(m, frag)``.
    """

    latency = 1

    def __init__(self, dut: wiring.Component, mode: str = "safety"):
        if mode not in HARNESS_MODES:
            raise ValueError(f"harness mode must be one of {', '.join(HARNESS_MODES)}, not {mode!r}")
        self.dut, self.mode = dut, mode

    def elaborate(self, platform):
        m = Module()
        frag = Fragment.get(self.dut, platform)
        m.submodules.dut = frag
        for path, member, value in self.dut.signature.flatten(self.dut):
            if member.flow == In:
                value = Value.cast(value)
                m.d.comb += value.eq(AnySeq(value.shape()))
        self.properties(m, frag)
        return m

    def properties(self, m: Module, frag: Fragment) -> None:
        raise NotImplementedError

    def check_ports(self, m: Module, inputs: dict, outputs: dict) -> None:
        for name, port in inputs.items():
            stream_rules(m, port, name, receive=True)
        for name, port in outputs.items():
            stream_rules(m, port, name, receive=False)
            m.d.comb += Cover(port.valid & port.ready)

    def completion(self, m: Module, outstanding: Outstanding, out_port) -> None:
        """In ``completion`` mode: ready always high, a held item leaves within ``latency`` cycles."""
        if self.mode != "completion":
            return
        waited = Signal(range(self.latency + 2), name="waited")
        sent = out_port.valid & out_port.ready
        with m.If((outstanding.count > 0) & ~sent):
            with m.If(waited <= self.latency):
                m.d.sync += waited.eq(waited + 1)
        with m.Else():
            m.d.sync += waited.eq(0)
        m.d.comb += [
            Assume(out_port.ready),
            Assert(waited < self.latency, f"an item held leaves within {self.latency} cycles"),
        ]


class SkidBufferHarness(Harness):
    """``SkidBuffer``: holds ``o.valid + skid_full`` items; ``i.ready`` is ``~skid_full``."""

    latency = 2

    def __init__(self, width: int = 4, mode: str = "safety", *, dut=None):
        super().__init__(dut if dut is not None else SkidBuffer(width), mode)

    def properties(self, m, frag):
        i, o = self.dut.i, self.dut.o
        self.check_ports(m, {"i": i}, {"o": o})
        held = o.valid + ~i.ready
        out = Outstanding(m, i.valid & i.ready, o.valid & o.ready, held=held, capacity=2, name="skid")
        self.completion(m, out, o)


class RequantLineHarness(Harness):
    """``RequantLine``: one register stage, holds ``o.valid`` items."""

    latency = 1

    def __init__(self, config: RequantLineConfig | None = None, mode: str = "safety", *, dut=None):
        config = config or RequantLineConfig(lanes=1, in_width=8, multiplier_width=4, out_width=4)
        super().__init__(dut if dut is not None else RequantLine(config), mode)

    def properties(self, m, frag):
        i, o = self.dut.i, self.dut.o
        self.check_ports(m, {"i": i}, {"o": o})
        out = Outstanding(m, i.valid & i.ready, o.valid & o.ready, held=o.valid, capacity=1, name="requant")
        self.completion(m, out, o)


class MacLineHarness(Harness):
    """``MacLine``: an item is a vector (beats up to ``last``); it is held in the product
    register (``p_valid & p_last``) or the output register (``o.valid``)."""

    latency = 2

    def __init__(self, config: MacLineConfig | None = None, mode: str = "safety", *, dut=None):
        config = config or MacLineConfig(macs=1, operand_width=2, max_length=4)
        super().__init__(dut if dut is not None else MacLine(config), mode)

    def properties(self, m, frag):
        i, o = self.dut.i, self.dut.o
        self.check_ports(m, {"i": i}, {"o": o})
        held = o.valid + (probe(frag, "p_valid") & probe(frag, "p_last"))
        out = Outstanding(m, i.valid & i.ready & i.p.last, o.valid & o.ready, held=held, capacity=2,
                          name="mac")
        self.completion(m, out, o)


class OutputStageHarness(Harness):
    """ViTCoD ``OutputStage``: a row in, ``words_per_token`` beats out; holds the row's beats
    not yet serialized plus the two requantizer stages'. ``head_done`` only with a beat sent."""

    def __init__(self, config: VitcodConfig | None = None, mode: str = "safety", *, dut=None):
        config = config or VitcodConfig(head_dim=4, max_tokens=4, max_nnz=4, macs=1, dense_lines=1,
                                        sparse_lines=1, data_width=16)
        self.latency = 3
        super().__init__(dut if dut is not None else OutputStage(config), mode)

    def properties(self, m, frag):
        cfg = self.dut.config
        row, o = self.dut.row, self.dut.o
        beats = cfg.words_per_token
        self.check_ports(m, {"row": row}, {"o": o})
        serializing, beat = probe(frag, "serializing"), probe(frag, "beat")
        v0, v1 = probe(frag, "requant0_valid"), probe(frag, "requant1_valid")
        held = Value.cast(v0) + v1 + serializing * (beats - beat)
        out = Outstanding(m, row.valid & row.ready, o.valid & o.ready, held=held, capacity=beats + 2,
                          per_item=beats, name="output")
        m.d.comb += [
            Assert(~serializing | (beat < beats), "output: beat index within the row"),
            Assert(~self.dut.head_done | (o.valid & o.ready), "output: head_done only with a beat sent"),
            Assert(self.dut.busy == (serializing | v0 | v1), "output: busy while anything is held"),
        ]
        self.completion(m, out, o)


class LoaderHarness(Harness):
    """ViTCoD ``Loader``: the error bits are sticky until reset, a refused command is counted
    with a nonzero error word, and the two banks' ``full`` flags only rise by a load (never
    while the scheduler's release pulse names the bank). Commands and data obey the stream
    rules; the scheduler releases only a full bank."""

    def __init__(self, config: VitcodConfig | None = None, mode: str = "safety", *, dut=None):
        if mode != "safety":
            raise ValueError("the loader harness has no completion mode (a head's load is data-bound)")
        config = config or VitcodConfig(head_dim=4, max_tokens=4, max_nnz=4, macs=1, dense_lines=1,
                                        sparse_lines=1, data_width=16)
        super().__init__(dut if dut is not None else Loader(config), mode)

    def properties(self, m, frag):
        dut = self.dut
        self.check_ports(m, {"cmd": dut.cmd, "data": dut.data}, {})
        banks = dut.banks
        m.d.comb += Assume(~banks.release | banks.full.bit_select(banks.release_bank, 1))
        sticky(m, dut.error, "loader error")
        failed_before = Signal.like(dut.heads_failed, name="heads_failed_was")
        m.d.sync += failed_before.eq(dut.heads_failed)
        m.d.comb += [
            Assert((dut.heads_failed == failed_before) | (dut.heads_failed == (failed_before + 1)[:len(failed_before)]),
                   "loader: heads_failed counts up by one refused command at a time"),
            Assert((dut.heads_failed == failed_before) | (dut.error != 0),
                   "loader: a refused command leaves an error bit"),
            Cover(dut.error != 0),
        ]


#: name -> harness class, for the tests and ``harness(name)``
HARNESSES = {
    "skid_buffer": SkidBufferHarness,
    "requant_line": RequantLineHarness,
    "mac_line": MacLineHarness,
    "output_stage": OutputStageHarness,
    "loader": LoaderHarness,
}


def harness(name: str, mode: str = "safety", **kwargs) -> Harness:
    """A harness by name (``HARNESSES``) in ``mode``."""
    return HARNESSES[name](mode=mode, **kwargs)
