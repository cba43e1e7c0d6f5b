"""Unit tests of hw/common's blocks in amaranth.sim (no Verilator build).

Every expected value comes from an independent definition: Python integer
division, ``attnforge.numfmt.Requantizer``, ``sum``/indexing, or a plain queue
model of a stream; never from the same Amaranth expressions.
"""

import random
import re

import pytest
from amaranth.hdl import Elaboratable, Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from attnforge.errors import ConfigError
from attnforge.hw.common import (
    MAX_SHIFT, ConfiguredComponent, LockstepPipeline, PipelinedDivider, RequantLine, RequantLineConfig,
    DSP_PIECE, SerialDivider, SkidBuffer, dsp_cut, mux_tree, requant_product, requant_round, requantize, rom,
    saturate, split_product, tree_sum,
)
from attnforge.numfmt import INT8, IntFormat, Requantizer
from attnforge.softmax_int import EXP_BITS, RECIP_BITS, recip_width, sum_width


def run(dut, bench, *, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


class Comb(Elaboratable):
    """Inputs and one combinational output built by ``build(m, *inputs)``."""

    def __init__(self, shapes, out_shape, build):
        self.inputs = [Signal(s, name=f"in{k}") for k, s in enumerate(shapes)]
        self.out = Signal(out_shape)
        self._build = build

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.out.eq(self._build(*self.inputs))
        return m


# ----------------------------------------------------------------- requantizer

@pytest.mark.parametrize("out", [INT8, IntFormat(4), IntFormat(16, signed=False)], ids=["int8", "int4", "uint16"])
def test_requantize_rounds_and_saturates_like_numfmt_at_every_shift(out):
    rng = random.Random(3)
    mult_width, in_width = 16, 24
    out_shape = signed(out.width) if out.signed else unsigned(out.width)
    dut = Comb([signed(in_width), unsigned(mult_width), range(MAX_SHIFT + 1)], out_shape,
               lambda v, mul, sh: requantize(v, mul, sh, out))
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    cases = []
    for shift in range(MAX_SHIFT + 1):
        for mult in (0, 1, (1 << mult_width) - 1, rng.randrange(1 << mult_width)):
            # exact half-way points around 0 and the extremes, where rounding and saturation act
            half = (1 << (shift - 1)) if shift else 0
            values = {lo, hi, 0, 1, -1, half, -half, rng.randint(lo, hi)}
            cases += [(v, mult, shift) for v in values if lo <= v <= hi]

    async def bench(ctx):
        for v, mult, shift in cases:
            ctx.set(dut.inputs[0], v)
            ctx.set(dut.inputs[1], mult)
            ctx.set(dut.inputs[2], shift)
            want = Requantizer(mult, shift, out, mult_width)(v)
            assert ctx.get(dut.out) == want, (v, mult, shift)

    run(dut, bench, clock=False)
    assert len(cases) > 500


@pytest.mark.parametrize("value_signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("fmt", [IntFormat(4), IntFormat(2), IntFormat(3, signed=False), IntFormat(1, signed=False)],
                         ids=["int4", "int2", "uint3", "uint1"])
@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7])
def test_saturate_clamps_every_value_of_small_widths(width, value_signed, fmt):
    """Every value of each width, against Python's min/max: the bit tests that replace the
    comparisons, at widths below, at and above the format's (signed 1 bit is -1..0)."""
    shape = signed(width) if value_signed else unsigned(width)
    dut = Comb([shape], signed(max(width, fmt.width) + 2), lambda v: saturate(v, fmt))
    lo = -(1 << (width - 1)) if value_signed else 0
    values = range(lo, lo + (1 << width))

    async def bench(ctx):
        for v in values:
            ctx.set(dut.inputs[0], v)
            assert ctx.get(dut.out) == min(max(v, fmt.min), fmt.max), (v, shape, fmt)

    run(dut, bench, clock=False)


@pytest.mark.parametrize("out", [INT8, IntFormat(16, signed=False)], ids=["int8", "uint16"])
def test_requant_round_has_the_format_shape(out):
    """A caller may use the result as is (Cat it into a word, add two of them)."""
    value = requant_round(Signal(signed(30)), Signal(range(MAX_SHIFT + 1)), out)
    assert value.shape() == (signed(out.width) if out.signed else unsigned(out.width))


def test_requant_halves_equal_the_whole():
    """An engine may register the product between the halves; the value is the same."""
    dut = Comb([signed(12), unsigned(8), range(MAX_SHIFT + 1)], signed(8),
               lambda v, mul, sh: requant_round(requant_product(v, mul), sh))

    async def bench(ctx):
        rng = random.Random(5)
        for _ in range(300):
            v, mul, sh = rng.randint(-2048, 2047), rng.randrange(256), rng.randrange(20)
            ctx.set(dut.inputs[0], v)
            ctx.set(dut.inputs[1], mul)
            ctx.set(dut.inputs[2], sh)
            assert ctx.get(dut.out) == Requantizer(mul, sh, INT8, 8)(v)

    run(dut, bench, clock=False)


def test_requant_line_stalls_without_losing_transfers():
    cfg = RequantLineConfig(lanes=2, in_width=16, multiplier_width=8)
    dut = RequantLine(cfg)
    rng = random.Random(11)
    sent = [[rng.randint(-30000, 30000) for _ in range(2)] for _ in range(40)]
    golden = cfg.golden(200, 9)
    got = []

    async def bench(ctx):
        ctx.set(dut.multiplier, 200)
        ctx.set(dut.shift, 9)
        k = 0
        for _ in range(400):
            ctx.set(dut.o.ready, rng.random() < 0.6)
            if k < len(sent):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.p, sent[k])
            else:
                ctx.set(dut.i.valid, 0)
            took_in = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
            took_out = ctx.get(dut.o.valid) and ctx.get(dut.o.ready)
            if took_out:
                got.append([ctx.get(dut.o.p[n]) for n in range(2)])
            await ctx.tick()
            k += bool(took_in)

    run(dut, bench)
    assert got == [[golden(v) for v in beat] for beat in sent]


# ----------------------------------------------------------------- dividers

SOFTMAX_SUM = sum_width(197) + 1   # the ViTCoD softmax divisor for N = 197


@pytest.mark.parametrize("bits_per_cycle", [1, 2, 5])
def test_serial_divider_values_and_timing(bits_per_cycle):
    q_bits = recip_width()
    dut = SerialDivider(dividend=1 << RECIP_BITS, divisor_width=SOFTMAX_SUM, quotient_bits=q_bits,
                        bits_per_cycle=bits_per_cycle)
    smallest = ((1 << RECIP_BITS) >> q_bits) + 1
    divisors = [0, 1 << EXP_BITS, smallest, (1 << SOFTMAX_SUM) - 1, 12345678, (1 << EXP_BITS) * 197]
    run_cycles = -(-q_bits // bits_per_cycle)

    async def bench(ctx):
        for divisor in divisors:
            assert not ctx.get(dut.busy)
            ctx.set(dut.divisor, divisor)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.divisor, 0xABCD)   # latched at start: later changes must not matter
            cycles = 0
            while not ctx.get(dut.done):
                assert ctx.get(dut.busy)
                await ctx.tick()
                cycles += 1
            assert cycles == (1 if divisor == 0 else run_cycles), divisor
            want = 0 if divisor == 0 else (1 << RECIP_BITS) // divisor
            assert ctx.get(dut.quotient) == want, divisor
            await ctx.tick()

    run(dut, bench)


def test_serial_divider_ignores_start_while_busy():
    dut = SerialDivider(dividend=1 << 8, divisor_width=8, quotient_bits=8, bits_per_cycle=1)

    async def bench(ctx):
        ctx.set(dut.divisor, 3)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.divisor, 7)          # start held high with another divisor: ignored until idle
        while not ctx.get(dut.done):
            await ctx.tick()
        assert ctx.get(dut.quotient) == 256 // 3

    run(dut, bench)


@pytest.mark.parametrize("stages", [1, 3, 4, 16])
def test_pipelined_divider_one_result_per_cycle(stages):
    dividend, width, q_bits = 1 << 15, 16, 16
    dut = PipelinedDivider(dividend=dividend, divisor_width=width, quotient_bits=q_bits, stages=stages,
                           tag_shape=8)
    rng = random.Random(stages)
    divisors = [0, 1, 2, 3, (1 << width) - 1, 1 << 15, (1 << 15) + 1] + [rng.randrange(1 << width) for _ in range(40)]
    latency = stages - 1
    got = {}

    async def bench(ctx):
        for cycle in range(len(divisors) + latency + 2):
            if cycle < len(divisors):
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.i_divisor, divisors[cycle])
                ctx.set(dut.i_tag, cycle)
            else:
                ctx.set(dut.i_valid, 0)
            if ctx.get(dut.o_valid):
                got[ctx.get(dut.o_tag)] = (cycle, ctx.get(dut.o_quotient))
            if latency:
                await ctx.tick()
            else:
                await ctx.delay(1e-6)      # one stage: combinational, no clock domain

    run(dut, bench, clock=bool(latency))
    assert sorted(got) == list(range(len(divisors)))
    for tag, divisor in enumerate(divisors):
        cycle, quotient = got[tag]
        assert cycle == tag + latency
        assert quotient == (0 if divisor == 0 else dividend // divisor), divisor


def test_divider_parameter_checks():
    with pytest.raises(ConfigError, match=r"dividend .* does not fit the remainder register"):
        PipelinedDivider(dividend=1 << 40, divisor_width=4, quotient_bits=8, stages=2)
    with pytest.raises(ConfigError, match=r"must be a multiple of 2\*\*quotient_bits"):
        SerialDivider(dividend=(1 << 20) + 1, divisor_width=16, quotient_bits=8)
    with pytest.raises(ConfigError, match=r"divider stages must be in \[1, 8\], not 9"):
        PipelinedDivider(dividend=1 << 7, divisor_width=8, quotient_bits=8, stages=9)
    with pytest.raises(TypeError, match="divider bits_per_cycle must be an integer"):
        SerialDivider(dividend=1 << 8, divisor_width=8, quotient_bits=8, bits_per_cycle=1.5)


# ----------------------------------------------------------------- trees

def test_tree_sum_mux_tree_rom():
    rng = random.Random(2)
    values = [rng.randint(-128, 127) for _ in range(7)]
    table = [rng.randrange(1 << 10) for _ in range(11)]
    sums = Comb([signed(8)] * 7, signed(16), lambda *v: tree_sum(v))
    pick = Comb([signed(8)] * 7 + [range(8)], signed(8), lambda *v: mux_tree(v[:-1], v[-1]))
    table_rd = Comb([range(16)], 10, lambda i: rom(table, 10, i))

    async def bench_sum(ctx):
        for _ in range(50):
            vals = [rng.randint(-128, 127) for _ in range(7)]
            for s, v in zip(sums.inputs, vals):
                ctx.set(s, v)
            assert ctx.get(sums.out) == sum(vals)

    async def bench_pick(ctx):
        for s, v in zip(pick.inputs, values):
            ctx.set(s, v)
        for i in range(7):
            ctx.set(pick.inputs[-1], i)
            assert ctx.get(pick.out) == values[i]

    async def bench_rom(ctx):
        for i in range(11):
            ctx.set(table_rd.inputs[0], i)
            assert ctx.get(table_rd.out) == table[i]

    run(sums, bench_sum, clock=False)
    run(pick, bench_pick, clock=False)
    run(table_rd, bench_rom, clock=False)
    with pytest.raises(ValueError, match="at least one value"):
        tree_sum([])


# ----------------------------------------------------------------- streams

def _drive_stream(dut, sent, rng, p_valid, p_ready, cycles):
    """Random source and sink around a stream component; returns what the sink took."""
    got = []

    async def bench(ctx):
        k = 0
        for _ in range(cycles):
            ctx.set(dut.o.ready, rng.random() < p_ready)
            offer = k < len(sent) and rng.random() < p_valid
            ctx.set(dut.i.valid, offer)
            if offer:
                ctx.set(dut.i.payload, sent[k])
            took_in = offer and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append(ctx.get(dut.o.payload))
            await ctx.tick()
            k += bool(took_in)

    run(dut, bench)
    return got


def _check_split_product(narrow, wide, cut, pairs):
    """``split_product`` at ``cut`` (piece, top) gives Python's product of each pair two cycles after
    it is presented."""
    m = Module()
    a, b = Signal(narrow), Signal(wide)
    out = split_product(m, a, b, "p", *cut)

    async def bench(ctx):
        got = []
        for n in range(len(pairs) + 2):
            if n < len(pairs):
                ctx.set(a, pairs[n][0])
                ctx.set(b, pairs[n][1])
            await ctx.tick()
            if n >= 1:
                got.append(ctx.get(out))
        assert got[:len(pairs)] == [x * y for x, y in pairs]

    run(m, bench)


def _range(shape):
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    return lo, lo + (1 << shape.width) - 1


@pytest.mark.parametrize("narrow, wide, cut", [
    (unsigned(7), signed(27), (17, 18)),   # linear decode's readout on ECP5: phi(q) x state, 17 + 10 bits
    (signed(17), signed(40), (17, 18)),    # a requantizer: signed multiplier x numerator, three pieces
    (unsigned(3), signed(5), (17, 18)),    # one piece
    (signed(18), unsigned(35), (17, 18)),  # unsigned wide operand, the widest narrow one
    (unsigned(7), signed(22), (16, 16)),   # the readout on the iCE40 (max_tokens 64): 16 + 6 bits
    (signed(17), signed(32), (16, 16)),    # a requantizer on the iCE40: 16 + 16
    (signed(17), signed(17), (16, 16)),    # a one-bit top takes a bit from the piece below: 15 + 2
    (unsigned(7), signed(33), (16, 16)),   # 16 + 15 + 2
    (unsigned(16), unsigned(31), (16, 16)),  # unsigned wide operand, 16 + 15
])
def test_split_product_is_the_product_two_cycles_later(narrow, wide, cut):
    """Python's integer product of the extremes and random pairs at full width, two cycles
    after each is presented, at ECP5's and the iCE40's cuts."""
    rng = random.Random(narrow.width * 100 + wide.width + cut[0])

    def values(shape):
        lo, hi = _range(shape)
        if shape.width <= 5:
            return list(range(lo, hi + 1))
        return [lo, hi, 0, 1, -1 if shape.signed else 2] + [rng.randint(lo, hi) for _ in range(40)]

    pairs = [(x, y) for x in values(narrow) for y in values(wide)]
    if len(pairs) > 600:
        pairs = pairs[:25] + rng.sample(pairs, 575)
    _check_split_product(narrow, wide, cut, pairs)


@pytest.mark.parametrize("narrow", [unsigned(3), signed(3)])
@pytest.mark.parametrize("wide, cut", [(signed(11), (8, 9)), (signed(12), (8, 8)), (signed(9), (8, 8))])
def test_split_product_exhaustive_at_the_narrowest_piece(narrow, wide, cut):
    """Every pair at 8-bit pieces: a signed 11-bit operand as 8 + 3 bits (top = piece + 1), a 12-bit
    one as 8 + 4 (top = piece), a 9-bit one as 7 + 2 (the one-bit top takes a bit from below), so
    every carry out of the low piece and every sign of the top is seen; against Python's product."""
    lo, hi = _range(narrow)
    wlo, whi = _range(wide)
    pairs = [(x, y) for x in range(lo, hi + 1) for y in range(wlo, whi + 1)]
    _check_split_product(narrow, wide, cut, pairs)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("piece, top, error, message", [
    (7, None, ConfigError, "split_product piece must be in [8, 17], not 7"),
    (18, None, ConfigError, "split_product piece must be in [8, 17], not 18"),
    ("15", None, TypeError, "split_product piece must be an integer, not '15'"),
    (16, 18, ConfigError, "split_product top must be 16 or 17 (piece 16 or piece + 1), not 18"),
    (16, 15, ConfigError, "split_product top must be 16 or 17 (piece 16 or piece + 1), not 15"),
])
def test_split_product_refuses_a_cut_out_of_range(piece, top, error, message):
    with pytest.raises(error, match=re.escape(message)):
        split_product(Module(), Signal(7), Signal(signed(22)), "p", piece, top)


def test_dsp_cut_for_each_family():
    assert dsp_cut("ecp5") == (DSP_PIECE, DSP_PIECE + 1) == (17, 18) and dsp_cut("ice40") == (16, 16)
    with pytest.raises(ValueError, match="no DSP cut for FPGA family 'xc7'; known: ecp5, ice40"):
        dsp_cut("xc7")


@pytest.mark.parametrize("p_valid,p_ready", [(1.0, 1.0), (1.0, 0.3), (0.4, 0.9), (0.7, 0.5)])
def test_skid_buffer_keeps_order_under_random_stall(p_valid, p_ready):
    rng = random.Random(int(p_valid * 10 + p_ready * 100))
    sent = [rng.randrange(256) for _ in range(200)]
    got = _drive_stream(SkidBuffer(8), sent, rng, p_valid, p_ready, 2000)
    assert got == sent


def test_skid_buffer_full_throughput():
    """Source and sink always ready: one transfer per cycle after one cycle of latency."""
    sent = list(range(50))
    got = _drive_stream(SkidBuffer(8), sent, random.Random(0), 1.0, 1.0, 51)
    assert got == sent


class TwoStageScale(wiring.Component):
    """x -> (x * 3) -> (+ 1), two lockstep stages; the test's model is (3x + 1)."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(12))

    def elaborate(self, platform):
        m = Module()
        pipe = LockstepPipeline(m, depth=2, ready=self.o.ready, name="scale")
        m.d.comb += self.i.ready.eq(pipe.advance)
        tripled = pipe.stage(0, self.i.payload * 3, valid=self.i.valid)
        plus_one = pipe.stage(1, tripled + 1)
        m.d.comb += [self.o.valid.eq(pipe.valid[-1]), self.o.payload.eq(plus_one)]
        return m


@pytest.mark.parametrize("p_ready", [1.0, 0.5, 0.1])
def test_lockstep_pipeline_stalls_together(p_ready):
    rng = random.Random(int(p_ready * 10))
    sent = [rng.randrange(256) for _ in range(100)]
    got = _drive_stream(TwoStageScale(), sent, rng, 0.8, p_ready, 3000)
    assert got == [3 * x + 1 for x in sent]


# ----------------------------------------------------------------- component constructor

def test_configured_component_refuses_another_config():
    with pytest.raises(TypeError, match="RequantLine needs a RequantLineConfig, not 8"):
        RequantLine(8)

    class Bare(ConfiguredComponent):
        config_type = int

    with pytest.raises(NotImplementedError, match="Bare must define signature_of"):
        Bare(3)
