"""cocotb testbench of the AXI wrappers (``VitcodAxi``, ``LinearDecodeAxi``): the accelerators through
AXI4-Stream and AXI4-Lite, bit for bit against their golden models, with cocotbext-axi on every bus.

A *workload* is the design's own stimulus turned into AXI4-Stream packets: for
ViTCoD the heads of ``tb/vitcod_jobs.py`` (golden outputs from
``algo/vitcod/golden.py``), for linear decode a program of ``build_program``
(``tb/linear_decode_tb.py``, golden model ``algo/linear/golden.py``). Each
expected output packet (a head's rows, a block's tokens) must arrive as one
``m_axis`` packet (``tlast`` on its last beat), byte for byte. ``AxisMonitor``
checks ``m_axis`` and ``AxiLiteMonitor`` the register bus on every cycle.

Parameters (``ATTNFORGE_TB_PARAMS``): ``design`` (``vitcod`` or
``linear-decode``), ``config`` (the dataclass's fields), ``axis_width``
(linear), ``seed``, ``pause`` (probability of a pause cycle on ``s_axis`` and
of backpressure on ``m_axis``), ``heads`` / ``tokens`` (workload size).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from attnforge.hw.common import PERF_COUNTERS, accelerator_regmap
from attnforge.hw.common.axi import ERR_AXIS_TKEEP, ERR_AXIS_TLAST, register_params
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.axi import default_axis_width
from attnforge.hw.linear.config import REGISTER_CHOICES
from attnforge.hw.linear.cycles import LinearDecodeCycles
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import ideal_cycles, run_cycles
from attnforge.linear_format import CMD_TOKEN

from .axil_monitor import AxiLiteMonitor
from .axis_monitor import AxisMonitor
from .linear_decode_tb import build_program
from .streams import pack
from .vitcod_jobs import bad_head, random_head, shapes_of

OKAY = 0


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


# ------------------------------------------------------------------------------ workloads

@dataclass
class Workload:
    """Input packets, the expected output packets and what the registers should say after them."""

    packets: list                       # bytes per s_axis packet
    outputs: list                       # bytes per expected m_axis packet
    done: int                           # DONE_COUNT after the run
    failed: int                         # FAILED_COUNT
    errors: int                         # STATUS.errors
    model: dict = field(default_factory=dict)   # cycle-model figures of a full-rate run
    completed: list = field(default_factory=list)   # output packets complete after each input packet


def _beat_bytes(value: int, nbytes: int) -> bytes:
    return int(value).to_bytes(nbytes, "little")


def vitcod_workload(cfg: VitcodConfig, seed: int, heads: int, *, errors: bool = True) -> Workload:
    """``heads`` random heads (sizes and sparsities varied; one refused head in the middle with
    ``errors``), each a packet of command beats then data beats."""
    rng = np.random.default_rng(seed)
    n = cfg.max_tokens
    specs = [(n - 1, n, 2, 0.5), (n // 2 + 1, n // 2 + 1, 0, 0.9), (7, 9, 7 if cfg.max_tokens >= 9 else 1, 0.0),
             (5, n, 1, 0.95), (n, n // 2 + 3, 2, 0.8)]
    tbheads = [random_head(cfg, rng, nq=nq, nk=nk, g=min(g, nk), sparsity=s, empty_rows=1)
               for nq, nk, g, s in (specs * heads)[:heads]]
    if errors and heads > 1:
        tbheads.insert(heads // 2, bad_head(cfg, rng, "col_idx"))
    b = cfg.data_bytes
    cmd_bytes = -(-cfg.cmd_layout.size // cfg.data_width) * b
    packets, outputs, completed = [], [], []
    for h in tbheads:
        if h.layer_cmd is not None:
            packets.append(_beat_bytes(pack(cfg.cmd_layout, h.layer_cmd), cmd_bytes)
                           + b"".join(_beat_bytes(x, b) for x in h.layer_beats))
            completed.append(len(outputs))
        packets.append(_beat_bytes(pack(cfg.cmd_layout, h.cmd), cmd_bytes)
                       + b"".join(_beat_bytes(x, b) for x in h.beats))
        if h.expected is not None:
            outputs.append(np.ascontiguousarray(h.expected, np.int8).tobytes())
        completed.append(len(outputs))
    good = [h for h in tbheads if h.expected is not None]
    err = 0
    for h in tbheads:
        err |= h.error | h.layer_error
    shapes = shapes_of(tbheads)
    model = run_cycles(cfg, shapes)
    ideal = sum(ideal_cycles(cfg, s) for s in shapes if s.good and not s.layer)
    return Workload(packets, outputs, len(good), len(tbheads) - len(good), err,
                    {"busy": model["total_cycles"] + 1, "mac_active": model["mac_active_cycles"], "ideal": ideal},
                    completed)


def linear_workload(cfg: LinearDecodeConfig, axis_width: int, seed: int, tokens: int) -> Workload:
    """A random program (decode steps, verify blocks with commits, resets, several heads): one packet
    per command, one expected packet per block."""
    prog = build_program(cfg, seed, tokens)
    nbytes = -(-cfg.input_layout.size // axis_width) * axis_width // 8
    packets = [_beat_bytes(pack(cfg.input_layout, beat), nbytes) for beat in prog.beats]
    outputs, pos = [], 0
    for op in prog.ops:
        if op[0] == "block":
            rows = prog.expected[pos:pos + op[1]]
            outputs.append(np.asarray(rows, np.int8).tobytes())
            pos += op[1]
    # a block's outputs are complete with its last token's command
    completed, blocks = [], 0
    for beat in prog.beats:
        blocks += beat["cmd"] == CMD_TOKEN and beat["last"]
        completed.append(blocks)
    walk = LinearDecodeCycles.of(cfg).walk(prog.ops)
    model = {"busy": max(walk["outputs"][-1] + 1, walk["end"]), "issue": walk["issue"]}
    return Workload(packets, outputs, prog.tokens, 0, int(prog.flags() != 0), model, completed)


# ------------------------------------------------------------------------------ the bench

class AxiTB:
    """Clock, reset, cocotbext-axi source/sink/master, monitors, and the design's workloads."""

    def __init__(self, dut):
        p = _params()
        self.dut, self.p = dut, p
        self.design = p["design"]
        self.seed = p.get("seed", 0)
        if self.design == "vitcod":
            self.cfg = VitcodConfig(**p["config"])
            params = register_params(self.cfg)
        else:
            self.cfg = LinearDecodeConfig(**p["config"])
            self.axis_width = p.get("axis_width") or default_axis_width(self.cfg)
            params = register_params(self.cfg, REGISTER_CHOICES)
        self.regmap = accelerator_regmap(self.design, params)
        self.params = params
        dut.aresetn.value = 0       # before the cocotbext-axi models start: they begin in reset
        cocotb.start_soon(Clock(dut.aclk, 10, unit="ns").start())
        kw = dict(reset=dut.aresetn, reset_active_level=False)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, **kw)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, **kw)
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.aclk, **kw)
        for x in (self.source, self.sink, self.master.write_if, self.master.read_if):
            x.log.setLevel(logging.WARNING)
        self.axil = AxiLiteMonitor(dut, dut.aclk, reset=dut.aresetn, prefix="s_axil_", reset_active_level=False)
        self.axis = AxisMonitor(dut, dut.aclk, "m_axis_", reset=dut.aresetn, reset_active_level=False)

    def workload(self, seed: int | None = None, **kw) -> Workload:
        seed = self.seed if seed is None else seed
        if self.design == "vitcod":
            return vitcod_workload(self.cfg, seed, kw.get("heads", self.p.get("heads", 4)),
                                   errors=kw.get("errors", True))
        return linear_workload(self.cfg, self.axis_width, seed, kw.get("tokens", self.p.get("tokens", 24)))

    async def start(self) -> None:
        """Reset (aresetn low 4 cycles), monitors on, ENABLE = 1."""
        self.dut.aresetn.value = 0
        self.axil.start()
        self.axis.start()
        await ClockCycles(self.dut.aclk, 4)
        await FallingEdge(self.dut.aclk)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 2)
        await self.write("enable", 1)

    def pauses(self, p: float) -> None:
        """Random pause cycles (probability ``p``) on s_axis and backpressure (``min(2 p, 0.7)``: enough to
        fill the output register) on m_axis; 0 turns them off."""
        for x, seed, q in ((self.source, 1, p), (self.sink, 2, min(2 * p, 0.7))):
            if q:
                rng = random.Random(self.seed * 10 + seed)
                x.set_pause_generator(iter(lambda rng=rng, q=q: rng.random() < q, None))
            else:
                x.clear_pause_generator()
                x.pause = False

    async def read(self, name: str) -> int:
        resp = await self.master.read(self.regmap[name].offset, 4)
        assert resp.resp == OKAY, f"read of {name.upper()}: response {resp.resp}"
        return int.from_bytes(resp.data, "little")

    async def write(self, name: str, value: int) -> None:
        resp = await self.master.write(self.regmap[name].offset, int(value).to_bytes(4, "little"))
        assert resp.resp == OKAY, f"write of {name.upper()}: response {resp.resp}"

    async def counters(self) -> dict:
        out = {}
        for name in PERF_COUNTERS:
            lo = await self.read(f"perf_{name}_lo")
            out[name] = (await self.read(f"perf_{name}_hi")) << 32 | lo
        return out

    async def soft_reset(self) -> None:
        await self.write("control", 1)

    def send(self, packets) -> None:
        for pkt in packets:
            self.source.send_nowait(AxiStreamFrame(pkt))

    async def receive(self, outputs, budget: int) -> None:
        """Every expected packet, in order, byte for byte, within ``budget`` cycles each."""
        for n, want in enumerate(outputs):
            frame = None
            for _ in range(budget):
                if not self.sink.empty():
                    frame = self.sink.recv_nowait()
                    break
                await RisingEdge(self.dut.aclk)
            assert frame is not None, f"output packet {n} of {len(outputs)} not there within {budget} cycles"
            got = bytes(frame.tdata)
            assert len(got) == len(want), f"output packet {n}: {len(got)} bytes (up to tlast), expected {len(want)}"
            if got != want:
                at = next(i for i in range(len(got)) if got[i] != want[i])
                raise AssertionError(f"output packet {n}: byte {at} is {got[at]}, golden {want[at]}")

    async def expect_quiet(self, cycles: int) -> None:
        before = self.axis.transfers
        await ClockCycles(self.dut.aclk, cycles)
        assert self.sink.empty() and self.axis.transfers == before, "output beats after the last expected packet"

    async def settle(self, w: Workload) -> None:
        """Wait until the status shows every command finished (not busy, counts reached)."""
        for _ in range(100):
            if (await self.read("status")) & 1 == 0 and await self.read("done_count") == w.done:
                return
        raise AssertionError(f"not idle after the run: STATUS {await self.read('status'):#x}, "
                             f"DONE_COUNT {await self.read('done_count')} (expected {w.done})")

    async def run(self, w: Workload) -> None:
        self.send(w.packets)
        await self.receive(w.outputs, budget=200_000)
        await self.settle(w)
        await self.expect_quiet(40)

    async def check_status(self, w: Workload) -> None:
        status = await self.read("status")
        assert status >> 8 == w.errors, f"STATUS.errors {status >> 8:#x}, expected {w.errors:#x}"
        assert await self.read("done_count") == w.done
        assert await self.read("failed_count") == w.failed
        self.axil.check()
        self.axis.check()


# ------------------------------------------------------------------------------ tests

@cocotb.test()
async def registers_describe_the_configuration(dut):
    """ID, DESIGN, PARAM_COUNT and every PARAM_* read back what the map (the generator's parameters) says."""
    tb = AxiTB(dut)
    await tb.start()
    for reg in tb.regmap:
        if reg.access == "const":
            got = await tb.read(reg.name)
            assert got == reg.reset, f"{reg.name.upper()}: read {got:#x}, expected {reg.reset:#x}"
    for name, value in tb.params.items():
        assert await tb.read(f"param_{name}") == int(value), name
    assert await tb.read("enable") == 1 and await tb.read("status") == 0
    tb.axil.check()


@cocotb.test()
async def bit_exact_under_pauses(dut):
    """m_axis held off until the core stalls, then random pauses on s_axis and backpressure on m_axis: every
    output packet exact; status, counts and the stall counters right."""
    tb = AxiTB(dut)
    await tb.start()
    w = tb.workload()
    # m_axis held off at first, until the outputs back up into the core: STALL_OUT must count then, whatever
    # the pipeline's depth (random backpressure alone may never fill the output buffer of a deep pipeline)
    tb.pauses(tb.p.get("pause", 0.3))
    tb.sink.clear_pause_generator()
    tb.sink.pause = True
    tb.send(w.packets)
    for _ in range(400):
        if await tb.read("perf_stall_out_lo"):
            break
    else:
        raise AssertionError("m_axis held off for 400 register reads: STALL_OUT still 0")
    tb.pauses(tb.p.get("pause", 0.3))           # then random pauses on both streams to the end
    await tb.receive(w.outputs, budget=200_000)
    await tb.settle(w)
    await tb.expect_quiet(40)
    await tb.check_status(w)
    c = await tb.counters()
    assert c["stall_in"] > 0 and c["stall_out"] > 0 and c["mac_active"] > 0 and c["busy"] >= c["mac_active"], c
    assert tb.axis.stalls > 0, "m_axis never backpressured: the pauses did not act"


@cocotb.test()
async def counters_match_the_cycle_model_at_full_rate(dut):
    """No pauses: BUSY, STALL_IN, STALL_OUT, MAC_ACTIVE against the cycle model (module docstrings
    of hw/vitcod/axi.py and hw/linear/axi.py say which figure each one is)."""
    tb = AxiTB(dut)
    await tb.start()
    w = tb.workload(seed=tb.seed + 1, errors=True)
    await tb.run(w)
    await tb.check_status(w)
    c = await tb.counters()
    report = {"counters": c, "model": w.model}
    path = os.environ.get("ATTNFORGE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(report, f)
    assert c["stall_in"] == 0 and c["stall_out"] == 0, c
    if tb.design == "vitcod":
        assert c["busy"] == w.model["busy"], f"BUSY {c['busy']}, cycle model total_cycles + 1 {w.model['busy']}"
        assert c["mac_active"] == w.model["mac_active"], \
            f"MAC_ACTIVE {c['mac_active']}, cycle model mac_active_cycles {w.model['mac_active']}"
        assert w.model["ideal"] <= c["mac_active"] <= c["busy"], (c, w.model)
    else:
        assert c["mac_active"] == w.model["issue"], f"MAC_ACTIVE {c['mac_active']}, model issue {w.model['issue']}"
        assert c["busy"] == w.model["busy"], \
            f"BUSY {c['busy']}, cycle model max(last output + 1, end of the last command) {w.model['busy']}"


@cocotb.test()
async def soft_reset_mid_stream_recovers(dut):
    """A run cut in the middle of a command's data, CONTROL.soft_reset, then a whole run: exact again,
    counts and counters restarted, nothing left over from before."""
    tb = AxiTB(dut)
    await tb.start()
    tb.pauses(0.2)
    first = tb.workload(seed=tb.seed + 2, errors=False)
    # ViTCoD: the first head whole, then the second head's command and half its data; linear: the
    # first half of the program's commands (the state holds committed tokens; a block may be open)
    n = 1 if tb.design == "vitcod" else len(first.packets) // 2
    cut = first.packets[:n]
    if tb.design == "vitcod":
        half = len(first.packets[1]) // 2 // tb.cfg.data_bytes * tb.cfg.data_bytes   # whole beats
        cut.append(first.packets[1][:half])
    tb.send(cut)
    await tb.receive(first.outputs[:first.completed[n - 1]], budget=200_000)
    await ClockCycles(dut.aclk, 30)
    if tb.design == "vitcod":
        status = await tb.read("status")
        assert status & 1, "the accelerator is not busy mid-head: the cut missed"
        # the cut packet's tlast came in the middle of the head's data
        assert status >> 8 == ERR_AXIS_TLAST, f"STATUS {status:#x}: expected ERR_AXIS_TLAST only"
    assert tb.sink.empty() and tb.source.empty()
    await tb.soft_reset()
    await ClockCycles(dut.aclk, 5)
    assert await tb.read("status") == 0 and await tb.read("done_count") == 0
    assert all(v == 0 for v in (await tb.counters()).values()), "counters not cleared by the soft reset"
    second = tb.workload(seed=tb.seed + 3)
    await tb.run(second)
    await tb.check_status(second)


@cocotb.test()
async def tkeep_low_sets_the_error_bit(dut):
    """A beat with a tkeep bit low: used as it is (the output stays exact), STATUS.errors bit 7 set
    and sticky; a soft reset clears it."""
    tb = AxiTB(dut)
    await tb.start()
    w = tb.workload(seed=tb.seed + 4, errors=False)
    first = w.packets[0]
    frame = AxiStreamFrame(first, tkeep=[1] * (len(first) - 1) + [0])   # the last byte's keep bit low
    tb.source.send_nowait(frame)
    tb.send(w.packets[1:])
    await tb.receive(w.outputs, budget=200_000)
    await tb.settle(w)
    assert (await tb.read("status")) >> 8 == w.errors | ERR_AXIS_TKEEP
    await tb.soft_reset()
    assert (await tb.read("status")) >> 8 == 0, "soft reset left the tkeep error bit set"
    tb.axil.check()
    tb.axis.check()
