"""Training and evaluation of the byte-level LMs (nanoGPT-style loop, AdamW, cosine schedule).

Every run is seeded (model init, batch order) and can write a checkpoint
``{"format": "attnforge.linear_lm/1", "config", "model", "optimizer", "step", "log"}``
that ``load_checkpoint`` reads back (and ``train_lm(resume=...)`` continues). The
dict holds plain data only (configs as dicts), saved atomically and loaded with
``weights_only=True`` (``algo/checkpoint.py``): a foreign file is refused, not run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, asdict
from pathlib import Path

import torch
from tqdm import tqdm

from attnforge.algo.checkpoint import load_checkpoint_file, save_checkpoint_file
from attnforge.algo.linear.data import Corpus
from attnforge.algo.linear.model import LinearLM, LMConfig
from attnforge.errors import ConfigError

__all__ = ["TrainConfig", "train_lm", "evaluate", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "attnforge.linear_lm/1"


@dataclass
class TrainConfig:
    steps: int = 200
    batch_size: int = 16
    block: int = 128
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.01
    seed: int = 0
    eval_windows: int = 64

    def __post_init__(self):
        for name in ("steps", "batch_size", "block", "eval_windows"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, not {self.lr}")


def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def evaluate(model: LinearLM, corpus: Corpus, block: int, max_windows: int = 64, batch: int = 16) -> dict:
    """Mean next-byte cross-entropy (nats) and perplexity on the fixed held-out windows."""
    was = model.training
    model.eval()
    x, y = corpus.eval_windows(min(block, model.cfg.block_size), max_windows)
    total, count = 0.0, 0
    for i in range(0, len(x), batch):
        _, loss = model(x[i: i + batch], y[i: i + batch])
        total += loss.item() * y[i: i + batch].numel()
        count += y[i: i + batch].numel()
    model.train(was)
    nll = total / count
    return {"loss": nll, "ppl": math.exp(nll), "bits_per_byte": nll / math.log(2), "tokens": count}


def save_checkpoint(path, model: LinearLM, optimizer=None, step: int = 0, log=None, train_cfg=None) -> Path:
    return save_checkpoint_file(path, {  # atomic: never a half-written checkpoint
        "format": CHECKPOINT_FORMAT, "config": model.cfg.to_dict(), "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else None, "step": step,
        "log": log or [], "train_config": asdict(train_cfg) if train_cfg else None})


def load_checkpoint(path) -> tuple[LinearLM, dict]:
    ck = load_checkpoint_file(path, kind="linear LM checkpoint", format=CHECKPOINT_FORMAT)
    model = LinearLM(LMConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    return model, ck


def train_lm(model_cfg: LMConfig, corpus: Corpus, cfg: TrainConfig, checkpoint=None, resume=None,
             progress: bool = True, desc: str | None = None, on_step=None) -> tuple[LinearLM, list]:
    """Train from scratch (or from ``resume``); returns the model and a log of (step, loss) rows.

    ``on_step(steps_done, model, bar)``, if given, is called after every optimizer step (with the
    step count so far, the model in training mode and the progress bar); it may evaluate the model
    (``evaluate`` restores training mode) to log a held-out curve, and its return value is ignored.
    """
    torch.manual_seed(cfg.seed)
    model = LinearLM(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    start, log = 0, []
    if resume is not None:
        loaded, ck = load_checkpoint(resume)
        model.load_state_dict(loaded.state_dict())
        if ck.get("optimizer"):
            opt.load_state_dict(ck["optimizer"])
        start, log = ck["step"], ck["log"]
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * start)
    block = min(cfg.block, model_cfg.block_size)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc=desc or model_cfg.label, disable=not progress, leave=False)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        x, y = corpus.batch("train", cfg.batch_size, block, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if not math.isfinite(loss.item()):
            raise ConfigError(f"{model_cfg.label}: training loss became {loss.item()} at step {step}")
        log.append((step, round(loss.item(), 4)))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if on_step is not None:
            on_step(step + 1, model, bar)
        if checkpoint and (step + 1) % 100 == 0:
            save_checkpoint(checkpoint, model, opt, step + 1, log, cfg)
    if checkpoint:
        save_checkpoint(checkpoint, model, opt, cfg.steps, log, cfg)
    model.train_seconds = time.perf_counter() - t0
    model.eval()
    return model, log
