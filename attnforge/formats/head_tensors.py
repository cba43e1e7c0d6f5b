"""Quantized attention tensors per head (format ``attnforge.vitcod_head/1``): write, load, validate.

Written by the ViTCoD algorithm export, read by the golden model, the
accelerator's testbench and ``attnforge vitcod sim --tensors``. One file holds
one or more layers of one model; a single head is ``L = H = 1``.

| key | dtype, shape | meaning |
|---|---|---|
| ``format`` | str | ``"attnforge.vitcod_head/1"`` |
| ``q`` | int8 ``[L, H, Nq, d]`` | queries, model token order |
| ``k``, ``v`` | int8 ``[L, H, Nk, d]`` | keys and values, model token order (the masks' ``order`` polarizes them) |
| ``q_scale``, ``k_scale``, ``v_scale`` | float32 ``[L, H]`` | real value = scale * int8 (symmetric) |
| ``o_scale`` | float32 ``[L, H]`` | scale of the int8 attention output |
| ``meta`` | JSON str | free-form description |

Optional, all together (the Q/K auto-encoder's compressed heads, ``Hc = ceil(H/2)``):

| key | dtype, shape | meaning |
|---|---|---|
| ``qc``, ``kc`` | int8 ``[L, Hc, Nq|Nk, d]`` | compressed Q and K |
| ``qc_scale``, ``kc_scale`` | float32 ``[L]`` | their scales |
| ``dec_wq``, ``dec_wk`` | int8 ``[L, H, Hc]`` | decoder weights: ``q[h] = sum_c dec_wq[h, c] * qc[c]`` per token and channel |
| ``dec_wq_scale``, ``dec_wk_scale`` | float32 ``[L]`` | their scales |

The decoder's requantization to int8 ``q``/``k`` follows from the scales
(``decoder_requantizers``): ``qc_scale * dec_wq_scale / q_scale[l, h]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnforge.errors import ArtifactError
from attnforge.numfmt import INT8, Requantizer, product_format, requantizer_for

from .npz import check_array, fail, json_field, read_npz, write_npz

__all__ = ["HEAD_TENSORS_FORMAT", "HeadTensors", "save_head_tensors",
           "load_head_tensors", "decoder_heads", "decoder_requantizers"]

HEAD_TENSORS_FORMAT = "attnforge.vitcod_head/1"

_REQUIRED = ("q", "k", "v", "q_scale", "k_scale", "v_scale", "o_scale")
_DECODER = ("qc", "kc", "qc_scale", "kc_scale", "dec_wq", "dec_wk", "dec_wq_scale", "dec_wk_scale")


def decoder_heads(heads: int) -> int:
    """Compressed heads of the Q/K auto-encoder for ``heads`` heads: ceil(H/2)."""
    return (heads + 1) // 2


@dataclass
class HeadTensors:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    q_scale: np.ndarray
    k_scale: np.ndarray
    v_scale: np.ndarray
    o_scale: np.ndarray
    qc: np.ndarray | None = None
    kc: np.ndarray | None = None
    qc_scale: np.ndarray | None = None
    kc_scale: np.ndarray | None = None
    dec_wq: np.ndarray | None = None
    dec_wk: np.ndarray | None = None
    dec_wq_scale: np.ndarray | None = None
    dec_wk_scale: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        validate(self, "HeadTensors")

    @property
    def layers(self) -> int:
        return self.q.shape[0]

    @property
    def heads(self) -> int:
        return self.q.shape[1]

    @property
    def head_dim(self) -> int:
        return self.q.shape[3]

    @property
    def has_decoder(self) -> bool:
        return self.qc is not None


def validate(t: HeadTensors, source: str) -> None:
    """Check every field's dtype, shape and range; ``ArtifactError`` names ``source`` and the field."""
    def int8_array(name, ndim):
        return check_array(source, name, getattr(t, name), np.int8, ndim=ndim)

    def scale_array(name, shape):
        a = check_array(source, name, getattr(t, name), np.float32, shape=shape)
        if not (np.isfinite(a).all() and (a > 0).all()):
            fail(source, f"field {name!r} must hold positive finite scales, got values in [{a.min()}, {a.max()}]")

    q, k, v = int8_array("q", 4), int8_array("k", 4), int8_array("v", 4)
    L, H, nq, d = q.shape
    if L < 1 or H < 1 or nq < 1 or d < 1:
        fail(source, f"field 'q' has an empty dimension: shape {q.shape}")
    nk = k.shape[2]
    if k.shape != (L, H, nk, d) or nk < 1:
        fail(source, f"field 'k' must be int8 [{L}, {H}, Nk, {d}], got shape {k.shape}")
    if v.shape != k.shape:
        fail(source, f"field 'v' must have the shape of 'k' {k.shape}, got {v.shape}")
    for name in ("q_scale", "k_scale", "v_scale", "o_scale"):
        scale_array(name, (L, H))
    present = [n for n in _DECODER if getattr(t, n) is not None]
    if present and len(present) != len(_DECODER):
        missing = sorted(set(_DECODER) - set(present))
        fail(source, f"decoder fields are all or nothing: {sorted(present)} given, {missing} missing")
    if present:
        hc = decoder_heads(H)
        qc, kc = int8_array("qc", 4), int8_array("kc", 4)
        if qc.shape != (L, hc, nq, d):
            fail(source, f"field 'qc' must be int8 [{L}, {hc}, {nq}, {d}] (Hc = ceil(H/2)), got {qc.shape}")
        if kc.shape != (L, hc, nk, d):
            fail(source, f"field 'kc' must be int8 [{L}, {hc}, {nk}, {d}] (Hc = ceil(H/2)), got {kc.shape}")
        for name in ("dec_wq", "dec_wk"):
            w = int8_array(name, 3)
            if w.shape != (L, H, hc):
                fail(source, f"field {name!r} must be int8 [{L}, {H}, {hc}], got {w.shape}")
        for name in ("qc_scale", "kc_scale", "dec_wq_scale", "dec_wk_scale"):
            scale_array(name, (L,))
    if not isinstance(t.meta, dict):
        fail(source, f"field 'meta' must be a JSON object, got {type(t.meta).__name__}")


def save_head_tensors(t: HeadTensors, path: str | Path) -> Path:
    """Write ``t`` to ``path`` (validated first; written to a temporary file, then renamed)."""
    validate(t, str(path))
    arrays = {n: getattr(t, n) for n in _REQUIRED}
    if t.has_decoder:
        arrays.update({n: getattr(t, n) for n in _DECODER})
    return write_npz(path, dict(format=np.array(HEAD_TENSORS_FORMAT), meta=np.array(json.dumps(t.meta)), **arrays),
                     compressed=True)


def load_head_tensors(path: str | Path) -> HeadTensors:
    """Load and validate a head-tensors file; every problem raises ``ArtifactError`` naming file and field."""
    arrays = read_npz(path, kind="head-tensors", format=HEAD_TENSORS_FORMAT, required=("meta", *_REQUIRED))
    meta = json_field(arrays, "meta", path)
    unknown = set(arrays) - {"format", "meta", *_REQUIRED, *_DECODER}
    if unknown:
        fail(path, f"unknown field(s) {sorted(unknown)}")
    t = HeadTensors.__new__(HeadTensors)
    for n in (*_REQUIRED, *_DECODER):
        setattr(t, n, arrays.get(n))
    t.meta = meta
    validate(t, str(path))
    return t


def decoder_requantizers(t: HeadTensors, layer: int, head: int) -> tuple[Requantizer, Requantizer]:
    """The (Q, K) decoder requantizers of one head: sums of ``Hc`` int8 products -> int8.

    ``ConfigError`` (``numfmt.check_requantizer``) if the scales make one map every
    sum to 0 or saturate every nonzero one; the message names the scale field.
    """
    if not t.has_decoder:
        raise ArtifactError("these head tensors have no Q/K decoder fields")
    prod = product_format(INT8, INT8)
    hc = t.qc.shape[1]
    sums = (hc * prod.min, hc * prod.max)

    def one(x, in_scale, w_scale, out_scale):
        unit = float(in_scale[layer]) * float(w_scale[layer])
        scale = unit / float(out_scale[layer, head])
        return requantizer_for(scale, sums, out=INT8, what=f"{x} decoder requantizer of layer {layer} head {head}",
                               field=(f"{x}_scale[{layer}, {head}]", float(out_scale[layer, head]),
                                      lambda s: unit / s if s else float("inf")))

    return one("q", t.qc_scale, t.dec_wq_scale, t.q_scale), one("k", t.kc_scale, t.dec_wk_scale, t.k_scale)
