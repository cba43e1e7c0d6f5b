"""Requantization stage generator: parameter checks and lint."""

import pytest

from attnforge.hw.common.requant import RequantLine, RequantLineConfig
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
