"""Integer-only row softmax of the ViTCoD accelerator: constants and arithmetic, defined once.

Shared by the golden model (``attnforge.algo.vitcod.golden``) and the generator
(``attnforge.hw.vitcod``). Pure Python; the functions take Python ints, numpy
int64 arrays or torch int64 tensors (only ``*``, ``+``, ``>>``, ``&`` and
``saturate`` are used, so every backend computes the same bits).

For one query row with integer scores ``S_j`` (``j`` over the kept keys only):

1. ``m = max_j S_j``.
2. ``z_j = sat_u16(((m - S_j) * exp_mult + round) >> exp_shift)`` by the
   ``exp`` requantizer: ``z`` is ``(m - S_j) * c`` in units of ``2**-EXP_FRAC_BITS``
   where ``c = q_scale * k_scale / sqrt(d) * log2(e)`` (so ``exp(real score
   difference) = 2 ** (-z / 2**EXP_FRAC_BITS)``).
3. ``E_j = EXP2_LUT[z_j & (2**EXP_FRAC_BITS - 1)] >> (z_j >> EXP_FRAC_BITS)``:
   ``EXP2_LUT[f] = round(2**EXP_BITS * 2**(-f / 2**EXP_FRAC_BITS))``, so
   ``E_j ~ 2**EXP_BITS * exp(-(m - S_j) * scale)`` and the row maximum has
   ``E = 2**EXP_BITS`` exactly. Shifts of ``EXP_BITS + 1`` or more give 0.
4. ``sum = sum_j E_j`` (``>= 2**EXP_BITS`` for a non-empty row).
5. ``r = 2**RECIP_BITS // sum`` (floor; the hardware's restoring divider).
6. ``P_j = min((E_j * r + 2**(PROB_SHIFT-1)) >> PROB_SHIFT, PROB_MAX)``:
   probabilities as unsigned fixed point with ``PROB_BITS`` fraction bits,
   ``PROB_SHIFT = RECIP_BITS - PROB_BITS``.

Error bound of the exponent approximation (step 2-3), for the requantizer's
real scale ``c' = exp_mult / 2**exp_shift`` (``|c'/c - 1| <= 2**-15`` for
``Requantizer.from_scale``): with ``x = (m - S_j) * c'`` the exact log2-domain
exponent, ``z`` rounds ``x * 2**F`` to the nearest integer (|error| <= 1/2 unit,
``F = EXP_FRAC_BITS``), the table entry is rounded to the nearest integer
(<= 1/2 of an entry >= 2**(EXP_BITS-1)) and the final shift floors (< 1 unit):

    |E_j - 2**EXP_BITS * 2**(-x)| <= (2**(2**-(F+1)) - 1 + 2**-EXP_BITS) * E_j + 1
                                   <= 0.0055 * E_j + 1      (F = 6, EXP_BITS = 15)

where E_j is in units of 2**-EXP_BITS of the row maximum. A row with no kept key
(G = 0 and an empty sparse row) has no softmax: its output is all zeros.
"""

from __future__ import annotations

import math
import numbers
import sys

from .numfmt import INT8, IntFormat, Requantizer, product_format, requantizer_for, saturate

__all__ = [
    "EXP_FRAC_BITS", "EXP_BITS", "EXP2_LUT", "Z_FORMAT", "E_FORMAT", "RECIP_BITS",
    "PROB_BITS", "PROB_SHIFT", "PROB_MAX", "PROB_FORMAT", "EXP_ERROR_BOUND",
    "exp_requantizer", "out_requantizer", "exp2_neg", "reciprocal", "probability",
    "sum_width", "recip_width", "score_diff_range", "OUT_INPUT_RANGE",
]

#: Fraction bits of the log2-domain exponent z (table index width).
EXP_FRAC_BITS = 6
#: E of the row maximum is 2**EXP_BITS.
EXP_BITS = 15
#: 2**EXP_BITS * 2**(-f / 2**EXP_FRAC_BITS), f = 0 .. 2**EXP_FRAC_BITS - 1.
EXP2_LUT = tuple(round((1 << EXP_BITS) * 2.0 ** (-f / (1 << EXP_FRAC_BITS)))
                 for f in range(1 << EXP_FRAC_BITS))
#: z saturates to this unsigned format (any z >= 2**(EXP_FRAC_BITS+4) already gives E = 0).
Z_FORMAT = IntFormat(16, signed=False)
#: E values: unsigned, 0 .. 2**EXP_BITS.
E_FORMAT = IntFormat(EXP_BITS + 1, signed=False)
#: The reciprocal is floor(2**RECIP_BITS / sum).
RECIP_BITS = 40
#: Probabilities have PROB_BITS fraction bits and saturate at PROB_MAX (fits a signed 16-bit operand).
PROB_BITS = 15
PROB_SHIFT = RECIP_BITS - PROB_BITS
PROB_MAX = (1 << PROB_BITS) - 1
PROB_FORMAT = IntFormat(PROB_BITS + 1, signed=True)
#: Relative part of the exponent error bound (see the module docstring); the absolute part is 1 unit.
EXP_ERROR_BOUND = 2.0 ** (2.0 ** -(EXP_FRAC_BITS + 1)) - 1 + 2.0 ** -EXP_BITS

assert EXP2_LUT[0] == 1 << EXP_BITS and all(v < (1 << E_FORMAT.width) for v in EXP2_LUT)


def score_diff_range(head_dim: int) -> tuple[int, int]:
    """The values ``m - S`` (row maximum less a score) of int8 ``q . k`` over ``head_dim`` channels can take."""
    prod = product_format(INT8, INT8)
    return 0, head_dim * (prod.max - prod.min)


#: What the output requantizer takes: ``sum_j P_j v_j``, a convex combination of int8 v with
#: ``PROB_BITS`` fraction bits.
OUT_INPUT_RANGE = (INT8.min << PROB_BITS, INT8.max << PROB_BITS)


def exp_requantizer(q_scale: float, k_scale: float, head_dim: int) -> Requantizer:
    """The requantizer from a score difference ``m - S`` to ``z`` (step 2).

    ``ConfigError`` if it would make every ``z`` 0 (the scores could not change the
    softmax) or saturate every nonzero difference (``numfmt.check_requantizer``).
    """
    if not (isinstance(head_dim, int) and 0 < head_dim <= sys.float_info.max):   # math.sqrt of more overflows
        raise ValueError(f"head_dim must be a positive integer, not {head_dim!r}")
    for name, s in (("q_scale", q_scale), ("k_scale", k_scale)):
        if not (isinstance(s, (int, float)) and 0 < s <= sys.float_info.max):   # NaN, inf, huge ints: no
            raise ValueError(f"{name} must be a positive finite number, not {s!r}")
    per_unit = math.log2(math.e) * (1 << EXP_FRAC_BITS) / math.sqrt(head_dim)
    return requantizer_for(q_scale * k_scale * per_unit, score_diff_range(head_dim), out=Z_FORMAT,
                           what="softmax exponent requantizer",
                           field=("q_scale * k_scale", q_scale * k_scale, lambda c: c / per_unit))


def out_requantizer(v_scale: float, o_scale: float) -> Requantizer:
    """The requantizer from ``sum_j P_j v_j`` (P with PROB_BITS fraction bits) to the int8 output.

    ``ConfigError`` if it would map every output to 0 or saturate every nonzero one
    (``numfmt.check_requantizer`` over ``OUT_INPUT_RANGE``).
    """
    for name, s in (("v_scale", v_scale), ("o_scale", o_scale)):
        if not (isinstance(s, (int, float)) and 0 < s <= sys.float_info.max):   # NaN, inf, huge ints: no
            raise ValueError(f"{name} must be a positive finite number, not {s!r}")
    unit = v_scale / (1 << PROB_BITS)
    return requantizer_for(unit / o_scale, OUT_INPUT_RANGE, out=INT8, what="attention output requantizer",
                           field=("o_scale", o_scale, lambda s: unit / s if s else math.inf))


def exp2_neg(z):
    """Step 3: ``EXP2_LUT[z & mask] >> (z >> EXP_FRAC_BITS)`` for z >= 0 (int, numpy or torch)."""
    mask = (1 << EXP_FRAC_BITS) - 1
    if isinstance(z, int):
        if z < 0:
            raise ValueError(f"exp2_neg needs z >= 0, not {z}")
        n = z >> EXP_FRAC_BITS
        return EXP2_LUT[z & mask] >> n if n <= EXP_BITS else 0
    if hasattr(z, "clamp"):  # torch
        import torch
        lut = torch.tensor(EXP2_LUT, dtype=torch.int64)
        n = (z >> EXP_FRAC_BITS).clamp(max=EXP_BITS + 1)
        return lut[z & mask] >> n
    import numpy as np
    z = np.asarray(z)
    if z.dtype.kind not in "iu":
        raise TypeError(f"exp2_neg needs integer z, not {z.dtype}")
    if z.size and z.min() < 0:
        raise ValueError(f"exp2_neg needs z >= 0, got {z.min()}")
    # As int64 (uint64 does not shift against the int64 table); z >= 2**(EXP_FRAC_BITS + 5) gives 0 anyway.
    z = np.minimum(z, np.uint64(1 << 62)).astype(np.int64) if z.dtype == np.uint64 else z.astype(np.int64)
    lut = np.asarray(EXP2_LUT, dtype=np.int64)
    n = np.minimum(z >> EXP_FRAC_BITS, EXP_BITS + 1)
    return lut[z & mask] >> n


def reciprocal(total: int) -> int:
    """Step 5: ``2**RECIP_BITS // total`` for a row sum ``total >= 2**EXP_BITS``."""
    if isinstance(total, bool) or not isinstance(total, numbers.Integral):
        raise TypeError(f"row sum must be an integer, not {total!r}")
    if total < (1 << EXP_BITS):
        raise ValueError(f"row sum {total} is below 2**{EXP_BITS}; a non-empty row has its maximum E = 2**{EXP_BITS}")
    return (1 << RECIP_BITS) // total


def probability(e, r):
    """Step 6: fixed-point probability from E and the row's reciprocal (int, numpy or torch)."""
    p = (e * r + (1 << (PROB_SHIFT - 1))) >> PROB_SHIFT
    if isinstance(p, int):
        return min(p, PROB_MAX)
    return saturate(p, IntFormat(PROB_BITS, signed=False))


def sum_width(max_keys: int) -> int:
    """Bits of the row sum for up to ``max_keys`` kept keys per row."""
    return ((1 << EXP_BITS) * max_keys).bit_length()


def recip_width() -> int:
    """Bits of the reciprocal (its largest value is 2**(RECIP_BITS - EXP_BITS))."""
    return RECIP_BITS - EXP_BITS + 1
