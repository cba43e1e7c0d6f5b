"""cocotb testbench of the ViT element-wise units against ``attnforge.int_ops``, bit for bit.

One module for the three designs ``layernorm-unit``, ``gelu-unit`` and
``residual-add-unit`` (``hw/vit/``): the configuration in ``ATTNFORGE_TB_PARAMS``
says which unit this is (its fields differ), and the one test runs that unit's
rounds. Every round draws new constants (loaded through the unit's ports or
constant stream) and new inputs, edge cases first; odd rounds put random idle
cycles on the inputs and random backpressure on the output. The first round runs
with neither and checks the measured cycles against the unit's cycle model; they
go to ``ATTNFORGE_REPORT`` (``attnforge sim <design>`` prints them as
``measured``). ``rounds`` in the parameters sets how many rounds run (default 6).
"""

from __future__ import annotations

import json
import math
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock

from attnforge.formats.digest import output_digest
from attnforge.hw.vit.eltwise import GeluUnitConfig, ResidualAddUnitConfig
from attnforge.hw.vit.layernorm import LayerNormUnitConfig
from attnforge.int_ops import INT16, INT32, ISQRT_INPUT_BITS, LN_FRAC_BITS, gelu_constants
from attnforge.numfmt import INT8, IntFormat, Requantizer

from .streams import StreamBench, StreamSink, StreamSource, reset_quiet


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


def _unit_config(config: dict):
    """The unit's configuration, told apart by a field only it has."""
    if "max_channels" in config:
        return LayerNormUnitConfig(**config)
    if "t_width" in config:
        return GeluUnitConfig(**config)
    if "a_width" in config:
        return ResidualAddUnitConfig(**config)
    raise ValueError(f"not an element-wise unit's configuration: {config}")


def _random_rq(rng: random.Random, scale: float, width: int, out=INT8) -> Requantizer:
    """Mostly ``from_scale(scale * 2**U(-2, 2))`` (outputs that use the range), sometimes raw extremes."""
    pick = rng.random()
    if pick < 0.1:
        return Requantizer((1 << width) - 1, rng.randint(0, 62), out, width)
    if pick < 0.15:
        return Requantizer(rng.randint(0, 3), rng.randint(0, 4), out, width)
    return Requantizer.from_scale(scale * 2 ** rng.uniform(-2, 2), out=out, multiplier_width=width)


def _beats(values, lanes):
    return [[int(v) for v in values[i:i + lanes]] for i in range(0, len(values), lanes)]


async def _stream_round(dut, bench, sources, sink, beats_in, expected, *, max_cycles):
    """Send ``beats_in`` (one list per source), wait for ``len(expected)`` beats, compare, check silence."""
    for source, beats in zip(sources, beats_in):
        for beat in beats:
            source.send(beat)
    start = len(sink.received)
    await bench.run_until(lambda: len(sink.received) - start == len(expected), max_cycles=max_cycles)
    await bench.expect_quiet(sink, 24)
    got = sink.received[start:]
    for n, (g, w) in enumerate(zip(got, expected)):
        assert g == w, f"output beat {n}: RTL {g} != golden {w}"
    return got


# ------------------------------------------------------------------------------------------ LayerNorm

def _ln_rows(rng: random.Random, d: int, count: int) -> list:
    """Edge-case rows first (constant, full-scale, one outlier, small negative), then random ones."""
    lo, hi = INT16.min, INT16.max
    rows = [[rng.choice([lo, hi, 0, -7])] * d,                               # constant: sigma from E alone
            [lo if k % 2 else hi for k in range(d)],                          # the widest variance
            [lo] + [hi] * (d - 1),                                            # one outlier
            [rng.randint(-40, -1) for _ in range(d)]]                         # small, negative
    span = [1, 50, 3000, hi]
    rows += [[rng.randint(-s, min(s, hi)) + rng.randint(-100, 100) * (s < hi) for _ in range(d)]
             for s in (rng.choice(span) for _ in range(count))]
    return [[max(lo, min(hi, v)) for v in row] for row in rows]


def _ln_constants(rng: random.Random, cfg: LayerNormUnitConfig, d: int):
    gamma = [rng.randint(INT16.min, INT16.max) if rng.random() < 0.3 else rng.randint(-2000, 20000) for _ in range(d)]
    beta = [rng.randint(INT32.min, INT32.max) if rng.random() < 0.2 else rng.randint(-1 << 24, 1 << 24)
            for _ in range(d)]
    eps = rng.choice([0, 0, 1, 3, rng.randint(0, 1 << 20), rng.randint(0, (1 << (ISQRT_INPUT_BITS - 1)) - 1)])
    # acc = n g + b with |n| <= 2**15 and |g| around 2**14: int8 at about 2**-22
    rq = _random_rq(rng, 2.0 ** -(LN_FRAC_BITS + 7), cfg.multiplier_width)
    return gamma, beta, eps, rq


async def _layernorm(dut, cfg: LayerNormUnitConfig, rng: random.Random, rounds: int) -> dict:
    report = {}
    for n in range(rounds):
        idle, stall = (0.3, 0.4) if n % 2 else (0.0, 0.0)
        source = StreamSource(dut, "i", cfg.input_layout, idle=idle, rng=random.Random(rng.random()))
        params = StreamSource(dut, "param", cfg.param_layout, idle=idle, rng=random.Random(rng.random()))
        sink = StreamSink(dut, "o", cfg.output_layout, stall=stall, rng=random.Random(rng.random()))
        bench = StreamBench(dut.clk, [source, params, sink])
        await reset_quiet(dut, [source, params, sink])
        d = cfg.max_channels if n == 0 else cfg.lanes * rng.randint(1, cfg.max_beats)
        gamma, beta, eps, rq = _ln_constants(rng, cfg, d)
        cfg.check_constants(gamma, beta, rq, eps)
        dut.channels.value, dut.eps.value = d, eps
        dut.multiplier.value, dut.shift.value = rq.multiplier, rq.shift
        for k, (g, b) in enumerate(zip(_beats(gamma, cfg.lanes), _beats(beta, cfg.lanes))):
            params.send({"index": k, "gamma": g, "beta": b})
        await bench.run_until(lambda: params.done, max_cycles=20 * cfg.max_beats + 20)
        rows = _ln_rows(rng, d, 4)
        want = cfg.golden(np.array(rows), gamma, beta, rq, eps)
        expected = [b for row in want for b in _beats(row, cfg.lanes)]
        beats_in = [b for row in rows for b in _beats(row, cfg.lanes)]
        got = await _stream_round(dut, bench, [source], sink, [beats_in], expected,
                                  max_cycles=8 * cfg.cycles(len(rows), d) + 100)
        if n == 0:   # no idle cycles, no backpressure: the cycle model, row by row
            b = d // cfg.lanes
            first_in = source.transfer_cycles[0]
            periods = [source.transfer_cycles[(r + 1) * b] - source.transfer_cycles[r * b] for r in range(len(rows) - 1)]
            latency = sink.transfer_cycles[b - 1] - first_in + 1
            total = sink.transfer_cycles[-1] - first_in + 1
            assert (latency, set(periods), total) == (cfg.row_latency(d), {cfg.row_period(d)}, cfg.cycles(len(rows), d)), \
                f"D={d}: measured row latency {latency}, periods {periods}, {total} cycles in all; the cycle model " \
                f"says {cfg.row_latency(d)}, {cfg.row_period(d)}, {cfg.cycles(len(rows), d)}"
            report = {"channels": d, "rows": len(rows), "measured_row_latency": latency, "measured_row_period": periods[0],
                      "measured_cycles": total, "model_row_latency": cfg.row_latency(d),
                      "model_row_period": cfg.row_period(d), "model_cycles": cfg.cycles(len(rows), d),
                      "output_digest": output_digest(got, "int64")}
    return report


# ------------------------------------------------------------------------------------------ GELU

def _gelu_constants(rng: random.Random, cfg: GeluUnitConfig):
    tmax, cmax = (1 << cfg.t_width) - 1, (1 << cfg.c_width) - 1
    pick = rng.random()
    if pick < 0.15:
        t, c = rng.choice([(1, 0), (tmax, cmax), (1, cmax), (tmax, 0)])
    elif pick < 0.3:
        t, c = rng.randint(1, tmax), rng.randint(0, cmax)
    else:   # a real input scale whose T fits: T = round(B sqrt 2 / scale)
        lo, hi = math.log2(1.769 * math.sqrt(2) / (tmax + 0.4)), math.log2(1.769 * math.sqrt(2) / 1.5)
        t, c, _ = gelu_constants(2 ** rng.uniform(lo, hi))
    # the inputs reach about min(3T, 2**15) (below); g = q * 2C above T: int8 at about 127 / (2C min(3T, 2**15))
    rq = _random_rq(rng, 127 / (2 * max(c, 1) * min(3 * t, 1 << 15)), cfg.multiplier_width)
    return t, c, rq


async def _gelu(dut, cfg: GeluUnitConfig, rng: random.Random, rounds: int) -> dict:
    report = {}
    for n in range(rounds):
        idle, stall = (0.3, 0.4) if n % 2 else (0.0, 0.0)
        source = StreamSource(dut, "i", cfg.input_layout, idle=idle, rng=random.Random(rng.random()))
        sink = StreamSink(dut, "o", cfg.output_layout, stall=stall, rng=random.Random(rng.random()))
        bench = StreamBench(dut.clk, [source, sink])
        await reset_quiet(dut, [source, sink])
        t, c, rq = _gelu_constants(rng, cfg)
        cfg.check_constants(t, c, rq)
        dut.t.value, dut.c.value, dut.multiplier.value, dut.shift.value = t, c, rq.multiplier, rq.shift
        edges = [INT16.min, INT16.max, 0, 1, -1] + [s * v for s in (1, -1) for v in (t - 1, t, t + 1)]
        values = [v for v in edges if INT16.min <= v <= INT16.max]
        values += [rng.randint(-min(3 * t, INT16.max), min(3 * t, INT16.max)) for _ in range(12 * cfg.lanes)]
        values += [rng.randint(INT16.min, INT16.max) for _ in range(4 * cfg.lanes)]
        values += [0] * (-len(values) % cfg.lanes)
        beats_in = _beats(values, cfg.lanes)
        expected = [cfg.golden(b, t, c, rq) for b in beats_in]
        got = await _stream_round(dut, bench, [source], sink, [beats_in], expected, max_cycles=20 * len(beats_in) + 50)
        if n == 0:
            report = _pipeline_report(cfg, source, sink, got)
    return report


def _pipeline_report(cfg, source, sink, got) -> dict:
    beats = len(got)
    measured = sink.transfer_cycles[-1] - source.transfer_cycles[0] + 1
    assert measured == cfg.cycles(beats), f"measured {measured} cycles for {beats} beats, the model says {cfg.cycles(beats)}"
    return {"beats": beats, "measured_cycles": measured, "model_cycles": cfg.cycles(beats), "latency": cfg.latency,
            "output_digest": output_digest(got, "int64")}


# ------------------------------------------------------------------------------------------ residual add

async def _residual(dut, cfg: ResidualAddUnitConfig, rng: random.Random, rounds: int) -> dict:
    report = {}
    a_fmt, b_fmt = IntFormat(cfg.a_width), IntFormat(cfg.b_width)
    for n in range(rounds):
        idle, stall = (0.3, 0.4) if n % 2 else (0.0, 0.0)
        a_src = StreamSource(dut, "a", cfg.layout(cfg.a_width), idle=idle, rng=random.Random(rng.random()))
        b_src = StreamSource(dut, "b", cfg.layout(cfg.b_width), idle=idle * 1.5, rng=random.Random(rng.random()))
        sink = StreamSink(dut, "o", cfg.layout(cfg.out_width), stall=stall, rng=random.Random(rng.random()))
        bench = StreamBench(dut.clk, [a_src, b_src, sink])
        await reset_quiet(dut, [a_src, b_src, sink])
        # scales a -> out about 1, b -> out about 2**(out - b) (a branch of int8 into the int16 stream)
        rq_a = _random_rq(rng, 2 ** (cfg.out_width - cfg.a_width), cfg.multiplier_width, cfg.wide_format)
        rq_b = _random_rq(rng, 2 ** (cfg.out_width - cfg.b_width - 1), cfg.multiplier_width, cfg.wide_format)
        dut.a_multiplier.value, dut.a_shift.value = rq_a.multiplier, rq_a.shift
        dut.b_multiplier.value, dut.b_shift.value = rq_b.multiplier, rq_b.shift
        count = 16 * cfg.lanes
        a = [a_fmt.min, a_fmt.max, a_fmt.max, a_fmt.min, 0] + [rng.randint(a_fmt.min, a_fmt.max) for _ in range(count)]
        b = [b_fmt.min, b_fmt.max, b_fmt.min, b_fmt.max, 0] + [rng.randint(b_fmt.min, b_fmt.max) for _ in range(count)]
        pad = -len(a) % cfg.lanes
        a, b = a + [0] * pad, b + [0] * pad
        beats_a, beats_b = _beats(a, cfg.lanes), _beats(b, cfg.lanes)
        expected = [[int(v) for v in cfg.golden(np.array(x), rq_a, np.array(y), rq_b)] for x, y in zip(beats_a, beats_b)]
        got = await _stream_round(dut, bench, [a_src, b_src], sink, [beats_a, beats_b], expected,
                                  max_cycles=20 * len(beats_a) + 50)
        if n == 0:
            report = _pipeline_report(cfg, a_src, sink, got)
    return report


@cocotb.test()
async def matches_int_ops(dut):
    """Random constants and inputs, edge cases first, idle cycles and backpressure in odd rounds."""
    params = _params()
    cfg = _unit_config(params["config"])
    rng = random.Random(params.get("seed", 0))
    rounds = params.get("rounds", 6)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    run = {LayerNormUnitConfig: _layernorm, GeluUnitConfig: _gelu, ResidualAddUnitConfig: _residual}[type(cfg)]
    report = await run(dut, cfg, rng, rounds)
    path = os.environ.get("ATTNFORGE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(report, f)
