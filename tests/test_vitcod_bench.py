"""The ViTCoD algorithm study runs end to end (quick: one seed, a 1-layer model, one epoch each)."""

import json

import pytest

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


@pytest.mark.full      # two quick studies: ~7 s idle, 21 s at a load of 8
def test_vitcod_algo_dense_cache_and_pca_autoencoder(tmp_path):
    """A second run with the dense cache loads the first run's dense model (same dense accuracy, nothing
    retrained); the auto-encoder arm starts from the PCA when asked."""
    import dataclasses
    import json

    from attnforge.benchmarks.vitcod_algo import QUICK, dense_cache_path, run

    cfg = dataclasses.replace(QUICK, sparsities=(0.9,), ae_init="pca", ae_weight=0.1)
    first = json.loads(run(tmp_path / "a", config=cfg, dense_cache=tmp_path / "cache").read_text())
    cached = dense_cache_path(tmp_path / "cache", cfg, 0)
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    second = json.loads(run(tmp_path / "b", config=cfg, dense_cache=tmp_path / "cache").read_text())
    assert cached.stat().st_mtime_ns == stamp
    assert second["seeds"][0]["dense"] == first["seeds"][0]["dense"]
    assert second["seeds"][0]["dense_history"] == first["seeds"][0]["dense_history"]
    assert second["config"]["ae_init"] == "pca"
    with pytest.raises(ValueError, match="ae_init must be 'random' or 'pca', got 'svd'"):
        run(tmp_path / "c", config=dataclasses.replace(cfg, ae_init="svd"), dense_cache=tmp_path / "cache")
