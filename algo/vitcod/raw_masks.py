"""Raw boolean attention masks (``.npy``) -> polarized ``masks.npz``: ``attnforge vitcod polarize``.

Masks pruned elsewhere (ViTCoD's released DeiT masks, another tool) come as
one boolean array ``[L, H, Nq, Nk]`` or ``[H, Nq, Nk]`` (one layer). ViTCoD's
files mark the *pruned* entries (True = pruned); ``pruned=True`` inverts them.
Polarization is ViTCoD's fixed rule (:func:`~attnforge.algo.vitcod.polarize.polarize`,
``mode="fixed"``) with the threshold as a count of rows: a key column kept
by at least ``global_threshold`` query rows becomes global and is made whole
(kept by every row); global keys come first in ``order`` (by decreasing
count, ties by index), then the others by index. The default threshold is
``Nq // 2 + 1``, i.e. more than half of the rows, as ``vitcod masks``'s
default ``--global-threshold 0.5``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnforge.errors import ArtifactError, ConfigError, MissingArtifactError, check_int
from attnforge.formats.masks import MaskSet

__all__ = ["load_raw_masks", "default_global_threshold", "polarize_raw"]


def load_raw_masks(path, *, pruned: bool = False) -> np.ndarray:
    """The raw masks of ``path`` as bool ``[L, H, Nq, Nk]`` (True = kept).

    ``path`` is a ``.npy`` file (no pickles) holding a bool array, or numbers
    that are all 0 or 1, of 3 dimensions ``[H, Nq, Nk]`` (one layer) or 4
    ``[L, H, Nq, Nk]``, none of them empty. ``pruned``: True marks pruned
    entries (ViTCoD's files), so the array is inverted. Anything else raises
    ``ArtifactError`` naming the file (``MissingArtifactError`` if absent).
    """
    path = Path(path)
    if path.suffix != ".npy":
        raise ArtifactError(f"{path}: raw masks must be a .npy file (numpy.save of a bool array), "
                            f"not '{path.suffix or 'no suffix'}'")
    if not path.exists():
        raise MissingArtifactError(f"{path}: no such file")
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactError(f"{path}: not a readable .npy array ({e})") from None
    return _as_keep(raw, path) ^ bool(pruned)


def _as_keep(raw: np.ndarray, source) -> np.ndarray:
    """``raw`` checked and converted to bool ``[L, H, Nq, Nk]``; ``ArtifactError`` names ``source``."""
    if raw.ndim not in (3, 4):
        raise ArtifactError(f"{source}: raw masks must have 3 dimensions [H, Nq, Nk] or 4 [L, H, Nq, Nk], "
                            f"got {raw.ndim} (shape {list(raw.shape)})")
    if raw.size == 0:
        raise ArtifactError(f"{source}: raw masks are empty (shape {list(raw.shape)}); every dimension "
                            f"must be at least 1")
    if raw.dtype != np.bool_:
        if raw.dtype.kind not in "iuf":
            raise ArtifactError(f"{source}: raw masks must be bool or numbers 0/1, got dtype {raw.dtype}")
        if not np.isin(raw, (0, 1)).all():
            bad = raw[~np.isin(raw, (0, 1))].flat[0]
            raise ArtifactError(f"{source}: raw masks must hold only 0 and 1 (or be bool), found {bad!r}")
        raw = raw != 0
    return raw if raw.ndim == 4 else raw[None]


def default_global_threshold(nq: int) -> int:
    """The default global threshold in rows: ``nq // 2 + 1`` (a column kept by more than half of the rows)."""
    return nq // 2 + 1


def polarize_raw(keep: np.ndarray, global_threshold: int | None = None, meta: dict | None = None, *,
                 accelerator=None):
    """``(MaskSet, report)``: ``keep`` (bool ``[L, H, Nq, Nk]``, True = kept) polarized.

    Columns kept by at least ``global_threshold`` rows (an int in ``[1, Nq]``;
    default :func:`default_global_threshold`) become global and whole, first
    in ``order``. With ``accelerator`` (a ``VitcodConfig``), G is instead chosen
    per head for that accelerator by its exact cycle model (``polarize``'s
    cycles mode; the fixed rule's G is one of the candidates), and the report
    adds the accelerator and each head's predicted cycles. ``meta`` is added to
    the masks' meta. The report holds the raw and final sparsity per layer and
    overall, ``G`` per head and the rows left with no key (the accelerator
    accepts them; their output is zero).
    """
    import torch

    from .polarize import polarize

    nq = keep.shape[-2]
    if global_threshold is None:
        global_threshold = default_global_threshold(nq)
    try:
        check_int("global_threshold", global_threshold, 1, nq)
    except ConfigError as e:
        raise ConfigError(f"{e} (a count of query rows: a column kept by at least that many becomes global; "
                          f"the masks have Nq = {nq})") from None
    # counts > N - 1/2 of the rows  <=>  counts >= N, for integer counts.
    mode = "fixed" if accelerator is None else "cycles"
    final, order, n_global = polarize(torch.from_numpy(keep), mode=mode, accelerator=accelerator,
                                      global_threshold=(global_threshold - 0.5) / nq)
    final = final.numpy()
    report = _report(keep, final, n_global.numpy(), global_threshold)
    report["polarize"] = mode
    if accelerator is not None:
        report.update(_predicted_cycles(final, n_global.numpy(), accelerator))
    ms = MaskSet(final, order.numpy().astype(np.int32), n_global.numpy().astype(np.int32),
                 {**(meta or {}), "source": "raw masks polarized (algo/vitcod/raw_masks.polarize_raw)",
                  **{k: report[k] for k in ("global_threshold", "sparsity_raw", "sparsity",
                                            "per_layer_sparsity_raw", "per_layer_sparsity")}})
    return ms, report


def _predicted_cycles(final: np.ndarray, n_global: np.ndarray, accelerator) -> dict:
    """The accelerator (enlarged to the masks) and each head's steady-state cycles on it."""
    import dataclasses

    from attnforge.hw.vitcod.cycles import HeadShape

    from .polarize import fit_accelerator, head_cost

    L, H, nq, nk = final.shape
    cfg = fit_accelerator(accelerator, nq, nk, int(final.sum((-2, -1)).max()))
    cycles = [[int(head_cost(cfg, HeadShape(nq, nk, int(n_global[l, h]),
                                            (final[l, h].sum(-1) - int(n_global[l, h])).tolist()))[0])
               for h in range(H)] for l in range(L)]
    return {"accelerator": dataclasses.asdict(cfg), "cycles": cycles, "total_cycles": int(np.sum(cycles))}


def _report(raw: np.ndarray, final: np.ndarray, n_global: np.ndarray, global_threshold: int) -> dict:
    """Sparsity before and after polarization (per layer and overall), G per head, rows without keys."""
    L, H, nq, nk = raw.shape
    return {"shape": [L, H, nq, nk], "global_threshold": int(global_threshold),
            "sparsity_raw": 1.0 - float(raw.mean()), "sparsity": 1.0 - float(final.mean()),
            "per_layer_sparsity_raw": [1.0 - float(x.mean()) for x in raw],
            "per_layer_sparsity": [1.0 - float(x.mean()) for x in final],
            "n_global": n_global.astype(int).tolist(), "mean_n_global": float(n_global.mean()),
            "empty_rows": int((~final.any(-1)).sum())}
