"""``output_digest``: one hex string that identifies the values an RTL run put out.

The simulation reports (``attnforge vitcod sim``, ``attnforge linear sim``,
``attnforge sim mac-line``) carry it as ``output_digest`` so that two runs can be
told apart (another seed, other tensors) or matched without keeping the outputs.

It is the SHA-256 (hex) of the values in the order they left the design, each
written as two's complement little-endian of a fixed width: int8 (one byte) for
the attention outputs of ViTCoD (every head's output rows in run order, each row
its ``head_dim`` values) and of the linear decode datapath (every output token in
order, each its ``d`` values); int64 (eight bytes) for the MAC line's dot
products (each vector's M results in lane order, vectors in order). None in a
report means the testbench wrote no outputs (a failed or refused run).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["output_digest"]

_DTYPES = {"int8": np.dtype("<i1"), "int64": np.dtype("<i8")}


def output_digest(values, dtype: str = "int8") -> str:
    """SHA-256 hex of ``values`` (nested sequences or arrays of ints, flattened in C order) as ``dtype``.

    ``dtype`` is ``"int8"`` or ``"int64"``; a value that does not fit raises ``ValueError``.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"output_digest dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    if isinstance(values, np.ndarray):
        flat = values.reshape(-1)
    else:
        parts = [np.asarray(v).reshape(-1) for v in values]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if flat.size and flat.dtype.kind not in "iub":
        raise ValueError(f"output_digest takes integers, not {flat.dtype}")
    wide = flat.astype(np.int64)
    info = np.iinfo(_DTYPES[dtype])
    if wide.size and (wide.min() < info.min or wide.max() > info.max):
        raise ValueError(f"output_digest: values in [{wide.min()}, {wide.max()}] do not fit {dtype}")
    return hashlib.sha256(wide.astype(_DTYPES[dtype]).tobytes()).hexdigest()
