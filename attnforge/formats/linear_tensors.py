"""Tensor files for the linear decode datapath (``--tensors FILE``): one head's int8
q, k, v sequence, its convolution taps and the requantization scales.

Format ``attnforge.linear_tensors/1`` (``.npz``):

| key | dtype, shape | meaning |
|---|---|---|
| ``format`` | str | ``"attnforge.linear_tensors/1"`` |
| ``q``, ``k``, ``v`` | int8 ``[N, d]`` | the head's per-token projections, quantized |
| ``taps`` | int8 ``[K, d]`` | causal depthwise conv taps, ``taps[0]`` on the current token |
| ``attn_scale`` | float64 scalar | real factor from ``phi(q)^T S`` units to output units |
| ``conv_scale`` | float64 scalar | real factor from conv-sum units to output units |

The loader checks every field and names the file and the field in its error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .npz import check_array, fail, read_npz, write_npz

__all__ = ["FORMAT", "save_linear_tensors", "load_linear_tensors"]

FORMAT = "attnforge.linear_tensors/1"


def save_linear_tensors(path, *, q, k, v, taps, attn_scale: float, conv_scale: float) -> Path:
    return write_npz(path, dict(format=np.array(FORMAT), q=np.asarray(q, np.int8), k=np.asarray(k, np.int8),
                                v=np.asarray(v, np.int8), taps=np.asarray(taps, np.int8),
                                attn_scale=np.float64(attn_scale), conv_scale=np.float64(conv_scale)))


def load_linear_tensors(path, *, d: int | None = None, conv_taps: int | None = None) -> dict:
    """Load and validate; ``d``/``conv_taps`` if given must match the arrays. Problems raise ``ArtifactError``."""
    z = read_npz(path, kind="linear tensor", format=FORMAT,
                 required=("q", "k", "v", "taps", "attn_scale", "conv_scale"))
    path = Path(path)
    out = {key: check_array(path, key, z[key], np.int8, ndim=2) for key in ("q", "k", "v", "taps")}
    scales = {key: float(check_array(path, key, z[key], np.float64, shape=())) for key in ("attn_scale", "conv_scale")}
    n_d = out["q"].shape
    for key in ("k", "v"):
        if out[key].shape != n_d:
            fail(path, f"field {key!r} has shape {list(out[key].shape)}, q has {list(n_d)}")
    if n_d[0] < 1:
        fail(path, "field 'q' holds no tokens")
    if out["taps"].shape[1] != n_d[1]:
        fail(path, f"field 'taps' has d={out['taps'].shape[1]}, q has d={n_d[1]}")
    if d is not None and n_d[1] != d:
        fail(path, f"field 'q' has d={n_d[1]}, the datapath is configured for d={d}")
    if conv_taps is not None and out["taps"].shape[0] != conv_taps:
        fail(path, f"field 'taps' has K={out['taps'].shape[0]}, the datapath has conv_taps={conv_taps}")
    for key, value in scales.items():
        if not (np.isfinite(value) and value > 0):
            fail(path, f"field {key!r} must be a positive finite number, not {value}")
    out = {key: arr.astype(np.int64) for key, arr in out.items()}
    out.update(scales)
    return out
