"""``attnforge explore vitcod`` and its resource model (``fpga/resources.py``, ``attnforge/flows/explore.py``).

The resource model is checked against what it models: its memory list against the
memories of the elaborated design, its DSP and block-RAM counts against every
recorded synthesis (``fpga/data/vitcod_ecp5.json``: Yosys + nextpnr's packer),
exactly, and its LUT/FF fit against the recorded configurations it was not fitted
on (held out), within 15 %.
"""

import json
import re
from pathlib import Path
from collections import Counter

import pytest

from attnforge.algo.vitcod.synthetic import real_shaped_mask_set
from attnforge.cli import main
from attnforge.errors import ConfigError
from attnforge.flows.explore import explore_vitcod, format_pnr_table, pareto_front, write_outputs
from attnforge.formats.masks import save_masks
from attnforge.fpga.resources import (MAX_FEATURES, Mul, bram_blocks, dsp_blocks, fit_vitcod, load_records, predict,
                                      vitcod_memories, vitcod_multipliers, vitcod_resources)
from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig

RECORDS = load_records()
HELD_OUT_TOLERANCE = 0.15


def _design_memories(cfg):
    """(name, width, depth, read ports) of every memory of the elaborated accelerator, from its RTLIL."""
    from amaranth.back import rtlil

    text = rtlil.convert(VitcodAccelerator(cfg), name="vitcod")
    decl, reads, module, cell = {}, Counter(), None, None
    for line in text.splitlines():
        s = line.strip()
        if line.startswith("module "):
            module = line.split()[1]
        elif s.startswith("memory "):
            parts = s.split()
            decl[(module, parts[-1])] = (int(parts[2]), int(parts[4]))
        elif s.startswith("cell $memrd"):
            cell = "rd"
        elif s.startswith("cell "):
            cell = None
        elif s.startswith("parameter \\MEMID") and cell == "rd":
            reads[(module, s.split('"')[1].replace("\\\\", "\\"))] += 1
    return sorted((name.strip("\\"), w, d, reads[(mod, name)]) for (mod, name), (w, d) in decl.items())


@pytest.mark.parametrize("kw", [
    pytest.param(dict(head_dim=16, max_tokens=65, max_nnz=1024, macs=4, dense_lines=1, sparse_lines=3,
                      data_width=64), marks=pytest.mark.full),
    dict(head_dim=16, max_tokens=65, max_nnz=1024, macs=4, dense_lines=2, sparse_lines=2, data_width=128,
         decoder=True),
    pytest.param(dict(head_dim=64, max_tokens=197, max_nnz=4096, macs=8, dense_lines=4, sparse_lines=4,
                      data_width=128), marks=pytest.mark.full),
    # four buffer banks and eight row slots: deeper buffers and score/exponent memories
    pytest.param(dict(head_dim=16, max_tokens=65, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=1,
                      data_width=128, banks=4, row_slots=8), marks=pytest.mark.full),
], ids=["d16-1+3", "d16-decoder", "d64-4+4", "d16-banks4-slots8"])
def test_memory_list_is_the_designs(kw):
    cfg = VitcodConfig(**kw)
    want = sorted((m.name.split(".")[-1], m.width, m.depth, m.read_ports) for m in vitcod_memories(cfg))
    assert _design_memories(cfg) == want


def test_dsp_count_leaves_a_one_bit_slice_to_logic():
    """Yosys's mul2dsp keeps a slice narrower than 2 bits in logic: a 19 x 16 product (the exponent unit
    at d = 4) takes one MULT18X18D, not two. Recorded: docs/explore.md's routed tiny configuration (d = 4,
    N = 8, 1+1 lines x 2 MACs, 16-bit stream), 14 MULT18X18D packed by nextpnr."""
    assert dsp_blocks(Mul("m", 19, 16, 1)) == 1 and dsp_blocks(Mul("m", 20, 16, 1)) == 2
    assert dsp_blocks(Mul("m", 37, 19, 1)) == 2 and dsp_blocks(Mul("m", 18, 18, 3)) == 3
    cfg = VitcodConfig(head_dim=4, max_tokens=8, max_nnz=32, macs=2, dense_lines=1, sparse_lines=1, data_width=16)
    assert vitcod_resources(cfg, "ecp5-25k")["dsp"] == 14


def test_records_cover_fit_and_held_out_configurations():
    splits = Counter(r["split"] for r in RECORDS)
    assert splits["heldout"] >= 4 and splits["fit"] >= MAX_FEATURES + 3, splits
    names = [json.dumps(r["config"], sort_keys=True) for r in RECORDS]
    assert len(set(names)) == len(names), "a configuration recorded twice"


@pytest.mark.parametrize("rec", RECORDS, ids=[r["name"] for r in RECORDS])
def test_dsp_and_block_ram_exact(rec):
    cfg = VitcodConfig(**rec["config"])
    res = vitcod_resources(cfg)
    assert res["dsp"] == rec["packed"]["MULT18X18D"] == sum(dsp_blocks(m) for m in vitcod_multipliers(cfg))
    assert res["bram"] == rec["packed"]["DP16KD"] == sum(bram_blocks(m) for m in vitcod_memories(cfg))


def test_luts_and_ffs_within_15_percent_on_held_out_configurations():
    """Fitted (features and coefficients) on the ``fit`` records only; every held-out record within 15 % of
    nextpnr's packed count."""
    fit = fit_vitcod([dict(r, packed=dict(r["packed"])) for r in RECORDS if r["split"] == "fit"], "fit")
    worst = {}
    for rec in (r for r in RECORDS if r["split"] == "heldout"):
        cfg = VitcodConfig(**rec["config"])
        for key, cell in (("lut", "TRELLIS_COMB"), ("ff", "TRELLIS_FF")):
            err = abs(predict(fit, key, cfg) - rec["packed"][cell]) / rec["packed"][cell]
            worst[key] = max(worst.get(key, 0.0), err)
    assert worst["lut"] <= HELD_OUT_TOLERANCE and worst["ff"] <= HELD_OUT_TOLERANCE, worst


def test_block_ram_shapes():
    from attnforge.fpga.resources import Mem

    assert bram_blocks(Mem("a", 32, 1024, 1)) == 2       # 1024 x 18 twice (or 512 x 36 twice)
    assert bram_blocks(Mem("b", 36, 512, 3)) == 3        # one 512 x 36 per read port
    assert bram_blocks(Mem("c", 1, 16384, 1)) == 1
    assert bram_blocks(Mem("d", 128, 260, 1)) == 4       # 512 x 36: ceil(128 / 36)


def test_tiled_and_unknown_device_refused():
    with pytest.raises(ConfigError, match="tiles=2"):
        vitcod_resources(VitcodConfig(head_dim=16, max_tokens=65, tiles=2, data_width=64))
    with pytest.raises(ConfigError, match="ice40-up5k"):
        vitcod_resources(VitcodConfig(head_dim=16, max_tokens=65, data_width=64), "ice40-up5k")


def test_pareto_front_keeps_only_undominated_rows():
    rows = [dict(area=a, cycles=c, name=n) for n, a, c in
            [("a", 0.1, 900), ("b", 0.2, 500), ("c", 0.2, 700), ("d", 0.3, 600), ("e", 0.5, 100), ("f", 0.1, 950)]]
    assert [r["name"] for r in pareto_front(rows)] == ["a", "b", "e"]


@pytest.fixture(scope="module")
def masks_file(tmp_path_factory):
    ms = real_shaped_mask_set(2, 2, 65, 0.9, seed=3)
    return save_masks(ms, tmp_path_factory.mktemp("explore") / "masks.npz")


def test_explore_cli_writes_front_table_and_plot(masks_file, tmp_path, capsys):
    args = ["explore", "vitcod", "--masks", str(masks_file), "--head-dim", "16", "--lines", "1+1", "1+3", "2+2",
            "4+4", "--macs", "4", "8",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| configuration |" in out and "fastest that fits" in out
    result = json.loads((tmp_path / "out" / "explore.json").read_text())
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000
    rows, front = result["rows"], result["pareto"]
    assert {r["macs"] for r in rows} == {4, 8} and len(rows) == result["candidates"] > len(front) >= 1
    assert {(r["dense_lines"], r["sparse_lines"]) for r in rows} == {(1, 1), (1, 3), (2, 2), (4, 4)}
    for f in front:       # nothing beats a front row on both axes
        assert not any(r["cycles"] < f["cycles"] and r["area"] <= f["area"] for r in rows)
    for r in rows:
        assert r["utilization"] == pytest.approx(r["ideal_cycles"] / r["cycles"])
        assert sum(r["cycles_per_layer"]) <= r["cycles"]
        assert r["fits"] == all(r["resources"][k] <= result["capacity"][k] for k in ("lut", "ff", "dsp", "bram"))
    # A rerun answers from the cache: the same rows, no configuration evaluated again (the jobs: one per
    # (lines, MACs per line), 4 x 2).
    calls = []
    again = explore_vitcod(masks_file, head_dim=16, line_splits=((1, 1), (1, 3), (2, 2), (4, 4)), macs=(4, 8),
                           cache_dir=tmp_path / "cache",
                           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(8, 8)] and again["rows"] == rows


def test_budget_limits_what_fits(masks_file, tmp_path):
    space = dict(line_splits=((1, 1), (2, 2)), macs=(8,), decoder=(False,))
    full = explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path, workers=1, **space)
    least = min(r["resources"]["dsp"] for r in full["rows"])
    tight = explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path, budget_dsp=least, **space)
    assert [r["fits"] for r in tight["rows"]] == [r["resources"]["dsp"] <= least and r["fits"] for r in full["rows"]]
    assert tight["capacity"]["dsp"] == least


@pytest.mark.parametrize("kw, message", [
    (dict(head_dim=0), "--head-dim"),
    (dict(device="ice40-hx8k"), "--device"),
    (dict(budget_bram=-1), "--budget-bram"),
    (dict(head_dim=6), "no configuration of the sweep"),
])
def test_bad_options_named(masks_file, tmp_path, kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        explore_vitcod(masks_file, cache_dir=tmp_path, **{"head_dim": 16, **kw})


def test_bad_lines_option_named(masks_file, tmp_path):
    assert main(["explore", "vitcod", "--masks", str(masks_file), "--lines", "2x2", "--out", str(tmp_path)]) == 2


def test_ice40_up5k_refused_with_the_reason(masks_file, tmp_path, capsys):
    """The issue's --device ice40-up5k: refused (exit 2) saying why, not an argparse 'invalid choice'."""
    out = tmp_path / "out"
    assert main(["explore", "vitcod", "--masks", str(masks_file), "--device", "ice40-up5k", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not fit an iCE40 UP5K" in err and "8 SB_MAC16" in err and "ecp5-85k" in err
    assert not out.exists()


# --- --pnr: the front's fastest fitting configurations through the toolchain ---------------------------------

_PNR_SPACE = dict(line_splits=((1, 1), (2, 2), (4, 4)), macs=(4, 8), decoder=(False,))


def _fake_synthesize(calls, fail=()):
    """A stand-in for ``fpga.synth.synthesize`` (Yosys on the smallest accelerator takes minutes): the
    report's fields that ``_pnr_job`` reads, made up from the configuration so each is told apart."""

    def synthesize(component, *, top, device, out_dir, pnr=True, pack_only=False, **kw):
        from attnforge.fpga.synth import SynthError

        cfg = component._config
        calls.append((cfg.dense_lines, cfg.sparse_lines, cfg.macs, cfg.data_width, pnr, pack_only))
        if (cfg.dense_lines, cfg.sparse_lines, cfg.macs) in fail:
            raise SynthError("Yosys (synth_ecp5) failed (exit 1); see yosys.log:\nABC9 ended")
        routed = pnr and not pack_only
        macs = (cfg.dense_lines + cfg.sparse_lines) * cfg.macs
        return {"luts": 1000 * macs, "ffs": 500 * macs, "dsp": macs + 16, "bram": 20,
                "fmax_mhz": 100.0 - macs if routed else None, "target_mhz": 150.0,
                "nextpnr_utilization": {"TRELLIS_COMB": {"used": 1100 * macs, "available": 83640},
                                        "TRELLIS_FF": {"used": 520 * macs, "available": 83640},
                                        "MULT18X18D": {"used": macs + 16, "available": 156},
                                        "DP16KD": {"used": 20, "available": 208}} if pnr else {},
                "critical_stage": "a -> b" if routed else None, "seed": 1 if routed else None, "router": "router2",
                "tools": {"yosys": "Yosys 0.x", "nextpnr": "nextpnr-0.x"}, "yosys_seconds": 60.0,
                "nextpnr_seconds": 30.0 if pnr else 0.0, "folder": str(out_dir)}
    return synthesize


def test_pnr_runs_the_fastest_fitting_configurations_and_caches_them(masks_file, tmp_path, monkeypatch):
    """``--pnr 2``: the two fastest rows of the front that fit go through ``synthesize`` (one job each,
    here in this process: ``workers=1``), their figures land beside the model's; a rerun reads them
    from the cache; ``--pnr 3`` runs only the one not cached yet."""
    calls = []
    monkeypatch.setattr("attnforge.fpga.synth.synthesize", _fake_synthesize(calls))
    bars = []
    result = explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path / "cache", workers=1, pnr=2,
                            pnr_progress=lambda done, total: bars.append((done, total)), **_PNR_SPACE)
    fitting_front = sorted((r for r in result["pareto"] if r["fits"]), key=lambda r: r["cycles"])
    assert len(fitting_front) >= 3, "the test needs a front of at least three fitting rows"
    chosen = fitting_front[:2]
    assert chosen[0] is result["fastest_fitting"] or chosen[0] == result["fastest_fitting"]
    assert sorted(calls) == sorted((r["dense_lines"], r["sparse_lines"], r["macs"], r["data_width"], True, False)
                                   for r in chosen)
    assert bars[0] == (0, 2) and bars[-1] == (2, 2)
    assert [r for r in result["rows"] if "pnr" in r] == [r for r in result["rows"] if r in chosen]
    for r in chosen:
        p, macs = r["pnr"], r["total_macs"]
        assert p["fmax_mhz"] == 100.0 - macs and p["packed"] == {"lut": 1100 * macs, "ff": 520 * macs,
                                                                  "dsp": macs + 16, "bram": 20}
        assert p["model"] == r["resources"]
        assert p["effective_gops"] == pytest.approx(2 * macs * (100.0 - macs) * 1e6 * r["utilization"] / 1e9)
        assert p["seconds_all_heads"] == pytest.approx(r["cycles"] / ((100.0 - macs) * 1e6))
        assert p["model_error"]["lut"] == pytest.approx((r["resources"]["lut"] - 1100 * macs) / (1100 * macs))
    assert result["pnr"]["configurations"] == 2 and result["pnr"]["failed"] == 0
    paths = write_outputs(result, tmp_path / "out")
    table = (tmp_path / "out" / "pareto.md").read_text()
    assert "placed and routed on ecp5-85k" in table and f"| {100.0 - chosen[0]['total_macs']:.1f} |" in table
    assert json.loads(Path(paths["json"]).read_text())["pnr"]["rows"][0]["fmax_mhz"] == chosen[0]["pnr"]["fmax_mhz"]

    calls.clear()
    again = explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path / "cache", workers=1, pnr=2, **_PNR_SPACE)
    assert calls == [] and again["rows"] == result["rows"]
    more = explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path / "cache", workers=1, pnr=3, **_PNR_SPACE)
    third = fitting_front[2]
    assert calls == [(third["dense_lines"], third["sparse_lines"], third["macs"], third["data_width"], True, False)]
    assert more["pnr"]["configurations"] == 3


@pytest.mark.parametrize("flow, pnr, pack_only", [("pack", True, True), ("yosys", False, False)])
def test_pnr_flow_stops_early(masks_file, tmp_path, monkeypatch, flow, pnr, pack_only):
    calls = []
    monkeypatch.setattr("attnforge.fpga.synth.synthesize", _fake_synthesize(calls))
    result = explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path, workers=1, pnr=1, pnr_flow=flow,
                            **_PNR_SPACE)
    assert [c[4:] for c in calls] == [(pnr, pack_only)]
    p = result["fastest_fitting"]["pnr"]
    assert p["fmax_mhz"] is None and p["effective_gops"] is None and p["flow"] == flow
    assert (p["packed"] is None) == (flow == "yosys")
    assert ("Yosys (pre-pack)" in format_pnr_table(result)) == (flow == "yosys")


def test_failed_toolchain_run_is_reported_and_not_cached(masks_file, tmp_path, monkeypatch):
    calls = []
    probe = explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path, workers=1, **_PNR_SPACE)
    best = probe["fastest_fitting"]
    monkeypatch.setattr("attnforge.fpga.synth.synthesize", _fake_synthesize(
        calls, fail={(best["dense_lines"], best["sparse_lines"], best["macs"])}))
    result = explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path, workers=1, pnr=1, **_PNR_SPACE)
    assert "ABC9" in result["fastest_fitting"]["pnr"]["error"] and result["pnr"]["failed"] == 1
    assert "failed: Yosys (synth_ecp5) failed" in format_pnr_table(result)
    explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path, workers=1, pnr=1, **_PNR_SPACE)
    assert len(calls) == 2          # tried again: a failure is not remembered


@pytest.mark.parametrize("kw, message", [(dict(pnr=-1), "--pnr"), (dict(pnr=1, pnr_flow="bitstream"), "--pnr-flow")])
def test_bad_pnr_options_named(masks_file, tmp_path, kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        explore_vitcod(masks_file, head_dim=16, cache_dir=tmp_path, **kw)


def test_pnr_option_through_the_cli(masks_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("attnforge.fpga.synth.synthesize", _fake_synthesize([]))
    args = ["explore", "vitcod", "--masks", str(masks_file), "--head-dim", "16", "--lines", "1+1", "2+2",
            "--macs", "4", "--no-decoder", "--workers", "1", "--pnr", "--pnr-flow", "pack",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 configuration(s) through the toolchain (pack) on ecp5-85k" in out and "nextpnr packed" in out
    assert json.loads((tmp_path / "out" / "explore.json").read_text())["pnr"]["requested"] == 1


@pytest.mark.full
@pytest.mark.timeout(3600)
def test_pnr_places_and_routes_a_tiny_configuration_for_real(tmp_path, capsys):
    """The real toolchain (Yosys + nextpnr-ecp5 place and route on ECP5-25k) on the smallest accelerator
    (d = 4, 8 tokens, one head, 1+1 lines of 2 MACs at 16 bits), hence make test-full: the same
    configuration through ``synthesize`` alone took Yosys 184 s and nextpnr 1,441 s on the 2 cores at a
    load average of 8 to 11 (44 MHz routed). A rerun answers from the cache."""
    masks = save_masks(real_shaped_mask_set(1, 1, 8, 0.5, seed=0), tmp_path / "tiny.npz")
    args = ["explore", "vitcod", "--masks", str(masks), "--head-dim", "4", "--lines", "1+1", "--macs", "2",
            "--data-width", "16", "--no-decoder", "--device", "ecp5-25k", "--workers", "1", "--pnr",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "explore.json").read_text())
    (row,) = result["rows"]
    p = row["pnr"]
    assert "error" not in p, p.get("error")
    report = json.loads((Path(p["folder"]) / "report.json").read_text())
    assert report["placed_and_routed"] and p["fmax_mhz"] == report["fmax_mhz"] > 0
    assert p["packed"]["dsp"] == report["dsp"] > 0 and p["packed"]["lut"] > 0 and p["critical_stage"]
    assert p["effective_gops"] == pytest.approx(2 * 4 * p["fmax_mhz"] * 1e6 * row["utilization"] / 1e9)
    assert f"| {p['fmax_mhz']:.1f} |" in (tmp_path / "out" / "pareto.md").read_text()
    capsys.readouterr()
    # The rerun: the place-and-route job's result comes from the cache (its folder is not touched).
    mtime = (Path(p["folder"]) / "report.json").stat().st_mtime_ns
    assert main(args) == 0
    assert json.loads((tmp_path / "out" / "explore.json").read_text())["rows"] == result["rows"]
    assert (Path(p["folder"]) / "report.json").stat().st_mtime_ns == mtime
