"""Synthesis and place-and-route on the open toolchain (real Yosys and nextpnr via YoWASP)."""

import json

import pytest

from attnforge.fpga.shell import SynthShell
from attnforge.fpga.synth import SynthError, critical_path, signal_of, synthesize
from attnforge.hw.mac_line import MacLine, MacLineConfig


# iCE40 in make test-full; make test places and routes it in test_router_and_target_reach_nextpnr
@pytest.mark.parametrize("device, macs", [("ecp5-85k", 8), pytest.param("ice40-up5k", 4, marks=pytest.mark.full)])
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
    # What the timing report holds: every resource class, the worst path and its stage, the run's settings.
    util = report["utilization"][dsp_key]
    assert (util["used"], util["percent"]) == (macs, round(100 * macs / util["available"], 2))
    assert set(report["utilization"]) == set(report["nextpnr_utilization"])
    cp = report["critical_path"]
    assert cp["delay_ns"] == pytest.approx(cp["logic_ns"] + cp["routing_ns"], abs=0.01)
    assert 1000 / cp["delay_ns"] == pytest.approx(report["fmax_mhz"], rel=0.02)
    assert cp["from"]["cell"] and cp["to"]["cell"] and cp["longest_net"]["delay_ns"] <= cp["routing_ns"]
    assert report["critical_stage"] == cp["stage"] == f"{cp['from_signal']} -> {cp['to_signal']}"
    assert report["seed"] == 1 and report["router"] == ("router2" if device.startswith("ecp5") else None)
    assert report["tools"]["yosys"].startswith("Yosys") and "nextpnr" in report["tools"]["nextpnr"]


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
    assert report["dsp"] == 4 and report["nextpnr_utilization"]["ICESTORM_DSP"]["used"] == 4   # SB_MAC16 per MAC
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


def test_pack_only_gives_packed_counts_without_placement(tmp_path):
    # pack_only=True (attnforge synth --pack-only, what explore's resource model was fitted to): nextpnr packs
    # the netlist into the device's cells and stops; its TRELLIS_COMB count includes the carry chains that
    # Yosys's LUT4 count leaves out.
    report = synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ecp5-25k", out_dir=tmp_path,
                        pack_only=True)
    used = {k: v["used"] for k, v in report["nextpnr_utilization"].items()}
    assert used["MULT18X18D"] == report["dsp"] == 2 and used["TRELLIS_FF"] == report["ffs"]
    assert used["TRELLIS_COMB"] >= report["luts"] + report["yosys_cells"].get("CCU2C", 0)
    assert report["packed"] and not report["placed_and_routed"] and report["fmax_mhz"] is None and report["seed"] is None
    with pytest.raises(ValueError, match="pack_only runs nextpnr's packer: it needs pnr=True"):
        synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ecp5-25k", out_dir=tmp_path / "x",
                   pnr=False, pack_only=True)
    assert not (tmp_path / "x").exists()


def test_signal_of_strips_primitive_suffixes_and_lane_numbers():
    assert signal_of("inner.lanes.state_run12_TRELLIS_FF_Q_3") == "lanes.state_run"
    assert signal_of("inner.lanes.readout_chunk3[5]") == "lanes.readout_chunk"
    assert signal_of("inner.lanes.$abc$123$lut12") == "lanes.$"
    assert signal_of("inner.state.0.3") == "state"
    assert signal_of("inner.$19_MULT18X18D_P9") == "$"
    assert signal_of("sout_TRELLIS_FF_Q") == "sout"


def test_critical_path_is_the_longest_register_path_with_its_stage():
    clk = "posedge $glbnet$clk"

    def step(kind, delay, a, b, net=None):
        st = {"type": kind, "delay": delay, "from": {"cell": a, "port": "Q", "loc": [1, 2]},
              "to": {"cell": b, "port": "D", "loc": [30, 40]}}
        return st | ({"net": net} if net else {})

    ff_a, ff_b = "inner.lanes.update_product7_TRELLIS_FF_Q_2", "inner.lanes.state_run7_TRELLIS_FF_Q_9"
    report = {"critical_paths": [
        {"from": "<async>", "to": clk, "path": [step("routing", 30.0, "sin$tr_io", "ff0", "sin")]},
        {"from": clk, "to": clk, "path": [
            step("clk-to-q", 0.5, ff_a, ff_a), step("routing", 4.0, ff_a, "lut", "inner.lanes.update_product7[3]"),
            step("logic", 1.0, "lut", "lut"), step("routing", 1.5, "lut", ff_b, "inner.lanes.$abc$9$n1"),
            step("setup", 0.25, ff_b, ff_b)]},
        {"from": clk, "to": clk, "path": [step("clk-to-q", 0.5, "c", "c"), step("routing", 1.0, "c", "d", "n")]},
    ]}
    cp = critical_path(report)
    assert cp["stage"] == "lanes.update_product -> lanes.state_run"
    assert (cp["delay_ns"], cp["logic_ns"], cp["routing_ns"], cp["logic_steps"]) == (7.25, 1.75, 5.5, 1)
    assert cp["longest_net"] == {"net": "inner.lanes.update_product7[3]", "delay_ns": 4.0,
                                 "from_loc": [1, 2], "to_loc": [30, 40]}
    assert cp["nets"] == ["lanes.update_product", "lanes.$"]
    assert critical_path({}) is None and critical_path({"critical_paths": report["critical_paths"][:1]}) is None
