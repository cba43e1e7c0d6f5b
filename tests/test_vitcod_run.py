"""``attnforge vitcod run`` (attnforge/flows/vitcod_run.py): images through the model-level accelerator's RTL.

make test: the bad inputs exit 2 naming the input, before anything is trained, compiled or simulated.
make test-full: a 1-layer digits ViT (65 tokens, 4 heads of 16), trained briefly, 90 % masks from
`vitcod masks`, one image on Verilator: every STOREd tensor bit for bit against the integer model's trace
and the reference executor, every instruction's cycles equal to the model, the JSON's cycle accounting.
"""

import json

import pytest

from attnforge.cli import main


def test_bad_inputs_exit_2_naming_the_input(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    assert main(["vitcod", "run", "--checkpoint", str(missing), "--masks", str(tmp_path / "m.npz")]) == 2
    assert f"--checkpoint {missing} does not exist" in capsys.readouterr().err
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"x")
    assert main(["vitcod", "run", "--checkpoint", str(ck), "--masks", str(ck), "--images", "0"]) == 2
    assert "--images" in capsys.readouterr().err
    assert main(["vitcod", "run", "--checkpoint", str(ck), "--masks", str(ck), "--macs", "0"]) == 2
    assert "--macs" in capsys.readouterr().err
    assert main(["vitcod", "run", "--checkpoint", str(ck), "--masks", str(ck), "--ticket", str(missing)]) == 2
    assert f"--ticket {missing} does not exist" in capsys.readouterr().err


def test_a_small_model_end_to_end_on_the_rtl(tmp_path, capsys, monkeypatch):
    """make test's whole-model run: a 1-layer ViT of 17 tokens (16 x 16 images, patches of 4, width 16, two
    heads of 8), trained one epoch, 80 % masks; one image through the RTL (Icarus, the testbench's player,
    P = 4 lanes):
    every tensor bit for bit, the class from the RTL's logits (the classifier instruction) equal to the
    integer model's, the cycles the model's, the Amdahl accounting consistent."""
    common = ["--limit", "64", "--no-progress", "--batch-size", "64"]
    ck, masks, out = tmp_path / "dense.pt", tmp_path / "masks.npz", tmp_path / "run.json"
    assert main(["vitcod", "train", "--img-size", "16", "--patch-size", "4", "--depth", "1", "--dim", "16",
                 "--num-heads", "2", "--mlp-ratio", "2", "--epochs", "1", *common, "-o", str(ck)]) == 0
    assert main(["vitcod", "masks", "--checkpoint", str(ck), "--sparsity", "0.8", "--max-images", "32", *common,
                 "-o", str(masks)]) == 0
    assert main(["vitcod", "run", "--checkpoint", str(ck), "--masks", str(masks), "--images", "1",
                 "--calib-images", "32", "--simulator", "icarus", "--macs", "4", "--build-root", str(tmp_path / "sim"),
                 "--json", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    img = r["per_image"][0]
    assert r["testbench"] == "player" and r["bit_exact"] is True and img["bit_exact"] is True
    assert r["classes_equal_golden"] is True and img["predicted"] == img["golden_predicted"]
    assert img["rtl_cycles"] == img["cycles"] == r["cycles_per_image"] == sum(r["cycles_by_op"].values())
    assert r["utilization_by_op"]["dense_matmul"] == pytest.approx(
        r["ideal_by_op"]["dense_matmul"] / r["cycles_by_op"]["dense_matmul"])
    assert r["config"]["max_tokens"] == 17 and r["config"]["att_head_dim"] == 8 and r["config"]["macs"] == 4
    # the MACs' busy cycles: 17 rows are 5 row groups of P = 4 for the patch embedding (16 -> 16), qkv (16 -> 48),
    # proj, fc1 (16 -> 32), fc2 (32 -> 16); the classifier one row group, 16 -> 10 classes padded to 12
    issue = 5 * (16 * 16 + 16 * 48 + 16 * 16 + 16 * 32 + 32 * 16) + 16 * 12
    assert img["matmul_weight_issue_cycles"] == issue
    assert r["matmul_weight_issue_fraction"] == pytest.approx(issue / r["cycles_by_op"]["dense_matmul"])
    assert 0.5 < r["matmul_weight_issue_fraction"] < 1
    # dense baseline: every key global, so only attention shrinks; the bound is that alone (Amdahl)
    assert r["work_ratio"]["linear layers"] == 1.0 and 0 < r["work_ratio"]["attention"] < 1
    att = r["dense_baseline_cycles_by_op"]["attention"]
    bound = r["dense_baseline_cycles"] / (r["dense_baseline_cycles"] - att * (1 - r["work_ratio"]["attention"]))
    assert r["amdahl_bound"] == pytest.approx(bound)
    assert r["speedup"] == pytest.approx(r["dense_baseline_cycles"] / r["cycles_per_image"])
    assert "bit exact on every tensor" in capsys.readouterr().out
    # --cycle-model: no RTL; the reference executor against the integer model, the same cycles
    cm = tmp_path / "cm.json"
    assert main(["vitcod", "run", "--checkpoint", str(ck), "--masks", str(masks), "--images", "2",
                 "--calib-images", "32", "--macs", "4", "--cycle-model", "--json", str(cm), "--no-progress"]) == 0
    c = json.loads(cm.read_text())
    assert c["bit_exact"] is None and c["testbench"] is None and c["reference_equal_trace"] is True
    assert c["cycles_per_image"] == r["cycles_per_image"] and c["images"] == 2
    assert c["per_image"][0]["predicted"] == img["predicted"] and c["classes_equal_golden"] is True
    # ... and it can fail: an expected tensor one LSB off is reported, exit 1
    from attnforge.flows import vitcod_run

    real = vitcod_run._expected
    monkeypatch.setattr(vitcod_run, "_expected", lambda qm, tr, name, lanes: real(qm, tr, name, lanes) + (name == "blocks.0.fc1"))
    assert main(["vitcod", "run", "--checkpoint", str(ck), "--masks", str(masks), "--images", "1",
                 "--calib-images", "32", "--macs", "4", "--cycle-model", "--no-progress"]) == 1
    assert "reference executor DIFFERS" in capsys.readouterr().out


@pytest.mark.full
@pytest.mark.timeout(1800)
def test_one_image_through_the_rtl_bit_exact(tmp_path, capsys):
    common = ["--limit", "256", "--no-progress", "--batch-size", "64"]
    ck, masks, out = tmp_path / "dense.pt", tmp_path / "masks.npz", tmp_path / "run.json"
    assert main(["vitcod", "train", "--depth", "1", "--dim", "64", "--epochs", "2", *common, "-o", str(ck)]) == 0
    assert main(["vitcod", "masks", "--checkpoint", str(ck), "--sparsity", "0.9", "--max-images", "128", *common,
                 "-o", str(masks)]) == 0
    assert main(["vitcod", "run", "--checkpoint", str(ck), "--masks", str(masks), "--images", "1",
                 "--calib-images", "64", "--build-root", str(tmp_path / "sim"), "--json", str(out),
                 "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["bit_exact"] is True and r["images"] == 1 and r["per_image"][0]["bit_exact"] is True
    img = r["per_image"][0]
    assert img["predicted"] == img["golden_predicted"]              # the classifier on the RTL's final norm
    assert sum(r["cycles_by_op"].values()) == r["cycles_per_image"] == img["cycles"]
    assert r["cycles_by_op"]["attention"] > 0 and r["cycles_by_op"]["sparse_matmul"] == 0
    assert r["speedup"] == pytest.approx(r["dense_baseline_cycles"] / r["cycles_per_image"])
    assert r["dense_baseline_cycles"] > r["cycles_per_image"]       # dense heads: every key global
    assert 0 < r["utilization"] <= 1
    assert "bit exact on every tensor" in capsys.readouterr().out
