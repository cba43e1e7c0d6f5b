"""Synthetic polarized attention masks: workloads for the accelerator's tests, benchmarks and demos
when no trained model is at hand (numpy only, seeded)."""

from __future__ import annotations

import numpy as np

from attnforge.formats.masks import MaskSet

__all__ = ["polarized_mask_set"]


def polarized_mask_set(layers: int, heads: int, n: int, sparsity: float, dense_share: float = 0.5,
                       seed: int = 0, nk: int | None = None):
    """A synthetic ``MaskSet`` shaped like ViTCoD's polarized masks.

    Per head: ``G`` global keys (kept by every query) carrying about ``dense_share``
    of the kept entries, the rest random with the density that brings the head to
    ``sparsity``; the global keys sit at random token positions (``order`` puts them first).
    """
    nk = nk or n
    rng = np.random.default_rng(seed)
    keep = np.zeros((layers, heads, n, nk), dtype=bool)
    order = np.zeros((layers, heads, nk), dtype=np.int32)
    n_global = np.zeros((layers, heads), dtype=np.int32)
    kept_per_row = (1.0 - sparsity) * nk
    for l in range(layers):
        for h in range(heads):
            g = int(min(nk, round(kept_per_row * dense_share)))
            perm = rng.permutation(nk).astype(np.int32)
            p = max(0.0, (kept_per_row - g) / max(nk - g, 1))
            polar = np.zeros((n, nk), dtype=bool)
            polar[:, :g] = True
            polar[:, g:] = rng.random((n, nk - g)) < p
            keep[l, h][:, perm] = polar
            order[l, h], n_global[l, h] = perm, g
    return MaskSet(keep, order, n_global, {"source": "synthetic polarized masks", "sparsity": sparsity,
                                            "dense_share": dense_share, "seed": seed})
