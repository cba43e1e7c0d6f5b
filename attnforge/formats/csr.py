"""Compressed sparse row (CSR) conversions: the one place every sparse artifact goes through.

Used for the sparse part of polarized attention masks (``attnforge.formats.masks``) and
for sparse weight matrices (robust tickets). Conventions, shared by all users
and by the hardware's index buffers:

* ``row_ptr``: int32 ``[rows + 1]``, ``row_ptr[0] == 0``, non-decreasing,
  ``row_ptr[-1] == nnz``; row ``r``'s entries are ``row_ptr[r]:row_ptr[r+1]``;
* ``col_idx``: int32 ``[nnz]``, strictly increasing within each row, each in
  ``[0, cols)``;
* ``values`` (optional): ``[nnz]``, in the same order as ``col_idx``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .npz import fail

__all__ = ["CSR", "dense_to_csr", "csr_to_dense", "check_csr"]


@dataclass(frozen=True)
class CSR:
    row_ptr: np.ndarray   # int32 [rows + 1]
    col_idx: np.ndarray   # int32 [nnz]
    shape: tuple          # (rows, cols)
    values: np.ndarray | None = None

    @property
    def nnz(self) -> int:
        return int(self.row_ptr[-1])

    def row(self, r: int) -> np.ndarray:
        return self.col_idx[self.row_ptr[r]:self.row_ptr[r + 1]]


def dense_to_csr(matrix: np.ndarray, *, keep: np.ndarray | None = None) -> CSR:
    """CSR of a 2-D array: entries where ``keep`` is true (default: where ``matrix`` is non-zero).

    A boolean ``matrix`` gives a pattern-only CSR (``values`` is None).
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"dense_to_csr needs a 2-D array, got shape {matrix.shape}")
    pattern = matrix.astype(bool) if keep is None else np.asarray(keep, dtype=bool)
    if pattern.shape != matrix.shape:
        raise ValueError(f"keep pattern shape {pattern.shape} differs from matrix shape {matrix.shape}")
    rows, cols = np.nonzero(pattern)  # row-major: columns ascending within each row
    row_ptr = np.zeros(matrix.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=row_ptr[1:])
    values = None if matrix.dtype == bool else matrix[rows, cols]
    return CSR(row_ptr, cols.astype(np.int32), tuple(matrix.shape), values)


def csr_to_dense(csr: CSR, fill=0) -> np.ndarray:
    """The dense array (bool pattern when ``csr.values`` is None)."""
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.row_ptr))
    if csr.values is None:
        out = np.zeros(csr.shape, dtype=bool)
        out[rows, csr.col_idx] = True
    else:
        out = np.full(csr.shape, fill, dtype=csr.values.dtype)
        out[rows, csr.col_idx] = csr.values
    return out


def check_csr(row_ptr, col_idx, shape, name: str = "CSR") -> None:
    """Raise ``ArtifactError`` naming ``name`` unless the arrays follow the conventions above."""
    row_ptr = np.asarray(row_ptr)
    col_idx = np.asarray(col_idx)
    rows, cols = shape
    if rows < 0 or cols < 0:
        fail(name, f"shape {tuple(shape)} has a negative dimension")
    for what, a in (("row_ptr", row_ptr), ("col_idx", col_idx)):
        # Signed: an unsigned row_ptr hides a decrease in its wrapped np.diff, and numpy will not
        # index or repeat with uint64 against int64.
        if a.dtype.kind != "i" or a.ndim != 1:
            fail(name, f"{what} must be a 1-D signed integer array, got {a.dtype} shape {a.shape}")
    if row_ptr.shape != (rows + 1,):
        fail(name, f"row_ptr has shape {row_ptr.shape}, expected ({rows + 1},)")
    if row_ptr[0] != 0:
        fail(name, f"row_ptr[0] is {row_ptr[0]}, must be 0")
    steps = np.diff(row_ptr)
    if (steps < 0).any():
        r = int(np.argmax(steps < 0))
        fail(name, f"row_ptr decreases at row {r} ({row_ptr[r]} -> {row_ptr[r + 1]})")
    if row_ptr[-1] != col_idx.shape[0]:
        fail(name, f"row_ptr[-1] = {row_ptr[-1]} but col_idx has {col_idx.shape[0]} entries")
    if col_idx.size and (col_idx.min() < 0 or col_idx.max() >= cols):
        fail(name, f"col_idx values in [{col_idx.min()}, {col_idx.max()}], allowed [0, {cols - 1}]")
    for r in range(rows):
        seg = col_idx[row_ptr[r]:row_ptr[r + 1]]
        if seg.size > 1 and (np.diff(seg) <= 0).any():
            fail(name, f"col_idx of row {r} is not strictly increasing: {seg.tolist()}")
