"""Runs the MAC line's cocotb testbench (tb/mac_line_tb.py) through the cocotb runner.

In ``make test`` one configuration runs on Verilator and three on Icarus; in
``make test-full`` every configuration runs on both. Each (configuration,
simulator) pair builds in its own folder under build/test_sim/.
"""

import re
from pathlib import Path

import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.mac_line import MacLineConfig
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.tb.mutants import ExtraBeat, FlipOutputBit

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
DESIGN = get_design("mac-line")

CONFIGS = {
    "M1-maxlen16": dict(macs=1, max_length=16),             # M=1; extreme test reaches the exact bound
    "M8-default": dict(),                                   # the engines' default line
    "M4-acc64": dict(macs=4, acc_width=64),                 # the widest accumulator the generator accepts
    "M3-w5-len100": dict(macs=3, operand_width=5, max_length=100),  # odd M, narrow operands
    "M2-w16-len8": dict(macs=2, operand_width=16, max_length=8),    # widest operands
}


# make test: the engines' default line on Verilator (each Verilator build costs ~15 s of
# make test's 10 minutes), and on Icarus M = 1 at its exact bound, odd M with narrow
# operands and the widest accumulator; make test-full: all of them on both.
IN_MAKE_TEST = {"verilator": {"M8-default"},
                "icarus": {"M1-maxlen16", "M3-w5-len100", "M4-acc64"}}
CASES = [(name, sim) if name in IN_MAKE_TEST[sim] else pytest.param(name, sim, marks=pytest.mark.full)
         for name in CONFIGS for sim in ("verilator", "icarus")]


@pytest.mark.parametrize("name,simulator", CASES)
def test_mac_line_rtl_matches_golden(name, simulator):
    config = MacLineConfig(**CONFIGS[name])
    result = simulate(DESIGN, config, seed=sum(map(ord, name)) % 1000, simulator=simulator, build_root=BUILD)
    assert result.tests == 3
    assert result.passed, f"{result.failed} failed; see {result.log}"
    # Both simulators measure the same cycles: one beat per cycle plus the pipeline latency.
    assert result.report["measured_cycles"] == result.report["beats"] + config.latency
    assert re.fullmatch("[0-9a-f]{64}", result.report["output_digest"])     # what `attnforge sim` reports


@pytest.mark.parametrize("simulator", [pytest.param("verilator", marks=pytest.mark.full), "icarus"])
def test_waveform_written(simulator):
    config = MacLineConfig(macs=2, max_length=8)
    result = simulate(DESIGN, config, simulator=simulator, waves=True, build_root=BUILD,
                      testcase="full_rate_without_stalls")
    assert result.passed
    assert result.waves is not None and result.waves.stat().st_size > 1000
    if simulator == "verilator":
        header = result.waves.read_text(errors="replace")[:20000]
        assert "$var" in header and "i__valid" in header
    else:
        assert result.waves.suffix == ".fst"


@pytest.mark.parametrize("mutant", [FlipOutputBit, ExtraBeat], ids=["wrong_bit", "beat_too_many"])
def test_testbench_catches_a_broken_line(mutant):
    """The scoreboard can fail: the line with one output bit flipped, or with every result right and
    then one beat more (the check that nothing comes out after the last expected beat), fails every test."""
    import dataclasses

    config = MacLineConfig(macs=2, max_length=8)
    result = run_cocotb(mutant(DESIGN.build(config)), top="mac_line",
                        config_name=f"mac_line_{mutant.__name__.lower()}", test_module=DESIGN.testbench, params={"config": dataclasses.asdict(config)},
                        simulator="icarus", build_root=BUILD)      # a mutant builds in seconds on Icarus
    assert result.tests == 3 and result.failed == 3, f"see {result.log}"

