"""Runs the AXI wrappers' testbench (tb/axi_tb.py): ``VitcodAxi`` and ``LinearDecodeAxi`` driven by
cocotbext-axi (AxiStreamSource/Sink with random pauses, AxiLiteMaster), bit for bit against the golden
models, the register map read back, the counters against the cycle models at full rate, a soft reset
mid-stream, a tkeep error; the simulated Verilog lints clean; a flipped output bit must fail.

Cost: a fresh Verilator build of a wrapped design costs ~35 s CPU (ViTCoD, ccache cold), more than this file's
share of ``make test``; so ``make test`` runs the testbench on Icarus (ViTCoD: all five tests; linear
decode: bit exact under pauses and the counters; the mutant) and ``make test-full`` on Verilator (all
five tests on both designs, and a narrow ``s_axis``)."""

import dataclasses
from pathlib import Path

import pytest

from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.axi import LinearDecodeAxi
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.axi import VitcodAxi
from attnforge.sim.lint import lint_verilog
from attnforge.sim.runner import run_cocotb
from attnforge.tb.mutants import FlipOutputBit

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
TB = "attnforge.tb.axi_tb"
ALL = ["registers_describe_the_configuration", "bit_exact_under_pauses", "counters_match_the_cycle_model_at_full_rate",
       "soft_reset_mid_stream_recovers", "tkeep_low_sets_the_error_bit"]
# short simulations: a C++ build without optimization is several times faster and runs them as fast
FAST_BUILD = ["-CFLAGS", "-O0"]

VITCOD = VitcodConfig(head_dim=16, max_tokens=16, max_nnz=256, macs=8, dense_lines=1, sparse_lines=2, data_width=64)
LINEAR = LinearDecodeConfig(d=8, macs=4, conv_taps=3, t_max=4, heads=2)
CASES = {"vitcod": (VitcodAxi, VITCOD, "vitcod_axi", {"heads": 4}),
         "linear-decode": (LinearDecodeAxi, LINEAR, "linear_decode_axi", {"tokens": 24})}


def _run(component, design, name, *, simulator="verilator", testcase=None, seed=1, config=None, **params):
    _, cfg, top, size = CASES[design]
    cfg = config or cfg
    return run_cocotb(component, top=top, config_name=name, test_module=TB, simulator=simulator,
                      build_root=BUILD, seed=seed, testcase=testcase,
                      build_args=FAST_BUILD if simulator == "verilator" else None,
                      params={"design": design, "config": dataclasses.asdict(cfg), "seed": seed, "pause": 0.3,
                              **size, **params})


def _check(result, design, tests):
    assert result.passed and result.tests == len(tests), f"see {result.log}"
    _, _, top, _ = CASES[design]
    lint = lint_verilog(result.build_dir.parent / f"{top}.v", top)   # what was simulated, waiver file applied
    assert lint.clean, lint.messages
    if "counters_match_the_cycle_model_at_full_rate" in tests:
        counters, model = result.report["counters"], result.report["model"]
        assert counters["busy"] == model["busy"] and counters["stall_in"] == counters["stall_out"] == 0
        assert counters["mac_active"] == model["mac_active" if design == "vitcod" else "issue"]


@pytest.mark.parametrize("design, simulator, tests", [
    ("vitcod", "icarus", ALL),
    ("linear-decode", "icarus", ALL[1:3]),
    pytest.param("vitcod", "verilator", ALL, marks=pytest.mark.full),
    pytest.param("linear-decode", "verilator", ALL, marks=pytest.mark.full),
])
def test_through_axi(design, simulator, tests):
    cls, cfg, top, _ = CASES[design]
    result = _run(cls(cfg), design, f"{top}_small", simulator=simulator, testcase=tests)
    _check(result, design, tests)


@pytest.mark.full
def test_vitcod_tiles_through_axi():
    """Two tiles (row pipelines): MAC_ACTIVE is the union of four engines' issue windows."""
    cfg = dataclasses.replace(VITCOD, tiles=2)
    tests = ["bit_exact_under_pauses", "counters_match_the_cycle_model_at_full_rate"]
    result = _run(VitcodAxi(cfg), "vitcod", "vitcod_axi_tiles2", simulator="icarus", testcase=tests, config=cfg)
    _check(result, "vitcod", tests)


@pytest.mark.full
def test_linear_decode_narrow_axis_through_axi():
    """A 64-bit s_axis: each command takes several beats (the wrapper assembles them)."""
    tests = ["bit_exact_under_pauses", "soft_reset_mid_stream_recovers"]
    result = _run(LinearDecodeAxi(LINEAR, axis_width=64), "linear-decode", "linear_decode_axi_narrow",
                  testcase=tests, axis_width=64)
    _check(result, "linear-decode", tests)


def test_a_flipped_output_bit_fails_through_the_wrapper():
    """m_axis_tdata's bit 0 flipped (tb/mutants.py): the bit-exact test fails at the first byte."""
    dut = FlipOutputBit(LinearDecodeAxi(LINEAR), path=("m_axis_tdata",))
    result = _run(dut, "linear-decode", "linear_decode_axi_corrupted", simulator="icarus",
                  testcase="bit_exact_under_pauses", tokens=8)
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
    assert "output packet 0: byte 0" in result.log.read_text(), f"see {result.log}"
