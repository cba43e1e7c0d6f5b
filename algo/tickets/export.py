"""Export a ticket's sparse weights as int8 CSR, and the integer golden model of a sparse linear layer.

The file (format ``attnforge.tickets.csr/1``, one CSR per prunable layer) is
defined, written and loaded in ``attnforge.formats.ticket_csr``.

A weight matrix is the layer's weight viewed as ``[out, in*kh*kw]`` (a
convolution as the matrix its im2col form multiplies). The CSR holds exactly
the ticket's kept positions (its mask), so a kept weight that rounds to int8 0
is still an entry: the pattern is the ticket's, as the hardware's index buffer sees it.
Every conversion goes through ``attnforge.formats.csr`` (``dense_to_csr``, ``check_csr``).

Golden model (what a hardware SpMM row engine computes, bit for bit)::

    acc[r] = sum_{j in row r} values[j] * x[col_idx[j]]  (+ bias_q[r])      int64, checked to fit
    y[r]   = Requantizer(acc[r])                                             int8

with ``x`` int8 (scale ``s_x``), ``bias_q = round(bias / (scale * s_x))`` and the
requantizer ``Requantizer.from_scale(scale * s_x / s_y)``, checked against the accumulator's range
(``layer_requantizer``: a degenerate ``s_y`` is refused).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from attnforge.formats.csr import CSR, csr_to_dense, dense_to_csr
from attnforge.formats.ticket_csr import CSR_FORMAT, SparseLayer, load_ticket_csr, save_ticket_csr
from attnforge.errors import ConfigError
from attnforge.numfmt import INT8, IntFormat, Requantizer, accumulator_width, requantizer_for

from .models import prunable_layers
from .pruning import current_masks

__all__ = ["CSR_FORMAT", "SparseLayer", "export_model", "save_ticket_csr", "load_ticket_csr",
           "quantize_symmetric", "sparse_linear_golden", "sparse_linear_float", "layer_requantizer", "accumulator_format",
           "quantize_bias", "golden_error_bound"]

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


# ---------------------------------------------------------------------------- golden model

def accumulator_format(csr: CSR, bias: bool = True) -> IntFormat:
    """What ``sparse_linear_golden`` accumulates a row of ``csr`` in: ``max_row_nnz`` int8 x int8 products,
    plus one bit for the bias."""
    counts = np.diff(csr.row_ptr)
    return IntFormat(accumulator_width(INT8, INT8, max(1, int(counts.max()) if counts.size else 1)) + bool(bias))


def layer_requantizer(layer: SparseLayer, x_scale: float, y_scale: float, *, bias: bool = True) -> Requantizer:
    """The requantizer from ``layer``'s accumulator (units ``layer.scale * x_scale``) to int8 output of scale
    ``y_scale``, checked against the accumulator's range (``numfmt.requantizer_for``): a ``y_scale`` that would
    map every output to 0 or saturate every nonzero one raises ``ConfigError`` naming ``y_scale``, the
    multiplier and shift, and the scales that work."""
    for name, value in (("x_scale", x_scale), ("y_scale", y_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (np.isfinite(value) and value > 0):
            raise ConfigError(f"layer {layer.name}: {name} must be a positive finite number, not {value!r}")
    scale = layer.scale * x_scale / y_scale
    return requantizer_for(scale, accumulator_format(layer.csr, bias), what=f"layer {layer.name} requantizer",
                           field=("y_scale", float(y_scale), lambda s: layer.scale * x_scale / s))


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
