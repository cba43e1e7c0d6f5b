"""The linearized-LM study in parts: softmax vs plain linear vs augmented vs the decode datapath's variant.

One **part** = one model and one seed: train the byte-level LM (``train.train_lm``)
for a fixed token budget, evaluate the fixed held-out windows every
``eval_every`` steps (the curve), and write a small JSON file
(``attnforge.linear_study_part/1``, atomically) named after the part. The report
(``assemble_report``) is built from whatever part files exist and says which
are missing; a part file whose ``study`` settings differ from the current ones
is *stale*: it counts as missing and is not used.

Models (``MODELS``):

* ``softmax``;
* ``flash`` and ``linformer``: the two best plain linear variants of the earlier
  200-step study (docs/linear-algo.md: 9.20 ± 0.05 and 9.69 ± 0.11 ppl, both
  well ahead of the kernel-family variants at 11.4-12.6 and the only two with
  a small seed spread);
* ``flash_aug``, ``linformer_aug``: the same with the full augmentation
  (chunk-local softmax over chunks of 16 + causal depthwise conv of 4 taps);
* ``hw``: the decode datapath's variant (``export.check_hardware_variant``):
  normalized ReLU features over all tokens + the causal conv, no chunk-local
  term (chunk 0);
* ``relu_aug``: ReLU features with the full augmentation (chunk 16): what the
  datapath would compute with the chunk-local term. ``hw`` against ``relu_aug``
  is the cost of leaving that term out, at the same budget and feature map.

Parts run seed-major (every model's seed 0, then seed 1, then seed 2), so a
study cut short still compares every model on the same seeds.

Converged (``converged``): the held-out loss moves less than 1 % over the last
quarter of the budget, i.e. (max - min) of the evaluations at steps >= 3/4 of
the budget, over the final loss, is below 0.01.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from attnforge.errors import ConfigError
from attnforge.formats.atomic import write_json_atomic, write_text_atomic
from attnforge.jobs import Job, run_jobs

__all__ = ["StudyConfig", "MODELS", "SEEDS", "PART_FORMAT", "part_ids", "parse_part", "part_path", "part_status",
           "next_missing", "converged", "run_part", "run_parts", "load_parts", "summarize", "assemble_report",
           "DEFAULT_PARTS_DIR", "DEFAULT_REPORT_DIR"]

PART_FORMAT = "attnforge.linear_study_part/1"
DEFAULT_REPORT_DIR = Path("docs/linear-study")
DEFAULT_PARTS_DIR = DEFAULT_REPORT_DIR / "parts"

#: model id -> LMConfig fields that differ from the common ones (augmentation: conv 4 taps, chunk 16).
MODELS: dict[str, dict] = {
    "softmax": {"attention": "softmax", "augment": False},
    "flash": {"attention": "flash", "augment": False},
    "linformer": {"attention": "linformer", "augment": False},
    "flash_aug": {"attention": "flash", "augment": True},
    "linformer_aug": {"attention": "linformer", "augment": True},
    "hw": {"attention": "relu", "augment": True, "chunk": 0},
    "relu_aug": {"attention": "relu", "augment": True},
}
#: the plain linear variants whose gap to softmax the augmentation should close: plain id -> augmented id.
PLAIN_TO_AUG = {"flash": "flash_aug", "linformer": "linformer_aug"}
SEEDS = (0, 1, 2)

DESCRIPTIONS = {
    "softmax": "softmax attention",
    "flash": "FLASH, plain",
    "linformer": "Linformer (causal form), plain",
    "flash_aug": "FLASH + augmentation (chunk-local softmax 16 + conv 4)",
    "linformer_aug": "Linformer + augmentation (chunk-local softmax 16 + conv 4)",
    "hw": "decode datapath's variant: relu_norm + conv 4, no chunk-local term",
    "relu_aug": "relu_norm + full augmentation (chunk-local softmax 16 + conv 4)",
}


@dataclass(frozen=True)
class StudyConfig:
    """Model size and token budget shared by every part (a part file records these as ``study``)."""

    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    block: int = 128
    conv_kernel: int = 4
    chunk: int = 16
    batch_size: int = 16
    steps: int = 480
    lr: float = 3e-3
    warmup: int = 20
    eval_every: int = 24
    eval_windows: int = 64
    train_bytes: int = 4_000_000
    val_bytes: int = 400_000

    def __post_init__(self):
        for name in ("n_layer", "n_head", "d_model", "block", "batch_size", "steps", "eval_every", "eval_windows"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"study {name} must be a positive integer, not {v!r}")
        if self.steps < 4 * self.eval_every:
            raise ConfigError(f"study steps={self.steps} must be at least 4 x eval_every={self.eval_every} "
                              f"(the last quarter needs two evaluations)")

    @property
    def token_budget(self) -> int:
        return self.steps * self.batch_size * self.block

    def lm_config(self, model: str, seed: int):
        from attnforge.algo.linear.model import LMConfig

        kw = {"n_layer": self.n_layer, "n_head": self.n_head, "d_model": self.d_model, "block_size": self.block,
              "conv_kernel": self.conv_kernel, "chunk": self.chunk, "seed": seed}
        kw.update(MODELS[model])
        return LMConfig(**kw)

    def train_config(self, seed: int):
        from attnforge.algo.linear.train import TrainConfig

        return TrainConfig(steps=self.steps, batch_size=self.batch_size, block=self.block, lr=self.lr,
                           warmup=self.warmup, seed=seed, eval_windows=self.eval_windows)


# ---------------------------------------------------------------------------- parts

def part_ids() -> list[str]:
    """Every part, seed-major: ``softmax-s0``, ``flash-s0``, ..., ``relu_aug-s2``."""
    return [f"{m}-s{s}" for s in SEEDS for m in MODELS]


def parse_part(part_id: str) -> tuple[str, int]:
    """``"flash_aug-s1"`` -> ``("flash_aug", 1)``; ``ConfigError`` naming the accepted ids otherwise."""
    if part_id not in part_ids():
        raise ConfigError(f"--part {part_id!r} is not a part of the study; accepted: {', '.join(part_ids())}")
    model, seed = part_id.rsplit("-s", 1)
    return model, int(seed)


def part_path(parts_dir, part_id: str) -> Path:
    return Path(parts_dir) / f"{part_id}.json"


def _read_part(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == PART_FORMAT else None


def part_status(parts_dir, cfg: StudyConfig = StudyConfig()) -> dict[str, str]:
    """Part id -> ``"done"``, ``"missing"``, ``"stale"`` (other study settings) or ``"invalid"`` (unreadable)."""
    status = {}
    for pid in part_ids():
        path = part_path(parts_dir, pid)
        if not path.exists():
            status[pid] = "missing"
            continue
        data = _read_part(path)
        if data is None:
            status[pid] = "invalid"
        elif data.get("study") != asdict(cfg) or data.get("part") != pid:
            status[pid] = "stale"
        else:
            status[pid] = "done"
    return status


def next_missing(parts_dir, cfg: StudyConfig = StudyConfig()) -> str | None:
    """The first part (in ``part_ids`` order) without a current result file, or None when all are done."""
    return next((pid for pid, st in part_status(parts_dir, cfg).items() if st != "done"), None)


def converged(curve, steps: int, tol: float = 0.01) -> tuple[bool, float]:
    """(converged, relative change) of a held-out curve ``[{"step", "loss"}, ...]`` over a budget of ``steps``.

    Relative change = (max - min) of the losses evaluated at steps >= 3/4 of the budget, over the final
    loss; converged iff it is below ``tol``. Fewer than two evaluations in the last quarter: ``ConfigError``.
    """
    tail = [p["loss"] for p in curve if p["step"] >= 0.75 * steps]
    if len(tail) < 2:
        raise ConfigError(f"curve has {len(tail)} evaluation(s) in the last quarter of {steps} steps; need 2")
    change = (max(tail) - min(tail)) / tail[-1]
    return change < tol, change


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_part(part_id: str, parts_dir=DEFAULT_PARTS_DIR, cfg: StudyConfig = StudyConfig(), threads: int = 1,
             corpus=None, progress: bool = True) -> dict:
    """Train and evaluate one part, write ``parts_dir/<part_id>.json`` atomically; returns the record."""
    import torch

    from attnforge.algo.linear.data import load_corpus
    from attnforge.algo.linear.train import evaluate, train_lm

    model_id, seed = parse_part(part_id)
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads must be a positive integer, not {threads!r}")
    torch.set_num_threads(threads)
    t_wall = time.perf_counter()
    started, load_start, commit = _now(), _loadavg(), _git_commit()   # the code this part runs
    if corpus is None:
        corpus = load_corpus(cfg.train_bytes, cfg.val_bytes)
    lm_cfg, tc = cfg.lm_config(model_id, seed), cfg.train_config(seed)
    tokens_per_step = cfg.batch_size * cfg.block
    curve = []
    eval_seconds = [0.0]

    def on_step(done, model, bar):
        if done % cfg.eval_every and done != cfg.steps:
            return
        t = time.perf_counter()
        ev = evaluate(model, corpus, cfg.block, cfg.eval_windows)
        eval_seconds[0] += time.perf_counter() - t
        curve.append({"step": done, "tokens": done * tokens_per_step, "loss": round(ev["loss"], 5)})
        bar.set_description(f"{part_id} held-out {ev['loss']:.3f}")

    model, log = train_lm(lm_cfg, corpus, tc, progress=progress, desc=part_id, on_step=on_step)
    final = evaluate(model, corpus, cfg.block, cfg.eval_windows)
    ok, change = converged(curve, cfg.steps)
    record = {
        "format": PART_FORMAT, "part": part_id, "model": model_id, "description": DESCRIPTIONS[model_id],
        "seed": seed, "study": asdict(cfg), "model_config": lm_cfg.to_dict(), "train_config": asdict(tc),
        "params": model.n_params(), "token_budget": cfg.token_budget, "tokens_per_step": tokens_per_step,
        "curve": curve,
        "final": {"loss": round(final["loss"], 5), "ppl": round(final["ppl"], 4),
                  "bits_per_byte": round(final["bits_per_byte"], 5), "eval_tokens": final["tokens"]},
        "final_train_loss": log[-1][1] if log else None,
        "converged": ok, "last_quarter_rel_change": round(change, 5),
        "wall_seconds": round(time.perf_counter() - t_wall, 1),
        "train_seconds": round(model.train_seconds - eval_seconds[0], 1),
        "eval_seconds": round(eval_seconds[0], 1),
        "train_tokens_per_second": round(cfg.token_budget / max(1e-9, model.train_seconds - eval_seconds[0]), 1),
        "torch_threads": torch.get_num_threads(), "git_commit": commit,
        "started": started, "finished": _now(), "loadavg_start": load_start, "loadavg_end": _loadavg(),
        "host": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                 "machine": platform.machine()},
        "corpus": corpus.meta,
    }
    write_json_atomic(part_path(parts_dir, part_id), record)
    return record


def run_parts(part_ids, parts_dir=DEFAULT_PARTS_DIR, *, threads: int = 1, workers: int = 1,
              cluster: str | None = None) -> list[dict]:
    """``run_part`` of each part as a job of ``attnforge.jobs.run_jobs``: one after the other in this
    process (``workers`` 1), on local processes, or on the Dask scheduler at ``cluster`` (its workers
    must see ``parts_dir``). Each part writes its own file, so a rerun skips the finished ones.
    Returns the records in the order of ``part_ids``."""
    parts_dir = Path(parts_dir).absolute()     # the workers' working folder may not be this one
    alone = workers == 1 and not cluster
    jobs = [Job(f"linear study part {pid}", _run_part_job, (pid, parts_dir, threads, alone)) for pid in part_ids]
    return run_jobs(jobs, workers=workers, cluster=cluster)


def _run_part_job(part_id: str, parts_dir: Path, threads: int, progress: bool) -> dict:
    return run_part(part_id, parts_dir, threads=threads, progress=progress)


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------- report

def load_parts(parts_dir, cfg: StudyConfig = StudyConfig()) -> dict[str, dict]:
    """Part id -> record, for the parts whose file is current (``part_status`` ``"done"``)."""
    return {pid: _read_part(part_path(parts_dir, pid))
            for pid, st in part_status(parts_dir, cfg).items() if st == "done"}


def _mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(parts: dict[str, dict]) -> dict:
    """Per model: seeds present, mean/std of the final held-out loss and ppl, converged count; the gaps."""
    models = {}
    for m in MODELS:
        recs = [parts[f"{m}-s{s}"] for s in SEEDS if f"{m}-s{s}" in parts]
        if not recs:
            continue
        loss_m, loss_s = _mean_std([r["final"]["loss"] for r in recs])
        ppl_m, ppl_s = _mean_std([r["final"]["ppl"] for r in recs])
        models[m] = {"seeds": [r["seed"] for r in recs], "loss_mean": loss_m, "loss_std": loss_s,
                     "ppl_mean": ppl_m, "ppl_std": ppl_s, "converged": sum(bool(r["converged"]) for r in recs),
                     "wall_seconds": [r["wall_seconds"] for r in recs]}
    gaps = {}
    soft = models.get("softmax")
    for plain, aug in PLAIN_TO_AUG.items():
        p, a = models.get(plain), models.get(aug)
        row = {"plain": plain, "augmented": aug}
        if soft and p:
            row["gap_loss"] = p["loss_mean"] - soft["loss_mean"]   # > 0: softmax ahead
            row["softmax_ahead"] = row["gap_loss"] > 0
            if a:
                row["closed_loss"] = p["loss_mean"] - a["loss_mean"]
                row["fraction_closed"] = row["closed_loss"] / row["gap_loss"] if row["gap_loss"] > 0 else None
        gaps[plain] = row
    hw_cost = None
    if "hw" in models and "relu_aug" in models:
        d = models["hw"]["loss_mean"] - models["relu_aug"]["loss_mean"]
        hw_cost = {"loss_delta": d, "ppl_ratio": math.exp(d)}
    return {"models": models, "gaps": gaps, "hw_cost": hw_cost}


def _plot(parts: dict, path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5))
    colors = dict(zip(MODELS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for pid, r in parts.items():
        xs = [p["tokens"] / 1e6 for p in r["curve"]]
        ys = [p["loss"] for p in r["curve"]]
        ax.plot(xs, ys, color=colors[r["model"]], lw=1, alpha=0.8,
                label=r["model"] if r["seed"] == min(summary["models"][r["model"]]["seeds"]) else None)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("held-out loss (nats/byte)")
    ax.set_title("held-out curves, every part (one line per seed)")
    ax.legend(fontsize=8)
    finals = [p["loss"] for r in parts.values() for p in r["curve"][len(r["curve"]) // 2:]]
    if finals:
        ax.set_ylim(min(finals) - 0.05, max(finals) + 0.15)
    ms = list(summary["models"])
    bx.bar(range(len(ms)), [summary["models"][m]["loss_mean"] for m in ms],
           yerr=[summary["models"][m]["loss_std"] for m in ms], color=[colors[m] for m in ms], capsize=4)
    bx.set_xticks(range(len(ms)), [f"{m}\n(n={len(summary['models'][m]['seeds'])})" for m in ms], fontsize=8)
    lo = min(summary["models"][m]["loss_mean"] - summary["models"][m]["loss_std"] for m in ms)
    hi = max(summary["models"][m]["loss_mean"] + summary["models"][m]["loss_std"] for m in ms)
    bx.set_ylim(lo - 0.05, hi + 0.05)
    bx.set_ylabel("final held-out loss, mean ± std over seeds")
    bx.set_title("final held-out loss")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(x, nd=4):
    return "n/a" if x is None else f"{x:.{nd}f}"


def assemble_report(parts_dir=DEFAULT_PARTS_DIR, out_dir=DEFAULT_REPORT_DIR, cfg: StudyConfig = StudyConfig(),
                    command: str = "attnforge linear study --report") -> dict:
    """Write ``out_dir/README.md`` (+ ``curves.png`` when any part exists) from the current part files."""
    out_dir = Path(out_dir)
    status = part_status(parts_dir, cfg)
    parts = load_parts(parts_dir, cfg)
    summary = summarize(parts)
    missing = [pid for pid, st in status.items() if st != "done"]
    L = ["# The linearized-LM study (issue 18, item 1)", "",
         f"Assembled by `{command}` at {_now()} from the part files in `{parts_dir}` "
         f"({len(parts)} of {len(status)} parts present). Each part: `attnforge linear study --part ID`; "
         "every number below comes from those JSON files.", "",
         "## Setup", "",
         f"Byte-level LM on the Python stdlib sources (`algo/linear/data.py`): {cfg.n_layer} layers, "
         f"d = {cfg.d_model}, {cfg.n_head} heads, context {cfg.block} bytes; augmentation: conv {cfg.conv_kernel} "
         f"taps, chunk {cfg.chunk}. Budget per part: {cfg.steps} steps x {cfg.batch_size} x {cfg.block} = "
         f"{cfg.token_budget:,} training tokens (AdamW, peak lr {cfg.lr}, warmup {cfg.warmup}, cosine to 10 %). "
         f"Held-out loss on the first {cfg.eval_windows} windows of {cfg.block} held-out bytes, every "
         f"{cfg.eval_every} steps. Converged = (max - min) of the held-out loss over the last quarter of the "
         "budget < 1 % of the final loss.", "",
         "| model | what |", "|---|---|"]
    L += [f"| `{m}` | {DESCRIPTIONS[m]} |" for m in MODELS]
    L += ["", "## Missing parts", ""]
    if missing:
        L.append(f"**{len(missing)} of {len(status)} parts are missing** (not run yet, or stale/invalid files): "
                 + ", ".join(f"`{p}`" + ("" if status[p] == "missing" else f" ({status[p]})") for p in missing)
                 + ". The numbers below use only the parts present; models with fewer than 3 seeds are marked.")
    else:
        L.append("None: all parts are present.")
    unconv = [pid for pid, r in parts.items() if not r["converged"]]
    if unconv:
        L += ["", f"**{len(unconv)} of {len(parts)} present parts did not converge** by the 1 % rule (list "
              "below): the comparison is at a fixed budget of "
              f"{cfg.token_budget:,} training tokens, **not at convergence**."]
    L += ["", "## Results", "",
          "| model | seeds | held-out loss (mean ± std) | ppl (mean ± std) | converged | wall time per part (s) |",
          "|---|---|---|---|---|---|"]
    for m, s in summary["models"].items():
        mark = "" if len(s["seeds"]) == len(SEEDS) else " (incomplete)"
        L.append(f"| `{m}` | {','.join(map(str, s['seeds']))}{mark} | {s['loss_mean']:.4f} ± {s['loss_std']:.4f} | "
                 f"{s['ppl_mean']:.3f} ± {s['ppl_std']:.3f} | {s['converged']}/{len(s['seeds'])} | "
                 f"{', '.join(f'{w:.0f}' for w in s['wall_seconds'])} |")
    L += ["", "## The paper's claim: does the augmentation close the linear-softmax gap?", "",
          "gap = plain linear loss - softmax loss (> 0: softmax ahead); fraction closed = "
          "(plain - augmented) / gap, on the mean held-out loss.", "",
          "| plain | augmented | gap (nats) | closed by the augmentation (nats) | fraction closed |",
          "|---|---|---|---|---|"]
    findings = []
    for plain, g in summary["gaps"].items():
        L.append(f"| `{plain}` | `{g['augmented']}` | {_f(g.get('gap_loss'))} | {_f(g.get('closed_loss'))} | "
                 f"{_f(g.get('fraction_closed'), 2)} |")
        if "gap_loss" not in g:
            findings.append(f"`{plain}` vs softmax: not evaluable yet (parts missing).")
        elif not g["softmax_ahead"]:
            involved = [p for p in parts if p.rsplit("-s", 1)[0] in ("softmax", plain)]
            n_unconv = sum(not parts[p]["converged"] for p in involved)
            findings.append(f"**Softmax is not ahead of `{plain}`** (gap {g['gap_loss']:.4f} nats): "
                            "the claim is refuted at this scale for this variant"
                            + (f" (at this budget: {n_unconv} of the {len(involved)} softmax and `{plain}` parts "
                               "did not converge)." if n_unconv else "."))
        elif g.get("fraction_closed") is not None:
            findings.append(f"Softmax is ahead of `{plain}` by {g['gap_loss']:.4f} nats; the augmentation closes "
                            f"{g['fraction_closed']:.0%} of that gap"
                            + (" (more than all of it: the augmented variant is ahead of softmax)."
                               if g["fraction_closed"] > 1 else "."))
    L += [""] + [f"- {f}" for f in findings]
    L += ["", "## What leaving out the chunk-local term costs (the decode datapath's variant)", ""]
    hc = summary["hw_cost"]
    if hc:
        L.append(f"`hw` (relu_norm + conv, chunk 0) against `relu_aug` (the same + chunk-local softmax 16), same "
                 f"budget: {hc['loss_delta']:+.4f} nats/byte held-out loss, perplexity x{hc['ppl_ratio']:.3f}"
                 f" (seeds {summary['models']['hw']['seeds']} / {summary['models']['relu_aug']['seeds']}). "
                 + ("Leaving the term out costs nothing at this budget: `hw` is *better*." if hc["loss_delta"] < 0
                    else "That is the cost of the RTL's missing chunk-local term."))
    else:
        L.append("Not evaluable yet: needs parts of both `hw` and `relu_aug`.")
    L += ["", "## Convergence", ""]
    if unconv:
        items = [f"`{p}` ({parts[p]['last_quarter_rel_change']:.1%})" for p in unconv]
        L.append("Not converged by the 1 % rule (last-quarter change): " + ", ".join(items) + ".")
    else:
        L.append("Every present part converged by the 1 % rule." if parts else "No parts yet.")
    if parts:
        _plot(parts, out_dir / "curves.png", summary)
        L += ["", "![held-out curves and final losses](curves.png)", "",
              "`curves.png`: left, the held-out loss of every present part against training tokens; right, the "
              "final held-out loss per model, mean ± std over the present seeds."]
    L += ["", "## Parts", "", "| part | final loss | ppl | converged | wall s | train tokens/s | threads | "
          "load avg at start | commit | finished |", "|---|---|---|---|---|---|---|---|---|---|"]
    for pid, r in parts.items():
        L.append(f"| `{pid}` | {r['final']['loss']:.4f} | {r['final']['ppl']:.3f} | {r['converged']} | "
                 f"{r['wall_seconds']:.0f} | {r['train_tokens_per_second']:.0f} | {r['torch_threads']} | "
                 f"{r['loadavg_start'][0] if r.get('loadavg_start') else 'n/a'} | {str(r['git_commit'])[:12]} | "
                 f"{r['finished']} |")
    text = "\n".join(L) + "\n"
    write_text_atomic(out_dir / "README.md", text)
    return {"report": str(out_dir / "README.md"), "parts_present": len(parts), "parts_missing": missing,
            "summary": summary}
