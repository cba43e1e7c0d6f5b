"""Requantization stage generator: parameter checks and lint."""

import pytest

from attnforge.hw.common.requant import MAX_SHIFT, RequantLine, RequantLineConfig
from attnforge.hw.verilog import write_verilog
from attnforge.sim.lint import lint_verilog


def test_init_wrong_lanes_zero():
    with pytest.raises(ValueError, match=r"lanes must be in \[1, 1024\], not 0"):
        RequantLineConfig(lanes=0)


def test_init_wrong_in_width_type():
    with pytest.raises(TypeError, match="in_width must be an integer, not '28'"):
        RequantLineConfig(in_width="28")


def test_init_wrong_multiplier_width():
    with pytest.raises(ValueError, match=r"multiplier_width must be in \[1, 32\], not 33"):
        RequantLineConfig(multiplier_width=33)


def test_init_wrong_out_wider_than_in():
    with pytest.raises(ValueError, match="out_width=16 is wider than in_width=12"):
        RequantLineConfig(in_width=12, out_width=16)


def test_golden_rounds_half_up_and_saturates_to_the_output_width():
    """Worked by hand: y = sat6((x * 100 + 4) >> 3), int6 is [-32, 31]."""
    golden = RequantLineConfig(out_width=6, multiplier_width=12).golden(100, 3)
    assert [golden(x) for x in (0, 1, 2, -1, -2, 3, -3, 5, -5)] == [0, 13, 25, -12, -25, 31, -32, 31, -32]


def test_lint_clean(tmp_path):
    path = write_verilog(RequantLine(RequantLineConfig()), "requant_line", tmp_path / "r.v")
    result = lint_verilog(path, "requant_line")
    assert result.clean, result.messages


def _two_stage_requant(values, shifts, width):
    """``requant_finish(requant_shift(p, s), s != 0)`` on Amaranth's simulator, one (p, s) per step."""
    from amaranth.hdl import Module, Signal, signed
    from amaranth.sim import Simulator

    from attnforge.hw.common.requant import requant_finish, requant_shift

    m = Module()
    p, s = Signal(signed(width)), Signal(range(MAX_SHIFT + 1))
    y = Signal(signed(8))
    m.d.comb += y.eq(requant_finish(requant_shift(p, s), s != 0))
    got = []

    async def bench(ctx):
        for value, shift in zip(values, shifts):
            ctx.set(p, value)
            ctx.set(s, shift)
            got.append(ctx.get(y))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return got


def _rounded(p, s):
    """The requantizer's rounding and int8 saturation, written out (``Requantizer``'s definition)."""
    return max(-128, min(127, (p + ((1 << s) >> 1)) >> s))


def test_shift_then_round_equals_the_rounding_shift_exhaustively_at_small_widths():
    """The split rounding shift (the output stage's shift, then round and saturate, a register
    between them) against round-half-up in one step: every product of 11 bits, shifts 0..12."""
    pairs = [(p, s) for s in range(13) for p in range(-1024, 1024)]
    got = _two_stage_requant([p for p, _ in pairs], [s for _, s in pairs], 11)
    assert got == [_rounded(p, s) for p, s in pairs]


def test_shift_then_round_equals_the_rounding_shift_at_full_width():
    """Random 48-bit products (the output requantizer's width) and every shift up to MAX_SHIFT."""
    import random

    rng = random.Random(15)
    pairs = [(rng.randrange(-(1 << 47), 1 << 47) >> rng.randrange(48), rng.randrange(MAX_SHIFT + 1))
             for _ in range(3000)]
    pairs += [(-(1 << 47), MAX_SHIFT), ((1 << 47) - 1, MAX_SHIFT), (-1, 1), (1, 1), (255, 1), (-257, 1)]
    got = _two_stage_requant([p for p, _ in pairs], [s for _, s in pairs], 48)
    assert got == [_rounded(p, s) for p, s in pairs]
