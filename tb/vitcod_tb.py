"""cocotb testbench of the ViTCoD accelerator: heads back to back, RTL against the golden model bit for bit.

The heads come from a job file (``tb/vitcod_jobs.py``) named in
``ATTNFORGE_TB_PARAMS`` (``jobs``), with ``idle`` (probability of an idle cycle
on the command and data streams) and ``stall`` (backpressure on the output).
All commands and data beats are queued at once, so loads of the next head
overlap the current head's computation as they would with a DMA engine. The
report gives each head's cycles (from the previous head's last output beat, or
from the first command for the first head) for the cycle model and the CLI.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from amaranth.hdl import unsigned
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from attnforge.formats.digest import output_digest
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.host import unpack_output

from .streams import StreamBench, StreamSink, StreamSource
from .vitcod_jobs import bad_head, load_jobs, random_head


def default_heads(cfg: VitcodConfig, seed: int) -> list:
    """Heads for ``attnforge sim vitcod`` without a job file: a few random masks and one refused head."""
    rng = np.random.default_rng(seed)
    n = min(cfg.max_tokens, 24)
    heads = [random_head(cfg, rng, nq=n, nk=n, g=g, sparsity=s) for g, s in ((2, 0.5), (0, 0.9), (n, 0.0))]
    heads.append(bad_head(cfg, rng, "col_idx"))
    heads.append(random_head(cfg, rng, nq=max(1, n - 3), nk=n, g=1, sparsity=0.8, empty_rows=2))
    return heads


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


def _state(dut) -> str:
    """The accelerator's status ports, for a failure message (internal signals are not public
    under Verilator; the waveform, ``--waves``, has them all)."""
    names = ["busy", "heads_done", "heads_failed", "error", "cmd__ready", "data__ready", "o__valid"]
    return " ".join(f"{n}={getattr(dut, n).value}" for n in names if hasattr(dut, n))


@cocotb.test()
async def heads_back_to_back(dut):
    """Every head of the job file in one run; outputs bit-exact, refused heads flagged, nothing hangs."""
    p = _params()
    cfg = VitcodConfig(**p["config"])
    heads = load_jobs(p["jobs"]) if "jobs" in p else default_heads(cfg, p.get("seed", 0))
    rng = random.Random(p.get("seed", 0))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    cmd = StreamSource(dut, "cmd", cfg.cmd_layout, idle=p.get("idle", 0.0), rng=random.Random(rng.random()))
    data = StreamSource(dut, "data", unsigned(cfg.data_width), idle=p.get("idle", 0.0),
                        rng=random.Random(rng.random()))
    out = StreamSink(dut, "o", unsigned(cfg.data_width), stall=p.get("stall", 0.0), rng=random.Random(rng.random()))
    bench = StreamBench(dut.clk, [cmd, data, out])

    await FallingEdge(dut.clk)
    cmd.quiet()
    data.quiet()
    out.quiet()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    for h in heads:
        if h.layer_cmd is not None:     # (decoder) the layer load this head reads its Q/K from
            cmd.send(h.layer_cmd)
            for b in h.layer_beats:
                data.send(b)
        cmd.send(h.cmd)
        for b in h.beats:
            data.send(b)
    good = [h for h in heads if h.expected is not None]
    want_beats = sum(h.expected.shape[0] * cfg.words_per_token for h in good)
    replay = sum((h.cmd["nq"] + h.cmd["nk"]) * cfg.words_per_token * h.cmd.get("hc", 0) for h in heads)
    budget = 50 * sum(len(h.beats) + len(h.layer_beats) for h in heads) + 4 * replay \
        + sum(20 * h.macs // cfg.total_macs for h in good) + 400 * sum(h.cmd["nq"] for h in good) + 20000
    try:
        await bench.run_until(lambda: len(out.received) >= want_beats and cmd.done and data.done, budget)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {len(out.received)} of {want_beats} output beats; {_state(dut)}") from None
    # refused commands: heads and layer loads (a good layer load counts in neither)
    failed = sum(1 for h in heads if h.expected is None) + sum(1 for h in heads if h.layer_error)
    n_commands = len(good) + failed
    # let the status settle (the last head's completion, a refused head at the end)
    for _ in range(200):
        if int(dut.heads_done.value) + int(dut.heads_failed.value) == n_commands and not int(dut.busy.value):
            break
        await bench.step()
    await bench.step()

    # ---- checks
    pos = 0
    ends = []
    outputs = []   # every head's RTL output rows, in run order (output_digest)
    for n, h in enumerate(heads):
        if h.expected is None:
            continue
        nb = h.expected.shape[0] * cfg.words_per_token
        got = unpack_output(out.received[pos:pos + nb], h.expected.shape[0], cfg)
        if not np.array_equal(got, h.expected):
            r, c = np.argwhere(got != h.expected)[0]
            raise AssertionError(f"head {n} ({h.info}): RTL O[{r}, {c}] = {got[r, c]}, golden {h.expected[r, c]}; "
                                 f"{int((got != h.expected).sum())} of {got.size} differ")
        outputs.append(got)
        pos += nb
        ends.append(out.transfer_cycles[pos - 1])
    assert len(out.received) == want_beats, f"{len(out.received)} output beats, expected {want_beats}"
    want_err = 0
    for h in heads:
        want_err |= h.error | h.layer_error
    assert int(dut.error.value) == want_err, f"error status {int(dut.error.value):#x}, expected {want_err:#x}"
    assert int(dut.heads_failed.value) == failed, f"heads_failed {int(dut.heads_failed.value)}, expected {failed}"
    assert int(dut.heads_done.value) == len(good), f"heads_done {int(dut.heads_done.value)}, expected {len(good)}"
    assert not int(dut.busy.value), "still busy after every head finished"

    start = cmd.transfer_cycles[0] if cmd.transfer_cycles else 0
    per_head = []
    prev = start
    for h, end in zip(good, ends):
        info = {k: v for k, v in h.info.items() if k != "row_nnz"}
        per_head.append(dict(info, cycles=end - prev, macs=h.macs, dense_macs=h.dense_macs))
        prev = end
    report = os.environ.get("ATTNFORGE_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"heads": per_head, "total_cycles": (ends[-1] - start) if ends else 0,
                       "first_cmd_cycle": start, "error": int(dut.error.value),
                       "output_digest": output_digest(outputs, "int8")}, f)
