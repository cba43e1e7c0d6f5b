"""Unit tests of the linear decode datapath's components (hw/linear/*) in amaranth.sim.

Each component is driven alone through its signature, and checked against the
golden model (``algo/linear/golden.py``) or the number formats'
requantizers (``attnforge.numfmt``), never against the same arithmetic written
again here: the normalizer's divider at den = 0, 1, the reduction boundary and
the largest den; the lanes' update and readout (wrapping included); the output
stage under random backpressure; the command control's verify/commit rules and
the overflow flag; the convolution's window across history and drafts. (``PipelinedDivider``
itself is tests/test_hw_common.py's; here it is tested inside the normalizer.)
"""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from attnforge.algo.linear.golden import LinearDecodeGolden, _wrap, divide_fixed
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.block import DraftBlock
from attnforge.hw.linear.config import NORM_EXTRA_DEPTH, conv_column_copies
from attnforge.hw.linear.control import CommandControl
from attnforge.hw.linear.convolution import Convolution
from attnforge.hw.linear.lanes import StateLanes
from attnforge.hw.linear.normalizer import Normalizer
from attnforge.hw.linear.output import OutputStage
from attnforge.linear_format import CMD_COMMIT, CMD_RESET, CMD_TAPS, CMD_TOKEN, DIV_DEN_BITS
from attnforge.numfmt import INT8, saturate


def _simulate(top, bench, deadline=None):
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run() if deadline is None else sim.run_until(deadline)


# ---------------------------------------------------------------- Normalizer

NORM = LinearDecodeConfig(d=8, macs=4, conv_taps=2, t_max=4, feature_map="relu_norm")


def _element(cfg, **fields):
    base = dict(valid=1, first_token=0, last_token=0, first_group=0, last_group=1, bank_zero=0, emit=1,
                pass_end=0, token=0, column=1, out_half=0, state_addr=0, tokens=1)
    if cfg.normalized:
        base["is_z"] = 0
    if cfg.snapshots:
        base["snapshot_bank"] = 0
    base.update(fields)
    return {name: int(value) for name, value in base.items()}


def test_normalizer_divides_like_divide_fixed_at_the_edges():
    """Each den (0, 1, the DIV_DEN_BITS boundary, the largest) on the z column, its token's numerators
    (extremes |A| = 128 den and small values) from the next cycle on; quotients as divide_fixed,
    context and conv sum unchanged, NORM_EXTRA_DEPTH cycles later. A negative den (only past
    max_tokens) is taken as 0."""
    fmt = NORM.format
    den_max = (1 << (fmt.denominator_format.width - 1)) - 1
    dens = [0, 1, 2, 3, (1 << DIV_DEN_BITS) - 1, 1 << DIV_DEN_BITS, (1 << DIV_DEN_BITS) + 1,
            (1 << (DIV_DEN_BITS + 3)) + 12345, den_max, -5]
    norm = Normalizer(NORM)
    beats = []   # (element fields, attn, conv, expected quotient or None for the z column)
    for n, den in enumerate(dens):
        token, half = n % NORM.t_max, (n // NORM.t_max) % 2
        beats.append((_element(NORM, token=token, out_half=half, column=0, is_z=1), den, 7, None))
        eff = max(den, 0)
        nums = [-128 * eff, 127 * eff, 1, -1, 0] if eff else [5, -5, 0]
        nums = [a for a in nums if fmt.numerator_format.contains(a)]
        for c, a in enumerate(nums):
            expected = int(divide_fixed(np.array([a]), eff)[0])
            beats.append((_element(NORM, token=token, out_half=half, column=1 + c % NORM.d), a, -3 - c, expected))
    out = []

    async def bench(ctx):
        for cycle in range(len(beats) + NORM_EXTRA_DEPTH + 1):
            if cycle < len(beats):
                fields, attn, conv, _ = beats[cycle]
                ctx.set(norm.numerator.element, fields)
                ctx.set(norm.numerator.attn, attn)
                ctx.set(norm.numerator.conv, conv)
            else:
                ctx.set(norm.numerator.element, _element(NORM, valid=0))
            if cycle >= NORM_EXTRA_DEPTH:
                out.append((ctx.get(norm.quotient.element.is_z), ctx.get(norm.quotient.element.column),
                            ctx.get(norm.quotient.attn), ctx.get(norm.quotient.conv)))
            await ctx.tick()

    _simulate(norm, bench)
    for (fields, _, conv, expected), (is_z, column, quotient, conv_out) in zip(beats, out):
        assert (is_z, column, conv_out) == (fields["is_z"], fields["column"], conv)
        if expected is not None:
            assert quotient == expected


def test_normalizer_needs_relu_norm():
    with pytest.raises(ValueError, match="feature_map='relu_norm', not 'relu'"):
        Normalizer(LinearDecodeConfig(d=8, macs=4))


# ---------------------------------------------------------------- StateLanes

LANES = LinearDecodeConfig(d=4, macs=2, conv_taps=1, t_max=3, max_tokens=8)   # G = 2, a narrow state


def _lanes_bench(cfg, init):
    m = Module()
    m.submodules.lanes = lanes = StateLanes(cfg)
    m.submodules.state = state = Memory(shape=cfg.state_word, depth=cfg.state_depth, init=init)
    wiring.connect(m, lanes.state_read[0], state.read_port())     # one slice at M <= 8
    wiring.connect(m, lanes.state_write[0], state.write_port())
    return m, lanes, state


@pytest.mark.parametrize("zero_bank, family", [(False, "ecp5"), (True, "ecp5"), (False, "ice40")])
def test_lanes_update_and_readout_match_the_golden_model(zero_bank, family):
    """One pass of T = 3 draft tokens over both row groups from a state near the wrap-around
    (bank 0, or a bank marked zero by reset): every numerator phi(q_tau)^T S_tau and the
    state written to bank 1 are the golden model's (verify, commit(T)). The readout products
    cut for ECP5 (the 19-bit state in one piece) and for the iCE40 (16 + 3 bits), each with its
    family's pipelining (the iCE40's: one lane group, a readout tree stage less)."""
    cfg = dataclasses.replace(LANES, dsp_family=family, pipelining=family)
    fmt = cfg.format
    d, macs, groups, t = cfg.d, cfg.macs, cfg.groups, 3
    rng = np.random.default_rng(5)
    s0 = rng.integers(fmt.state_format.max - 3000, fmt.state_format.max, size=(d, d))
    s0[::2] = rng.integers(fmt.state_format.min, fmt.state_format.min + 3000, size=(d // 2, d))
    q, k, v = (rng.integers(-128, 128, size=(t, d)) for _ in range(3))
    k[1, 0] = 127     # large positive products on a row near the maximum: the state wraps

    def addr(bank, g, j):
        return (bank * groups + g) * cfg.columns + j

    init = [[0] * macs for _ in range(cfg.state_depth)]
    for g in range(groups):
        for j in range(d):
            init[addr(0, g, j)] = [int(s0[g * macs + i, j]) for i in range(macs)]
    m, lanes, state = _lanes_bench(cfg, init)
    elements = [(g, j, tau) for g in range(groups) for j in range(d) for tau in range(t)]
    numerators = {}

    async def bench(ctx):
        fetch = lanes.fetch
        for cycle in range(len(elements) + cfg.pipe.lanes_latency + 2):   # the last numerator leaves the lanes
            if cycle < len(elements):
                g, j, _ = elements[cycle]
                ctx.set(fetch.state_addr, [addr(0, g, j)] * cfg.state_addr_roots)
            if 1 <= cycle <= len(elements):
                g, j, tau = elements[cycle - 1]
                ctx.set(fetch.element, _element(cfg, first_token=tau == 0, last_token=tau == t - 1,
                                                first_group=g == 0, last_group=g == groups - 1,
                                                bank_zero=zero_bank, token=tau, column=j,
                                                state_addr=addr(1, g, j)))
                ctx.set(fetch.v, int(v[tau, j]))
                ctx.set(fetch.phi_k, [int(max(x, 0)) for x in k[tau, g * macs:(g + 1) * macs]])
                ctx.set(fetch.phi_q, [int(max(x, 0)) for x in q[tau, g * macs:(g + 1) * macs]])
            else:
                ctx.set(fetch.element, _element(cfg, valid=0))
            out = lanes.numerator
            if ctx.get(out.element.valid) and ctx.get(out.element.last_group):
                numerators[ctx.get(out.element.token), ctx.get(out.element.column)] = ctx.get(out.attn)
            await ctx.tick()
        for g in range(groups):
            for j in range(d):
                word = ctx.get(state.data[addr(1, g, j)])
                for i in range(macs):
                    written[g * macs + i, j] = word[i]

    written = np.zeros((d, d), dtype=np.int64)
    _simulate(m, bench)

    golden = LinearDecodeGolden(fmt)
    golden.S = np.zeros((d, d), dtype=np.int64) if zero_bank else s0.astype(np.int64)
    S = golden.S.copy()
    for tau in range(t):
        S, _ = golden._fold(S, golden.z, k[tau], v[tau])
        expected = _wrap(np.maximum(q[tau], 0) @ S, fmt.numerator_format)
        assert [numerators[tau, j] for j in range(d)] == expected.tolist(), tau
    golden.verify(q, k, v)
    golden.commit(t)
    assert (written == golden.S).all()


# ---------------------------------------------------------------- OutputStage

@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_output_stage_emits_every_token_once_in_order_under_backpressure(family):
    """Six passes (1 to t_max tokens) into alternating halves, each claimed when free, with
    random o.ready: every token comes out once, in order, as sat_int8(attn_requant(A) +
    conv_requant(C)) (numfmt's Requantizer), and the stream rules hold. The requantizers'
    products cut for ECP5 (36-bit A: 17 + 17 + 2; 17-bit C: one) and for the iCE40 (16 + 16 + 4;
    15 + 2), each with its family's pipelining (the requantizer in 6 or 4 stages)."""
    cfg = LinearDecodeConfig(d=4, macs=4, conv_taps=2, t_max=3, attn_multiplier=40000, attn_shift=20,
                             conv_multiplier=30000, conv_shift=12, dsp_family=family, pipelining=family)
    fmt = cfg.format
    out_stage = OutputStage(cfg)
    rng = random.Random(3)
    passes = [rng.randint(1, cfg.t_max) for _ in range(6)]
    na, nc = fmt.numerator_format, fmt.conv_format
    expected, got = [], []

    async def drive(ctx):
        half = 0
        for tokens in passes:
            ctx.set(out_stage.half.half, half)
            while not ctx.get(out_stage.half.free):
                await ctx.tick()
            ctx.set(out_stage.half.claim, 1)
            await ctx.tick()
            ctx.set(out_stage.half.claim, 0)
            values = {}
            for j in range(cfg.d):
                for tau in range(tokens):
                    a, c = rng.randint(na.min, na.max) >> rng.randint(0, 30), rng.randint(nc.min, nc.max)
                    values[tau, j] = (a, c)
                    ctx.set(out_stage.result.element, _element(cfg, token=tau, column=j, out_half=half, tokens=tokens,
                                                               pass_end=(j == cfg.d - 1) & (tau == tokens - 1)))
                    ctx.set(out_stage.result.attn, a)
                    ctx.set(out_stage.result.conv, c)
                    await ctx.tick()
                    ctx.set(out_stage.result.element, _element(cfg, valid=0))
                    for _ in range(rng.choice([0, 0, 0, 2])):
                        await ctx.tick()
            for tau in range(tokens):
                expected.append([saturate(fmt.attn_requant(values[tau, j][0]) + fmt.conv_requant(values[tau, j][1]),
                                          INT8)
                                 for j in range(cfg.d)])
            half ^= 1

    async def sink(ctx):
        held = None
        for _ in range(600):
            ctx.set(out_stage.o.ready, rng.random() < 0.4)
            valid, ready = ctx.get(out_stage.o.valid), ctx.get(out_stage.o.ready)
            payload = [int(x) for x in ctx.get(out_stage.o.payload)] if valid else None
            if held is not None:
                assert valid and payload == held, "valid dropped or payload changed before the transfer"
            if valid and ready:
                got.append(payload)
            held = payload if valid and not ready else None
            await ctx.tick()

    sim = Simulator(out_stage)
    sim.add_clock(1e-6)
    sim.add_testbench(drive, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert len(expected) == sum(passes)
    assert got == expected


# ---------------------------------------------------------------- DraftBlock

# 3 slices (d = 16), one slice (d = 4); the ECP5's levels (read 4, write 3: a read sees the writes up
# to its address's cycle) and the iCE40's (read 3, write 1: up to a cycle after)
# (at t_max 1 the block is one word, registers without an address)
@pytest.mark.parametrize("d, t_max, pipelining", [(16, 4, "ecp5"), (4, 2, "ecp5"), (16, 4, "ice40"), (4, 2, "ice40"),
                                                  (16, 1, "ice40"), (4, 1, "ecp5")])
def test_draft_block_reads_like_a_transparent_memory(d, t_max, pipelining):
    """The sliced draft block with its registered write and its read address's register levels reads
    back, block_read_latency cycles after the address, what one memory gives with the writes taken up
    to block_read_sees cycles after the address (a plain Python list here): a read addressed in the
    cycle of the write (the write in flight), in the next cycle and later, with writes in
    consecutive cycles and to the address being read; a write taken after the address is not seen."""
    cfg = LinearDecodeConfig(d=d, macs=d, t_max=t_max, pipelining=pipelining)
    assert cfg.pipe.block_read_sees == {"ecp5": 0, "ice40": 1}[pipelining]
    assert cfg.block_slices == (3 if d == 16 else 1)
    dut = DraftBlock(cfg)
    width = 3 * d * 8
    rng = random.Random(d)
    mem = [None] * cfg.block_depth       # None: never written (not compared)
    seen = {"hits": 0, "compared": 0}

    async def bench(ctx):
        addresses, memories = [], []       # per cycle: the read address, the memory after its writes
        lag = cfg.pipe.block_read_latency
        for _ in range(400):
            addr, read = rng.randrange(t_max), rng.randrange(t_max)
            en = rng.random() < 0.6
            value = rng.getrandbits(width)
            ctx.set(dut.write.addr, addr)
            ctx.set(dut.write.en, en)
            ctx.set(dut.write.data.as_value(), value)
            ctx.set(dut.read.addr, read)
            if en:
                mem[addr] = value
                seen["hits"] += addr == read
            addresses.append(read)
            memories.append(list(mem))
            await ctx.tick()
            # now in cycle c + lag: the data of the address of cycle c, with the writes up to
            # c + block_read_sees
            c = len(addresses) - lag
            if c >= 0:
                expected = memories[c + cfg.pipe.block_read_sees][addresses[c]]
                if expected is not None:
                    assert ctx.get(dut.read.data.as_value()) == expected
                    seen["compared"] += 1

    _simulate(dut, bench)
    assert seen["compared"] > 200 and seen["hits"] > 20


# ---------------------------------------------------------------- CommandControl

CTRL = LinearDecodeConfig(d=4, macs=2, conv_taps=2, t_max=4, heads=2, max_tokens=5)   # G = 2, 4 columns


class _ControlBench:
    """The command control with its draft-block memory and an always-free output half."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.m = m = Module()
        m.submodules.control = self.dut = dut = CommandControl(cfg)
        m.submodules.block = block = DraftBlock(cfg)
        wiring.connect(m, dut.block_write, block.write)
        wiring.connect(m, dut.block_read, block.read)
        m.d.comb += dut.half.free.eq(1)
        self.elements, self.emitting, self.shifts, self.claims = 0, 0, 0, 0

    async def tick(self, ctx):
        dut = self.dut
        element = dut.fetch.element
        self.elements += ctx.get(element.valid)
        self.emitting += ctx.get(element.valid) & ctx.get(element.emit)
        self.shifts += ctx.get(dut.conv.history_shift)
        self.claims += ctx.get(dut.half.claim)
        await ctx.tick()

    def command(self, cmd, head=0, a=0, last=0):
        d = self.cfg.d
        return {"cmd": cmd, "head": head, "a": a, "last": last, "q": [1] * d, "k": [2] * d, "v": [3] * d}

    async def send(self, ctx, cmd, head=0, a=0, last=0):
        dut = self.dut
        ctx.set(dut.i.payload, self.command(cmd, head, a, last))
        ctx.set(dut.i.valid, 1)
        while not ctx.get(dut.i.ready):
            await self.tick(ctx)
        await self.tick(ctx)
        ctx.set(dut.i.valid, 0)
        for _ in range(200):          # run the pass / history shifts to the end
            if ctx.get(dut.i.ready):
                break
            await self.tick(ctx)
        for _ in range(self.cfg.pipe.fetch_stages):  # the last element leaves the fetch registers
            await self.tick(ctx)

    async def block(self, ctx, tokens, head=0):
        for tau in range(tokens):
            await self.send(ctx, CMD_TOKEN, head=head, last=int(tau == tokens - 1))

    def counts(self):
        counts = (self.elements, self.emitting, self.shifts, self.claims)
        self.elements = self.emitting = self.shifts = self.claims = 0
        return counts


@pytest.mark.parametrize("pipelining", ["ecp5", "ice40"])
def test_control_verify_and_commit_rules(pipelining):
    """A block of T tokens is one output pass of T * G * d elements; commit(T) only flips the bank
    and shifts T history rows; commit(a), 0 < a < T, replays a tokens without outputs; commit(0),
    a commit without a pending block and one with a > T change nothing; a second block drops the
    first (each family's pipelining: fetch stages and the draft block's levels)."""
    bench = _ControlBench(dataclasses.replace(CTRL, pipelining=pipelining))
    per_token = CTRL.groups * CTRL.columns
    seen = {}

    async def run(ctx):
        dut = bench.dut
        await bench.block(ctx, 3)
        seen["verify3"] = bench.counts()
        await bench.send(ctx, CMD_COMMIT, a=3)
        seen["commit3"] = bench.counts()
        await bench.send(ctx, CMD_COMMIT, a=1)                 # nothing pending: ignored
        seen["commit_none"] = bench.counts()
        await bench.block(ctx, 2)
        bench.counts()
        await bench.send(ctx, CMD_COMMIT, a=3)                 # a > T: ignored, block still pending
        seen["commit_too_many"] = bench.counts()
        await bench.send(ctx, CMD_COMMIT, a=1)                 # replay of one token, one history row
        seen["commit1_of2"] = bench.counts()
        await bench.block(ctx, 4)
        await bench.block(ctx, 1)                              # drops the pending block of 4
        bench.counts()
        await bench.send(ctx, CMD_COMMIT, a=2)                 # > the new block's 1: ignored
        seen["dropped"] = bench.counts()
        await bench.send(ctx, CMD_COMMIT, a=0)
        seen["commit0"] = bench.counts()
        seen["overflow"] = ctx.get(dut.overflow)

    _simulate(bench.m, run)
    assert seen["verify3"] == (3 * per_token, 3 * per_token, 0, 1)
    assert seen["commit3"] == (0, 0, 3, 0)
    assert seen["commit_none"] == (0, 0, 0, 0)
    assert seen["commit_too_many"] == (0, 0, 0, 0)
    assert seen["commit1_of2"] == (1 * per_token, 0, 1, 0)
    assert seen["dropped"] == (0, 0, 0, 0)
    assert seen["commit0"] == (0, 0, 0, 0)
    assert seen["overflow"] == 0                               # 3 + 1 committed <= max_tokens = 5


def test_control_overflow_flag_is_sticky_per_head_and_cleared_by_reset():
    """max_tokens = 5: the flag of head 1 rises with the commit that passes 5, stays through
    further commits, and only a reset of head 1 clears it; head 0 is untouched. Taps loads
    and resets are refused while a pass runs (i.ready low)."""
    bench = _ControlBench(CTRL)
    flags = []

    async def run(ctx):
        dut = bench.dut
        for a in (2, 3, 1, 1):
            await bench.block(ctx, a, head=1)
            await bench.send(ctx, CMD_COMMIT, head=1, a=a)
            flags.append(ctx.get(dut.overflow))
        await bench.send(ctx, CMD_TAPS, head=1, a=1)
        await bench.send(ctx, CMD_RESET, head=0)
        flags.append(ctx.get(dut.overflow))
        await bench.send(ctx, CMD_RESET, head=1)
        flags.append(ctx.get(dut.overflow))
        # i.ready is low for the whole pass of a block
        ctx.set(dut.i.payload, bench.command(CMD_TOKEN, last=1))
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        busy = 0
        while not ctx.get(dut.i.ready):
            busy += 1
            await ctx.tick()
        flags.append(busy)

    _simulate(bench.m, run)
    # committed 2, 5 (not past), 6 (past: flag), 7 (stays); head 0's reset keeps it; head 1's clears it
    assert flags == [0, 0, 0b10, 0b10, 0b10, 0, CTRL.groups * CTRL.columns]


# ---------------------------------------------------------------- Convolution

@pytest.mark.parametrize("d, pipelining", [(4, "ecp5"), (20, "ecp5"), (20, "ice40")])
def test_convolution_window_spans_history_and_drafts(d, pipelining):
    """C[j] of draft token tau = sum_m w[m][j] * v_{tau-m}[j], where v_{tau-m} for tau - m < 0
    is the committed history (newest first), one head among two, every column, with the sum
    the lanes' latency after the element's update stage (each family's pipelining). d = 20: rows of three groups of eight
    bytes (the last one padded), each byte lane with its own column copy (ECP5; the iCE40 picks the byte in one step
    from one copy)."""
    cfg = LinearDecodeConfig(d=d, macs=4, conv_taps=3, heads=2, t_max=4, pipelining=pipelining)
    dut = Convolution(cfg)
    rng = np.random.default_rng(7)
    taps = rng.integers(-128, 128, (3, d))
    committed = rng.integers(-128, 128, (2, d))          # shifted in oldest first
    drafts = rng.integers(-128, 128, (4, d))
    history = committed[::-1]                             # newest first
    head, n_tok = 1, 4
    schedule = [(j, tau) for j in range(d) for tau in range(n_tok)]
    copies = conv_column_copies(d, cfg.pipe.conv_group_select)
    sums = []

    async def bench(ctx):
        ctl = dut.control
        ctx.set(ctl.head, head)
        for n in range(3):
            ctx.set(ctl.taps_load, 1)
            ctx.set(ctl.taps_index, n)
            ctx.set(ctl.row, [int(x) for x in taps[n]])
            await ctx.tick()
        ctx.set(ctl.taps_load, 0)
        lag = cfg.pipe.block_read_latency     # each v comes that many cycles after its shift strobe
        for t in range(len(committed) + lag):
            ctx.set(ctl.history_shift, int(t < len(committed)))
            if 0 <= t - lag < len(committed):
                ctx.set(ctl.history_row, [int(x) for x in committed[t - lag]])
            await ctx.tick()
        ctx.set(ctl.head, 0)   # commands to the other head must not disturb this one
        ctx.set(ctl.history_clear, 1)
        await ctx.tick()
        ctx.set(ctl.history_clear, 0)
        for _ in range(lag):           # the clear's write, as the control leaves it (a beat, the issue)
            await ctx.tick()
        fetch = dut.fetch
        for cycle in range(len(schedule) + cfg.pipe.lanes_latency + 2):
            if cycle < len(schedule):          # fetch: a cycle ahead of the update stage
                ctx.set(fetch.head, head)
                ctx.set(fetch.data_column, schedule[cycle][0])
                ctx.set(fetch.conv_column, [[schedule[cycle][0]] * copies] * (2 * 3 - 1))   # the copies per row
            update = cycle - 1
            if 0 <= update < len(schedule):
                j, tau = schedule[update]
                ctx.set(fetch.element.valid, 1)
                ctx.set(fetch.element.first_token, tau == 0)
                ctx.set(fetch.v, int(drafts[tau][j]))
            else:
                ctx.set(fetch.element.valid, 0)
            sums.append(ctx.get(dut.sum))
            await ctx.tick()

    _simulate(dut, bench)
    for k, (j, tau) in enumerate(schedule):
        window = [drafts[tau - m][j] if tau - m >= 0 else history[m - tau - 1][j] for m in range(3)]
        want = sum(int(taps[m][j]) * int(window[m]) for m in range(3))
        assert sums[1 + k + cfg.pipe.lanes_latency] == want, (j, tau)
