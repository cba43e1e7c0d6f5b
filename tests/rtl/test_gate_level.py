"""Gate-level simulation (issue 21 item 5): the Yosys-synthesized ECP5 netlist of a small configuration of each
block under the block's own cocotb testbench, bit for bit against the golden model (``sim/gatelevel.py``).

The netlists are made with ``synth_ecp5 -nodsp`` (Yosys has no simulation model of ``MULT18X18D``, so the
multipliers are LUTs and carry chains here) and simulated with the cell models Yosys ships. The MAC line runs in
``make test`` on Icarus (on Verilator too in ``make test-full``); the linear decode datapath and the ViTCoD accelerator (minutes of Yosys and
Verilator build each) in ``make test-full``.
"""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.linear.decode import LinearDecodeConfig
from attnforge.hw.mac_line import MacLineConfig
from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
from attnforge.sim.gatelevel import GATE_FLOW
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.tb.linear_decode_tb import default_requant
from attnforge.tb.mutants import FlipOutputBit
from attnforge.tb.vitcod_jobs import bad_head, random_head, save_jobs

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
MAC = get_design("mac-line")


def _is_gate_level(result, top):
    """The simulated source is a netlist of ECP5 cells, not the RTL: LUT4 and TRELLIS_FF instances, no process."""
    netlist = (result.build_dir / f"{top}_ecp5.v").read_text()
    cells = set(re.findall(r"^\s*(LUT4|TRELLIS_FF|CCU2C|PFUMX|L6MUX21|TRELLIS_DPR16X4|DP16KD)\s", netlist, re.M))
    assert {"LUT4", "TRELLIS_FF"} <= cells, cells
    assert "always @" not in netlist and "MULT18X18D" not in netlist
    gate = json.loads((result.build_dir / "gate.json").read_text())
    assert gate["flow"] == GATE_FLOW and gate["lut_mapper"] in ("abc9", "abc")


@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.full)])
def test_mac_line_netlist_matches_golden(simulator):
    config = MacLineConfig(macs=2, max_length=8)
    result = simulate(MAC, config, seed=5, simulator=simulator, build_root=BUILD, gate_level=True)
    assert result.tests == 3 and result.passed, f"{result.failed} failed; see {result.log}"
    assert result.report["measured_cycles"] == result.report["beats"] + config.latency
    assert result.build_dir.name == f"{simulator}-gate-ecp5"
    _is_gate_level(result, MAC.top)


@pytest.mark.full     # 16 s of make test's budget; make test runs the good netlist on Icarus
def test_a_broken_netlist_fails():
    """The gate-level run can fail: the line with one output bit flipped, synthesized, fails every test."""
    config = MacLineConfig(macs=2, max_length=8)
    result = run_cocotb(FlipOutputBit(MAC.build(config)), top=MAC.top, config_name="mac_line_flipoutputbit",
                        test_module=MAC.testbench, params={"config": dataclasses.asdict(config)},
                        simulator="icarus", build_root=BUILD, gate_level=True)
    assert result.tests == 3 and result.failed == 3, f"see {result.log}"


@pytest.mark.full
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("feature_map", ["relu", "relu_norm"])
def test_linear_decode_netlist_matches_golden(feature_map):
    kw = dict(d=8, macs=4, conv_taps=2, t_max=3, heads=1, max_tokens=64, feature_map=feature_map)
    config = LinearDecodeConfig(**kw, **default_requant(8, 2, feature_map))
    result = simulate(get_design("linear-decode"), config, seed=3, tb_params=dict(tokens=40), simulator="verilator",
                      build_root=BUILD, gate_level=True)
    assert (result.tests, result.skipped) == (1, 2) and result.passed, f"see {result.log}"
    _is_gate_level(result, "linear_decode")


@pytest.mark.full
@pytest.mark.timeout(2400)
def test_vitcod_netlist_matches_golden():
    cfg = VitcodConfig(head_dim=8, max_tokens=8, max_nnz=64, macs=4, dense_lines=1, sparse_lines=1, data_width=64)
    rng = np.random.default_rng(3)
    heads = [random_head(cfg, rng, nq=7, nk=8, g=2, sparsity=0.5, empty_rows=1), bad_head(cfg, rng, "col_idx"),
             random_head(cfg, rng, nq=5, nk=5, g=0, sparsity=0.4)]
    jobs = save_jobs(BUILD / "jobs" / "vitcod_gate_level.npz", heads)
    design = get_design("vitcod")
    result = run_cocotb(VitcodAccelerator(cfg), top=design.top, config_name=design.config_name(cfg),
                        test_module=design.testbench, simulator="verilator", build_root=BUILD, seed=3,
                        gate_level=True, params={"config": dataclasses.asdict(cfg), "jobs": str(jobs), "seed": 3,
                                                 "idle": 0.2, "stall": 0.2})
    assert result.passed, f"see {result.log}"
    _is_gate_level(result, design.top)
