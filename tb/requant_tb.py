"""cocotb testbench of the requantization stage against ``attnforge.numfmt.Requantizer``."""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from attnforge.hw.common.requant import RequantLineConfig

from .streams import StreamBench, StreamSink, StreamSource


async def _check(dut, cfg, multiplier, shift, values, *, idle, stall, seed):
    rng = random.Random(seed)
    source = StreamSource(dut, "i", cfg.input_layout, idle=idle, rng=random.Random(rng.random()))
    sink = StreamSink(dut, "o", cfg.output_layout, stall=stall, rng=random.Random(rng.random()))
    bench = StreamBench(dut.clk, [source, sink])
    await FallingEdge(dut.clk)
    source.quiet()
    sink.quiet()
    dut.multiplier.value = multiplier
    dut.shift.value = shift
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    golden = cfg.golden(multiplier, shift)
    beats = [values[i:i + cfg.lanes] for i in range(0, len(values), cfg.lanes)]
    for beat in beats:
        source.send(beat)
    await bench.run_until(lambda: len(sink.received) == len(beats), max_cycles=20 * len(beats) + 50)
    await bench.expect_quiet(sink, 16)      # nothing after the last expected beat
    for n, (beat, got) in enumerate(zip(beats, sink.received)):
        want = [golden(v) for v in beat]
        assert got == want, f"m={multiplier} shift={shift} beat {n}: in {beat} RTL {got} != golden {want}"


@cocotb.test()
async def random_settings_and_values(dut):
    """Random multipliers/shifts (incl. 0 and the extremes) on random and extreme inputs."""
    cfg = RequantLineConfig(**json.loads(os.environ["ATTNFORGE_TB_PARAMS"])["config"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    rng = random.Random(json.loads(os.environ["ATTNFORGE_TB_PARAMS"]).get("seed", 0))
    fmt = cfg.in_format
    mmax = (1 << cfg.multiplier_width) - 1
    settings = [(0, 0), (1, 0), (mmax, 0), (mmax, 62), (1, 1), (3, 2)]
    settings += [(rng.randint(0, mmax), rng.randint(0, min(62, cfg.in_width + cfg.multiplier_width)))
                 for _ in range(14)]
    for n, (multiplier, shift) in enumerate(settings):
        values = [fmt.min, fmt.max, 0, -1, 1] + [rng.randint(fmt.min, fmt.max) for _ in range(4 * cfg.lanes)]
        # Exact halves: x * m = (2j + 1) * 2**(shift - 1) exercises round-half-up on both signs.
        if shift and multiplier == 1:
            values += [(1 << (shift - 1)), -(1 << (shift - 1)), 3 << (shift - 1), -(3 << (shift - 1))]
        values = [v for v in values if fmt.min <= v <= fmt.max]
        values += [0] * (-len(values) % cfg.lanes)
        await _check(dut, cfg, multiplier, shift, values, idle=0.3 * (n % 2), stall=0.4 * (n % 3 == 0), seed=n)
