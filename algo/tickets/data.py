"""The digits tasks of the robust-tickets study, built from scikit-learn's bundled ``load_digits``.

Source task: digits 0-4. Downstream tasks: digits 5-9 (relabelled 0-4) under
transforms that add up, so the domain gap grows step by step:

==========  ===========================================================
``gap``     downstream images
==========  ===========================================================
``plain``   digits 5-9 as they are
``rotated`` the same, rotated by 90 degrees
``inverted`` rotated and intensity-inverted (1 - x)
``noisy``   rotated, inverted and with Gaussian noise (sigma 0.25), clipped to [0, 1]
==========  ===========================================================

Images are 1x8x8 floats in [0, 1] (the raw 0..16 values / 16). Splits are
fixed (independent of the training seed), stratified: the source task has
train/val/test = 60/20/20 %; a downstream task has a small training set
(``DOWNSTREAM_TRAIN_PER_CLASS`` images per class, so that what the ticket
brings matters) and the rest of its images split into validation and test.
Validation is what hyperparameters (the attack eps) are chosen on; test is only reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .names import GAPS

__all__ = ["GAPS", "SOURCE_DIGITS", "DOWNSTREAM_DIGITS", "DOWNSTREAM_TRAIN_PER_CLASS", "Split", "Task",
           "source_task", "downstream_task", "check_gap"]

SOURCE_DIGITS = (0, 1, 2, 3, 4)
DOWNSTREAM_DIGITS = (5, 6, 7, 8, 9)
DOWNSTREAM_TRAIN_PER_CLASS = 20
NOISE_SIGMA = 0.25
_SPLIT_SEED = 0  # the splits never depend on the training seed


@dataclass(frozen=True)
class Split:
    x: torch.Tensor   # float32 [N, 1, 8, 8] in [0, 1]
    y: torch.Tensor   # int64 [N] in [0, classes)

    def __len__(self):
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Task:
    name: str
    classes: int
    train: Split
    val: Split
    test: Split


def check_gap(gap: str) -> str:
    if gap not in GAPS:
        raise ValueError(f"domain gap {gap!r} is not one of {', '.join(GAPS)}")
    return gap


@lru_cache(maxsize=None)
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, d.target.astype(np.int64)


def _stratified_indices(y: np.ndarray, fractions, rng, first_per_class: int | None = None):
    """Per class, shuffle and cut into consecutive parts (``first_per_class`` fixes the first part's size)."""
    parts = [[] for _ in range(len(fractions))]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = len(idx)
        if first_per_class is not None:
            rest = n - first_per_class
            sizes = [first_per_class] + [int(round(f * rest)) for f in fractions[1:-1]]
        else:
            sizes = [int(round(f * n)) for f in fractions[:-1]]
        bounds = np.cumsum([0] + sizes + [n - sum(sizes)])
        for i in range(len(fractions)):
            parts[i].append(idx[bounds[i]:bounds[i + 1]])
    return [np.sort(np.concatenate(p)) for p in parts]


def _split(x, y, idx) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x[idx])), torch.from_numpy(y[idx]))


@lru_cache(maxsize=None)
def source_task() -> Task:
    """Digits 0-4, train/val/test 60/20/20 % (fixed, stratified)."""
    x, y = _digits()
    sel = np.isin(y, SOURCE_DIGITS)
    x, y = x[sel], y[sel]
    tr, va, te = _stratified_indices(y, (0.6, 0.2, 0.2), np.random.default_rng(_SPLIT_SEED))
    return Task("digits0-4", len(SOURCE_DIGITS), _split(x, y, tr), _split(x, y, va), _split(x, y, te))


def _transform(x: np.ndarray, gap: str) -> np.ndarray:
    level = GAPS.index(gap)
    if level >= 1:
        x = np.rot90(x, k=1, axes=(2, 3))
    if level >= 2:
        x = 1.0 - x
    if level >= 3:
        noise = np.random.default_rng(_SPLIT_SEED + 1).normal(0.0, NOISE_SIGMA, size=x.shape)
        x = np.clip(x + noise, 0.0, 1.0)
    return np.ascontiguousarray(x, dtype=np.float32)


@lru_cache(maxsize=None)
def downstream_task(gap: str = "plain", train_per_class: int = DOWNSTREAM_TRAIN_PER_CLASS) -> Task:
    """Digits 5-9 (labels 0-4) under the transforms of ``gap``; ``train_per_class`` training images per class."""
    check_gap(gap)
    x, y = _digits()
    sel = np.isin(y, DOWNSTREAM_DIGITS)
    x, y = _transform(x[sel], gap), y[sel] - DOWNSTREAM_DIGITS[0]
    tr, va, te = _stratified_indices(y, (None, 0.5, 0.5), np.random.default_rng(_SPLIT_SEED + 2),
                                     first_per_class=train_per_class)
    return Task(f"digits5-9/{gap}", len(DOWNSTREAM_DIGITS), _split(x, y, tr), _split(x, y, va), _split(x, y, te))
