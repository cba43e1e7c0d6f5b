"""Runs the register bank's testbench (tb/regbank_tb.py): ``AcceleratorRegisters`` driven by
cocotbext-axi's ``AxiLiteMaster`` under ``AxiLiteMonitor``, on Verilator and Icarus
(about 3 s each once built); then three mutants show the testbench and the monitor can fail: a wrong read
bit, a response nobody asked for, rdata changing while it waits for rready."""

from pathlib import Path

import pytest

from attnforge.hw.common import AcceleratorRegisters
from attnforge.sim.runner import run_cocotb
from attnforge.hw.verilog import write_verilog
from attnforge.sim.lint import lint_verilog
from attnforge.tb.mutants import FlipOutputBit, GlitchWhileStalled

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
TB = "attnforge.tb.regbank_tb"
# A ViTCoD-like parameter set (ints and bools), and a 10-bit address window (unmapped space above the map).
PARAMS = {"design": "vitcod", "params": {"head_dim": 64, "max_tokens": 197, "macs": 8, "decoder": True}, "seed": 3}


def _run(component, name, simulator, testcase=None):
    return run_cocotb(component, top="accel_regs", config_name=name, test_module=TB, params=PARAMS,
                      simulator=simulator, build_root=BUILD, seed=3, testcase=testcase)


# Verilator in make test-full only (14 s of make test's budget); make test runs the bank on Icarus.
@pytest.mark.parametrize("simulator", [pytest.param("verilator", marks=pytest.mark.full), "icarus"])
def test_register_bank_over_axi_lite(simulator):
    dut = AcceleratorRegisters(PARAMS["design"], PARAMS["params"], addr_width=10)
    result = _run(dut, "accel_regs_vitcod", simulator)
    assert result.passed and result.tests == 5, f"see {result.log}"


def test_testbench_catches_a_wrong_read_bit():
    """rdata's bit 0 flipped (tb/mutants.py): every test that reads a register fails."""
    dut = FlipOutputBit(AcceleratorRegisters(PARAMS["design"], PARAMS["params"], addr_width=10), path=("rdata",))
    result = _run(dut, "accel_regs_corrupted_rdata", "icarus")
    assert (result.tests, result.failed) == (5, 4), f"see {result.log}"


def test_monitor_catches_a_response_without_a_request():
    """rvalid inverted: high on an idle bus, an R response no AR asked for; the monitor fails the idle test."""
    dut = FlipOutputBit(AcceleratorRegisters(PARAMS["design"], PARAMS["params"], addr_width=10), path=("rvalid",))
    result = _run(dut, "accel_regs_corrupted_rvalid", "icarus", testcase="idle_bus")
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
    assert "R response without an AR" in result.log.read_text(), f"see {result.log}"


def test_monitor_catches_rdata_changing_while_stalled():
    """rdata glitches while rvalid waits for rready (right at the transfer): only the monitor can fail the run."""
    dut = GlitchWhileStalled(AcceleratorRegisters(PARAMS["design"], PARAMS["params"], addr_width=10))
    result = _run(dut, "accel_regs_corrupted_stall", "icarus", testcase="random_traffic_with_backpressure")
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
    log = result.log.read_text()
    assert "R payload changed while valid and not ready" in log and "AXI4-Lite protocol" in log, f"see {result.log}"


def test_generated_verilog_lints_clean():
    dut = AcceleratorRegisters(PARAMS["design"], PARAMS["params"], addr_width=10)
    path = write_verilog(dut, "accel_regs", BUILD / "accel_regs_lint" / "accel_regs.v")
    result = lint_verilog(path, "accel_regs")
    assert result.clean, result.messages
