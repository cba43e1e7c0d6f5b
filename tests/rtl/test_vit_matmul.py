"""Runs the ViT matmul's cocotb testbench (tb/vit_matmul_tb.py): bit-exact against the golden models
under idle cycles and backpressure, cycles against ``matmul_cycles``, and a broken matmul that fails.

``make test``: one small configuration on Verilator, one on Icarus and a flipped-bit mutant (the
int_ops golden model for CSR, no torch import); ``make test-full``: the int16 and raw int32 outputs,
the run-time raw switch (``raw_port``), the digits ViT's configuration with the tickets' golden model,
and the measured cycles of fc1/fc2.
"""

import dataclasses
from pathlib import Path

import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.vit.matmul import VitMatmulConfig, matmul_cycles
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.tb.mutants import ExtraBeat, FlipOutputBit

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
DESIGN = get_design("vit-matmul")
FAST = {"csr_golden": "int_ops"}

CONFIGS = {
    "L2-M3-rows8-in10": (dict(lines=2, macs=3, max_rows=8, max_in=10), "verilator", FAST),
    "L1-M2-rows3-in4-int16": (dict(lines=1, macs=2, max_rows=3, max_in=4, out_width=16), "icarus",
                              dict(FAST, shapes=2)),
    "L3-M2-rows13-in9-raw32": (dict(lines=3, macs=2, max_rows=13, max_in=9, out_width=32), "verilator", {}),
    "L1-M8-digits-int16": (dict(lines=1, macs=8, max_rows=65, max_in=64, out_width=16), "verilator",
                           dict(max_out=4)),
    "L5-M13-G1": (dict(lines=5, macs=13, max_rows=65, max_in=24), "verilator", dict(max_out=5)),
    # the model-level accelerator's matmul: int16, and raw int32 tiles (the classifier) at random
    "L2-M2-rows9-in6-int16-rawport": (dict(lines=2, macs=2, max_rows=9, max_in=6, out_width=16, raw_port=True),
                                      "verilator", FAST),
}
IN_MAKE_TEST = {"L2-M3-rows8-in10", "L1-M2-rows3-in4-int16"}
CASES = [name if name in IN_MAKE_TEST else pytest.param(name, marks=pytest.mark.full) for name in CONFIGS]


@pytest.mark.parametrize("name", CASES)
def test_vit_matmul_rtl_matches_golden(name):
    params, simulator, tb = CONFIGS[name]
    config = VitMatmulConfig(**params)
    result = simulate(DESIGN, config, seed=sum(map(ord, name)) % 1000, tb_params=tb, simulator=simulator,
                      build_root=BUILD)
    assert result.tests == 3
    assert result.passed, f"{result.failed} failed; see {result.log}"
    rep = result.report
    assert rep["measured_cycles"] == rep["model_cycles"]


@pytest.mark.parametrize("mutant", [FlipOutputBit, pytest.param(ExtraBeat, marks=pytest.mark.full)],
                         ids=["wrong_bit", "beat_too_many"])
def test_testbench_catches_a_broken_matmul(mutant):
    """The scoreboard can fail: one output bit flipped (lane 0, a row every tile has), or every output
    right and one beat more: every test fails."""
    config = VitMatmulConfig(lines=1, macs=2, max_rows=3, max_in=4)
    result = run_cocotb(mutant(DESIGN.build(config)), top=DESIGN.top,
                        config_name=f"vit_matmul_{mutant.__name__.lower()}", test_module=DESIGN.testbench,
                        params={"config": dataclasses.asdict(config), **FAST, "shapes": 1},
                        simulator="icarus", build_root=BUILD)
    assert result.tests == 3 and result.failed == 3, f"see {result.log}"


# The digits ViT's MLP layers (65 tokens, fc1 64 -> 256, fc2 256 -> 64), random int8 weights magnitude-pruned.
LAYERS = {"fc1": dict(rows=65, in_features=64, out_features=256), "fc2": dict(rows=65, in_features=256, out_features=64)}
PATTERNS = {"dense": dict(mode="dense"), "75": dict(mode="csr", sparsity=0.75), "90": dict(mode="csr", sparsity=0.9),
            "2:4": dict(mode="2:4")}


@pytest.mark.full
@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_digits_mlp_cycles_scale_with_kept_weights(layer, pattern):
    """Issue 16's bounds, on the RTL: CSR <= 1.3 x the ideal at 75 % and 90 %, dense utilization >= 0.8;
    the measured cycles are the model's (2:4's speedup over dense is checked on the model, whose exactness
    this test shows)."""
    config = VitMatmulConfig(lines=1, macs=8, max_rows=65, max_in=256)
    measure = {**LAYERS[layer], **PATTERNS[pattern]}
    result = simulate(DESIGN, config, seed=7, tb_params={"measure": measure}, simulator="verilator",
                      build_root=BUILD, testcase="full_rate_cycles_match_the_model")
    assert result.passed, f"see {result.log}"
    rep = result.report
    assert rep["measured_cycles"] == rep["model_cycles"]
    if pattern == "dense":
        assert rep["utilization"] >= 0.8
    elif pattern == "2:4":
        dense = matmul_cycles(config, [measure["in_features"]] * measure["out_features"], 65, measure["in_features"])
        assert dense.total / rep["measured_cycles"] >= 0.9 * 2
    else:
        assert rep["ratio"] <= 1.3


@pytest.mark.full
def test_a_ticket_csr_file_runs_bit_exact(tmp_path):
    """A layer read from a ticket CSR file (the format `attnforge tickets export` writes; here random int8
    weights, 80 % pruned) runs bit-exact against sparse_linear_golden, in the model's cycles."""
    import numpy as np

    from attnforge.formats.csr import dense_to_csr
    from attnforge.formats.ticket_csr import SparseLayer, save_ticket_csr

    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (256, 64)).astype(np.int8)
    keep = rng.random(w.shape) < 0.2
    keep[5] = False                                     # one output channel keeps nothing: bias only
    layer = SparseLayer("blocks.0.mlp.fc1", "linear", (256, 64), dense_to_csr(w, keep=keep), 0.01,
                        np.zeros(256, np.float32))
    path = save_ticket_csr(tmp_path / "ticket.npz", [layer])
    config = VitMatmulConfig(lines=1, macs=8, max_rows=65, max_in=256)
    result = simulate(DESIGN, config, seed=11, tb_params={"measure": dict(mode="ticket", ticket=str(path), rows=65)},
                      simulator="verilator", build_root=BUILD, testcase="full_rate_cycles_match_the_model")
    assert result.passed, f"see {result.log}"
    assert result.report["nnz"] == int(keep.sum()) and result.report["out_features"] == 256
    assert result.report["measured_cycles"] == result.report["model_cycles"]
