"""The linearized-LM study in parts (``algo/linear/study.py``, ``attnforge linear study``)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from attnforge.algo.linear import study
from attnforge.algo.linear.data import load_corpus
from attnforge.algo.linear.export import check_hardware_variant
from attnforge.cli import main
from attnforge.errors import ConfigError

TINY = study.StudyConfig(n_layer=1, n_head=2, d_model=16, block=16, batch_size=4, steps=8, eval_every=2,
                         eval_windows=4, warmup=2, train_bytes=50_000, val_bytes=5_000)


def fake_part(pid: str, loss: float, cfg=study.StudyConfig(), converged=True) -> dict:
    model, seed = study.parse_part(pid)
    curve = [{"step": s, "tokens": s * cfg.batch_size * cfg.block, "loss": loss + 1.0 / s}
             for s in range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)]
    return {"format": study.PART_FORMAT, "part": pid, "model": model, "description": study.DESCRIPTIONS[model],
            "seed": seed, "study": asdict(cfg), "curve": curve,
            "final": {"loss": loss, "ppl": 2.718281828 ** loss, "bits_per_byte": loss / 0.6931},
            "converged": converged, "last_quarter_rel_change": 0.002 if converged else 0.05, "wall_seconds": 300.0,
            "train_tokens_per_second": 3000.0, "torch_threads": 1, "git_commit": "0" * 40,
            "loadavg_start": [1.0, 1.0, 1.0], "finished": "2026-12-01T00:00:00+00:00"}


def write_parts(folder, losses: dict, cfg=study.StudyConfig()):
    folder.mkdir(parents=True, exist_ok=True)
    for pid, loss in losses.items():
        (folder / f"{pid}.json").write_text(json.dumps(fake_part(pid, loss, cfg)))


def test_part_ids_seed_major_and_parse():
    ids = study.part_ids()
    assert len(ids) == len(study.MODELS) * len(study.SEEDS) == 21
    assert len(set(ids)) == len(ids)
    assert ids[:len(study.MODELS)] == [f"{m}-s0" for m in study.MODELS]   # every model's seed 0 first
    assert study.parse_part("flash_aug-s2") == ("flash_aug", 2)
    assert {"softmax", "flash", "linformer", "flash_aug", "linformer_aug", "hw", "relu_aug"} == set(study.MODELS)


def test_hw_part_is_the_datapath_variant_and_relu_aug_only_adds_the_chunk():
    cfg = study.StudyConfig()
    hw, full = cfg.lm_config("hw", 0), cfg.lm_config("relu_aug", 0)
    check_hardware_variant(hw)   # raises if the datapath does not compute it
    with pytest.raises(ConfigError, match="chunk"):
        check_hardware_variant(full)
    assert {k: v for k, v in asdict(hw).items() if k != "chunk"} == \
        {k: v for k, v in asdict(full).items() if k != "chunk"}


@pytest.mark.parametrize("bad", ["foo", "softmax-s3", "softmax", "relu-s0", ""])
def test_bad_part_id_names_the_accepted_ids(bad):
    with pytest.raises(ConfigError, match="accepted: softmax-s0, flash-s0"):
        study.parse_part(bad)


def test_cli_bad_part_exits_2_naming_ids(tmp_path, capsys):
    assert main(["linear", "study", "--part", "soft-s0", "--parts-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "soft-s0" in err and "hw-s2" in err
    assert not list(tmp_path.iterdir())


def test_converged_on_hand_made_curves():
    flat = [{"step": s, "loss": 2.0 - 0.001 * s / 100} for s in range(10, 101, 10)]
    ok, change = study.converged(flat, 100)
    assert ok and change < 0.01
    falling = [{"step": s, "loss": 3.0 - s / 100} for s in range(10, 101, 10)]   # 2.2 (step 80) -> 2.0 in the last quarter
    ok, change = study.converged(falling, 100)
    assert not ok and change == pytest.approx(0.2 / 2.0)
    # only the last quarter counts: a big early drop does not matter
    early = [{"step": 10, "loss": 9.0}, {"step": 50, "loss": 2.0}, {"step": 75, "loss": 2.01}, {"step": 100, "loss": 2.0}]
    assert study.converged(early, 100)[0]
    # a bump inside the last quarter counts even if the ends agree
    bump = [{"step": 75, "loss": 2.0}, {"step": 90, "loss": 2.1}, {"step": 100, "loss": 2.0}]
    assert not study.converged(bump, 100)[0]
    with pytest.raises(ConfigError, match="last quarter"):
        study.converged([{"step": 100, "loss": 2.0}], 100)


def test_next_and_list_pick_the_first_missing(tmp_path, capsys):
    parts = tmp_path / "parts"
    assert study.next_missing(parts) == "softmax-s0"
    write_parts(parts, {"softmax-s0": 1.5, "flash-s0": 1.6})
    assert study.next_missing(parts) == "linformer-s0"
    # a file from other study settings is stale: it counts as missing
    write_parts(parts, {"linformer-s0": 1.6}, cfg=TINY)
    st = study.part_status(parts)
    assert st["linformer-s0"] == "stale" and st["softmax-s0"] == "done"
    assert study.next_missing(parts) == "linformer-s0"
    (parts / "linformer-s0.json").write_text("{not json")
    assert study.part_status(parts)["linformer-s0"] == "invalid"
    write_parts(parts, {"linformer-s0": 1.6})
    assert study.next_missing(parts) == "flash_aug-s0"
    assert main(["linear", "study", "--list", "--parts-dir", str(parts)]) == 0
    out = capsys.readouterr().out
    assert "3 of 21 parts done" in out and "flash_aug-s0       missing" in out


def test_tiny_part_end_to_end_writes_valid_json(tmp_path):
    corpus = load_corpus(TINY.train_bytes, TINY.val_bytes)
    rec = study.run_part("hw-s1", tmp_path, cfg=TINY, corpus=corpus, progress=False)
    path = tmp_path / "hw-s1.json"
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(rec))
    assert data["format"] == study.PART_FORMAT and data["part"] == "hw-s1" and data["seed"] == 1
    assert data["model_config"]["attention"] == "relu" and data["model_config"]["chunk"] == 0
    assert data["token_budget"] == 8 * 4 * 16
    assert [p["step"] for p in data["curve"]] == [2, 4, 6, 8]
    assert data["final"]["loss"] == pytest.approx(data["curve"][-1]["loss"], abs=1e-4)
    assert isinstance(data["converged"], bool) and data["torch_threads"] == 1
    assert data["study"] == asdict(TINY)
    assert study.part_status(tmp_path, TINY)["hw-s1"] == "done"
    assert study.part_status(tmp_path)["hw-s1"] == "stale"    # not the real study's settings
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def test_report_from_fake_parts_states_missing_and_refutation(tmp_path):
    parts = tmp_path / "parts"
    # softmax worse than plain flash (refuted for flash), better than plain linformer (gap closed 50 %)
    losses = {}
    for s, d in zip(study.SEEDS, (0.0, 0.01, -0.01)):
        losses.update({f"softmax-s{s}": 1.50 + d, f"flash-s{s}": 1.45 + d, f"flash_aug-s{s}": 1.40 + d,
                       f"linformer-s{s}": 1.70 + d, f"linformer_aug-s{s}": 1.60 + d, f"hw-s{s}": 1.62 + d})
    losses["relu_aug-s0"] = 1.52
    write_parts(parts, losses)
    (parts / "flash-s0.json").write_text(json.dumps(fake_part("flash-s0", 1.45, converged=False)))
    res = study.assemble_report(parts, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert res["parts_missing"] == ["relu_aug-s1", "relu_aug-s2"]
    assert "2 of 21 parts are missing" in text and "`relu_aug-s1`" in text and "`relu_aug-s2`" in text
    assert "Softmax is not ahead of `flash`" in text and "the claim is refuted at this scale" in text
    assert "1 of 19 present parts did not converge" in text and "not at convergence" in text
    assert "(at this budget: 1 of the 6 softmax and `flash` parts did not converge)" in text
    assert "`flash-s0` (5.0%)" in text
    assert res["summary"]["gaps"]["linformer"]["fraction_closed"] == pytest.approx(0.5)
    assert "closes 50% of that gap" in text
    assert res["summary"]["hw_cost"]["loss_delta"] == pytest.approx(0.10)
    assert "the cost of the RTL's missing chunk-local term" in text and "costs nothing" not in text
    assert "`relu_aug` | 0 (incomplete)" in text
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert res["summary"]["models"]["softmax"]["loss_std"] == pytest.approx(0.01)


def test_report_cli_with_no_parts(tmp_path, capsys):
    assert main(["linear", "study", "--report", "--parts-dir", str(tmp_path / "p"),
                 "--report-dir", str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "21 of 21 parts are missing" in text and "Not evaluable yet" in text
    assert not (tmp_path / "curves.png").exists()


def test_cli_next_and_all_run_the_missing_parts_in_order(tmp_path, monkeypatch, capsys):
    parts = tmp_path / "parts"
    write_parts(parts, {pid: 1.5 for pid in study.part_ids() if pid not in ("flash-s0", "hw-s1", "relu_aug-s2")})
    ran = []

    def fake_run(pid, parts_dir, threads=1, **kw):
        ran.append(pid)
        (parts_dir / f"{pid}.json").write_text(json.dumps(fake_part(pid, 1.5)))
        return {**fake_part(pid, 1.5), "wall_seconds": 1.0}

    monkeypatch.setattr(study, "run_part", fake_run)
    assert main(["linear", "study", "--next", "--parts-dir", str(parts)]) == 0
    assert ran == ["flash-s0"]
    assert main(["linear", "study", "--all", "--parts-dir", str(parts)]) == 0
    assert ran == ["flash-s0", "hw-s1", "relu_aug-s2"]
    assert main(["linear", "study", "--all", "--parts-dir", str(parts)]) == 0   # resumable: nothing left
    assert ran == ["flash-s0", "hw-s1", "relu_aug-s2"]
    assert "every part is done" in capsys.readouterr().out
