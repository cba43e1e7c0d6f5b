"""The robust-tickets transfer study: do tickets drawn from robust models transfer better?

One command runs it (``attnforge tickets study``); every cell is cached as a
file under the output folder, so a killed run resumes where it stopped and a
finished one only re-aggregates.

Design
------
* Source task digits 0-4, downstream digits 5-9 at four domain gaps
  (``data.GAPS``), transfer by full fine-tuning and by linear probing.
* Per model and seed: a natural model (eps 0) and robust models (PGD L-inf
  adversarial training) for each candidate eps. **eps is chosen on validation**:
  the robust eps whose dense (sparsity 0) transfers have the best mean
  *validation* accuracy over seeds, gaps and modes; test accuracies of the
  candidates are never looked at for the choice.
* For eps 0 and the chosen eps: tickets in every pattern and level, by
  one-shot magnitude pruning (``omp``) and, where configured, by IMP with
  rewinding to the pretrained weights (``imp``; retraining on the source task
  with the same training as the pretraining, natural or adversarial).
* Each ticket is transferred to every gap in both modes; the cell stores val
  and test accuracy.
* Aggregation: mean and std over seeds; the robust-minus-natural difference is
  paired by seed (same seed = same data order and head initialization), with a
  two-sided 95 % t-interval over seeds; a difference "exceeds seed noise" when
  that interval excludes 0.

Files under ``out_dir``: ``cells/<model>/eps<eps>/seed<k>/`` holds
``pretrained.pt``, ``imp_<pattern>.pt`` (IMP masks per level) and one JSON
per ticket (``dense.json``, ``<scheme>_<pattern>_<level>.json``);
``<name>.json`` and ``<name>_<model>_<scheme>.png`` (name ``tickets_study`` by default) are the report.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from attnforge.formats.atomic import write_json_atomic
from attnforge.jobs import Job, run_jobs

from .attacks import Attack
from .data import GAPS, check_gap, downstream_task, source_task
from .models import available_models, build_model
from .names import PATTERNS
from .pruning import Level, imp, one_shot
from .train import load_checkpoint, pretrain, save_checkpoint, train
from .transfer import MODES, make_ticket, transfer

__all__ = ["ModelPlan", "StudyConfig", "run_study", "aggregate", "quick_config", "full_config", "study_config",
           "STUDY_FORMAT"]

STUDY_FORMAT = "attnforge.tickets.study/1"


@dataclass(frozen=True)
class ModelPlan:
    """Training budget and what to sweep for one model of the family."""

    pretrain_epochs: int
    lr: float
    attack_steps: int
    schemes: tuple = ("omp", "imp")
    imp_retrain_epochs: int = 8
    imp_rounds_per_level: int = 2


@dataclass(frozen=True)
class StudyConfig:
    models: tuple = ("cnn", "vit")
    seeds: tuple = (0, 1, 2, 3, 4)
    eps_candidates: tuple = (0.05, 0.1, 0.2)       # PGD L-inf, pixels in [0, 1]
    norm: str = "linf"
    patterns: tuple = ("unstructured", "channel", "nm")
    levels: dict = field(default_factory=lambda: {
        "unstructured": ("0.5", "0.75", "0.9", "0.95"),
        "channel": ("0.25", "0.5", "0.75", "0.9"),
        "nm": ("2:4", "1:4", "1:8", "1:16"),
    })
    scope: str = "layer"
    gaps: tuple = GAPS
    modes: tuple = MODES
    plans: dict = field(default_factory=lambda: {
        "cnn": ModelPlan(pretrain_epochs=30, lr=2e-3, attack_steps=5, schemes=("omp", "imp")),
        "vit": ModelPlan(pretrain_epochs=30, lr=2e-3, attack_steps=3, schemes=("omp",)),
        # the 65-token model the accelerator runs; not in the default models (about 4x the vit's compute):
        # `attnforge tickets study --models vit65`
        "vit65": ModelPlan(pretrain_epochs=30, lr=2e-3, attack_steps=3, schemes=("omp",)),
    })
    transfer_epochs: dict | None = None            # None: transfer.TRANSFER_EPOCHS

    def to_json(self) -> dict:
        d = asdict(self)
        d["plans"] = {k: asdict(v) for k, v in self.plans.items()}
        return d


def full_config() -> StudyConfig:
    return StudyConfig()


def quick_config() -> StudyConfig:
    """A smoke-test sized study (minutes): CNN only, 2 seeds, one robust eps, fewer cells."""
    return StudyConfig(models=("cnn",), seeds=(0, 1), eps_candidates=(0.1,), patterns=("unstructured", "nm"),
                       levels={"unstructured": ("0.5", "0.9"), "nm": ("2:4", "1:8")}, gaps=("plain", "noisy"),
                       plans={"cnn": ModelPlan(pretrain_epochs=8, lr=2e-3, attack_steps=3, schemes=("omp", "imp"),
                                               imp_retrain_epochs=2, imp_rounds_per_level=1)},
                       transfer_epochs={"finetune": 10, "linear": 20})


def study_config(*, quick: bool = False, models=None, seeds: int | None = None, eps=None, patterns=None,
                 gaps=None, levels=None) -> StudyConfig:
    """The quick or full study with the given parts replaced (``seeds``: their number), checked.

    ``levels``: ``{pattern: (level text, ...)}`` replacing those patterns' levels (the others keep theirs).
    """
    cfg = quick_config() if quick else full_config()
    changes = {}
    if models:
        changes["models"] = tuple(models)
    if seeds is not None:
        changes["seeds"] = tuple(range(seeds))
    if eps:
        changes["eps_candidates"] = tuple(float(e) for e in eps)
    if patterns:
        changes["patterns"] = tuple(patterns)
    if gaps:
        changes["gaps"] = tuple(gaps)
    if levels:
        merged = dict(cfg.levels)
        for pattern, texts in levels.items():
            if pattern not in PATTERNS:
                raise ValueError(f"study levels: pattern {pattern!r} is not one of {', '.join(PATTERNS)}")
            texts = tuple(str(t) for t in texts)
            if not texts:
                raise ValueError(f"study levels: pattern {pattern!r} needs at least one level")
            for t in texts:
                Level.parse(pattern, t)        # raises naming the bad level
            if len(set(texts)) != len(texts):
                raise ValueError(f"study levels: pattern {pattern!r} lists a level twice: {', '.join(texts)}")
            merged[pattern] = texts
        changes["levels"] = merged
    cfg = replace(cfg, **changes)
    for g in cfg.gaps:
        check_gap(g)
    for p in cfg.patterns:
        if p not in PATTERNS or p not in cfg.levels:
            raise ValueError(f"study pattern {p!r} is not one of {', '.join(cfg.levels)}")
    for m in cfg.models:
        if m not in cfg.plans:
            raise ValueError(f"study model {m!r} is not one of {', '.join(cfg.plans)}")
    if len(cfg.seeds) < 1 or any(e <= 0 for e in cfg.eps_candidates) or not cfg.eps_candidates:
        raise ValueError("the study needs >= 1 seed and robust eps candidates > 0")
    return cfg


# ---------------------------------------------------------------------------- cells

def _eps_key(eps: float) -> str:
    return f"eps{eps:g}"


def _seed_dir(out: Path, model: str, eps: float, seed: int) -> Path:
    return out / "cells" / model / _eps_key(eps) / f"seed{seed}"


def _write_json(path: Path, obj) -> None:
    write_json_atomic(path, obj, indent=1)


def _attack(cfg: StudyConfig, model: str, eps: float) -> Attack | None:
    return Attack(eps, norm=cfg.norm, steps=cfg.plans[model].attack_steps) if eps > 0 else None


def _pretrained(cfg: StudyConfig, out: Path, model: str, eps: float, seed: int):
    """The pretrained model of one (model, eps, seed), trained once and cached."""
    path = _seed_dir(out, model, eps, seed) / "pretrained.pt"
    plan = cfg.plans[model]
    if path.is_file():
        ck = load_checkpoint(path)
        net = build_model(model, ck["classes"])
        net.load_state_dict(ck["state"])
        return net, ck
    ck = pretrain(model, attack=_attack(cfg, model, eps), epochs=plan.pretrain_epochs, lr=plan.lr, seed=seed,
                  robust_eval=Attack(max(cfg.eps_candidates), norm=cfg.norm, steps=10))
    net = build_model(model, ck["classes"])
    net.load_state_dict(ck["state"])
    save_checkpoint(path, ck)
    return net, ck


def _transfer_all(cfg: StudyConfig, ticket: dict, seed: int) -> dict:
    res = {}
    for gap in cfg.gaps:
        task = downstream_task(gap)
        for mode in cfg.modes:
            epochs = None if cfg.transfer_epochs is None else cfg.transfer_epochs[mode]
            res[f"{gap}/{mode}"] = transfer(ticket, task, mode, seed=seed, epochs=epochs)
    return res


def _cell(cfg, out, model, eps, seed, name, make_ticket_fn) -> dict:
    path = _seed_dir(out, model, eps, seed) / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    ticket = make_ticket_fn()
    result = {"model": model, "eps": eps, "seed": seed, "cell": name, "meta": ticket["meta"],
              "transfer": _transfer_all(cfg, ticket, seed)}
    _write_json(path, result)
    return result


def _level_name(scheme: str, lv: Level) -> str:
    return f"{scheme}_{lv.pattern}_{lv.label.replace(':', 'of')}"


def _unit_dense(cfg: StudyConfig, out: Path, model: str, eps: float, seed: int) -> None:
    net, ck = _pretrained(cfg, out, model, eps, seed)
    meta = {"scheme": "dense", "pattern": "dense", "level": "0", "sparsity": 0.0, "eps": eps, "seed": seed}
    _cell(cfg, out, model, eps, seed, "dense",
          lambda: make_ticket(model, ck["classes"], ck["state"], {}, meta))


def _unit_sweep(cfg: StudyConfig, out: Path, model: str, eps: float, seed: int) -> None:
    _unit_dense(cfg, out, model, eps, seed)
    plan = cfg.plans[model]
    for pattern in cfg.patterns:
        levels = [Level.parse(pattern, t) for t in cfg.levels[pattern]]
        for scheme in plan.schemes:
            if scheme == "omp":
                for lv in levels:
                    def draw(lv=lv):
                        net, ck = _pretrained(cfg, out, model, eps, seed)
                        masks = one_shot(net, lv, cfg.scope)
                        return make_ticket(model, ck["classes"], ck["state"], masks, _meta(scheme, lv, eps, seed, masks))
                    _cell(cfg, out, model, eps, seed, _level_name(scheme, lv), draw)
            else:
                all_masks = _imp_masks(cfg, out, model, eps, seed, pattern, levels)
                for lv in levels:
                    def draw(lv=lv):
                        _, ck = _pretrained(cfg, out, model, eps, seed)
                        masks = all_masks[lv.label]
                        return make_ticket(model, ck["classes"], ck["state"], masks, _meta(scheme, lv, eps, seed, masks))
                    _cell(cfg, out, model, eps, seed, _level_name(scheme, lv), draw)


def _meta(scheme, lv, eps, seed, masks):
    from .pruning import sparsity_of
    return {"scheme": scheme, "pattern": lv.pattern, "level": lv.label, "sparsity": sparsity_of(masks),
            "eps": eps, "seed": seed}


def _imp_masks(cfg, out, model, eps, seed, pattern, levels) -> dict:
    path = _seed_dir(out, model, eps, seed) / f"imp_{pattern}.pt"
    if path.is_file():
        return load_checkpoint(path)["masks"]
    plan = cfg.plans[model]
    net, ck = _pretrained(cfg, out, model, eps, seed)
    src = source_task()
    attack = _attack(cfg, model, eps)

    def retrain(m, r):
        train(m, src.train, epochs=plan.imp_retrain_epochs, lr=plan.lr, attack=attack, seed=seed * 1000 + r)

    masks = imp(net, levels, retrain=retrain, rewind_state=ck["state"], scope=cfg.scope,
                rounds_per_level=plan.imp_rounds_per_level)
    save_checkpoint(path, {"format": "attnforge.tickets.imp_masks/1", "masks": masks})
    return masks


def _run_unit(args) -> tuple:
    kind, cfg, out, model, eps, seed = args
    torch.set_num_threads(1)
    (_unit_dense if kind == "dense" else _unit_sweep)(cfg, out, model, eps, seed)
    return kind, model, eps, seed


def _run_units(units, workers: int, desc: str, cluster: str | None = None) -> None:
    """The units as jobs of ``attnforge.jobs.run_jobs`` (local processes, or the Dask scheduler at
    ``cluster``). No job cache there: a unit caches its own cells under the study's folder, so a
    rerun skips what is done (a cluster's workers must see that folder)."""
    if not units:
        return
    bar = tqdm(total=len(units), desc=desc, unit="unit")

    def progress(done, total):
        bar.n = done
        bar.refresh()

    jobs = [Job(f"tickets {kind} {model} eps={eps:g} seed={seed}", _run_unit, ((kind, cfg, out, model, eps, seed),))
            for kind, cfg, out, model, eps, seed in units]
    try:
        run_jobs(jobs, workers=workers, cluster=cluster, progress=progress)
    finally:
        bar.close()


# ---------------------------------------------------------------------------- selection + aggregation

def _load_cells(out: Path, model: str, eps: float) -> list[dict]:
    base = out / "cells" / model / _eps_key(eps)
    return [json.loads(p.read_text()) for p in sorted(base.glob("seed*/*.json"))]


def select_eps(cfg: StudyConfig, out: Path, model: str) -> dict:
    """The robust eps with the best mean dense-transfer *validation* accuracy (over seeds, gaps, modes)."""
    scores = {}
    for eps in cfg.eps_candidates:
        vals = [r["val"] for c in _load_cells(out, model, eps) if c["cell"] == "dense" and c["seed"] in cfg.seeds
                for k, r in c["transfer"].items() if k.split("/")[0] in cfg.gaps]
        scores[f"{eps:g}"] = float(np.mean(vals)) if vals else float("nan")
    best = max(cfg.eps_candidates, key=lambda e: scores[f"{e:g}"])
    return {"criterion": "mean validation accuracy of dense transfers (all seeds, gaps, modes)",
            "val_accuracy": scores, "chosen": best}


def _t_crit(n: int) -> float:
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, n - 1))
    except ImportError:  # scipy comes with scikit-learn; this is only a fallback
        return {2: 12.71, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, 2.0)


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}


def aggregate(cfg: StudyConfig, out: Path, selection: dict) -> list[dict]:
    """One row per (model, scheme, pattern, level, gap, mode): natural and robust test accuracy and their gap."""
    rows = []
    for model in cfg.models:
        if model not in selection:
            continue
        eps_r = selection[model]["chosen"]
        nat = {(c["cell"], c["seed"]): c for c in _load_cells(out, model, 0.0)}
        rob = {(c["cell"], c["seed"]): c for c in _load_cells(out, model, eps_r)}
        cells = sorted({k[0] for k in nat} & {k[0] for k in rob})
        for cell in cells:
            seeds = [s for s in cfg.seeds if (cell, s) in nat and (cell, s) in rob]
            if not seeds:
                continue
            meta = nat[(cell, seeds[0])]["meta"]
            for gap in cfg.gaps:
                for mode in cfg.modes:
                    key = f"{gap}/{mode}"
                    n_acc = [nat[(cell, s)]["transfer"][key]["test"] for s in seeds]
                    r_acc = [rob[(cell, s)]["transfer"][key]["test"] for s in seeds]
                    diff = np.subtract(r_acc, n_acc)
                    d = _stats(list(diff))
                    half = _t_crit(len(seeds)) * d["std"] / math.sqrt(len(seeds)) if len(seeds) > 1 else float("inf")
                    sparsities = [nat[(cell, s)]["meta"]["sparsity"] for s in seeds]
                    rows.append({
                        "model": model, "scheme": meta["scheme"], "pattern": meta["pattern"], "level": meta["level"],
                        "sparsity": float(np.mean(sparsities)), "gap": gap, "gap_index": GAPS.index(gap),
                        "mode": mode, "eps_robust": eps_r, "seeds": seeds,
                        "natural": _stats(n_acc), "robust": _stats(r_acc),
                        "robust_minus_natural": {**d, "ci95": [d["mean"] - half, d["mean"] + half]},
                        "exceeds_seed_noise": bool(len(seeds) > 1 and abs(d["mean"]) > half),
                    })
    return rows


def _claims(rows: list[dict]) -> dict:
    """What the rows say about the paper's claim, in numbers (no cherry-picking: every row counts)."""
    if not rows:
        return {}
    out = {}
    for model in sorted({r["model"] for r in rows}):
        rs = [r for r in rows if r["model"] == model]
        diffs = np.array([r["robust_minus_natural"]["mean"] for r in rs])
        sig = [r for r in rs if r["exceeds_seed_noise"]]
        sp = np.array([r["sparsity"] for r in rs])
        gi = np.array([r["gap_index"] for r in rs])
        slope_sp = float(np.polyfit(sp, diffs, 1)[0]) if len(set(sp)) > 1 else None
        slope_gap = float(np.polyfit(gi, diffs, 1)[0]) if len(set(gi)) > 1 else None
        by_mode = {m: float(np.mean([r["robust_minus_natural"]["mean"] for r in rs if r["mode"] == m]))
                   for m in sorted({r["mode"] for r in rs})}
        by_gap = {g: float(np.mean([r["robust_minus_natural"]["mean"] for r in rs if r["gap"] == g]))
                  for g in GAPS if any(r["gap"] == g for r in rs)}
        hi = [r for r in rs if r["sparsity"] >= 0.85]
        lo = [r for r in rs if r["sparsity"] <= 0.55]
        out[model] = {
            "rows": len(rs),
            "mean_robust_minus_natural": float(diffs.mean()),
            "rows_robust_better": int((diffs > 0).sum()),
            "rows_significantly_better": sum(r["robust_minus_natural"]["mean"] > 0 for r in sig),
            "rows_significantly_worse": sum(r["robust_minus_natural"]["mean"] < 0 for r in sig),
            "slope_vs_sparsity": slope_sp,
            "slope_vs_gap_index": slope_gap,
            "mean_diff_sparsity_le_0.55": float(np.mean([r["robust_minus_natural"]["mean"] for r in lo])) if lo else None,
            "mean_diff_sparsity_ge_0.85": float(np.mean([r["robust_minus_natural"]["mean"] for r in hi])) if hi else None,
            "mean_diff_by_mode": by_mode,
            "mean_diff_by_gap": by_gap,
        }
    return out


def _plot(rows: list[dict], cfg: StudyConfig, out: Path, name: str) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for model in sorted({r["model"] for r in rows}):
        for scheme in sorted({r["scheme"] for r in rows if r["model"] == model} - {"dense"}):
            fig, axes = plt.subplots(len(cfg.gaps), len(cfg.patterns), figsize=(4 * len(cfg.patterns), 2.8 * len(cfg.gaps)),
                                     squeeze=False, sharey="row")
            for gi, gap in enumerate(cfg.gaps):
                for pi, pattern in enumerate(cfg.patterns):
                    ax = axes[gi][pi]
                    for mode, color in zip(cfg.modes, ("tab:blue", "tab:orange")):
                        sel = [r for r in rows if r["model"] == model and r["gap"] == gap and r["mode"] == mode
                               and (r["scheme"] == "dense" or (r["scheme"] == scheme and r["pattern"] == pattern))]
                        sel.sort(key=lambda r: r["sparsity"])
                        if not sel:
                            continue
                        x = [100 * r["sparsity"] for r in sel]
                        for kind, ls in (("robust", "-"), ("natural", "--")):
                            ax.errorbar(x, [r[kind]["mean"] for r in sel], yerr=[r[kind]["std"] for r in sel],
                                        ls=ls, color=color, marker="o" if kind == "robust" else "s", ms=3, capsize=2,
                                        label=f"{kind} {mode}")
                        for r in sel:
                            if r["exceeds_seed_noise"]:
                                ax.annotate("*", (100 * r["sparsity"], r["robust"]["mean"]), color=color,
                                            fontsize=12, ha="center", va="bottom")
                    ax.set_title(f"{pattern}, gap: {gap}", fontsize=9)
                    ax.grid(alpha=0.3)
                    if gi == len(cfg.gaps) - 1:
                        ax.set_xlabel("sparsity of prunable weights (%)")
                    if pi == 0:
                        ax.set_ylabel("downstream test acc.")
            axes[0][0].legend(fontsize=7)
            eps_r = next(r["eps_robust"] for r in rows if r["model"] == model)
            fig.suptitle(f"{model}, {scheme} tickets: robust (eps={eps_r:g}, solid) vs natural (dashed), "
                         f"mean ± std over seeds\n* = robust-natural difference exceeds seed noise "
                         f"(paired 95 % t-interval excludes 0)", fontsize=10)
            fig.tight_layout()
            path = out / f"{name}_{model}_{scheme}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths


# ---------------------------------------------------------------------------- entry point

def run_study(out: Path, cfg: StudyConfig | None = None, *, workers: int = 2, cluster: str | None = None,
              command: str = "", report_dir: Path | None = None, name: str = "tickets_study") -> Path:
    """Run (or resume) the study under ``out`` and write the JSON + PNG report; returns the JSON path.

    ``workers`` local processes run its units, or the Dask scheduler at ``cluster`` does
    (``attnforge.jobs``; its workers must see ``out``)."""
    cfg = cfg or full_config()
    out = Path(out).absolute()     # the workers' working folder may not be this one
    report_dir = Path(report_dir) if report_dir else out
    missing = [m for m in cfg.models if m not in available_models()]
    if missing:
        raise ValueError(f"study models {missing} are not available here (available: {available_models()})")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, not {workers!r}")
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "study_config.json"
    if cfg_path.is_file() and json.loads(cfg_path.read_text()) != json.loads(json.dumps(cfg.to_json())):
        raise ValueError(f"{out} holds a study with another configuration ({cfg_path}); "
                         f"use another output folder or delete it")
    _write_json(cfg_path, cfg.to_json())
    started = datetime.datetime.now(datetime.timezone.utc)
    # Phase 1: pretrain every (model, eps, seed) and transfer the dense models -> choose eps on validation.
    eps_all = (0.0, *cfg.eps_candidates)
    _run_units([("dense", cfg, out, m, e, s) for m in cfg.models for e in eps_all for s in cfg.seeds],
               workers, "pretrain + dense transfer", cluster)
    selection = {m: select_eps(cfg, out, m) for m in cfg.models}
    # Phase 2: tickets of the natural and the chosen robust model.
    # Natural and robust of one seed side by side, so a partial run already has paired seeds.
    _run_units([("sweep", cfg, out, m, e, s) for m in cfg.models for s in cfg.seeds
                for e in (0.0, selection[m]["chosen"])], workers, "tickets + transfer", cluster)
    rows = aggregate(cfg, out, selection)
    pre = {}
    for m in cfg.models:
        for e in eps_all:
            cks = [load_checkpoint(_seed_dir(out, m, e, s) / "pretrained.pt") for s in cfg.seeds]
            pre[f"{m}/{e:g}"] = {k: _stats([c[k] for c in cks]) for k in ("source_val", "source_test", "source_val_robust")}
    report_dir.mkdir(parents=True, exist_ok=True)
    pngs = _plot(rows, cfg, report_dir, name)
    result = {
        "format": STUDY_FORMAT, "benchmark": "tickets", "command": command,
        "date": started.isoformat(timespec="seconds"),
        "wall_seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "workers": workers,
                 "cluster": cluster},
        "config": cfg.to_json(), "cache": str(out),
        "eps_selection": selection, "pretrained": pre,
        "claims": _claims(rows), "rows": rows, "plots": [str(p) for p in pngs],
    }
    path = report_dir / f"{name}.json"
    _write_json(path, result)
    return path
