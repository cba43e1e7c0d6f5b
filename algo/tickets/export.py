"""Export a ticket's sparse weights as int8 CSR, and the integer golden model of a sparse linear layer.

File format ``attnforge.tickets.csr/1`` (``.npz``), one entry per prunable
layer ``i`` (names in ``meta["layers"]``, in model order):

==================  ==============  ===================================================
key                 dtype, shape    meaning
==================  ==============  ===================================================
``format``          str             ``"attnforge.tickets.csr/1"``
``meta``            JSON str        model, ticket meta, ``layers``: [{name, kind, shape, rows, cols, nnz}]
``L{i}_row_ptr``    int32 [R+1]     CSR by output row (``attnforge.csr`` conventions)
``L{i}_col_idx``    int32 [nnz]     input index: ``in`` for Linear, ``(c*kh + y)*kw + x`` for Conv2d
``L{i}_values``     int8 [nnz]      symmetric int8 weights, ``w ~= values * scale``
``L{i}_scale``      float64 []      the per-tensor weight scale, ``max |w_kept| / 127``
``L{i}_bias``       float32 [R]     the float bias (zeros where the layer has none)
==================  ==============  ===================================================

A weight matrix is the layer's weight viewed as ``[out, in*kh*kw]`` (a
convolution as the matrix its im2col form multiplies). The CSR holds exactly
the ticket's kept positions (its mask), so a kept weight that rounds to int8 0
is still an entry: the pattern is the ticket's, as the hardware's index buffer sees it.
Every conversion goes through ``attnforge.csr`` (``dense_to_csr``, ``check_csr``).

Golden model (what a hardware SpMM row engine computes, bit for bit)::

    acc[r] = sum_{j in row r} values[j] * x[col_idx[j]]  (+ bias_q[r])      int64, checked to fit
    y[r]   = Requantizer(acc[r])                                             int8

with ``x`` int8 (scale ``s_x``), ``bias_q = round(bias / (scale * s_x))`` and the
requantizer ``Requantizer.from_scale(scale * s_x / s_y)``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnforge.csr import CSR, check_csr, csr_to_dense, dense_to_csr
from attnforge.numfmt import INT8, IntFormat, Requantizer, accumulator_width

from .models import prunable_layers
from .pruning import current_masks

__all__ = ["CSR_FORMAT", "SparseLayer", "TicketCSRError", "export_model", "save_ticket_csr", "load_ticket_csr",
           "quantize_symmetric", "sparse_linear_golden", "sparse_linear_float", "layer_requantizer",
           "quantize_bias", "golden_error_bound"]

CSR_FORMAT = "attnforge.tickets.csr/1"


class TicketCSRError(ValueError):
    """A ticket CSR file or array that does not follow ``attnforge.tickets.csr/1``."""


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


def quantize_symmetric(w: np.ndarray, fmt: IntFormat = INT8) -> tuple[np.ndarray, float]:
    """int8 values and scale with ``w ~= q * scale``, ``|q| <= fmt.max`` (symmetric: -128 unused)."""
    peak = float(np.abs(w).max()) if w.size else 0.0
    scale = peak / fmt.max if peak > 0 else 1.0
    q = np.clip(np.rint(w / scale), -fmt.max, fmt.max).astype(np.int8)
    return q, scale


def export_model(model: nn.Module) -> list[SparseLayer]:
    """The prunable layers of a (masked) model as int8 CSR layers; the pattern is each layer's mask."""
    masks = current_masks(model)
    layers = []
    for name, mod in prunable_layers(model).items():
        w = mod.weight.detach().to(torch.float64)
        rows = w.reshape(w.shape[0], -1).numpy()
        key = f"{name}.weight"
        keep = (masks[key].reshape(rows.shape).numpy() > 0) if key in masks else np.ones(rows.shape, dtype=bool)
        q, scale = quantize_symmetric(np.where(keep, rows, 0.0))
        csr = dense_to_csr(q, keep=keep)
        bias = np.zeros(rows.shape[0], dtype=np.float32)
        if mod.bias is not None:
            bias = mod.bias.detach().numpy().astype(np.float32).copy()
        kind = "conv2d" if isinstance(mod, nn.Conv2d) else "linear"
        layers.append(SparseLayer(name, kind, tuple(w.shape), csr, scale, bias))
    return layers


def save_ticket_csr(path: Path, layers: list[SparseLayer], meta: dict | None = None) -> Path:
    """Write ``layers`` to ``path`` (atomically: a failed write leaves no file)."""
    path = Path(path)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def load_ticket_csr(path: Path) -> tuple[list[SparseLayer], dict]:
    """Read and validate a ticket CSR file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ticket CSR file {path} does not exist")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as exc:  # not a zip/npz at all
        raise TicketCSRError(f"{path}: not an .npz file ({exc})") from None
    fmt = str(data.get("format", ""))
    if fmt != CSR_FORMAT:
        raise TicketCSRError(f"{path}: field 'format' is {fmt!r}, expected {CSR_FORMAT!r}")
    try:
        meta = json.loads(str(data["meta"]))
        info = meta["layers"]
    except (KeyError, json.JSONDecodeError) as exc:
        raise TicketCSRError(f"{path}: field 'meta' is missing or not JSON with 'layers' ({exc})") from None
    layers = []
    for i, li in enumerate(info):
        def field(key, dtype, ndim):
            k = f"L{i}_{key}"
            if k not in data:
                raise TicketCSRError(f"{path}: field {k!r} ({li.get('name')}) is missing")
            a = data[k]
            if a.dtype != dtype or a.ndim != ndim:
                raise TicketCSRError(f"{path}: field {k!r} is {a.dtype} with {a.ndim} dims, expected {np.dtype(dtype)} "
                                     f"with {ndim}")
            return a
        row_ptr, col_idx = field("row_ptr", np.int32, 1), field("col_idx", np.int32, 1)
        values, scale, bias = field("values", np.int8, 1), field("scale", np.float64, 0), field("bias", np.float32, 1)
        rows, cols = int(li["rows"]), int(li["cols"])
        try:
            check_csr(row_ptr, col_idx, (rows, cols), name=f"{path}: layer {i} ({li['name']})")
        except ValueError as exc:
            raise TicketCSRError(str(exc)) from None
        if values.shape != col_idx.shape:
            raise TicketCSRError(f"{path}: field 'L{i}_values' has {values.size} entries, col_idx {col_idx.size}")
        if values.size and values.min() < -INT8.max:
            raise TicketCSRError(f"{path}: field 'L{i}_values' holds {values.min()}, symmetric int8 allows "
                                 f"[{-INT8.max}, {INT8.max}]")
        if not (math.isfinite(float(scale)) and float(scale) > 0):
            raise TicketCSRError(f"{path}: field 'L{i}_scale' is {float(scale)}, must be a positive finite number")
        if bias.shape != (rows,):
            raise TicketCSRError(f"{path}: field 'L{i}_bias' has shape {bias.shape}, expected ({rows},)")
        if int(np.prod(li["shape"][1:])) != cols or li["shape"][0] != rows:
            raise TicketCSRError(f"{path}: layer {i} weight shape {li['shape']} does not match CSR {rows}x{cols}")
        layers.append(SparseLayer(li["name"], li["kind"], tuple(li["shape"]),
                                  CSR(row_ptr, col_idx, (rows, cols), values), float(scale), bias))
    return layers, meta


# ---------------------------------------------------------------------------- golden model

def layer_requantizer(w_scale: float, x_scale: float, y_scale: float) -> Requantizer:
    """The requantizer from the accumulator (units ``w_scale * x_scale``) to int8 output of scale ``y_scale``."""
    return Requantizer.from_scale(w_scale * x_scale / y_scale)


def quantize_bias(bias: np.ndarray, w_scale: float, x_scale: float) -> np.ndarray:
    """The bias in accumulator units (int64), rounded half away from zero."""
    b = np.asarray(bias, dtype=np.float64) / (w_scale * x_scale)
    return (np.sign(b) * np.floor(np.abs(b) + 0.5)).astype(np.int64)


def sparse_linear_golden(csr: CSR, x: np.ndarray, requant: Requantizer, bias_q: np.ndarray | None = None,
                         acc_width: int | None = None) -> np.ndarray:
    """``y = requant(W_sparse @ x + bias_q)`` in integers, row by row over the CSR entries.

    ``x``: int8 values ``[cols]`` or ``[batch, cols]``. Returns int8-range int64 ``[rows]`` / ``[batch, rows]``.
    The accumulator must fit ``acc_width`` bits (default: what ``max_row_nnz`` int8 products
    need, plus one bit when a bias is added); a sum that does not is refused.
    """
    if csr.values is None:
        raise ValueError("sparse_linear_golden needs a CSR with int8 values, got a pattern-only CSR")
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"sparse_linear_golden takes integer inputs, not {x.dtype}")
    single = x.ndim == 1
    x2 = x[None, :] if single else x
    if x2.ndim != 2 or x2.shape[1] != csr.shape[1]:
        raise ValueError(f"input has shape {x.shape}, the layer takes [{csr.shape[1]}] or [batch, {csr.shape[1]}]")
    INT8.check_array("input x", x2)
    INT8.check_array("weight values", csr.values)
    counts = np.diff(csr.row_ptr)
    rows_of = np.repeat(np.arange(csr.shape[0]), counts)
    prods = csr.values.astype(np.int64)[None, :] * x2.astype(np.int64)[:, csr.col_idx]   # [B, nnz]
    acc = np.zeros((x2.shape[0], csr.shape[0]), dtype=np.int64)
    np.add.at(acc, (slice(None), rows_of), prods)
    if bias_q is not None:
        acc = acc + np.asarray(bias_q, dtype=np.int64)[None, :]
    if acc_width is None:
        acc_width = accumulator_width(INT8, INT8, max(1, int(counts.max()) if counts.size else 1)) + (bias_q is not None)
    IntFormat(acc_width).check_array("sparse linear accumulator", acc)
    y = requant(acc)
    return y[0] if single else y


def sparse_linear_float(w: np.ndarray, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """The float computation the integer layer implements (float64)."""
    y = np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float64).T
    return y + (0 if bias is None else np.asarray(bias, dtype=np.float64))


def golden_error_bound(layer: SparseLayer, x_q: np.ndarray, x_scale: float, y_scale: float,
                       requant: Requantizer) -> np.ndarray:
    """Per-output bound on ``|y_golden * y_scale - y_float|`` when nothing saturates.

    ``y_float`` is the float layer (float weights *before* int8 rounding, float bias) on the
    dequantized input ``x_q * x_scale``. Terms: int8 weight rounding (``scale / 2`` per kept
    weight times ``|x|``), bias rounding (half an accumulator unit), the requantizer's
    multiplier error (relative ``|requant.scale / exact - 1|`` of the accumulator) and
    the output rounding (half an output unit, plus one unit for round-half-up ties).
    """
    x = np.abs(np.asarray(x_q, dtype=np.float64)) * x_scale
    x2 = x[None, :] if x.ndim == 1 else x
    keep = csr_to_dense(CSR(layer.csr.row_ptr, layer.csr.col_idx, layer.csr.shape)).astype(np.float64)
    weight_term = 0.5 * layer.scale * (x2 @ keep.T)
    acc_unit = layer.scale * x_scale
    exact = acc_unit / y_scale
    dense = layer.dense_float()
    acc_mag = np.abs(x2 @ np.abs(dense).T) + np.abs(layer.bias)[None, :]
    requant_term = abs(requant.scale / exact - 1.0) * acc_mag
    bound = weight_term + 0.5 * acc_unit + requant_term + 1.0 * y_scale
    return bound[0] if x.ndim == 1 else bound
