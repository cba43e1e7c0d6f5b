"""Polarized attention masks (``masks.npz``, format ``attnforge.masks/1``): write, load, convert.

Written by ``algo`` (ViTCoD pruning and polarization), read by ``sim``/``tb``
and the accelerator's host code. See DESIGN.md, "Artifacts".

Per layer and head: ``keep[Nq, Nk]`` in the model's token order, a key
permutation ``order[Nk]`` with the ``n_global`` global (dense) keys first.
The Denser Engine computes every query against all global keys, so a valid
file keeps the global columns whole (``keep[:, order[:G]]`` all true): the mask
in the file is exactly what the hardware computes.

The hardware sees one head as: K and V rows loaded in polarized order
(``K[order]``), G, and the sparse part as CSR by query row whose column indices
are *positions in the polarized order*, all in ``[G, Nk)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .csr import CSR, check_csr, dense_to_csr
from .npz import fail, json_field, read_npz, write_npz

__all__ = ["MASKS_FORMAT", "MaskSet", "save_masks", "load_masks", "head_csr", "head_keep_from_csr"]

MASKS_FORMAT = "attnforge.masks/1"


@dataclass
class MaskSet:
    keep: np.ndarray       # bool [L, H, Nq, Nk]
    order: np.ndarray      # int32 [L, H, Nk]
    n_global: np.ndarray   # int32 [L, H]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        validate(self, "MaskSet")

    @property
    def layers(self) -> int:
        return self.keep.shape[0]

    @property
    def heads(self) -> int:
        return self.keep.shape[1]

    def sparsity(self) -> float:
        return 1.0 - float(self.keep.mean())


def validate(ms: MaskSet, source: str) -> None:
    """Check shapes, dtypes, ranges and the polarization invariants; ``ArtifactError`` names ``source``."""
    keep, order, n_global = ms.keep, ms.order, ms.n_global
    if not isinstance(keep, np.ndarray) or keep.dtype != np.bool_ or keep.ndim != 4:
        fail(source, f"'keep' must be a bool array [L, H, Nq, Nk], got {getattr(keep, 'dtype', type(keep))} "
             f"shape {getattr(keep, 'shape', None)}")
    L, H, nq, nk = keep.shape
    if min(L, H, nq, nk) < 1:
        fail(source, f"'keep' has an empty dimension: shape [L, H, Nq, Nk] = {list(keep.shape)}; every one "
             f"must be at least 1")
    if order.dtype != np.int32 or order.shape != (L, H, nk):
        fail(source, f"'order' must be int32 [{L}, {H}, {nk}], got {order.dtype} {order.shape}")
    if n_global.dtype != np.int32 or n_global.shape != (L, H):
        fail(source, f"'n_global' must be int32 [{L}, {H}], got {n_global.dtype} {n_global.shape}")
    if (n_global < 0).any() or (n_global > nk).any():
        fail(source, f"'n_global' values must be in [0, {nk}], got [{n_global.min()}, {n_global.max()}]")
    if not (np.sort(order, axis=-1) == np.arange(nk, dtype=np.int32)).all():
        l, h = np.argwhere(~(np.sort(order, axis=-1) == np.arange(nk)).all(-1))[0]
        fail(source, f"'order' of layer {l} head {h} is not a permutation of 0..{nk - 1}")
    for l in range(L):
        for h in range(H):
            g = int(n_global[l, h])
            if g and not keep[l, h][:, order[l, h, :g]].all():
                fail(source, f"layer {l} head {h}: global columns order[:{g}] are not fully kept; "
                     f"the Denser Engine computes them for every query")
    if not isinstance(ms.meta, dict):
        fail(source, f"'meta' must be a JSON object, got {type(ms.meta).__name__}")


def save_masks(ms: MaskSet, path: str | Path) -> Path:
    """Write ``ms`` to ``path`` (validated first; written to a temporary file, then renamed)."""
    validate(ms, str(path))
    return write_npz(path, dict(format=np.array(MASKS_FORMAT), keep=ms.keep, order=ms.order, n_global=ms.n_global,
                                meta=np.array(json.dumps(ms.meta))), compressed=True)


def load_masks(path: str | Path) -> MaskSet:
    """Load and validate a masks file; every problem raises ``ArtifactError`` naming the file and field."""
    arrays = read_npz(path, kind="masks", format=MASKS_FORMAT, required=("keep", "order", "n_global", "meta"))
    ms = MaskSet.__new__(MaskSet)
    ms.keep, ms.order, ms.n_global = arrays["keep"], arrays["order"], arrays["n_global"]
    ms.meta = json_field(arrays, "meta", path)
    validate(ms, str(path))
    return ms


def head_csr(ms: MaskSet, layer: int, head: int) -> tuple[int, CSR]:
    """``(G, csr)`` of one head: the sparse part by query row, columns as polarized positions in [G, Nk)."""
    if not (0 <= layer < ms.layers and 0 <= head < ms.heads):
        raise ValueError(f"layer {layer} head {head} out of range: the masks have {ms.layers} layers "
                         f"and {ms.heads} heads")
    g = int(ms.n_global[layer, head])
    polarized = ms.keep[layer, head][:, ms.order[layer, head]]   # columns in polarized order
    sparse = dense_to_csr(polarized[:, g:])
    csr = CSR(sparse.row_ptr, sparse.col_idx + np.int32(g), polarized.shape)
    check_csr(csr.row_ptr, csr.col_idx, csr.shape, f"layer {layer} head {head}")
    return g, csr


def head_keep_from_csr(g: int, csr: CSR, order: np.ndarray) -> np.ndarray:
    """Inverse of ``head_csr``: the ``keep[Nq, Nk]`` mask in model token order."""
    nq, nk = csr.shape
    polarized = np.zeros((nq, nk), dtype=bool)
    polarized[:, :g] = True
    rows = np.repeat(np.arange(nq), np.diff(csr.row_ptr))
    polarized[rows, csr.col_idx] = True
    keep = np.zeros_like(polarized)
    keep[:, order] = polarized
    return keep
