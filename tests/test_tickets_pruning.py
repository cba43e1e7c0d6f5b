"""Ticket masks: exact sparsity and pattern, fixed through fine-tuning, IMP with rewinding."""

import math

import pytest
import torch

from attnforge.algo.tickets.data import downstream_task, source_task
from attnforge.algo.tickets.models import build_model, prunable_layers
from attnforge.algo.tickets.pruning import (Level, apply_masks, compute_masks, current_masks, imp,
                                            imp_schedule, one_shot, sparsity_of)
from attnforge.algo.tickets.train import clean_state_dict, train
from attnforge.algo.tickets.transfer import make_ticket, transfer

torch.set_num_threads(1)  # tests share two cores


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn")


def _rows(mask):
    return mask.reshape(mask.shape[0], -1)


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9, 0.95])
def test_unstructured_per_layer_exact(s):
    model = _model()
    masks = compute_masks(model, Level("unstructured", s), "layer")
    for name, mod in prunable_layers(model).items():
        m = masks[f"{name}.weight"]
        assert int((m == 0).sum()) == round(s * m.numel())
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        # the kept ones are the largest in magnitude
        w = mod.weight.detach().abs()
        if 0 < s:
            assert w[m == 1].min() >= w[m == 0].max()


@pytest.mark.parametrize("s", [0.5, 0.9])
def test_unstructured_global_exact(s):
    model = _model()
    masks = compute_masks(model, Level("unstructured", s), "global")
    total = sum(m.numel() for m in masks.values())
    assert sum(int((m == 0).sum()) for m in masks.values()) == round(s * total)
    kept = torch.cat([mod.weight.detach().abs()[masks[f"{n}.weight"] == 1] for n, mod in prunable_layers(model).items()])
    gone = torch.cat([mod.weight.detach().abs()[masks[f"{n}.weight"] == 0] for n, mod in prunable_layers(model).items()])
    assert kept.min() >= gone.max()


@pytest.mark.parametrize("s", [0.25, 0.5, 0.75, 0.9])
def test_channel_per_layer_whole_channels(s):
    model = _model()
    masks = compute_masks(model, Level("channel", s), "layer")
    for name, mod in prunable_layers(model).items():
        rows = _rows(masks[f"{name}.weight"])
        per_row = rows.sum(1)
        assert set(per_row.unique().tolist()) <= {0.0, float(rows.shape[1])}   # whole channels only
        assert int((per_row == 0).sum()) == round(s * rows.shape[0])
        assert torch.equal(masks[f"{name}.bias"], (per_row > 0).float())       # bias of a pruned channel too


def test_channel_global_whole_channels_and_close_to_target():
    model = _model()
    s = 0.8
    masks = compute_masks(model, Level("channel", s), "global")
    total = 0
    for name, mod in prunable_layers(model).items():
        rows = _rows(masks[f"{name}.weight"])
        assert set(rows.sum(1).unique().tolist()) <= {0.0, float(rows.shape[1])}
        assert rows.sum() > 0   # no layer loses every channel
        total += rows.numel()
    biggest_channel = max(_rows(m).shape[1] for k, m in masks.items() if k.endswith(".weight"))
    achieved = sparsity_of(masks)
    assert s - biggest_channel / total <= achieved <= s + 1e-9


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (1, 8), (3, 8), (1, 16)])
def test_nm_groups(n, m):
    model = _model()
    masks = compute_masks(model, Level("nm", n=n, m=m), "layer")
    for name, mod in prunable_layers(model).items():
        rows = _rows(masks[f"{name}.weight"])
        w = _rows(mod.weight.detach().abs())
        cols = rows.shape[1]
        for g in range(0, cols, m):
            grp = rows[:, g:g + m]
            assert (grp.sum(1) == min(n, grp.shape[1])).all()   # exactly N kept (at most N: the N:M rule)
            # the kept ones are each group's largest
            kept_min = torch.where(grp == 1, w[:, g:g + m], torch.inf).amin(1)
            gone_max = torch.where(grp == 0, w[:, g:g + m], -torch.inf).amax(1)
            assert (kept_min >= gone_max).all()


def test_nm_global_refused_and_bad_levels():
    with pytest.raises(ValueError, match="no global scope"):
        compute_masks(_model(), Level("nm", n=2, m=4), "global")
    with pytest.raises(ValueError, match="N <= M"):
        Level("nm", n=5, m=4)
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        Level("unstructured", 1.0)
    with pytest.raises(ValueError, match="pattern 'blocks' is not one of"):
        Level("blocks", 0.5)
    with pytest.raises(ValueError, match="scope 'net' is not one of"):
        compute_masks(_model(), Level("unstructured", 0.5), "net")
    assert Level.parse("nm", "2:4") == Level("nm", n=2, m=4)
    with pytest.raises(ValueError, match="must look like '2:4'"):
        Level.parse("nm", "half")


@pytest.mark.parametrize("level,scope", [(Level("unstructured", 0.8), "global"), (Level("channel", 0.5), "layer"),
                                         (Level("nm", n=2, m=4), "layer")])
def test_masks_stay_fixed_through_finetuning(level, scope):
    model = _model()
    masks = one_shot(model, level, scope)
    ticket = make_ticket("cnn", 5, clean_state_dict(model), masks, {})
    task = downstream_task("rotated")
    _, tuned = transfer(ticket, task, "finetune", epochs=3, seed=0, return_model=True)
    assert set(current_masks(tuned)) == set(masks)
    for key, mask in masks.items():
        lname, pname = key.rsplit(".", 1)
        mod = prunable_layers(tuned)[lname]
        assert torch.equal(getattr(mod, f"{pname}_mask"), mask)
        value = getattr(mod, pname).detach()
        assert (value[mask == 0] == 0).all()
        # the body did train: surviving weights moved
        before = ticket["state"][key]
        assert not torch.allclose(value[mask == 1], before[mask == 1])


def test_linear_probe_changes_only_the_head():
    model = _model()
    masks = one_shot(model, Level("unstructured", 0.5))
    ticket = make_ticket("cnn", 5, clean_state_dict(model), masks, {})
    _, tuned = transfer(ticket, downstream_task("plain"), "linear", epochs=3, return_model=True)
    state = clean_state_dict(tuned)
    for key, value in ticket["state"].items():
        if not key.startswith("head."):
            assert torch.equal(state[key], value * masks.get(key, torch.ones_like(value)))


def test_imp_schedule_and_rewinding():
    levels = [Level("unstructured", s) for s in (0.5, 0.9)]
    sched = imp_schedule(levels, rounds_per_level=2)
    assert [round(lv.sparsity, 4) for lv in sched] == [round(1 - math.sqrt(0.5), 4), 0.5,
                                                        round(1 - math.sqrt(0.5 * 0.1), 4), 0.9]
    assert [lv.label for lv in imp_schedule([Level("nm", n=2, m=4), Level("nm", n=1, m=8)])] == ["3:4", "2:4", "2:8", "1:8"]

    task = source_task()
    model = train(_model(), task.train, epochs=2, seed=0)
    pretrained = clean_state_dict(model)
    retrained = []

    def retrain(mod, r):
        retrained.append(r)
        train(mod, task.train, epochs=1, seed=r)

    out = imp(model, levels, retrain=retrain, rewind_state=pretrained, rounds_per_level=2)
    assert retrained == [0, 1, 2]          # no retraining after the last round
    assert set(out) == {"0.5", "0.9"}
    for label, s in (("0.5", 0.5), ("0.9", 0.9)):
        assert all(int((m == 0).sum()) == round(s * m.numel()) for m in out[label].values())
    # nested: every weight pruned at 50 % stays pruned at 90 %
    for key in out["0.5"]:
        assert ((out["0.9"][key] == 1) <= (out["0.5"][key] == 1)).all()
    # rewound: the model's surviving weights are the pretrained ones
    state = clean_state_dict(model)
    for key, mask in out["0.9"].items():
        assert torch.equal(state[key], pretrained[key] * mask)
    # IMP differs from one-shot pruning at the same sparsity (it retrained in between)
    one = one_shot(_load(pretrained), Level("unstructured", 0.9))
    assert any(not torch.equal(one[k], out["0.9"][k]) for k in one)


def _load(state):
    m = build_model("cnn")
    m.load_state_dict(state)
    return m


def test_vit_tickets_patterns_and_fixed_masks():
    """The ViTCoD ViT is in the family: its qkv/proj/mlp/patch layers get exact masks that stay fixed."""
    torch.manual_seed(0)
    model = build_model("vit")
    names = list(prunable_layers(model))
    assert "patch_embed.proj" in names and "blocks.0.attn.qkv" in names and "head" not in names
    nm = compute_masks(model, Level("nm", n=2, m=4), "layer")
    for key, mask in nm.items():
        rows = _rows(mask)
        if rows.shape[1] % 4 == 0:
            assert (rows.view(rows.shape[0], -1, 4).sum(2) == 2).all()
    ch = compute_masks(model, Level("channel", 0.5), "layer")
    qkv = _rows(ch["blocks.0.attn.qkv.weight"])
    assert int((qkv.sum(1) == 0).sum()) == qkv.shape[0] // 2
    ticket = make_ticket("vit", 5, clean_state_dict(model), nm, {})
    _, tuned = transfer(ticket, downstream_task("plain"), "finetune", epochs=1, return_model=True)
    state = clean_state_dict(tuned)
    for key, mask in nm.items():
        assert (state[key][mask == 0] == 0).all()


def test_vit65_is_the_accelerators_model_name_for_name():
    """``vit65`` is the ViTCoD digits preset (65 tokens): a ticket's weights load into the ViTCoD model, and on the
    same digit (8x8 in [0, 1] here, upscaled and normalized by ``digits_datasets`` there) both give the same
    logits, so a ticket drawn on it is a ticket of the model the accelerator runs."""
    from sklearn.datasets import load_digits

    from attnforge.algo.vitcod.data import _split, digits_datasets
    from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer

    torch.manual_seed(0)
    ticket_model = build_model("vit65", num_classes=10).eval()
    assert ticket_model.pos_embed.shape[1] == 65
    masks = compute_masks(ticket_model, Level("unstructured", 0.75), "layer")
    apply_masks(ticket_model, masks)
    assert sparsity_of(current_masks(ticket_model)) == pytest.approx(0.75, abs=0.01)
    vitcod = VisionTransformer(PRESETS["digits"]).eval()
    vitcod.load_state_dict(clean_state_dict(ticket_model))         # same names and shapes, nothing left over

    d = load_digits()
    first = int(_split(d.target)[0][0])                            # the first image of the ViTCoD train split
    x8 = torch.tensor(d.images[first:first + 1], dtype=torch.float32).unsqueeze(1) / 16.0
    x32 = digits_datasets()[0].tensors[0][:1]
    with torch.no_grad():
        ours, theirs = ticket_model(x8), vitcod(x32)
    assert ours.shape == (1, 10)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
