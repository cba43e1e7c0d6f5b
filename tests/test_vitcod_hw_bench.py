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
