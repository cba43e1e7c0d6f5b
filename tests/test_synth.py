"""Synthesis and place-and-route on the open toolchain (real Yosys and nextpnr via YoWASP)."""

import json

import pytest

from attnforge.fpga.shell import SynthShell
from attnforge.fpga.synth import SynthError, synthesize
from attnforge.hw.mac_line import MacLine, MacLineConfig


@pytest.mark.parametrize("device, macs", [("ecp5-85k", 8), ("ice40-up5k", 4)])
def test_mac_line_multipliers_land_in_dsp(tmp_path, device, macs):
    config = MacLineConfig(macs=macs)
    report = synthesize(MacLine(config), top="mac_line", device=device, out_dir=tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["dsp"] == macs, report["yosys_cells"]     # one DSP block per MAC, none in LUTs
    assert report["fmax_mhz"] > 10
    assert report["luts"] > 0 and report["ffs"] >= report["shell_ffs"]
    assert report["bram"] == 0
    dsp_key = "MULT18X18D" if device.startswith("ecp5") else "ICESTORM_DSP"
    assert report["nextpnr_utilization"][dsp_key]["used"] == macs


def test_shell_counts_input_bits():
    config = MacLineConfig(macs=8)
    shell = SynthShell(MacLine(config))
    # x, 8 weights, last and valid in; o.ready in.
    assert shell.input_bits == 8 + 8 * 8 + 1 + 1 + 1


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_unknown_device(tmp_path):
    with pytest.raises(ValueError, match="unknown FPGA device 'xc7'; known devices: ecp5-25k"):
        synthesize(MacLine(MacLineConfig()), top="mac_line", device="xc7", out_dir=tmp_path)


def test_failed_pnr_leaves_no_report(tmp_path):
    # 9 MACs cannot fit the UP5K's 8 DSP blocks: nextpnr fails, and no report is left behind.
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(SynthError, match="nextpnr"):
        synthesize(MacLine(MacLineConfig(macs=9)), top="mac_line", device="ice40-up5k", out_dir=tmp_path)
    assert not (tmp_path / "report.json").exists()


def test_router_and_target_reach_nextpnr(tmp_path):
    report = synthesize(MacLine(MacLineConfig(macs=4)), top="mac_line", device="ice40-up5k", out_dir=tmp_path,
                        router="router1", target_mhz=30)
    assert report["nextpnr_args"][-2:] == ["--router", "router1"]
    assert report["target_mhz"] == 30.0
    assert "at 30.00 MHz)" in (tmp_path / "nextpnr.log").read_text()     # nextpnr's PASS/FAIL line


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_impossible_target(tmp_path):
    with pytest.raises(ValueError, match="target_mhz 0: give a clock target between 1 and 1000 MHz"):
        synthesize(MacLine(MacLineConfig()), top="mac_line", device="ecp5-85k", out_dir=tmp_path, target_mhz=0)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_unknown_router(tmp_path):
    with pytest.raises(ValueError, match="router 'router3': nextpnr has router1, router2"):
        synthesize(MacLine(MacLineConfig()), top="mac_line", device="ecp5-85k", out_dir=tmp_path, router="router3")
    assert not any(tmp_path.iterdir())


def test_yosys_only_gives_resources_without_place_and_route(tmp_path):
    # pnr=False (attnforge synth --no-pnr, the ViTCoD flow without --pnr): Yosys's counts, no nextpnr run.
    report = synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ecp5-25k", out_dir=tmp_path,
                        pnr=False)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["dsp"] == 2 and report["luts"] > 0 and report["ffs"] >= report["shell_ffs"]
    assert report["fmax_mhz"] is None and report["placed_and_routed"] is False and report["nextpnr_seconds"] == 0
    assert not (tmp_path / "nextpnr.json").exists() and not (tmp_path / "nextpnr.log").exists()
