"""Drawing tickets: magnitude pruning masks in three sparsity patterns, one-shot or iterative.

Patterns (of every prunable layer's weight viewed as ``[out, in*kh*kw]``):

* ``unstructured``: the smallest-magnitude weights, ``round(s * n)`` of them
  per layer (``scope="layer"``) or over all prunable layers together (``"global"``);
* ``channel``: whole output channels (rows) by L2 norm, ``round(s * C)`` per
  layer; ``"global"`` ranks channels of all layers by their RMS weight and
  prunes whole channels until the pruned weights reach ``s`` of all weights (at least
  one channel per layer survives). A pruned channel's bias is masked too;
* ``nm``: N:M, in each group of M consecutive weights of a row at most N
  survive (the largest by magnitude); a last partial group keeps at most N.
  N:M is a per-group rule, so it has no global scope.

Masks go onto the model with ``torch.nn.utils.prune`` (``custom_from_mask``):
the module keeps ``weight_orig`` and a ``weight_mask`` buffer, and a forward
pre-hook uses ``weight_orig * weight_mask``, so gradients never revive a pruned
weight and the mask stays fixed through any training. Mask computation uses
``prune.L1Unstructured`` / ``prune.LnStructured`` and an ``NMStructured``
pruning method. Scores of already-pruned weights are forced to the bottom, so
a sparser mask drawn from a pruned model always contains the old one's pruned
weights, and the sparsity is exact.

Schemes: ``one_shot`` (prune the pretrained weights once) and ``imp``
(iterative magnitude pruning with rewinding: prune a little, rewind the
survivors to the pretrained weights or an early checkpoint, retrain on the
source task, prune again ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune
from tqdm import tqdm

from .models import prunable_layers
from .names import PATTERNS, SCOPES

__all__ = ["PATTERNS", "SCOPES", "Level", "NMStructured", "compute_masks", "apply_masks", "current_masks",
           "remove_masks", "load_weights_keep_masks", "sparsity_of", "one_shot", "imp", "imp_schedule"]



@dataclass(frozen=True)
class Level:
    """How sparse a ticket is: ``sparsity`` in [0, 1) for unstructured/channel, N:M for nm."""

    pattern: str
    sparsity: float = 0.0
    n: int | None = None
    m: int | None = None

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"sparsity pattern {self.pattern!r} is not one of {', '.join(PATTERNS)}")
        if self.pattern == "nm":
            for name, v in (("N", self.n), ("M", self.m)):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"N:M pattern needs integer {name} >= 1, not {v!r}")
            if self.n > self.m:
                raise ValueError(f"N:M pattern needs N <= M, not {self.n}:{self.m}")
            object.__setattr__(self, "sparsity", 1.0 - self.n / self.m)
        elif not (isinstance(self.sparsity, (int, float)) and 0.0 <= self.sparsity < 1.0):
            raise ValueError(f"sparsity must be a number in [0, 1), not {self.sparsity!r}")

    @classmethod
    def parse(cls, pattern: str, text: str) -> "Level":
        """``Level.parse("nm", "2:4")``, ``Level.parse("channel", "0.5")``."""
        if pattern == "nm":
            try:
                n, m = (int(v) for v in str(text).split(":"))
            except ValueError:
                raise ValueError(f"N:M level must look like '2:4', not {text!r}") from None
            return cls("nm", n=n, m=m)
        try:
            s = float(text)
        except ValueError:
            raise ValueError(f"sparsity must be a number in [0, 1), not {text!r}") from None
        return cls(pattern, sparsity=s)

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}" if self.pattern == "nm" else f"{self.sparsity:g}"


class NMStructured(prune.BasePruningMethod):
    """N:M pruning of a weight viewed as ``[out, -1]``: keep the N largest |w| of every M consecutive."""

    PRUNING_TYPE = "unstructured"  # the mask is elementwise (groups live inside rows)

    def __init__(self, n: int, m: int):
        self.n, self.m = n, m

    def compute_mask(self, t, default_mask):
        rows = t.reshape(t.shape[0], -1)
        cols = rows.shape[1]
        groups = -(-cols // self.m)
        pad = groups * self.m - cols
        score = (rows.abs() + 1.0) * default_mask.reshape(rows.shape)   # pruned weights score 0
        score = torch.nn.functional.pad(score, (0, pad), value=-1.0)     # padding scores lowest
        keep_idx = score.view(rows.shape[0], groups, self.m).topk(min(self.n, self.m), dim=2).indices
        mask = torch.zeros(rows.shape[0], groups, self.m, dtype=t.dtype)
        mask.scatter_(2, keep_idx, 1.0)
        mask = mask.view(rows.shape[0], -1)[:, :cols].reshape(t.shape)
        return mask * default_mask


def _weight(module: nn.Module) -> torch.Tensor:
    return module.weight.detach()  # with pruning applied this is weight_orig * weight_mask


def _weight_mask(module: nn.Module) -> torch.Tensor:
    return module.weight_mask.detach().clone() if hasattr(module, "weight_mask") else torch.ones_like(module.weight)


def _score(module: nn.Module) -> torch.Tensor:
    """|w| + 1 on surviving weights, 0 on pruned ones: pruned weights are always the first to go."""
    return (_weight(module).abs() + 1.0) * _weight_mask(module)


def compute_masks(model: nn.Module, level: Level, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Masks (``"<layer>.weight"``, and ``"<layer>.bias"`` for channel pruning) for the model's current weights."""
    if scope not in SCOPES:
        raise ValueError(f"pruning scope {scope!r} is not one of {', '.join(SCOPES)}")
    if level.pattern == "nm" and scope == "global":
        raise ValueError("N:M sparsity is a rule per group of M weights; it has no global scope (use scope='layer')")
    layers = prunable_layers(model)
    masks: dict[str, torch.Tensor] = {}
    s = float(level.sparsity)
    if level.pattern == "unstructured" and scope == "layer":
        for name, mod in layers.items():
            masks[f"{name}.weight"] = prune.L1Unstructured(amount=s).compute_mask(_score(mod), _weight_mask(mod))
    elif level.pattern == "unstructured":
        # What prune.global_unstructured does: one L1 ranking over all layers' weights concatenated.
        scores = [_score(mod).flatten() for mod in layers.values()]
        defaults = [_weight_mask(mod).flatten() for mod in layers.values()]
        flat = prune.L1Unstructured(amount=s).compute_mask(torch.cat(scores), torch.cat(defaults))
        start = 0
        for (name, mod), sc in zip(layers.items(), scores):
            masks[f"{name}.weight"] = flat[start:start + sc.numel()].view_as(mod.weight).clone()
            start += sc.numel()
    elif level.pattern == "channel" and scope == "layer":
        for name, mod in layers.items():
            w_mask = prune.LnStructured(amount=s, n=2, dim=0).compute_mask(_score(mod), _weight_mask(mod))
            masks[f"{name}.weight"] = w_mask
    elif level.pattern == "channel":
        masks.update(_global_channel_masks(layers, s))
    else:
        for name, mod in layers.items():
            masks[f"{name}.weight"] = NMStructured(level.n, level.m).compute_mask(_weight(mod), _weight_mask(mod))
    if level.pattern == "channel":
        for name, mod in layers.items():
            if mod.bias is not None:
                masks[f"{name}.bias"] = (masks[f"{name}.weight"].flatten(1).amax(dim=1) > 0).to(mod.bias.dtype)
    return masks


def _global_channel_masks(layers: dict[str, nn.Module], s: float) -> dict[str, torch.Tensor]:
    entries = []  # (score, layer, channel, size)
    total = 0
    for name, mod in layers.items():
        sc = _score(mod).flatten(1)
        alive = _weight_mask(mod).flatten(1).amax(dim=1) > 0
        rms = sc.pow(2).mean(dim=1).sqrt() * alive
        for c in range(sc.shape[0]):
            entries.append((float(rms[c]), name, c, sc.shape[1]))
        total += sc.numel()
    budget = round(s * total)
    alive_count = {name: int((_weight_mask(mod).flatten(1).amax(dim=1) > 0).sum()) for name, mod in layers.items()}
    keep = {name: (_weight_mask(mod).flatten(1).amax(dim=1) > 0).clone() for name, mod in layers.items()}
    pruned = sum(int((~k).sum()) * layers[n].weight[0].numel() for n, k in keep.items())
    for score, name, c, size in sorted(entries, key=lambda e: (e[0], e[1], e[2])):
        if not keep[name][c]:
            continue
        if pruned + size > budget or alive_count[name] <= 1:
            continue
        keep[name][c] = False
        alive_count[name] -= 1
        pruned += size
    out = {}
    for name, mod in layers.items():
        shape = [-1] + [1] * (mod.weight.dim() - 1)
        out[f"{name}.weight"] = keep[name].to(mod.weight.dtype).view(shape).expand_as(mod.weight).clone()
    return out


def remove_masks(model: nn.Module) -> nn.Module:
    """Fold masks into the weights and drop the pruning reparametrization."""
    for mod in prunable_layers(model).values():
        for pname in ("weight", "bias"):
            if prune.is_pruned(mod) and hasattr(mod, f"{pname}_mask"):
                prune.remove(mod, pname)
    return model


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Put ``masks`` onto the model (replacing any masks it had) with ``prune.custom_from_mask``."""
    layers = prunable_layers(model)
    unknown = sorted({k.rsplit(".", 1)[0] for k in masks} - set(layers))
    if unknown:
        raise ValueError(f"masks name layers {unknown} that are not prunable layers of the model "
                         f"({', '.join(layers)})")
    for key, mask in masks.items():
        lname, pname = key.rsplit(".", 1)
        mod = layers[lname]
        if tuple(mask.shape) != tuple(getattr(mod, pname).shape):
            raise ValueError(f"mask {key} has shape {tuple(mask.shape)}, the parameter {tuple(getattr(mod, pname).shape)}")
        if hasattr(mod, f"{pname}_mask"):
            prune.remove(mod, pname)
        prune.custom_from_mask(mod, pname, mask.to(getattr(mod, pname).dtype))
    return model


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks now on the model (only parameters that have one)."""
    out = {}
    for lname, mod in prunable_layers(model).items():
        for pname in ("weight", "bias"):
            if hasattr(mod, f"{pname}_mask"):
                out[f"{lname}.{pname}"] = getattr(mod, f"{pname}_mask").detach().clone()
    return out


def load_weights_keep_masks(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Rewind: load dense weights ``state`` (plain names) into a possibly pruned model, masks unchanged."""
    own = dict(model.named_parameters())
    for key, value in state.items():
        target = own.get(key + "_orig", own.get(key))
        if target is None:
            raise ValueError(f"rewind state has {key!r}, which the model does not have")
        with torch.no_grad():
            target.copy_(value)
    return model


def sparsity_of(masks: dict[str, torch.Tensor], weights_only: bool = True) -> float:
    """Fraction of masked-out entries over all (weight) masks."""
    sel = [m for k, m in masks.items() if not weights_only or k.endswith(".weight")]
    total = sum(m.numel() for m in sel)
    return 1.0 - sum(float(m.sum()) for m in sel) / max(1, total)


def one_shot(model: nn.Module, level: Level, scope: str = "layer") -> dict[str, torch.Tensor]:
    """One-shot magnitude pruning of the model's current (pretrained) weights."""
    return compute_masks(model, level, scope)


def imp_schedule(levels: list[Level], rounds_per_level: int = 2) -> list[Level]:
    """Pruning rounds of IMP: ``rounds_per_level`` rounds up to each target level, geometric in density.

    For N:M, intermediate rounds keep M and use more survivors (e.g. 3:4 then 2:4);
    levels are visited in order of increasing sparsity.
    """
    if isinstance(rounds_per_level, bool) or not isinstance(rounds_per_level, int) or rounds_per_level < 1:
        raise ValueError(f"rounds_per_level must be an integer >= 1, not {rounds_per_level!r}")
    levels = sorted(levels, key=lambda lv: lv.sparsity)
    rounds: list[Level] = []
    prev_density = 1.0
    for lv in levels:
        density = 1.0 - lv.sparsity
        for r in range(1, rounds_per_level):
            d = prev_density * (density / prev_density) ** (r / rounds_per_level)
            if lv.pattern == "nm":
                n = max(lv.n, min(lv.m, round(d * lv.m)))
                cand = Level("nm", n=n, m=lv.m)
            else:
                cand = Level(lv.pattern, sparsity=1.0 - d)
            if (not rounds or cand.sparsity > rounds[-1].sparsity) and cand.sparsity < lv.sparsity:
                rounds.append(cand)
        if not rounds or lv != rounds[-1]:
            rounds.append(lv)
        prev_density = density
    return rounds


def imp(model: nn.Module, levels: list[Level], *, retrain: Callable[[nn.Module, int], None],
        rewind_state: dict[str, torch.Tensor], scope: str = "layer", rounds_per_level: int = 2,
        progress: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Iterative magnitude pruning with rewinding; returns ``{level.label: masks}`` for every target level.

    ``model`` starts from trained (pretrained) weights. Each round: prune to the
    round's sparsity by magnitude of the current weights, rewind the surviving
    weights to ``rewind_state`` (the pretrained weights, or an early checkpoint),
    and, unless it was the last round, ``retrain(model, round)`` on the source
    task with the masks fixed. A ticket is (its masks, ``rewind_state``).
    """
    targets = {lv.label for lv in levels}
    out = {}
    schedule = imp_schedule(levels, rounds_per_level)
    for r, lv in enumerate(tqdm(schedule, desc="IMP", unit="round", disable=not progress, leave=False)):
        masks = compute_masks(model, lv, scope)
        apply_masks(model, masks)
        load_weights_keep_masks(model, rewind_state)
        if lv.label in targets:
            out[lv.label] = {k: v.clone() for k, v in masks.items()}
        if r + 1 < len(schedule):
            retrain(model, r)
    return out
