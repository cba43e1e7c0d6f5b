"""The ViTCoD hardware benchmark's configurations and its issue-14 goal table (no RTL, no cycle model)."""

import pytest

from attnforge.benchmarks import vitcod_hw as bench


def test_bench_configurations_are_legal_and_cover_the_goals():
    names = [c[0] for c in bench.MODEL_CONFIGS]
    assert len(set(names)) == len(names)
    for name, dl, sl, width, tiles, depth in bench.MODEL_CONFIGS:
        cfg = bench._config(dl + sl, dl, bench.N * bench.N, width, tiles, depth)
        assert cfg.tiles == tiles and cfg.data_width == width and cfg.merge_depth == depth
        assert depth == 1 or tiles > 1, name        # a deeper row merger only with tiles
    assert {c[0] for c in bench.RTL_CONFIGS} <= set(names)
    macs = {name: 8 * (dl + sl) * tiles for name, dl, sl, _, tiles, _ in bench.MODEL_CONFIGS}
    widths = {c[0]: c[3] for c in bench.MODEL_CONFIGS}
    for key, _, cfg_names, _, _, _, _ in bench.GOALS:
        assert set(cfg_names) <= set(names), key
        # every configuration of a goal has the goal's MACs and stream (one pipeline or tiles)
        assert len({macs[n] for n in cfg_names}) == 1 and len({widths[n] for n in cfg_names}) == 1, key
    assert macs["8x(4+4) x 8"] == macs["32+32 x 8"] == 512


def _row(config, masks, s, source, util, over_bound=1.0):
    return {"config": config, "masks": masks, "target_sparsity": s, "source": source,
            "utilization": util, "cycles_over_bound": over_bound}


def test_goals_take_rtl_rows_first_and_the_best_worst_configuration():
    rows = [_row("8+8 x 8", "synthetic", 0.9, "cycle model", 0.94), _row("8+8 x 8", "real-shaped", 0.9, "cycle model", 0.84),
            _row("2x(4+4) x 8", "synthetic", 0.9, "cycle model", 0.95), _row("2x(4+4) x 8", "real-shaped", 0.9, "cycle model", 0.99),
            _row("2x(4+4) x 8", "real-shaped", 0.9, "rtl", 0.86),             # the RTL row wins over the model's
            _row("2x(4+4) x 8", "real-shaped", 0.95, "rtl", 0.10)]            # another sparsity: not this goal
    g = bench.goals(rows)["8+8_util_90"]
    assert g["per_config"]["2x(4+4) x 8"]["real-shaped"] == {"value": 0.86, "source": "rtl"}
    assert g["best_config"] == "2x(4+4) x 8" and g["best_worst_value"] == 0.86 and g["met"] is True
    rows[-2]["utilization"] = 0.849                                           # still above 8+8's 0.84, below 0.85
    g = bench.goals(rows)["8+8_util_90"]
    assert g["best_config"] == "2x(4+4) x 8" and g["met"] is False
    assert "4+4_util_90" not in bench.goals(rows)                           # no rows for it


@pytest.mark.parametrize("over, met", [(1.29, True), (1.31, False)])
def test_goal_with_an_upper_limit(over, met):
    rows = [_row("8x(4+4) x 8", k, 0.95, "cycle model", 0.6, over) for k in ("synthetic", "real-shaped")]
    rows.append(_row("32+32 x 8", "synthetic", 0.95, "cycle model", 0.2, 4.7))
    rows.append(_row("32+32 x 8", "real-shaped", 0.95, "cycle model", 0.2, 4.9))
    g = bench.goals(rows)["32+32_bound_95"]
    assert g["best_config"] == "8x(4+4) x 8" and g["best_worst_value"] == over and g["met"] is met


def test_sweep_is_the_same_on_one_and_two_workers(tmp_path):
    """The benchmark's cycle-model sweep as jobs (``attnforge bench vitcod_hw --workers N``): two
    spawned processes give the rows one process gives, in the same order, value for value (two
    small mask sets of two heads, two configurations; the RTL runs take the same path, in make
    test-full's quick benchmark)."""
    import json

    from attnforge.algo.vitcod.synthetic import polarized_mask_set, real_shaped_mask_set

    masks = {("synthetic", 0.9): polarized_mask_set(1, 2, bench.N, 0.9, bench.DENSE_SHARE, seed=90),
             ("real-shaped", 0.95): real_shaped_mask_set(1, 2, bench.N, 0.95, seed=96)}
    cfgs = {name: bench._config(dl + sl, dl, bench.N * bench.N, width, tiles, depth)
            for name, dl, sl, width, tiles, depth in bench.MODEL_CONFIGS
            if name in ("4+4 x 8", "2x(4+4) x 8")}
    one = bench.sweep(masks, cfgs, (), tmp_path, rtl_dense=False, extras=False, workers=1)
    calls = []
    two = bench.sweep(masks, cfgs, (), tmp_path, rtl_dense=False, extras=False, workers=2,
                      progress=lambda done, total: calls.append((done, total)))
    assert [(r["config"], r["masks"]) for r in one["rows"]] == [(n, k) for k, _ in masks for n in cfgs]
    assert json.dumps(two) == json.dumps(one)
    assert calls[-1] == (4, 4)


def test_effective_throughput_is_two_ops_per_mac_at_the_routed_clock():
    """4+4 lines of 8 MACs (64 MACs) at 50 MHz and utilization 0.75: 2 * 64 * 50e6 * 0.75 = 4.8 GOPS."""
    cfgs = {"4+4 x 8": bench._config(8, 4, bench.N * bench.N)}
    rows = [_row("4+4 x 8", "real-shaped", 0.9, "rtl", 0.75), _row("8+8 x 8", "real-shaped", 0.9, "rtl", 0.9)]
    (got,) = bench.effective_throughput(rows, {"fmax_mhz": 50.0}, cfgs)
    assert got["macs"] == 64 and got["gops"] == pytest.approx(4.8) and got["masks"] == "real-shaped"
    assert bench.effective_throughput(rows, {"fmax_mhz": None}, cfgs) == []


def test_effective_throughput_refuses_another_configurations_fmax():
    """A synthesis report of other lines or MACs (its ``config``) is refused, naming both; the stream width
    may differ (the routed benchmark configuration has a 64-bit stream, the sweep's a wider one)."""
    import dataclasses

    cfg = bench._config(8, 4, bench.N * bench.N)
    rows = [_row("4+4 x 8", "real-shaped", 0.9, "rtl", 0.75)]
    same = dict(dataclasses.asdict(cfg), data_width=64)
    assert bench.effective_throughput(rows, {"fmax_mhz": 50.0, "config": same}, {"4+4 x 8": cfg})
    other = dict(same, sparse_lines=2)
    with pytest.raises(ValueError, match=r"'sparse_lines': 2.*not of the benchmark's 4\+4 x 8"):
        bench.effective_throughput(rows, {"fmax_mhz": 50.0, "config": other}, {"4+4 x 8": cfg})


def test_a_missing_synth_report_is_refused_before_the_sweep(tmp_path):
    """--synth-report naming no file stops at once (not after the hour of the sweep); naming it without
    vitcod_hw among the benchmarks is refused too."""
    from attnforge.benchmarks import run_benchmarks

    with pytest.raises(FileNotFoundError, match="--synth-report .*nope.json: no such file"):
        bench.run(tmp_path, synth_report=tmp_path / "nope.json")
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="only vitcod_hw reads it"):
        run_benchmarks(tmp_path, ["mac_line"], synth_report=tmp_path / "nope.json")
