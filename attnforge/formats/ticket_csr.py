"""Ticket CSR files (format ``attnforge.tickets.csr/1``): a ticket's sparse int8 weights, one CSR per layer.

| key | dtype, shape | meaning |
|---|---|---|
| ``format`` | str | ``"attnforge.tickets.csr/1"`` |
| ``meta`` | JSON str | model, ticket meta, ``layers``: [{name, kind, shape, rows, cols, nnz}] |
| ``L{i}_row_ptr`` | int32 [R+1] | CSR by output row (``attnforge.formats.csr`` conventions) |
| ``L{i}_col_idx`` | int32 [nnz] | input index: ``in`` for Linear, ``(c*kh + y)*kw + x`` for Conv2d |
| ``L{i}_values`` | int8 [nnz] | symmetric int8 weights, ``w ~= values * scale`` |
| ``L{i}_scale`` | float64 [] | the per-tensor weight scale, ``max |w_kept| / 127`` |
| ``L{i}_bias`` | float32 [R] | the float bias (zeros where the layer has none) |

Written by ``attnforge.algo.tickets.export`` (which also holds the golden model
of a sparse layer); loaded through the one ``.npz`` protocol (``formats.npz``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnforge.errors import ArtifactError
from attnforge.numfmt import INT8, accumulator_width

from .csr import CSR, check_csr, csr_to_dense
from .npz import fail, read_npz, write_npz

__all__ = ["CSR_FORMAT", "SparseLayer", "save_ticket_csr", "load_ticket_csr"]

CSR_FORMAT = "attnforge.tickets.csr/1"


@dataclass
class SparseLayer:
    name: str
    kind: str              # "linear" or "conv2d"
    weight_shape: tuple    # the layer's own weight shape
    csr: CSR               # int8 values, shape (rows, cols)
    scale: float           # weight scale
    bias: np.ndarray       # float32 [rows]

    def dense_int8(self) -> np.ndarray:
        return csr_to_dense(self.csr)

    def dense_float(self) -> np.ndarray:
        return self.dense_int8().astype(np.float64) * self.scale


def save_ticket_csr(path: Path, layers: list[SparseLayer], meta: dict | None = None) -> Path:
    """Write ``layers`` to ``path`` (atomically: a failed write leaves no file).

    An empty ``layers`` is refused (``ArtifactError``), as the loader refuses such a file.
    """
    if not layers:
        raise ArtifactError(f"{path}: a ticket CSR file needs at least one layer; none were given")
    arrays = {"format": np.array(CSR_FORMAT)}
    info = []
    for i, layer in enumerate(layers):
        c = layer.csr
        arrays[f"L{i}_row_ptr"] = c.row_ptr.astype(np.int32)
        arrays[f"L{i}_col_idx"] = c.col_idx.astype(np.int32)
        arrays[f"L{i}_values"] = c.values.astype(np.int8)
        arrays[f"L{i}_scale"] = np.array(layer.scale, dtype=np.float64)
        arrays[f"L{i}_bias"] = layer.bias.astype(np.float32)
        info.append({"name": layer.name, "kind": layer.kind, "shape": list(layer.weight_shape),
                     "rows": c.shape[0], "cols": c.shape[1], "nnz": c.nnz,
                     "max_row_nnz": int(np.diff(c.row_ptr).max()) if c.shape[0] else 0,
                     "acc_width": accumulator_width(INT8, INT8, max(1, int(np.diff(c.row_ptr).max())))})
    arrays["meta"] = np.array(json.dumps({**(meta or {}), "layers": info}))
    return write_npz(path, arrays)


#: What ``meta["layers"][i]`` must hold, and the Python types of each entry.
_LAYER_KEYS = {"name": str, "kind": str, "shape": list, "rows": int, "cols": int}
_LAYER_KINDS = ("linear", "conv2d")


def _check_layer_info(path, i: int, li) -> None:
    """``ArtifactError`` naming the file and the entry unless layer ``i``'s meta entry is complete."""
    where = f"field 'meta' layer {i}"
    if not isinstance(li, dict):
        fail(path, f"{where} must be a JSON object, got {li!r:.80}")
    for key, kind in _LAYER_KEYS.items():
        if key not in li:
            fail(path, f"{where} ({li.get('name')}) has no {key!r}")
        value = li[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            fail(path, f"{where} ({li.get('name')}): {key!r} must be of type {kind.__name__}, not {value!r:.80}")
    if li["kind"] not in _LAYER_KINDS:
        fail(path, f"{where} ({li['name']}): 'kind' must be one of {list(_LAYER_KINDS)}, not {li['kind']!r}")
    if li["rows"] < 1 or li["cols"] < 1:
        fail(path, f"{where} ({li['name']}): 'rows' and 'cols' must be >= 1, not {li['rows']} x {li['cols']}")
    shape = li["shape"]
    if len(shape) < 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
        fail(path, f"{where} ({li['name']}): 'shape' must list two or more positive ints, not {shape!r:.80}")


def load_ticket_csr(path: Path) -> tuple[list[SparseLayer], dict]:
    """Read and validate a ticket CSR file; every problem raises ``ArtifactError`` naming the file and the field."""
    data = read_npz(path, kind="ticket CSR", format=CSR_FORMAT, required=("meta",))
    path = Path(path)
    try:
        meta = json.loads(str(data["meta"]))
        info = meta["layers"]
    except (KeyError, TypeError, json.JSONDecodeError, RecursionError) as exc:
        fail(path, f"field 'meta' is not JSON with 'layers' ({exc})")
    if not isinstance(info, list) or not info:
        fail(path, f"field 'meta' must list at least one layer in 'layers', got {info!r:.80}")
    layers = []
    for i, li in enumerate(info):
        _check_layer_info(path, i, li)
        def field(key, dtype, ndim):
            k = f"L{i}_{key}"
            if k not in data:
                fail(path, f"field {k!r} ({li.get('name')}) is missing")
            a = data[k]
            if a.dtype != dtype or a.ndim != ndim:
                fail(path, f"field {k!r} is {a.dtype} with {a.ndim} dims, expected {np.dtype(dtype)} with {ndim}")
            return a
        row_ptr, col_idx = field("row_ptr", np.int32, 1), field("col_idx", np.int32, 1)
        values, scale, bias = field("values", np.int8, 1), field("scale", np.float64, 0), field("bias", np.float32, 1)
        rows, cols = int(li["rows"]), int(li["cols"])
        check_csr(row_ptr, col_idx, (rows, cols), name=f"{path}: layer {i} ({li['name']})")
        if values.shape != col_idx.shape:
            fail(path, f"field 'L{i}_values' has {values.size} entries, col_idx {col_idx.size}")
        if values.size and values.min() < -INT8.max:
            fail(path, f"field 'L{i}_values' holds {values.min()}, symmetric int8 allows [{-INT8.max}, {INT8.max}]")
        if not (math.isfinite(float(scale)) and float(scale) > 0):
            fail(path, f"field 'L{i}_scale' is {float(scale)}, must be a positive finite number")
        if bias.shape != (rows,):
            fail(path, f"field 'L{i}_bias' has shape {bias.shape}, expected ({rows},)")
        if not np.isfinite(bias).all():
            fail(path, f"field 'L{i}_bias' holds {int((~np.isfinite(bias)).sum())} NaN or infinite value(s)")
        if int(np.prod(li["shape"][1:])) != cols or li["shape"][0] != rows:
            fail(path, f"layer {i} weight shape {li['shape']} does not match CSR {rows}x{cols}")
        layers.append(SparseLayer(li["name"], li["kind"], tuple(li["shape"]),
                                  CSR(row_ptr, col_idx, (rows, cols), values), float(scale), bias))
    return layers, meta
