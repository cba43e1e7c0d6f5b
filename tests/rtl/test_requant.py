"""Runs the requantization stage's testbench (tb/requant_tb.py) on both simulators
(one configuration on each in ``make test``, all on both in ``make test-full``)."""

import dataclasses
from pathlib import Path

import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.common.requant import RequantLineConfig
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.tb.mutants import ExtraBeat, FlipOutputBit

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"


PARAMS = [dict(lanes=1, in_width=20), dict(lanes=4, in_width=64, multiplier_width=32),
          dict(lanes=3, in_width=12, multiplier_width=8, out_width=4)]
# make test: the widest (4 lanes, 64-bit input, 32-bit multiplier) on Verilator, the first on Icarus;
# make test-full: every configuration on both.
IN_MAKE_TEST = {("verilator", 1), ("icarus", 0)}
CASES = [(p, sim) if (sim, i) in IN_MAKE_TEST else pytest.param(p, sim, marks=pytest.mark.full)
         for i, p in enumerate(PARAMS) for sim in ("verilator", "icarus")]


@pytest.mark.parametrize("params,simulator", CASES)
def test_requant_line_rtl_matches_numfmt(simulator, params):
    config = RequantLineConfig(**params)
    result = simulate(get_design("requant-line"), config, seed=7, simulator=simulator, build_root=BUILD)
    assert result.passed, f"see {result.log}"


@pytest.mark.parametrize("mutant", [FlipOutputBit, ExtraBeat], ids=["wrong_bit", "beat_too_many"])
def test_testbench_catches_a_broken_stage(mutant):
    """The scoreboard can fail: the same stage with one output bit flipped, or with every beat right
    and then one more (tb/mutants.py), fails."""
    config = RequantLineConfig(lanes=2, in_width=16)
    design = get_design("requant-line")
    result = run_cocotb(mutant(design.build(config)), top=design.top,
                        config_name=f"requant_line_{mutant.__name__.lower()}", test_module=design.testbench,
                        params={"config": dataclasses.asdict(config), "seed": 7},
                        simulator="icarus", build_root=BUILD, seed=7)     # a mutant builds in seconds on Icarus
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
