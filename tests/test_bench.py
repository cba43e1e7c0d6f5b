"""The benchmark harness runs end to end and writes self-describing JSON."""

import json

import pytest

from attnforge.benchmarks import run_benchmarks


@pytest.mark.full     # simulations on both simulators plus synthesis: make test-full and make bench
def test_mac_line_bench_quick(tmp_path):
    [path] = run_benchmarks(tmp_path, ["mac_line"], quick=True, command="pytest")
    result = json.loads(path.read_text())
    assert result["format"] == "attnforge.bench/1" and result["command"] == "pytest"
    for row in result["mac_line"]:
        rtl = row["rtl"]
        assert rtl["ideal_cycles"] == rtl["beats"] == result["workload"]["vector_length"] * rtl["vectors"]
        assert rtl["utilization"] == rtl["ideal_cycles"] / rtl["measured_cycles"]
        assert set(row["simulators"]) == {"verilator", "icarus"}
    [synth] = result["synthesis"]
    assert synth["dsp"] == synth["config"]["macs"] and synth["fmax_mhz"] > 0
