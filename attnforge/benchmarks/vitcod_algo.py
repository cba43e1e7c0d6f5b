"""ViTCoD algorithm study: accuracy of a digits ViT against attention sparsity, 3 seeds.

For each seed: train a ViT from scratch on scikit-learn's digits (32x32, 4x4
patches, 65 tokens), then

* **dense**: its validation accuracy; **dense + more epochs**: the same model
  trained as long again as a fine-tuning run, without masks (the fair reference
  for "after fine-tuning", which also gets extra epochs);
* for each target sparsity (50/70/80/90/95 % of the final, polarized masks):
  masks from the dense model's average attention (ViTCoD's criterion, threshold
  solved for the target, fixed polarization), accuracy **before** fine-tuning
  (masks applied as they are) and **after** fine-tuning with exactly those masks;
* the same **with the Q/K auto-encoder** (H -> ceil(H/2) -> H): attached to the
  dense model and trained with task + reconstruction loss, masks from its own
  attention, then fine-tuned with the masks (reconstruction loss still on).

Writes ``vitcod_algo.json`` (every number, per seed and mean ± std, plus the
per-layer/head mask report at 90 % of seed 0) and ``vitcod_algo.png``
(accuracy curves) and ``vitcod_algo_masks90.png`` (the 90 % report) under
``out_dir``. Seeds already finished are kept in ``vitcod_algo.partial.json``
and skipped when the run is started again. One thread, about 25 min of CPU
(``quick``: one seed of a 1-layer model, seconds).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run", "StudyConfig"]

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)


@dataclass
class StudyConfig:
    seeds: tuple = (0, 1, 2)
    depth: int = 4
    embed_dim: int = 64
    num_heads: int = 4
    dense_epochs: int = 40
    dense_lr: float = 2e-3
    ae_epochs: int = 3
    ae_lr: float = 5e-4
    ae_weight: float = 1.0
    ae_init: str = "random"         # "random" (an orthonormal projection) or "pca" (the dense model's Q/K PCA)
    ft_epochs: int = 3
    ft_lr: float = 5e-4
    ft_warmup: float = 0.2          # epochs of learning-rate warmup when fine-tuning
    batch_size: int = 64
    sparsities: tuple = SPARSITIES
    polarize: str = "fixed"
    global_threshold: float = 0.5
    # The ViTCoD accelerator (VitcodConfig fields but head_dim, the model's) that cycles-mode polarization
    # chooses G for and whose cycles the mask report predicts [default_accelerator(head_dim)].
    accelerator: dict = field(default_factory=dict)
    limit: int | None = None          # training images (None: all 1,438)
    extra: dict = field(default_factory=dict)


QUICK = StudyConfig(seeds=(0,), depth=1, embed_dim=32, dense_epochs=1, ae_epochs=1, ft_epochs=1,
                    sparsities=(0.5, 0.9), limit=256)


def _copy(model):
    from attnforge.algo.vitcod.vit import VisionTransformer

    m = VisionTransformer(model.cfg)
    if model.blocks[0].attn.qk_ae is not None:
        m.attach_qk_autoencoders(model.blocks[0].attn.qk_ae.hidden)
    m.load_state_dict(model.state_dict())
    return m


#: the StudyConfig fields the dense model depends on (with the seed): what a cached dense model is keyed by
_DENSE_FIELDS = ("depth", "embed_dim", "num_heads", "dense_epochs", "dense_lr", "batch_size", "limit")


def dense_cache_path(cache_dir: Path, cfg: StudyConfig, seed: int) -> Path:
    """Where ``run(..., dense_cache=cache_dir)`` keeps seed ``seed``'s trained dense model."""
    key = "_".join(f"{f}{getattr(cfg, f)}" for f in _DENSE_FIELDS)
    return Path(cache_dir) / f"dense_s{seed}_{key}.pt"


def _one_seed(cfg: StudyConfig, seed: int, bar, dense_cache: Path | None = None) -> dict:
    import torch
    from torch.utils.data import Subset

    from attnforge.algo.vitcod.data import digits_datasets, first_images
    from attnforge.algo.vitcod.polarize import default_accelerator
    from attnforge.algo.vitcod.pruning import build_masks
    from attnforge.algo.vitcod.stats import attention_statistics
    from attnforge.algo.vitcod.train import TrainConfig, evaluate, train
    from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer

    t0 = time.perf_counter()
    train_set, val_set = digits_datasets()
    if cfg.limit:
        train_set = Subset(train_set, range(min(cfg.limit, len(train_set))))
    torch.manual_seed(seed)
    dense = VisionTransformer(PRESETS["digits"], depth=cfg.depth, embed_dim=cfg.embed_dim, num_heads=cfg.num_heads)

    def tc(epochs, lr, s, **kw):
        return TrainConfig(epochs=epochs, lr=lr, batch_size=cfg.batch_size, seed=s, progress=False, **kw)

    cached = dense_cache_path(dense_cache, cfg, seed) if dense_cache else None
    if cached is not None and cached.is_file():
        bar.set_postfix_str(f"seed {seed}: dense model from {cached}")
        saved = torch.load(cached, weights_only=True)
        dense.load_state_dict(saved["model"])
        hist = saved.get("history")
    else:
        bar.set_postfix_str(f"seed {seed}: dense training")
        hist = train(dense, train_set, tc(cfg.dense_epochs, cfg.dense_lr, seed), val_set)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
            torch.save({"model": dense.state_dict(), "history": hist}, tmp)
            os.replace(tmp, cached)
    bar.update()
    res = {"seed": seed, "dense": evaluate(dense, val_set)["accuracy"], "dense_history": hist}

    cont = _copy(dense)
    train(cont, train_set, tc(cfg.ft_epochs, cfg.ft_lr, seed + 100, warmup_epochs=cfg.ft_warmup))
    res["dense_continued"] = evaluate(cont, val_set)["accuracy"]
    bar.update()

    bar.set_postfix_str(f"seed {seed}: auto-encoder")
    ae = _copy(dense).attach_qk_autoencoders()
    if cfg.ae_init == "pca":
        ae.init_qk_autoencoders_pca(first_images(train_set))
    elif cfg.ae_init != "random":
        raise ValueError(f"StudyConfig.ae_init must be 'random' or 'pca', got {cfg.ae_init!r}")
    ae_hist = train(ae, train_set, tc(cfg.ae_epochs, cfg.ae_lr, seed + 200, ae_weight=cfg.ae_weight,
                                    warmup_epochs=cfg.ft_warmup))
    res["ae_dense"] = evaluate(ae, val_set)["accuracy"]
    res["ae_recon_loss"] = ae_hist[-1]["recon_loss"] if ae_hist else None
    bar.update()

    head_dim = dense.cfg.head_dim
    accelerator = dataclasses.replace(default_accelerator(head_dim), **cfg.accelerator)
    maps = {"plain": attention_statistics(dense, train_set, progress=False),
            "ae": attention_statistics(ae, train_set, progress=False)}
    res["sparsity"] = {}
    for s in cfg.sparsities:
        row = {}
        for arm, base in (("plain", dense), ("ae", ae)):
            bar.set_postfix_str(f"seed {seed}: {arm} {s:.0%}")
            ms, report = build_masks(maps[arm], target_sparsity=s, polarize_mode=cfg.polarize,
                                     global_threshold=cfg.global_threshold, accelerator=accelerator,
                                     head_dim=head_dim)
            m = _copy(base)
            m.set_masks(torch.from_numpy(ms.keep))
            before = evaluate(m, val_set)["accuracy"]
            train(m, train_set, tc(cfg.ft_epochs, cfg.ft_lr, seed + 300 + int(s * 100),
                                   ae_weight=cfg.ae_weight, warmup_epochs=cfg.ft_warmup))
            after = evaluate(m, val_set)["accuracy"]
            row[arm] = {"achieved_sparsity": ms.sparsity(), "threshold": report["threshold"],
                        "sparsity_criterion": report["sparsity_criterion"], "mean_n_global": report["mean_n_global"],
                        "cycles": report["cycles"],
                        "before_ft": before, "after_ft": after}
            if arm == "plain" and abs(s - 0.9) < 1e-9:
                res["report_90"] = report
                res["masks_90"] = {"keep": ms.keep, "order": ms.order, "n_global": ms.n_global}
            bar.update()
        res["sparsity"][f"{s:.2f}"] = row
    res["seconds"] = time.perf_counter() - t0
    return res


def _mean_std(values):
    import numpy as np

    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": a.tolist()}


def _summarize(cfg: StudyConfig, seeds: list[dict]) -> dict:
    out = {k: _mean_std([r[k] for r in seeds]) for k in ("dense", "dense_continued", "ae_dense")}
    out["sparsity"] = {}
    for key in seeds[0]["sparsity"]:
        out["sparsity"][key] = {arm: {m: _mean_std([r["sparsity"][key][arm][m] for r in seeds])
                                      for m in ("achieved_sparsity", "before_ft", "after_ft")}
                                for arm in ("plain", "ae")}
        for arm in ("plain", "ae"):
            out["sparsity"][key][arm]["drop_vs_dense"] = _mean_std(
                [r["dense"] - r["sparsity"][key][arm]["after_ft"] for r in seeds])
            out["sparsity"][key][arm]["drop_vs_dense_continued"] = _mean_std(
                [r["dense_continued"] - r["sparsity"][key][arm]["after_ft"] for r in seeds])
    if "0.90" in out["sparsity"]:
        d = out["sparsity"]["0.90"]["plain"]["drop_vs_dense"]["mean"]
        d_ae = out["sparsity"]["0.90"]["ae"]["drop_vs_dense"]["mean"]
        out["claim_90"] = {
            "claim": "ViTCoD: at 90 % sparsity, after fine-tuning, at most 1.5 points below dense",
            "drop_points": d, "holds": d <= 1.5, "drop_points_with_autoencoder": d_ae, "holds_with_autoencoder": d_ae <= 1.5}
    return out


def _plot(summary: dict, cfg: StudyConfig, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(summary["sparsity"], key=float)
    xs = [100 * summary["sparsity"][k]["plain"]["achieved_sparsity"]["mean"] for k in keys]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for arm, label, color in (("plain", "masks", "C0"), ("ae", "masks + Q/K auto-encoder", "C1")):
        for when, style in (("before_ft", ":"), ("after_ft", "-")):
            ys = [summary["sparsity"][k][arm][when]["mean"] for k in keys]
            es = [summary["sparsity"][k][arm][when]["std"] for k in keys]
            ax.errorbar(xs, ys, yerr=es, fmt="o" + style, color=color, capsize=3, ms=4,
                        label=f"{label}, {'after' if when == 'after_ft' else 'before'} fine-tuning")
    d = summary["dense"]
    ax.axhline(d["mean"], color="k", lw=1, label=f"dense {d['mean']:.2f} ± {d['std']:.2f} %")
    c = summary["dense_continued"]
    ax.axhline(c["mean"], color="k", lw=1, ls="--",
               label=f"dense + {cfg.ft_epochs} more epochs {c['mean']:.2f} ± {c['std']:.2f} %")
    ax.axhspan(d["mean"] - 1.5, d["mean"], color="k", alpha=0.08, label="within 1.5 points of dense")
    ax.set(xlabel="attention sparsity (%)", ylabel="validation accuracy (%)",
           title=f"ViTCoD masks on the digits ViT ({cfg.depth} layers, {cfg.num_heads} heads, 65 tokens), "
                 f"{len(cfg.seeds)} seeds")
    lo = min(min(summary["sparsity"][k][a]["before_ft"]["mean"] for k in keys) for a in ("plain", "ae"))
    ax.set_ylim(max(0, lo - 5), 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench vitcod_algo",
        config: StudyConfig | None = None, dense_cache: Path | None = None) -> Path:
    """The study; with ``dense_cache`` each seed's trained dense model is kept there (keyed by the settings
    it depends on, ``dense_cache_path``) and reused by later runs that vary only the later stages."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from attnforge.algo.vitcod.report import plot_mask_report
    from attnforge.formats.masks import MaskSet

    cfg = config or (QUICK if quick else StudyConfig())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # the machine is shared; small models are fastest on one thread anyway
    partial_path = out_dir / "vitcod_algo.partial.json"
    cfg_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    done = {}
    if partial_path.is_file():
        saved = json.loads(partial_path.read_text())
        if saved.get("config") == cfg_dict:
            done = {r["seed"]: r for r in saved["seeds"]}
    steps_per_seed = 3 + 2 * len(cfg.sparsities)
    t0 = time.perf_counter()
    masks90 = None
    try:
        with tqdm(total=steps_per_seed * len(cfg.seeds), desc="vitcod_algo", unit="run") as bar:
            for seed in cfg.seeds:
                if seed in done:
                    bar.update(steps_per_seed)
                    continue
                r = _one_seed(cfg, seed, bar, dense_cache)
                m = r.pop("masks_90", None)
                if masks90 is None and m is not None:
                    masks90 = m
                done[seed] = r
                write_json_atomic(partial_path, {"config": cfg_dict, "seeds": list(done.values())}, indent=None)
    finally:
        torch.set_num_threads(threads)
    seeds = [done[s] for s in cfg.seeds]
    summary = _summarize(cfg, seeds)
    result = {
        "format": "attnforge.bench/1",
        "benchmark": "vitcod_algo",
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "torch_threads": 1},
        "config": cfg_dict,
        "data": "scikit-learn digits, 32x32 (bilinear), 4x4 patches -> 65 tokens; 1,438 train / 359 validation",
        "summary": summary,
        "seeds": seeds,
        "wall_seconds": time.perf_counter() - t0,
    }
    path = out_dir / "vitcod_algo.json"
    write_json_atomic(path, result)
    png = _plot(summary, cfg, out_dir / "vitcod_algo.png")
    if masks90 is not None and "report_90" in seeds[0]:
        ms = MaskSet(np.asarray(masks90["keep"]), np.asarray(masks90["order"]), np.asarray(masks90["n_global"]), {})
        plot_mask_report(ms, seeds[0]["report_90"], out_dir / "vitcod_algo_masks90.png")
    partial_path.unlink(missing_ok=True)
    print(f"wrote {path}, {png}")
    d = summary["dense"]
    print(f"  dense {d['mean']:.2f} ± {d['std']:.2f} %, dense + {cfg.ft_epochs} epochs "
          f"{summary['dense_continued']['mean']:.2f} ± {summary['dense_continued']['std']:.2f} %, "
          f"with auto-encoder {summary['ae_dense']['mean']:.2f} ± {summary['ae_dense']['std']:.2f} %")
    for k in sorted(summary["sparsity"], key=float):
        row = summary["sparsity"][k]
        print(f"  {float(k):.0%}: " + "; ".join(
            f"{arm} before {row[arm]['before_ft']['mean']:.2f} ± {row[arm]['before_ft']['std']:.2f}, after "
            f"{row[arm]['after_ft']['mean']:.2f} ± {row[arm]['after_ft']['std']:.2f}" for arm in ("plain", "ae")))
    if "claim_90" in summary:
        c = summary["claim_90"]
        print(f"  90 % claim (<= 1.5 points below dense after fine-tuning): drop {c['drop_points']:.2f} points -> "
              f"{'holds' if c['holds'] else 'does NOT hold'}; with auto-encoder drop "
              f"{c['drop_points_with_autoencoder']:.2f} -> {'holds' if c['holds_with_autoencoder'] else 'does NOT hold'}")
    return path
