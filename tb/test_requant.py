"""Runs the requantization stage's testbench (tb/requant_tb.py) on both simulators."""

from pathlib import Path

import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.requant import RequantLineConfig
from attnforge.sim.runner import simulate

BUILD = Path(__file__).resolve().parent.parent / "build" / "test_sim"


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("params", [dict(lanes=1, in_width=20), dict(lanes=4, in_width=64, multiplier_width=32),
                                    dict(lanes=3, in_width=12, multiplier_width=8, out_width=4)])
def test_requant_line_rtl_matches_numfmt(simulator, params):
    config = RequantLineConfig(**params)
    result = simulate(get_design("requant-line"), config, seed=7, simulator=simulator, build_root=BUILD)
    assert result.passed, f"see {result.log}"
