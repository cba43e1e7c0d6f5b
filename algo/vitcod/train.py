"""Training loops for the ViTCoD flow: dense training, mask fine-tuning, Q/K auto-encoder training.

One loop serves all three (nanoGPT-style: settings in a small dataclass):

* dense: no masks, no auto-encoder;
* mask fine-tuning: ``model.set_masks(keep)`` first, the masks stay fixed;
* auto-encoder: ``model.attach_qk_autoencoders()`` first; the loss is the task
  loss plus ``ae_weight`` times the Q/K reconstruction loss
  (:meth:`VisionTransformer.qk_reconstruction_loss`).

Checkpoints (``attnforge.vitcod.ckpt/1``, a ``torch.save`` dict of plain data,
loaded with ``weights_only=True`` through ``algo/checkpoint.py``) hold the config
(a dict), the weights (timm keys, plus ``blocks.N.attn.qk_ae.*`` when the
auto-encoder is on), the masks the model was fine-tuned with (a bool tensor),
the optimizer state, the epoch and the history, so an interrupted run resumes
where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_checkpoint_file, read_plain, save_checkpoint_file
from .data import loader, random_shift
from .vit import ViTConfig, VisionTransformer, load_timm_checkpoint

__all__ = ["TrainConfig", "train", "evaluate", "save_checkpoint", "load_checkpoint", "CKPT_FORMAT", "load_model"]

CKPT_FORMAT = "attnforge.vitcod.ckpt/1"


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    max_shift: int = 2          # random translation in pixels (digits); 0 for pre-processed real images
    ae_weight: float = 1.0      # weight of the Q/K reconstruction loss when auto-encoders are attached
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_shift", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (1 if name in ("batch_size",) else 0):
                raise ValueError(f"TrainConfig.{name} must be a non-negative int (batch_size >= 1), got {v!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "label_smoothing", "ae_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a non-negative number, got {v!r}")


@torch.no_grad()
def evaluate(model: VisionTransformer, dataset, batch_size: int = 256) -> dict:
    """Top-1 accuracy (in %) and mean loss on ``dataset``."""
    was_training = model.training
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for x, y in loader(dataset, batch_size, shuffle=False):
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        total += len(y)
    model.train(was_training)
    return {"accuracy": 100.0 * correct / total, "loss": loss / total, "n": total}


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * t))


def train(model: VisionTransformer, train_set, cfg: TrainConfig, val_set=None, *,
          checkpoint: str | Path | None = None, resume: bool = False, desc: str = "train",
          extra: dict | None = None) -> list[dict]:
    """Train ``model`` in place for ``cfg.epochs``; returns per-epoch history (val accuracy when given).

    With ``checkpoint`` the state is saved after every epoch (atomically); with
    ``resume`` an existing checkpoint of the same run continues from its epoch.
    """
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    batches = math.ceil(len(train_set) / cfg.batch_size)
    total, warmup = cfg.epochs * batches, int(cfg.warmup_epochs * batches)
    history, start = [], 0
    if resume and checkpoint and Path(checkpoint).is_file():
        ck = load_checkpoint_file(checkpoint, kind="ViTCoD checkpoint", format=CKPT_FORMAT)
        if ck.get("train") == asdict(cfg) and ck.get("optimizer") is not None:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            history, start = ck["history"], ck["epoch"]
            print(f"resuming {checkpoint} at epoch {start}/{cfg.epochs}")
    aug = torch.Generator().manual_seed(cfg.seed + 1)
    model.train()
    for epoch in range(start, cfg.epochs):
        bar = tqdm(loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch),
                   desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=not cfg.progress, unit="batch")
        sums = {"loss": 0.0, "recon": 0.0, "correct": 0, "n": 0}
        for i, (x, y) in enumerate(bar):
            for g in opt.param_groups:
                g["lr"] = _lr_at(epoch * batches + i, total, warmup, cfg.lr)
            x = random_shift(x, cfg.max_shift, aug)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            recon = model.qk_reconstruction_loss()
            full = loss + cfg.ae_weight * recon
            if not torch.isfinite(full):
                raise RuntimeError(f"{desc}: loss became {full.item()} at epoch {epoch + 1} batch {i}; "
                                   f"lower the learning rate (now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            full.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sums["loss"] += loss.item() * len(y)
            sums["recon"] += recon.item() * len(y)
            sums["correct"] += (logits.argmax(-1) == y).sum().item()
            sums["n"] += len(y)
            bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}")
        row = {"epoch": epoch + 1, "train_loss": sums["loss"] / sums["n"],
               "train_accuracy": 100.0 * sums["correct"] / sums["n"], "recon_loss": sums["recon"] / sums["n"]}
        if val_set is not None:
            row["val_accuracy"] = evaluate(model, val_set)["accuracy"]
        history.append(row)
        if cfg.progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
        if checkpoint:
            save_checkpoint(checkpoint, model, train=cfg, history=history, epoch=epoch + 1,
                            optimizer=opt.state_dict(), extra=extra)
    model.eval()
    return history


def save_checkpoint(path: str | Path, model: VisionTransformer, *, train: TrainConfig | None = None,
                    history=None, epoch: int = 0, optimizer=None, extra: dict | None = None) -> Path:
    """Write a ``attnforge.vitcod.ckpt/1`` checkpoint atomically; ``extra`` must be plain data too."""
    masks = None
    if model.blocks[0].attn.keep is not None:
        masks = torch.stack([a.keep.detach().cpu() for a in model.attentions])
    ae = model.blocks[0].attn.qk_ae
    ck = {"format": CKPT_FORMAT, "config": model.cfg.to_dict(), "model": model.state_dict(),
          "qk_ae_hidden": ae.hidden if ae is not None else None, "masks": masks,
          "train": asdict(train) if train else None, "history": history or [], "epoch": epoch,
          "optimizer": optimizer, **(extra or {})}
    return save_checkpoint_file(path, ck)


def load_checkpoint(path: str | Path) -> tuple[VisionTransformer, dict]:
    """Model (with its auto-encoders and masks) and the raw checkpoint dict."""
    ck = load_checkpoint_file(path, kind="ViTCoD checkpoint", format=CKPT_FORMAT)
    model = VisionTransformer(ViTConfig(**ck["config"]))
    if ck.get("qk_ae_hidden"):
        model.attach_qk_autoencoders(ck["qk_ae_hidden"])
    model.load_state_dict(ck["model"])
    if ck.get("masks") is not None:
        model.set_masks(torch.as_tensor(ck["masks"]))
    return model.eval(), ck


def load_model(path: str | Path, *, num_classes: int | None = None, img_size: int | None = None,
               num_heads: int | None = None) -> VisionTransformer:
    """An attnforge checkpoint, or a timm/DeiT ``.pth`` (classifier replaced when ``num_classes`` differs)."""
    ck = read_plain(path, kind="checkpoint")
    if isinstance(ck, dict) and ck.get("format") == CKPT_FORMAT:
        return load_checkpoint(path)[0]
    return load_timm_checkpoint(path, num_heads=num_heads, img_size=img_size, num_classes=num_classes)
