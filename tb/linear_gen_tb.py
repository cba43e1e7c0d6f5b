"""cocotb co-simulation of a linearized LM generating text with every attention step on the RTL.

The toplevel is ``LinearDecodeStack`` (hw/linear/stack.py): one decode datapath per layer, the
layer's heads time-multiplexed on it. The model's float parts (embeddings, norms, projections, MLP)
run here in PyTorch, position by position (``algo/linear/int_decode.IntegerDecoder``); for every
position and layer the int8 q, k, v of each head go to that layer's instance as a block of one token
followed by ``commit 1``, and the RTL's int8 outputs (not the golden model's) go back into the model.
Beside each instance a ``Program`` (tb/linear_decode_tb.py) keeps the per-head golden models: every
output the RTL gives is compared with the golden one; the run goes on with the RTL's values, so a
mismatch shows in the tokens as well as in ``mismatches``.

Parameters (``ATTNFORGE_TB_PARAMS``): ``checkpoint``, ``calibration`` (``IntegerAttention.to_dict()``
as a JSON file), ``configs`` (one ``LinearDecodeConfig`` dict per instance), ``prompts`` (lists of byte
values), ``tokens`` (greedy tokens per prompt).

``generate`` resets every head of every layer between prompts (RESET keeps the taps). Report
(``ATTNFORGE_REPORT``): ``tokens`` (per prompt), ``outputs``, ``mismatches`` and the first few, ``cycles_by_layer`` (from a layer's first beat to its last output,
summed over positions), ``positions``.

``speculate`` (``attnforge linear speculate --rtl``): greedy speculative decoding
(``int_decode.speculative``) with a draft (``draft``: ``"ngram"`` with ``ngram``, or ``"model"`` with
``draft_checkpoint``) and ``k`` proposals per verify. The datapath holds one pending block, so the
stack has **one instance per layer and head** (``heads=1`` each, instance ``layer * H + head``): each
head's block of T = 1 + proposals tokens is verified on its own instance (``verify T``), the target's
acceptance decided on the logits, then every instance gets ``commit a + 1``. Report: ``runs`` (per
prompt: ``SpecRun.to_dict()``), ``cycles_by_layer`` (verify windows of the generation phase),
``commit_cycles`` (from the commit beats to every instance idle), ``prefill_cycles``.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from attnforge.algo.linear.int_attention import IntegerAttention
from attnforge.algo.linear.int_decode import IntegerDecoder, speculative
from attnforge.algo.linear.speculative import make_draft
from attnforge.algo.linear.train import load_checkpoint
from attnforge.hw.linear import LinearDecodeConfig

from .linear_decode_tb import Program
from .streams import StreamBench, StreamSink, StreamSource


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


def _report(report: dict) -> None:
    path = os.environ.get("ATTNFORGE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(report, f)


class _Layer:
    """One layer's instance: its stream driver, sink and the golden ``Program`` beside it."""

    def __init__(self, dut, n: int, cfg: LinearDecodeConfig):
        self.cfg = cfg
        self.busy = getattr(dut, f"l{n}__busy")
        self.prog = Program(cfg)
        self.source = StreamSource(dut, f"l{n}__i", cfg.input_layout)
        self.sink = StreamSink(dut, f"l{n}__o", cfg.output_layout)
        self.queued = 0

    def flush(self) -> None:
        for beat in self.prog.beats[self.queued:]:
            self.source.send(beat)
        self.queued = len(self.prog.beats)


@cocotb.test()
async def generate(dut):
    """Greedy generation of every prompt, each attention step on the RTL, checked against the golden model."""
    p = _params()
    ia = _calibration(p)
    decoder = IntegerDecoder(ia)
    layers, bench = await _start(dut, p["configs"])

    for n, lay in enumerate(layers):
        for h, hq in enumerate(ia.heads[n]):
            lay.prog.taps(h, hq.taps)

    report = {"tokens": [], "outputs": 0, "mismatches": 0, "first_mismatches": [],
              "cycles_by_layer": [0] * len(layers), "positions": 0}

    async def answer(layer, q, k, v):
        lay = layers[layer]
        heads, t = q.shape[0], q.shape[1]
        before = len(lay.prog.expected)
        for h in range(heads):
            lay.prog.block(h, q[h], k[h], v[h])
            lay.prog.commit(h, t)
        lay.flush()
        want = len(lay.prog.expected)
        start = bench.cycle
        await bench.run_until(lambda: lay.source.done and len(lay.sink.received) == want,
                              max_cycles=50 * heads * t * (lay.cfg.d * lay.cfg.groups + 64) + 200)
        report["cycles_by_layer"][layer] += bench.cycle - start
        got = lay.sink.received[before:want]
        for n, (g, e) in enumerate(zip(got, lay.prog.expected[before:want])):
            report["outputs"] += 1
            if list(g) != list(e):
                report["mismatches"] += 1
                if len(report["first_mismatches"]) < 5:
                    report["first_mismatches"].append({"layer": layer, "head": n // t, "position": report["positions"],
                                                       "rtl": list(map(int, g)), "golden": list(map(int, e))})
        return np.asarray(got, dtype=np.int64).reshape(heads, t, lay.cfg.d)

    async def drive(gen):
        try:
            req = next(gen)
            while True:
                req = gen.send(await answer(*req))
        except StopIteration as stop:
            return stop.value

    for prompt in p["prompts"]:
        for lay in layers:
            for h in range(lay.cfg.heads):
                lay.prog.reset(h)
            lay.flush()
        seq, out = list(prompt), []
        for pos in range(len(prompt) + p["tokens"] - 1):
            logits = await drive(decoder.block([seq[pos]], pos))
            report["positions"] += 1
            if pos >= len(prompt) - 1:
                nxt = int(torch.argmax(logits[-1]))
                seq.append(nxt)
                out.append(nxt)
        report["tokens"].append(out)
        _report(report)
    # nothing more may come out
    for _ in range(200):
        await bench.step()
    for n, lay in enumerate(layers):
        assert len(lay.sink.received) == len(lay.prog.expected), \
            f"layer {n}: {len(lay.sink.received)} outputs, expected {len(lay.prog.expected)}"
    _report(report)
    assert report["mismatches"] == 0, f"{report['mismatches']} RTL outputs differ from the golden model: " \
                                      f"{report['first_mismatches']}"


def _calibration(p) -> IntegerAttention:
    """The checkpoint's model with its integer attention (the flow's calibration file)."""
    torch.set_num_threads(1)
    model, _ = load_checkpoint(p["checkpoint"])
    model.eval()
    with open(p["calibration"]) as f:
        return IntegerAttention.from_dict(model, json.load(f))


async def _start(dut, configs):
    """Clock, one ``_Layer`` per instance, reset; the instances and their ``StreamBench``."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    layers = [_Layer(dut, n, LinearDecodeConfig(**c)) for n, c in enumerate(configs)]
    bench = StreamBench(dut.clk, [x for lay in layers for x in (lay.source, lay.sink)])
    await FallingEdge(dut.clk)
    for lay in layers:
        lay.source.quiet()
        lay.sink.quiet()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    return layers, bench


@cocotb.test()
async def speculate(dut):
    """Greedy speculative decoding of every prompt, each verify block and commit on the RTL (module docstring)."""
    p = _params()
    ia = _calibration(p)
    decoder = IntegerDecoder(ia)
    n_heads = len(ia.heads[0])
    insts, bench = await _start(dut, p["configs"])
    if len(insts) != len(ia.heads) * n_heads or any(i.cfg.heads != 1 for i in insts):
        raise AssertionError(f"speculate needs one heads=1 instance per layer and head, got {len(insts)} instances")
    for layer, row in enumerate(ia.heads):
        for h, hq in enumerate(row):
            insts[layer * n_heads + h].prog.taps(0, hq.taps)
    draft_model = None
    if p["draft"] == "model":
        draft_model, _ = load_checkpoint(p["draft_checkpoint"])
        draft_model.eval()

    report = {"runs": [], "outputs": 0, "mismatches": 0, "first_mismatches": [],
              "cycles_by_layer": [0] * len(ia.heads), "commit_cycles": 0, "prefill_cycles": 0, "positions": 0}
    phase = {"prefill": True}

    async def verify(layer, q, k, v):
        group = insts[layer * n_heads:(layer + 1) * n_heads]
        t = q.shape[1]
        before = [len(i.prog.expected) for i in group]
        for h, inst in enumerate(group):
            inst.prog.block(0, q[h], k[h], v[h])
            inst.flush()
        start = bench.cycle
        await bench.run_until(lambda: all(i.source.done and len(i.sink.received) == len(i.prog.expected)
                                          for i in group),
                              max_cycles=50 * t * (group[0].cfg.d * group[0].cfg.groups + 64) + 200)
        if phase["prefill"]:
            report["prefill_cycles"] += bench.cycle - start
        else:
            report["cycles_by_layer"][layer] += bench.cycle - start
        outs = []
        for h, (inst, b) in enumerate(zip(group, before)):
            got = inst.sink.received[b:]
            for n, (g, e) in enumerate(zip(got, inst.prog.expected[b:])):
                report["outputs"] += 1
                if list(g) != list(e):
                    report["mismatches"] += 1
                    if len(report["first_mismatches"]) < 5:
                        report["first_mismatches"].append({"layer": layer, "head": h, "token": n,
                                                           "rtl": list(map(int, g)), "golden": list(map(int, e))})
            outs.append(got)
        return np.asarray(outs, dtype=np.int64).reshape(n_heads, t, group[0].cfg.d)

    async def commit(a):
        for inst in insts:
            inst.prog.commit(0, a)
            inst.flush()
        start = bench.cycle
        await bench.run_until(lambda: all(i.source.done for i in insts), max_cycles=10_000)
        await bench.step()                       # the commit beat's pass starts the cycle after it is taken
        await bench.run_until(lambda: not any(int(i.busy.value) for i in insts), max_cycles=100_000)
        key = "prefill_cycles" if phase["prefill"] else "commit_cycles"
        report[key] += bench.cycle - start

    for prompt in p["prompts"]:
        for inst in insts:
            inst.prog.reset(0)
            inst.flush()
        prefill_left = len(prompt) - 1            # the prompt's blocks of one, each followed by a commit
        phase["prefill"] = prefill_left > 0
        draft = make_draft(p["draft"], draft_model, ngram=p.get("ngram", 3))
        gen = speculative(decoder, list(prompt), p["tokens"], p["k"], draft)
        try:
            req = next(gen)
            while True:
                if req[0] == "verify":
                    req = gen.send(await verify(*req[1:]))
                else:
                    await commit(req[1])
                    if phase["prefill"]:
                        prefill_left -= 1
                        phase["prefill"] = prefill_left > 0
                    req = gen.send(None)
        except StopIteration as stop:
            run = stop.value
        report["runs"].append(run.to_dict())
        report["positions"] += len(run.tokens)
        _report(report)
    for _ in range(200):
        await bench.step()
    for n, inst in enumerate(insts):
        assert len(inst.sink.received) == len(inst.prog.expected), \
            f"instance {n}: {len(inst.sink.received)} outputs, expected {len(inst.prog.expected)}"
    _report(report)
    assert report["mismatches"] == 0, f"{report['mismatches']} RTL outputs differ from the golden model: " \
                                      f"{report['first_mismatches']}"
