"""Runs the AXI wrappers' testbench (tb/axi_tb.py): ``VitcodAxi`` and ``LinearDecodeAxi`` driven by
cocotbext-axi (AxiStreamSource/Sink with random pauses, AxiLiteMaster), bit for bit against the golden
models, the register map read back, the counters against the cycle models at full rate, a soft reset
mid-stream, a tkeep error. Verilator; one case on Icarus; a flipped output bit must fail."""

import dataclasses
from pathlib import Path

import pytest

from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.axi import LinearDecodeAxi
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.axi import VitcodAxi
from attnforge.sim.runner import run_cocotb
from attnforge.tb.mutants import FlipOutputBit

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
TB = "attnforge.tb.axi_tb"
TESTS = 5

VITCOD = VitcodConfig(head_dim=16, max_tokens=16, max_nnz=256, macs=8, dense_lines=1, sparse_lines=2, data_width=64)
LINEAR = LinearDecodeConfig(d=8, macs=4, conv_taps=3, t_max=4, heads=2)


def _run(component, design, cfg, name, *, simulator="verilator", testcase=None, seed=1, **params):
    top = "vitcod_axi" if design == "vitcod" else "linear_decode_axi"
    return run_cocotb(component, top=top, config_name=name, test_module=TB, simulator=simulator,
                      build_root=BUILD, seed=seed, testcase=testcase,
                      params={"design": design, "config": dataclasses.asdict(cfg), "seed": seed, **params})


def test_vitcod_through_axi():
    result = _run(VitcodAxi(VITCOD), "vitcod", VITCOD, "vitcod_axi_small", heads=4, pause=0.3)
    assert result.passed and result.tests == TESTS, f"see {result.log}"
    counters, model = result.report["counters"], result.report["model"]
    assert counters["busy"] == model["busy"]


def test_linear_decode_through_axi():
    result = _run(LinearDecodeAxi(LINEAR), "linear-decode", LINEAR, "linear_axi_small", tokens=24, pause=0.3)
    assert result.passed and result.tests == TESTS, f"see {result.log}"
    assert result.report["counters"]["mac_active"] == result.report["model"]["issue"]


@pytest.mark.full
def test_linear_decode_narrow_axis_through_axi():
    """A 64-bit s_axis: each command takes several beats (the wrapper assembles them)."""
    dut = LinearDecodeAxi(LINEAR, axis_width=64)
    result = _run(dut, "linear-decode", LINEAR, "linear_axi_narrow", tokens=24, pause=0.3, axis_width=64,
                  testcase=["bit_exact_under_pauses", "soft_reset_mid_stream_recovers"])
    assert result.passed and result.tests == 2, f"see {result.log}"


def test_linear_decode_through_axi_on_icarus():
    result = _run(LinearDecodeAxi(LINEAR), "linear-decode", LINEAR, "linear_axi_small", simulator="icarus",
                  testcase="bit_exact_under_pauses", tokens=12, pause=0.3)
    assert result.passed and result.tests == 1, f"see {result.log}"


def test_a_flipped_output_bit_fails_through_the_wrapper():
    """m_axis_tdata's bit 0 flipped (tb/mutants.py): the bit-exact test fails."""
    dut = FlipOutputBit(LinearDecodeAxi(LINEAR), path=("m_axis_tdata",))
    result = _run(dut, "linear-decode", LINEAR, "linear_axi_corrupted", simulator="icarus",
                  testcase="bit_exact_under_pauses", tokens=8, pause=0.3)
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
    assert "output packet 0: byte 0" in result.log.read_text(), f"see {result.log}"
