"""Tickets of the model the accelerator runs (`attnforge vitcod ticket`, algo/tickets/vitcod_ticket.py).

Small models the tests create (one block, width 32, untrained) on the real digits, one epoch per step on the
first 128 training images: the tests check what the code guarantees (the pruning pattern, what is saved,
that the saved model is the evaluated one), not a training outcome.
"""

import json

import numpy as np
import pytest
import torch

from attnforge.formats.ticket_csr import load_ticket_csr
from attnforge.algo.tickets.vitcod_ticket import PixelSpace, TicketConfig, draw_vitcod_ticket
from attnforge.algo.vitcod.data import digits_datasets
from attnforge.algo.vitcod.intvit import run_int_eval
from attnforge.algo.vitcod.synthetic import polarized_mask_set
from attnforge.algo.vitcod.train import evaluate, load_checkpoint, save_checkpoint
from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer
from attnforge.cli import main
from attnforge.errors import ConfigError
from attnforge.formats.masks import save_masks

PRUNABLE = ("patch_embed.proj", "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("ticket")
    torch.manual_seed(0)
    model = VisionTransformer(PRESETS["digits"], depth=1, embed_dim=32).eval()
    masks = polarized_mask_set(1, 4, 65, 0.9, seed=3)
    model.set_masks(torch.from_numpy(masks.keep))
    save_checkpoint(d / "m.pt", model)
    save_masks(masks, d / "masks.npz")
    return d, masks


def _weights(model):
    return {name: mod.weight.detach() for name, mod in model.named_modules() if name in PRUNABLE}


def test_robust_ticket_is_pruned_saved_and_evaluated_as_written(files):
    d, masks = files
    cfg = TicketConfig(level="0.75", eps=0.1, steps=2, robust_epochs=1, epochs=1, seed=1)
    r = draw_vitcod_ticket(d / "m.pt", d / "masks.npz", d / "t.pt", cfg, limit=128, val_limit=64,
                           progress=False)
    model, ck = load_checkpoint(d / "t.pt")
    assert ck["ticket"]["kind"] == "robust" and ck["ticket"]["level"] == "0.75" and ck["ticket"]["eps"] == 0.1
    # The attention masks travel unchanged; every prunable layer is 75 % zeros (OMP per layer: the
    # ranking keeps round(0.25 n) weights), the classifier is not pruned.
    assert np.array_equal(ck["masks"].numpy(), masks.keep)
    for name, w in _weights(model).items():
        assert (w == 0).float().mean().item() == pytest.approx(0.75, abs=1.0 / w.numel() + 1e-9), name
        assert r["layers"][name] == pytest.approx((w == 0).float().mean().item())
    assert (model.head.weight != 0).all()
    # The CSR export beside it holds exactly the kept weights' pattern, layer by layer.
    layers = {layer.name: layer for layer in load_ticket_csr(d / "t.csr.npz")[0]}
    assert r["csr"] == str(d / "t.csr.npz") and set(layers) == set(PRUNABLE)
    for name, w in _weights(model).items():
        assert layers[name].csr.nnz == int((w != 0).sum()), name
    assert r["sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert set(r["accuracy"]) == {"start", "robust_dense", "pruned", "ticket"}
    assert all(set(a) == {"clean", "robust"} for a in r["accuracy"].values())
    assert all(a["robust"] <= 100 and a["clean"] <= 100 for a in r["accuracy"].values())
    # What was saved is what was evaluated: the checkpoint's accuracy (ViTCoD's own evaluation, normalized
    # inputs) equals the report's clean accuracy of the ticket (pixels through PixelSpace).
    _, val = digits_datasets()
    assert evaluate(model, torch.utils.data.Subset(val, range(64)))["accuracy"] == pytest.approx(r["accuracy"]["ticket"]["clean"])
    # ... and the integer model compiles from it and runs.
    ie = run_int_eval(d / "t.pt", d / "masks.npz", calib_count=16, op_images=0, val_images=16)
    assert ie["n"] == 16 and 0 <= ie["int_accuracy"] <= 100


def test_natural_two_four_ticket_and_pixel_space(files):
    d, _ = files
    cfg = TicketConfig(pattern="nm", level="2:4", eps=0.0, robust_epochs=5, epochs=1)
    r = draw_vitcod_ticket(d / "m.pt", d / "masks.npz", d / "n.pt", cfg, limit=64, val_limit=32,
                           progress=False)
    assert set(r["accuracy"]) == {"start", "pruned", "ticket"}          # no adversarial step for eps 0
    assert all(set(a) == {"clean"} for a in r["accuracy"].values())
    model, ck = load_checkpoint(d / "n.pt")
    assert ck["ticket"]["kind"] == "natural"
    for name, w in _weights(model).items():
        rows = w.reshape(w.shape[0], -1)
        groups = rows.view(rows.shape[0], -1, 4)
        assert ((groups != 0).sum(-1) <= 2).all(), name                 # at most 2 of every 4 kept
    # PixelSpace undoes exactly the digits normalization of vitcod.data.
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(PixelSpace(model)(x), model((x - 0.3) / 0.4))


def test_bad_options_and_inputs_are_named(files, capsys):
    d, _ = files
    with pytest.raises(ConfigError, match="--eps must be a number in"):
        TicketConfig(eps=-0.1)
    with pytest.raises(ConfigError, match="--level '1.5'"):
        TicketConfig(level="1.5")
    with pytest.raises(ConfigError, match="--level '3:2'"):
        TicketConfig(pattern="nm", level="3:2")
    args = ["vitcod", "ticket", "--checkpoint", str(d / "m.pt"), "--masks", str(d / "masks.npz"), "-o", str(d / "x.pt")]
    assert main(args + ["--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["vitcod", "ticket", "--checkpoint", str(d / "none.pt"), "--masks", str(d / "masks.npz"),
                 "-o", str(d / "x.pt")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (d / "x.pt").exists()
    # A checkpoint with Q/K auto-encoders is refused before any training.
    torch.manual_seed(0)
    ae = VisionTransformer(PRESETS["digits"], depth=1, embed_dim=32)
    ae.attach_qk_autoencoders(2)
    save_checkpoint(d / "ae.pt", ae.eval())
    with pytest.raises(ConfigError, match="Q/K auto-encoders"):
        draw_vitcod_ticket(d / "ae.pt", d / "masks.npz", d / "x.pt", TicketConfig(), progress=False)
    assert not (d / "x.pt").exists()


def test_cli_writes_the_ticket_and_its_report(files, capsys):
    d, _ = files
    out = d / "cli.json"
    assert main(["vitcod", "ticket", "--checkpoint", str(d / "m.pt"), "--masks", str(d / "masks.npz"),
                 "--eps", "0", "--epochs", "0", "--no-progress", "-o", str(d / "c.pt"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["output"] == str(d / "c.pt") and r["sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert "natural ticket, unstructured 0.75" in capsys.readouterr().out
