"""Q/K auto-encoder variants on the ViTCoD study's digits ViT at 90 % attention sparsity (issue 16 item 5).

For one seed: the study's dense model (``attnforge.benchmarks.vitcod_algo``'s settings; trained once and
kept in ``build/aeexp/dense_<seed>.pt``), then each variant, one JSON line per variant appended to
``build/aeexp/results.jsonl``:

* ``INIT:W:AE_EPOCHS[:FT_EPOCHS[:HIDDEN]]`` — the study's auto-encoder arm: attach the auto-encoder
  (``HIDDEN`` compressed heads, default ceil(H/2) = 2 of 4) to the dense model, start it at ``INIT``
  (``random``: an orthonormal projection, the study's default; ``pca``: the PCA of each layer's Q/K
  across heads), train ``AE_EPOCHS`` with reconstruction weight ``W``, masks from its own attention
  (90 %, fixed polarization), fine-tune ``FT_EPOCHS`` (default 3) with the masks;
* ``masks-first:W:EPOCHS`` — masks from the dense model, fine-tuned 3 epochs (the study's plain arm),
  then the PCA-started auto-encoder attached and trained ``EPOCHS`` with the masks fixed.

Run: ``nice .venv/bin/python scripts/vitcod_ae_variants.py SEED VARIANT[,VARIANT...]`` (minutes per
variant; the first call per seed trains the dense model, 40 epochs). docs/vitcod-algo.md quotes it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from attnforge.algo.vitcod.data import digits_datasets, first_images
from attnforge.algo.vitcod.polarize import default_accelerator
from attnforge.algo.vitcod.pruning import build_masks
from attnforge.algo.vitcod.stats import attention_statistics
from attnforge.algo.vitcod.train import TrainConfig, evaluate, train
from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer
from attnforge.benchmarks.vitcod_algo import StudyConfig, _copy

OUT = Path("build/aeexp")


def main() -> None:
    torch.set_num_threads(1)
    cfg = StudyConfig()
    seed, variants = int(sys.argv[1]), sys.argv[2].split(",")
    OUT.mkdir(parents=True, exist_ok=True)
    tr, va = digits_datasets()

    def tc(epochs, lr, s, **kw):
        return TrainConfig(epochs=epochs, lr=lr, batch_size=cfg.batch_size, seed=s, progress=False, **kw)

    def masks_of(model):
        ms, _ = build_masks(attention_statistics(model, tr, progress=False), target_sparsity=0.9,
                            polarize_mode="fixed", global_threshold=0.5,
                            accelerator=default_accelerator(model.cfg.head_dim), head_dim=model.cfg.head_dim)
        return torch.from_numpy(ms.keep)

    torch.manual_seed(seed)
    dense = VisionTransformer(PRESETS["digits"], depth=cfg.depth, embed_dim=cfg.embed_dim, num_heads=cfg.num_heads)
    path = OUT / f"dense_{seed}.pt"
    if path.exists():
        dense.load_state_dict(torch.load(path, weights_only=True))
    else:
        train(dense, tr, tc(cfg.dense_epochs, cfg.dense_lr, seed), va)
        torch.save(dense.state_dict(), path)
    d_acc = evaluate(dense, va)["accuracy"]
    for v in variants:
        t0 = time.time()
        parts = v.split(":")
        if parts[0] == "masks-first":
            w, ep = float(parts[1]), int(parts[2])
            keep = masks_of(dense)
            m = _copy(dense)
            m.set_masks(keep)
            train(m, tr, tc(cfg.ft_epochs, cfg.ft_lr, seed + 390, warmup_epochs=cfg.ft_warmup))
            masked = evaluate(m, va)["accuracy"]
            a = _copy(m).attach_qk_autoencoders()
            a.set_masks(keep)
            a.init_qk_autoencoders_pca(first_images(tr))
            start = evaluate(a, va)["accuracy"]
            train(a, tr, tc(ep, cfg.ft_lr, seed + 500, ae_weight=w, warmup_epochs=cfg.ft_warmup))
            r = dict(masked_ft=masked, ae_start=start, masked_after=evaluate(a, va)["accuracy"])
        else:
            init, w, ep = parts[0], float(parts[1]), int(parts[2])
            ft = int(parts[3]) if len(parts) > 3 else cfg.ft_epochs
            hidden = int(parts[4]) if len(parts) > 4 else None
            ae = _copy(dense).attach_qk_autoencoders(hidden)
            if init == "pca":
                ae.init_qk_autoencoders_pca(first_images(tr))
            start = evaluate(ae, va)["accuracy"]
            train(ae, tr, tc(ep, cfg.ae_lr, seed + 200, ae_weight=w, warmup_epochs=cfg.ft_warmup))
            trained = evaluate(ae, va)["accuracy"]
            m = _copy(ae)
            m.set_masks(masks_of(ae))
            before = evaluate(m, va)["accuracy"]
            train(m, tr, tc(ft, cfg.ft_lr, seed + 390, ae_weight=w, warmup_epochs=cfg.ft_warmup))
            r = dict(ae_start=start, ae_trained=trained, masked_before=before, masked_after=evaluate(m, va)["accuracy"])
        r = dict(seed=seed, variant=v, dense=d_acc, **r, seconds=round(time.time() - t0, 1))
        r["drop"] = d_acc - r["masked_after"]
        print(json.dumps(r), flush=True)
        with open(OUT / "results.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
