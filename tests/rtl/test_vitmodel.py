"""Runs the model-level accelerator's cocotb testbench (tb/vitmodel_tb.py): a random MLP half, every
tensor bit-exact against the reference executor and int_ops, the cycle model exact, idle host beats and
backpressure, and a flipped-bit mutant that the scoreboard catches."""

import dataclasses
from pathlib import Path

import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.vitmodel import DIGITS, VitModelConfig
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.tb.mutants import FlipOutputBit

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
DESIGN = get_design("vit-model")
SMALL = dict(lines=1, macs=2, max_tokens=5, max_cols=8, ln_channels=4, buffer_tiles=80)

CONFIGS = {
    "P2-icarus": (SMALL, "icarus", dict(tokens=5, dim=4, hidden=8)),
    "P3-verilator": (dict(lines=1, macs=3, max_tokens=7, max_cols=12, ln_channels=6, buffer_tiles=96),
                     "verilator", dict(tokens=7, dim=6, hidden=12)),
    "P4-verilator": (dict(lines=2, macs=2, max_tokens=13, max_cols=32, ln_channels=8, buffer_tiles=256),
                     "verilator", dict(tokens=13, dim=8, hidden=32, sparsity=0.9)),
    # the digits ViT's shapes: 65 tokens, D = 64, MLP 256, P = 8 (hw.vitmodel.DIGITS), fc2's CSR at 90 %
    "digits-verilator": (dataclasses.asdict(DIGITS), "verilator", dict(tokens=65, dim=64, hidden=128, sparsity=0.9)),
}
# The digits case runs the full-rate test alone (the idle/backpressure runs are the small cases'): its
# 150 000 cycles take minutes in cocotb on the shared machine.
FULL_RATE_ONLY = {"digits-verilator"}
# make test runs the smallest case on Icarus (the new block's one RTL check in CI; generating the Verilog
# alone, the LayerNorm unit's isqrt and divider, takes about 7 s); the others are make test-full.
IN_MAKE_TEST = {"P2-icarus"}
CASES = [name if name in IN_MAKE_TEST else pytest.param(name, marks=pytest.mark.full) for name in CONFIGS]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", CASES)
def test_vitmodel_rtl_matches_reference(name):
    params, simulator, case = CONFIGS[name]
    config = VitModelConfig(**params)
    only = "mlp_half_full_rate_cycles_match_the_model" if name in FULL_RATE_ONLY else None
    result = simulate(DESIGN, config, seed=sum(map(ord, name)) % 1000, tb_params={"case": case},
                      simulator=simulator, build_root=BUILD, testcase=only)
    assert result.tests == (1 if only else 3)
    assert result.passed, f"{result.failed} failed; see {result.log}"
    assert result.report["measured"] == result.report["model"]


@pytest.mark.full
def test_testbench_catches_a_flipped_output_bit():
    """The scoreboard can fail: the lowest bit of the output stream's payload flipped."""
    config = VitModelConfig(**SMALL)
    result = run_cocotb(FlipOutputBit(DESIGN.build(config)), top=DESIGN.top, config_name="vit_model_flipbit",
                        test_module=DESIGN.testbench,
                        params={"config": dataclasses.asdict(config), "case": CONFIGS["P2-icarus"][2]},
                        simulator="icarus", build_root=BUILD)
    # the two program runs fail on the first STOREd tensor; the reserved-opcode test sends no STORE
    assert result.tests == 3 and result.failed == 2, f"see {result.log}"


def _player_case(tmp_path, config, seed=3):
    from attnforge.tb.vitmodel_case import TENSORS, mlp_case, save_program_case

    case = mlp_case(config, seed, **CONFIGS["P2-icarus"][2], sparsity=0.75)
    return save_program_case(tmp_path / "case.npz", case, TENSORS, config)


@pytest.mark.full
@pytest.mark.parametrize("mutant", [False, True])
def test_player_runs_the_program_as_the_stepped_test(tmp_path, mutant):
    """The player (tb/vitmodel_player.py: host beats from a memory, at the simulator's speed) gives the stepped
    full-rate test's cycles, instruction by instruction, and every tensor bit-exact; with the output's lowest
    bit flipped its scoreboard fails. test-full (13 s and 10 s): make test runs the player through
    tests/test_vitcod_run.py's small model (every tensor and every instruction's cycles checked there)."""
    from attnforge.tb.vitmodel_player import player

    config = VitModelConfig(**SMALL)
    case = _player_case(tmp_path, config)
    wrapper = player(config, 1 << 10)
    params = {"config": dataclasses.asdict(config), "program_file": str(case), "player": wrapper.depth}
    component = FlipOutputBit(DESIGN.build(config)) if mutant else DESIGN.build(config)
    played = run_cocotb(component, top=DESIGN.top, config_name="vit_model_flipbit" if mutant else "vit_model_player",
                        test_module=DESIGN.testbench, params=params, simulator="icarus", build_root=BUILD,
                        wrapper=wrapper, testcase="program_played_from_memory")
    if mutant:
        assert played.tests == 1 and played.failed == 1, f"see {played.log}"
        assert "differ" in played.log.read_text()
        return
    assert played.passed and played.tests == 1, f"see {played.log}"
    stepped = simulate(DESIGN, config, seed=3, tb_params={"program_file": str(case)}, simulator="icarus",
                       build_root=BUILD, testcase="mlp_half_full_rate_cycles_match_the_model")
    assert stepped.passed, f"see {stepped.log}"
    assert played.report["measured"] == stepped.report["measured"] == played.report["model"]
    assert played.report["last_tensors"] == stepped.report["last_tensors"]


def test_player_refuses_a_bad_depth():
    from attnforge.errors import ConfigError
    from attnforge.tb.vitmodel_player import player

    with pytest.raises(ConfigError, match="player depth 1000 must be a power of two"):
        player(VitModelConfig(**SMALL), 1000)
