"""cocotb testbench of the MAC line: RTL against the integer golden model, bit for bit.

Run through ``attnforge.sim.runner.run_cocotb`` (see ``tests/rtl/test_mac_line.py``);
the configuration and the seed arrive in ``ATTNFORGE_TB_PARAMS``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from attnforge.algo.mac_line import mac_line_golden
from attnforge.formats.digest import output_digest
from attnforge.hw.mac_line import MacLineConfig

from .streams import StreamBench, StreamSink, StreamSource


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


def _start_clock(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())


class MacLineTB:
    """Owns clock, reset, the input source and the output sink of one MAC line."""

    def __init__(self, dut, *, idle: float, stall: float, seed: int):
        params = _params()
        self.cfg = MacLineConfig(**params.get("config", {}))
        self.dut = dut
        rng = random.Random(seed)
        self.data_rng = random.Random(seed + 1)
        self.source = StreamSource(dut, "i", self.cfg.input_layout, idle=idle, rng=random.Random(rng.random()))
        self.sink = StreamSink(dut, "o", self.cfg.output_layout, stall=stall, rng=random.Random(rng.random()))
        self.bench = StreamBench(dut.clk, [self.source, self.sink])
        self.expected: list[list[int]] = []

    async def reset(self) -> None:
        """Reset the DUT; a test may reset several times on one running clock."""
        await FallingEdge(self.dut.clk)
        self.source.quiet()
        self.sink.quiet()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    def random_vector(self, length: int, extreme: bool = False):
        fmt = self.cfg.operand_format
        if extreme:  # the largest possible sum: min * min in every product
            x = [fmt.min] * length
            w = [[fmt.min] * length for _ in range(self.cfg.macs)]
        else:
            x = [self.data_rng.randint(fmt.min, fmt.max) for _ in range(length)]
            w = [[self.data_rng.randint(fmt.min, fmt.max) for _ in range(length)] for _ in range(self.cfg.macs)]
        return x, w

    def queue_vector(self, x, w) -> None:
        """Send one vector and record the golden model's answer for it."""
        for k, xk in enumerate(x):
            self.source.send({"x": xk, "w": [row[k] for row in w], "last": int(k == len(x) - 1)})
        golden = mac_line_golden(torch.tensor(x), torch.tensor(w), self.cfg.operand_format,
                                 self.cfg.acc_format, self.cfg.max_length)
        self.expected.append([int(v) for v in golden])

    async def drain(self) -> int:
        """Run until every expected result is out, then check that nothing more comes out."""
        beats = self.source.sent + len(self.source.queue)
        cycles = await self.bench.run_until(
            lambda: self.source.done and len(self.sink.received) == len(self.expected),
            max_cycles=50 * (beats + 10))
        await self.bench.expect_quiet(self.sink, self.cfg.latency + 16)
        return cycles

    def check(self) -> None:
        assert len(self.sink.received) == len(self.expected), \
            f"got {len(self.sink.received)} results, expected {len(self.expected)}"
        for n, (got, want) in enumerate(zip(self.sink.received, self.expected)):
            assert got == want, f"vector {n}: RTL {got} != golden {want}"


@cocotb.test()
async def random_vectors_with_idle_and_backpressure(dut):
    """Random data and lengths; random idle cycles on the input, random stalls on the output."""
    _start_clock(dut)
    p = _params()
    seed = p.get("seed", 0)
    for idle, stall in [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.4, 0.6)]:
        tb = MacLineTB(dut, idle=idle, stall=stall, seed=seed)
        await tb.reset()
        max_len = min(tb.cfg.max_length, 24)
        for _ in range(p.get("vectors", 40)):
            tb.queue_vector(*tb.random_vector(tb.data_rng.randint(1, max_len)))
        await tb.drain()
        tb.check()
        seed += 1


@cocotb.test()
async def extreme_sums_at_max_length(dut):
    """min*min products summed over the longest vector the config allows (capped for run time)."""
    _start_clock(dut)
    tb = MacLineTB(dut, idle=0.2, stall=0.2, seed=_params().get("seed", 0) + 100)
    await tb.reset()
    length = min(tb.cfg.max_length, 512)
    tb.queue_vector(*tb.random_vector(length, extreme=True))
    tb.queue_vector(*tb.random_vector(1, extreme=True))
    fmt = tb.cfg.operand_format
    # Alternate extremes so that sums swing between large positive and negative values.
    x = [fmt.max if k % 2 else fmt.min for k in range(length)]
    tb.queue_vector(x, [[fmt.min] * length for _ in range(tb.cfg.macs)])
    await tb.drain()
    tb.check()


@cocotb.test()
async def full_rate_without_stalls(dut):
    """With no idle and no backpressure the line takes one beat every cycle, across vector boundaries."""
    _start_clock(dut)
    p = _params()
    tb = MacLineTB(dut, idle=0.0, stall=0.0, seed=p.get("seed", 0) + 200)
    await tb.reset()
    length = min(tb.cfg.max_length, p.get("rate_length", 32))
    count = p.get("rate_vectors", 16)
    for _ in range(count):
        tb.queue_vector(*tb.random_vector(length))
    await tb.drain()
    tb.check()
    beats = count * length
    first_in = tb.source.transfer_cycles[0]
    last_in = tb.source.transfer_cycles[-1]
    last_out = tb.sink.transfer_cycles[-1]
    assert last_in - first_in == beats - 1, \
        f"{beats} beats took {last_in - first_in + 1} cycles to accept; expected one per cycle"
    # Cycles from the first input transfer to the last result transfer.
    measured = last_out - first_in + 1
    assert measured == beats + tb.cfg.latency, \
        f"measured {measured} cycles, expected {beats} beats + {tb.cfg.latency} latency"
    report = os.environ.get("ATTNFORGE_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"vectors": count, "length": length, "beats": beats,
                       "measured_cycles": measured, "ideal_cycles": beats,
                       "utilization": beats / measured,
                       "cycles_per_dot_product": measured / count,
                       "output_digest": output_digest(tb.sink.received, "int64")}, f)
