"""Synthetic polarized attention masks: workloads for the accelerator's tests, benchmarks and demos
when no trained model is at hand (numpy only, seeded)."""

from __future__ import annotations

import numpy as np

from attnforge.errors import ConfigError, check_int
from attnforge.formats.masks import MaskSet

__all__ = ["polarized_mask_set", "real_shaped_mask_set"]

#: Largest lognormal spread ``real_shaped_mask_set`` takes (weights stay within float64 for any draw).
MAX_SIGMA = 5.0


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


# ------------------------------------------------------------------------------------------ real-shaped masks

def real_shaped_mask_set(layers: int, heads: int, n: int, sparsity, seed: int = 0, nk: int | None = None, *,
                         global_range: tuple[int, int] | None = None, p_no_global: float = 0.0,
                         row_sigma: float = 0.8, column_sigma: float = 1.0, head_sigma: float = 0.25,
                         max_dense_share: float = 0.5) -> MaskSet:
    """A seeded ``MaskSet`` shaped like the masks of a real pruned ViT (ViTCoD's DeiT masks).

    What real pruned DeiT masks look like, and what this models: a few global
    columns per head (1 to 10 of 197 keys), a sparse part that holds most of
    the kept entries, heavy-tailed sparse row lengths (one key to ~100), and a
    sparsity that differs from layer to layer (35 % to 95 %). The model, per
    layer ``l`` with target sparsity ``s_l`` (numpy ``default_rng(seed)``,
    drawn layer by layer, head by head):

    1. **Layer budget.** ``round((1 - s_l) * heads * Nq * Nk)`` kept entries,
       shared among the heads in proportion to lognormal weights
       ``exp(head_sigma * z)`` (``z`` standard normal), each head keeping
       between ``Nq`` (one key per row) and ``Nq * Nk`` entries.
    2. **Global columns.** ``G`` uniform in ``global_range`` (default
       ``(1, 10)``, at most ``Nk - 1``); with probability ``p_no_global`` the
       head has ``G = 0``. ``G`` is lowered where the head's budget cannot
       carry it: the dense part ``Nq * G`` is at most ``max_dense_share`` of
       the head's kept entries (so the sparse part dominates) and leaves every
       row at least one sparse key. The ``G`` keys sit at random token
       positions; their columns are whole (kept by every row).
    3. **Sparse row lengths.** The rest of the head's budget is shared among
       the rows in proportion to lognormal weights ``exp(row_sigma * z)``,
       each row between 1 and ``Nk - G`` keys (clipped proportional share,
       rounded by largest remainder). The default ``row_sigma = 0.8`` gives,
       at 90 % sparsity and N = 197, sparse rows of 1 to ~100 keys, the
       longest about 9x the median one (4.5x to 19x over heads).
    4. **Sparse columns.** Each row draws its keys among the non-global
       columns without replacement, with probability in proportion to
       per-head lognormal column weights ``exp(column_sigma * z)`` (popular
       keys that many, but not all, rows keep; Gumbel top-k sampling).

    ``order`` lists the global keys first (by token index), then the others by
    token index, as :func:`~attnforge.algo.vitcod.polarize.polarize` does.

    The sparsity reached is exact up to rounding the layer budget: every
    layer's sparsity is within ``0.5 / (heads * Nq * Nk)`` of its target (for
    N = 197 and one head, 1.3e-5; the tests check 0.1 percentage point).

    Parameters
    ----------
    layers, heads, n : int
        Shape; ``n`` is the number of queries ``Nq``.
    sparsity : float or sequence of ``layers`` floats
        Target fraction of pruned entries per layer, each in ``(0, 1 - 1/Nk]``
        (every row keeps at least one key).
    seed : int
        Seed of every draw; the same arguments give the same masks.
    nk : int, optional
        Number of keys (default ``n``); ``nk != n`` gives non-square heads.
    global_range : (int, int), optional
        Inclusive range of ``G`` before the budget caps, within ``[0, Nk - 1]``.
    p_no_global : float
        Probability in [0, 1] that a head has no global column.
    row_sigma, column_sigma, head_sigma : float
        Lognormal spreads (in [0, 5]; 0 means equal) of the rows' sparse lengths,
        the columns' popularity and the heads' share of the layer budget.
    max_dense_share : float
        Largest share in [0, 1] of a head's kept entries in its global columns.

    Raises ``ConfigError`` naming the parameter, the value and what is accepted.
    """
    nk = n if nk is None else nk
    spec = _real_spec(layers, heads, n, nk, sparsity, seed, global_range, p_no_global, row_sigma, column_sigma,
                      head_sigma, max_dense_share)
    rng = np.random.default_rng(seed)
    keep = np.zeros((layers, heads, n, nk), dtype=bool)
    order = np.zeros((layers, heads, nk), dtype=np.int32)
    n_global = np.zeros((layers, heads), dtype=np.int32)
    for l, s in enumerate(spec["sparsity"]):
        budgets = _allocate(round((1.0 - s) * heads * n * nk), _lognormal(rng, heads, head_sigma), n, n * nk)
        for h, budget in enumerate(budgets):
            keep[l, h], order[l, h], n_global[l, h] = _real_head(rng, n, nk, int(budget), spec)
    meta = {"source": "synthetic real-shaped masks (algo/vitcod/synthetic.real_shaped_mask_set)", **spec,
            "per_layer_sparsity": [1.0 - float(k.mean()) for k in keep]}
    return MaskSet(keep, order, n_global, meta)


def _real_spec(layers, heads, n, nk, sparsity, seed, global_range, p_no_global, row_sigma, column_sigma,
               head_sigma, max_dense_share) -> dict:
    """Check the parameters of :func:`real_shaped_mask_set`; returns them as a JSON-ready dict."""
    for name, value in (("layers", layers), ("heads", heads), ("n", n), ("nk", nk)):
        check_int(name, value, 1)
    check_int("seed", seed, 0)
    sparsities = _check_sparsity(sparsity, layers, nk)
    if global_range is None:
        global_range = (min(1, nk - 1), min(10, nk - 1))
    if (not isinstance(global_range, (tuple, list)) or len(global_range) != 2
            or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) for g in global_range)
            or not 0 <= global_range[0] <= global_range[1] <= nk - 1):
        raise ConfigError(f"global_range must be two integers lo <= hi in [0, Nk - 1 = {nk - 1}] (every head "
                          f"keeps at least one non-global key), not {global_range!r}")
    for name, value, top in (("p_no_global", p_no_global, 1.0), ("max_dense_share", max_dense_share, 1.0),
                             ("row_sigma", row_sigma, MAX_SIGMA), ("column_sigma", column_sigma, MAX_SIGMA),
                             ("head_sigma", head_sigma, MAX_SIGMA)):
        _check_float(name, value, 0.0, top)
    return {"sparsity": sparsities, "seed": seed, "global_range": [int(g) for g in global_range],
            "p_no_global": float(p_no_global), "row_sigma": float(row_sigma), "column_sigma": float(column_sigma),
            "head_sigma": float(head_sigma), "max_dense_share": float(max_dense_share)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_sparsity(sparsity, layers: int, nk: int) -> list[float]:
    """``sparsity`` as one float per layer, each in ``(0, 1 - 1/nk]``; else ``ConfigError``."""
    scalar = _is_number(sparsity)
    try:
        values = [sparsity] * layers if scalar else list(sparsity)
    except TypeError:
        values = None
    if values is None or isinstance(sparsity, (str, bytes)) or len(values) != layers or not all(
            _is_number(v) for v in values):
        raise ConfigError(f"sparsity must be one number or a sequence of {layers} numbers (one per layer), "
                          f"not {sparsity!r}")
    top = 1.0 - 1.0 / nk
    for l, v in enumerate(values):
        if not 0.0 < v <= top:   # also refuses NaN
            raise ConfigError(f"{'sparsity' if scalar else f'sparsity[{l}]'} must be in (0, {top:.6g}] (in "
                              f"(0, 1), and every row keeps at least one of its {nk} keys), not {v!r}")
    return [float(v) for v in values]


def _check_float(name: str, value, low: float, high: float | None) -> float:
    """``value`` as a float in ``[low, high]`` (``high`` None: no upper bound); else ``ConfigError``."""
    if not _is_number(value) or not (low <= value and (high is None or value <= high)):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be a number {allowed}, not {value!r}")
    return float(value)


def _lognormal(rng, size: int, sigma: float) -> np.ndarray:
    """``size`` lognormal weights ``exp(sigma * z)``."""
    return np.exp(sigma * rng.standard_normal(size))


def _allocate(total: int, weights: np.ndarray, low: int, high) -> np.ndarray:
    """Integers in ``[low, high]`` summing to ``total``, in proportion to ``weights`` where no bound binds.

    The clipped proportional share ``clip(c * weights, low, high)`` (``c`` by
    bisection so the shares sum to ``total``), rounded down, then the
    remaining units to the largest fractional parts (rows below ``high``).
    Needs ``len(weights) * low <= total <= sum(high)``.
    """
    high = np.broadcast_to(np.asarray(high, dtype=np.float64), weights.shape)
    c_lo, c_hi = 0.0, float(high.max() / weights.min())
    for _ in range(200):
        c = 0.5 * (c_lo + c_hi)
        if np.clip(c * weights, low, high).sum() <= total:
            c_lo = c
        else:
            c_hi = c
    share = np.clip(c_lo * weights, low, high)
    counts = np.floor(share).astype(np.int64)
    while (missing := total - int(counts.sum())) > 0:
        room = np.flatnonzero(counts < high)
        best = room[np.argsort(-(share - counts)[room], kind="stable")[:missing]]
        counts[best] += 1
    return counts


def _real_head(rng, nq: int, nk: int, budget: int, spec: dict):
    """``(keep, order, G)`` of one head with ``budget`` kept entries (steps 2-4 of ``real_shaped_mask_set``)."""
    lo, hi = spec["global_range"]
    g = int(rng.integers(lo, hi + 1))
    if rng.random() < spec["p_no_global"]:
        g = 0
    g = min(g, int(spec["max_dense_share"] * budget) // nq, (budget - nq) // nq)
    glob = np.sort(rng.choice(nk, size=g, replace=False))
    rest = np.setdiff1d(np.arange(nk), glob)
    lengths = _allocate(budget - nq * g, _lognormal(rng, nq, spec["row_sigma"]), 1, nk - g)
    # Gumbel top-k: each row's keys without replacement, in proportion to the columns' weights.
    scores = spec["column_sigma"] * rng.standard_normal(nk - g) + rng.gumbel(size=(nq, nk - g))
    ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1, kind="stable")
    keep = np.zeros((nq, nk), dtype=bool)
    keep[:, glob] = True
    keep[:, rest] = ranks < lengths[:, None]
    return keep, np.concatenate([glob, rest]).astype(np.int32), g
