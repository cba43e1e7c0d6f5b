"""cocotb stream fuzzing of the linear decode datapath: random programs, a third cut mid-program and reset.

Each *stream* starts from a hardware reset and sends a random program (``build_program``'s random
mode: decode steps, verify blocks with commits of 0..T, command-level resets, taps, over random
heads) with random idle cycles and backpressure. A third of the streams stop at a random input beat;
the next stream resets the datapath in the middle of that program. Checked per stream: whole programs
bit-exact (every output, nothing more, the overflow flags after every beat); cut programs: whatever
came out is the golden model's prefix, the flags after every beat sent match; nothing hangs.

Parameters (``ATTNFORGE_TB_PARAMS``): ``config``, ``streams``, ``seed``; ``keep_going`` (the fuzz
benchmark): a failed program is recorded (``tb.streams.failure``) and the next one runs, the test
failing at the end.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock

from .linear_decode_tb import LinearDecodeTB, build_program
from .streams import failure


@cocotb.test()
async def random_programs_with_resets(dut):
    """Random programs, a third cut at a random beat and reset there; the next one is exact again."""
    p = json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))
    rng = random.Random(p.get("seed", 0))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    kinds, failures = [], []
    for n in range(p.get("streams", 50)):
        try:
            kinds.append(await _program(dut, rng, n))
        except AssertionError as exc:
            if not p.get("keep_going"):
                raise
            kinds.append("failed")           # the next program starts from a reset
            failures.append(failure(n, exc))
    report = os.environ.get("ATTNFORGE_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"streams": len(kinds), "whole": kinds.count("whole"), "cut": kinds.count("cut"),
                       "failures": failures}, f)
    assert not failures, f"{len(failures)} of {len(kinds)} programs failed; the first: {failures[0]['message']}"


async def _program(dut, rng, n) -> str:
    """One program from a reset; returns ``"whole"`` or ``"cut"``."""
    tb = LinearDecodeTB(dut, idle=rng.choice([0.0, 0.3]), stall=rng.choice([0.0, 0.4]),
                        seed=rng.randrange(1 << 30))
    await tb.reset()
    prog = build_program(tb.cfg, rng.randrange(1 << 30), rng.randint(1, 12))
    if rng.random() >= 1 / 3:
        await tb.run(prog)          # bit-exact, nothing more, flags after every beat
        return "whole"
    cut = rng.randrange(len(prog.beats))
    for beat in prog.beats[:cut]:
        tb.source.send(beat)
    tb.monitor.expected.extend(prog.beat_flags[:cut])
    await tb.bench.run_until(lambda: tb.source.done, max_cycles=20 * (cut + 10) * tb.cfg.d * tb.cfg.groups)
    for _ in range(2 * tb.cfg.d * tb.cfg.groups + 12):   # what the beats sent may still bring out
        await tb.bench.step()
    tb.monitor.check(tb.bench.cycle)
    got = tb.sink.received
    assert len(got) <= len(prog.expected), \
        f"stream {n}: {len(got)} outputs, the whole program has {len(prog.expected)}"
    for i, (g, w) in enumerate(zip(got, prog.expected)):
        assert g == w, f"stream {n} (cut at beat {cut}): output {i}: RTL {g} != golden {w}"
    return "cut"
