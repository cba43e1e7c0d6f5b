"""Integer golden model of one ViTCoD attention head: the bit-exact specification of the accelerator.

Per head (keys and values already in the polarized order of the masks, global
keys first):

* scores ``S[i, j] = q[i] . k[j]`` (exact integers) **only** on kept entries:
  the ``G`` global columns of every row (Denser Engine) and the CSR entries of
  row ``i`` (Sparser Engine, columns in ``[G, Nk)``);
* the row softmax of ``attnforge.softmax_int`` over the kept entries of each
  row (row max, integer exponent, sum, reciprocal, fixed-point probabilities
  ``P`` with ``PROB_BITS`` fraction bits);
* ``O[i] = sum_j P[i, j] * v[j]`` (exact integers), requantized to int8 by the
  head's ``out`` requantizer (``attnforge.numfmt.Requantizer``).

A row with no kept key has output 0. The optional Q/K decoder reconstructs each
head's int8 Q and K from the auto-encoder's compressed heads
(``decode_qk``) before the score computation.

The integer parameters a head needs (what the accelerator's command carries)
are ``HeadParams``; ``head_params`` derives them from float scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from attnforge.errors import ArtifactError, ConfigError
from attnforge.formats.csr import CSR, check_csr
from attnforge.formats.head_tensors import HeadTensors, decoder_requantizers
from attnforge.numfmt import INT8, Requantizer
from attnforge.softmax_int import exp2_neg, exp_requantizer, out_requantizer, probability, reciprocal

__all__ = ["HeadParams", "head_params", "check_head_scales", "vitcod_head_golden", "vitcod_head_float", "decode_qk",
           "polarized_keep", "head_inputs"]


@dataclass(frozen=True)
class HeadParams:
    """Integer parameters of one head: the exponent and output requantizers."""

    exp: Requantizer   # (row max - score) -> z, out = softmax_int.Z_FORMAT
    out: Requantizer   # sum_j P v -> int8


def head_params(q_scale: float, k_scale: float, v_scale: float, o_scale: float, head_dim: int) -> HeadParams:
    """``HeadParams`` from the float scales of q, k, v and the output."""
    def real(s):   # an int beyond float range becomes inf, which the requantizers refuse by name
        try:
            return float(s)
        except OverflowError:
            return math.inf
    return HeadParams(exp_requantizer(real(q_scale), real(k_scale), head_dim),
                      out_requantizer(real(v_scale), real(o_scale)))


def check_head_scales(tensors: HeadTensors, source) -> None:
    """Every head's requantizers (softmax exponent, output, Q/K decoder if present) from its scales.

    ``ArtifactError`` naming ``source``, the layer, the head and the scale field if
    one of them would lose its whole input (``numfmt.check_requantizer``): such a
    file would simulate "bit-exact" with outputs that do not depend on the data.
    """
    for layer in range(tensors.layers):
        for head in range(tensors.heads):
            try:
                head_params(tensors.q_scale[layer, head], tensors.k_scale[layer, head],
                            tensors.v_scale[layer, head], tensors.o_scale[layer, head], tensors.head_dim)
                if tensors.has_decoder:
                    decoder_requantizers(tensors, layer, head)
            except ConfigError as exc:
                raise ArtifactError(f"{source}: layer {layer} head {head}: {exc}") from None


def _check_int8(name: str, a, ndim: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array with {ndim} dimensions, got {a.dtype} shape {a.shape}")
    if a.size:
        INT8.check_array(name, a)
    return a.astype(np.int64)


def polarized_keep(g: int, csr: CSR) -> np.ndarray:
    """bool ``[Nq, Nk]``: the kept entries in polarized column order (G global columns + CSR)."""
    nq, nk = csr.shape
    keep = np.zeros((nq, nk), dtype=bool)
    keep[:, :g] = True
    rows = np.repeat(np.arange(nq), np.diff(csr.row_ptr))
    keep[rows, csr.col_idx] = True
    return keep


def _check_mask(g: int, csr: CSR, nq: int, nk: int) -> None:
    if not isinstance(csr, CSR):
        raise TypeError(f"csr must be an attnforge.formats.csr.CSR, not {type(csr).__name__}")
    if tuple(csr.shape) != (nq, nk):
        raise ValueError(f"CSR shape {tuple(csr.shape)} does not match q/k rows ({nq}, {nk})")
    if not (isinstance(g, (int, np.integer)) and 0 <= g <= nk):
        raise ValueError(f"G (global keys) must be an integer in [0, {nk}], not {g!r}")
    check_csr(csr.row_ptr, csr.col_idx, csr.shape, "sparse part")
    if csr.col_idx.size and csr.col_idx.min() < g:
        raise ValueError(f"sparse part: column index {int(csr.col_idx.min())} lies in the global columns [0, {g}); "
                         f"sparse columns must be in [{g}, {nk})")


def vitcod_head_golden(q, k, v, g: int, csr: CSR, params: HeadParams, *, internals: bool = False):
    """Int8 output ``[Nq, d]`` of one head, bit for bit what the accelerator returns.

    Parameters
    ----------
    q : int8 ``[Nq, d]``; k, v : int8 ``[Nk, d]`` in polarized key order.
    g : number of global (dense) keys, columns ``[0, g)`` of every row.
    csr : the sparse part by query row, columns in ``[g, Nk)`` (``attnforge.formats.masks.head_csr``).
    params : ``HeadParams``.
    internals : also return a dict with ``scores`` (int64, 0 where pruned), ``keep``,
        ``row_max``, ``e``, ``row_sum``, ``recip``, ``p`` and ``acc`` (int64 ``[Nq, d]``).
    """
    q = _check_int8("q", q, 2)
    k = _check_int8("k", k, 2)
    v = _check_int8("v", v, 2)
    nq, d = q.shape
    nk = k.shape[0]
    if k.shape[1] != d or v.shape != k.shape:
        raise ValueError(f"q {q.shape}, k {k.shape}, v {v.shape}: k and v must be [Nk, {d}]")
    if nk == 0:   # as masks.npz refuses Nk = 0; the row maximum of no keys raised numpy's zero-size error
        raise ValueError(f"k and v hold no keys (shape {k.shape}); a head needs Nk >= 1")
    if not isinstance(params, HeadParams):
        raise TypeError(f"params must be HeadParams, not {type(params).__name__}")
    _check_mask(g, csr, nq, nk)   # checks g's type before int(g) (int(inf) raised OverflowError)
    keep = polarized_keep(int(g), csr)

    scores = np.where(keep, q @ k.T, 0)
    nonempty = keep.any(axis=1)
    row_max = np.where(keep, scores, np.iinfo(np.int64).min).max(axis=1)
    row_max = np.where(nonempty, row_max, 0)
    z = params.exp(np.where(keep, row_max[:, None] - scores, 0))
    e = np.where(keep, exp2_neg(z), 0)
    row_sum = e.sum(axis=1)
    recip = np.array([reciprocal(int(s)) if ne else 0 for s, ne in zip(row_sum, nonempty)], dtype=np.int64)
    p = np.where(keep, probability(e, recip[:, None]), 0)
    acc = p @ v
    out = params.out(acc).astype(np.int8)
    if internals:
        return out, dict(scores=scores, keep=keep, row_max=row_max, e=e, row_sum=row_sum,
                         recip=recip, p=p, acc=acc)
    return out


def vitcod_head_float(q, k, v, keep, q_scale: float, k_scale: float, v_scale: float) -> np.ndarray:
    """The float head the integer model approximates: masked softmax attention in real units (float64).

    ``keep`` is bool ``[Nq, Nk]`` in the same key order as ``k`` and ``v``; rows with
    no kept key give 0.
    """
    qf = np.asarray(q, dtype=np.float64) * q_scale
    kf = np.asarray(k, dtype=np.float64) * k_scale
    vf = np.asarray(v, dtype=np.float64) * v_scale
    s = qf @ kf.T / math.sqrt(qf.shape[1])
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.where(keep, np.exp(s - m), 0.0)
    tot = w.sum(axis=1, keepdims=True)
    p = np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)
    return p @ vf


def decode_qk(compressed, weights, requantizers) -> np.ndarray:
    """The Q/K decoder: ``x[h, n, c] = requant_h(sum_j weights[h, j] * compressed[j, n, c])``.

    compressed : int8 ``[Hc, N, d]``; weights : int8 ``[H, Hc]``; requantizers : one
    ``Requantizer`` per output head (or one for all). Returns int8 ``[H, N, d]``.
    """
    xc = _check_int8("compressed Q/K", compressed, 3)
    w = _check_int8("decoder weights", weights, 2)
    if w.shape[1] != xc.shape[0]:
        raise ValueError(f"decoder weights {w.shape} do not match {xc.shape[0]} compressed heads")
    if isinstance(requantizers, Requantizer):
        requantizers = [requantizers] * w.shape[0]
    if len(requantizers) != w.shape[0]:
        raise ValueError(f"{len(requantizers)} decoder requantizers for {w.shape[0]} heads")
    acc = np.einsum("hj,jnc->hnc", w, xc)
    return np.stack([rq(acc[h]) for h, rq in enumerate(requantizers)]).astype(np.int8)


def head_inputs(tensors: HeadTensors, layer: int, head: int, order=None, *, use_decoder: bool = False) -> dict:
    """q, k, v (k and v permuted by ``order``, the masks' polarized key order) and params of one head.

    With ``use_decoder`` the head's q and k come from the compressed heads
    through ``decode_qk`` (the on-chip decoder's result) instead of ``q``/``k``.
    """
    if not (0 <= layer < tensors.layers and 0 <= head < tensors.heads):
        raise ValueError(f"layer {layer} head {head} out of range: the tensors have {tensors.layers} layers "
                         f"and {tensors.heads} heads")
    q, k, v = tensors.q[layer, head], tensors.k[layer, head], tensors.v[layer, head]
    if use_decoder:
        rq, rk = decoder_requantizers(tensors, layer, head)
        q = decode_qk(tensors.qc[layer], tensors.dec_wq[layer, head:head + 1], rq)[0]
        k = decode_qk(tensors.kc[layer], tensors.dec_wk[layer, head:head + 1], rk)[0]
    if order is not None:
        order = np.asarray(order)
        if sorted(order.tolist()) != list(range(k.shape[0])):
            raise ValueError(f"order must be a permutation of 0..{k.shape[0] - 1}")
        k, v = k[order], v[order]
    params = head_params(tensors.q_scale[layer, head], tensors.k_scale[layer, head],
                         tensors.v_scale[layer, head], tensors.o_scale[layer, head], tensors.head_dim)
    return dict(q=np.asarray(q, np.int8), k=np.asarray(k, np.int8), v=np.asarray(v, np.int8), params=params)
