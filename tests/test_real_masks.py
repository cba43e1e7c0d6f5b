"""Masks shaped like real pruned ViTs (``algo/vitcod/synthetic.real_shaped_mask_set``, issue 14):
seeded, at the target sparsity per layer, few whole global columns first in ``order``, heavy-tailed
sparse rows, non-square heads, and parameters refused with a message that names them."""

import numpy as np
import pytest

from attnforge.algo.vitcod.synthetic import real_shaped_mask_set
from attnforge.errors import ConfigError
from attnforge.formats.masks import head_csr, head_keep_from_csr, load_masks, save_masks

#: Largest distance of a layer's sparsity from its target that the tests accept (0.1 percentage
#: point; the model is exact up to rounding the layer's budget, 0.5 / (H * Nq * Nk)).
TOLERANCE = 1e-3

#: DeiT-like per-layer sparsities from 35 % to 95 %.
PROFILE = [0.35, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.92, 0.95, 0.95, 0.95]


@pytest.fixture(scope="module")
def deit():
    """12 layers x 3 heads of 197 tokens (DeiT-Tiny's shape) along PROFILE."""
    return real_shaped_mask_set(12, 3, 197, PROFILE, seed=0)


def _sparse_rows(ms, layer, head):
    """Kept keys per row outside the global columns."""
    g = int(ms.n_global[layer, head])
    return ms.keep[layer, head][:, ms.order[layer, head, g:]].sum(1)


def test_same_seed_same_masks_other_seed_other_masks():
    a, b = (real_shaped_mask_set(2, 3, 65, 0.9, seed=7) for _ in range(2))
    c = real_shaped_mask_set(2, 3, 65, 0.9, seed=8)
    assert np.array_equal(a.keep, b.keep) and np.array_equal(a.order, b.order)
    assert np.array_equal(a.n_global, b.n_global) and a.meta == b.meta
    assert not np.array_equal(a.keep, c.keep)


def test_per_layer_sparsity_within_tolerance(deit):
    achieved = 1.0 - deit.keep.mean(axis=(1, 2, 3))
    assert np.abs(achieved - PROFILE).max() <= TOLERANCE, achieved
    assert deit.meta["per_layer_sparsity"] == pytest.approx(achieved.tolist())
    assert deit.meta["sparsity"] == PROFILE


@pytest.mark.parametrize("target", [0.35, 0.5, 0.9, 0.95, 1 - 1 / 197])
def test_one_float_sparsity_within_tolerance(target):
    ms = real_shaped_mask_set(2, 2, 197, target, seed=3)
    assert abs(ms.sparsity() - target) <= TOLERANCE


def test_global_columns_whole_first_and_in_range(deit):
    assert deit.n_global.min() >= 1 and deit.n_global.max() <= 10
    assert len(np.unique(deit.n_global)) > 3                          # G varies across heads
    for l in range(deit.layers):
        for h in range(deit.heads):
            g = int(deit.n_global[l, h])
            keep, order = deit.keep[l, h], deit.order[l, h]
            assert keep[:, order[:g]].all()                            # whole
            assert (np.diff(order[:g]) > 0).all() and (np.diff(order[g:]) > 0).all()   # each part by index
            assert keep.any(axis=1).all()                              # every row keeps a key
            assert _sparse_rows(deit, l, h).min() >= 1


def test_sparse_part_dominates(deit):
    nq = deit.keep.shape[2]
    dense = nq * deit.n_global
    kept = deit.keep.sum(axis=(2, 3))
    assert (dense <= 0.5 * kept).all()
    assert dense.sum() / kept.sum() < 0.1                             # over the model, the sparse part is most


def test_no_global_heads_by_parameter():
    ms = real_shaped_mask_set(4, 4, 197, 0.9, seed=1, p_no_global=1.0)
    assert (ms.n_global == 0).all() and ms.keep.any(axis=-1).all()
    some = real_shaped_mask_set(8, 4, 197, 0.9, seed=1, p_no_global=0.5)
    assert 0 < (some.n_global == 0).sum() < some.n_global.size
    zero_range = real_shaped_mask_set(8, 4, 197, 0.9, seed=1, global_range=(0, 0))
    assert (zero_range.n_global == 0).all()


def test_global_range_is_followed_where_the_budget_allows():
    ms = real_shaped_mask_set(6, 4, 197, 0.8, seed=2, global_range=(3, 6))
    assert ms.n_global.min() >= 3 and ms.n_global.max() <= 6


def test_row_lengths_heavy_tailed_at_90_percent(deit):
    layers = [l for l, s in enumerate(PROFILE) if s == 0.9]
    rows = np.concatenate([_sparse_rows(deit, l, h) for l in layers for h in range(deit.heads)])
    assert rows.min() == 1 and 50 <= rows.max() <= 196
    assert rows.max() >= 5 * np.median(rows), (rows.max(), np.median(rows))
    for l in layers:
        for h in range(deit.heads):
            r = _sparse_rows(deit, l, h)
            assert r.max() >= 3 * np.median(r)


@pytest.mark.parametrize("sigma", [5.0, 0.0])
def test_extreme_spreads_still_hit_the_target(sigma):
    ms = real_shaped_mask_set(2, 4, 64, [0.5, 0.97], seed=9, row_sigma=sigma, column_sigma=sigma, head_sigma=sigma)
    assert np.abs(1 - ms.keep.mean(axis=(1, 2, 3)) - [0.5, 0.97]).max() <= TOLERANCE
    assert ms.keep.any(axis=-1).all()


def test_row_sigma_zero_gives_equal_rows():
    ms = real_shaped_mask_set(1, 1, 64, 0.75, seed=0, row_sigma=0.0, head_sigma=0.0)
    r = _sparse_rows(ms, 0, 0)
    assert r.max() - r.min() <= 1


@pytest.mark.parametrize("nq,nk", [(49, 196), (16, 49), (196, 49)])
def test_non_square_heads(nq, nk, tmp_path):
    ms = real_shaped_mask_set(2, 3, nq, [0.8, 0.9], seed=4, nk=nk)
    assert ms.keep.shape == (2, 3, nq, nk) and ms.order.shape == (2, 3, nk)
    achieved = 1.0 - ms.keep.mean(axis=(1, 2, 3))
    assert np.abs(achieved - [0.8, 0.9]).max() <= max(TOLERANCE, 0.5 / (3 * nq * nk))
    back = load_masks(save_masks(ms, tmp_path / "m.npz"))
    for h in range(3):
        g, csr = head_csr(back, 1, h)
        assert np.array_equal(head_keep_from_csr(g, csr, back.order[1, h]), ms.keep[1, h])


@pytest.mark.parametrize("kwargs,words", [
    (dict(sparsity=0.0), ["sparsity", "0.0", "(0, "]),
    (dict(sparsity=1.0), ["sparsity", "1.0", "(0, 0.99"]),
    (dict(sparsity=-0.2), ["sparsity", "-0.2"]),
    (dict(sparsity=float("nan")), ["sparsity", "nan"]),
    (dict(sparsity=[0.9, 0.9]), ["sparsity", "3 numbers", "[0.9, 0.9]"]),
    (dict(sparsity=[0.9, 1.5, 0.9]), ["sparsity[1]", "1.5", "(0, "]),
    (dict(sparsity="0.9"), ["sparsity", "'0.9'"]),
    (dict(global_range=(1, 197)), ["global_range", "197", "[0, Nk - 1 = 196]"]),
    (dict(global_range=(5, 2)), ["global_range", "(5, 2)", "lo <= hi"]),
    (dict(global_range=(-1, 2)), ["global_range", "(-1, 2)"]),
    (dict(global_range=3), ["global_range", "3"]),
    (dict(p_no_global=1.5), ["p_no_global", "1.5", "[0.0, 1.0]"]),
    (dict(max_dense_share=-0.1), ["max_dense_share", "-0.1", "[0.0, 1.0]"]),
    (dict(row_sigma=-1.0), ["row_sigma", "-1.0", "[0.0, 5.0]"]),
    (dict(head_sigma=50.0), ["head_sigma", "50.0", "[0.0, 5.0]"]),
    (dict(column_sigma="x"), ["column_sigma", "'x'"]),
    (dict(n=0), ["n", "0", ">= 1"]),
    (dict(nk=0), ["nk", "0", ">= 1"]),
    (dict(seed=-1), ["seed", "-1", ">= 0"]),
])
def test_bad_parameters_name_the_parameter_value_and_range(kwargs, words):
    args = dict(layers=3, heads=2, n=197, sparsity=0.9) | kwargs
    with pytest.raises(ConfigError) as e:
        real_shaped_mask_set(**args)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
