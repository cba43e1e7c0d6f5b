"""cocotb stream fuzzing of the ViTCoD accelerator: random command/data streams with resets mid-head.

Each *stream* starts from a reset and sends one to three heads: random good heads (random sizes,
G, sparsity, empty rows, the host's split on or off) and malformed ones (oversize, a bad row pointer,
a bad column index). A third of the streams are **cut**: the data of one head stops at a random beat,
and the next stream resets the accelerator in the middle of that head. Checked per stream:

* nothing hangs: every whole stream completes within a bound computed from its size;
* whole streams: every good head bit-exact against the golden model, nothing else comes out, the
  error bits exactly the OR of the refused heads' verdicts, ``heads_done``/``heads_failed`` exact,
  the accelerator idle at the end;
* cut streams: the heads before the cut as above, nothing of the cut head comes out, the
  accelerator still busy waiting for its data, and the error bits between the verdicts of the
  heads before the cut and those plus the cut head's own (a size refusal is known at the command,
  an index error only once its beat arrives);
* after the reset the next stream's heads are bit-exact again.

Parameters (``ATTNFORGE_TB_PARAMS``): ``config``, ``streams``, ``seed``; ``keep_going`` (the fuzz
benchmark): a failed stream is recorded (``tb.streams.failure``: hang, wrong verdict or wrong output)
and the next one runs, the test failing at the end.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from amaranth.hdl import unsigned
from cocotb.clock import Clock

from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.host import unpack_output

from .streams import StreamBench, StreamSink, StreamSource, failure, reset_quiet
from .vitcod_jobs import bad_head, random_head


def _random_heads(cfg: VitcodConfig, rng: random.Random, nrng) -> list:
    heads = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.3:
            heads.append(bad_head(cfg, nrng, rng.choice(["size", "row_ptr", "col_idx"])))
            continue
        nq, nk = rng.randint(1, 10), rng.randint(1, 10)
        heads.append(random_head(cfg, nrng, nq=nq, nk=nk, g=rng.randint(0, nk), sparsity=rng.random(),
                                 empty_rows=rng.randint(0, 2), balance=rng.choice(["balanced", "none"])))
    return heads


def _budget(cfg: VitcodConfig, heads) -> int:
    """Cycles within which every whole head must be done (loads, compute, output, with margin)."""
    beats = sum(len(h.beats) for h in heads)
    work = sum(20 * h.macs // cfg.total_macs + 400 * h.cmd["nq"] for h in heads if h.expected is not None)
    return 50 * beats + work + 2000


def _check_outputs(cfg, heads, received) -> int:
    """Every good head's rows, in order, bit-exact; returns the beats they account for."""
    pos = 0
    for n, h in enumerate(heads):
        if h.expected is None:
            continue
        nb = h.expected.shape[0] * cfg.words_per_token
        got = unpack_output(received[pos:pos + nb], h.expected.shape[0], cfg)
        assert np.array_equal(got, h.expected), f"head {n} ({h.info}): RTL output differs from the golden model"
        pos += nb
    return pos


async def _stream(dut, cfg, rng, nrng, index: int) -> str:
    """One stream from a reset; returns ``"whole"`` or ``"cut"``."""
    cmd = StreamSource(dut, "cmd", cfg.cmd_layout, idle=rng.choice([0.0, 0.3]), rng=random.Random(rng.random()))
    data = StreamSource(dut, "data", unsigned(cfg.data_width), idle=rng.choice([0.0, 0.3]),
                        rng=random.Random(rng.random()))
    out = StreamSink(dut, "o", unsigned(cfg.data_width), stall=rng.choice([0.0, 0.3]), rng=random.Random(rng.random()))
    bench = StreamBench(dut.clk, [cmd, data, out])
    await reset_quiet(dut, [cmd, data, out])
    heads = _random_heads(cfg, rng, nrng)
    cut_at = rng.randrange(len(heads)) if rng.random() < 1 / 3 else None
    whole = heads if cut_at is None else heads[:cut_at]
    for h in whole:
        cmd.send(h.cmd)
        for b in h.beats:
            data.send(b)
    want = sum(h.expected.shape[0] * cfg.words_per_token for h in whole if h.expected is not None)
    where = f"stream {index} ({[h.info.get('kind', 'good') for h in heads]}, cut at {cut_at})"
    try:
        await bench.run_until(lambda: len(out.received) >= want and cmd.done and data.done, _budget(cfg, whole))
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}; {len(out.received)} of {want} output beats") from None
    failed = sum(1 for h in whole if h.expected is None)
    verdicts = 0
    for h in whole:
        verdicts |= h.error
    if cut_at is None:
        for _ in range(300):      # settle: the last head's completion, a refused head at the end
            if int(dut.heads_done.value) + int(dut.heads_failed.value) == len(heads) and not int(dut.busy.value):
                break
            await bench.step()
        await bench.expect_quiet(out, 16)
        assert _check_outputs(cfg, heads, out.received) == len(out.received)
        assert int(dut.error.value) == verdicts, f"{where}: error {int(dut.error.value):#x}, expected {verdicts:#x}"
        assert int(dut.heads_failed.value) == failed and int(dut.heads_done.value) == len(heads) - failed, where
        assert not int(dut.busy.value), f"{where}: still busy after every head"
        return "whole"
    # the cut head: its command and a random part of its data
    h = heads[cut_at]
    cmd.send(h.cmd)
    for b in h.beats[:rng.randrange(len(h.beats))]:
        data.send(b)
    await bench.run_until(lambda: cmd.done and data.done, 50 * len(h.beats) + 200)
    await bench.expect_quiet(out, 200)      # nothing of the cut head comes out
    assert _check_outputs(cfg, whole, out.received) == len(out.received), where
    error = int(dut.error.value)
    assert error & verdicts == verdicts and error & ~(verdicts | h.error) == 0, \
        f"{where}: error {error:#x}, expected {verdicts:#x} (plus at most {h.error:#x})"
    assert int(dut.busy.value), f"{where}: idle although the cut head's data has not all arrived"
    return "cut"


@cocotb.test()
async def random_streams_with_resets(dut):
    """Random good and malformed heads, a third of the streams cut mid-head and reset."""
    p = json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))
    cfg = VitcodConfig(**p["config"])
    rng = random.Random(p.get("seed", 0))
    nrng = np.random.default_rng(p.get("seed", 0))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    kinds, failures = [], []
    for i in range(p.get("streams", 200)):
        try:
            kinds.append(await _stream(dut, cfg, rng, nrng, i))
        except AssertionError as exc:
            if not p.get("keep_going"):
                raise
            kinds.append("failed")           # the next stream starts from a reset
            failures.append(failure(i, exc))
    report = os.environ.get("ATTNFORGE_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"streams": len(kinds), "whole": kinds.count("whole"), "cut": kinds.count("cut"),
                       "failures": failures}, f)
    assert not failures, f"{len(failures)} of {len(kinds)} streams failed; the first: {failures[0]['message']}"
