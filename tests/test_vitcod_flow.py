"""The ViTCoD flow on a small ViT trained on the real digits: fine-tuning, auto-encoder, golden model, export, CLI.

Golden-model tolerance on real trained heads (stated here, held below): the
integer head's int8 output, scaled by ``o_scale``, is within

* **1.0 output LSB** of float softmax attention on the same int8 Q/K/V and mask
  (the golden model's own approximation: exponent table, 15-bit probabilities,
  final rounding), and
* **4.0 output LSB** max, **4 %** relative RMS, of the PyTorch float model's head
  output on unquantized activations (adds per-head symmetric int8 quantization
  of Q, K, V; with the Q/K decoder also of the compressed heads and decoder weights).
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from attnforge.algo.vitcod.data import digits_datasets, imagefolder_datasets, random_shift
from attnforge.algo.vitcod.export import export_head_tensors, quantize_heads, verify_head_tensors
from attnforge.algo.vitcod.pruning import build_masks
from attnforge.algo.vitcod.stats import attention_statistics
from attnforge.algo.vitcod.train import TrainConfig, evaluate, load_checkpoint, save_checkpoint, train
from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer
from attnforge.cli import main
from attnforge.formats.head_tensors import load_head_tensors
from attnforge.formats.masks import load_masks, save_masks

SAME_INPUTS_LSB = 1.0
FLOAT_MODEL_LSB = 4.0
FLOAT_MODEL_REL_RMS = 0.04


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models run several times faster on one thread when the test workers share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread):
    """A 2-layer digits ViT trained for 8 epochs (real data, real attention), statistics, 90 % masks.

    8 epochs at lr 3e-3 reach about 83 % (4 epochs at 2e-3 stopped at 33-45 % depending
    on the CPU's float results): past the fragile early phase, so the attention maps
    and the thresholds below do not depend on the machine's kernels.
    """
    torch.manual_seed(0)
    train_set, val_set = digits_datasets()
    model = VisionTransformer(PRESETS["digits"], depth=2)
    train(model, train_set, TrainConfig(epochs=8, lr=3e-3, batch_size=32, warmup_epochs=0.3, max_shift=0,
                                        progress=False, seed=0))
    maps = attention_statistics(model, train_set, progress=False)
    ms, report = build_masks(maps, target_sparsity=0.9, head_dim=model.cfg.head_dim)
    return model, train_set, val_set, ms, report


def _copy(model):
    m = VisionTransformer(model.cfg)
    if model.blocks[0].attn.qk_ae is not None:
        m.attach_qk_autoencoders(model.blocks[0].attn.qk_ae.hidden)
    m.load_state_dict(model.state_dict())
    return m


def _fixed_batch(train_set, n=64):
    return train_set.tensors[0][:n], train_set.tensors[1][:n]


def _batch_loss(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def _fit_batch(model, x, y, *, steps=20, lr=1e-3, seed=1):
    """``steps`` full-batch AdamW steps on one fixed batch (what a training loop must
    be able to do whatever the CPU: drive that batch's loss down)."""
    train(model, TensorDataset(x, y), TrainConfig(epochs=steps, batch_size=len(y), lr=lr, warmup_epochs=0,
                                                  max_shift=0, progress=False, seed=seed))


def test_trained_model_learned_something(trained):
    model, _, val_set, ms, report = trained
    # 76.6-82.7 % under every thread count and CPU kernel choice tried (README, "Tests"):
    # a bound with a 25-point margin, not a comparison with a lucky outcome; chance is 10 %.
    assert evaluate(model, val_set)["accuracy"] > 50.0
    assert abs(ms.sparsity() - 0.9) <= 0.005
    assert {r["layer"] for r in report["heads"]} == {0, 1}


def test_mask_finetuning_keeps_masks_fixed_and_lowers_the_loss(trained, monkeypatch):
    """What mask fine-tuning guarantees: the masks are buffers, not parameters, and stay
    as they were; pruned entries get zero attention and zero gradient; and training
    lowers the loss (on a fixed batch, by a margin: after/before 0.40-0.46 measured, < 0.7 asserted).
    Not asserted: that one epoch raises validation accuracy (it did not on every CPU)."""
    model, train_set, val_set, ms, _ = trained
    m = _copy(model)
    keep = torch.from_numpy(ms.keep)
    m.set_masks(keep)
    assert not any(p is a.keep for a in m.attentions for p in m.parameters())
    x, y = _fixed_batch(train_set)
    # The gradient that reaches the pruned attention scores is exactly zero.
    scores = []
    masked_fill = torch.Tensor.masked_fill

    def recording_masked_fill(t, mask, value):
        out = masked_fill(t, mask, value)
        out.retain_grad()
        scores.append((out, mask))
        return out

    monkeypatch.setattr(torch.Tensor, "masked_fill", recording_masked_fill)
    m.train()
    F.cross_entropy(m(x[:16]), y[:16]).backward()
    monkeypatch.undo()
    m.zero_grad(set_to_none=True)
    assert len(scores) == 2
    for out, pruned in scores:
        assert out.grad.abs().sum() > 0 and (out.grad[:, pruned] == 0).all()
    before = _batch_loss(m, x, y)
    _fit_batch(m, x, y)
    after = _batch_loss(m, x, y)
    assert after < 0.7 * before, (before, after)
    assert all(torch.equal(a.keep, keep[l]) for l, a in enumerate(m.attentions))
    _, maps = m(val_set.tensors[0][:4], return_attn=True)
    assert all((maps[l][:, ~keep[l]] == 0).all() for l in range(2))


def test_autoencoder_training_lowers_reconstruction_loss(trained):
    """The auto-encoder learns to reconstruct Q/K (its loss falls by a margin), and the
    model with it in place and the masks set still trains (fixed-batch loss falls)."""
    model, train_set, val_set, ms, _ = trained
    m = _copy(model).attach_qk_autoencoders()
    x = val_set.tensors[0][:64]
    with torch.no_grad():
        m(x)
        start = float(m.qk_reconstruction_loss())
    history = train(m, train_set, TrainConfig(epochs=1, lr=1e-3, ae_weight=5.0, progress=False, seed=2))
    with torch.no_grad():
        m(x)
        end = float(m.qk_reconstruction_loss())
    print("reconstruction loss", start, "->", end)
    assert end < 0.5 * start and history[0]["recon_loss"] > 0
    # Then fine-tuned with the masks, the auto-encoder still in place.
    m.set_masks(torch.from_numpy(ms.keep))
    xb, yb = _fixed_batch(train_set)
    before = _batch_loss(m, xb, yb)
    _fit_batch(m, xb, yb, seed=3)
    after = _batch_loss(m, xb, yb)
    print("fixed-batch loss with auto-encoder and masks", before, "->", after)
    assert m.blocks[1].attn.qk_ae is not None and after < 0.7 * before


def test_checkpoint_round_trip(tmp_path, trained):
    model, _, val_set, ms, _ = trained
    m = _copy(model).attach_qk_autoencoders()
    m.set_masks(torch.from_numpy(ms.keep))
    save_checkpoint(tmp_path / "c.pt", m)
    back, ck = load_checkpoint(tmp_path / "c.pt")
    x = val_set.tensors[0][:8]
    with torch.no_grad():
        torch.testing.assert_close(back(x), m(x))
    assert np.array_equal(ck["masks"], ms.keep) and back.blocks[0].attn.qk_ae.hidden == 2


@pytest.mark.parametrize("autoencoder", [False, True])
def test_golden_model_matches_float_model_on_trained_heads(tmp_path, trained, autoencoder):
    model, train_set, val_set, ms, _ = trained
    m = _copy(model)
    if autoencoder:
        m.attach_qk_autoencoders()
        train(m, train_set, TrainConfig(epochs=1, lr=5e-4, progress=False, seed=4))
    m.set_masks(torch.from_numpy(ms.keep))
    worst = {"model": 0.0, "same": 0.0, "rms": 0.0}
    for i in (0, 17, 101):
        image = val_set[i][0]
        path, t = export_head_tensors(m, image, tmp_path / f"h{i}.npz", meta={"image": i})
        back = load_head_tensors(path)
        assert back.has_decoder == autoencoder and back.meta["image"] == i
        for name in ("q", "k", "v", "q_scale", "o_scale") + (("qc", "dec_wk") if autoencoder else ()):
            assert np.array_equal(getattr(back, name), getattr(t, name))
        rows = verify_head_tensors(m, image, back, ms, use_decoder=autoencoder)
        assert len(rows) == 2 * 4
        worst["model"] = max(worst["model"], *(r["max_err_lsb_float_model"] for r in rows))
        worst["same"] = max(worst["same"], *(r["max_err_lsb_same_inputs"] for r in rows))
        worst["rms"] = max(worst["rms"], *(r["rel_rms_err_float_model"] for r in rows))
    print("golden vs float, worst over heads:", worst)
    assert worst["same"] <= SAME_INPUTS_LSB, worst
    assert worst["model"] <= FLOAT_MODEL_LSB, worst
    assert worst["rms"] <= FLOAT_MODEL_REL_RMS, worst


def test_golden_check_can_fail(trained):
    """A wrong mask (another head's) must show up as a large error: the check is not vacuous."""
    model, _, val_set, ms, _ = trained
    m = _copy(model)
    m.set_masks(torch.from_numpy(ms.keep))
    image = val_set[0][0]
    t = quantize_heads(m, image)
    wrong = load_masks.__globals__["MaskSet"](ms.keep[:, ::-1].copy(), ms.order[:, ::-1].copy(),
                                              ms.n_global[:, ::-1].copy(), {})
    rows = verify_head_tensors(m, image, t, wrong)
    assert max(r["max_err_lsb_float_model"] for r in rows) > 2 * FLOAT_MODEL_LSB


def test_random_shift_moves_images():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    y = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    assert torch.equal(random_shift(x, 0), x)


def _image_folder(root, classes=2, per_class=5):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            a = (rng.random((30, 40, 3)) * 80 + 120 * c).astype(np.uint8)
            Image.fromarray(a).save(root / f"class{c}" / f"{i}.png")
    return root


def test_imagefolder_loader(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    train_set, val_set = imagefolder_datasets(root, img_size=32)
    assert len(train_set) == 8 and len(val_set) == 2 and train_set.classes == ["class0", "class1"]
    x, y = train_set[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y in (0, 1)
    with pytest.raises(ValueError, match="has no class subfolders"):
        imagefolder_datasets(tmp_path / "imgs" / "class0", img_size=32)


def test_cli_flow_digits(tmp_path, capsys):
    d = tmp_path
    common = ["--limit", "128", "--no-progress", "--batch-size", "64"]
    assert main(["vitcod", "train", "--depth", "1", "--dim", "32", "--epochs", "1", *common,
                 "-o", str(d / "dense.pt")]) == 0
    assert main(["vitcod", "masks", "--checkpoint", str(d / "dense.pt"), "--sparsity", "0.8", "--max-images", "128",
                 "--polarize", "cycles", *common, "-o", str(d / "masks.npz")]) == 0
    ms = load_masks(d / "masks.npz")
    assert ms.keep.shape == (1, 4, 65, 65) and abs(ms.sparsity() - 0.8) <= 0.005
    report = json.loads((d / "masks.report.json").read_text())
    assert len(report["heads"]) == 4 and (d / "masks.report.png").stat().st_size > 0
    assert main(["vitcod", "finetune", "--checkpoint", str(d / "dense.pt"), "--masks", str(d / "masks.npz"),
                 "--epochs", "1", "--autoencoder", "--ae-init", "pca", *common, "-o", str(d / "ft.pt")]) == 0
    assert main(["vitcod", "export", "--checkpoint", str(d / "ft.pt"), "--masks", str(d / "masks.npz"),
                 "--image-index", "3", "-o", str(d / "heads.npz")]) == 0
    assert load_head_tensors(d / "heads.npz").has_decoder
    verify = json.loads((d / "heads.verify.json").read_text())
    assert verify["max_err_lsb_same_inputs"] <= SAME_INPUTS_LSB
    out = capsys.readouterr().out
    assert "accuracy before fine-tuning" in out and "integer golden model vs float model" in out
    # --ae-init applies to a newly attached auto-encoder only; a checkpoint with one is refused
    assert main(["vitcod", "finetune", "--checkpoint", str(d / "ft.pt"), "--masks", str(d / "masks.npz"),
                 "--epochs", "1", "--ae-init", "pca", *common, "-o", str(d / "ft2.pt")]) == 2
    assert "already has a Q/K auto-encoder" in capsys.readouterr().err and not (d / "ft2.pt").exists()
    # Bad input: the error names the file and the shapes, and nothing is written.
    other = tmp_path / "other.npz"
    save_masks(type(ms)(np.ones((2, 4, 65, 65), bool), np.tile(ms.order[:1], (2, 1, 1)),
                        np.zeros((2, 4), np.int32), {}), other)
    assert main(["vitcod", "finetune", "--checkpoint", str(d / "dense.pt"), "--masks", str(other),
                 "--epochs", "1", *common, "-o", str(d / "bad.pt")]) == 2
    assert "other.npz has keep of shape (2, 4, 65, 65), the model needs (1, 4, 65, 65)" in capsys.readouterr().err
    assert not (d / "bad.pt").exists()
    assert main(["vitcod", "eval", "--checkpoint", str(d / "missing.pt")]) == 2


def test_cli_deit_checkpoint_on_image_folder(tmp_path, capsys):
    """The real-user path: a timm-layout .pth (tiny, random) fine-tuned on an image folder, then masks."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("test_vitcod_vit", Path(__file__).with_name("test_vitcod_vit.py"))
    vit_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vit_tests)
    timm_deit_state_dict = vit_tests.timm_deit_state_dict
    torch.save({"model": timm_deit_state_dict(dim=64, depth=1, patch=16, img=64, classes=1000)},
               tmp_path / "deit.pth")
    root = _image_folder(tmp_path / "imgs")
    assert main(["vitcod", "train", "--checkpoint", str(tmp_path / "deit.pth"), "--data", str(root),
                 "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--no-progress",
                 "-o", str(tmp_path / "ft.pt")]) == 0
    model, _ = load_checkpoint(tmp_path / "ft.pt")
    assert model.cfg.num_classes == 2 and model.cfg.num_tokens == 5 and model.cfg.num_heads == 1
    assert main(["vitcod", "masks", "--checkpoint", str(tmp_path / "ft.pt"), "--data", str(root),
                 "--threshold", "0.5", "--no-progress", "-o", str(tmp_path / "m.npz")]) == 0
    assert load_masks(tmp_path / "m.npz").keep.shape == (1, 1, 5, 5)
