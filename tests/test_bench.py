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


def test_sweeping_benchmarks_take_workers_and_cluster(monkeypatch):
    """``attnforge bench NAME --workers N --cluster ADDRESS`` reaches the benchmarks made of independent
    runs (their sweeps go through ``attnforge.jobs.run_jobs``); the others run in the command's process."""
    from attnforge import benchmarks
    from attnforge.cli import main

    # (not every benchmark: importing linear_algo's torch takes seconds)
    assert [benchmarks.takes_jobs(n) for n in ("vitcod_hw", "mac_line", "linear_hw", "tickets", "fuzz")] == \
        [True, True, True, False, False]
    seen = []
    monkeypatch.setitem(benchmarks.BENCHMARKS, "vitcod_hw", "attnforge.benchmarks.vitcod_hw:run")
    monkeypatch.setattr("attnforge.benchmarks.vitcod_hw.run", lambda out, *, quick, command, workers=1, cluster=None:
                        seen.append((quick, workers, cluster)) or out)
    monkeypatch.setattr("attnforge.benchmarks.tickets.run", lambda out, *, quick, command: seen.append("tickets") or out)
    assert main(["bench", "vitcod_hw", "tickets", "--quick", "--workers", "2", "--cluster", "tcp://h:8786"]) == 0
    assert seen == [(True, 2, "tcp://h:8786"), "tickets"]
