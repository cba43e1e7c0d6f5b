"""``attnforge board run --sim``: host driver -> cocotbext-uart -> the board top (UART, bridge, AXI-wrapped
accelerator) -> back, bit for bit against the golden model (tb/board_tb.py, attnforge/host/run.py).

Cost: the UART makes a run tens of thousands of cycles (80 per byte at divisor 8, 40 at 4), and a
fresh Verilator build of a board top costs ~60 s CPU, so ``make test`` runs the tiny configurations
on Icarus at divisor 4 only 16 linear tokens (d = 4) plus the bad-frame test in one simulation
(~46,000 cycles); ``make test-full`` adds two ViTCoD heads (d = 8, 8 tokens, the parameter registers read
back; ~49,000 cycles, ~30 s on Icarus) and 16 tokens of d = 8 at divisor 8 through the CLI."""

import json
from pathlib import Path

import pytest

from attnforge.algo.vitcod.synthetic import polarized_mask_set
from attnforge.cli import main
from attnforge.formats.masks import save_masks
from attnforge.host import board_run, linear_board_job
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.axi import default_axis_width
from attnforge.linear_format import random_data_requant
from attnforge.sim.lint import lint_verilog

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_board"


def test_board_run_sim_linear_tokens_and_bad_frames():
    """16 tokens through the UART bit exact (MAC_ACTIVE = the cycle model's issue cycles), then the
    bad-frame test in the same simulation (a corrupted CRC gets BAD_CRC and is not executed); the
    simulated board top lints clean under the waiver file."""
    cfg = LinearDecodeConfig(d=4, macs=2, conv_taps=2, t_max=2, heads=1, **random_data_requant(4, 2))
    job = linear_board_job(cfg, default_axis_width(cfg), tokens=16, seed=3)
    r = board_run("linear-decode", cfg, job, sim=True, simulator="icarus", divisor=4, build_root=BUILD,
                  timeout_cycles=4096, read_params=False, extra_tests=["bad_frames_get_error_responses"])
    assert r["bit_exact"], r["first_mismatch"]
    assert r["output_packets"] == len(job.expected) > 0 and r["done_count"] == job.info["tokens"] >= 16
    assert r["mac_active_cycles"] == r["model_mac_active_cycles"]
    assert r["errors"] == 0 and r["status"] == 0
    lint = lint_verilog(Path(r["build_dir"]).parent / "board_top.v", "board_top")   # what was simulated
    assert lint.clean, lint.messages


@pytest.mark.full
def test_board_run_sim_vitcod_two_heads_cli(tmp_path):
    """`attnforge board run --sim` on two heads of a masks file: bit exact, the registers read back the
    generator parameters, MAC_ACTIVE = the cycle model's mac_active_cycles."""
    masks = save_masks(polarized_mask_set(1, 2, 8, 0.5, seed=2), tmp_path / "masks.npz")
    out = tmp_path / "run.json"
    rc = main(["board", "run", "--design", "vitcod", "--masks", str(masks), "--all-heads", "--sim",
               "--vitcod-head-dim", "8", "--vitcod-macs", "4", "--vitcod-dense-lines", "1",
               "--vitcod-sparse-lines", "1", "--divisor", "4", "--simulator", "icarus", "--seed", "1",
               "--build-root", str(BUILD), "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0 and r["bit_exact"] and r["output_packets"] == 2 and r["done_count"] == 2
    assert r["registers_match_config"] is True
    # MAC_ACTIVE is the union of the two engines' issue cycles: over the UART the output backpressure
    # moves how they overlap, so it lies between the busier engine's count and both together (the
    # full-rate equality with the model's mac_active_cycles: tests/rtl/test_axi.py)
    low, high = max(r["model_engine_issue_cycles"]), sum(r["model_engine_issue_cycles"])
    assert low <= r["mac_active_cycles"] <= high and r["mac_active_consistent"] is True


@pytest.mark.full
def test_board_run_sim_linear_cli_default_divisor(tmp_path):
    out = tmp_path / "run.json"
    rc = main(["board", "run", "--design", "linear-decode", "--d", "8", "--macs", "2", "--tokens", "16", "--sim",
               "--simulator", "icarus", "--build-root", str(BUILD), "--json", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0 and r["bit_exact"] and r["registers_match_config"] is True


#: The linear decode configuration that fits the iCEBreaker's UP5K with the AXI wrapper and the UART bridge
#: (docs/board.md, "Bitstreams": d = 8 with M = 2 needs 9 SB_MAC16 of 8, with M = 1 and K = 2, T = 2
#: 5,899 LC of 5,280).
ICEBREAKER_LINEAR = ["--d", "8", "--macs", "1", "--conv-taps", "1", "--max-tokens", "64", "--t-max", "1",
                     "--heads", "1"]


@pytest.mark.full
@pytest.mark.timeout(1800)
def test_icebreaker_linear_decode_bitstream_meets_timing(tmp_path):
    """`attnforge board build --board icebreaker --design linear-decode` (the fitting configuration): a
    bitstream, both clocks' Fmax at or above their constraints (the accelerator's PLL clock at the board's
    default 40.5 MHz, the bridge's 12 MHz oscillator), the paths between them within their budget, the
    report's fields. About two minutes here (82 % of the UP5K's logic cells)."""
    out = tmp_path / "ice"
    rc = main(["board", "build", "--board", "icebreaker", "--design", "linear-decode", *ICEBREAKER_LINEAR,
               "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert rc == 0 and report["timing_met"] and report["fmax_mhz"] >= report["clock_mhz"] == 40.5
    clocks = report["timing"]["clocks"]
    assert len(clocks) == 2 and all(c["fmax_mhz"] >= c["constraint_mhz"] for c in clocks.values())
    assert sorted(c["constraint_mhz"] for c in clocks.values()) == pytest.approx([12, 40.5], rel=1e-3)
    # each clock's critical path names its stage in the design (where to pipeline next) and adds up
    for name, c in clocks.items():
        path = c["critical_path"]
        assert path["stage"].startswith("board.accel." if name == report["timing"]["accel_clock"] else "board.")
        assert path["logic_ns"] + path["routing_ns"] == pytest.approx(path["delay_ns"], abs=0.01)
        assert path["delay_ns"] <= 1e3 / c["fmax_mhz"] + 0.01
    assert "critical board.accel." in (out / "report.txt").read_text()
    assert len(report["timing"]["crossings"]) == 2 and all(c["met"] for c in report["timing"]["crossings"])
    assert (out / "board_top.bin").stat().st_size > 0
    assert report["utilization"]["ICESTORM_PLL"]["used"] == 1


@pytest.mark.full
def test_ulx3s_bitstream_with_classic_abc_and_static_placer(tmp_path):
    """`attnforge board build --board ulx3s --lut-mapper abc --placer static` (the flow the ViTCoD block
    needs on the 85k, docs/vitcod-hw.md) on a tiny linear decode block: amaranth-boards' Yosys script
    split around classic ABC gives a netlist nextpnr routes, the static placer ran, timing met at the
    PLL clock (about a minute)."""
    out = tmp_path / "ulx3s"
    rc = main(["board", "build", "--board", "ulx3s", "--design", "linear-decode", "--d", "4", "--macs", "2",
               "--conv-taps", "2", "--t-max", "2", "--heads", "1", "--lut-mapper", "abc", "--placer", "static",
               "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert rc == 0 and report["timing_met"] and report["fmax_mhz"] >= report["clock_mhz"] == 30
    assert sorted(c["constraint_mhz"] for c in report["timing"]["clocks"].values()) == pytest.approx([25, 30], rel=1e-3)
    assert (report["placer"], report["lut_mapper"]) == ("static", "abc")
    assert "abc -lut 4:7" in (out / "board_top.ys").read_text()
    assert "Running Static placer" in (out / "board_top.tim").read_text()
    # nextpnr's progress, followed in its --log: router2 (the ECP5 default) ran until no wire was overused
    pnr = report["pnr"]
    assert (pnr["placer"], pnr["router"], pnr["routed"]) == ("static", "router2", True)
    assert pnr["router2_overused"][-1] == 0 and pnr["route_seconds"] > 0
    assert (out / "board_top.bit").stat().st_size > 0 and report["utilization"]["EHXPLLL"]["used"] == 1


@pytest.mark.full
def test_board_sim_benchmark_quick(tmp_path):
    """`attnforge bench board_sim --quick`: both designs through the simulated board top (Icarus, the
    make-test sizes), each row bit exact with MAC_ACTIVE consistent with the cycle model (equal for the
    linear block, within the engines' bounds for ViTCoD) and the command that reproduces it."""
    from attnforge.benchmarks import run_benchmarks

    (path,) = run_benchmarks(tmp_path, ["board_sim"], quick=True)
    r = json.loads(path.read_text())
    assert r["all_bit_exact"] and set(r["runs"]) == {"linear-decode", "vitcod"}
    for row in r["runs"].values():
        assert row["exit_status"] == 0 and row["bit_exact"] and row["mac_active_consistent"] is True
        assert row["output_packets"] > 0 and row["command"].startswith("attnforge board run --sim")
    assert r["runs"]["vitcod"]["output_packets"] == 2 and r["runs"]["vitcod"]["registers_match_config"]
