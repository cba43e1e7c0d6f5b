"""Runs the requantization stage's testbench (tb/requant_tb.py) on both simulators
(Icarus on one configuration in ``make test``, on all in ``make test-full``)."""

from pathlib import Path

import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.common.requant import RequantLineConfig
from attnforge.sim.runner import simulate

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"


PARAMS = [dict(lanes=1, in_width=20), dict(lanes=4, in_width=64, multiplier_width=32),
          dict(lanes=3, in_width=12, multiplier_width=8, out_width=4)]
# Every configuration on Verilator; on Icarus the first in make test, all in make test-full.
CASES = [(p, sim) if sim == "verilator" or i == 0 else pytest.param(p, sim, marks=pytest.mark.full)
         for i, p in enumerate(PARAMS) for sim in ("verilator", "icarus")]


@pytest.mark.parametrize("params,simulator", CASES)
def test_requant_line_rtl_matches_numfmt(simulator, params):
    config = RequantLineConfig(**params)
    result = simulate(get_design("requant-line"), config, seed=7, simulator=simulator, build_root=BUILD)
    assert result.passed, f"see {result.log}"
