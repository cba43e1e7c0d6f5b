"""The study harness (tiny configuration): cells cached, resumable, report complete; and the CLI."""

import json
import subprocess
import sys

import pytest
import torch

from attnforge.algo.tickets.study import ModelPlan, StudyConfig, run_study
from attnforge.cli import main

torch.set_num_threads(1)


def _tiny():
    return StudyConfig(models=("cnn",), seeds=(0, 1), eps_candidates=(0.1, 0.2), patterns=("nm",),
                       levels={"nm": ("2:4",)}, gaps=("plain", "noisy"),
                       plans={"cnn": ModelPlan(pretrain_epochs=2, lr=2e-3, attack_steps=1, schemes=("omp", "imp"),
                                               imp_retrain_epochs=1, imp_rounds_per_level=2)},
                       transfer_epochs={"finetune": 2, "linear": 3})


def test_study_resumes_from_cached_cells(tmp_path):
    cfg = _tiny()
    path = run_study(tmp_path / "c", cfg, workers=1, report_dir=tmp_path / "r", name="s", command="pytest")
    report = json.loads(path.read_text())
    assert report["format"] == "attnforge.tickets.study/1" and report["command"] == "pytest"
    sel = report["eps_selection"]["cnn"]
    assert sel["chosen"] in (0.1, 0.2) and set(sel["val_accuracy"]) == {"0.1", "0.2"}
    # eps chosen on validation: the chosen one has the best validation score
    assert sel["val_accuracy"][f"{sel['chosen']:g}"] == max(sel["val_accuracy"].values())
    # rows: (dense + omp 2:4 + imp 2:4) x 2 gaps x 2 modes
    assert len(report["rows"]) == 3 * 2 * 2
    for row in report["rows"]:
        assert row["seeds"] == [0, 1] and row["natural"]["n"] == 2
        d = row["robust_minus_natural"]
        assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
        assert row["exceeds_seed_noise"] == (d["ci95"][0] > 0 or d["ci95"][1] < 0)
    assert all((tmp_path / "r" / p.split("/")[-1]).is_file() for p in report["plots"])
    cells = sorted((tmp_path / "c" / "cells").rglob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    victim = next(p for p in cells if p.name.startswith("imp_nm"))
    victim.unlink()
    run_study(tmp_path / "c", cfg, workers=1, report_dir=tmp_path / "r", name="s")
    assert victim.is_file()                                           # the missing cell was redone
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != victim)   # nothing else
    with pytest.raises(ValueError, match="holds a study with another configuration"):
        run_study(tmp_path / "c", StudyConfig(models=("cnn",), seeds=(0,)), workers=1)


def test_cli_help_lists_the_tickets_commands():
    proc = subprocess.run([sys.executable, "-m", "attnforge.cli", "tickets", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for sub in ("pretrain", "draw", "transfer", "study", "export"):
        assert sub in proc.stdout


def test_cli_pretrain_draw_transfer_export(tmp_path, capsys):
    p, t, tt, npz = (str(tmp_path / n) for n in ("p.pt", "t.pt", "tt.pt", "t.npz"))
    assert main(["tickets", "pretrain", "--eps", "0.1", "--steps", "1", "--epochs", "2", "--early-epoch", "1",
                 "-o", p]) == 0
    assert main(["tickets", "draw", p, "--pattern", "channel", "--level", "0.5", "--scheme", "imp",
                 "--rewind", "early", "--rounds", "2", "--retrain-epochs", "1", "-o", t]) == 0
    assert main(["tickets", "transfer", t, "--gap", "rotated", "--mode", "linear", "--epochs", "2", "-o", tt]) == 0
    assert main(["tickets", "export", tt, "-o", npz]) == 0
    out = capsys.readouterr().out
    assert '"val":' in out and "wrote " + npz in out
    from attnforge.algo.tickets.export import load_ticket_csr
    layers, meta = load_ticket_csr(npz)
    assert meta["ticket"]["pattern"] == "channel" and meta["ticket"]["transferred_to"] == "rotated"
    conv2 = next(layer for layer in layers if layer.name == "conv2")
    assert sorted(set((conv2.csr.row_ptr[1:] - conv2.csr.row_ptr[:-1]).tolist())) == [0, conv2.csr.shape[1]]


def test_cli_errors_name_the_value(tmp_path, capsys):
    assert main(["tickets", "pretrain", "--epochs", "1", "-o", str(tmp_path / "p.pt")]) == 0
    assert main(["tickets", "draw", str(tmp_path / "p.pt"), "--pattern", "nm", "--level", "2:4", "--scope", "global",
                 "-o", str(tmp_path / "t.pt")]) == 2
    assert main(["tickets", "draw", str(tmp_path / "p.pt"), "--pattern", "nm", "--level", "5:4"]) == 2
    assert main(["tickets", "draw", str(tmp_path / "p.pt"), "--rewind", "early", "--scheme", "imp"]) == 2
    assert main(["tickets", "transfer", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "no global scope" in err and "N <= M, not 5:4" in err and "no early checkpoint" in err
    assert "missing.pt does not exist" in err
    assert not (tmp_path / "t.pt").exists()


def test_study_levels_replace_one_patterns_levels(tmp_path, capsys):
    from attnforge.algo.tickets.study import full_config, study_config
    from attnforge.cli.tickets import _parse_levels

    cfg = study_config(models=["vit65"], patterns=["unstructured", "nm"],
                       levels=_parse_levels(["unstructured=0.75,0.9", "nm=2:4"]))
    assert cfg.levels["unstructured"] == ("0.75", "0.9") and cfg.levels["nm"] == ("2:4",)
    assert cfg.levels["channel"] == full_config().levels["channel"]      # untouched pattern keeps its levels
    assert cfg.models == ("vit65",)
    for bad, msg in ((["nm=5:4"], "N <= M, not 5:4"), (["unstructured=1.5"], "not 1.5"),
                     (["blocks=0.5"], "'blocks' is not one of"), (["unstructured"], "expected PATTERN=LEVEL"),
                     (["nm=2:4", "nm=1:4"], "twice"), (["unstructured=0.5,0.5"], "lists a level twice")):
        with pytest.raises(ValueError, match=msg):
            study_config(levels=_parse_levels(bad))
    # through the CLI: exit 2 naming the value, nothing computed or written
    assert main(["tickets", "study", "--levels", "nm=3:2", "--cache", str(tmp_path / "c"),
                 "-o", str(tmp_path / "r")]) == 2
    assert "N <= M, not 3:2" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()
