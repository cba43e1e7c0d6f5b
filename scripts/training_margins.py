"""Print the training outcomes that the tests assert, to check their margins.

Float results differ between CPUs, thread counts and kernel choices, so every
test that asserts something about training keeps a margin measured here under
several settings. Run it as the README's "Tests" section shows, e.g.::

    OMP_NUM_THREADS=2 TRAIN_THREADS=2 .venv/bin/python scripts/training_margins.py
    ATEN_CPU_CAPABILITY=default .venv/bin/python scripts/training_margins.py
    MKL_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python scripts/training_margins.py

It prints one JSON line. Each quantity names the test that asserts on it; the
bounds asserted there are repeated in ``bounds``.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset


def fixed_batch_loss_ratio(model, x, y, *, seed: int) -> float:
    """Loss on one batch after / before 20 full-batch steps on it (as the tests' ``_fit_batch``)."""
    from attnforge.algo.vitcod.train import TrainConfig, train

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(F.cross_entropy(model(x), y))

    before = loss()
    train(model, TensorDataset(x, y), TrainConfig(epochs=20, batch_size=len(y), lr=1e-3, warmup_epochs=0,
                                                  max_shift=0, progress=False, seed=seed))
    return loss() / before


def vitcod() -> dict:
    """tests/test_vitcod_flow.py: the fixture's model, and mask fine-tuning on a fixed batch."""
    from attnforge.algo.vitcod.data import digits_datasets
    from attnforge.algo.vitcod.pruning import build_masks
    from attnforge.algo.vitcod.stats import attention_statistics
    from attnforge.algo.vitcod.train import TrainConfig, evaluate, train
    from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer

    out = {}
    torch.manual_seed(0)
    train_set, val_set = digits_datasets()
    model = VisionTransformer(PRESETS["digits"], depth=2)
    train(model, train_set, TrainConfig(epochs=8, lr=3e-3, batch_size=32, warmup_epochs=0.3, max_shift=0,
                                        progress=False, seed=0))
    out["vitcod_fixture_val_accuracy"] = evaluate(model, val_set)["accuracy"]
    maps = attention_statistics(model, train_set, progress=False)
    ms, _ = build_masks(maps, target_sparsity=0.9, head_dim=model.cfg.head_dim)
    m = VisionTransformer(model.cfg)
    m.load_state_dict(model.state_dict())
    m.set_masks(torch.from_numpy(ms.keep))
    x, y = train_set.tensors[0][:64], train_set.tensors[1][:64]
    out["vitcod_mask_finetune_batch_loss_ratio"] = fixed_batch_loss_ratio(m, x, y, seed=1)
    # The Q/K auto-encoder: one epoch of its training, then the fixed batch with masks.
    a = VisionTransformer(model.cfg)
    a.load_state_dict(model.state_dict())
    a.attach_qk_autoencoders()
    xv = val_set.tensors[0][:64]
    with torch.no_grad():
        a(xv)
        start = float(a.qk_reconstruction_loss())
    train(a, train_set, TrainConfig(epochs=1, lr=1e-3, ae_weight=5.0, progress=False, seed=2))
    with torch.no_grad():
        a(xv)
        out["vitcod_autoencoder_recon_ratio"] = float(a.qk_reconstruction_loss()) / start
    a.set_masks(torch.from_numpy(ms.keep))
    out["vitcod_autoencoder_batch_loss_ratio"] = fixed_batch_loss_ratio(a, x, y, seed=3)
    return out


def tickets() -> dict:
    """tests/test_tickets_attacks.py: what PGD does to the natural model, and PGD-trained
    vs naturally trained accuracy under attack."""
    from attnforge.algo.tickets.attacks import Attack, pgd
    from attnforge.algo.tickets.data import source_task
    from attnforge.algo.tickets.models import build_model
    from attnforge.algo.tickets.train import evaluate, train

    torch.manual_seed(0)
    task = source_task()
    natural = train(build_model("cnn"), task.train, epochs=8, seed=0)
    out = {}
    x, y = task.val.x[:128], task.val.y[:128]
    for norm, eps in [("linf", 0.1), ("linf", 0.3), ("l2", 0.5), ("l2", 2.0)]:
        x_adv = pgd(natural, x, y, eps=eps, norm=norm, steps=10, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            clean = F.cross_entropy(natural(x), y, reduction="none")
            adv = F.cross_entropy(natural(x_adv), y, reduction="none")
        out[f"pgd_{norm}_{eps}_loss_ratio"] = float(adv.mean() / clean.mean())
        out[f"pgd_{norm}_{eps}_fraction_raised"] = float((adv >= clean - 1e-4).float().mean())
    torch.manual_seed(0)
    atk = Attack(0.2, steps=3)
    robust = train(build_model("cnn"), task.train, epochs=6, seed=0, attack=atk)
    out["tickets_robust_minus_natural_under_attack"] = evaluate(robust, task.val, atk) - evaluate(natural, task.val, atk)
    return out


def linear_lm() -> dict:
    """tests/test_linear_lm.py: held-out loss drop of 40 training steps."""
    from attnforge.algo.linear.data import load_corpus
    from attnforge.algo.linear.model import LinearLM, LMConfig
    from attnforge.algo.linear.train import TrainConfig, evaluate, train_lm

    corpus = load_corpus(max_train_bytes=200_000, max_val_bytes=20_000)
    cfg = LMConfig(attention="elu", augment=True, n_layer=1, n_head=2, d_model=32, block_size=64, chunk=8)
    before = evaluate(LinearLM(cfg), corpus, 64, 8)["loss"]
    model, _ = train_lm(cfg, corpus, TrainConfig(steps=40, batch_size=8, block=64, lr=3e-3, seed=1, eval_windows=8),
                        progress=False)
    return {"linear_lm_loss_drop": before - evaluate(model, corpus, 64, 8)["loss"]}


BOUNDS = {
    "vitcod_fixture_val_accuracy": "> 50",
    "vitcod_mask_finetune_batch_loss_ratio": "< 0.7",
    "vitcod_autoencoder_recon_ratio": "< 0.5",
    "vitcod_autoencoder_batch_loss_ratio": "< 0.7",
    "pgd_*_loss_ratio": "> 1.5",
    "pgd_*_fraction_raised": "> 0.9",
    "tickets_robust_minus_natural_under_attack": "> 0.1",
    "linear_lm_loss_drop": "> 1.0",
}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "1")))   # the tests run on one thread
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "TRAIN_THREADS", "ATEN_CPU_CAPABILITY",
                                          "MKL_ENABLE_INSTRUCTIONS")}
    result = {"env": env, **vitcod(), **tickets(), **linear_lm(), "bounds": BOUNDS}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
