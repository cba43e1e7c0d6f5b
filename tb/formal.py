"""Formal harnesses: each block with its stream rules, accounting, data, sticky bits and latency as properties.

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
* **data** (``RefQueue``, skid buffer and MAC line): the harness keeps the items
  the block owes in a reference queue (the skid buffer's payloads; the MAC
  line's dot products, summed in the harness) and asserts that each output beat
  is the oldest of them, tied to the block's data registers so it is inductive.
* **completion** (``mode="completion"``): with ``ready`` held high on the
  output, an item held by the block leaves within ``latency`` cycles.
* covers: an output transfer, and the block holding its most items at once.

The reset is a free input too: every property holds across resets at any time.
"""

from __future__ import annotations

import functools
import re
from types import SimpleNamespace

from amaranth.hdl import Assert, Assume, Cat, Const, Cover, Elaboratable, Fragment, Module, Mux, Shape, Signal, Value, signed
from amaranth.asserts import AnySeq   # a free value each cycle; amaranth.hdl does not re-export it in 0.5
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In

from attnforge.hw.common import log2_ceil, mux_tree
from attnforge.hw.common.axi import AxisCommandInput
from attnforge.hw.common.regbank import RegisterBank
from attnforge.hw.common.regmap import Field, Register, RegisterMap
from attnforge.hw.common.requant import RequantLine, RequantLineConfig
from attnforge.hw.common.stream import SkidBuffer
from attnforge.hw.common.uart import MIN_DIVISOR, UartRx, UartTx
from attnforge.hw.linear.config import LANE_FANOUT_LEVELS, LinearDecodeConfig
from attnforge.hw.linear.decode import LinearDecode
from attnforge.hw.linear.lanes import readout_elements
from attnforge.hw.linear.output import OutputStage as LinearOutputStage
from attnforge.hw.vitcod.accelerator import VitcodAccelerator
from attnforge.hw.vitcod.loader import command_data_beats
from attnforge.linear_format import CMD_RESET, CMD_TOKEN
from attnforge.hw.mac_line import MacLine, MacLineConfig
from attnforge.hw.vitcod.config import INDEX_WIDTH, POINTER_QUEUE, VitcodConfig
from attnforge.hw.vitcod.cycles import OUT_STAGES
from attnforge.hw.vitcod.loader import Loader
from attnforge.hw.vitcod.output import OutputStage
from attnforge.hw.vitcod.scheduler import RowScheduler
from attnforge.hw.vitcod.softmax import SoftmaxStage
from attnforge.hw.vitcod.exp_unit import ExpUnit
from attnforge.hw.vitcod.engine import Engine
from attnforge.hw.vitcod.line import LINE_LATENCY
from attnforge.hw.vitcod.signatures import head_layout
from attnforge.hw.vit.eltwise import GeluUnit, GeluUnitConfig, ResidualAddUnit, ResidualAddUnitConfig
from attnforge.hw.vit.layernorm import OUTPUT_STAGES, LayerNormUnit, LayerNormUnitConfig
from attnforge.hw.vit.matmul import MATMUL_LATENCY, VitMatmul, VitMatmulConfig
from attnforge.hw.vitmodel.accelerator import VitModelAccelerator, header_layout as vitmodel_header_layout
from attnforge.hw.vitmodel.accelerator import weight_layout as vitmodel_weight_layout
from attnforge.hw.vitmodel.config import VitModelConfig
from attnforge.hw.vitmodel.isa import Op

__all__ = ["probe", "stream_rules", "Outstanding", "Harness", "HARNESSES", "harness",
           "SkidBufferHarness", "RequantLineHarness", "MacLineHarness", "OutputStageHarness",
           "LoaderHarness", "RegisterBankHarness", "LinearOutputHarness", "FORMAL_REGMAP", "sticky",
           "registers", "quiet_until", "DeadlineQueue", "VitcodAcceleratorHarness", "LinearDecodeHarness",
           "SMALLEST_VITCOD", "SMALLEST_LINEAR", "GeluUnitHarness", "ResidualAddUnitHarness",
           "SMALLEST_LAYERNORM", "LayerNormUnitHarness", "fsm_states", "SMALLEST_MATMUL", "VitMatmulHarness",
           "SMALLEST_VITMODEL", "VitModelAcceleratorHarness", "SMALL_SCHEDULER", "RowSchedulerHarness",
           "SMALL_SOFTMAX", "SoftmaxStageHarness", "ExpUnitHarness", "EngineHarness", "AXIS_CMD_LAYOUT",
           "axis_command_input", "AxisCommandInputHarness", "UART_DIVISOR", "UartTxHarness", "UartRxHarness"]

HARNESS_MODES = ("safety", "completion")


def probe(fragment: Fragment, name: str) -> Signal:
    """The signal called ``name`` that ``fragment`` (an elaborated block) or one of its
    submodules assigns; it must be the only one of that name.

    Lets a harness state invariants over a block's registers without the block
    exporting them (also through a wrapper such as a mutant); raises ``KeyError``
    listing the names there are.
    """
    found = {}

    def walk(frag):
        for statements in frag.statements.values():
            for stmt in statements:
                for sig in stmt._lhs_signals():
                    found.setdefault(sig.name, {})[id(sig)] = sig
        for sub, _name, _loc in frag.subfragments:
            if isinstance(sub, Fragment):
                walk(sub)

    walk(fragment)
    matches = found.get(name, {})
    if len(matches) != 1:
        raise KeyError(f"{name!r}: {'ambiguous' if matches else 'no such signal'} in the block; "
                       f"it assigns {', '.join(sorted(found))}")
    return next(iter(matches.values()))


def fsm_states(state: Signal) -> dict[str, int]:
    """An Amaranth FSM's state register (``probe(frag, "NAME_state")``) -> its encoding, state name ->
    value (Amaranth numbers the states in the order they are first named, ``m.next`` included, which
    need not be the order they are declared in)."""
    found = {}
    for value in range(1 << len(state)):
        try:
            name, _, number = state.decoder(value).rpartition("/")
        except (KeyError, IndexError):
            break
        found[name] = int(number)
    if not found:
        raise KeyError(f"{state.name!r} is not an FSM state register (no state decoder)")
    return found


def _subfragment(fragment: Fragment, name: str) -> Fragment:
    """The one elaborated submodule called ``name`` in ``fragment``, at any depth (so also through a
    wrapper such as a mutant); ``KeyError`` if there is none or more than one."""
    found = []

    def walk(frag):
        for sub, sub_name, _loc in frag.subfragments:
            if isinstance(sub, Fragment):
                if sub_name == name:
                    found.append(sub)
                walk(sub)

    walk(fragment)
    if len(found) != 1:
        raise KeyError(f"{name!r}: {'ambiguous' if found else 'no such'} submodule in the block")
    return found[0]


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


class RefQueue:
    """The items the block owes, in order, as the harness saw them go in (a reference FIFO).

    ``push`` appends ``value``, ``pop`` drops the oldest (both in one cycle allowed);
    ``entries[0]`` is the item the block must send next. Its fill level is asserted
    equal to the ``Outstanding`` count, so the two views cannot drift apart.
    """

    def __init__(self, m: Module, value, *, push, pop, depth: int, outstanding: Outstanding, name: str):
        value = Value.cast(value)
        self.entries = [Signal(len(value), name=f"{name}_ref{k}") for k in range(depth)]
        n = Signal(range(depth + 1), name=f"{name}_ref_count")
        with m.If(pop):
            m.d.sync += [self.entries[k].eq(self.entries[k + 1]) for k in range(depth - 1)]
        with m.If(push):
            with m.Switch(n - pop):
                for k in range(depth):
                    with m.Case(k):
                        m.d.sync += self.entries[k].eq(value)
        m.d.sync += n.eq(n + push - pop)
        m.d.comb += Assert(n == outstanding.count, f"{name}: reference queue tracks the outstanding items")
        self.count = n


class Harness(Elaboratable):
    """Base: ``dut`` (elaborated once, so ``probe`` sees its registers), free inputs, properties.

    ``mode`` ``"safety"`` states the stream rules, the accounting and the
    block's own invariants; ``"completion"`` also holds the output's ready high
    and asserts that the block, while it holds anything, sends a beat at least
    every ``latency`` cycles (so the oldest item leaves within ``latency``
    cycles of reaching the front). Both modes can be proven (``prove``) or
    bounded (``bmc``). Subclasses implement ``properties(m, frag)``, calling
    ``check_ports`` with the stream ports they receive on and send on.
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
                if isinstance(value, Const):        # e.g. the ready of an always_ready stream
                    continue
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
        """In ``completion`` mode: ready always high; while items are held, no ``latency`` cycles
        pass without an output beat."""
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
            Assert(waited < self.latency, f"a beat leaves within {self.latency} cycles while items are held"),
        ]


class SkidBufferHarness(Harness):
    """``SkidBuffer``: holds ``o.valid + skid_full`` items (``i.ready`` is ``~skid_full``);
    every payload leaves once, in order, unchanged."""

    latency = 1

    def __init__(self, width: int = 4, mode: str = "safety", *, dut=None):
        super().__init__(dut if dut is not None else SkidBuffer(width), mode)

    def properties(self, m, frag):
        i, o = self.dut.i, self.dut.o
        self.check_ports(m, {"i": i}, {"o": o})
        held = o.valid + ~i.ready
        accepted, sent = i.valid & i.ready, o.valid & o.ready
        out = Outstanding(m, accepted, sent, held=held, capacity=2, name="skid")
        # data: every payload leaves once, in order, unchanged
        ref = RefQueue(m, i.payload, push=accepted, pop=sent, depth=2, outstanding=out, name="skid")
        m.d.comb += [
            Assert(~o.valid | (Value.cast(o.payload) == ref.entries[0]), "skid: o carries the oldest payload"),
            Assert(i.ready | (probe(frag, "skid") == ref.entries[1]), "skid: the parked payload is the next one"),
            Assert(i.ready | o.valid, "skid: a parked payload only behind a held output"),
        ]
        self.completion(m, out, o)


class RequantLineHarness(Harness):
    """``RequantLine``: one register stage, holds ``o.valid`` items."""

    latency = 1

    def __init__(self, config: RequantLineConfig | None = None, mode: str = "safety", *, dut=None):
        config = config or RequantLineConfig(lanes=1, in_width=4, multiplier_width=2, out_width=2)
        super().__init__(dut if dut is not None else RequantLine(config), mode)

    def properties(self, m, frag):
        i, o = self.dut.i, self.dut.o
        self.check_ports(m, {"i": i}, {"o": o})
        out = Outstanding(m, i.valid & i.ready, o.valid & o.ready, held=o.valid, capacity=1, name="requant")
        self.completion(m, out, o)


class MacLineHarness(Harness):
    """``MacLine``: an item is a vector (beats up to ``last``); it is held in the product
    register (``p_valid & p_last``) or the output register (``o.valid``). With ``data``
    (default) each result is also its vector's dot products."""

    latency = 2

    def __init__(self, config: MacLineConfig | None = None, mode: str = "safety", *, dut=None, data: bool = True):
        config = config or MacLineConfig(macs=1, operand_width=2, max_length=4)
        super().__init__(dut if dut is not None else MacLine(config), mode)
        self.config, self.data = config, data     # a dut given (a mutant) must be of this config

    def properties(self, m, frag):
        i, o = self.dut.i, self.dut.o
        self.check_ports(m, {"i": i}, {"o": o})
        p_valid, p_last = probe(frag, "p_valid"), probe(frag, "p_last")
        held = o.valid + (p_valid & p_last)
        accepted, sent = i.valid & i.ready & i.p.last, o.valid & o.ready
        out = Outstanding(m, accepted, sent, held=held, capacity=2, name="mac")
        self.completion(m, out, o)
        if self.data and self.mode == "safety":
            self._dot_products(m, frag, out, accepted, sent)

    def _dot_products(self, m, frag, out, accepted, sent):
        """Data: each result is the dot product of its vector's beats (a reference sum in the
        harness, wrapping at the accumulator width as the RTL's), tied to the RTL's registers
        (the open vector's sum = accumulator (or 0 when fresh) + the pending product)."""
        cfg, i, o = self.config, self.dut.i, self.dut.o
        width = cfg.acc_width
        beat = i.valid & i.ready
        open_sums = [Signal(signed(width), name=f"ref_open{k}") for k in range(cfg.macs)]
        closing = [(open_sums[k] + i.p.x * i.p.w[k])[:width] for k in range(cfg.macs)]
        with m.If(beat):
            m.d.sync += [open_sums[k].eq(Mux(i.p.last, 0, closing[k])) for k in range(cfg.macs)]
        ref = RefQueue(m, Cat(*closing), push=accepted, pop=sent, depth=2, outstanding=out, name="mac")
        m.d.comb += Assert(~o.valid | (Value.cast(o.payload) == ref.entries[0]), "mac: o carries the oldest vector's dot products")
        p_valid, p_last, fresh = probe(frag, "p_valid"), probe(frag, "p_last"), probe(frag, "acc_fresh")
        for k in range(cfg.macs):
            acc, prod = probe(frag, f"acc{k}"), probe(frag, f"prod{k}")
            partial = (Mux(fresh, 0, acc) + Mux(p_valid, prod, 0))[:width]
            # p holds the last beat: its vector's result is queued behind o's (if any)
            queued = Mux(o.valid, ref.entries[1], ref.entries[0]).word_select(k, width)
            m.d.comb += [
                Assert((p_valid & p_last) | (partial == open_sums[k].as_unsigned()),
                       f"mac: the open vector's sum is in accumulator {k} and the product register"),
                Assert(~(p_valid & p_last) | (partial == queued),
                       f"mac: the closing vector's sum is accumulator {k} + the last product"),
                Assert(~(p_valid & p_last) | (open_sums[k] == 0), "mac: no vector open behind a closing one"),
            ]


class OutputStageHarness(Harness):
    """ViTCoD ``OutputStage``: one beat in, one beat out ``OUT_STAGES`` cycles later; holds only
    the requantizer stages' beats. ``head_done`` only with a beat sent, and only for a beat taken
    as its row's last of its head's last row."""

    def __init__(self, config: VitcodConfig | None = None, mode: str = "safety", *, dut=None):
        config = config or VitcodConfig(head_dim=4, max_tokens=4, max_nnz=4, macs=1, dense_lines=1,
                                        sparse_lines=1, data_width=16)
        self.latency = OUT_STAGES
        super().__init__(dut if dut is not None else OutputStage(config), mode)

    def properties(self, m, frag):
        row, o = self.dut.row, self.dut.o
        self.check_ports(m, {"row": row}, {"o": o})
        valids = [probe(frag, f"requant{k}_valid") for k in range(OUT_STAGES)]
        held = sum(Value.cast(v) for v in valids)
        out = Outstanding(m, row.valid & row.ready, o.valid & o.ready, held=held, capacity=OUT_STAGES,
                          name="output")
        # head ends taken in and not yet sent: the stages' beats flagged as a head's last
        flags = [probe(frag, f"{stage}_head_last") for stage in ("picked", "product", "shifted", "lane")]
        ends = Outstanding(m, row.valid & row.ready & row.payload.row_last & row.payload.head_last,
                           self.dut.head_done, held=sum((v & f).as_unsigned() for v, f in zip(valids, flags)),
                           capacity=OUT_STAGES, name="head_ends")
        m.d.comb += [
            Assert(~self.dut.head_done | (o.valid & o.ready), "output: head_done only with a beat sent"),
            Assert(~self.dut.head_done | (ends.count != 0), "output: head_done only for a head's last beat taken"),
            Assert(self.dut.busy == Cat(*valids).any(), "output: busy while anything is held"),
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


#: a small map with one register of each access kind that has logic
FORMAL_REGMAP = RegisterMap("formal", [
    Register("ctrl", "rw", (Field("mode", 3, reset=5), Field("level", 4, lsb=8))),
    Register("status", "ro", (Field("busy"),)),
    Register("cmd", "pulse", (Field("go"),)),
    Register("flags", "w1c", (Field("err", 4, lsb=4),)),
])


class RegisterBankHarness(Harness):
    """``RegisterBank`` (AXI4-Lite): the host obeys the channel rules on AW, W and AR (assumed);
    the bank keeps them on B and R (asserted). Responses never outrun requests: writes
    accepted on AW (and on W) minus B responses = ``~awready`` (``~wready``) + ``bvalid``,
    reads on AR minus R responses = ``rvalid``. Every ``w1c`` flag is sticky: set by its
    input, it falls only in the cycle after a write of 1 to it. ``rw`` fields change only
    by a write."""

    def __init__(self, regmap: RegisterMap = FORMAL_REGMAP, mode: str = "safety", *, dut=None):
        if mode != "safety":
            raise ValueError("the register bank harness has no completion mode")
        self.regmap = regmap
        super().__init__(dut if dut is not None else RegisterBank(regmap), mode)

    def properties(self, m, frag):
        bank = self.dut
        chan = SimpleNamespace
        aw = chan(valid=bank.awvalid, ready=bank.awready, payload=bank.awaddr)
        w = chan(valid=bank.wvalid, ready=bank.wready, payload=Cat(bank.wdata, bank.wstrb))
        ar = chan(valid=bank.arvalid, ready=bank.arready, payload=bank.araddr)
        b = chan(valid=bank.bvalid, ready=bank.bready, payload=bank.bresp)
        r = chan(valid=bank.rvalid, ready=bank.rready, payload=Cat(bank.rdata, bank.rresp))
        self.check_ports(m, {"aw": aw, "w": w, "ar": ar}, {"b": b, "r": r})
        fire = lambda c: c.valid & c.ready                                  # noqa: E731
        Outstanding(m, fire(aw), fire(b), held=~bank.awready + bank.bvalid, capacity=2, name="aw")
        Outstanding(m, fire(w), fire(b), held=~bank.wready + bank.bvalid, capacity=2, name="w")
        Outstanding(m, fire(ar), fire(r), held=bank.rvalid, capacity=1, name="ar")
        m.d.comb += [Assert(bank.bresp == 0, "b: OKAY"), Assert(bank.rresp == 0, "r: OKAY")]
        data, strb = probe(frag, "w_data"), probe(frag, "w_strb")     # the write W handed over
        byte_mask = Cat(*(strb[k].replicate(8) for k in range(4)))
        for reg in self.regmap:
            hit = probe(frag, f"{reg.name}_write")
            for f in reg.fields:
                if reg.access == "w1c":
                    self._w1c(m, reg, f, hit, (data & byte_mask)[f.lsb:f.msb + 1], frag)
                elif reg.access == "rw":
                    stored = probe(frag, f"{reg.name}_{f.name}")
                    was, was_hit = Signal.like(stored, name=f"{reg.name}_{f.name}_was"), Signal(name=f"{reg.name}_hit_was")
                    m.d.sync += [was.eq(stored), was_hit.eq(hit)]
                    m.d.comb += Assert(was_hit | (stored == was), f"{reg.name}.{f.name}: changes only by a write")

    def _w1c(self, m, reg, f, hit, written, frag):
        flags, inputs = probe(frag, f"{reg.name}_{f.name}"), getattr(getattr(self.dut, reg.name), f.name)
        label = f"{reg.name}_{f.name}"
        was, was_input = Signal(f.width, name=f"{label}_was"), Signal(f.width, name=f"{label}_input_was")
        was_clear = Signal(f.width, name=f"{label}_clear_was")
        m.d.sync += [was.eq(flags), was_input.eq(inputs), was_clear.eq(Mux(hit, written, 0))]
        m.d.comb += [
            Assert((was & ~flags & ~was_clear) == 0, f"{reg.name}.{f.name}: sticky until written 1 (or reset)"),
            Assert((was_input & ~flags) == 0, f"{reg.name}.{f.name}: an input raises its flag"),
            Cover(was != 0),
        ]


class LinearOutputHarness(Harness):
    """Linear decode ``OutputStage``: the command control (the environment) claims a half only
    when ``free``, sends a pass's elements only into the half it claimed, ends a pass with
    1..t_max tokens. Then ``o`` keeps the stream rules (the emitted half is never written),
    and the tokens owed (a finished pass's tokens, less those the emitter has sent) are what
    the full halves hold: no token out that no pass wrote."""

    def __init__(self, config: LinearDecodeConfig | None = None, mode: str = "safety", *, dut=None):
        if mode != "safety":
            raise ValueError("the linear output harness has no completion mode")
        config = config or LinearDecodeConfig(d=2, macs=2, conv_taps=2, max_tokens=4, t_max=2)
        self.config = config
        super().__init__(dut if dut is not None else LinearOutputStage(config), mode)

    def properties(self, m, frag):
        cfg, dut = self.config, self.dut
        o, half_if, element = dut.o, dut.half, dut.result.element
        self.check_ports(m, {}, {"o": o})
        full, busy = probe(frag, "full"), probe(frag, "busy")
        # the requantizer's pipeline (stages 1..output_stages; the write stage is the last)
        stages = [data.View(cfg.element_layout, probe(frag, f"requant_element{n}"))
                  for n in range(1, cfg.pipe.output_stages + 1)]
        staged = stages[-1]
        tokens = [probe(frag, f"half{b}_tokens") for b in range(2)]
        half, token = probe(frag, "emit_half"), probe(frag, "emit_token")
        staged_end = staged.valid & staged.emit & staged.pass_end
        ended = Cat(*(s.valid & s.emit & s.pass_end & (s.out_half == element.out_half) for s in stages)).any()
        m.d.comb += [
            Assume(~half_if.claim | half_if.free),
            # a pass's element goes into the half it claimed, and none follows its pass_end
            Assume(~(element.valid & element.emit) | (busy.bit_select(element.out_half, 1) & ~ended)),
            Assume(~(element.valid & element.emit & element.pass_end) |
                   ((element.tokens >= 1) & (element.tokens <= cfg.t_max))),
        ]
        accepted = Mux(staged_end, staged.tokens, 0)
        sent = o.valid & o.ready
        held = sum(Mux(full[b], tokens[b] - Mux(half == b, token, 0), 0) for b in range(2))
        Outstanding(m, accepted, sent, held=held, capacity=2 * cfg.t_max, name="linear_out")
        last_tokens = [probe(frag, f"half{b}_last_token") for b in range(2)]
        _output_halves(m, full, busy, tokens, last_tokens, half, token, cfg.t_max)


def _output_halves(m: Module, full, busy, tokens, last_tokens, half, token, t_max: int) -> None:
    """The linear output buffer's two halves (both harnesses assert them): never full and claimed at
    once, a full half holds 1..t_max tokens and its last token's index beside them, the emitter stays
    within its half's pass and waits at token 0."""
    for b in range(2):
        m.d.comb += [
            Assert(~full[b] | (last_tokens[b] == tokens[b] - 1), f"half {b}: the last token's index is tokens - 1"),
            Assert(~(full[b] & busy[b]), f"half {b}: never full and claimed at once"),
            Assert(~full[b] | ((tokens[b] >= 1) & (tokens[b] <= t_max)), f"half {b}: 1..t_max tokens"),
            Assert(~(full[b] & (half == b)) | (token < tokens[b]), f"half {b}: emitter within the pass"),
            Assert(~(half == b) | full[b] | (token == 0), f"half {b}: emitter at token 0 while it waits"),
        ]


# --- bus and line interfaces --------------------------------------------------------------------

#: A small AXI4-Stream command input: 8-bit beats, a 20-bit command (3 beats) whose two lowest bits
#: are the number of data beats that follow it (0..3; ``count_width`` 3).
AXIS_CMD_LAYOUT = data.StructLayout({"n": 2, "tag": 18})
AXIS_WIDTH = 8
AXIS_CMD_BEATS = -(-Shape.cast(AXIS_CMD_LAYOUT).width // AXIS_WIDTH)


def _axis_data_beats(cmd):
    return cmd.n


def axis_command_input(cls=AxisCommandInput) -> AxisCommandInput:
    """The ``AxisCommandInput`` that ``AxisCommandInputHarness`` proves (or ``cls``, a mutant subclass of it,
    of the same configuration)."""
    return cls(AXIS_WIDTH, AXIS_CMD_LAYOUT, data_beats=_axis_data_beats, count_width=3)


class AxisCommandInputHarness(Harness):
    """``AxisCommandInput`` (``hw/common/axi.py``) at 8-bit beats and ``AXIS_CMD_LAYOUT``: the AXI4-Stream
    host's rules assumed on ``s_axis`` (``tvalid`` held until ``tready``; ``tdata``, ``tkeep``, ``tlast``
    stable while waiting); ``enable`` free (the wrappers' ENABLE register: the host writes it at any time).

    ``safety`` (k-induction): the stream rules on ``cmd`` and ``data``; a ``cmd`` beat only with the
    last of ``cmd_beats`` command beats taken (``Outstanding``: command beats taken less ``cmd_beats``
    per command sent = ``cmd_beat_count``), carrying those beats in order; ``data`` beats only with an
    AXI beat taken, never more than ``data_beats`` of the commands sent (= ``data_beats_left``);
    ``keep_error`` and ``last_error`` sticky until reset, each set exactly by the beats that should set
    it; ``partial`` exactly while a command is part-way in; a beat taken only while ``enable`` is high,
    or to finish a ``cmd``/``data`` beat already offered.

    ``completion`` (bounded, and by k-induction): ``enable`` and ``tvalid`` held high, ``cmd`` and
    ``data`` always ready: a command's last beat (its ``cmd`` beat, or its last data beat) leaves
    within ``latency`` cycles of its first beat (``cmd_beats - 1 + 3``: 5)."""

    LATENCY = 5

    def __init__(self, mode: str = "safety", *, dut=None, latency: int | None = None):
        self.latency = latency if latency is not None else self.LATENCY
        super().__init__(dut if dut is not None else axis_command_input(), mode)

    def properties(self, m, frag):
        dut = self.dut
        k, bits = AXIS_CMD_BEATS, Shape.cast(AXIS_CMD_LAYOUT).width
        axis = SimpleNamespace(valid=dut.tvalid, ready=dut.tready, payload=Cat(dut.tdata, dut.tkeep, dut.tlast))
        self.check_ports(m, {"s_axis": axis}, {"cmd": dut.cmd, "data": dut.data})
        take = dut.tvalid & dut.tready
        cmd_sent, data_sent = dut.cmd.valid & dut.cmd.ready, dut.data.valid & dut.data.ready
        in_data = probe(frag, "in_data")
        owed = Outstanding(m, Mux(cmd_sent, _axis_data_beats(dut.cmd.payload), 0), data_sent,
                           held=Mux(in_data, probe(frag, "data_beats_left"), 0), capacity=3, name="data")
        cmd_beat = take & (owed.count == 0)          # the harness's view: no data owed, so a command beat
        beats = Outstanding(m, cmd_beat, cmd_sent * k, held=probe(frag, "cmd_beat_count"), capacity=k - 1,
                            name="cmd")
        # the command's beats as the harness took them, tied to the block's (induction)
        taken = [Signal(AXIS_WIDTH, name=f"cmd_ref{j}") for j in range(k - 1)]
        for j in range(k - 1):
            with m.If(cmd_beat & (beats.count == j)):
                m.d.sync += taken[j].eq(dut.tdata)
            m.d.comb += Assert((beats.count <= j) | (probe(frag, f"cmd_beat{j}") == taken[j]),
                               f"cmd: beat {j} held as taken")
        command = data.View(AXIS_CMD_LAYOUT, Cat(*taken, dut.tdata)[:bits])
        m.d.comb += [
            Assert(in_data == (owed.count != 0), "data: in_data exactly while data beats are owed"),
            Assert((owed.count == 0) | (beats.count == 0), "cmd: no command beat held while data is owed"),
            Assert(~(cmd_sent | data_sent) | take, "cmd/data: a beat out only with an AXI beat taken"),
            Assert(~(take & (owed.count != 0)) | data_sent, "data: an AXI beat taken while data is owed goes to data"),
            Assert(~dut.cmd.valid | ((beats.count == k - 1) & (Value.cast(dut.cmd.payload) == command.as_value())),
                   "cmd: offered only with its last beat, carrying its beats in order"),
            Assert(~dut.data.valid | (dut.data.payload == dut.tdata), "data: the AXI beat unchanged"),
            Assert(dut.partial == ((beats.count != 0) | (owed.count != 0)),
                   "partial: exactly while a command is part-way in"),
        ]
        ends = Mux(owed.count != 0, owed.count == 1, (beats.count == k - 1) & (_axis_data_beats(command) == 0))
        self._error_bits(m, take, ends)
        # enable: no beat taken while low, except to finish one offered on cmd or data
        offered = Signal(name="offered_was_stalled")
        m.d.sync += offered.eq((dut.cmd.valid & ~dut.cmd.ready) | (dut.data.valid & ~dut.data.ready))
        m.d.comb += [Assert(~take | dut.enable | offered, "s_axis: a beat taken only while enabled (or one offered)"),
                     Cover(cmd_sent & (_axis_data_beats(command) == 3)), Cover(data_sent & (owed.count == 1))]
        if self.mode == "completion":
            self._completion(m, take, cmd_beat & (beats.count == 0), ends, beats, owed, command)

    def _error_bits(self, m, take, ends):
        """``keep_error``/``last_error``: sticky, and set exactly by a beat taken with a ``tkeep`` bit low
        (``tlast`` on a beat that does not end a command)."""
        dut = self.dut
        for name, flag, event in (("keep_error", dut.keep_error, take & ~dut.tkeep.all()),
                                  ("last_error", dut.last_error, take & dut.tlast & ~ends)):
            seen = Signal(name=f"{name}_seen")
            with m.If(event):
                m.d.sync += seen.eq(1)
            sticky(m, flag, name)
            m.d.comb += [Assert(flag == seen, f"{name}: set exactly by its beats"), Cover(flag)]

    def _completion(self, m, take, first, ends, beats, owed, command):
        """Host and accelerator at full rate: each command is through within ``latency`` cycles of its
        first beat; the queue's age is the command's beats taken so far (so this is inductive too)."""
        dut, k = self.dut, AXIS_CMD_BEATS
        m.d.comb += [Assume(dut.enable), Assume(dut.tvalid), Assume(dut.cmd.ready), Assume(dut.data.ready)]
        queue = DeadlineQueue(m, push=first, pops=take & ends, budget=self.latency, depth=1, name="commands",
                              message=f"a command's last beat leaves within {self.latency} cycles of its first")
        n = Signal(2, name="command_data_beats")
        with m.If(dut.cmd.valid & dut.cmd.ready):
            m.d.sync += n.eq(_axis_data_beats(command))
        age = Mux(owed.count != 0, k + n - owed.count, beats.count)
        m.d.comb += [Assert(queue.count == ((beats.count != 0) | (owed.count != 0)),
                            "commands: the queue holds the open one"),
                     Assert((queue.count == 0) | (queue.ages[0] == age), "commands: its age is its beats taken")]


#: The UART harnesses' divisor: the smallest the receiver takes (a frame is 40 cycles).
UART_DIVISOR = MIN_DIVISOR


class UartTxHarness(Harness):
    """``UartTx`` (``hw/common/uart.py``): the stream rules assumed on ``i``.

    ``safety`` (k-induction): a byte is taken only while no frame is on the line (``i.ready`` and
    ``~busy`` exactly then); from the second cycle after the take the line carries that byte's frame
    (start 0, the 8 data bits LSB first, stop 1), ``divisor`` cycles a bit, and is high otherwise. The
    harness counts the cycles since the take and asserts the transmitter's bit count, timer and shift
    register against that count (the induction's invariants).

    ``completion`` (k-induction; nothing assumed, the line has no backpressure): a byte offered has its
    start bit on the line within ``latency`` cycles of the offer: the frame in flight (``10 divisor``
    cycles at most), then two (take, load)."""

    def __init__(self, divisor: int = UART_DIVISOR, mode: str = "safety", *, dut=None, latency: int | None = None):
        self.divisor = divisor
        self.latency = latency if latency is not None else 10 * divisor + 2
        super().__init__(dut if dut is not None else UartTx(divisor), mode)

    def properties(self, m, frag):
        dut, div = self.dut, self.divisor
        cycles = 10 * div
        self.check_ports(m, {"i": dut.i}, {})
        taken = dut.i.valid & dut.i.ready
        byte = Signal(8, name="tx_byte")
        since = Signal(range(cycles + 1), name="tx_since")      # cycles since the take; 0: no frame
        with m.If(taken):
            m.d.sync += [byte.eq(dut.i.payload), since.eq(1)]
        with m.Elif(since != 0):
            m.d.sync += since.eq(Mux(since == cycles, 0, since + 1))
        frame = Cat(Const(0, 1), byte, Const(1, 1))
        left, timer, shift = (probe(frag, name) for name in ("left", "timer", "shift"))
        line = Signal(name="tx_line_expected")
        state = Signal(len(left) + len(timer) + len(shift), name="tx_state_expected")
        m.d.comb += [line.eq(1), state.eq(0)]
        with m.Switch(since):
            for s in range(1, cycles + 1):
                with m.Case(s):
                    # bit (s - 2) // div is on the line; (s - 2 + div) // div bits have been shifted out
                    if s >= 2:
                        m.d.comb += line.eq(frame[(s - 2) // div])
                    m.d.comb += state.eq(Cat(Const(10 - (s - 1) // div, len(left)), Const((s - 1) % div, len(timer)),
                                             (frame >> ((s - 2 + div) // div))[:len(shift)]))
        m.d.comb += [
            Assert(dut.i.ready == (since == 0), "i: a byte taken only while no frame is on the line"),
            Assert(dut.busy == (since != 0), "tx: busy exactly while a frame is on the line"),
            Assert(dut.tx == line, "tx: the line carries the byte's frame, divisor cycles a bit, and idles high"),
            Assert((since == 0) | (Cat(left, timer, shift) == state),
                   "tx: bit count, timer and shift register as the cycles since the take say"),
            Assert((since != 0) | (left == 0), "tx: no bits left between frames"),
            Cover(taken & (byte == 0xA5)), Cover((since == cycles) & dut.i.valid),
        ]
        if self.mode == "completion":
            self._completion(m, since)

    def _completion(self, m, since):
        """Each offer (``valid`` rising, or again after a transfer) is answered by its start bit on the
        line (``since == 2``). The queue holds the byte taken before its start bit (``since`` 1 or 2:
        offered at most ``10 divisor`` cycles before its take) and the offer waiting (offered after the
        take of the frame in flight): inductive with these bounds on their ages."""
        i, cycles = self.dut.i, 10 * self.divisor
        was_stalled = Signal(name="i_was_stalled")
        m.d.sync += was_stalled.eq(i.valid & ~i.ready)
        queue = DeadlineQueue(m, push=i.valid & ~was_stalled, pops=since == 2, budget=self.latency, depth=2,
                              name="offers",
                              message=f"an offered byte's start bit is on the line within {self.latency} cycles")
        in_flight = (since == 1) | (since == 2)
        m.d.comb += [
            Assert(queue.count == in_flight + was_stalled, "offers: the byte before its start bit and the one waiting"),
            Assert(~in_flight | (queue.ages[0] <= since + cycles), "offers: the byte taken waited at most a frame"),
            Assert(~was_stalled | (Mux(in_flight, queue.ages[1], queue.ages[0]) < Mux(since == 0, cycles + 1, since)),
                   "offers: the byte waiting was offered after the take of the frame in flight"),
        ]


class UartRxHarness(Harness):
    """``UartRx`` (``hw/common/uart.py``), its pin free: any level in any cycle, noise and glitches too.

    The receiver has no backpressure: a byte not taken before the next one is complete is replaced,
    and the sticky ``overrun`` says so. Proven by k-induction: ``o.valid`` held until ``ready``; the
    payload stable while stalled unless a byte replaced it, which sets ``overrun``; ``overrun`` and
    ``frame_error`` sticky until reset, ``overrun`` rising only when a byte waited untaken,
    ``frame_error`` only for a frame with a low start and a low stop sample; no byte on ``o`` (a new
    beat or a replacing one) without a start bit on the pin: it was low at the start bit's middle and
    high at the stop bit's, nine bit times later, and the byte is the eight levels at the data bits'
    middles between. The harness keeps the pin's last ``3 + 9 divisor`` levels and asserts the
    synchronizer, the bits shifted in and the start sample against them (the induction's invariants)."""

    def __init__(self, divisor: int = UART_DIVISOR, mode: str = "safety", *, dut=None):
        if mode != "safety":
            raise ValueError("the UART receiver harness has no completion mode (its line is free)")
        self.divisor = divisor
        super().__init__(dut if dut is not None else UartRx(divisor), mode)

    def properties(self, m, frag):
        dut, o, div = self.dut, self.dut.o, self.divisor
        depth = 3 + 9 * div
        pin = Signal(depth, init=(1 << depth) - 1, name="rx_pin")       # pin[j]: the pin j + 1 cycles ago
        m.d.sync += pin.eq(Cat(dut.rx, pin[:-1]))
        # a byte delivered in the cycle before: its stop sample was 3 cycles ago (through the
        # synchronizer), its data bit i (8 - i) bit times before that, its start sample 9
        framed = ~pin[2 + 9 * div] & pin[2]
        sampled = Cat(*(pin[2 + (8 - i) * div] for i in range(8)))
        past = _History(m, o, "o")
        fresh = o.valid & ~past.stalled
        replaced = past.stalled & (Value.cast(o.payload) != past.payload)
        overrun_was, framing_was = Signal(name="overrun_was"), Signal(name="frame_error_was")
        m.d.sync += [overrun_was.eq(dut.overrun), framing_was.eq(dut.frame_error)]
        sticky(m, dut.overrun, "overrun")
        sticky(m, dut.frame_error, "frame_error")
        m.d.comb += [
            Assert(~past.stalled | o.valid, "o: valid held until ready"),
            Assert(~replaced | dut.overrun, "o: payload stable while stalled, unless replaced with overrun set"),
            Assert(~(fresh | replaced) | (framed & (o.payload == sampled)),
                   "o: a byte only after a start bit and a stop bit, its bits the pin's mid-bit levels"),
            Assert(~(dut.overrun & ~overrun_was) | past.stalled, "overrun: set only while a byte waits untaken"),
            Assert(~(dut.frame_error & ~framing_was) | (~pin[2 + 9 * div] & ~pin[2]),
                   "frame_error: set only for a start bit whose stop bit was low"),
            Cover(o.valid & o.ready & (o.payload == 0xA5)), Cover(dut.overrun), Cover(dut.frame_error),
        ]
        self._receiver_state(m, frag, pin)

    def _receiver_state(self, m, frag, pin):
        """The induction's invariants: the synchronizer holds the pin's last two levels; in DATA
        (``bits`` < 8 received) and STOP (``bits`` = 8) the start sample was low and each bit shifted
        in is the pin's level at its sample point (``divisor`` cycles apart, the last one ``divisor -
        timer`` cycles ago)."""
        div = self.divisor
        state = probe(frag, "fsm_state")
        states = fsm_states(state)
        timer, bits, shift = (probe(frag, name) for name in ("timer", "bits", "shift"))
        in_start, in_data, in_stop = (state == states[name] for name in ("START", "DATA", "STOP"))
        m.d.comb += [
            Assert((probe(frag, "rx_sync1") == pin[0]) & (probe(frag, "rx_sync2") == pin[1]),
                   "rx: the synchronizer holds the pin's last two levels"),
            Assert(state <= max(states.values()), "rx: the FSM in one of its states"),
            Assert(~in_start | (timer < div // 2), "rx: START waits at most half a bit"),
            Assert(~in_data | ((timer < div) & (bits < 8)), "rx: DATA within a bit, fewer than 8 bits in"),
            Assert(~in_stop | ((timer < div) & (bits == 8)), "rx: STOP within a bit, 8 bits in"),
        ]
        for b in range(9):
            here = in_stop if b == 8 else in_data & (bits == b)
            for i in range(-1, b):      # -1: the start sample
                level = pin.bit_select((1 + (b - i) * div - timer).as_unsigned(), 1)
                m.d.comb += Assert(~here | (level == (0 if i < 0 else shift[8 - b + i])),
                                   "rx: the start sample and the bits shifted in are the pin's levels")


# --- whole accelerators ---------------------------------------------------------------------------

def _signal_name(sig: Signal) -> str:
    """The signal's name, or for one Amaranth left unnamed (``a, b = Signal(), Signal()``) where
    it was made: ``$signal@loader.py:175``."""
    if not sig.name.startswith("$") or not getattr(sig, "src_loc", None):
        return sig.name
    filename, line = sig.src_loc[:2]
    return f"{sig.name}@{filename.rsplit('/', 1)[-1]}:{line}"


def registers(fragment: Fragment, prefix: str = "dut") -> dict[str, Signal]:
    """Every register of ``fragment`` (a signal assigned in a clocked domain, here or in a
    submodule) by its path, ``prefix.submodule.name`` (memories' contents are not registers)."""
    found = {}

    def port_names(frag):
        """A component's ports by their path in its signature (``job.sum``): Amaranth leaves
        the signals of a signature's members unnamed (``$signal``)."""
        names = {}
        origin = (getattr(frag, "origins", None) or (None,))[0]
        if isinstance(origin, wiring.Component):
            for port_path, _member, value in origin.signature.flatten(origin):
                value = Value.cast(value)
                if isinstance(value, Signal):
                    names[id(value)] = ".".join(map(str, port_path))
        return names

    def walk(frag, path):
        ports = port_names(frag)
        for domain, statements in frag.statements.items():
            if domain == "comb":
                continue
            for stmt in statements:
                for sig in stmt._lhs_signals():
                    found.setdefault(id(sig), (f"{path}.{ports.get(id(sig)) or _signal_name(sig)}", sig))
        for sub, name, _loc in frag.subfragments:
            if isinstance(sub, Fragment):
                walk(sub, f"{path}.{name}")

    walk(fragment, prefix)
    named, seen = {}, {}
    for path, sig in sorted(found.values(), key=lambda item: item[0]):
        seen[path] = seen.get(path, 0) + 1
        named[path if seen[path] == 1 else f"{path}#{seen[path]}"] = sig   # unnamed signals share "$signal"
    return named


def quiet_until(m: Module, fragment: Fragment, started, *, exempt: str = r"$^", valid_only: str = r"$^",
                name: str = "quiet") -> list[str]:
    """Asserts that every register of ``fragment`` whose path does not match the regular expression
    ``exempt`` holds its reset value until ``started`` (a harness register, reset with the block).

    The strengthening invariant of "no output without a command" on a whole accelerator: before the
    first command nothing of the block has moved, so k-induction cannot start from a state the block
    never reaches (a half-finished head with no command behind it). ``exempt`` names the data
    registers that load every cycle whatever the control does (operand and product registers fed
    from memory read ports); they are free in the proof. Of the registers matching ``valid_only``
    (a pipeline's element records, whose other fields load whatever the control holds) only
    bit 0, their ``valid`` field, is asserted. Returns the paths asserted."""
    checked = []
    skip, valid = re.compile(exempt), re.compile(valid_only)
    for path, sig in registers(fragment).items():
        if skip.search(path):
            continue
        if valid.search(path):
            m.d.comb += Assert(started | ~sig[0], f"{name}: {path}.valid low until the first command")
        else:
            m.d.comb += Assert(started | (sig == sig.init), f"{name}: {path} at reset until the first command")
        checked.append(path)
    return checked


class DeadlineQueue:
    """Cycles since each unmatched event, oldest first: ``push`` (0 or 1) appends an event, ``pops``
    (0..``max_pop``) matches that many of the oldest, and the oldest unmatched one must be matched
    within ``budget`` cycles of its push (asserted, with ``message``). So the k-th event pushed is
    matched by k pops within ``budget`` cycles, whatever the order the block answers in. ``depth``
    events at most are unmatched (asserted)."""

    def __init__(self, m: Module, *, push, pops, budget: int, depth: int, name: str, message: str,
                 max_pop: int = 1):
        self.ages = ages = [Signal(range(budget + 1), name=f"{name}_age{k}") for k in range(depth)]
        self.count = n = Signal(range(depth + 2), name=f"{name}_count")
        pops = Value.cast(pops)
        for k in range(depth):
            older = [Mux(ages[k + p] == budget, budget, ages[k + p] + 1) if k + p < depth else 0
                     for p in range(max_pop + 1)]
            moved = older[0]
            for p in range(1, max_pop + 1):
                moved = Mux(pops == p, older[p], moved)
            m.d.sync += ages[k].eq(Mux(Value.cast(push) & (n - pops == k), 1, moved))
        m.d.sync += n.eq(n + push - pops)
        m.d.comb += [
            Assert(n >= pops, f"{name}: no answer without an event"),
            Assert(n <= depth, f"{name}: at most {depth} events unmatched"),
            Assert((n == 0) | (pops != 0) | (ages[0] < budget), message),
        ]


#: The smallest legal ViTCoD accelerator: d = 2, one token, one CSR entry, one MAC per line,
#: one Denser and one Sparser line, 16-bit beats (one token row per beat).
SMALLEST_VITCOD = VitcodConfig(head_dim=2, max_tokens=1, max_nnz=1, macs=1, dense_lines=1, sparse_lines=1,
                               data_width=16)


class VitcodAcceleratorHarness(Harness):
    """The whole ViTCoD accelerator (loader, banks, scheduler, engines, softmax, output stage).

    ``safety`` (k-induction): the host's stream rules assumed on ``cmd`` and ``data``, the
    accelerator's asserted on ``o`` (payload and ``o_last`` stable while stalled); the error
    bits sticky until reset; no output beat before the first command (strengthened by
    ``quiet_until``: every control register at its reset value until then).

    ``completion`` (bounded): ``data`` always valid and ``o`` always ready (the solver still
    picks every command and data value, good heads and refused ones); the k-th command taken
    is taken in within ``latency`` cycles (refused: ``heads_failed`` counts it; or its head
    loaded: a bank's ``full`` flag rises), at most two are pending at once, and the output
    beats never outnumber ``Nq * words_per_token`` summed over the commands taken (no output
    beat without a command that asks for it). Every loaded head is computed and out
    (``heads_done``) in load order, within ``keyless_latency`` cycles (a head without keys) or
    ``head_latency`` (with keys) of the later of its load and the previous head's end. Only
    control is observed in this mode (``o``'s ``valid`` and ``o_last``; the payload's rule is the
    safety proof's). The data path stays in the model all the same (the row maxima and
    reciprocals pass through the scheduler's registers), so each cycle of depth costs more: a
    check 40 deep takes 2-3 minutes, one 48 deep 8. That covers a keyless head whole (done 35
    cycles after its command at cycle 1), not a keyed one (65): ``head_latency`` is the RTL's in
    simulation (tests/test_formal.py::test_vitcod_head_bounds_are_the_rtls)."""

    #: data registers fed every cycle from the buffers' read ports (operands, products, exponent
    #: differences): not control, free in the proof; ``loader.alive`` rises one cycle after reset; the
    #: registers that follow their inputs while idle (the engines' job banks, the exponent units' ghost
    #: flag and entry count) take constants in the first cycles
    EXEMPT = (r"\.(denser|sparser)\d*\.(exp_unit\.(diff_diff|prod_prod|shifted_shifted|z_z|e_e|job_ghost|left|"
              r"\w+_(ghost|last))|score_final_step|(read_)?(score|pv)_bank|op_q\d+|op_first|read_(pv|score)_first|"
              r"line\d+\.(s\d_(pv|first|last)|lane\d+_(pv|first|last)|[ab]_reg|(lane_)?product\d+|product_sum))$|"
              r"\.scheduler\d*\.(pointer_lane\d+_\d+|row_(start|end)\d+)$|\.loader\.alive$")

    def __init__(self, config: VitcodConfig | None = None, mode: str = "safety", *, dut=None,
                 latency: int | None = None, lean: bool | None = None, head_latency: int | None = None,
                 keyless_latency: int | None = None):
        self.config = config or SMALLEST_VITCOD
        self.latency = latency if latency is not None else self.LATENCY
        self.head_latency = head_latency if head_latency is not None else self.HEAD_LATENCY
        self.keyless_latency = keyless_latency if keyless_latency is not None else self.KEYLESS_LATENCY
        #: control only: no payload rule, no quiet-register invariants (bounded checks; default in completion)
        self.lean = mode == "completion" if lean is None else lean
        super().__init__(dut if dut is not None else VitcodAccelerator(self.config), mode)

    #: cycles from taking a command to refusing it or having its head in a bank, SMALLEST_VITCOD with
    #: data always valid: a head of 7 beats (Q, K, V, three row pointers, one column index) is in its
    #: bank 9 cycles after its command (tests/test_formal.py shows that 8 fails)
    LATENCY = 9
    #: the bounds on a head's compute, SMALLEST_VITCOD, ``o`` always ready (``head_waited`` counts from
    #: the cycle after its load, or after the previous head's end): a head with a key (a score and a
    #: P.V job; behind another keyed head 55), a head without (with a keyed head loaded behind it 26;
    #: the bounded proof fails with 25): the largest the RTL needs in simulation (tests/test_formal.py;
    #: 56 and 27 before a row went out one beat at a time, without the row register's cycle)
    HEAD_LATENCY = 55
    KEYLESS_LATENCY = 26

    def properties(self, m, frag):
        cfg, dut = self.config, self.dut
        # completion: control only (o_last, not the data beside it), so that Yosys drops the data path
        # no property observes (the engines' arithmetic, the softmax): the bounded check goes deeper
        lean = self.lean
        payload = dut.o_last if lean else Cat(dut.o.payload, dut.o_last)
        o = SimpleNamespace(valid=dut.o.valid, ready=dut.o.ready, payload=payload)
        self.check_ports(m, {"cmd": dut.cmd, "data": dut.data}, {"o": o})
        sticky(m, dut.error, "error")
        accepted = dut.cmd.valid & dut.cmd.ready
        started = Signal(name="first_command_seen")
        with m.If(accepted):
            m.d.sync += started.eq(1)
        self.quiet = [] if lean else quiet_until(m, frag, started, exempt=self.EXEMPT)
        m.d.comb += [Assert(started | ~dut.o.valid, "no output beat before the first command"),
                     Cover(dut.heads_done != 0)]
        if self.mode != "completion":
            return
        m.d.comb += [Assume(dut.data.valid), Assume(dut.o.ready)]
        # a command is taken in when the loader refuses it (heads_failed counts it) or has loaded its
        # head into a bank (the bank's full flag rises); the loader takes one command at a time
        regs = registers(frag)
        failed_was = Signal.like(dut.heads_failed, name="heads_failed_was")
        full = Cat(regs["dut.loader.full0"], regs["dut.loader.full1"])
        full_was = Signal(2, name="banks_full_was")
        m.d.sync += [failed_was.eq(dut.heads_failed), full_was.eq(full)]
        rose = full & ~full_was
        pops = (dut.heads_failed != failed_was) + rose[0] + rose[1]
        DeadlineQueue(m, push=accepted, pops=pops, budget=self.latency, depth=2, max_pop=2, name="commands",
                      message=f"a command is refused or its head loaded within {self.latency} cycles")
        owed = Signal(signed(24), name="beats_owed")
        p = dut.cmd.p
        m.d.sync += owed.eq(owed + Mux(accepted, p.nq * cfg.words_per_token, 0) - (dut.o.valid & dut.o.ready))
        m.d.comb += Assert(owed >= 0, "no output beat beyond what the commands ask for")
        keyed = (p.g != 0) | (p.nnz != 0)
        self._heads_computed(m, accepted=accepted, keyed=keyed, refused=dut.heads_failed != failed_was,
                             loads=rose[0] + rose[1])

    def _heads_computed(self, m, *, accepted, keyed, refused, loads):
        """Every loaded head is computed and out (``heads_done`` counts it), in load order: while
        heads are loaded and not done, ``heads_done`` moves within a budget of the later of the
        oldest one's load and the previous head's end: ``keyless_latency`` cycles for a head without
        keys (``g`` and ``nnz`` zero: no score or P.V job), ``head_latency`` for one with keys. The
        commands' flags wait in order for their answer (refused, or loaded: at most two)."""
        dut = self.dut
        # the flags of the commands taken and not yet answered, then of the heads loaded and not done
        taken = _FlagQueue(m, push=accepted, flag=keyed, pop=refused | (loads != 0), name="taken_keyed")
        done_was = Signal.like(dut.heads_done, name="heads_done_was")
        m.d.sync += done_was.eq(dut.heads_done)
        finished = dut.heads_done != done_was
        loaded = _FlagQueue(m, push=loads != 0, flag=taken.front, pop=finished, name="loaded_keyed")
        budget = Mux(loaded.front, self.head_latency, self.keyless_latency)
        waited = Signal(range(max(self.head_latency, self.keyless_latency) + 1), name="head_waited")
        m.d.sync += waited.eq(Mux(finished | (loaded.count == 0), 0, Mux(waited >= budget, waited, waited + 1)))
        m.d.comb += [Assert(refused.as_unsigned() + (loads != 0) <= 1, "a command answered once: refused or loaded"),
                     Assert((loaded.count == 0) | finished | (waited < budget),
                            f"a loaded head is done within {self.keyless_latency} cycles (no keys) or "
                            f"{self.head_latency} (keys) of its load or the previous head's end")]


class _FlagQueue:
    """A FIFO of one-bit flags (``depth`` at most, asserted): ``push`` appends ``flag``, ``pop``
    takes ``front`` (asserted: never from an empty queue)."""

    def __init__(self, m: Module, *, push, flag, pop, name: str, depth: int = 2):
        self.count = count = Signal(range(depth + 2), name=f"{name}_count")
        flags = [Signal(name=f"{name}{k}") for k in range(depth)]
        self.front = flags[0]
        for k in range(depth):
            kept = flags[k + 1] if k + 1 < depth else 0
            moved = Mux(pop, kept, flags[k])
            m.d.sync += flags[k].eq(Mux(push & (count - pop == k), flag, moved))
        m.d.sync += count.eq(count + push - pop)
        m.d.comb += [Assert(count >= pop, f"{name}: no answer without an entry"),
                     Assert(count <= depth, f"{name}: at most {depth} entries")]


#: A small ViTCoD softmax stage: rows of up to 2 keys per engine, a 2-bit-per-cycle divider.
SMALL_SOFTMAX = VitcodConfig(head_dim=2, max_tokens=2, max_nnz=4, macs=1, dense_lines=1, sparse_lines=1,
                             data_width=16)


class SoftmaxStageHarness(Harness):
    """The ViTCoD ``SoftmaxStage`` alone, its two exponent units free (their ``free``, ``done``
    pulses and sums arbitrary, a unit's done pulses only for jobs it has started and not finished).

    Proven by k-induction: the stream rules on ``rows`` (assumed) and ``recips``; one reciprocal per
    row taken, none without one, in row order (each carries its row's slot; a reference queue of
    the slots taken); the exponent jobs start only with a row taken, on both units at once and only
    when both are free, alternating their tags; at most two rows in the units and one in the
    divider. In ``completion`` mode (units done within ``env_latency`` cycles of a start and free
    whenever they hold fewer than two jobs) a bounded check from reset: while rows are owed, a
    reciprocal at least every ``latency`` cycles."""

    def __init__(self, config: VitcodConfig | None = None, mode: str = "safety", *, dut=None,
                 env_latency: int = 2, latency: int | None = None):
        self.config = config or SMALL_SOFTMAX
        self.env_latency = env_latency
        steps = -(-self.config.recip_width // self.config.divider_bits)
        # rows behind each other: the divider (start, ceil(recip_width / divider_bits) steps, done)
        # after the units' sums (within env_latency); SMALL_SOFTMAX: 16 (15 fails, tests/test_formal.py)
        self.latency = latency if latency is not None else env_latency + steps + 1
        super().__init__(dut if dut is not None else SoftmaxStage(self.config), mode)

    def properties(self, m, frag):
        rows, recips = self.dut.rows, self.dut.recips
        units = (self.dut.dense_exp, self.dut.sparse_exp)
        self.check_ports(m, {"rows": rows}, {"recips": recips})
        take, sent = rows.valid & rows.ready, recips.valid & recips.ready
        busy = probe(frag, "busy")                   # the divider's: a row in it, start to done
        pending = probe(frag, "exp_rows")
        held = Signal(range(4), name="softmax_held")
        m.d.comb += held.eq(pending + busy)
        out = Outstanding(m, take, sent, held=held, capacity=3, name="softmax")
        ref = RefQueue(m, rows.payload.slot, push=take, pop=sent, depth=3, outstanding=out, name="softmax")
        m.d.comb += Assert(~sent | (recips.payload.slot == ref.entries[0]), "softmax: reciprocals in row order")
        # the units: jobs started and not done (the environment answers only those)
        opens = []
        for name, unit in zip(("dense", "sparse"), units):
            open_ = Signal(3, name=f"smx_{name}_open")
            opens.append(open_)
            m.d.sync += open_.eq(open_ + unit.start - unit.done)
            finished = probe(frag, f"{name}_finished")
            m.d.comb += [
                Assume(~unit.done | (open_ != 0)),
                Assert(unit.start == take, f"softmax: the {name} unit starts with a row taken"),
                Assert(~unit.start | unit.free, f"softmax: the {name} unit starts only when free"),
                Assert(open_ + finished == pending, f"softmax: the {name} unit's rows are the ones in the units"),
                Assert(open_ <= 2, f"softmax: at most two rows in the {name} unit"),
                Assert(unit.tag == probe(frag, "start_tag"), f"softmax: the {name} unit's tag"),
            ]
        # the tags and slots: start_tag counts the rows taken, hand_tag the rows to the divider
        # (mod 2); the slot registers hold the rows in the units, the divider's its row's
        start_tag, hand_tag = probe(frag, "start_tag"), probe(frag, "hand_tag")
        slots = [probe(frag, f"exp_slot{t}") for t in range(2)]
        divider_slot = probe(frag, "divider_slot")
        m.d.comb += [
            Assert(pending <= 2, "softmax: at most two rows in the exponent units"),
            Assert(start_tag == (hand_tag + pending)[0], "softmax: tags alternate, started rows after handed"),
            Assert(~busy | (divider_slot == ref.entries[0]), "softmax: the divider's row is the oldest owed"),
        ]
        for k in range(2):      # the k-th row in the units (after the divider's, if any) has tag hand_tag + k
            pos = Signal(range(3), name=f"smx_pos{k}")
            m.d.comb += pos.eq(busy + k)
            tag = (hand_tag + k)[0]
            m.d.comb += Assert((pending <= k) | (mux_tree(slots, tag) == mux_tree(ref.entries, pos)),
                               "softmax: the unit rows' slots are the owed rows', in order")
        if self.mode == "completion":
            # fair units: a started job's done within env_latency cycles, free with fewer than two
            L = self.env_latency
            for name, unit, open_ in zip(("dense", "sparse"), units, opens):
                waited = Signal(range(L + 1), name=f"smx_{name}_waited")
                with m.If((open_ != 0) & ~unit.done):
                    with m.If(waited < L):
                        m.d.sync += waited.eq(waited + 1)
                with m.Else():
                    m.d.sync += waited.eq(0)
                m.d.comb += [Assume(~((open_ != 0) & (waited == L - 1)) | unit.done),
                             Assume(unit.free == (open_ < 2))]
            self.completion(m, out, recips)


class ExpUnitHarness(Harness):
    """A ViTCoD ``ExpUnit`` (one engine's exponents; ``SMALL_SOFTMAX``, one score group), its scores
    free. Assumed: a job starts only while the unit is ``free`` and fewer than two jobs are open
    (started, not done: the softmax stage's rule), the tags alternate, ``n <= max_tokens``.

    Asserted: every exponent write belongs to the oldest job with entries left, at its slot and next
    entry, in order; a job of ``n`` keys writes exactly ``n`` (one without keys none); ``done`` comes
    once per job, in order, after all its writes, with ``sum[tag]`` the sum of exactly the E values
    it wrote. A harness queue of the open jobs (slot, keys, entries written, running sum) mirrors
    the unit (its issue state and every pipeline stage's entry, tag, slot and flags are asserted
    against it); k-induction, k = 8 (the six stages and the issue). No completion mode (the
    accelerator's bounded checks cover the unit's latency)."""

    def __init__(self, config: VitcodConfig | None = None, mode: str = "safety", *, dut=None):
        self.config = config or SMALL_SOFTMAX
        super().__init__(dut if dut is not None else ExpUnit(self.config, groups=1), mode)

    def properties(self, m, frag):
        cfg, job, write = self.config, self.dut.job, self.dut.e_write
        entry_bits = log2_ceil(cfg.max_tokens)
        sum_w = cfg.sum_width
        # the open jobs, oldest first (at most two)
        Q = 2
        valid = [Signal(name=f"xu_valid{k}") for k in range(Q)]
        slot = [Signal.like(job.slot, name=f"xu_slot{k}") for k in range(Q)]
        keys = [Signal.like(job.n, name=f"xu_n{k}") for k in range(Q)]
        written = [Signal.like(job.n, name=f"xu_written{k}") for k in range(Q)]
        acc = [Signal(sum_w, name=f"xu_sum{k}") for k in range(Q)]
        tag = [Signal(name=f"xu_tag{k}") for k in range(Q)]
        starts = Signal(name="xu_start_parity")
        open_ = Signal(range(Q + 1), name="xu_open")
        m.d.comb += open_.eq(valid[0] + valid[1])
        m.d.comb += [Assume(~job.start | (job.free & (open_ < Q))), Assume(~job.start | (job.tag == starts)),
                     Assume(job.n <= cfg.max_tokens)]
        with m.If(job.start):
            m.d.sync += starts.eq(~starts)
        # the job a write belongs to: the oldest with entries left
        first = Signal(name="xu_write_job")
        m.d.comb += first.eq(valid[0] & (written[0] == keys[0]))      # job 0 has written all: job 1's turn
        w_slot, w_written = mux_tree(slot, first), mux_tree(written, first)
        m.d.comb += [
            Assert(~write.en | mux_tree(valid, first), "exp: no write without an open job"),
            Assert(~write.en | (mux_tree(written, first) < mux_tree(keys, first)), "exp: at most n writes a job"),
            Assert(~write.en | (write.addr == Cat(w_written[:entry_bits], w_slot)),
                   "exp: a write at its job's slot and next entry, in order"),
            Assert(~job.done | valid[0], "exp: no done without an open job"),
            Assert(~job.done | (written[0] == keys[0]), "exp: done after all of the job's writes"),
            Assert(~job.done | (job.sum[tag[0]] == acc[0]), "exp: done with the sum of exactly its E values"),
            Assert(~valid[1] | valid[0], "exp: open jobs oldest first"),
            Assert(~valid[1] | (tag[1] != tag[0]), "exp: open jobs' tags differ"),
        ]
        # the unit's state against the queue (the induction's invariants): per tag, the job's keys are
        # its writes + its real entries in the pipeline + the entries still to issue; each entry in
        # the pipeline is its job's next write plus the job's entries ahead of it; slots, last flags
        running, left, entry = probe(frag, "running"), probe(frag, "left"), probe(frag, "entry")
        par_tag, par_slot, par_ghost = probe(frag, "job_tag"), probe(frag, "job_slot"), probe(frag, "job_ghost")
        stages = [SimpleNamespace(**{f: probe(frag, f"{name}_{f}") for f in ("valid", "entry", "tag", "ghost",
                                                                              "last", "slot")})
                  for name in ("read", "diff", "prod", "shifted", "z", "e")]
        newest = Signal(name="xu_newest")
        m.d.comb += newest.eq(valid[1])
        m.d.comb += [Assert(~valid[0] | (mux_tree(tag, newest) != starts), "exp: the newest job has the last tag"),
                     Assert(~running | mux_tree(valid, newest), "exp: issuing only for an open job"),
                     Assert(~running | (par_tag == mux_tree(tag, newest)), "exp: the issuing job is the newest"),
                     Assert(~running | (par_slot == mux_tree(slot, newest)), "exp: the issuing job's slot"),
                     Assert(~running | (par_ghost == (mux_tree(keys, newest) == 0)), "exp: ghost iff no keys"),
                     Assert(~running | (left != 0), "exp: an issuing job has entries left")]
        for k in range(Q):
            real = [st.valid & ~st.ghost & (st.tag == tag[k]) for st in stages]
            issuing = running & (par_tag == tag[k]) & ~par_ghost
            m.d.comb += [
                Assert(~valid[k] | (written[k] + sum(r.as_unsigned() for r in real) + Mux(issuing, left, 0)
                                    == keys[k]), "exp: a job's keys are written, in flight or to issue"),
                Assert(~valid[k] | (self.dut.job.sum[tag[k]] == acc[k]), "exp: an open job's sum so far"),
                Assert(~issuing | ~valid[k] | (entry == written[k] + sum(r.as_unsigned() for r in real)),
                       "exp: the issue entry follows the job's entries in flight"),
            ]
            for i, st in enumerate(stages):
                ahead = sum(r.as_unsigned() for r in real[i + 1:]) if i + 1 < len(stages) else 0
                m.d.comb += [
                    Assert(~(valid[k] & real[i]) | (st.entry == written[k] + ahead), "exp: entries in order"),
                    Assert(~(valid[k] & st.valid & (st.tag == tag[k])) | (st.slot == slot[k]), "exp: stage slots"),
                    Assert(~(valid[k] & real[i] & st.last) | (st.entry + 1 == keys[k]), "exp: last entry flags"),
                ]
        for st in stages:
            m.d.comb += [
                Assert(~st.valid | (valid[0] & (st.tag == tag[0])) | (valid[1] & (st.tag == tag[1])),
                       "exp: stages only for open jobs"),
                Assert(~(st.valid & st.ghost) | st.last, "exp: a ghost entry is its job's last"),
                Assert(~job.done | ~(st.valid & (st.tag == tag[0])), "exp: done when the job's entries are out")]
            for k in range(Q):
                mine = valid[k] & st.valid & (st.tag == tag[k])
                m.d.comb += Assert(~mine | (st.ghost == (keys[k] == 0)), "exp: ghost entries only for jobs without keys")
        # done is the e stage's last entry, a cycle later
        e_last = Signal(name="xu_e_last")
        m.d.sync += e_last.eq(stages[-1].valid & stages[-1].last)
        m.d.comb += Assert(job.done == e_last, "exp: done a cycle after the last entry's E")
        ghosts = [running & (par_tag == tag[k]) & par_ghost for k in range(Q)]
        for k in range(Q):
            in_flight = sum((st.valid & st.ghost & (st.tag == tag[k])).as_unsigned() for st in stages)
            m.d.comb += Assert(~valid[k] | (in_flight + ghosts[k] <= 1), "exp: one ghost entry a job")
            m.d.comb += Assert(~(valid[k] & ghosts[k]) | (left == 1), "exp: a ghost job issues one entry")
        # the queue: writes, done (pops job 0), start (pushes behind)
        for k in range(Q):
            with m.If(write.en & (first == k)):
                m.d.sync += [written[k].eq(written[k] + 1), acc[k].eq(acc[k] + write.data)]
        def push(k):    # the started job into place k
            m.d.sync += [valid[k].eq(1), slot[k].eq(job.slot), keys[k].eq(job.n), tag[k].eq(job.tag),
                         written[k].eq(0), acc[k].eq(0)]

        with m.If(job.done):
            # job 1 moves to 0 (with its write of this cycle, if any)
            m.d.sync += [valid[0].eq(valid[1]), slot[0].eq(slot[1]), keys[0].eq(keys[1]), tag[0].eq(tag[1]),
                         written[0].eq(written[1] + (write.en & first)), acc[0].eq(acc[1] + Mux(write.en & first,
                                                                                                  write.data, 0)),
                         valid[1].eq(0)]
            with m.If(job.start):
                with m.If(valid[1]):
                    push(1)
                with m.Else():
                    push(0)
        with m.Elif(job.start):
            with m.If(valid[0]):
                push(1)
            with m.Else():
                push(0)


class EngineHarness(Harness):
    """One ViTCoD ``Engine`` (``hw/vitcod/engine.py``; ``SMALL_SOFTMAX``, the Denser Engine of one
    line unless told), its environment free within what the row scheduler and the softmax stage
    guarantee.

    Assumed (the scheduler's rules, ``RowScheduler._engine_jobs``): a score or pv job starts only
    when ``issue_free``, never both at once; one without keys only while that kind is not active;
    ``nonzero``/``single`` are ``n != 0``/``n == 1``, ``n <= max_tokens``; a score job only while
    fewer than ``row_slots`` are open, a pv job only while fewer than ``pv_queue`` shares are held
    (started, not taken); ``pv_take`` only with a complete share. The exponent jobs, the buffers'
    read data and every other field are free (no property depends on their values).

    The harness keeps a reference of the issuing jobs (a score job of n keys issues K keys a step,
    ``steps`` cycles a step; a pv job ``passes`` passes over its n keys) and asserts: ``active``
    exactly while a beat issues, one job at a time; ``issue_free`` exactly when no beat or a job's
    last beat issues; the engine's job registers and counters (keys, entry, step cycle, pass; the
    look-ahead registers ``score_final_step``, ``pv_entry_ahead``, ``pv_n_is_one``) are the
    reference's. Job accounting (``Outstanding``): jobs started minus done >= 0 and equal to the
    issuing job plus the last-beat flags in the pipeline (and the done cycle); ``score_done`` in
    start order with the job's slot (a reference queue of slots); a job without keys is done in the
    cycle after its start; ``score_active``/``pv_active`` equal the OR they hold a cycle ahead, and
    are high exactly while a job of that kind is open. Shares: at most ``pv_queue`` complete and
    held; ``out`` is share ``share_rd`` = the shares taken mod Q, the engine writes share
    ``share_rd + filled`` and never a filled one; the oldest share holds from its ``pv_done`` until
    taken; a share of a pv job without keys reads back as zeros.

    ``completion`` (control only: the share data checks are left out, so Yosys drops the data path):
    every score job is done within ``score_latency`` cycles of its start, every pv job within
    ``pv_latency`` (``SCORE_LATENCY``, ``PV_LATENCY``), by k-induction (the deadline queues hold
    exactly the open jobs) or bounded from reset."""

    #: cycles from a job's start to its done pulse, SMALL_SOFTMAX, one line: a score job of 2 keys issues
    #: 4 beats (2 keys x 2 chunks) in the 4 cycles after its start and is done 8 cycles after its last
    #: (read, operands, the line's 4 stages, the group sum, done); a pv job of 2 keys issues 4 beats
    #: (2 passes) and is done 7 after its last (no group sum). One less fails (tests/test_formal.py)
    SCORE_LATENCY = 12
    PV_LATENCY = 11

    def __init__(self, config: VitcodConfig | None = None, mode: str = "safety", *, dut=None, sparse: bool = False,
                 lines: int = 1, score_latency: int | None = None, pv_latency: int | None = None):
        self.config, self.lines = config or SMALL_SOFTMAX, lines
        self.score_latency = score_latency if score_latency is not None else self.SCORE_LATENCY
        self.pv_latency = pv_latency if pv_latency is not None else self.PV_LATENCY
        super().__init__(dut if dut is not None else Engine(self.config, sparse=sparse, lines=lines), mode)

    def properties(self, m, frag):
        cfg, job = self.config, self.dut.job
        S = cfg.score_split(self.lines)
        K, Q, R = self.lines // S, cfg.pv_queue, cfg.row_slots
        steps, passes = cfg.chunks_per_token // S, -(-cfg.chunks_per_token // self.lines)
        D = LINE_LATENCY
        n_max = cfg.max_tokens

        p = functools.partial(probe, frag)

        # -- the scheduler's rules ----------------------------------------------------------------
        m.d.comb += [
            Assume(~(job.score_start & job.pv_start)),
            Assume(~job.score_start | job.issue_free), Assume(~job.pv_start | job.issue_free),
            Assume(~(job.score_start & ~job.score.nonzero) | ~job.score_active),
            Assume(~(job.pv_start & ~job.pv.nonzero) | ~job.pv_active),
            Assume(job.score.nonzero == (job.score.n != 0)), Assume(job.score.n <= n_max),
            Assume(job.pv.nonzero == (job.pv.n != 0)), Assume(job.pv.single == (job.pv.n == 1)),
            Assume(job.pv.n <= n_max),
        ]

        # -- reference of the issuing jobs ------------------------------------------------------------
        s_on, s_n = Signal(name="eng_score_on"), Signal(range(n_max + 1), name="eng_score_n")
        s_first = Signal(range(n_max + K + 1), name="eng_score_first")
        s_cycle = Signal(range(max(steps, 2)), name="eng_score_cycle")
        s_last = Signal(name="eng_score_last")
        m.d.comb += s_last.eq(s_on & (s_cycle == steps - 1) & (s_first + K >= s_n))
        with m.If(job.score_start):
            m.d.sync += [s_on.eq(job.score.nonzero), s_n.eq(job.score.n), s_first.eq(0), s_cycle.eq(0)]
        with m.Elif(s_on):
            with m.If(s_last):
                m.d.sync += s_on.eq(0)
            with m.If(s_cycle == steps - 1):
                m.d.sync += [s_cycle.eq(0), s_first.eq(s_first + K)]
            with m.Else():
                m.d.sync += s_cycle.eq(s_cycle + 1)
        p_on, p_n = Signal(name="eng_pv_on"), Signal(range(n_max + 1), name="eng_pv_n")
        p_entry = Signal(range(n_max + 1), name="eng_pv_entry")
        p_pass = Signal(range(max(passes, 2)), name="eng_pv_pass")
        p_last = Signal(name="eng_pv_last")
        m.d.comb += p_last.eq(p_on & (p_entry + 1 == p_n) & (p_pass == passes - 1))
        with m.If(job.pv_start):
            m.d.sync += [p_on.eq(job.pv.nonzero), p_n.eq(job.pv.n), p_entry.eq(0), p_pass.eq(0)]
        with m.Elif(p_on):
            with m.If(p_last):
                m.d.sync += p_on.eq(0)
            with m.If(p_entry + 1 == p_n):
                m.d.sync += [p_entry.eq(0), p_pass.eq(p_pass + 1)]
            with m.Else():
                m.d.sync += p_entry.eq(p_entry + 1)
        m.d.comb += [
            Assert(self.dut.active == (s_on | p_on), "engine: active exactly while a beat issues"),
            Assert(~(s_on & p_on), "engine: one job issues at a time"),
            Assert(job.issue_free == ((~s_on | s_last) & (~p_on | p_last)),
                   "engine: issue_free exactly when no beat or a job's last beat issues"),
            Assert(~s_on | ((s_n != 0) & (s_n <= n_max) & (s_first < s_n)), "engine: a score job's keys"),
            Assert(~p_on | ((p_n != 0) & (p_n <= n_max) & (p_entry < p_n)), "engine: a pv job's keys"),
            # the engine's registers are the reference's (the induction's invariants)
            Assert(~s_on | ((p("score_n") == s_n) & (p("score_first") == s_first) & (p("step_cycle") == s_cycle)),
                   "engine: the score job's keys, entry and step cycle"),
            Assert(~p_on | ((p("pv_n") == p_n) & (p("pv_entry") == p_entry) & (p("pv_pass") == p_pass)),
                   "engine: the pv job's keys, entry and pass"),
            Assert(p("pv_n_is_one") == (p("pv_n") == 1), "engine: pv_n_is_one is pv_n == 1"),
            Assert(~p_on | p("entry_reset") | (p("pv_entry_ahead") == (p_entry + 1 == p_n)),
                   "engine: pv_entry_ahead is the entry's last but one"),
        ]
        # the beats (and their jobs' last ones) go down the pipeline from the issue: the read stage's flags
        # are the reference's of the cycle before (the engine's issuing flags have no names to probe)
        was = Signal(4, name="eng_issue_was")
        m.d.sync += was.eq(Cat(s_on, s_last, p_on, p_last))
        m.d.comb += Assert(Cat(p("read_score_valid"), p("read_job_last"), p("read_pv_valid"), p("read_pv_job_last"))
                           == was, "engine: the read stage holds the beat issued the cycle before")
        if steps > 1:
            m.d.comb += Assert(~s_on | (s_cycle == 0) | (p("score_final_step") == (s_first + K >= s_n)),
                               "engine: score_final_step is the step's last")

        # -- score jobs -------------------------------------------------------------------------------
        done_last, done_slot = Signal(name="eng_done_last"), Signal.like(job.done_slot, name="eng_done_slot")
        m.d.sync += [done_last.eq(p(f"job_last{3 + D}")), done_slot.eq(p(f"score_slot{3 + D}"))]
        done_empty = p("done_empty")
        last_flags = [p("read_job_last"), p("op_job_last")] + [p(f"job_last{3 + k}") for k in range(D + 1)]
        score_held = s_on + sum(f.as_unsigned() for f in last_flags) + done_last + done_empty
        scores = Outstanding(m, job.score_start, job.score_done, held=score_held, capacity=R, name="score")
        m.d.comb += Assume(~job.score_start | (scores.count < R))
        slots = RefQueue(m, job.score.slot, push=job.score_start, pop=job.score_done, depth=R, outstanding=scores,
                         name="score")
        empty_started = Signal(name="eng_score_empty_started")
        m.d.sync += empty_started.eq(job.score_start & ~job.score.nonzero)
        valids = [p("read_score_valid"), p("op_score_valid")] + [p(f"score_valid{3 + k}") for k in range(D + 1)]
        m.d.comb += [Assert(~f | v, "score: a last beat is a beat") for f, v in zip(last_flags, valids)]
        m.d.comb += [Assert(~v | s_on | Cat(*last_flags[:i + 1]).any(), "score: a beat's job has its last beat behind")
                     for i, v in enumerate(valids)]
        m.d.comb += [
            Assert(~job.score_done | (job.done_slot == slots.entries[0]), "score: done in start order, with its slot"),
            Assert(job.score_done == (done_last | done_empty), "score: done with a last beat or a job without keys"),
            Assert(done_empty == empty_started, "score: a job without keys is done the cycle after its start"),
            Assert(~done_empty | (job.max == -(1 << (cfg.score_width - 1))),
                   "score: a job without keys has the lowest maximum"),
            Assert(job.score_active == (s_on | Cat(*valids).any() | done_last | done_empty),
                   "score: score_active is the OR it holds"),
            Assert(job.score_active == (scores.count != 0), "score: score_active exactly while a score job is open"),
        ]
        # where each open job's last beat is (oldest first: the done cycle, the stages, the issue)
        # and its slot there (invariants)
        ahead = done_last + done_empty
        m.d.comb += Assert(~done_empty | (p("score_slot") == slots.entries[0]), "score: a job without keys' slot")
        stage_slots = [p("read_score_slot"), p("op_score_slot")] + [p(f"score_slot{3 + k}") for k in range(D + 1)]
        for flag, slot in reversed(list(zip(last_flags, stage_slots))):
            m.d.comb += Assert(~flag | (slot == mux_tree(slots.entries, ahead[:log2_ceil(R)])),
                               "score: a last beat carries its job's slot")
            ahead = ahead + flag
        issuing = Signal(range(R + 1), name="eng_score_ahead")
        m.d.comb += issuing.eq(ahead)
        m.d.comb += Assert(~s_on | (p("score_slot") == mux_tree(slots.entries, issuing[:log2_ceil(R)])),
                           "score: the issuing job's slot")

        # -- pv jobs and shares -----------------------------------------------------------------------
        pv_last_flags = [p("read_pv_job_last"), p("op_pv_job_last")] + [p(f"pv_job_last{3 + k}") for k in range(D)]
        pv_done_last, zero_out = p("pv_done_last"), p("zero_out")
        pv_held = p_on + sum(f.as_unsigned() for f in pv_last_flags) + pv_done_last + zero_out
        pvs = Outstanding(m, job.pv_start, job.pv_done, held=pv_held, capacity=Q, name="pv")
        pv_empty_started = Signal(name="eng_pv_empty_started")
        m.d.sync += pv_empty_started.eq(job.pv_start & ~job.pv.nonzero)
        pv_valids = [p("read_pv_valid"), p("op_pv_valid")] + [p(f"pv_valid{3 + k}") for k in range(D)]
        m.d.comb += [Assert(~f | v, "pv: a last beat is a beat") for f, v in zip(pv_last_flags, pv_valids)]
        m.d.comb += [Assert(~v | p_on | Cat(*pv_last_flags[:i + 1]).any(), "pv: a beat's job has its last beat behind")
                     for i, v in enumerate(pv_valids)]
        m.d.comb += [
            Assert(zero_out == pv_empty_started, "pv: a job without keys is done the cycle after its start"),
            Assert(job.pv_active == (p_on | Cat(*pv_valids).any() | pv_done_last | zero_out),
                   "pv: pv_active is the OR it holds"),
            Assert(job.pv_active == (pvs.count != 0), "pv: pv_active exactly while a pv job is open"),
        ]
        # complete shares not taken; shares held (pv jobs started, not taken)
        complete = Signal(signed(4 + Q.bit_length()), name="eng_shares_complete")
        m.d.sync += complete.eq(complete + job.pv_done - job.pv_take)
        m.d.comb += Assume(~job.pv_take | (complete > 0))
        shares = Outstanding(m, job.pv_start, job.pv_take, held=pvs.count + complete, capacity=Q, name="shares")
        m.d.comb += Assume(~job.pv_start | (shares.count < Q))
        empty = RefQueue(m, ~job.pv.nonzero, push=job.pv_start, pop=job.pv_take, depth=Q, outstanding=shares,
                         name="shares")
        rd = Signal(range(max(Q, 2)), name="eng_share_rd")
        with m.If(job.pv_take):
            m.d.sync += rd.eq(Mux(rd == Q - 1, 0, rd + 1))
        filled = Signal(range(Q + 2), name="eng_shares_filled")    # complete in the engine (pv_done to come)
        m.d.comb += filled.eq(complete + pv_done_last)
        written = Signal(range(2 * Q + 2), name="eng_share_wr")
        m.d.comb += written.eq(rd + filled)
        m.d.comb += [
            Assert((complete >= 0) & (complete <= Q), "shares: at most pv_queue complete and not taken"),
            Assert(p("share_rd") == rd, "shares: out is the oldest share not taken"),
            Assert(p("share_wr") == Mux(written >= Q, written - Q, written), "shares: written in job order"),
        ]
        if self.mode != "completion":
            # (completion checks control only, so that Yosys drops the data path and the bounded check is quick)
            self._share_data(m, frag, SimpleNamespace(rd=rd, filled=filled, complete=complete, empty=empty, pvs=pvs,
                                                      shares=shares, zero_out=zero_out, pv_valids=pv_valids))
        m.d.comb += [Cover(job.score_done & ~done_empty), Cover(job.pv_done & (complete == Q - 1)),
                     Cover(done_empty), Cover(job.pv_take & empty.entries[0])]

        if self.mode == "completion":
            score_ages = DeadlineQueue(m, push=job.score_start, pops=job.score_done, budget=self.score_latency,
                                       depth=R, name="score_deadline",
                                       message=f"a score job is done within {self.score_latency} cycles of its start")
            pv_ages = DeadlineQueue(m, push=job.pv_start, pops=job.pv_done, budget=self.pv_latency, depth=Q,
                                    name="pv_deadline",
                                    message=f"a pv job is done within {self.pv_latency} cycles of its start")
            m.d.comb += [Assert(score_ages.count == scores.count, "score: the deadline queue holds the open jobs"),
                         Assert(pv_ages.count == pvs.count, "pv: the deadline queue holds the open jobs")]

    def _share_data(self, m, frag, st):
        """The shares' contents: none overwritten before it is taken, the oldest stable until taken, a
        job without keys' zeros (and the invariants that make them inductive)."""
        cfg, job, Q = self.config, self.dut.job, self.config.pv_queue
        rd, filled, complete, empty, pvs = st.rd, st.filled, st.complete, st.empty, st.pvs
        shares, zero_out, pv_valids = st.shares, st.zero_out, st.pv_valids
        p = functools.partial(probe, frag)
        writes = [_port_of(frag, f"line{i}", "vec_valid") for i in range(self.lines)]
        copies = [p(f"zero_out_rep{c}") for c in range(cfg.chunks_per_token)]
        share_regs = [p(f"share{k}") for k in range(Q)]
        out_was, held_was = Signal.like(Value.cast(job.out), name="eng_out_was"), Signal(name="eng_share_held_was")
        m.d.sync += [out_was.eq(job.out), held_was.eq((complete != 0) & ~job.pv_take)]
        m.d.comb += [
            Assert(~(Cat(*writes).any() | zero_out) | (filled < Q), "shares: none overwritten before it is taken"),
            Assert(~Cat(*writes).any() | (pvs.count != 0), "shares: a chunk written only for an open pv job"),
            Assert(Cat(*copies) == Mux(zero_out, (1 << len(copies)) - 1, 0), "shares: zero_out's copies are zero_out"),
            Assert(~held_was | (Value.cast(job.out) == out_was),
                   "shares: the oldest holds from its pv_done until taken"),
            Assert((complete == 0) | ~empty.entries[0] | (Value.cast(job.out) == 0),
                   "shares: a pv job without keys reads back as zeros"),
        ]
        # the lines' stages: a pv beat's flags beside the engine's (a chunk is written from the last stage)
        for i in range(self.lines):
            line = _subfragment(frag, f"line{i}")
            m.d.comb += [Assert(probe(line, f"s{k}_pv") == pv_valids[2 + k], "shares: the lines' pv stages")
                         for k in range(3)]
            m.d.comb += [Assert(probe(line, f"lane{j}_pv") == pv_valids[4], "shares: the lines' pv stages")
                         for j in range(cfg.macs)]
            m.d.comb += Assert(~writes[i] | pv_valids[5], "shares: a chunk written from the lines' last pv stage")
        for j in range(Q):      # every filled share of a job without keys is zeros (invariant)
            at = Signal(range(2 * Q), name=f"eng_share_at{j}")
            m.d.comb += at.eq(rd + j)
            index = Mux(at >= Q, at - Q, at)
            m.d.comb += [
                Assert(~((j < filled) & empty.entries[j]) | (mux_tree(share_regs, index) == 0),
                       "shares: a filled share of a job without keys is zeros"),
                Assert(~((j >= complete) & (j < shares.count) & empty.entries[j]) | (zero_out & (pvs.count == 1)),
                       "shares: a pv job without keys is open only in its zero_out cycle, alone"),
            ]


def _port_of(fragment: Fragment, sub: str, name: str) -> Value:
    """Port ``name`` of the component elaborated as the one submodule called ``sub`` (Amaranth leaves
    a port's signal unnamed, so ``probe`` cannot find it by name)."""
    return Value.cast(getattr(_subfragment(fragment, sub).origins[0], name))


#: A small ViTCoD row scheduler: d = 2, heads of 1..2 query rows, two banks, four row slots.
SMALL_SCHEDULER = VitcodConfig(head_dim=2, max_tokens=2, max_nnz=4, macs=1, dense_lines=1, sparse_lines=1,
                               data_width=16)


class RowSchedulerHarness(Harness):
    """The ViTCoD ``RowScheduler`` alone (hw/vitcod/scheduler.py: heads overlap), by k-induction.

    *Assumed* of its neighbours (every other input free every cycle):

    * the loader (``banks``): a full bank stays full until the scheduler releases it, and is
      empty in the cycle after (it loads again later, in any order, at any time); a head has 1..
      ``max_tokens`` query rows. The scheduler reads a bank's head only when it adopts it;
    * each engine: a ``score_done`` pulse only for a score job started before and not yet done,
      in start order (``done_slot`` the oldest one's slot); a ``pv_done`` only for a pv job
      started and not done; its oldest share (``out``) stable from its ``pv_done`` until taken;
      ``issue_free``, ``score_active``, ``pv_active``, ``max`` free;
    * the softmax: a reciprocal only for a row it took and has not answered, in order;
      ``softmax_rows.ready`` and ``rows.ready`` free.

    The harness counts each stage's rows (``S``/``P`` per engine: score and pv jobs started, ``D``/``F``:
    done; ``M``: rows to the softmax, ``R``: reciprocals back, ``O``: rows out, ``Rel``: rows of the
    released heads) and *asserts*:

    * the heads: the adopted banks form one contiguous segment of the ring from ``oldest`` to
      ``newest``; each adopted bank is full and holds a head of 1..max_tokens rows; a release names
      the oldest adopted bank (full), exactly when its last row goes out;
    * every stage's place: its bank adopted with its row within the head, or it is at the end of
      the head released last (bank ``oldest - 1``); its position in the stream of rows (rows of the
      adopted heads before its own, plus its row) is its count less ``Rel``: each stage takes every
      row of every head once, in order, and never goes back into a head (what ``wrap``'s "not the
      newest" term guards);
    * the order of the stages, per engine: ``O <= F <= P <= R <= M <= D <= S`` (no row out before
      its pv share, no pv job before its reciprocal, no softmax row before both scores, ...),
      ``inflight = S - P <= row_slots``, ``pv_held = P - O <= pv_queue``, ``pv_finished = F - O``;
      each stage's slot its count mod ``row_slots``; the ``scored`` and ``recip_ready`` flags exactly
      the slots of the rows between the counts;
    * a score or pv job starts only for a stage in an adopted head (a pv job with ``inflight > 0``);
    * the stream rules on ``softmax_rows`` and ``rows`` (payload included).

    With tiles (``tiles > 1``, one tile's scheduler) the row merger's ``released`` is assumed only
    for an adopted head whose rows on this tile are all out (``O - Rel`` covers them).

    ``completion`` (bounded, one tile): the neighbours also respond: each engine always free to
    issue (``issue_free`` high, ``score_active``/``pv_active`` low), its oldest open score and pv job
    done within ``env_latency`` cycles, the softmax's reciprocal for its oldest open row within
    ``env_latency`` cycles, ``softmax_rows`` and ``rows`` always ready; the loader still free. Then
    while a head is adopted a row goes out at least every ``latency`` cycles (so a head adopted
    behind ``banks - 1`` others of up to ``max_tokens`` rows is out within ``banks * max_tokens *
    latency`` cycles).

    ``data`` (safety, one tile): also the data of the jobs offered to the engines and of the rows to
    the softmax (keys, CSR bases, maxima, reciprocals), against a row pointer buffer the harness
    models (``_job_data``).
    """

    #: cycles between rows out while a head is adopted, engines and softmax answering within ENV_LATENCY
    #: (SMALL_SCHEDULER: the first row of the first head is out 16 cycles after its adoption at the latest,
    #: score jobs going first, the row pointers read POINTER_LATENCY ahead; 15 fails, tests/test_formal.py;
    #: 13 before the pointer queue)
    LATENCY, ENV_LATENCY = 16, 2

    def __init__(self, config: VitcodConfig | None = None, mode: str = "safety", *, dut=None, tile: int = 0,
                 latency: int | None = None, env_latency: int | None = None, data: bool = False):
        if mode not in HARNESS_MODES:
            raise ValueError(f"harness mode must be one of {', '.join(HARNESS_MODES)}, not {mode!r}")
        self.config = config or SMALL_SCHEDULER
        if mode == "completion" and self.config.tiles != 1:
            raise ValueError("the row scheduler's completion mode is for one tile (with tiles, a head's release "
                             "waits on the other tiles' rows)")
        if data and (mode != "safety" or self.config.tiles != 1):
            raise ValueError("the row scheduler's job data (data=True) is proven in safety mode, one tile (the "
                             "tiles' row pointer memories are not modelled)")
        self.tile, self.data = tile, data
        self.latency = latency if latency is not None else self.LATENCY
        self.env_latency = env_latency if env_latency is not None else self.ENV_LATENCY
        if dut is None:
            dut = RowScheduler(self.config) if self.config.tiles == 1 else RowScheduler(self.config, tile=tile)
        super().__init__(dut, mode)

    def properties(self, m, frag):
        cfg, dut = self.config, self.dut
        B, T, slots, Q = cfg.banks, cfg.tiles, cfg.row_slots, cfg.pv_queue
        local_max = -(-cfg.max_tokens // T)      # a tile's rows of a head, at most
        # the harness's row counters wrap; every position and difference between them stays below half
        W = self.width = (B * local_max + slots + Q).bit_length() + 1
        sb = log2_ceil(slots)
        self.check_ports(m, {}, {"softmax_rows": dut.softmax_rows, "rows": dut.rows})
        adopted = [probe(frag, f"adopted{b}") for b in range(B)]
        nq = [probe(frag, f"nq_local{b}") for b in range(B)]
        heads = [data.View(head_layout(cfg), probe(frag, f"head{b}")) for b in range(B)]
        newest, oldest = probe(frag, "newest"), probe(frag, "oldest")
        banks = dut.banks

        def counter(name, up):
            c = Signal(W, name=f"sched_{name}")
            m.d.sync += c.eq(c + up)
            return c

        def diff(a, b):
            return (a - b)[:W]

        # -- the loader ---------------------------------------------------------------------------
        full_was = Signal(B, name="sched_full_was")
        release_was = Signal(name="sched_release_was")
        release_bank_was = Signal.like(banks.release_bank, name="sched_release_bank_was")
        m.d.sync += [full_was.eq(banks.full), release_was.eq(banks.release),
                     release_bank_was.eq(banks.release_bank)]
        for b in range(B):
            released = release_was & (release_bank_was == b)
            nq_in = banks.heads[b].nq
            m.d.comb += [Assume(~(full_was[b] & ~released) | banks.full[b]),
                         Assume(~released | ~banks.full[b]),
                         Assume((nq_in >= 1) & (nq_in <= cfg.max_tokens)),
                         Assume(banks.heads[b].off < T)]

        # -- counts of every stage ------------------------------------------------------------------
        sm, rows = dut.softmax_rows, dut.rows
        # a row is taken with its last beat (one tile: a beat per transfer) or whole (tiles)
        take = rows.valid & rows.ready & (rows.payload.row_last if T == 1 else 1)
        if T == 1:
            out_beat = probe(frag, "out_beat")
            m.d.comb += [Assert(out_beat < cfg.words_per_token, "scheduler: the output beat within its row"),
                         Assert(probe(frag, "out_row_last") == (out_beat == cfg.words_per_token - 1),
                                "scheduler: the row-last flag is the beat counter's last beat")]
        M = counter("M", sm.valid & sm.ready)
        R = counter("R", dut.recips.valid)
        O = counter("O", take)
        m.d.comb += Assume(~dut.recips.valid | ((diff(M, R) != 0) & (dut.recips.payload.slot == R[:sb])))
        oldest_nq = Signal.like(nq[0], name="sched_oldest_nq")
        m.d.comb += oldest_nq.eq(mux_tree(nq, oldest))
        Rel = counter("Rel", Mux(banks.release, oldest_nq, 0))
        if T > 1:
            # the row merger: a head is released (its last row has left the merger) only once this tile
            # has sent out its rows of it (all tiles adopt every head in the same cycle)
            m.d.comb += Assume(~dut.released | (mux_tree(adopted, oldest) & (diff(O, Rel) >= oldest_nq)))

        walk_names = {"score0": None, "score1": None, "pv0": None, "pv1": None, "softmax": M, "output": O}
        engines = []
        for x, job in enumerate((dut.dense, dut.sparse)):
            e = SimpleNamespace(S=counter(f"S{x}", job.score_start), D=counter(f"D{x}", job.score_done),
                                P=counter(f"P{x}", job.pv_start), F=counter(f"F{x}", job.pv_done), job=job)
            walk_names[f"score{x}"], walk_names[f"pv{x}"] = e.S, e.P
            # the pointer walk is ahead of the score stage by the rows it took and no score job started:
            # those in the two read stages and in the queue
            held = probe(frag, f"pointer_held{x}")
            walk_names[f"pointer{x}"] = (e.S + held)[:W]
            m.d.comb += [
                Assert(held == probe(frag, f"queued{x}") + probe(frag, f"pointer_valid{x}_1")
                       + probe(frag, f"pointer_valid{x}_2"),
                       f"engine {x}: the pointer rows held are in the reads or queued"),
                Assert(held <= POINTER_QUEUE, f"engine {x}: at most POINTER_QUEUE pointer rows held"),
                # the started row's keys go to its slot a cycle after its start: the last row started,
                # not yet done (so no row offered to the softmax has that slot)
                Assert(~probe(frag, f"score_started{x}")
                       | ((probe(frag, f"started_slot{x}") == (e.S - 1)[:sb]) & (diff(e.S, e.D) != 0)),
                       f"engine {x}: a row's keys are written to the slot of the last score job started"),
            ]
            m.d.comb += [Assume(~job.score_done | ((diff(e.S, e.D) != 0) & (job.done_slot == e.D[:sb]))),
                         Assume(~job.pv_done | (diff(e.P, e.F) != 0))]
            # the oldest share is stable from its pv_done until the output stage takes it
            out_was = Signal.like(Value.cast(job.out), name=f"sched_out_was{x}")
            held_was = Signal(name=f"sched_share_held_was{x}")
            m.d.sync += [out_was.eq(job.out), held_was.eq((diff(e.F, O) != 0) & ~take)]
            m.d.comb += Assume(~held_was | (Value.cast(job.out) == out_was))
            engines.append(e)

        # -- the heads ------------------------------------------------------------------------------
        count = Signal(range(B + 1), name="sched_adopted_count")
        m.d.comb += count.eq(sum(a.as_unsigned() for a in adopted))
        ring = [Signal(cfg.bank_bits, name=f"sched_ring{b}") for b in range(B)]    # (b - oldest) mod B
        for b in range(B):
            m.d.comb += ring[b].eq(b - oldest)
            m.d.comb += [
                Assert(adopted[b] == (ring[b] < count),
                       "scheduler: the adopted banks are the ring segment from oldest"),
                Assert(~adopted[b] | banks.full[b], "scheduler: an adopted bank is full"),
                Assert(~adopted[b] | (heads[b].nq >= 1), "scheduler: an adopted head has rows"),
                Assert(heads[b].nq <= cfg.max_tokens, "scheduler: a bank's head has at most max_tokens rows"),
                Assert(nq[b] <= local_max, "scheduler: a tile's rows of a head at most ceil(max_tokens / tiles)"),
            ]
            if T == 1:
                m.d.comb += Assert(nq[b] == heads[b].nq, "scheduler: a bank's row count is its head's")
            else:
                # this tile's first query row of the head and its rows of it, from the head's off
                first = probe(frag, f"first{b}")
                m.d.comb += [
                    Assert(~adopted[b] | (first == (self.tile + T - heads[b].off) % T),
                           "scheduler: a head's first row on this tile from its off"),
                    Assert(~adopted[b] | (nq[b] == (heads[b].nq + (T - 1) - first) // T),
                           "scheduler: this tile's rows of a head"),
                ]
        m.d.comb += [
            Assert((count == 0) | (newest == (oldest + count - 1)[:cfg.bank_bits]),
                   "scheduler: newest ends the segment"),
            Assert((count != 0) | (newest == (oldest - 1)[:cfg.bank_bits]),
                   "scheduler: none adopted: newest just before oldest"),
            Assert(~banks.release | (mux_tree(adopted, oldest) & banks.full.bit_select(oldest, 1)),
                   "scheduler: a release names the oldest adopted (full) bank"),
            Assert(banks.release_bank == oldest, "scheduler: release_bank is the oldest"),
            Assert(banks.release == ((take & rows.payload.head_last) if T == 1 else dut.released),
                   "scheduler: a head is released with its last row"),
            Assert(dut.busy == (count != 0), "scheduler: busy while a head is adopted"),
        ]

        # -- where each stage is --------------------------------------------------------------------
        # rows of the adopted heads before bank b's (in ring order from the oldest)
        before = []
        for b in range(B):
            terms = [Mux(adopted[c] & (ring[c] < ring[b]), nq[c][:W], 0) for c in range(B) if c != b]
            s = Signal(W, name=f"sched_before{b}")
            m.d.comb += s.eq(sum(terms) if terms else 0)
            before.append(s)
        for name, cnt in walk_names.items():
            bank, row = probe(frag, f"{name}_bank"), probe(frag, f"{name}_row")
            slot, in_head = probe(frag, f"{name}_slot"), probe(frag, f"{name}_in_head")
            left = probe(frag, f"{name}_left")
            here = mux_tree(adopted, bank)
            bank_nq = mux_tree(nq, bank)
            pos = Signal(W, name=f"sched_pos_{name}")
            m.d.comb += pos.eq(Mux(here, mux_tree(before, bank) + row[:W], 0))
            m.d.comb += [
                Assert(row <= bank_nq, f"{name}: its row within its head"),
                Assert(left == (bank_nq - row)[:len(left)], f"{name}: counts its head's rows left"),
                Assert(here | ((bank == (oldest - 1)[:cfg.bank_bits]) & (row == bank_nq)),
                       f"{name}: in an adopted head, or at the end of the head released last"),
                Assert(~in_head | here, f"{name}: in_head only in an adopted head"),
                Assert(in_head == (left != 0), f"{name}: in_head is left != 0"),
                Assert(((Rel + pos)[:W]) == cnt, f"{name}: takes every row of the adopted heads once, in order"),
                Assert(slot == cnt[:sb], f"{name}: its slot is its row count mod row_slots"),
            ]
        # -- the order of the stages ----------------------------------------------------------------
        for x, e in enumerate(engines):
            inflight = probe(frag, f"inflight{x}")
            pv_held, pv_finished = probe(frag, f"pv_held{x}"), probe(frag, f"pv_finished{x}")
            gaps = [diff(e.S, e.D), diff(e.D, M), diff(M, R), diff(R, e.P)]
            m.d.comb += [
                Assert(inflight == diff(e.S, e.P), f"engine {x}: inflight = score jobs started - pv jobs started"),
                Assert(inflight <= slots, f"engine {x}: inflight <= row_slots"),
                Assert(sum(g.as_unsigned() for g in gaps) == inflight,
                       f"engine {x}: pv <= reciprocals <= softmax <= scores done <= scores started"),
                Assert(pv_held == diff(e.P, O), f"engine {x}: pv_held = pv jobs started - rows out"),
                Assert(pv_finished == diff(e.F, O), f"engine {x}: pv_finished = pv jobs done - rows out"),
                Assert(diff(e.P, e.F) + pv_finished == pv_held, f"engine {x}: rows out <= pv done <= pv started"),
                Assert(pv_held <= Q, f"engine {x}: at most pv_queue shares held"),
                Assert(~e.job.score_start | (probe(frag, f"score{x}_in_head")
                                             & mux_tree(adopted, probe(frag, f"score{x}_bank"))),
                       f"engine {x}: a score job only for a row of an adopted head"),
                Assert(~e.job.pv_start | ((inflight != 0) & probe(frag, f"pv{x}_in_head")
                                          & mux_tree(adopted, probe(frag, f"pv{x}_bank"))),
                       f"engine {x}: a pv job only for a scored row of an adopted head"),
            ]
            for p in range(slots):
                m.d.comb += [
                    Assert(probe(frag, f"scored{x}_{p}") == ((p - M)[:sb] < diff(e.D, M)),
                           f"engine {x}: scored flags are the rows scored and not at the softmax"),
                    Assert(probe(frag, f"recip_ready{x}_{p}") == ((p - e.P)[:sb] < diff(R, e.P)),
                           f"engine {x}: recip_ready flags are the rows with a reciprocal and no pv job"),
                ]
            started_n = probe(frag, f"started_n{x}")
            m.d.comb += [Assert(probe(frag, f"started_nonzero{x}") == (started_n != 0),
                                f"engine {x}: started_nonzero is started_n != 0"),
                         Assert(probe(frag, f"started_single{x}") == (started_n == 1),
                                f"engine {x}: started_single is started_n == 1")]
            m.d.comb += [Assert(probe(frag, f"queued_nonzero{x}_{k}") == (probe(frag, f"queued_n{x}_{k}") != 0),
                                f"engine {x}: queued_nonzero flags are queued_n != 0") for k in range(POINTER_QUEUE)]
            for p in range(slots):
                row_n = probe(frag, f"row_n{x}_{p}")
                m.d.comb += [Assert(probe(frag, f"row_nonzero{x}_{p}") == (row_n != 0),
                                    f"engine {x}: row_nonzero flags are row_n != 0"),
                             Assert(probe(frag, f"row_single{x}_{p}") == (row_n == 1),
                                    f"engine {x}: row_single flags are row_n == 1")]
            smx_slot = probe(frag, "softmax_slot")
            m.d.comb += Assert(probe(frag, f"softmax_scored{x}") == mux_tree(
                [probe(frag, f"scored{x}_{p}") for p in range(slots)], smx_slot),
                f"engine {x}: softmax_scored is the softmax stage's slot's scored flag")
            # the start decision's registered slot flags (``_slot_lookahead``) are the flags of the slots
            score_slot, pv_slot = probe(frag, f"score{x}_slot"), probe(frag, f"pv{x}_slot")
            pv_n = mux_tree([probe(frag, f"row_n{x}_{p}") for p in range(slots)], pv_slot)
            m.d.comb += [
                Assert(probe(frag, f"slot_scored{x}") == mux_tree([probe(frag, f"scored{x}_{p}") for p in range(slots)],
                                                                  score_slot),
                       f"engine {x}: slot_scored is the score stage's slot's scored flag"),
                Assert(probe(frag, f"slot_ready{x}") == mux_tree([probe(frag, f"recip_ready{x}_{p}")
                                                                  for p in range(slots)], pv_slot),
                       f"engine {x}: slot_ready is the pv stage's slot's recip_ready flag"),
                Assert(probe(frag, f"slot_nonzero{x}") == (pv_n != 0), f"engine {x}: slot_nonzero is row_n != 0"),
                Assert(probe(frag, f"queue_head_nonzero{x}") == mux_tree(
                    [probe(frag, f"queued_nonzero{x}_{k}") for k in range(POINTER_QUEUE)], probe(frag, f"queue_rd{x}")),
                    f"engine {x}: queue_head_nonzero is the oldest queued row's flag"),
                Assert(probe(frag, f"slot_single{x}") == (pv_n == 1), f"engine {x}: slot_single is row_n == 1"),
            ]
        # covers: every bank adopted at once; a bank released, loaded again and its new head released
        # too; heads overlapping (a score stage in a later head while the output is in an earlier one)
        heads_out = Signal(range(B + 2), name="sched_heads_released")
        with m.If(banks.release & (heads_out <= B)):
            m.d.sync += heads_out.eq(heads_out + 1)
        score_bank, out_bank = probe(frag, "score0_bank"), probe(frag, "output_bank")
        m.d.comb += [Cover(count == B), Cover(heads_out == B + 1),
                     Cover(probe(frag, "output_in_head") & probe(frag, "score0_in_head") & (score_bank != out_bank))]
        if self.mode == "completion":
            self._completion(m, engines, M, R, take)
        if self.data:
            self._job_data(m, frag, SimpleNamespace(engines=engines, M=M, R=R, Rel=Rel, before=before,
                                                    adopted=adopted, nq=nq, heads=heads, diff=diff))

    def _job_data(self, m, frag, c):
        """``data``: the jobs' keys, CSR bases, row maxima and reciprocals are their rows'.

        The row pointer buffer is the harness's: per bank ``rp_bank_words`` words, free while the
        bank's head is not adopted (the loader writing them: any contents, the next head's whenever it
        loads again) and fixed while it is; each read port answers the word at the address of its last
        enabled cycle (a synchronous read). The head's G likewise: the harness's copy, taken from the
        loader's head while the bank is not adopted. No pointer values are assumed (the RTL's and the
        reference's sums wrap alike at 16 bits): the loader's checks (``ptr[0] = 0``, never
        decreasing, ``ptr[2 Nq] = nnz``) are not needed.

        The reference of engine x's query row r of bank b (``ptr`` the bank's pointers,
        hw/vitcod/balance.py's half-rows): the Denser Engine (x = 0) ``n = G + ptr[2r + 1] - ptr[2r]``,
        ``base = ptr[2r] - G``, ``prefix = G``; the Sparser Engine ``n = ptr[2r + 2] - ptr[2r + 1]``,
        ``base = ptr[2r + 1]``, ``prefix = 0`` (all mod 2**16). Asserted, per engine:

        * whenever a score job is offered (its stage in a head, the pointer queue not empty; a score
          job starts only then): its ``bank``, ``row``, ``slot`` are the score stage's, its ``n``,
          ``base``, ``prefix`` the row's reference, ``nonzero`` is ``n != 0``;
        * whenever a pv job is offered (its stage in a head, the row's reciprocal in; a pv job starts
          only then): ``bank``, ``slot``, ``n``, ``base``, ``prefix`` likewise, ``nonzero`` and
          ``single`` are ``n != 0`` and ``n == 1``, ``recip`` the reciprocal the softmax returned for
          the row (a reference queue per engine: reciprocals in, pv jobs out);
        * each row to the softmax: ``dense_n``, ``sparse_n`` the row's, ``max`` the larger of the
          two engines' maxima of the row (a reference queue per engine: score jobs done in, rows
          to the softmax out; an engine without keys left out), ``slot`` its count mod row_slots.

        Strengthening invariants (each register holds the reference of the row it is for, the row
        named by its stage's count: positions in the stream of rows less ``Rel``, as the control
        invariants place every stage): the read in flight (the read data's lane, the G beside it),
        the registered pointers, each queued row's ``n`` and base (the ring written after its last
        row), the started row's ``n`` and base, each slot's ``row_n``/``row_base`` for the rows
        between the pv and the score stage, ``row_max`` and ``recip`` for the rows in the queues.
        """
        cfg, dut, W, diff = self.config, self.dut, self.width, c.diff
        B, slots, Q, IW = cfg.banks, cfg.row_slots, POINTER_QUEUE, INDEX_WIDTH
        sb, qb, lg = log2_ceil(slots), log2_ceil(Q), log2_ceil(cfg.indices_per_word)
        words, word_bits = cfg.rp_bank_words, cfg.rp_addr_width - cfg.bank_bits
        fields = ("start", "end", "prefix", "n", "base")
        # -- the row pointer buffer and the heads' G (the loader's, fixed while adopted) -------------
        mem = [[Signal(cfg.data_width, name=f"sched_rp{b}_{w}") for w in range(words)] for b in range(B)]
        g = [Signal(len(Value.cast(c.heads[b].g)), name=f"sched_g{b}") for b in range(B)]
        for b in range(B):
            with m.If(~c.adopted[b]):
                m.d.sync += [w.eq(AnySeq(cfg.data_width)) for w in mem[b]]
                m.d.sync += g[b].eq(dut.banks.heads[b].g)
            m.d.comb += Assert(~c.adopted[b] | (c.heads[b].g == g[b]),
                               "scheduler: an adopted head's G is the one the loader offered")
        for i, port in enumerate(dut.row_ptr):
            addr = Signal.like(port.addr, name=f"sched_rp_addr{i}")
            with m.If(port.en):
                m.d.sync += addr.eq(port.addr)
            word = addr[:word_bits]
            value = mux_tree([mux_tree(mem[b], word) for b in range(B)], addr[word_bits:])
            m.d.comb += Assume((word >= words) | (port.data == value) if words < 1 << word_bits
                               else port.data == value)

        def pointer(b, e):
            w = mem[b][e >> lg]
            return w.word_select(e & ((1 << lg) - 1), IW) if lg else w[:IW]

        refs = {}
        for x in range(2):
            for b in range(B):
                for r in range(cfg.max_tokens):
                    ref = SimpleNamespace(**{f: Signal(IW, name=f"sched_ref{x}_{b}_{r}_{f}") for f in fields})
                    m.d.comb += [ref.start.eq(pointer(b, 2 * r + x)), ref.end.eq(pointer(b, 2 * r + x + 1)),
                                 ref.prefix.eq(g[b] if x == 0 else 0),
                                 ref.n.eq(ref.prefix + ref.end - ref.start), ref.base.eq(ref.start - ref.prefix)]
                    refs[x, b, r] = ref

        def lookup(x, hits, name):
            out = SimpleNamespace(**{f: Signal(IW, name=f"sched_{name}_{f}") for f in fields})
            for (b, r), hit in hits.items():
                with m.If(hit):
                    m.d.comb += [getattr(out, f).eq(getattr(refs[x, b, r], f)) for f in fields]
            return out

        def at(x, count, name):
            """The reference of engine x's row at a stage count (its place in the stream of rows)."""
            offset = Signal(W, name=f"sched_{name}_offset")
            m.d.comb += offset.eq((count - c.Rel)[:W])
            return lookup(x, {(b, r): c.adopted[b] & (r < c.nq[b]) & ((c.before[b] + r)[:W] == offset)
                              for b in range(B) for r in range(cfg.max_tokens)}, name)

        def of(x, bank, row, name):
            """The reference of engine x's row ``row`` of bank ``bank``."""
            return lookup(x, {(b, r): (bank == b) & (row == r) for b in range(B) for r in range(cfg.max_tokens)},
                          name)

        sm = dut.softmax_rows
        recip = [probe(frag, f"recip{p}") for p in range(slots)]
        maxima = []
        for x, e in enumerate(c.engines):
            job = e.job
            # -- the pointer walk's reads and queue ------------------------------------------------
            count, rd, wr = probe(frag, f"queued{x}"), probe(frag, f"queue_rd{x}"), probe(frag, f"queue_wr{x}")
            valid1, valid2 = probe(frag, f"pointer_valid{x}_1"), probe(frag, f"pointer_valid{x}_2")
            m.d.comb += Assert(wr == (rd + count)[:qb], f"engine {x}: the pointer queue is written after its last row")
            read1 = at(x, e.S + count + valid2, f"read{x}_1")
            m.d.comb += Assert(~valid1 | (probe(frag, f"pointer_prefix{x}_1") == read1.prefix),
                               f"engine {x}: the G beside a pointer read is its head's")
            for k, field in enumerate(("start", "end")):
                port, lane = dut.row_ptr[2 * x + k], probe(frag, f"pointer_lane{x}_{k}")
                got = port.data.word_select(lane, IW) if lg else port.data[:IW]
                m.d.comb += Assert(~valid1 | (got == getattr(read1, field)),
                                   f"engine {x}: a pointer read answers its row's {field} pointer")
            read2 = at(x, e.S + count, f"read{x}_2")
            for name, field in ((f"row_start{x}", "start"), (f"row_end{x}", "end"), (f"pointer_prefix{x}_2", "prefix")):
                m.d.comb += Assert(~valid2 | (probe(frag, name) == getattr(read2, field)),
                                   f"engine {x}: the registered pointers are their row's")
            for k in range(Q):
                j = Signal(qb, name=f"sched_queued{x}_{k}_age")
                m.d.comb += j.eq(k - rd)
                ref = at(x, e.S + j, f"queued{x}_{k}")
                for field in ("n", "base"):
                    m.d.comb += Assert(~(j < count) | (probe(frag, f"queued_{field}{x}_{k}") == getattr(ref, field)),
                                       f"engine {x}: each queued row's {field} is its row's")
            # -- the started row and the slots' rows ----------------------------------------------
            started, started_slot = probe(frag, f"score_started{x}"), probe(frag, f"started_slot{x}")
            ref = at(x, e.S - 1, f"started{x}")
            for field in ("n", "base"):
                m.d.comb += Assert(~started | (probe(frag, f"started_{field}{x}") == getattr(ref, field)),
                                   f"engine {x}: the started row's {field} is its row's")
            for p in range(slots):
                j = Signal(sb, name=f"sched_slot{x}_{p}_age")
                m.d.comb += j.eq(p - e.P)
                ref = at(x, e.P + j, f"slot{x}_{p}")
                kept = (j < diff(e.S, e.P)) & ~(started & (started_slot == p))
                for field in ("n", "base"):
                    m.d.comb += Assert(~kept | (probe(frag, f"row_{field}{x}_{p}") == getattr(ref, field)),
                                       f"engine {x}: each slot's row_{field} is its row's")
            # -- row maxima (score jobs done, not yet at the softmax) and reciprocals (pv jobs not
            # started) -----------------------------------------------------------------------------
            maxq = RefQueue(m, job.max, push=job.score_done, pop=sm.valid & sm.ready, depth=slots,
                            outstanding=SimpleNamespace(count=diff(e.D, c.M)), name=f"sched_max{x}")
            recq = RefQueue(m, dut.recips.payload.recip, push=dut.recips.valid, pop=job.pv_start, depth=slots,
                            outstanding=SimpleNamespace(count=diff(c.R, e.P)), name=f"sched_recip{x}")
            row_max = [probe(frag, f"row_max{x}_{p}") for p in range(slots)]
            for j in range(slots):
                m.d.comb += [
                    Assert(~(j < diff(e.D, c.M)) | (mux_tree(row_max, (c.M + j)[:sb]).as_unsigned() == maxq.entries[j]),
                           f"engine {x}: row_max of each row scored, not at the softmax, is its score job's max"),
                    Assert(~(j < diff(c.R, e.P)) | (mux_tree(recip, (e.P + j)[:sb]) == recq.entries[j]),
                           f"engine {x}: recip of each row with a reciprocal, no pv job, is the row's"),
                ]
            maxima.append(maxq.entries[0].as_signed())
            # -- the jobs offered ----------------------------------------------------------------------
            for kind, walk_count, offered in (
                    ("score", e.S, probe(frag, f"score{x}_in_head") & (count != 0)),
                    ("pv", e.P, probe(frag, f"pv{x}_in_head") & (diff(c.R, e.P) != 0))):
                fields_of, start = getattr(job, kind), getattr(job, f"{kind}_start")
                bank, row = probe(frag, f"{kind}{x}_bank"), probe(frag, f"{kind}{x}_row")
                ref = of(x, bank, row, f"{kind}{x}_job")
                checks = [("bank", fields_of.bank == bank), ("slot", fields_of.slot == walk_count[:sb]),
                          ("n", fields_of.n == ref.n), ("base", fields_of.base == ref.base),
                          ("prefix", fields_of.prefix == ref.prefix), ("nonzero", fields_of.nonzero == (ref.n != 0))]
                if kind == "score":
                    checks.append(("row", fields_of.row == row))
                else:
                    checks += [("single", fields_of.single == (ref.n == 1)), ("recip", fields_of.recip == recq.entries[0])]
                m.d.comb += Assert(~start | offered, f"engine {x}: a {kind} job starts only when offered")
                m.d.comb += [Assert(~offered | check, f"engine {x}: an offered {kind} job's {name} is its row's")
                             for name, check in checks]
        # -- rows to the softmax ------------------------------------------------------------------------
        bank, row = probe(frag, "softmax_bank"), probe(frag, "softmax_row")
        dense, sparse = of(0, bank, row, "softmax_dense"), of(1, bank, row, "softmax_sparse")
        m0, m1 = maxima
        expect = Mux(dense.n == 0, m1, Mux((sparse.n == 0) | (m0 > m1), m0, m1))
        m.d.comb += [
            Assert(~sm.valid | (sm.payload.dense_n == dense.n), "softmax row: dense_n is its row's"),
            Assert(~sm.valid | (sm.payload.sparse_n == sparse.n), "softmax row: sparse_n is its row's"),
            Assert(~sm.valid | (sm.payload.max == expect), "softmax row: max is the row's, over both engines"),
            Assert(~sm.valid | (sm.payload.slot == c.M[:sb]), "softmax row: slot is its count mod row_slots"),
        ]

    def _completion(self, m, engines, M, R, take):
        """Responsive neighbours (assumed); a row out at least every ``latency`` cycles while busy."""
        dut, L = self.dut, self.env_latency

        def answered_within(open_, answer, name):
            waited = Signal(range(L + 1), name=f"sched_{name}_waited")
            with m.If(open_ & ~answer):
                with m.If(waited < L):
                    m.d.sync += waited.eq(waited + 1)
            with m.Else():
                m.d.sync += waited.eq(0)
            m.d.comb += Assume(~(open_ & (waited == L - 1)) | answer)

        W = self.width
        for x, e in enumerate(engines):
            job = e.job
            m.d.comb += [Assume(job.issue_free), Assume(~job.score_active), Assume(~job.pv_active)]
            answered_within((e.S - e.D)[:W] != 0, job.score_done, f"score{x}")
            answered_within((e.P - e.F)[:W] != 0, job.pv_done, f"pv{x}")
        answered_within((M - R)[:W] != 0, dut.recips.valid, "softmax")
        m.d.comb += [Assume(dut.softmax_rows.ready), Assume(dut.rows.ready)]
        gap = Signal(range(self.latency + 2), name="sched_rows_gap")
        with m.If(dut.busy & ~take):
            with m.If(gap <= self.latency):
                m.d.sync += gap.eq(gap + 1)
        with m.Else():
            m.d.sync += gap.eq(0)
        m.d.comb += Assert(gap < self.latency,
                           f"a row goes out at least every {self.latency} cycles while a head is adopted")


#: The smallest linear decode datapath: d = 2 (one row group of 2 MACs), one conv tap, one
#: committed token, one-token blocks, one head.
SMALLEST_LINEAR = LinearDecodeConfig(d=2, macs=2, conv_taps=1, max_tokens=1, t_max=1, heads=1)


class LinearDecodeHarness(Harness):
    """The whole linear decode datapath (command control, draft block, state lanes and memory,
    convolution, output stage).

    ``safety`` (k-induction): the host's stream rules assumed on ``i``, the datapath's asserted on
    ``o`` (the token and ``o_last`` stable while stalled); each head's overflow flag sticky until
    reset (the hardware reset, or a ``CMD_RESET`` of that head taken the cycle before); no output
    token before the first command (``quiet_until``).

    ``completion`` (bounded): ``o`` always ready (every command and value free); the k-th block
    that ends (a ``CMD_TOKEN`` beat with ``last`` or the ``t_max``-th token) has its last output
    (``o_last``) out within ``latency`` cycles, the datapath takes a command again (``i.ready``)
    within ``latency`` cycles of taking one, and the outputs never outnumber the tokens of the
    blocks that ended. Only control is observed in this mode (as the ViTCoD harness's)."""

    #: data registers (the draft token, operands, products, sums, the state words, the conv window)
    EXEMPT = (r"\.(block\.block_(write|read)_data\d*|control\.fetch\.(phi_k|phi_q|v)|control\.fetch_(token|group\w*|v_group\d*|state_addr\w*|head\d*)|"
              r"convolution\..*|lanes\.(?!(update|readout)_element|update_valid).*|output\.requant_(?!element).*)$")
    #: the element records down the pipeline (``element_layout``: ``valid`` is bit 0)
    VALID_ONLY = r"(element\d*|fetch\.element|fetch_element|lanes\.numerator)$"
    @staticmethod
    def pipeline_registers(cfg: LinearDecodeConfig) -> list[str]:
        """The element registers down ``cfg``'s pipeline, upstream first (``lanes.numerator`` holds the
        element with its numerator: the element is its first field)."""
        pipe = cfg.pipe
        return ["control.fetch_element", *(f"control.fetch_element{n}" for n in range(2, pipe.fetch_stages)),
                "control.fetch.element", *(f"lanes.lanes_element{n}" for n in range(LANE_FANOUT_LEVELS - 1)),
                *(f"lanes.update_element{n}" for n in range(2, 6)),
                *(f"lanes.readout_element{n}" for n in readout_elements(pipe)), "lanes.numerator",
                *(f"output.requant_element{n}" for n in range(1, pipe.output_stages + 1))]

    #: SMALLEST_LINEAR with o always ready: a one-token block's output leaves pipeline_depth + 2 (28)
    #: cycles after its token; one that waits for a free output half waits for the pipeline of the
    #: block two before it as well: 2 pipeline_depth - 6 (46 with the ECP5's pipelining, depth 26; 28
    #: at depth 17, 34 at 20, 36 at 21, 38 at 22, 40 at 23, 42 at 24, 44 at 25; tests/test_formal.py shows one
    #: less fails). Another configuration's bound is 2 of its pipeline_depth - 6.
    LATENCY = 2 * SMALLEST_LINEAR.pipeline_depth - 6

    def __init__(self, config: LinearDecodeConfig | None = None, mode: str = "safety", *, dut=None,
                 latency: int | None = None, lean: bool | None = None):
        self.config = config or SMALLEST_LINEAR
        self.latency = latency if latency is not None else 2 * self.config.pipeline_depth - 6
        self.pipeline = self.pipeline_registers(self.config)
        self.lean = mode == "completion" if lean is None else lean     # as VitcodAcceleratorHarness's
        super().__init__(dut if dut is not None else LinearDecode(self.config), mode)

    def properties(self, m, frag):
        cfg, dut = self.config, self.dut
        i = dut.i
        lean = self.lean      # control only, as VitcodAcceleratorHarness
        payload = dut.o_last if lean else Cat(Value.cast(dut.o.payload), dut.o_last)
        o = SimpleNamespace(valid=dut.o.valid, ready=dut.o.ready, payload=payload)
        self.check_ports(m, {"i": i}, {"o": o})
        accepted = i.valid & i.ready
        # overflow: a flag falls only after a CMD_RESET of its head (or the hardware reset)
        was = Signal(cfg.heads, name="overflow_was")
        cleared = Signal(cfg.heads, name="overflow_cleared")
        resets = accepted & (i.p.cmd == CMD_RESET)
        m.d.sync += [was.eq(dut.overflow),
                     cleared.eq(Cat(*(resets & (i.p.head == h) for h in range(cfg.heads))))]
        m.d.comb += [Assert((was & ~dut.overflow & ~cleared) == 0, "overflow: sticky until reset"),
                     Cover(dut.overflow != 0)]
        started = Signal(name="first_command_seen")
        with m.If(accepted):
            m.d.sync += started.eq(1)
        m.d.comb += [Assert(started | ~dut.o.valid, "no output beat before the first command"),
                     Cover(dut.o.valid & dut.o.ready & dut.o_last)]
        self.quiet = []
        if not lean:
            self.quiet = quiet_until(m, frag, started, exempt=self.EXEMPT, valid_only=self.VALID_ONLY)
            self._output_buffer(m, frag)
        if self.mode != "completion":
            return
        m.d.comb += Assume(dut.o.ready)
        collected = probe(frag, "collected")
        ends = accepted & (i.p.cmd == CMD_TOKEN) & (i.p.last | (collected == cfg.t_max - 1))
        last_out = dut.o.valid & dut.o.ready & dut.o_last
        DeadlineQueue(m, push=ends, pops=last_out, budget=self.latency, depth=3, name="blocks",
                      message=f"a block's last output leaves within {self.latency} cycles of its last token")
        waiting = Signal(range(self.latency + 1), name="not_ready_for")
        m.d.sync += waiting.eq(Mux(i.ready, 0, Mux(waiting == self.latency, self.latency, waiting + 1)))
        m.d.comb += Assert(waiting < self.latency, f"a command is taken again within {self.latency} cycles")
        owed = Signal(signed(16), name="outputs_owed")
        m.d.sync += owed.eq(owed + Mux(ends, collected + 1, 0) - (dut.o.valid & dut.o.ready))
        m.d.comb += Assert(owed >= 0, "no output beyond the tokens of the blocks that ended")

    def _output_buffer(self, m, frag):
        """The strengthening invariants of the output buffer's stream rule (the emitted half is
        never written, so the token word read from it holds still while ``o`` is stalled): what
        ``LinearOutputHarness`` assumes of the command control, asserted of the whole pipeline.
        Every element in flight that emits writes a half its pass claimed (``busy``); none
        follows its pass's last element into the same half; every element's token is within its
        pass of 1..t_max tokens (so its buffer address is in its half);
        a half is never full and claimed at once; the emitter stays within its pass."""
        cfg = self.config
        regs = registers(frag)
        stages = [data.View(cfg.element_layout, regs[f"dut.{path}"][:Shape.cast(cfg.element_layout).width])
                  for path in self.pipeline]
        busy, full = regs["dut.output.busy"], regs["dut.output.full"]
        tokens = [regs[f"dut.output.half{b}_tokens"] for b in range(2)]
        last_tokens = [regs[f"dut.output.half{b}_last_token"] for b in range(2)]
        half, token = regs["dut.output.emit_half"], regs["dut.output.emit_token"]
        # the command control's pass walk: a pass has 1..t_max tokens and its token index stays
        # within them (0 outside a pass); FSM states in declaration order (IDLE, PASS, HIST)
        fsm, token_now, pass_tokens = (regs[f"dut.control.{name}"] for name in ("fsm_state", "token", "pass_tokens"))
        pending, collected = regs["dut.control.pending"], regs["dut.control.collected"]
        states = 3 if cfg.conv_taps > 1 else 2
        m.d.comb += [
            Assert(fsm < states, f"control: the FSM in one of its {states} states"),
            Assert((pending <= cfg.t_max) & (collected < cfg.t_max), "control: pending block and collected tokens"),
            Assert((fsm != 1) | ((pass_tokens >= 1) & (pass_tokens <= cfg.t_max)), "control: a pass of 1..t_max tokens"),
            Assert(Mux(fsm == 1, token_now < pass_tokens, token_now == 0), "control: the pass token within the pass"),
        ]
        group, column, emit, half_now = (regs[f"dut.control.{name}"] for name in ("group", "column", "pass_emit",
                                                                                   "out_half"))
        m.d.comb += Assert((fsm == 1) | ((group == 0) & (column == 0)), "control: a pass starts at its first element")
        # the pass walk's registered flags (what the start and end decisions read) mirror its counters
        at_start, token_last, column_last, group_last = (
            regs[f"dut.control.pass_{name}"] for name in ("at_start", "token_last", "column_last", "group_last"))
        m.d.comb += [
            Assert((group < cfg.groups) & (column < cfg.columns), "control: the pass walk's counters in range"),
            Assert(at_start == ((group == 0) & (column == 0) & (token_now == 0)), "control: pass_at_start"),
            Assert(column_last == (column == cfg.columns - 1), "control: pass_column_last"),
            Assert(group_last == (group == cfg.groups - 1), "control: pass_group_last"),
            Assert((fsm != 1) | (token_last == (token_now == pass_tokens - 1)), "control: pass_token_last"),
        ]
        words = cfg.groups * cfg.columns
        if words & (words - 1):         # the state word's counter (only then): group * columns + column
            m.d.comb += Assert(regs["dut.control.pass_word"] == group * cfg.columns + column, "control: pass_word")
        # the pass being issued, as a stage in front of the pipeline: past its first element it
        # holds its claimed half (``out_half``) and has not issued its last element yet
        issuing = SimpleNamespace(valid=(fsm == 1) & ~((group == 0) & (column == 0) & (token_now == 0)), emit=emit,
                                  pass_end=0, out_half=half_now, tokens=pass_tokens, token=token_now)
        names = ["control (the pass issuing)", *self.pipeline]
        for n, s in enumerate([issuing, *stages]):
            live = s.valid & s.emit
            m.d.comb += [
                Assert(~live | busy.bit_select(s.out_half, 1), f"pipeline {names[n]}: writes a claimed half"),
                Assert(~s.valid | ((s.tokens >= 1) & (s.tokens <= cfg.t_max) & (s.token < s.tokens)),
                       f"pipeline {names[n]}: token within its pass of 1..t_max tokens"),
            ]
            for later in stages[n:]:
                m.d.comb += Assert(~(live & later.valid & later.emit & later.pass_end & (later.out_half == s.out_half)),
                                   f"pipeline {names[n]}: nothing behind its pass's last element")
        _output_halves(m, full, busy, tokens, last_tokens, half, token, cfg.t_max)


#: name -> harness class, for the tests and ``harness(name)``
class _LockstepUnitHarness(Harness):
    """A unit built on one ``LockstepPipeline`` (``hw/common/stream.py``) named ``pipe``: the items it
    holds are its stages' valid bits; one output beat per input beat, in order."""

    pipe = ""

    def held(self, frag, depth: int):
        return sum(Value.cast(probe(frag, f"{self.pipe}{k}_valid")) for k in range(depth))

    def account(self, m, frag, accepted, depth: int):
        o = self.dut.o
        out = Outstanding(m, accepted, o.valid & o.ready, held=self.held(frag, depth), capacity=depth,
                          name=self.pipe)
        self.completion(m, out, o)


class GeluUnitHarness(_LockstepUnitHarness):
    """``GeluUnit`` (hw/vit/eltwise.py): six stages that stall together; ``i.ready`` is the
    pipeline's advance. Its constants are free inputs (they hold still in use; the stream rules and
    the accounting do not depend on them)."""

    pipe = "gelu"

    def __init__(self, config: GeluUnitConfig | None = None, mode: str = "safety", *, dut=None):
        config = config or GeluUnitConfig(lanes=1, t_width=2, multiplier_width=2)
        self.config, self.latency = config, config.latency
        super().__init__(dut if dut is not None else GeluUnit(config), mode)

    def properties(self, m, frag):
        i, o = self.dut.i, self.dut.o
        self.check_ports(m, {"i": i}, {"o": o})
        self.account(m, frag, i.valid & i.ready, self.config.latency)


class ResidualAddUnitHarness(_LockstepUnitHarness):
    """``ResidualAddUnit``: ``a`` and ``b`` move together (each ``ready`` waits for the other's
    ``valid``) into three stages that stall together."""

    pipe = "add"

    def __init__(self, config: ResidualAddUnitConfig | None = None, mode: str = "safety", *, dut=None):
        config = config or ResidualAddUnitConfig(lanes=1, a_width=3, b_width=2, out_width=2, multiplier_width=2)
        self.config, self.latency = config, config.latency
        super().__init__(dut if dut is not None else ResidualAddUnit(config), mode)

    def properties(self, m, frag):
        a, b, o = self.dut.a, self.dut.b, self.dut.o
        self.check_ports(m, {"a": a, "b": b}, {"o": o})
        took_a, took_b = a.valid & a.ready, b.valid & b.ready
        m.d.comb += Assert(took_a == took_b, "add: a and b move together")
        self.account(m, frag, took_a, self.config.latency)


def _layernorm_state(m: Module, frag: Fragment, lanes: int, channels) -> SimpleNamespace:
    """A ``LayerNormUnit``'s registers (through ``probe``) and the elements it holds (``held``: the
    front's ``elems`` while it takes a row, the whole row from the statistics to the handover, the
    back's row not yet issued, ``lanes`` per valid output stage); asserts the invariants that make
    its accounting inductive (the FSM in a state, both element counters within the row)."""
    fsm = probe(frag, "layernorm_state")       # IN, STAT, SUM, SQRT, DIV, WAIT, HOLD
    states = fsm_states(fsm)
    IN = states["IN"]
    elems, issuing, o_elems = (probe(frag, name) for name in ("elems", "issuing", "o_elems"))
    valids = [probe(frag, f"out{k}_valid") for k in range(OUTPUT_STAGES)]
    held = (Mux(fsm == IN, elems, channels) + Mux(issuing, channels - o_elems, 0)
            + lanes * sum(Value.cast(v) for v in valids))
    m.d.comb += [
        Assert(fsm < len(states), f"layernorm: the FSM in one of its {len(states)} states"),
        Assert(((elems == 0) | (elems < channels)) & (elems % lanes == 0) & ((fsm == IN) | (elems == 0)),
               "layernorm: the front's element count within the row"),
        Assert(Mux(issuing, (o_elems < channels) & (o_elems % lanes == 0), o_elems == 0),
               "layernorm: the back's element count within the row"),
    ]
    idle = (fsm == IN) & (elems == 0) & ~issuing
    return SimpleNamespace(held=held, idle=idle, empty=idle & ~Cat(*valids).any(), elems=elems, issuing=issuing,
                           o_elems=o_elems)


#: The smallest legal LayerNorm unit: one lane, rows of one channel, the whole square root and the whole
#: reciprocal in one cycle each (the shortest row: 16 cycles), a 1-bit output multiplier.
SMALLEST_LAYERNORM = LayerNormUnitConfig(lanes=1, max_channels=1, isqrt_steps=31, div_bits=48, multiplier_width=1)


class LayerNormUnitHarness(Harness):
    """``LayerNormUnit`` (hw/vit/layernorm.py): rows of ``channels`` elements in, the same out.

    ``safety`` (k-induction): the stream rules assumed on ``i`` and ``param``, asserted on ``o``;
    ``channels`` (a run-time port) legal (a multiple of lanes in [lanes, max_channels]) and still while
    a row is in the unit's front or issued by its back (assumed: the unit's documented contract, here
    weaker: free between rows even while the last row's beats are still in the output pipeline);
    the other constants (``eps``, ``multiplier``, ``shift``) are free every cycle. Elements accepted
    minus elements sent >= 0 ("no output beat without an input") and equal to what the unit holds: the
    front's row (``elems`` while it takes it, the whole row from the statistics to the handover), the
    back's row not yet issued, and the output pipeline's valid stages. There are no error bits.

    ``completion`` (bounded, control only: the payload's rule is the safety proof's): ``o`` always
    ready; the k-th row whose last beat is taken has its last output beat out within ``latency``
    cycles (``DeadlineQueue``; the harness marks the row's last beat as the back issues it and
    carries the mark down a shadow of the lockstep output pipeline). ``latency`` is
    ``row_latency(max_channels) - max_beats``: the cycle model's row, less its input pass."""

    def __init__(self, config: LayerNormUnitConfig | None = None, mode: str = "safety", *, dut=None,
                 latency: int | None = None):
        self.config = config or SMALLEST_LAYERNORM
        self.latency = latency if latency is not None else self.row_bound(self.config)
        super().__init__(dut if dut is not None else LayerNormUnit(self.config), mode)

    @staticmethod
    def row_bound(config: LayerNormUnitConfig) -> int:
        """Cycles from a row's last input beat to its last output beat, rows of ``max_channels``."""
        return config.row_latency(config.max_channels) - config.max_beats

    def properties(self, m, frag):
        cfg, dut = self.config, self.dut
        i, o = dut.i, dut.o
        lean = self.mode == "completion"
        payload = Const(0, 1) if lean else o.payload
        self.check_ports(m, {"i": i, "param": dut.param},
                         {"o": SimpleNamespace(valid=o.valid, ready=o.ready, payload=payload)})
        # the run-time row length: legal, and still while a row is in the front or being issued
        channels = dut.channels
        ln = _layernorm_state(m, frag, cfg.lanes, channels)
        issuing, o_elems, elems = ln.issuing, ln.o_elems, ln.elems
        # idle and taking no beat: a row of one beat is in flight from the cycle after it is taken
        idle_was = Signal(init=1, name="ln_idle_was")      # reset with the unit: idle
        channels_was = Signal.like(channels, name="ln_channels_was")
        m.d.sync += [idle_was.eq(ln.idle & ~(i.valid & i.ready)), channels_was.eq(channels)]
        m.d.comb += [
            Assume((channels >= cfg.lanes) & (channels <= cfg.max_channels) & (channels % cfg.lanes == 0)),
            Assume(idle_was | (channels == channels_was)),
        ]
        # accounting in elements (lanes per beat)
        taken = i.valid & i.ready
        sent = o.valid & o.ready
        Outstanding(m, taken * cfg.lanes, sent * cfg.lanes, held=ln.held, name="layernorm",
                    capacity=2 * cfg.max_channels + OUTPUT_STAGES * cfg.lanes)
        if not lean:
            return
        m.d.comb += Assume(o.ready)
        # the row's last beat, as the back issues it, down a shadow of the output pipeline
        advance = probe(frag, "out_advance")
        marks = [Signal(name=f"ln_last_mark{k}") for k in range(OUTPUT_STAGES)]
        with m.If(advance):
            m.d.sync += marks[0].eq(issuing & (o_elems + cfg.lanes == channels))
            m.d.sync += [marks[k].eq(marks[k - 1]) for k in range(1, OUTPUT_STAGES)]
        row_in = taken & (elems + cfg.lanes == channels)
        DeadlineQueue(m, push=row_in, pops=sent & marks[-1], budget=self.latency, depth=3, name="rows",
                      message=f"a row's last output beat leaves within {self.latency} cycles of its last input beat")


def _matmul_state(m: Module, frag: Fragment, cfg: VitMatmulConfig, groups, o_valid) -> SimpleNamespace:
    """A ``VitMatmul``'s registers (``probe`` on its fragment ``frag``) and the output beats it holds
    (``held``: the issued last beat's remaining groups, one per valid stage carrying a last beat,
    ``c_valid``, ``d_valid``, ``o.valid``, given as ``o_valid``); asserts the invariants that make
    its accounting inductive. ``groups`` is ``G = ceil(rows / P)`` of the tile."""
    st = SimpleNamespace(**{name: probe(frag, name) for name in (
        "run", "cur_valid", "g", "cur_final", "final_taken", "a_valid", "b_valid", "c_valid", "d_valid",
        "load_g", "load_i", "cols", "col_start")})
    cur, a_beat, b_beat = (data.View(cfg.w_layout, probe(frag, name)) for name in ("cur", "a_beat", "b_beat"))
    st.held = (Mux(st.cur_valid & cur.last, groups - st.g, 0) + (st.a_valid & a_beat.last)
               + (st.b_valid & b_beat.last) + st.c_valid + st.d_valid + o_valid)
    st.empty = ~(st.cur_valid | st.a_valid | st.b_valid | st.c_valid | st.d_valid | o_valid)
    st.cur = cur
    m.d.comb += [
        Assert(~st.cur_valid | (st.g < groups), "matmul: the issued group within the tile"),
        Assert(st.cur_valid | (st.g == 0), "matmul: the issue idle at group 0"),
        Assert(~st.cur_valid | st.run, "matmul: a beat issued only in the weight phase"),
        Assert(st.final_taken == (st.cur_valid & st.cur_final), "matmul: the tile's final beat is the one in issue"),
        # a column's beats move in order: behind a beat that is not its column's last, the next beat of
        # the column is in a stage nearer the input, or not taken yet (the column open: ~col_start)
        Assert(~(st.cur_valid & ~cur.last) | ~st.col_start, "matmul: a column open behind its beat in issue"),
        Assert(~(st.a_valid & ~a_beat.last) | st.cur_valid | ~st.col_start, "matmul: a column open behind stage a"),
        Assert(~(st.b_valid & ~b_beat.last) | st.a_valid | st.cur_valid | ~st.col_start,
               "matmul: a column open behind stage b"),
    ]
    return st


#: The smallest legal ViT matmul: one line of one MAC, one row, one input channel, int8 output with a
#: 1-bit requantizer multiplier.
SMALLEST_MATMUL = VitMatmulConfig(lines=1, macs=1, max_rows=1, max_in=1, out_width=8, multiplier_width=1)


class VitMatmulHarness(Harness):
    """``VitMatmul`` (hw/vit/matmul.py): activation tiles on ``x``, weight beats on ``w``, a column's
    ``G = ceil(rows / P)`` output beats on ``o`` after its ``last`` weight beat.

    ``safety`` (k-induction): the stream rules assumed on ``x`` and ``w``, asserted on ``o``; ``rows``
    legal (1..max_rows) and still through a tile's weight phase (``run``: the only time the issue reads
    ``G``; the unit's contract holds it from the tile's first ``x`` beat to its last output beat);
    ``in_features``, ``out_features`` and ``dense`` free every cycle. Output beats owed (``G`` per
    ``last`` weight beat taken) minus beats sent >= 0 ("no output beat without a column") and equal to
    what the pipeline holds (the issued last beat's remaining groups, one per valid stage carrying a
    last beat, ``o.valid``). There are no error bits.

    ``completion`` (bounded, control only): ``o`` always ready; the k-th column whose last weight
    beat is taken has its last output beat out within ``latency`` = ``groups + MATMUL_LATENCY - 1``
    cycles (a mark on the issue of a last beat's last group, carried down a shadow of the pipeline)."""

    def __init__(self, config: VitMatmulConfig | None = None, mode: str = "safety", *, dut=None,
                 latency: int | None = None):
        self.config = config or SMALLEST_MATMUL
        self.latency = latency if latency is not None else self.config.groups + MATMUL_LATENCY - 1
        super().__init__(dut if dut is not None else VitMatmul(self.config), mode)

    def properties(self, m, frag):
        cfg, dut = self.config, self.dut
        o = dut.o
        lean = self.mode == "completion"
        payload = Const(0, 1) if lean else o.payload
        self.check_ports(m, {"x": dut.x, "w": dut.w},
                         {"o": SimpleNamespace(valid=o.valid, ready=o.ready, payload=payload)})
        # the tile's rows: legal, and still through its weight phase
        rows = dut.rows
        groups = Signal(range(cfg.groups + 1), name="mm_groups")
        m.d.comb += groups.eq(sum((rows > k * cfg.lanes).as_unsigned() for k in range(cfg.groups)))
        st = _matmul_state(m, frag, cfg, groups, o.valid)
        run, cur_valid, cur, g = st.run, st.cur_valid, st.cur, st.g
        run_was = Signal(name="mm_run_was")
        rows_was = Signal.like(rows, name="mm_rows_was")
        m.d.sync += [run_was.eq(run), rows_was.eq(rows)]
        m.d.comb += [Assume((rows >= 1) & (rows <= cfg.max_rows)),
                     Assume(~run_was | (rows == rows_was))]
        # accounting in output beats: G per column, owed from its last weight beat
        w = dut.w
        closed = w.valid & w.ready & w.p.last
        Outstanding(m, Mux(closed, groups, 0), o.valid & o.ready, held=st.held, capacity=cfg.groups + 5,
                    name="matmul")
        if not lean:
            return
        m.d.comb += Assume(o.ready)
        advance = ~o.valid | o.ready
        marks = [Signal(name=f"mm_last_mark_{s}") for s in "abcdo"]
        with m.If(advance):
            m.d.sync += marks[0].eq(cur_valid & cur.last & (g == groups - 1))
            m.d.sync += [marks[k].eq(marks[k - 1]) for k in range(1, len(marks))]
        # a column every G cycles: up to latency / G + 1 of them in flight
        DeadlineQueue(m, push=closed, pops=o.valid & o.ready & marks[-1], budget=self.latency,
                      depth=self.latency // cfg.groups + 1, name="columns",
                      message=f"a column's last output beat leaves within {self.latency} cycles of its last weight beat")


#: The smallest legal model accelerator: P = 1 (one line of one MAC), one token, one channel, a LayerNorm
#: of one channel (square root and reciprocal in one cycle each), one buffer tile, a 1-bit requantizer
#: multiplier, no attention unit (ATTENTION is then an unknown opcode: refused with ``error``).
SMALLEST_VITMODEL = VitModelConfig(lines=1, macs=1, max_tokens=1, max_cols=1, ln_channels=1, buffer_tiles=1,
                                   isqrt_steps=31, div_bits=48, multiplier_width=1)


class VitModelAcceleratorHarness(Harness):
    """The model-level ViT accelerator (``hw/vitmodel/accelerator.py``): sequencer, buffer, reader,
    writer, matmul, LayerNorm, GELU and residual-add units.

    Assumed of the host: the stream rules on ``i``; every header taken has the ISA's shapes
    (``program.check_program``: ``rows`` in 1..max_tokens, ``cols`` in 1..max_cols, LAYERNORM's ``cols``
    a multiple of P within ``ln_channels``, MATMUL's ``out_cols`` in 1..max_cols; the hardware sizes
    its counters for them and does not check them). The opcode is free: one the hardware does not
    run is refused (``error``).

    ``safety`` (k-induction): the accelerator's stream rules on ``o``; ``error`` sticky until reset;
    ``o.valid`` only while the sequencer runs a STORE, and the beats out never more than the STOREs
    decoded ask for (``rows * ceil(cols / P)`` each). Strengthening invariants, each asserted: the
    header register holds a legal header, the sequencer's states go with their opcodes, the reader
    and the writer are busy only for their instruction and within its tensors, and every unit holds
    nothing unless its instruction runs, and then the vectors read = written + held by the unit
    (the units' own accounting: ``_layernorm_state``, ``_matmul_state``, the lockstep valid bits).

    ``completion`` (bounded, control only): ``i`` always valid and ``o`` always ready; each MATMUL
    weight column ends (``last``) at its ``cols``-th beat at the latest; the k-th header taken is
    retired (``retired`` counts it) or refused (``error`` rises) within ``latency`` cycles."""

    #: SMALLEST_VITMODEL, host always valid, o always ready: header to retirement of the slowest
    #: instruction, a LAYERNORM (fetch, decode, one gamma/beta beat, the reader's issue, the unit's
    #: 16-cycle row, the write); tests/test_formal.py shows that 19 fails
    LATENCY = 20

    def __init__(self, config: VitModelConfig | None = None, mode: str = "safety", *, dut=None,
                 latency: int | None = None):
        self.config = config or SMALLEST_VITMODEL
        self.latency = latency if latency is not None else self.LATENCY
        super().__init__(dut if dut is not None else VitModelAccelerator(self.config), mode)

    def properties(self, m, frag):
        cfg, dut = self.config, self.dut
        P = cfg.lanes
        i, o = dut.i, dut.o
        lean = self.mode == "completion"
        payload = Const(0, 1) if lean else o.payload
        self.check_ports(m, {"i": i}, {"o": SimpleNamespace(valid=o.valid, ready=o.ready, payload=payload)})
        sticky(m, dut.error, "error")
        seq = probe(frag, "seq_state")
        states = fsm_states(seq)
        FETCH, DECODE, RUN = states["FETCH"], states["DECODE"], states["RUN"]
        layout = vitmodel_header_layout()
        hdr = data.View(layout, probe(frag, "hdr"))
        incoming = data.View(layout, i.payload[:layout.size])
        header_taken = i.valid & i.ready & (seq == FETCH)
        runs = [op for op in Op if op != Op.ATTENTION or cfg.attention is not None]

        def legal(h):
            ln_cols = (h.cols % P == 0) & (h.cols <= cfg.ln_channels)
            mm_cols = (h.out_cols >= 1) & (h.out_cols <= cfg.max_cols)
            return ((h.rows >= 1) & (h.rows <= cfg.max_tokens) & (h.cols >= 1) & (h.cols <= cfg.max_cols) &
                    ((h.opcode != Op.LAYERNORM) | ln_cols) & ((h.opcode != Op.MATMUL) | mm_cols))

        PARAM, ORDER = states["PARAM"], states["ORDER"]
        m.d.comb += [
            Assume(~header_taken | legal(incoming)),
            # strengthening invariants: the header register holds a header the host sent, and the
            # sequencer's states go with their opcodes
            Assert((seq == FETCH) | legal(hdr), "sequencer: the header register holds a legal header"),
            Assert((seq != PARAM) | (hdr.opcode == Op.LAYERNORM), "sequencer: PARAM only for LAYERNORM"),
            Assert((seq != ORDER) | (hdr.opcode == Op.ATTENTION), "sequencer: ORDER only for ATTENTION"),
            Assert((seq != RUN) | Cat(*(hdr.opcode == op for op in runs)).any(),
                   "sequencer: RUN only for an opcode it runs"),
        ]
        rd_valid, rd_n, r_more = probe(frag, "rd_valid"), probe(frag, "rd_n"), probe(frag, "r_more")
        wr_n, w_more = probe(frag, "wr_n"), probe(frag, "w_more")
        op = hdr.opcode
        is_store = op == Op.STORE
        storing = (seq == RUN) & is_store
        # vectors of a row-vector walk (STORE, LAYERNORM, GELU, ADD, LOAD) and of the matmul's walks
        vectors = Signal(32, name="row_vectors")
        m.d.comb += vectors.eq(hdr.rows * ((hdr.cols + P - 1) // P))
        rows_g = (hdr.rows + P - 1) // P
        r_total = Mux(op == Op.MATMUL, rows_g * hdr.cols, vectors)
        w_total = Mux(op == Op.MATMUL, hdr.out_cols * rows_g, vectors)
        if cfg.attention is not None:      # a head's output: N rows of d / P vectors
            w_total = Mux(op == Op.ATTENTION, hdr.rows * (cfg.attention.head_dim // P), w_total)
        owed = Signal(signed(34), name="store_beats_owed")
        sent = o.valid & o.ready
        m.d.sync += owed.eq(owed + Mux((seq == DECODE) & is_store, vectors, 0) - sent)
        m.d.comb += [
            Assert(~o.valid | storing, "no output beat outside a STORE"),
            Assert(owed >= 0, "no output beat beyond what the STOREs ask for"),
            Assert(seq < len(states), f"sequencer: in one of its {len(states)} states"),
            Assert(owed == Mux(storing, vectors - rd_n + rd_valid, 0),
                   "STORE: beats owed = the reader's beats left + the one on offer"),
            Cover(sent),
        ]
        # the reader and the writer: busy only for their instruction, their counts within its tensors
        reads = Cat(*(op == code for code in (Op.STORE, Op.LAYERNORM, Op.GELU, Op.ADD, Op.MATMUL))).any()
        writes = (op != Op.STORE)
        m.d.comb += [
            Assert(~rd_valid | (seq == RUN), "reader: a vector on offer only while an instruction runs"),
            Assert(~r_more | (seq == RUN) | (seq == PARAM), "reader: work left only for the instruction"),
            # (an ATTENTION the unit refuses halts in ERROR with its writer's work left)
            Assert(~w_more | (seq == RUN) | (seq == PARAM) | (seq == ORDER) | (seq == states["ERROR"]),
                   "writer: work left only for the instruction"),
            Assert((seq != PARAM) | ((rd_n == 0) & r_more & (wr_n == 0) & w_more),
                   "LAYERNORM's PARAM: reader and writer at their start"),
            Assert((seq != ORDER) | ((rd_n == 0) & ~r_more & ~rd_valid & (wr_n == 0) & w_more),
                   "ATTENTION's ORDER: the reader idle, the writer at its start"),
            Assert((seq != RUN) | Mux(reads, (rd_n <= r_total) & (r_more == (rd_n < r_total)),
                                      (rd_n == 0) & ~r_more & ~rd_valid),
                   "reader: within its tensor"),
            Assert((seq != RUN) | (w_more == writes) & (~writes | (wr_n < w_total)), "writer: within its tensor"),
        ]
        # the units: each holds vectors only while its instruction runs, and then read = written + held
        held = {}       # opcode -> (vectors its unit holds, the unit empty)
        for code, unit, depth in ((Op.GELU, "gelu", cfg.gelu.latency), (Op.ADD, "add", cfg.add.latency)):
            valids = [probe(frag, f"{unit}{k}_valid") for k in range(depth)]
            held[code] = (sum(Value.cast(v) for v in valids), ~Cat(*valids).any())
        ln = _layernorm_state(m, frag, P, hdr.cols)
        held[Op.LAYERNORM] = (ln.held // P, ln.empty)
        self._matmul(m, frag, hdr, seq == RUN, rows_g, r_total, dict(rd_valid=rd_valid, rd_n=rd_n, r_more=r_more,
                                                                     wr_n=wr_n))
        for code, (items, empty) in held.items():
            running = (seq == RUN) & (op == code)
            m.d.comb += [
                Assert(empty | running, f"{code.name}: its unit holds nothing unless its instruction runs"),
                Assert(~running | (rd_n - rd_valid == wr_n + items), f"{code.name}: vectors read = written + held"),
            ]
        if not lean:
            return
        m.d.comb += [Assume(i.valid), Assume(o.ready)]
        # a weight column ends at its cols-th beat at the latest
        weight = data.View(vitmodel_weight_layout(), i.payload[:vitmodel_weight_layout().size])
        beat = Signal(16, name="weight_beat")
        taking = (seq == RUN) & (hdr.opcode == Op.MATMUL) & i.valid & i.ready
        with m.If(seq == DECODE):
            m.d.sync += beat.eq(0)
        with m.Elif(taking):
            m.d.sync += beat.eq(Mux(weight.last, 0, beat + 1))
        m.d.comb += Assume(~taking | (beat != hdr.cols - 1) | weight.last)
        retired_was = Signal.like(dut.retired, name="retired_was")
        error_was = Signal(name="error_was")
        m.d.sync += [retired_was.eq(dut.retired), error_was.eq(dut.error)]
        answered = (dut.retired != retired_was) | (dut.error & ~error_was)
        DeadlineQueue(m, push=header_taken, pops=answered, budget=self.latency, depth=2, name="instructions",
                      message=f"an instruction retires or is refused within {self.latency} cycles of its header")

    def _matmul(self, m, frag, hdr, run_state, rows_g, r_total, ctl):
        """MATMUL's invariants: the matmul idle unless its instruction runs; while it runs, a tile's
        load (the matmul's load position = the reader's vectors taken), its weight phase (the reader
        done, the matmul's column count = the sequencer's forwarded columns) or its drain (every column
        forwarded), and the output beats written + held by the matmul = G per forwarded column."""
        cfg = self.config
        mmcfg = cfg.matmul
        sub = _subfragment(frag, "matmul")
        o_valid = probe(sub, "o__valid")
        st = _matmul_state(m, sub, mmcfg, rows_g, o_valid)
        fwd = probe(frag, "fwd_cols")
        running = run_state & (hdr.opcode == Op.MATMUL)
        loading = ~st.run & (fwd == 0)
        reader_done = (ctl["rd_n"] == r_total) & ~ctl["rd_valid"] & ~ctl["r_more"]
        at_start = (st.load_g == 0) & (st.load_i == 0)
        m.d.comb += [
            Assert(running | (~st.run & at_start & st.empty & (st.cols == 0) & st.col_start),
                   "MATMUL: the matmul idle unless its instruction runs"),
            Assert(~running | (fwd <= hdr.out_cols), "MATMUL: columns forwarded within the instruction's"),
            Assert(~running | (fwd != hdr.out_cols) | st.col_start, "MATMUL: no column open after the last one"),
            Assert(~running | ~loading | ((st.load_i < hdr.cols) & (st.load_g < rows_g) &
                                          (st.load_g * hdr.cols + st.load_i == ctl["rd_n"] - ctl["rd_valid"]) &
                                          st.empty & (ctl["wr_n"] == 0) & (st.cols == 0)),
                   "MATMUL: loading: the matmul has taken the reader's vectors, nothing computed"),
            Assert(~running | loading | (reader_done & at_start),
                   "MATMUL: past the load the reader is done"),
            Assert(~running | ~st.run | ((st.cols == fwd) & (st.final_taken == (fwd == hdr.out_cols))),
                   "MATMUL: the matmul's columns are the forwarded ones, the final one taken once forwarded"),
            Assert(~running | st.run | loading | ((fwd == hdr.out_cols) & (st.cols == 0)),
                   "MATMUL: after the weight phase every column was forwarded"),
            Assert(~running | (ctl["wr_n"] + st.held == fwd * rows_g),
                   "MATMUL: output beats written + held = G per forwarded column"),
        ]


HARNESSES = {
    "skid_buffer": SkidBufferHarness,
    "requant_line": RequantLineHarness,
    "mac_line": MacLineHarness,
    "output_stage": OutputStageHarness,
    "loader": LoaderHarness,
    "register_bank": RegisterBankHarness,
    "linear_output": LinearOutputHarness,
    "vitcod_accelerator": VitcodAcceleratorHarness,
    "linear_decode": LinearDecodeHarness,
    "gelu_unit": GeluUnitHarness,
    "residual_add_unit": ResidualAddUnitHarness,
    "layernorm_unit": LayerNormUnitHarness,
    "vit_matmul": VitMatmulHarness,
    "vitmodel_accelerator": VitModelAcceleratorHarness,
    "row_scheduler": RowSchedulerHarness,
    "softmax_stage": SoftmaxStageHarness,
    "exp_unit": ExpUnitHarness,
    "engine": EngineHarness,
    "axis_command_input": AxisCommandInputHarness,
    "uart_tx": UartTxHarness,
    "uart_rx": UartRxHarness,
}


def harness(name: str, mode: str = "safety", **kwargs) -> Harness:
    """A harness by name (``HARNESSES``) in ``mode``."""
    return HARNESSES[name](mode=mode, **kwargs)
