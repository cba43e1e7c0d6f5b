"""The ViTCoD algorithm study runs end to end (quick: one seed, a 1-layer model, one epoch each)."""

import json

from attnforge.benchmarks import run_benchmarks


def test_vitcod_algo_bench_quick(tmp_path):
    [path] = run_benchmarks(tmp_path, ["vitcod_algo"], quick=True, command="pytest")
    result = json.loads(path.read_text())
    assert result["format"] == "attnforge.bench/1" and result["command"] == "pytest"
    summary = result["summary"]
    assert set(summary["sparsity"]) == {"0.50", "0.90"}
    for key, row in summary["sparsity"].items():
        for arm in ("plain", "ae"):
            assert abs(row[arm]["achieved_sparsity"]["mean"] - float(key)) <= 0.005
            assert 0 <= row[arm]["after_ft"]["mean"] <= 100
    assert summary["claim_90"]["holds"] == (summary["claim_90"]["drop_points"] <= 1.5)
    report = result["seeds"][0]["report_90"]
    assert {"sparsity", "n_global", "dense_share_of_kept", "dense_work_share", "cycles"} <= set(report["heads"][0])
    assert report["accelerator"]["head_dim"] == 8 and report["cycles"] == sum(r["cycles"] for r in report["heads"])
    assert (tmp_path / "vitcod_algo.png").stat().st_size > 0 and (tmp_path / "vitcod_algo_masks90.png").is_file()
    assert not (tmp_path / "vitcod_algo.partial.json").exists()
