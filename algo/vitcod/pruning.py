"""ViTCoD's pruning criterion, a solver for a target sparsity, and the masks.npz it produces.

**Criterion** (ViTCoD): in each query row of a head's average attention map,
rank the keys by score and keep the highest ones until their cumulative mass
reaches ``threshold``, plus the one that crosses it. Equivalently an entry is
kept when the mass of the keys ranked above it is below ``threshold``. Ties
rank by key index. The CLS row and the CLS column are always kept (ViTCoD
keeps the class token's attention dense); their scores still count in the
ranking.

**Solver** (beyond ViTCoD, which leaves the threshold to the user): the
threshold whose masks reach a target average sparsity over all layers and
heads. Without polarization this is exact: every entry has the threshold at
which it enters (the mass ranked above it), so the threshold is a quantile of
those values. With polarization (whole global columns added to the mask) the
solver bisects on the threshold until the *final* mask, which is what the
hardware computes and the model is fine-tuned with, hits the target.

:func:`build_masks` runs criterion, solver and polarization and returns a
:class:`attnforge.formats.masks.MaskSet` plus a per-layer/per-head report.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from attnforge.errors import ConfigError
from attnforge.formats.masks import MaskSet
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import HeadShape, dense_baseline_shape, ideal_cycles

from .polarize import POLARIZE_MODES, default_accelerator, fit_accelerator, head_cost, polarize
from .stats import attention_statistics
from .train import evaluate

__all__ = ["entry_thresholds", "cumulative_mass_keep", "solve_threshold", "build_masks", "head_report",
           "SPARSITY_TOLERANCE", "model_masks"]

#: The solver's promise: achieved average sparsity within this of the target (absolute, 0.5 %).
SPARSITY_TOLERANCE = 0.005


def _check_maps(maps) -> torch.Tensor:
    maps = torch.as_tensor(maps)
    if maps.dim() < 2 or not maps.dtype.is_floating_point:
        raise ValueError(f"attention maps must be a float tensor [..., Nq, Nk], got {maps.dtype} {tuple(maps.shape)}")
    if (maps < 0).any() or not torch.isfinite(maps).all():
        raise ValueError("attention maps must be finite and non-negative (softmax outputs)")
    return maps


def entry_thresholds(maps, always_keep_cls: bool = True) -> torch.Tensor:
    """Per entry, the mass of the keys ranked above it in its row (``-inf`` for the always-kept CLS row/column).

    The criterion keeps an entry exactly when this value is below the threshold.
    """
    maps = _check_maps(maps).to(torch.float64)
    order = torch.sort(maps, dim=-1, descending=True, stable=True).indices
    sorted_vals = torch.gather(maps, -1, order)
    above = sorted_vals.cumsum(-1) - sorted_vals                          # exclusive cumulative mass
    c = torch.empty_like(maps).scatter_(-1, order, above)
    if always_keep_cls:
        c[..., 0, :] = -math.inf
        c[..., :, 0] = -math.inf
    return c


def cumulative_mass_keep(maps, threshold: float, always_keep_cls: bool = True) -> torch.Tensor:
    """ViTCoD's mask: bool, same shape as ``maps``; see the module docstring."""
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"cumulative-mass threshold must be in [0, 1], got {threshold!r}")
    return entry_thresholds(maps, always_keep_cls) < threshold


def _sparsity(keep: torch.Tensor) -> float:
    return 1.0 - keep.double().mean().item()


def solve_threshold(maps, target_sparsity: float, *, always_keep_cls: bool = True, polarizer=None,
                    tolerance: float = SPARSITY_TOLERANCE, iterations: int = 60) -> tuple[float, torch.Tensor]:
    """``(threshold, keep)`` whose average sparsity is within ``tolerance`` of ``target_sparsity``.

    ``polarizer``: None, or a function ``keep -> keep_final`` (e.g. adding whole
    global columns); the target then applies to the final mask. Raises
    ValueError naming the reachable range when the target is outside it.
    """
    if not isinstance(target_sparsity, (int, float)) or not 0 <= target_sparsity < 1:
        raise ValueError(f"target sparsity must be in [0, 1), got {target_sparsity!r}")
    c = entry_thresholds(maps, always_keep_cls)
    final = polarizer or (lambda k: k)

    def sparsity_at(p):
        k = final(c < p)
        return _sparsity(k), k

    s_max, _ = sparsity_at(0.0)                         # fewest entries: only the forced ones
    s_min, _ = sparsity_at(1.0 + 1e-9)                  # every entry
    if target_sparsity > s_max + tolerance or target_sparsity < s_min - tolerance:
        raise ValueError(f"target sparsity {target_sparsity:.4f} is out of reach for these maps: the criterion "
                         f"gives {s_min:.4f} (threshold 1) to {s_max:.4f} (threshold 0; the CLS row/column "
                         f"and global columns are always kept)")
    # Exact quantile for the criterion alone.
    free = torch.sort(c[torch.isfinite(c)].flatten()).values
    n_forced = int((~torch.isfinite(c)).sum())
    want_kept = int(round((1 - target_sparsity) * c.numel())) - n_forced
    if want_kept <= 0:
        p = 0.0
    elif want_kept >= free.numel():
        p = 1.0 + 1e-9
    else:
        lo, hi = free[want_kept - 1].item(), free[want_kept].item()
        p = 0.5 * (lo + hi) if hi > lo else hi
    s, keep = sparsity_at(p)
    if polarizer is not None and abs(s - target_sparsity) > 1e-4:
        # The final mask keeps at least what the criterion keeps, so the answer lies in [0, p]. The
        # cycle-minimizing polarization is not monotone in p: scan a grid for the bracket, then bisect.
        best = (abs(s - target_sparsity), p, keep)
        grid = [p * i / 48 for i in range(49)]
        values = []
        for q in grid:
            s_q, k_q = sparsity_at(q)
            values.append(s_q)
            if abs(s_q - target_sparsity) < best[0]:
                best = (abs(s_q - target_sparsity), q, k_q)
        brackets = [(grid[i], grid[i + 1]) for i in range(48)
                    if (values[i] - target_sparsity) * (values[i + 1] - target_sparsity) <= 0]
        for lo, hi in brackets[:4]:
            for _ in range(iterations):
                if best[0] < 1e-4:
                    break
                mid = 0.5 * (lo + hi)
                s_mid, k_mid = sparsity_at(mid)
                if abs(s_mid - target_sparsity) < best[0]:
                    best = (abs(s_mid - target_sparsity), mid, k_mid)
                if s_mid > target_sparsity:
                    lo = mid      # too sparse: keep more
                else:
                    hi = mid
        _, p, keep = best
        s = _sparsity(keep)
    if abs(s - target_sparsity) > tolerance:
        raise ValueError(f"solver reached sparsity {s:.4f} for target {target_sparsity:.4f} (tolerance "
                         f"{tolerance}); no threshold reaches it with this polarization (whole global columns "
                         f"add entries: try a higher global_threshold or the fixed mode)")
    return float(p), keep


def head_report(keep_pruned: torch.Tensor, keep: torch.Tensor, n_global: torch.Tensor, head_dim: int,
                accelerator: VitcodConfig | None) -> list[dict]:
    """Per layer and head: sparsity (criterion, final), G, dense share of kept entries, dense/sparse work
    (``2 d`` MACs per computed score), and with ``accelerator`` the cycles the exact cycle model predicts:
    ``cycles`` (back to back, the cycles-mode objective), ``cycles_alone``, ``ideal_cycles`` and the dense
    baseline's ``cycles_dense_baseline`` on the same accelerator."""
    L, H, nq, nk = keep.shape
    baseline = head_cost(accelerator, dense_baseline_shape(accelerator, nq, nk))[0] if accelerator else None
    rows = []
    for l in range(L):
        for h in range(H):
            g = int(n_global[l, h])
            kept = int(keep[l, h].sum())
            dense_entries = nq * g
            sparse_entries = kept - dense_entries
            dense_w, sparse_w = 2 * head_dim * dense_entries, 2 * head_dim * sparse_entries
            row = {
                "layer": l, "head": h,
                "sparsity_criterion": 1 - float(keep_pruned[l, h].double().mean()),
                "sparsity": 1 - kept / (nq * nk),
                "n_global": g,
                "kept": kept,
                "dense_share_of_kept": dense_entries / kept if kept else 0.0,
                "dense_macs": dense_w, "sparse_macs": sparse_w,
                "dense_work_share": dense_w / (dense_w + sparse_w) if dense_w + sparse_w else 0.0,
            }
            if accelerator is not None:
                # the CSR of the polarized head: its kept entries outside the G global columns
                shape = HeadShape(nq, nk, g, (keep[l, h].sum(1) - g).tolist())
                steady, alone = head_cost(accelerator, shape)
                row.update(cycles=steady, cycles_alone=alone, ideal_cycles=ideal_cycles(accelerator, shape),
                           cycles_dense_baseline=baseline)
            rows.append(row)
    return rows


def _accelerator(accelerator, head_dim: int, mode: str, nq: int, nk: int, nnz: int):
    """The accelerator of the report and of cycles mode, its buffers fitted to the masks (None in fixed
    mode when no accelerator was given and the default one cannot take ``head_dim``)."""
    if accelerator is None:
        try:
            accelerator = default_accelerator(head_dim)
        except ConfigError:
            if mode == "cycles":
                raise
            return None
    elif accelerator.head_dim != head_dim:
        raise ConfigError(f"the accelerator's head_dim={accelerator.head_dim} differs from the model's head "
                          f"dim {head_dim}")
    return fit_accelerator(accelerator, nq, nk, nnz)


def _solve_cycles(maps, target_sparsity: float, accelerator: VitcodConfig, global_threshold: float,
                  rounds: int = 6):
    """The threshold for ``target_sparsity`` of the final masks in cycles mode, with few exact G choices.

    The full solver calls the polarizer ~60 times, each choosing G for every head by the exact cycle
    model (seconds at N = 197): too slow. Instead, from the criterion's own threshold: choose G by
    cycles there; if the final masks hit the target, done; else solve the threshold with those G held
    (the columns still the most kept at each threshold; cheap) and choose G again. A threshold whose
    cycles-mode masks are within the tolerance is a solution of the same problem. After ``rounds``
    without one, the full solver decides (and names an unreachable target)."""
    c = entry_thresholds(maps)
    p, _ = solve_threshold(maps, target_sparsity)
    for _ in range(rounds):
        keep, _, g = polarize(c < p, mode="cycles", accelerator=accelerator, global_threshold=global_threshold)
        if abs(_sparsity(keep) - target_sparsity) <= SPARSITY_TOLERANCE:
            return p
        try:
            p, _ = solve_threshold(maps, target_sparsity,
                                   polarizer=lambda k, g=g: polarize(k, n_global=g)[0])
        except ValueError:
            break
    p, _ = solve_threshold(maps, target_sparsity, polarizer=lambda k: polarize(
        k, mode="cycles", accelerator=accelerator, global_threshold=global_threshold)[0])
    return p


def build_masks(maps, *, target_sparsity: float | None = None, threshold: float | None = None,
                polarize_mode: str = "fixed", global_threshold: float = 0.5,
                accelerator: VitcodConfig | None = None, head_dim: int = 64, meta: dict | None = None,
                predict_cycles: bool = True):
    """Criterion + solver + polarization -> ``(MaskSet, report)``.

    Give ``target_sparsity`` (solved, final mask) or ``threshold`` (ViTCoD's
    cumulative mass, used as is). ``maps``: mean attention ``[L, H, Nq, Nk]``.
    The mask set's ``keep`` includes the whole global columns: fine-tune with exactly it.
    ``accelerator``: the ViTCoD configuration (``head_dim`` the model's) that cycles mode chooses G
    for and whose cycles the report predicts [``default_accelerator(head_dim)``]; its buffers are
    enlarged to the masks (``fit_accelerator``), and the report records the configuration used.
    ``predict_cycles=False`` (fixed mode only): no accelerator, no cycles in the report.
    """
    maps = _check_maps(maps)
    if maps.dim() != 4:
        raise ValueError(f"attention maps must be [L, H, Nq, Nk], got shape {tuple(maps.shape)}")
    if (target_sparsity is None) == (threshold is None):
        raise ValueError("give exactly one of target_sparsity and threshold")
    if polarize_mode not in POLARIZE_MODES:
        raise ValueError(f"polarization mode must be one of {POLARIZE_MODES}, got {polarize_mode!r}")
    nq, nk = maps.shape[-2:]
    # most CSR entries a head can have: every entry kept, no global column
    if predict_cycles or polarize_mode == "cycles":
        acc = _accelerator(accelerator, head_dim, polarize_mode, nq, nk, nq * nk)
    else:
        acc = None

    def polarizer(k):
        return polarize(k, mode=polarize_mode, global_threshold=global_threshold, accelerator=acc)[0]

    if target_sparsity is None:
        p = threshold
    elif polarize_mode == "cycles":
        p = _solve_cycles(maps, target_sparsity, acc, global_threshold)
    else:
        p, _ = solve_threshold(maps, target_sparsity, polarizer=polarizer)
    keep_pruned = cumulative_mass_keep(maps, p)
    keep, order, n_global = polarize(keep_pruned, mode=polarize_mode, global_threshold=global_threshold,
                                     accelerator=acc)
    report = head_report(keep_pruned, keep, n_global, head_dim, acc)
    summary = {
        "criterion": "vitcod-cumulative-mass (CLS row/column always kept)",
        "threshold": p,
        "target_sparsity": target_sparsity,
        "sparsity_criterion": _sparsity(keep_pruned),
        "sparsity": _sparsity(keep),
        "polarize": {"mode": polarize_mode, "global_threshold": global_threshold,
                     "objective": ("fewest cycles of each head back to back on the accelerator "
                                   "(attnforge.hw.vitcod.cycles)" if polarize_mode == "cycles" else None)},
        "accelerator": dataclasses.asdict(acc) if acc is not None else None,
        "per_layer_sparsity": [_sparsity(keep[l]) for l in range(keep.shape[0])],
        "mean_n_global": float(n_global.double().mean()),
        "cycles": sum(r["cycles"] for r in report) if acc is not None else None,
    }
    ms = MaskSet(keep.numpy().astype(bool), order.numpy().astype(np.int32), n_global.numpy().astype(np.int32),
                 {**(meta or {}), **summary})
    return ms, {**summary, "heads": report}


def model_masks(model, train_set, *, target_sparsity: float | None = None, threshold: float | None = None,
                polarize_mode: str = "fixed", global_threshold: float = 0.5,
                accelerator: VitcodConfig | None = None, predict_cycles: bool = True, batch_size: int = 64,
                max_images: int | None = None, progress: bool = True, meta: dict | None = None, eval_set=None):
    """``(MaskSet, report)`` of ``model``: the mean of its own dense attention over ``train_set``
    (``max_images`` of them), then ``build_masks``. With ``eval_set`` the report also has the
    validation accuracy dense and with the masks (no fine-tuning); the model keeps the masks then.
    The job behind ``attnforge vitcod masks``."""
    model.set_masks(None)    # statistics of the model's own (dense) attention
    maps = attention_statistics(model, train_set, batch_size=batch_size, max_images=max_images, progress=progress)
    images = min(max_images or len(train_set), len(train_set))
    ms, report = build_masks(maps, target_sparsity=target_sparsity, threshold=threshold, polarize_mode=polarize_mode,
                             global_threshold=global_threshold, accelerator=accelerator, predict_cycles=predict_cycles,
                             head_dim=model.cfg.head_dim,
                             meta={"model": model.cfg.to_dict(), **(meta or {}), "images": images})
    if eval_set is not None:
        dense = evaluate(model, eval_set)["accuracy"]
        model.set_masks(torch.from_numpy(ms.keep))
        report["accuracy_dense"], report["accuracy_masked"] = dense, evaluate(model, eval_set)["accuracy"]
    return ms, report
