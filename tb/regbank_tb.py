"""cocotb testbench of ``AcceleratorRegisters`` (the standard register bank) over AXI4-Lite.

The host side is cocotbext-axi's ``AxiLiteMaster``; ``AxiLiteMonitor``
(tb/axil_monitor.py) checks the protocol on every cycle of every test. The
expected values come from the register map description
(``accelerator_regmap``), not from the RTL. Parameters (``ATTNFORGE_TB_PARAMS``):
``design`` and ``params`` as given to ``AcceleratorRegisters``, ``seed``.
"""

import itertools
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from attnforge.hw.common import PERF_COUNTERS, accelerator_regmap

from .axil_monitor import AxiLiteMonitor

OKAY = 0


def _setup():
    params = json.loads(os.environ["ATTNFORGE_TB_PARAMS"])
    return accelerator_regmap(params["design"], params["params"]), random.Random(params.get("seed", 0))


async def _start(dut):
    """Clock, quiet inputs, two cycles of reset; returns (master, monitor)."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("status__busy", "status__errors", "done_count__value", "failed_count__value",
                 *(f"perf__{n}" for n in PERF_COUNTERS)):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    master = AxiLiteMaster(AxiLiteBus.from_entity(dut), dut.clk, dut.rst)
    monitor = AxiLiteMonitor(dut, dut.clk, reset=dut.rst).start()
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return master, monitor


async def _read(master, addr) -> int:
    resp = await master.read(addr, 4)
    assert resp.resp == OKAY, f"read of {addr:#x}: response {resp.resp}, expected OKAY"
    return int.from_bytes(resp.data, "little")


async def _write(master, addr, data: bytes):
    resp = await master.write(addr, data)
    assert resp.resp == OKAY, f"write of {addr:#x}: response {resp.resp}, expected OKAY"


@cocotb.test(timeout_time=200, timeout_unit="us")
async def discover_configuration(dut):
    """A driver's first reads: ID, DESIGN, the parameters; every register's read after reset; unmapped 0."""
    regmap, _ = _setup()
    master, monitor = await _start(dut)
    live = {"status": 1 | 0xA5 << 8, "done_count": 0x12345678, "failed_count": 0x9ABCDEF0}
    dut.status__busy.value, dut.status__errors.value = 1, 0xA5
    dut.done_count__value.value, dut.failed_count__value.value = live["done_count"], live["failed_count"]
    for reg in regmap:
        want = {"const": reg.reset, "rw": reg.reset, "pulse": 0}.get(reg.access, live.get(reg.name, 0))
        got = await _read(master, reg.offset)
        assert got == want, f"{reg.name.upper()} at {reg.offset:#x}: read {got:#010x}, map says {want:#010x}"
    for addr in (regmap.size, regmap.size + 4, (1 << len(dut.araddr)) - 4):
        assert await _read(master, addr) == 0, f"unmapped {addr:#x} must read 0"
    monitor.check()
    assert len(monitor.reads) == len(regmap) + 3 and all(r[2] == OKAY for r in monitor.reads)


@cocotb.test(timeout_time=200, timeout_unit="us")
async def control_enable_and_wstrb(dut):
    """CONTROL pulses one cycle per written 1; ENABLE is read-write; wstrb writes single bytes; RO ignores writes."""
    regmap, _ = _setup()
    master, monitor = await _start(dut)
    pulses = {"soft_reset": [], "start": []}

    async def watch():
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            for name, seen in pulses.items():
                seen.append(int(getattr(dut, f"control__{name}").value))

    cocotb.start_soon(watch())
    await _write(master, regmap["control"].offset, (0b10).to_bytes(4, "little"))
    await _write(master, regmap["control"].offset, (0b01).to_bytes(4, "little"))
    await ClockCycles(dut.clk, 2)
    assert sum(pulses["start"]) == 1 and sum(pulses["soft_reset"]) == 1, pulses
    enable = regmap["enable"].offset
    await _write(master, enable, (1).to_bytes(4, "little"))
    assert await _read(master, enable) == 1 and int(dut.enable__enable.value) == 1
    await _write(master, enable + 1, b"\xff")          # byte 1 only: bit 0 untouched
    assert await _read(master, enable) == 1
    await _write(master, enable, b"\x00")              # byte 0: bit 0 cleared
    assert await _read(master, enable) == 0 and int(dut.enable__enable.value) == 0
    for name in ("id", "status", "param_count"):
        before = await _read(master, regmap[name].offset)
        await _write(master, regmap[name].offset, b"\xff\xff\xff\xff")
        assert await _read(master, regmap[name].offset) == before, f"{name.upper()} changed on a write"
    assert [w[2] for w in monitor.writes[3:5]] == [0b0010, 0b0001], "wstrb of the byte writes"
    monitor.check()


@cocotb.test(timeout_time=500, timeout_unit="us")
async def performance_counters(dut):
    """Each counter counts the cycles its enable is high; LO/HI read; soft reset clears."""
    regmap, rng = _setup()
    master, monitor = await _start(dut)
    patterns = {n: [rng.random() < p for _ in range(200)] for n, p in zip(PERF_COUNTERS, (1.0, 0.3, 0.6, 0.0))}
    for cycle in range(200):
        await FallingEdge(dut.clk)
        for name in PERF_COUNTERS:
            getattr(dut, f"perf__{name}").value = int(patterns[name][cycle])
    await FallingEdge(dut.clk)
    for name in PERF_COUNTERS:
        getattr(dut, f"perf__{name}").value = 0
    for name in PERF_COUNTERS:
        lo = await _read(master, regmap[f"perf_{name}_lo"].offset)
        hi = await _read(master, regmap[f"perf_{name}_hi"].offset)
        assert hi << 32 | lo == sum(patterns[name]), f"PERF_{name.upper()}: {hi << 32 | lo} != {sum(patterns[name])}"
    await _write(master, regmap["control"].offset, (1).to_bytes(4, "little"))
    for name in PERF_COUNTERS:
        assert await _read(master, regmap[f"perf_{name}_lo"].offset) == 0, f"PERF_{name.upper()} after soft reset"
    monitor.check()


@cocotb.test(timeout_time=1000, timeout_unit="us")
async def random_traffic_with_backpressure(dut):
    """Writes and reads with AW, W, AR held back and bready/rready low for stretches; a model of ENABLE."""
    regmap, rng = _setup()
    master, monitor = await _start(dut)
    for channel, pattern in ((master.write_if.aw_channel, [0, 1, 1]), (master.write_if.w_channel, [1, 1, 0, 0, 0]),
                             (master.write_if.b_channel, [1] * 6 + [0]), (master.read_if.ar_channel, [0, 1]),
                             (master.read_if.r_channel, [1] * 4 + [0, 0])):
        channel.set_pause_generator(itertools.cycle(pattern))
    enable, model = regmap["enable"].offset, 0
    readable = [r for r in regmap if r.access in ("const", "rw")]
    for _ in range(60):
        if rng.random() < 0.4:
            value = rng.getrandbits(32)
            await _write(master, enable, value.to_bytes(4, "little"))
            model = value & 1
        else:
            reg = rng.choice(readable)
            want = model if reg.name == "enable" else reg.reset
            assert await _read(master, reg.offset) == want, reg.name
    monitor.check()
    assert len(monitor.writes) + len(monitor.reads) == 60
    # the cases happened: responses waited for bready/rready, AW and W apart, requests waited
    assert min(monitor.stalls[ch] for ch in ("b", "r")) > 0 and monitor.split_writes > 0, \
        (monitor.stalls, monitor.split_writes)


@cocotb.test(timeout_time=50, timeout_unit="us")
async def idle_bus(dut):
    """No requests: the slave raises no response (the monitor's ordering check)."""
    _, monitor = await _start(dut)
    await ClockCycles(dut.clk, 20)
    monitor.check()
