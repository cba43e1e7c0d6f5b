"""Integer element-wise and normalization ops of the integer-only ViT: arithmetic and constants, defined once.

Shared by the integer golden model (``attnforge.algo.vitcod.intvit``) and the
hardware that will reproduce it bit for bit. Like ``attnforge.softmax_int`` this
module is pure integer arithmetic on Python ints or numpy int64 arrays; the
only floats are in the functions that *derive* integer constants from real
scales (``gelu_constants``), run once when a model is compiled, never inside
a forward pass.

Formats: activations between matmuls are int8 (``numfmt.INT8``); the residual
stream, the GELU input and the patch embedding are int16 (``INT16``);
matmul accumulators are int32 (``INT32``, checked by the model builder).

Ops (``x`` an integer array, last axis the channels):

* **Column requantization** (``requantize_columns``): output column ``o`` of an
  int32 accumulator goes through its own ``numfmt.Requantizer`` (per-channel
  weight scales give one multiplier + shift per output channel).

* **Residual add** (``residual_add``): ``y = sat16(rq_a(a) + rq_b(b))``, each
  operand first requantized to the output scale (``rq_a``, ``rq_b``; the model
  gives them an output format 2 bits wider than the stream, so that only the
  sum saturates), the sum saturated to int16.

* **Integer square root** (``isqrt``): the bit-by-bit (digit-by-digit,
  base 4) method, ``ISQRT_ITERATIONS = 31`` fixed iterations for inputs
  ``0 <= n < 2**ISQRT_INPUT_BITS`` (62): ``floor(sqrt(n))`` exactly.

* **LayerNorm** over ``D`` channels (``layernorm``), input int16 ``x``:

  1. ``s = sum_i x_i``; ``c_i = D * x_i - s`` (``= D (x_i - mean)``, exact);
  2. ``v = sum_i c_i**2 + E`` with the integer constant ``E = round(eps * D**3 / s_x**2)`` (LayerNorm's
     ``eps`` in these units; ``v < 2**62`` is checked);
  3. ``sigma = isqrt(v)`` (``= floor(D * sqrt(D) * sqrt(var + eps))``);
  4. ``r = 2**LN_RECIP_BITS // sigma`` (a restoring divider; ``r = 0`` when ``sigma = 0``);
  5. ``n_i = sat16((c_i * r + 2**(LN_SHIFT-1)) >> LN_SHIFT)``,
     ``LN_SHIFT = LN_RECIP_BITS - LN_FRAC_BITS``: ``n_i ~ 2**LN_FRAC_BITS * c_i / sigma
     = 2**LN_FRAC_BITS * (x_i - mean) / (sqrt(D) * std)``, ``|n_i| <= 2**LN_FRAC_BITS``;
  6. ``acc_i = n_i * g_i + b_i`` with the int16 ``g = round(gamma * sqrt(D) / s_g)``
     (one scale ``s_g`` per LayerNorm) and the int32 ``b = round(beta * 2**LN_FRAC_BITS / s_g)``;
  7. ``y_i = rq(acc_i)``, ``rq`` of real scale ``s_g * 2**-LN_FRAC_BITS / s_y``, int8 out.

* **GELU** (``gelu``), I-BERT's i-GELU (Kim et al., 2021) on an int16 input
  ``q`` of real scale ``S``: ``erf`` is the second-order polynomial
  ``erf(y) ~ sgn(y) (1 - A (min(|y|, B) - B)**2)``, ``A = 0.2888``,
  ``B = 1.769``, evaluated in units of ``S' = S / sqrt(2)`` (so ``y = x / sqrt(2)
  = q S'``). With the integer constants ``T = round(B / S')`` and
  ``C = round(1 / (A S'**2))``:

  ``m = min(|q|, T)``; ``L = sgn(q) * (C - (m - T)**2)`` (``erf ~ A S'**2 L``);
  ``g = q * (L + C)`` of real scale ``S * A S'**2 / 2``
  (``GELU(x) = x/2 (1 + erf(x/sqrt 2))``), then requantized to int8.
  ``T < 2**GELU_T_BITS`` keeps ``|g| < 2**57``.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError
from .numfmt import IntFormat, Requantizer, saturate

__all__ = [
    "INT16", "INT32", "ISQRT_INPUT_BITS", "ISQRT_ITERATIONS", "LN_FRAC_BITS", "LN_RECIP_BITS", "LN_SHIFT",
    "GELU_A", "GELU_B", "GELU_T_BITS", "isqrt", "layernorm", "layernorm_stats", "check_layernorm_width",
    "gelu", "gelu_constants", "residual_add", "requantize_columns", "linear_acc",
]

#: Residual stream, GELU input and patch-embedding output.
INT16 = IntFormat(16, signed=True)
#: Matmul accumulators (the model builder checks that no column can overflow it).
INT32 = IntFormat(32, signed=True)

#: isqrt takes 0 <= n < 2**ISQRT_INPUT_BITS and runs ISQRT_INPUT_BITS // 2 iterations.
ISQRT_INPUT_BITS = 62
ISQRT_ITERATIONS = ISQRT_INPUT_BITS // 2
#: The normalized value n has LN_FRAC_BITS fraction bits; the row reciprocal is 2**LN_RECIP_BITS // sigma.
LN_FRAC_BITS = 15
LN_RECIP_BITS = 48
LN_SHIFT = LN_RECIP_BITS - LN_FRAC_BITS

#: I-BERT's erf polynomial: erf(y) ~ sgn(y) (1 - GELU_A (min(|y|, GELU_B) - GELU_B)**2).
GELU_A = 0.2888
GELU_B = 1.769
#: The clip threshold T must be below 2**GELU_T_BITS (then |q (L + C)| < 2**57 for int16 q).
GELU_T_BITS = 20


def isqrt(n):
    """``floor(sqrt(n))`` by the bit-by-bit method, ``ISQRT_ITERATIONS`` fixed steps (Python int or numpy int64).

    Each step tries the next result bit: with ``bit = 4**k``, if ``n >= res + bit``
    then ``n -= res + bit; res = res // 2 + bit`` else ``res //= 2``.
    """
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool):
        if not 0 <= n < (1 << ISQRT_INPUT_BITS):
            raise ValueError(f"isqrt input {n} is outside [0, 2**{ISQRT_INPUT_BITS})")
        n, res, bit = int(n), 0, 1 << (ISQRT_INPUT_BITS - 2)
        for _ in range(ISQRT_ITERATIONS):
            t = res + bit
            if n >= t:
                n, res = n - t, (res >> 1) + bit
            else:
                res >>= 1
            bit >>= 2
        return res
    n = np.asarray(n)
    if n.dtype.kind not in "iu":
        raise TypeError(f"isqrt needs integers, not {n.dtype}")
    if n.size and (n.min() < 0 or n.max() >= (1 << ISQRT_INPUT_BITS)):
        raise ValueError(f"isqrt inputs in [{n.min()}, {n.max()}] leave [0, 2**{ISQRT_INPUT_BITS})")
    n = n.astype(np.int64)
    res = np.zeros_like(n)
    bit = np.int64(1 << (ISQRT_INPUT_BITS - 2))
    for _ in range(ISQRT_ITERATIONS):
        t = res + bit
        ge = n >= t
        n = np.where(ge, n - t, n)
        res = np.where(ge, (res >> 1) + bit, res >> 1)
        bit >>= 2
    return res


def check_layernorm_width(channels: int, in_fmt: IntFormat = INT16) -> None:
    """``ConfigError`` if ``sum_i c_i**2`` of ``channels`` inputs of ``in_fmt`` could reach 2**(ISQRT_INPUT_BITS-1)
    (the other half of the isqrt's range is for ``eps``)."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ConfigError(f"LayerNorm channels must be a positive integer, not {channels!r}")
    c_max = channels * (in_fmt.max - in_fmt.min)
    if channels * c_max * c_max >= 1 << (ISQRT_INPUT_BITS - 1):
        raise ConfigError(f"integer LayerNorm over {channels} channels of {in_fmt}: the variance sum can reach "
                          f"{channels * c_max * c_max:.3g}, beyond 2**{ISQRT_INPUT_BITS - 1} (half the isqrt's range); "
                          f"at most {_max_channels(in_fmt)} channels of {in_fmt} fit")


def _max_channels(in_fmt: IntFormat) -> int:
    span = in_fmt.max - in_fmt.min
    d = 1
    while (d + 1) ** 3 * span * span < 1 << (ISQRT_INPUT_BITS - 1):
        d += 1
    return d


def layernorm_stats(x, eps: int = 0) -> dict:
    """Steps 1-5 over the last axis of int16 ``x``: ``sum``, ``c``, ``var`` (``sum c**2 + eps``), ``sigma``,
    ``recip``, ``n``. ``eps`` is the integer ``E`` of step 2."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"layernorm needs an integer input, not {x.dtype}")
    channels = x.shape[-1]
    check_layernorm_width(channels)
    INT16.check_array("layernorm input", x)
    x = x.astype(np.int64)
    s = x.sum(-1, keepdims=True)
    c = channels * x - s
    if isinstance(eps, bool) or not isinstance(eps, (int, np.integer)) or not 0 <= eps < 1 << (ISQRT_INPUT_BITS - 1):
        raise ValueError(f"layernorm eps must be an integer in [0, 2**{ISQRT_INPUT_BITS - 1}), not {eps!r}")
    v = (c * c).sum(-1, keepdims=True) + int(eps)
    sigma = isqrt(v)
    recip = np.where(sigma > 0, (np.int64(1) << LN_RECIP_BITS) // np.maximum(sigma, 1), 0)
    n = saturate((c * recip + (np.int64(1) << (LN_SHIFT - 1))) >> LN_SHIFT, INT16)
    return dict(sum=s[..., 0], c=c, var=v[..., 0], sigma=sigma[..., 0], recip=recip[..., 0], n=n)


def layernorm(x, gamma, beta, rq: Requantizer, eps: int = 0, *, internals: bool = False):
    """Integer LayerNorm over the last axis (steps 1-7 of the module docstring): int16 ``x`` -> int8.

    ``gamma`` int16 ``[D]`` (``gamma * sqrt(D)`` in units ``s_g``), ``beta`` int32 ``[D]``, ``rq`` the output
    requantizer, ``eps`` the integer ``E``.
    """
    st = layernorm_stats(x, eps)
    gamma, beta = np.asarray(gamma, np.int64), np.asarray(beta, np.int64)
    if gamma.shape != (st["n"].shape[-1],) or beta.shape != gamma.shape:
        raise ValueError(f"layernorm gamma {gamma.shape} and beta {beta.shape} must both be [{st['n'].shape[-1]}]")
    INT16.check_array("layernorm gamma", gamma)
    INT32.check_array("layernorm beta", beta)
    acc = st["n"] * gamma + beta
    y = rq(acc)
    if internals:
        return y, dict(st, acc=acc)
    return y


def gelu_constants(scale: float) -> tuple[int, int, float]:
    """``(T, C, out_scale)`` of i-GELU for an int16 input of real ``scale`` (see the module docstring)."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"GELU input scale must be a positive finite number, not {scale!r}")
    s1 = scale / math.sqrt(2.0)
    t = round(GELU_B / s1)
    if not 1 <= t < 1 << GELU_T_BITS:
        raise ConfigError(f"GELU input scale {scale:.6g} gives the clip threshold T = {t}; T in [1, "
                          f"2**{GELU_T_BITS}) works, i.e. scales in about [{GELU_B * math.sqrt(2) / 2 ** GELU_T_BITS:.3g}, "
                          f"{GELU_B * math.sqrt(2):.3g}]")
    c = round(1.0 / (GELU_A * s1 * s1))
    return t, c, scale * GELU_A * s1 * s1 / 2.0


def gelu(q, t: int, c: int):
    """i-GELU: ``q * (sgn(q) (C - (min(|q|, T) - T)**2) + C)`` on integer ``q`` (int or numpy); the caller requantizes."""
    if isinstance(q, (int, np.integer)) and not isinstance(q, bool):
        q = int(q)
        m = min(abs(q), t)
        sgn = (q > 0) - (q < 0)
        return q * (sgn * (c - (m - t) ** 2) + c)
    q = np.asarray(q).astype(np.int64)
    m = np.minimum(np.abs(q), t)
    return q * (np.sign(q) * (c - (m - t) ** 2) + c)


def residual_add(a, rq_a: Requantizer, b, rq_b: Requantizer, out: IntFormat = INT16):
    """``saturate(rq_a(a) + rq_b(b), out)``: both operands at the output's scale, then one saturating adder."""
    return saturate(rq_a(np.asarray(a, np.int64)) + rq_b(np.asarray(b, np.int64)), out)


def linear_acc(x, weight, bias):
    """``x @ weight.T + bias`` as int64 (int8 ``x [..., in]``, int8 ``weight [out, in]``, int32 ``bias [out]``).

    The model builder checks (``INT32``) that no column can overflow a 32-bit accumulator; this
    is what a MAC line with a 32-bit accumulator computes.
    """
    x = np.asarray(x, np.int64)
    return x @ np.asarray(weight, np.int64).T + np.asarray(bias, np.int64)


def requantize_columns(acc, requantizers) -> np.ndarray:
    """Apply requantizer ``o`` to column ``o`` of the last axis of ``acc`` (one ``numfmt.Requantizer`` each)."""
    acc = np.asarray(acc, np.int64)
    if len(requantizers) != acc.shape[-1]:
        raise ValueError(f"{len(requantizers)} requantizers for {acc.shape[-1]} columns")
    out = np.empty_like(acc)
    for o, rq in enumerate(requantizers):
        out[..., o] = rq(acc[..., o])
    return out

