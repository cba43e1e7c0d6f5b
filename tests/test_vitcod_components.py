"""Unit tests of the ViTCoD accelerator's components in amaranth.sim (no Verilator build).

Every expected value comes from an independent golden function: the host-side
packers (``hw/vitcod/host.py``), ``attnforge.numfmt.Requantizer``,
``attnforge.softmax_int`` and ``algo/vitcod/golden.py``.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from attnforge.algo.vitcod.golden import decode_qk, head_params, vitcod_head_golden
from attnforge.formats.csr import CSR, dense_to_csr
from attnforge.errors import ConfigError
from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
from attnforge.hw.vitcod import accelerator as accelerator_module
from attnforge.hw.vitcod.config import ERR_COL_IDX, ERR_LAYER, ERR_ROW_PTR, ERR_SIZE, ROW_SLOTS
from attnforge.hw.vitcod.cycles import EXP_LATENCY
from attnforge.hw.vitcod.decoder import QkDecoder
from attnforge.hw.vitcod.engine import Engine
from attnforge.hw.vitcod.exp_unit import ExpUnit
from attnforge.hw.vitcod.layer_store import LayerStore
from attnforge.hw.vitcod.host import HeadJob, LayerJob, pack_bytes, unpack_output
from attnforge.hw.vitcod.line import LINE_LATENCY, AttentionLine
from attnforge.hw.vitcod.loader import Loader
from attnforge.hw.vitcod.output import OutputStage, beat_lanes
from attnforge.hw.vitcod.scheduler import RowScheduler
from attnforge.hw.vitcod.softmax import SoftmaxStage
from attnforge.numfmt import INT8, Requantizer
from attnforge.softmax_int import E_FORMAT, RECIP_BITS, Z_FORMAT, exp2_neg, reciprocal

# d = 16, M = 8, 1 + 2 lines (the Sparser Engine's two lines share a key: two beats per Q/K/V word)
CFG = VitcodConfig(head_dim=16, max_tokens=8, max_nnz=32, macs=8, dense_lines=1, sparse_lines=2, data_width=64)


def simulate(dut, bench):
    """Run ``bench`` (every bench here ends after a bounded number of cycles) against ``dut``."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def random_job(rng, nq, nk, g, sparsity, cfg=CFG) -> HeadJob:
    d = cfg.head_dim
    keep = rng.random((nq, nk - g)) >= sparsity
    s = dense_to_csr(keep)
    params = head_params(0.03, 0.02, 0.04, 0.02, d)
    return HeadJob(rng.integers(-128, 128, (nq, d)).astype(np.int8), rng.integers(-128, 128, (nk, d)).astype(np.int8),
                   rng.integers(-128, 128, (nk, d)).astype(np.int8), g, np.asarray(s.row_ptr),
                   np.asarray(s.col_idx) + g, params.exp.multiplier, params.exp.shift, params.out.multiplier,
                   params.out.shift)


def golden_of(job: HeadJob) -> np.ndarray:
    csr = CSR(job.row_ptr, job.col_idx, (job.nq, job.nk))
    params = head_params(0.03, 0.02, 0.04, 0.02, job.q.shape[1])
    return vitcod_head_golden(job.q, job.k, job.v, job.g, csr, params)


async def feed(ctx, cmd_port, data_port, commands, beats, *, cycles, idle=0.0, rng=None, each_cycle=None):
    """Offer ``commands`` on ``cmd_port`` and ``beats`` on ``data_port`` for ``cycles`` cycles; returns the
    number of beats taken."""
    rng = rng or random.Random(0)
    c = b = 0
    for cycle in range(cycles):
        cmd_valid = c < len(commands) and rng.random() >= idle
        data_valid = b < len(beats) and rng.random() >= idle
        ctx.set(cmd_port.valid, cmd_valid)
        ctx.set(data_port.valid, data_valid)
        if c < len(commands):
            ctx.set(cmd_port.payload, cmd_port.payload.shape().const(commands[c]))
        if b < len(beats):
            ctx.set(data_port.payload, beats[b])
        took_cmd = cmd_valid and ctx.get(cmd_port.ready)
        took_data = data_valid and ctx.get(data_port.ready)
        if each_cycle is not None:
            each_cycle(ctx, cycle)
        await ctx.tick()
        c += took_cmd
        b += took_data
    ctx.set(cmd_port.valid, 0)
    ctx.set(data_port.valid, 0)
    return b


# -- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, error, match", [
    ("macs", 3, ConfigError, "ViTCoD macs"), ("macs", 2.0, TypeError, "ViTCoD macs"),
    ("max_tokens", 0, ConfigError, r"ViTCoD max_tokens must be in \[1, 4096\], not 0"),
    ("decoder_heads", 17, ConfigError, "ViTCoD decoder_heads"), ("sparse_lines", True, TypeError, "sparse_lines"),
])
def test_config_rejects_bad_values(field, value, error, match):
    with pytest.raises(error, match=match):
        VitcodConfig(**{**CFG.__dict__, field: value})


def test_components_refuse_other_configurations():
    for component in (Loader, OutputStage, SoftmaxStage):
        with pytest.raises(TypeError, match=f"{component.__name__} needs a VitcodConfig"):
            component(dict(head_dim=16))
    with pytest.raises(TypeError, match="Engine needs a VitcodConfig"):
        Engine(None, sparse=True, lines=2)
    with pytest.raises(TypeError, match="sparse must be True or False"):
        Engine(CFG, sparse=1, lines=2)
    with pytest.raises(ConfigError, match="Engine lines"):
        Engine(CFG, sparse=False, lines=0)
    for component in (QkDecoder, LayerStore):
        with pytest.raises(ConfigError, match="decoder=True"):
            component(CFG)


# -- loader --------------------------------------------------------------------------------

def _loader_bench(commands, beats, cycles=400, idle=0.0, cfg=CFG):
    """A loader with its five buffers; returns its status, the beats taken and the Q buffer's words."""
    m = Module()
    m.submodules.loader = loader = Loader(cfg)
    mems = {}
    for name, width, words in (("q", cfg.qkv_word_width, cfg.qkv_bank_words), ("k", cfg.qkv_word_width, cfg.qkv_bank_words),
                               ("v", cfg.qkv_word_width, cfg.qkv_bank_words), ("rp", cfg.data_width, cfg.rp_bank_words),
                               ("ci", cfg.data_width, cfg.ci_bank_words)):
        m.submodules[name] = mems[name] = Memory(shape=width, depth=2 * words, init=[])
        wiring.connect(m, getattr(loader, f"{name}_write"), mems[name].write_port())
    out = {}

    async def bench(ctx):
        out["taken"] = await feed(ctx, loader.cmd, loader.data, commands, beats, cycles=cycles, idle=idle,
                                  rng=random.Random(3))
        out["error"], out["failed"] = ctx.get(loader.error), ctx.get(loader.heads_failed)
        out["full"], out["cmd_ready"] = ctx.get(loader.banks.full), ctx.get(loader.cmd.ready)
        out["nq"] = [ctx.get(loader.banks.heads[b].nq) for b in range(2)]
        out["q_words"] = [ctx.get(mems["q"].data[i]) for i in range(2 * cfg.qkv_bank_words)]
    simulate(m, bench)
    return out


def test_loader_writes_a_good_head_into_bank_0():
    job = random_job(np.random.default_rng(1), 5, 6, 2, 0.5)
    out = _loader_bench([job.command(CFG)], job.data_beats(CFG), idle=0.3)
    assert (out["error"], out["failed"], out["full"]) == (0, 0, 0b01)
    assert out["taken"] == len(job.data_beats(CFG)) and out["nq"][0] == 5
    beats = pack_bytes(job.q, CFG.data_bytes)      # Q rows; a buffer word joins two beats, first lowest
    per_word = CFG.qkv_beats_per_word
    words = [sum(beats[w * per_word + j] << (CFG.data_width * j) for j in range(per_word))
             for w in range(len(beats) // per_word)]
    assert out["q_words"][:len(words)] == words


def _bad(kind):
    job = random_job(np.random.default_rng(2), 6, 6, 1, 0.3)
    if kind == "size":
        return job, job.command(CFG, nq=CFG.max_tokens + 1), ERR_SIZE
    if kind == "g_beyond_nk":
        return job, job.command(CFG, g=7), ERR_SIZE
    if kind == "nnz_beyond_buffer":
        return job, job.command(CFG, nnz=CFG.max_nnz + 1), ERR_SIZE
    # a CSR that trips exactly one check per kind (Nk - G = 5, nnz = 6)
    rp, ci = np.arange(7), np.array([1, 2, 3, 4, 5, 1])
    if kind == "row_ptr_first":
        rp[0] = 1
    elif kind == "row_ptr_decreasing":
        rp[1:3] = [2, 1]                # 0, 2, 1, 3: one step down, the other steps legal
    elif kind == "row_ptr_end":
        rp[6] = 5                       # ends below nnz
    elif kind == "row_too_long":
        rp[1:] = 6                      # row 0 keeps 6 keys of Nk - G = 5 (split between both half-rows)
    elif kind == "col_in_global":
        ci[0] = 0
    elif kind == "col_past_nk":
        ci[-1] = 6
    job.row_ptr, job.col_idx = rp, ci
    if kind == "control":               # the unchanged CSR is valid
        return job, job.command(CFG), 0
    return job, job.command(CFG), ERR_COL_IDX if kind.startswith("col") else ERR_ROW_PTR


@pytest.mark.parametrize("kind", ["control", "size", "g_beyond_nk", "nnz_beyond_buffer", "row_ptr_first", "row_ptr_decreasing",
                                  "row_ptr_end", "row_too_long", "col_in_global", "col_past_nk"])
def test_loader_refuses_a_bad_head_and_consumes_its_data(kind):
    job, cmd, err = _bad(kind)
    good = random_job(np.random.default_rng(3), 4, 5, 0, 0.2)
    bad_beats = job.data_beats(CFG)
    if kind in ("size", "nnz_beyond_buffer"):   # the announced sizes' data (accelerator.py's layout), all dropped
        ipw, wpt = CFG.indices_per_word, CFG.words_per_token
        bad_beats = [0] * ((cmd["nq"] + 2 * cmd["nk"]) * wpt + -(-(2 * cmd["nq"] + 1) // ipw) + -(-cmd["nnz"] // ipw))
    out = _loader_bench([cmd, good.command(CFG)], bad_beats + good.data_beats(CFG))
    assert out["taken"] == len(bad_beats) + len(good.data_beats(CFG))   # nothing left hanging
    if kind == "control":
        assert (out["error"], out["failed"], out["full"]) == (0, 0, 0b11)
    else:
        assert out["error"] == err and out["failed"] == 1
        assert out["full"] == 0b01 and out["nq"][0] == good.nq          # the next head still loads, in bank 0


# -- attention line ----------------------------------------------------------------------------

def test_attention_line_score_and_pv_modes():
    """A score of ``chunks`` beats, then a P.V chunk of 5 keys, back to back: both results exact, each
    pulse exactly LINE_LATENCY cycles after its last beat (the engine's drain counts on it)."""
    M, chunks = 8, 4
    rng = np.random.default_rng(4)
    q, k = rng.integers(-128, 128, M * chunks), rng.integers(-128, 128, M * chunks)
    p = rng.integers(0, 1 << 15, 5)
    v = rng.integers(-128, 128, (5, M))
    line = AttentionLine(M, 20, 32)
    seen = {}

    async def bench(ctx):
        beats = [(0, c == 0, c == chunks - 1, q[c * M:(c + 1) * M], k[c * M:(c + 1) * M]) for c in range(chunks)]
        beats += [(1, j == 0, j == 4, [p[j]] * M, v[j]) for j in range(5)]
        for cycle in range(len(beats) + LINE_LATENCY + 2):
            if cycle < len(beats):
                pv, first, last, a, b = beats[cycle]
                ctx.set(line.valid, 1), ctx.set(line.pv, pv), ctx.set(line.first, first), ctx.set(line.last, last)
                ctx.set(line.a, [int(x) for x in a])
                ctx.set(line.b, [int(x) for x in b])
            else:
                ctx.set(line.valid, 0)
            if ctx.get(line.dot_valid):
                seen.setdefault("dot", []).append((cycle, ctx.get(line.dot)))
            if ctx.get(line.vec_valid):
                seen.setdefault("vec", []).append((cycle, [ctx.get(line.vec[i]) for i in range(M)]))
            await ctx.tick()
    simulate(line, bench)
    assert seen["dot"] == [(chunks - 1 + LINE_LATENCY, int(np.dot(q, k)))]
    assert seen["vec"] == [(chunks + 4 + LINE_LATENCY, [int(x) for x in p @ v])]


# -- exponent unit -----------------------------------------------------------------------------

@pytest.mark.parametrize("groups, mult, shift", [(1, 40000, 20), (2, 65535, 12), (2, 1, 0), (3, 9000, 30)])
def test_exp_unit_matches_softmax_int(groups, mult, shift):
    """Rows of 11 and 5 scores with their own maxima and requantizers back to back, the second started
    in the cycle the unit issues the first one's last entry (its exponents still in the pipeline), then
    a row without scores with the first one's tag, started once that one is done (the unit's contract).
    Every E in its slot and every sum as softmax_int's, each ``done`` pulse EXP_LATENCY cycles after
    the job's last entry (max(n, 1) after its start)."""
    cfg = VitcodConfig(head_dim=16, max_tokens=16, max_nnz=32, macs=8, dense_lines=1, sparse_lines=2, data_width=64)
    rng = np.random.default_rng(groups * 100 + shift)
    words = -(-cfg.max_tokens // groups)
    word_bits = (words - 1).bit_length()
    inits = [[0] * (ROW_SLOTS << word_bits) for _ in range(groups)]
    jobs = []
    rows = ((11, 2, mult, shift), (5, 3, max(1, mult // 3), min(shift + 2, 62)), (0, 0, mult, 0))
    for n, slot, jmult, jshift in rows:
        scores = rng.integers(-20000, 20000, n)
        row_max = int(scores.max()) + int(rng.integers(0, 50)) if n else 0
        for j, sc in enumerate(scores):      # key j: buffer j mod K, word j div K of the slot
            inits[j % groups][(slot << word_bits) + j // groups] = int(sc)
        jobs.append((n, slot, jmult, jshift, scores, row_max))
    m = Module()
    m.submodules.unit = unit = ExpUnit(cfg, groups=groups)
    for g in range(groups):
        m.submodules[f"s{g}"] = mem = Memory(shape=unit.scores[g].data.shape(), depth=len(inits[g]), init=inits[g])
        wiring.connect(m, unit.scores[g], mem.read_port())
    m.submodules.e = e_mem = Memory(shape=E_FORMAT.width, depth=1 << ExpUnit.e_addr_width(cfg), init=[])
    wiring.connect(m, unit.e_write, e_mem.write_port())
    starts, dones, sums = [], [], []

    async def bench(ctx):
        queue = list(enumerate(jobs))
        for cycle in range(80):
            if queue and ctx.get(unit.job.free) and (queue[0][0] < 2 or len(dones) >= queue[0][0] - 1):
                k, (n, slot, jmult, jshift, _, row_max) = queue.pop(0)
                ctx.set(unit.job.start, 1), ctx.set(unit.job.tag, k % 2), ctx.set(unit.job.slot, slot)
                ctx.set(unit.job.n, n), ctx.set(unit.job.max, row_max)
                ctx.set(unit.job.multiplier, jmult), ctx.set(unit.job.shift, jshift)
                starts.append(cycle)
            else:
                ctx.set(unit.job.start, 0)
            if ctx.get(unit.job.done):
                dones.append(cycle)
                sums.append(ctx.get(unit.job.sum[(len(dones) - 1) % 2]))
            await ctx.tick()
        e_bits = (cfg.max_tokens - 1).bit_length()
        for n, slot, *_ in jobs[:2]:
            sums.append([ctx.get(e_mem.data[(slot << e_bits) + j]) for j in range(n)])
    simulate(m, bench)
    expected = [[exp2_neg(int(Requantizer(jm, js, Z_FORMAT)(mx - int(sc)))) for sc in scores]
                for _, _, jm, js, scores, mx in jobs]
    assert sums[3:] == expected[:2]                                      # the E buffer, slots 2 and 3
    assert sums[:3] == [sum(e) for e in expected]                       # the row without scores sums 0
    issued = [max(n, 1) for n, *_ in jobs]
    assert starts[1] == starts[0] + issued[0] and starts[2] == dones[0] + 1   # back to back; tag 0 free again
    assert dones == [t + k + EXP_LATENCY for t, k in zip(starts, issued)]


# -- softmax stage: the divider ------------------------------------------------------------------

def test_softmax_stage_divides_by_zero_one_and_max():
    """Rows one at a time: the sums of the row's tag (here given by the bench) to the divider once both
    units report them final; the reciprocal and the row's slot back."""
    stage = SoftmaxStage(CFG)
    top = (1 << CFG.sum_width) - 1
    # (dense sum, sparse sum): an empty row, a sum of 1 (below any real row, whose maximum alone
    # gives E = 2**15: the reciprocal saturates), one key at the maximum, the largest sums
    cases = [(0, 0), (1, 0), (0, 1 << 15), (1 << 15, 12345), (top, top)]
    got = []

    async def bench(ctx):
        ctx.set(stage.dense_exp.free, 1), ctx.set(stage.sparse_exp.free, 1)
        for k, (dense_sum, sparse_sum) in enumerate(cases):
            ctx.set(stage.rows.valid, 1), ctx.set(stage.rows.payload.slot, k % ROW_SLOTS)
            assert ctx.get(stage.rows.ready) and ctx.get(stage.dense_exp.start)
            assert ctx.get(stage.dense_exp.tag) == ctx.get(stage.sparse_exp.tag) == k % 2
            await ctx.tick()
            ctx.set(stage.rows.valid, 0)
            # the units' sums of this row's tag (the other tag holds garbage), final: both done
            ctx.set(stage.dense_exp.sum, [dense_sum, 99] if k % 2 == 0 else [99, dense_sum])
            ctx.set(stage.sparse_exp.sum, [sparse_sum, 77] if k % 2 == 0 else [77, sparse_sum])
            ctx.set(stage.dense_exp.done, 1), ctx.set(stage.sparse_exp.done, 1)
            await ctx.tick()
            ctx.set(stage.dense_exp.done, 0), ctx.set(stage.sparse_exp.done, 0)
            cycles = 0
            while not ctx.get(stage.recips.valid):
                await ctx.tick()
                cycles += 1
            got.append((ctx.get(stage.recips.payload.recip), ctx.get(stage.recips.payload.slot), cycles))
            await ctx.tick()
    simulate(stage, bench)
    run = -(-CFG.recip_width // 2)      # two quotient bits per cycle
    for (dense_sum, sparse_sum), (recip, slot, cycles) in zip(cases, got):
        total = dense_sum + sparse_sum
        if total == 0:
            assert (recip, cycles) == (0, 1)
        elif total >= 1 << 15:
            assert recip == reciprocal(total) and cycles == run
        else:
            assert (1 << RECIP_BITS) // total >= 1 << CFG.recip_width and recip == (1 << CFG.recip_width) - 1
    assert [slot for _, slot, _ in got] == [i % ROW_SLOTS for i in range(len(cases))]


def test_softmax_stage_takes_two_rows_and_no_third():
    """Two rows may be in the exponent units at once (the units' two sums); a third waits until the
    first has gone to the divider."""
    stage = SoftmaxStage(CFG)
    ready = []

    async def bench(ctx):
        ctx.set(stage.dense_exp.free, 1), ctx.set(stage.sparse_exp.free, 1), ctx.set(stage.rows.valid, 1)
        for _ in range(3):
            ready.append(ctx.get(stage.rows.ready))
            await ctx.tick()
        ctx.set(stage.dense_exp.done, 1), ctx.set(stage.sparse_exp.done, 1)      # the first row's sums
        ready.append(ctx.get(stage.rows.ready))
        await ctx.tick()
        ctx.set(stage.dense_exp.done, 0), ctx.set(stage.sparse_exp.done, 0)
        ready.append(ctx.get(stage.rows.ready))
    simulate(stage, bench)
    assert ready == [1, 1, 0, 0, 1]


# -- output stage ---------------------------------------------------------------------------------

def _run_output(rows, stall, seed=0, idle=0.0):
    """Rows (values, multiplier, shift, head_last) through an OutputStage, one beat of
    ``beat_lanes`` channels per transfer, with random backpressure (and random idle cycles in)."""
    stage = OutputStage(CFG)
    rng = random.Random(seed)
    lanes, wpt = beat_lanes(CFG), CFG.words_per_token
    sent = [(values[w * lanes:(w + 1) * lanes], mult, shift, w == wpt - 1, last)
            for values, mult, shift, last in rows for w in range(wpt)]
    beats, head_done = [], []

    async def bench(ctx):
        r = 0
        for cycle in range(40 * len(rows) + 20):
            offer = r < len(sent) and rng.random() >= idle
            if offer:
                values, mult, shift, row_last, last = sent[r]
                ctx.set(stage.row.valid, 1)
                ctx.set(stage.row.payload, stage.row.payload.shape().const(
                    {"values": values, "multiplier": mult, "shift": shift, "row_last": row_last,
                     "head_last": last}))
            else:
                ctx.set(stage.row.valid, 0)
            ready = rng.random() >= stall
            ctx.set(stage.o.ready, ready)
            took = offer and ctx.get(stage.row.ready)
            if ctx.get(stage.o.valid) and ready:
                beats.append(ctx.get(stage.o.payload))
            if ctx.get(stage.head_done):
                head_done.append(len(beats))
            await ctx.tick()
            r += took
        assert r == len(sent)
        assert not ctx.get(stage.busy)
    simulate(stage, bench)
    return beats, head_done


@pytest.mark.parametrize("shift", [0, 1, 7, 24, 40, 62])
def test_output_stage_requantizes_like_numfmt(shift):
    rng = np.random.default_rng(shift)
    lo, hi = -(1 << (CFG.row_width - 1)), 1 << (CFG.row_width - 1)
    rows = []
    for mult in (0, 1, 40000, 65535):
        values = [int(x) for x in rng.integers(lo, hi, CFG.head_dim)]
        values[:2] = [lo, hi - 1]
        if 0 < shift < CFG.row_width:    # just below and at the rounding step (x * mult near 2**(shift - 1))
            values[2:4] = [((1 << (shift - 1)) - 1) // max(mult, 1), -(1 << (shift - 1)) // max(mult, 1)]
        rows.append((values, mult, shift, mult == 65535))
    beats, head_done = _run_output(rows, stall=0.0)
    out = unpack_output(beats, len(rows), CFG)
    for (values, mult, _, _), got in zip(rows, out):
        rq = Requantizer(mult, shift, INT8)
        assert [int(x) for x in got] == [rq(v) for v in values]
    assert head_done == [len(rows) * CFG.words_per_token]


def test_output_stage_under_random_backpressure_loses_and_repeats_nothing():
    rng = np.random.default_rng(9)
    rows = [([int(x) for x in rng.integers(-(1 << 20), 1 << 20, CFG.head_dim)], 30000, 14, i % 3 == 2)
            for i in range(9)]
    steady, _ = _run_output(rows, stall=0.0)
    for seed in range(3):
        stalled, head_done = _run_output(rows, stall=0.5, seed=seed, idle=0.3)
        assert stalled == steady
        assert head_done == [3 * CFG.words_per_token * k for k in (1, 2, 3)]


# -- Q/K decoder --------------------------------------------------------------------------------

def test_qk_decoder_matches_decode_qk():
    cfg = VitcodConfig(head_dim=16, max_tokens=8, max_nnz=32, macs=8, dense_lines=1, sparse_lines=2, data_width=64,
                       decoder=True, decoder_heads=2)
    rng = np.random.default_rng(11)
    dec = QkDecoder(cfg)
    cases = []
    for hc, mult, shift in ((1, 1, 0), (2, 40000, 22), (2, 65535, 8)):
        words = rng.integers(-128, 128, (hc, 1, cfg.data_bytes)).astype(np.int8)
        weights = rng.integers(-128, 128, (1, hc)).astype(np.int8)
        expected = decode_qk(words, weights, Requantizer(mult, shift, INT8))[0, 0]
        cases.append((hc, words, weights[0], mult, shift, expected))
    got = []

    async def bench(ctx):
        for hc, words, weights, mult, shift, _ in cases:
            ctx.set(dec.hc, hc), ctx.set(dec.multiplier, mult), ctx.set(dec.shift, shift)
            ctx.set(dec.weights, [int(w) for w in weights] + [0] * (cfg.decoder_heads - hc))
            for c in range(hc):
                ctx.set(dec.beats.valid, 1)
                ctx.set(dec.beats.payload, pack_bytes(words[c, 0], cfg.data_bytes)[0])
                assert ctx.get(dec.last) == (c == hc - 1)
                if c == hc - 1:
                    got.append(np.frombuffer(ctx.get(dec.word).to_bytes(cfg.data_bytes, "little"), np.int8))
                await ctx.tick()
            ctx.set(dec.beats.valid, 0)
            await ctx.tick()
    simulate(dec, bench)
    for case, word in zip(cases, got):
        assert word.tolist() == case[-1].tolist()


# -- layer store and the loader with the decoder ------------------------------------------------

DEC = VitcodConfig(head_dim=16, max_tokens=8, max_nnz=32, macs=8, dense_lines=1, sparse_lines=2, data_width=64,
                   decoder=True, decoder_heads=2)


def test_layer_store_replays_q_then_k_in_key_order():
    rng = np.random.default_rng(13)
    layer = LayerJob(rng.integers(-128, 128, (2, 3, 16)).astype(np.int8),
                     rng.integers(-128, 128, (2, 5, 16)).astype(np.int8))
    order = rng.permutation(5)
    # what the replay must give: the layer's beats with K's tokens in key order (host packer)
    expected = LayerJob(layer.qc, layer.kc[:, order]).data_beats(DEC)
    order_words = [int(sum(int(k) << (16 * i) for i, k in enumerate(order[w:w + DEC.indices_per_word])))
                   for w in range(0, len(order), DEC.indices_per_word)]
    store = LayerStore(DEC)
    got = {}

    async def bench(ctx):
        ctx.set(store.layer_start, 1)
        ctx.set(store.shape, store.shape.shape().const({"nq": 3, "nk": 5, "hc": 2}))
        await ctx.tick()
        ctx.set(store.layer_start, 0)
        for n, beat in enumerate(layer.data_beats(DEC)):
            assert not ctx.get(store.loaded)
            ctx.set(store.layer_beats.valid, 1), ctx.set(store.layer_beats.payload, beat)
            await ctx.tick()
        ctx.set(store.layer_beats.valid, 0)
        got["loaded"] = (ctx.get(store.loaded), ctx.get(store.loaded_shape.nq), ctx.get(store.loaded_shape.nk))
        for w, word in enumerate(order_words):
            ctx.set(store.key_order.en, 1), ctx.set(store.key_order.addr, w), ctx.set(store.key_order.data, word)
            await ctx.tick()
        ctx.set(store.key_order.en, 0)
        ctx.set(store.replay_start, 1)
        await ctx.tick()
        ctx.set(store.replay_start, 0)
        beats, latency = [], None
        for cycle in range(len(expected) + 6):
            if ctx.get(store.replay.valid):
                latency = cycle if latency is None else latency
                beats.append(ctx.get(store.replay.payload))
            await ctx.tick()
        got["beats"], got["latency"] = beats, latency
    simulate(store, bench)
    assert got["loaded"] == (1, 3, 5)
    assert got["beats"] == expected and got["latency"] == 2      # key-order read, store read


@pytest.mark.parametrize("case", ["no_layer", "other_layer", "order_out_of_range", "good"])
def test_loader_with_decoder_checks_the_layer_and_the_key_order(case):
    rng = np.random.default_rng(14)
    job = random_job(rng, 4, 5, 1, 0.4, DEC)
    commands, beats = [], []
    if case != "no_layer":
        nq = 5 if case == "other_layer" else 4
        layer = LayerJob(rng.integers(-128, 128, (1, nq, 16)).astype(np.int8), job.k[None])
        commands.append(layer.command(DEC))
        beats += layer.data_beats(DEC)
    if case == "order_out_of_range":
        job.key_order = np.array([0, 1, 5, 3, 4])
    commands.append(job.command(DEC))
    beats += job.data_beats(DEC)
    out = _loader_bench(commands, beats, cfg=DEC)
    expected = {"no_layer": (ERR_LAYER, 1, 0), "other_layer": (ERR_LAYER, 1, 0),
                "order_out_of_range": (ERR_COL_IDX, 1, 0), "good": (0, 0, 1)}[case]
    assert (out["error"], out["failed"], out["full"]) == expected
    assert out["taken"] == len(beats) and out["cmd_ready"]
    if case == "good":      # Q replayed from the store through the decoder (weight 1, scale 1: unchanged)
        q = pack_bytes(decode_qk(layer.qc, np.ones((1, 1), np.int8), Requantizer(1, 0, INT8))[0], DEC.data_bytes)
        per_word = DEC.qkv_beats_per_word
        assert out["q_words"][:len(q) // per_word] == [
            sum(q[w * per_word + j] << (DEC.data_width * j) for j in range(per_word)) for w in range(len(q) // per_word)]


# -- row scheduler, in the whole accelerator --------------------------------------------------------


def _assert_outputs_golden(beats, jobs, cfg) -> None:
    """The output beats are the jobs' heads in order, each the golden model's, and nothing more."""
    pos = 0
    for job in jobs:
        n = job.nq * cfg.words_per_token
        assert np.array_equal(unpack_output(beats[pos:pos + n], job.nq, cfg), golden_of(job))
        pos += n
    assert pos == len(beats)


def _watch_schedulers(monkeypatch) -> list:
    """The RowSchedulers the next accelerator builds (one per tile), in the order it makes them."""
    made = []

    class WatchedScheduler(RowScheduler):
        def __init__(self, config, tile=0):
            super().__init__(config, tile)
            made.append(self)
    monkeypatch.setattr(accelerator_module, "RowScheduler", WatchedScheduler)
    return made


def test_row_scheduler_orders_jobs_and_rows(monkeypatch):
    """Each engine scores rows in order, head after head, at most ROW_SLOTS - 1 ahead of its pv jobs
    (row slots counted across heads), and starts a row's pv job only after its score job; the next
    head's rows start before the previous head's last pv job (heads overlap); a score job with keys
    starts while the previous one's beats are still in flight (no drain between them), one without
    keys never does, and the same for pv jobs (plan step 2's P.V side); the output is the golden
    model's, row by row."""
    made = _watch_schedulers(monkeypatch)
    rng = np.random.default_rng(12)
    # the last head is dense (G = N): the Denser Engine's pv jobs (16 cycles) outlast the softmax of a
    # row, so they follow each other; the Sparser Engine's are jobs without keys
    jobs = [random_job(rng, 8, 8, 2, 0.5), random_job(rng, 6, 7, 0, 0.3), random_job(rng, 8, 8, 8, 0.0)]
    dut = VitcodAccelerator(CFG)
    events = {0: [], 1: []}
    beats, status, behind, behind_pv = [], {}, {True: 0, False: 0}, {True: 0, False: 0}

    def watch(ctx, cycle):
        for x, job in enumerate((made[0].dense, made[0].sparse)):
            if ctx.get(job.score_start):
                events[x].append(("score", ctx.get(job.score.row)))
                if ctx.get(job.score_active):       # the previous score job's beats are in flight
                    behind[ctx.get(job.score.n) != 0] += 1
            if ctx.get(job.pv_start):
                events[x].append(("pv", ctx.get(job.pv.slot)))
                if ctx.get(job.pv_active):          # the previous pv job's beats are in flight
                    behind_pv[ctx.get(job.pv.n) != 0] += 1
        ctx.set(dut.o.ready, 1)
        if ctx.get(dut.o.valid):
            beats.append(ctx.get(dut.o.payload))

    async def bench(ctx):
        data = [b for j in jobs for b in j.data_beats(CFG)]
        await feed(ctx, dut.cmd, dut.data, [j.command(CFG) for j in jobs], data, cycles=2000, each_cycle=watch)
        status.update(done=ctx.get(dut.heads_done), error=ctx.get(dut.error), busy=ctx.get(dut.busy))
    simulate(dut, bench)
    assert status == dict(done=3, error=0, busy=0)
    assert behind[True] > 0 and behind[False] == 0
    assert behind_pv[True] > 0 and behind_pv[False] == 0
    _assert_outputs_golden(beats, jobs, CFG)
    rows = [i for j in jobs for i in range(j.nq)]      # the query rows of every head, in run order
    overlapped = 0
    for x in (0, 1):
        scored, pv = 0, 0
        for kind, value in events[x]:
            if kind == "score":
                assert value == rows[scored] and scored - pv <= ROW_SLOTS - 1
                if value == 0 and pv < scored:      # a head's first row while the previous one is in flight
                    overlapped += 1
                scored += 1
            else:
                assert value == pv % ROW_SLOTS and pv < scored
                pv += 1
        assert (scored, pv) == (len(rows),) * 2
    assert overlapped > 0


# -- tiles: several row pipelines ------------------------------------------------------------------

@pytest.mark.parametrize("tiles, data_width, match", [
    (0, 64, r"ViTCoD tiles must be in \[1, 16\], not 0"), (17, 64, "ViTCoD tiles"),
    (9, 64, "must not exceed max_tokens=8"), (2, 16, "needs data_width >= 32"),
    (3, 256, "must divide or be at least the 8 query rows"),
])
def test_config_rejects_bad_tiles(tiles, data_width, match):
    with pytest.raises(ConfigError, match=match):
        VitcodConfig(head_dim=64, max_tokens=8, max_nnz=32, macs=2, data_width=data_width, tiles=tiles)


def _run_jobs_full_rate(cfg, jobs, cycles_to_run: int, *, also=None):
    """``jobs`` back to back into the accelerator (data every cycle, ``o`` always ready) for ``cycles_to_run``
    cycles (callers give a few beyond the cycle model's figure: a slower RTL misses beats and fails their
    checks); ``also(ctx, cycle)`` watches more each cycle. Returns the output beats and the cycles of each
    command transfer and output beat."""
    dut = VitcodAccelerator(cfg)
    beats, cycles = [], []

    def watch(ctx, cycle):
        if also is not None:
            also(ctx, cycle)
        ctx.set(dut.o.ready, 1)
        if ctx.get(dut.cmd.valid) and ctx.get(dut.cmd.ready):
            cycles.append(cycle)
        if ctx.get(dut.o.valid):
            beats.append(ctx.get(dut.o.payload))
            cycles.append(cycle)

    async def bench(ctx):
        data = [b for j in jobs for b in j.data_beats(cfg)]
        await feed(ctx, dut.cmd, dut.data, [j.command(cfg) for j in jobs], data, cycles=cycles_to_run,
                   each_cycle=watch)
        assert ctx.get(dut.error) == 0
    simulate(dut, bench)
    return beats, cycles


def test_tiles_run_rows_in_one_rotation_in_row_order(monkeypatch):
    """Two tiles (RowScheduler per tile, RowMerger): the rows of all heads are dealt to the tiles in
    one rotation (a head's row i on tile ``(i + off) mod 2``, ``off`` the rows of the heads before it:
    the second head, after 7 rows, starts on tile 1), rows leave in order and bit exact (a head with
    fewer rows than tiles among them), and the cycle model gives the run's cycles from the first
    command to the last output beat."""
    from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

    cfg = VitcodConfig(head_dim=16, max_tokens=8, max_nnz=32, macs=8, dense_lines=1, sparse_lines=2,
                       data_width=64, tiles=2)
    made = _watch_schedulers(monkeypatch)
    rng = np.random.default_rng(13)
    jobs = [random_job(rng, 7, 8, 2, 0.5, cfg), random_job(rng, 1, 5, 0, 0.2, cfg), random_job(rng, 6, 6, 0, 0.4, cfg)]
    rows = {0: [], 1: []}

    def rows_started(ctx, cycle):
        for t, sched in enumerate(made):
            if ctx.get(sched.dense.score_start):
                rows[t].append(ctx.get(sched.dense.score.row))
    beats, cycles = _run_jobs_full_rate(cfg, jobs, 900, also=rows_started)
    # head 0 (7 rows) from tile 0, head 1 (1 row) from tile 1, head 2 (6 rows) from tile 0 again
    assert len(made) == 2 and rows == {0: [0, 2, 4, 6, 0, 2, 4], 1: [1, 3, 5, 0, 1, 3, 5]}
    _assert_outputs_golden(beats, jobs, cfg)
    shapes = [HeadShape.from_csr(j.g, j.row_ptr, j.nk) for j in jobs]
    assert run_cycles(cfg, shapes)["total_cycles"] == cycles[-1] - cycles[0]


@pytest.mark.parametrize("depth, match", [(0, r"ViTCoD merge_depth must be in \[1, 8\], not 0"),
                                          (9, r"ViTCoD merge_depth must be in \[1, 8\], not 9")])
def test_config_rejects_bad_merge_depth(depth, match):
    with pytest.raises(ConfigError, match=match):
        VitcodConfig(head_dim=64, max_tokens=8, max_nnz=32, macs=2, data_width=64, tiles=2, merge_depth=depth)
    with pytest.raises(TypeError, match="ViTCoD merge_depth must be an integer, not 2.0"):
        VitcodConfig(head_dim=64, max_tokens=8, max_nnz=32, macs=2, data_width=64, tiles=2, merge_depth=2.0)


def job_of_keep(rng, keep, g, cfg) -> HeadJob:
    """A head whose sparse part keeps exactly ``keep`` (Nq x (Nk - G)), random Q/K/V."""
    nq, nk, d = keep.shape[0], keep.shape[1] + g, cfg.head_dim
    s = dense_to_csr(keep)
    params = head_params(0.03, 0.02, 0.04, 0.02, d)
    return HeadJob(rng.integers(-128, 128, (nq, d)).astype(np.int8), rng.integers(-128, 128, (nk, d)).astype(np.int8),
                   rng.integers(-128, 128, (nk, d)).astype(np.int8), g, np.asarray(s.row_ptr),
                   np.asarray(s.col_idx) + g, params.exp.multiplier, params.exp.shift, params.out.multiplier,
                   params.out.shift)


def test_merger_buffers_merge_depth_rows_per_tile(monkeypatch):
    """``merge_depth`` 2: while one tile computes a long row (rows 1 and 8), the other finishes its short
    rows ahead into its two-row merger buffer (it fills: ``ready`` low); rows still leave in order and bit
    exact over two heads back to back (the ring wraps), and the cycle model at depth 2 gives the RTL's
    cycles; on the first head alone a one-row merger's cycles differ in the model. (Each engine also
    holds ``pv_queue`` rows' P.V shares ahead of the merger, so on heads this short a third merger row
    adds nothing.)"""
    from attnforge.hw.vitcod import output as output_module
    from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

    cfg = VitcodConfig(head_dim=16, max_tokens=12, max_nnz=48, macs=8, dense_lines=1, sparse_lines=1,
                       data_width=64, tiles=2, merge_depth=2)
    merged = []

    class WatchedMerger(output_module.RowMerger):
        def elaborate(self, platform):
            merged.append(self)
            return super().elaborate(platform)
    monkeypatch.setattr(accelerator_module, "RowMerger", WatchedMerger)
    rng = np.random.default_rng(5)
    lengths = [0, 12, 0, 0, 1, 0, 1, 1, 12, 0, 1, 0]       # keys kept per row (G = 0)
    keep = np.arange(12)[None, :] < np.array(lengths)[:, None]
    jobs = [job_of_keep(rng, keep, 0, cfg), random_job(rng, 7, 9, 1, 0.5, cfg)]
    dut = VitcodAccelerator(cfg)
    beats, cycles, ready = [], [], []

    def watch(ctx, cycle):
        ctx.set(dut.o.ready, 1)
        if ctx.get(dut.cmd.valid) and ctx.get(dut.cmd.ready):
            cycles.append(cycle)
        if ctx.get(dut.o.valid):
            beats.append(ctx.get(dut.o.payload))
            cycles.append(cycle)
        ready.append(ctx.get(merged[0].tiles[0].ready) & ctx.get(merged[0].tiles[1].ready))

    async def bench(ctx):
        data = [b for j in jobs for b in j.data_beats(cfg)]
        await feed(ctx, dut.cmd, dut.data, [j.command(cfg) for j in jobs], data, cycles=600, each_cycle=watch)
    simulate(dut, bench)
    _assert_outputs_golden(beats, jobs, cfg)
    assert not all(ready)        # a tile's buffer was full (two rows) in some cycle
    shapes = [HeadShape.from_csr(j.g, j.row_ptr, j.nk) for j in jobs]
    rtl = cycles[-1] - cycles[0]
    assert run_cycles(cfg, shapes)["total_cycles"] == rtl
    first = run_cycles(cfg, shapes[:1])["total_cycles"]
    assert run_cycles(dataclasses.replace(cfg, merge_depth=1), shapes[:1])["total_cycles"] > first


def test_global_columns_sent_as_csr_entries():
    """The host sends G' < G of a head's global columns as global, the others as CSR entries of every
    row (``HeadJob.g_sent``): the command carries G', the output is the mask's golden output, and the
    run takes the cycles the cycle model gives for the sent heads (not those of the mask's G)."""
    from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

    cfg = dataclasses.replace(CFG, max_nnz=64)
    rng = np.random.default_rng(20)
    jobs = [random_job(rng, 7, 8, 4, 0.8, cfg), random_job(rng, 5, 6, 2, 0.5, cfg)]
    jobs[0].g_sent, jobs[1].g_sent = 1, 0
    assert [j.command(cfg)["g"] for j in jobs] == [1, 0]
    mask = [HeadShape.from_csr(j.g, j.row_ptr, j.nk) for j in jobs]
    sent = [s.with_sent_globals(j.g_sent) for s, j in zip(mask, jobs)]
    beats, cycles = _run_jobs_full_rate(cfg, jobs, run_cycles(cfg, sent)["total_cycles"] + 8)
    _assert_outputs_golden(beats, jobs, cfg)
    assert run_cycles(cfg, sent)["total_cycles"] == cycles[-1] - cycles[0]
    assert run_cycles(cfg, mask)["total_cycles"] != cycles[-1] - cycles[0]


def test_config_two_token_rows_per_beat():
    """``data_width = 2 * 8 * head_dim``: a beat carries two token rows of Q, K or V (one Q/K/V word);
    wider beats, and the decoder with two rows per beat, are refused naming the value."""
    cfg = dataclasses.replace(CFG, data_width=256)
    assert (cfg.tokens_per_beat, cfg.words_per_token, cfg.qkv_tokens_per_word, cfg.qkv_words_per_token) == (2, 1, 2, 1)
    assert cfg.qkv_bank_words == 4 and cfg.token_beats(5) == 3 and CFG.token_beats(5) == 10
    with pytest.raises(ConfigError, match=r"data_width=512 must divide 8 \* head_dim = 128 .* at most 2 x that, 256"):
        dataclasses.replace(CFG, data_width=512)
    with pytest.raises(ConfigError, match=r"data_width=256 carries 2 token rows per beat .* decoder takes at most one"):
        dataclasses.replace(CFG, data_width=256, decoder=True)


@pytest.mark.parametrize("dense_lines, sparse_lines", [(1, 2), pytest.param(4, 4, marks=pytest.mark.full)])
def test_two_token_rows_per_beat_bit_exact(dense_lines, sparse_lines):
    """Two token rows per data beat (d = 16, 256-bit stream): heads of odd and even Nq and Nk (the last
    beat's second row zero) load in half the beats of a 128-bit stream, come out bit exact (one row per
    output beat) and take the cycle model's cycles."""
    from attnforge.hw.vitcod.cycles import HeadShape, head_beats, run_cycles

    cfg = dataclasses.replace(CFG, data_width=256, max_nnz=64, dense_lines=dense_lines, sparse_lines=sparse_lines)
    rng = np.random.default_rng(19)
    jobs = [random_job(rng, 7, 8, 2, 0.6, cfg), random_job(rng, 4, 5, 1, 0.3, cfg), random_job(rng, 8, 7, 0, 0.5, cfg)]
    shapes = [HeadShape.from_csr(j.g, j.row_ptr, j.nk) for j in jobs]
    for j, s in zip(jobs, shapes):
        # Q, K, V two rows a beat, then the pointers and column indices 16 a beat
        assert len(j.data_beats(cfg)) == head_beats(cfg, s) == (
            -(-j.nq // 2) + 2 * -(-j.nk // 2) + -(-(2 * j.nq + 1) // 16) + -(-j.nnz // 16))
    beats, cycles = _run_jobs_full_rate(cfg, jobs, run_cycles(cfg, shapes)["total_cycles"] + 8)
    pos = 0
    for job in jobs:
        assert all(b >> (8 * cfg.head_dim) == 0 for b in beats[pos:pos + job.nq])   # the upper lanes zero
        assert np.array_equal(unpack_output(beats[pos:pos + job.nq], job.nq, cfg), golden_of(job))
        pos += job.nq
    assert pos == len(beats)
    assert run_cycles(cfg, shapes)["total_cycles"] == cycles[-1] - cycles[0]


# -- row slots and the divider's bits per cycle (configuration fields) -----------------------------

@pytest.mark.parametrize("field, value, match", [
    ("row_slots", 1, r"ViTCoD row_slots must be in \[2, 32\], not 1"),
    ("row_slots", 64, r"ViTCoD row_slots must be in \[2, 32\], not 64"),
    ("row_slots", 6, r"ViTCoD row_slots must be a power of two in \[2, 32\], not 6"),
    ("divider_bits", 0, r"ViTCoD divider_bits must be in \[1, 8\], not 0"),
    ("divider_bits", 9, r"ViTCoD divider_bits must be in \[1, 8\], not 9"),
])
def test_config_rejects_bad_row_slots_and_divider_bits(field, value, match):
    with pytest.raises(ConfigError, match=match):
        VitcodConfig(**{field: value})


@pytest.mark.parametrize("value, error, match", [
    (3, ConfigError, r"ViTCoD banks must be one of 2, 4, not 3"),
    (1, ConfigError, r"ViTCoD banks must be one of 2, 4, not 1"),
    (8, ConfigError, r"ViTCoD banks must be one of 2, 4, not 8"),
    (2.0, TypeError, r"ViTCoD banks must be an int, not float"),
    (True, TypeError, r"ViTCoD banks must be an int, not bool"),
])
def test_config_rejects_bad_banks(value, error, match):
    with pytest.raises(error, match=match):
        VitcodConfig(banks=value)


@pytest.mark.parametrize("tiles", [pytest.param(1, marks=pytest.mark.full), 3])
def test_four_banks_load_three_heads_ahead(tiles, monkeypatch):
    """``banks`` 4: seven short and irregular heads back to back (one with fewer rows than tiles, G = N,
    Nq != Nk) run bit exact and in the cycle model's cycles, which are fewer than with two banks (the
    loader no longer waits for the head two before to be out), and more than two banks are full at
    once in the run (heads loaded ahead of the two computing)."""
    from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

    cfg = VitcodConfig(head_dim=16, max_tokens=12, max_nnz=144, macs=8, dense_lines=1, sparse_lines=1,
                       data_width=64, tiles=tiles, banks=4, row_slots=8)
    rng = np.random.default_rng(40 + tiles)
    jobs = [random_job(rng, nq, nk, g, sp, cfg) for nq, nk, g, sp in
            [(7, 8, 2, 0.5), (1, 5, 0, 0.2), (6, 6, 0, 0.4), (12, 12, 3, 0.7), (2, 9, 9, 0.0), (5, 12, 1, 0.9),
             (9, 7, 0, 0.3)]]
    shapes = [HeadShape.from_csr(j.g, j.row_ptr, j.nk) for j in jobs]
    model = run_cycles(cfg, shapes)["total_cycles"]
    assert model < run_cycles(dataclasses.replace(cfg, banks=2), shapes)["total_cycles"]
    full = []

    def watch(ctx, cycle):
        full.append(bin(ctx.get(made[0].banks.full)).count("1"))
    made = _watch_schedulers(monkeypatch)
    beats, cycles = _run_jobs_full_rate(cfg, jobs, model + 40, also=watch)
    _assert_outputs_golden(beats, jobs, cfg)
    assert model == cycles[-1] - cycles[0]
    assert max(full) >= 3


def test_more_row_slots_and_a_faster_divider(monkeypatch):
    """``row_slots`` 8 and ``divider_bits`` 4: each engine scores up to seven rows ahead of its pv jobs
    (more than the default's three), the output is bit exact, and the cycle model gives the RTL's cycles,
    fewer than with the default slots and divider (so both fields reach the model)."""
    from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

    cfg = VitcodConfig(head_dim=16, max_tokens=12, max_nnz=144, macs=8, dense_lines=1, sparse_lines=1,
                       data_width=128, row_slots=8, divider_bits=4)
    made = _watch_schedulers(monkeypatch)
    rng = np.random.default_rng(21)
    jobs = [random_job(rng, 12, 12, 1, 0.6, cfg), random_job(rng, 9, 12, 0, 0.6, cfg)]
    ahead = [0]
    scored = {0: 0, 1: 0}
    pv = {0: 0, 1: 0}

    def watch(ctx, cycle):
        for x, job in enumerate((made[0].dense, made[0].sparse)):
            if ctx.get(job.score_start):
                scored[x] += 1
                ahead[0] = max(ahead[0], scored[x] - pv[x])
            if ctx.get(job.pv_start):
                pv[x] += 1
    beats, cycles = _run_jobs_full_rate(cfg, jobs, 900, also=watch)
    assert 4 < ahead[0] <= 8       # rows in flight beyond the default's four, within the eight slots
    _assert_outputs_golden(beats, jobs, cfg)
    shapes = [HeadShape.from_csr(j.g, j.row_ptr, j.nk) for j in jobs]
    rtl = cycles[-1] - cycles[0]
    assert run_cycles(cfg, shapes)["total_cycles"] == rtl
    for default in (dict(row_slots=4), dict(divider_bits=2)):
        assert run_cycles(dataclasses.replace(cfg, **default), shapes)["total_cycles"] > rtl
