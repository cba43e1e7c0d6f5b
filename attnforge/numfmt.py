"""Integer number formats shared by the generators (``hw``) and the golden models (``algo``).

Every width, rounding rule and saturation bound that the hardware implements is
defined here once. The generator asks these objects for its signal shapes and
for the widths it needs; the golden model runs the same arithmetic on Python
ints, numpy arrays or torch tensors. Nothing here imports amaranth or torch.

Arithmetic conventions (the hardware implements exactly these):

* two's complement, signed unless a format says otherwise;
* right shifts are arithmetic (floor division by a power of two);
* rounding is *round half up*: add ``1 << (shift - 1)`` before the shift;
* saturation clamps to the destination format's range.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from attnforge.errors import check_int

__all__ = [
    "check_int",
    "IntFormat",
    "INT8",
    "product_format",
    "accumulator_width",
    "Requantizer",
    "saturate",
]


@dataclass(frozen=True)
class IntFormat:
    """A fixed-width integer format.

    Parameters
    ----------
    width : int
        Number of bits, >= 1 (>= 2 for signed formats).
    signed : bool
        Two's complement when true.
    """

    width: int
    signed: bool = True

    def __post_init__(self):
        check_int("IntFormat width", self.width, 2 if self.signed else 1, 256)

    @property
    def min(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    def contains(self, value: int) -> bool:
        return self.min <= value <= self.max

    def wrap(self, value: int) -> int:
        """Reduce a Python int to this format as a register of this width would hold it."""
        value &= (1 << self.width) - 1
        if self.signed and value >> (self.width - 1):
            value -= 1 << self.width
        return value

    def check_array(self, name: str, values) -> None:
        """Raise ValueError naming ``name`` if any element of an int array lies outside the format."""
        lo, hi = int(values.min()), int(values.max())
        if lo < self.min or hi > self.max:
            raise ValueError(
                f"{name} has values in [{lo}, {hi}], outside the {self} range "
                f"[{self.min}, {self.max}]"
            )

    def __str__(self):
        return f"{'int' if self.signed else 'uint'}{self.width}"


#: The operand format of every engine: symmetric int8.
INT8 = IntFormat(8, signed=True)


def product_format(a: IntFormat, b: IntFormat) -> IntFormat:
    """The narrowest format that holds every product of a value of ``a`` and one of ``b``."""
    extremes = [x * y for x in (a.min, a.max) for y in (b.min, b.max)]
    return _format_for_range(min(extremes), max(extremes), signed=a.signed or b.signed)


def accumulator_width(a: IntFormat, b: IntFormat, terms: int) -> int:
    """Bits a signed accumulator needs to sum ``terms`` products of ``a`` and ``b`` without overflow."""
    check_int("number of accumulated terms", terms, 1)
    extremes = [x * y for x in (a.min, a.max) for y in (b.min, b.max)]
    return _format_for_range(min(extremes) * terms, max(extremes) * terms, signed=True).width


def _format_for_range(lo: int, hi: int, signed: bool) -> IntFormat:
    if not signed:
        return IntFormat(max(1, hi.bit_length()), signed=False)
    # Signed width w holds [-2^(w-1), 2^(w-1)-1].
    width = max((hi).bit_length() + 1, (-lo - 1).bit_length() + 1 if lo < 0 else 1, 2)
    return IntFormat(width, signed=True)


def saturate(values, fmt: IntFormat):
    """Clamp a Python int, numpy array or torch tensor to ``fmt``'s range."""
    if isinstance(values, int):
        return min(max(values, fmt.min), fmt.max)
    if hasattr(values, "clamp"):  # torch
        return values.clamp(fmt.min, fmt.max)
    import numpy as np

    return np.clip(values, fmt.min, fmt.max)


@dataclass(frozen=True)
class Requantizer:
    """Requantization by integer multiply, rounding shift and saturation.

    ``y = saturate((x * multiplier + (1 << (shift - 1))) >> shift, out)``
    (no rounding term when ``shift == 0``). This is how a wide accumulator is
    scaled back to int8 by a real-valued factor ``multiplier / 2**shift``.

    Parameters
    ----------
    multiplier : int
        Unsigned multiplier, ``0 <= multiplier < 2**multiplier_width``.
    shift : int
        Right shift, ``0 <= shift <= 62``.
    out : IntFormat
        Destination format (int8 by default).
    multiplier_width : int
        Width of the multiplier register in hardware.
    """

    multiplier: int
    shift: int
    out: IntFormat = INT8
    multiplier_width: int = 16

    def __post_init__(self):
        check_int("requantizer multiplier_width", self.multiplier_width, 1, 32)
        check_int("requantizer multiplier", self.multiplier, 0, (1 << self.multiplier_width) - 1)
        check_int("requantizer shift", self.shift, 0, 62)

    @classmethod
    def from_scale(cls, scale: float, *, out: IntFormat = INT8, multiplier_width: int = 16) -> "Requantizer":
        """The multiplier and shift that best approximate a positive real ``scale``.

        The multiplier uses all ``multiplier_width`` bits so that the relative error
        is at most ``2**-(multiplier_width-1)``.
        """
        check_int("requantizer multiplier_width", multiplier_width, 1, 32)
        # A comparison, not math.isfinite: an int beyond float range raised OverflowError there.
        if not (isinstance(scale, (int, float)) and 0 < scale <= sys.float_info.max):
            raise ValueError(f"requantization scale must be a positive finite number, not {scale!r}")
        mantissa, exponent = math.frexp(scale)  # scale = mantissa * 2**exponent, mantissa in [0.5, 1)
        multiplier = round(mantissa * (1 << multiplier_width))
        shift = multiplier_width - exponent
        if multiplier == 1 << multiplier_width:  # rounding carried out of the mantissa
            multiplier >>= 1
            shift -= 1
        if shift < 0:  # scale too large for the multiplier alone
            raise ValueError(
                f"requantization scale {scale} needs a left shift; at most "
                f"{(1 << multiplier_width) - 1} is representable"
            )
        while shift > 62:
            multiplier >>= 1
            shift -= 1
        return cls(multiplier, shift, out, multiplier_width)

    @property
    def scale(self) -> float:
        return self.multiplier / (1 << self.shift)

    def input_product_width(self, in_fmt: IntFormat) -> int:
        """Width of ``x * multiplier + rounding`` for ``x`` in ``in_fmt`` (what the hardware must hold)."""
        m = IntFormat(self.multiplier_width + 1, signed=True)  # unsigned multiplier as signed operand
        prod = product_format(in_fmt, m)
        return prod.width + 1  # + rounding term

    def __call__(self, values):
        """Apply to a Python int, numpy int64 array or torch int64 tensor."""
        rounding = (1 << (self.shift - 1)) if self.shift else 0
        return saturate((values * self.multiplier + rounding) >> self.shift, self.out)
