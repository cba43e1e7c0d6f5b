"""Robust and natural tickets of the ViTCoD model itself: the weights of the model the accelerator runs, pruned.

Issue 16, item 4. The rest of the tickets area draws tickets on a
5-class source task for its transfer study; the accelerator runs the 10-class
digits ViT with its ViTCoD attention masks. ``draw_vitcod_ticket`` draws a ticket
of *that* model, from a ViTCoD checkpoint (``vitcod finetune``'s, with its masks):

1. **robust** (``eps > 0``): adversarial fine-tuning of the dense-weight model,
   ``robust_epochs`` epochs of PGD training (Madry; the tickets area's ``pgd``,
   L-inf, ``steps`` steps, in pixel units: the digits in [0, 1] before the
   normalization ``(x - 0.3) / 0.4`` that ``vitcod.data`` applies);
   **natural** (``eps = 0``): no such step;
2. one-shot magnitude pruning (OMP, per layer) of every prunable layer
   (``tickets.models.prunable_layers``: the patch embedding and every block's
   ``qkv``, ``proj``, ``fc1``, ``fc2``; not the classifier) to ``level``
   (unstructured, channel or N:M);
3. fine-tuning of the ticket, ``epochs`` epochs with the weight masks fixed
   (adversarial with the same attack when ``eps > 0``).

The attention masks stay fixed throughout. The result is a ViTCoD checkpoint
(``attnforge.vitcod.ckpt/1``, the pruned weights exactly zero, the masks inside,
``ticket`` metadata) that every ViTCoD command reads, ``vitcod int-eval``
among them, and beside it ``<output>.csr.npz``, the kept weights as int8 CSR
(``tickets export``'s format, which ``scripts/vit_matmul_cycles.py --ticket``
runs on the matmul RTL). Only the bundled digits data (pixels in [0, 1]) is supported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from attnforge.errors import ConfigError, check_int

from .attacks import Attack
from .data import Split
from .export import export_model, save_ticket_csr
from .models import prunable_layers
from .names import PATTERNS
from .pruning import Level, apply_masks, one_shot, remove_masks, sparsity_of
from .train import evaluate, train

__all__ = ["TicketConfig", "draw_vitcod_ticket", "PixelSpace", "PIXEL_MEAN", "PIXEL_STD"]

#: ``attnforge.algo.vitcod.data.digits_datasets`` normalizes pixels in [0, 1] as ``(x - PIXEL_MEAN) / PIXEL_STD``.
PIXEL_MEAN, PIXEL_STD = 0.3, 0.4


@dataclass(frozen=True)
class TicketConfig:
    """How a ticket of a ViTCoD checkpoint is drawn (``attnforge vitcod ticket``'s options)."""

    pattern: str = "unstructured"
    level: str = "0.75"          # sparsity in [0, 1), or N:M such as 2:4 with pattern nm
    eps: float = 0.05            # PGD L-inf radius in pixel units; 0: a natural ticket
    steps: int = 3               # PGD steps
    robust_epochs: int = 10      # adversarial fine-tuning before pruning (eps > 0 only)
    epochs: int = 10             # fine-tuning of the ticket
    lr: float = 2e-4
    seed: int = 0

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ConfigError(f"--pattern {self.pattern!r} is not one of {', '.join(PATTERNS)}")
        try:
            Level.parse(self.pattern, self.level)
        except ValueError as exc:
            raise ConfigError(f"--level {self.level!r}: {exc}") from None
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 <= self.eps <= 1:
            raise ConfigError(f"--eps must be a number in [0, 1] (pixel units), not {self.eps!r}")
        check_int("--steps", self.steps, 1, 100)
        check_int("--robust-epochs", self.robust_epochs, 0)
        check_int("--epochs", self.epochs, 0)
        check_int("--seed", self.seed, 0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"--lr must be a number > 0, not {self.lr!r}")

    @property
    def attack(self) -> Attack | None:
        return Attack(eps=float(self.eps), steps=self.steps) if self.eps > 0 else None


class PixelSpace(nn.Module):
    """The ViTCoD model on pixels in [0, 1] (what the attacks perturb): normalizes, then runs ``vit``."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, x):
        return self.vit((x - PIXEL_MEAN) / PIXEL_STD)


def _pixels(dataset) -> Split:
    """A ``vitcod.data`` digits dataset (normalized) as a tickets ``Split`` of pixels in [0, 1]."""
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return Split(torch.stack(xs) * PIXEL_STD + PIXEL_MEAN, torch.as_tensor(ys, dtype=torch.long))


def _accuracies(model: PixelSpace, val: Split, attack: Attack | None, seed: int) -> dict:
    out = {"clean": 100.0 * evaluate(model, val)}
    if attack is not None:
        out["robust"] = 100.0 * evaluate(model, val, attack=attack, seed=seed)
    return out


def draw_vitcod_ticket(checkpoint, masks_path, output, cfg: TicketConfig = TicketConfig(), *,
                       limit: int | None = None, val_limit: int | None = None, progress: bool = True) -> dict:
    """Draw the ticket of ViTCoD ``checkpoint`` under the masks file ``masks_path`` and write it to ``output``
    (a ViTCoD checkpoint); returns the report (accuracies in % on the validation split, clean and, for a
    robust ticket, under the same PGD attack, at each step; sparsity per layer). ``limit`` and ``val_limit``
    cut the training and validation images (tests)."""
    from ..vitcod.prepare import apply_masks as apply_attention_masks, prepare
    from ..vitcod.train import save_checkpoint

    if not isinstance(cfg, TicketConfig):
        raise TypeError(f"cfg must be a TicketConfig, not {type(cfg).__name__}")
    for flag, path in (("--checkpoint", checkpoint), ("--masks", masks_path)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path} does not exist")
    torch.manual_seed(cfg.seed)
    vit, train_set, val_set = prepare(checkpoint, data="digits", seed=cfg.seed, limit=limit)
    if vit.blocks[0].attn.qk_ae is not None:
        raise ConfigError(f"--checkpoint {checkpoint} has Q/K auto-encoders; a ticket prunes the model the "
                          f"integer model and the matmul hardware run, which have none")
    attention = apply_attention_masks(vit, masks_path)
    model = PixelSpace(vit)
    train_px, val_px = _pixels(train_set), _pixels(val_set)
    if val_limit is not None:
        check_int("val_limit", val_limit, 1)
        val_px = Split(val_px.x[:val_limit], val_px.y[:val_limit])
    attack, level = cfg.attack, Level.parse(cfg.pattern, cfg.level)
    report = {"checkpoint": str(checkpoint), "masks": str(masks_path), "config": asdict(cfg),
              "attention_sparsity": attention.sparsity(), "training_images": len(train_px),
              "validation_images": len(val_px), "accuracy": {}}
    report["accuracy"]["start"] = _accuracies(model, val_px, attack, cfg.seed)
    if attack is not None and cfg.robust_epochs:
        train(model, train_px, epochs=cfg.robust_epochs, lr=cfg.lr, attack=attack, seed=cfg.seed,
              progress=progress, desc="adversarial fine-tuning")
        report["accuracy"]["robust_dense"] = _accuracies(model, val_px, attack, cfg.seed)
    masks = one_shot(vit, level, "layer")
    apply_masks(vit, masks)
    report["accuracy"]["pruned"] = _accuracies(model, val_px, attack, cfg.seed)
    if cfg.epochs:
        train(model, train_px, epochs=cfg.epochs, lr=cfg.lr, attack=attack, seed=cfg.seed + 1,
              progress=progress, desc="ticket fine-tuning")
    csr_layers = export_model(vit)            # int8 CSR of the kept weights, the masks' pattern
    remove_masks(vit)                         # the pruned weights become exact zeros in the weights
    report["accuracy"]["ticket"] = _accuracies(model, val_px, attack, cfg.seed)
    report["sparsity"] = sparsity_of(masks)
    report["layers"] = {name: float((mod.weight == 0).float().mean()) for name, mod in prunable_layers(vit).items()}
    meta = {"kind": "robust" if attack is not None else "natural", "pattern": level.pattern, "level": level.label,
            "scheme": "omp", "scope": "layer", "sparsity": report["sparsity"], **asdict(cfg)}
    save_checkpoint(output, vit.eval(), extra={"ticket": meta})
    csr_path = Path(output).with_suffix(".csr.npz")
    save_ticket_csr(csr_path, csr_layers, {"model": "vitcod", "ticket": meta, "source": str(output)})
    report["output"], report["csr"] = str(output), str(csr_path)
    return report
