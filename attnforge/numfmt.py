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

from attnforge.errors import ConfigError, check_int

__all__ = [
    "IntFormat",
    "INT8",
    "product_format",
    "accumulator_width",
    "Requantizer",
    "saturate",
    "requantizer_scale_range",
    "check_requantizer",
    "requantizer_for",
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
            raise ConfigError(f"requantization scale must be a positive finite number, not {scale!r}")
        mantissa, exponent = math.frexp(scale)  # scale = mantissa * 2**exponent, mantissa in [0.5, 1)
        multiplier = round(mantissa * (1 << multiplier_width))
        shift = multiplier_width - exponent
        if multiplier == 1 << multiplier_width:  # rounding carried out of the mantissa
            multiplier >>= 1
            shift -= 1
        if shift < 0:  # scale too large for the multiplier alone
            raise ConfigError(
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
        if not isinstance(values, int) and _may_overflow_int64(values, self.multiplier, rounding):
            return _exact(values, lambda v: saturate((v * self.multiplier + rounding) >> self.shift, self.out))
        return saturate((values * self.multiplier + rounding) >> self.shift, self.out)


def _may_overflow_int64(values, multiplier: int, rounding: int) -> bool:
    """Whether ``values * multiplier + rounding`` can leave int64 for this numpy array / torch tensor (the
    product of a wide value and a 16-bit multiplier does: i-GELU's ``q (L + C)`` reaches 2**57 for T near
    2**20, times the multiplier 2**73; numpy and torch wrap around silently)."""
    if values.numel() == 0 if hasattr(values, "numel") else values.size == 0:
        return False
    big = max(int(values.max()), -int(values.min()))
    return big * multiplier + rounding >= 1 << 63


def _exact(values, f):
    """``f`` applied on Python ints (a numpy object array) and the result back in ``values``' kind (the
    result is saturated, so it fits int64)."""
    import numpy as np

    if hasattr(values, "clamp"):  # torch
        import torch

        out = _exact(values.cpu().numpy(), f)
        return torch.from_numpy(out).to(values.device)
    return np.asarray(f(np.asarray(values).astype(object)), dtype=np.int64)


def _bounds(in_range) -> tuple[int, int]:
    if isinstance(in_range, IntFormat):
        return in_range.min, in_range.max
    lo, hi = (int(v) for v in in_range)
    if lo > hi:
        raise ValueError(f"requantizer input range [{lo}, {hi}] is empty")
    return lo, hi


def requantizer_scale_range(in_range, out: IntFormat = INT8) -> tuple[float, float]:
    """The real scales ``s`` for which a requantizer of inputs in ``in_range`` (an ``IntFormat`` or
    ``(lo, hi)``) to ``out`` is not degenerate (see ``check_requantizer``): ``lo_s <= s < hi_s``.

    With ``y(x) = floor(x * s + 1/2)``: some input gives ``y != 0`` iff ``s >= 1 / (2 max(hi, -lo))``;
    the input 1 stays inside ``out`` iff ``s < out.max + 1/2``, the input -1 iff ``s < 1/2 - out.min``.
    (The multiplier's rounding moves these ends by a relative ``2**-(multiplier_width-1)`` at most.)
    """
    lo, hi = _bounds(in_range)
    big = max(hi, -lo)
    if big < 1:
        return math.inf, math.inf  # only 0: every requantizer maps it to 0
    top = max(out.max + 0.5 if hi >= 1 else -math.inf, 0.5 - out.min if lo <= -1 else -math.inf)
    return 0.5 / big, top


def _degenerate(rq: Requantizer, lo: int, hi: int) -> str | None:
    """What is wrong with ``rq`` on ``[lo, hi]``, or None."""
    if rq(lo) == 0 and rq(hi) == 0:  # monotone in x (multiplier >= 0), so 0 everywhere
        return f"maps every input in [{lo}, {hi}] to 0"
    rounding = (1 << (rq.shift - 1)) if rq.shift else 0
    exact = lambda x: (x * rq.multiplier + rounding) >> rq.shift  # noqa: E731  (before saturation)
    if (hi < 1 or exact(1) > rq.out.max) and (lo > -1 or exact(-1) < rq.out.min):
        return f"saturates every nonzero input in [{lo}, {hi}] to the {rq.out} bounds"
    return None


def check_requantizer(rq: Requantizer, in_range, *, what: str, scale: float | None = None,
                      field: tuple | None = None) -> Requantizer:
    """``rq`` if its output depends on its input; else ``ConfigError``.

    A requantizer is refused when it maps every value of ``in_range`` (the input
    format, or ``(lo, hi)``) to 0, or sends every nonzero value beyond a bound of
    its output format: the result would not depend on the data. This is the one
    check every requantizer derived from scales goes through (the ViTCoD
    softmax and output, the Q/K decoder, the linear decode output stage).

    The message names ``what`` (the requantizer), its multiplier and shift, the
    real ``scale`` it was derived from, and the scales that work
    (``requantizer_scale_range``). ``field = (name, value, convert)`` names the
    user's quantity the scale came from, its value, and a monotone function from
    a requantizer scale to that quantity: the message then gives that
    quantity's working range too.
    """
    lo, hi = _bounds(in_range)
    problem = _degenerate(rq, lo, hi)
    if problem is None:
        return rq
    raise ConfigError(_degenerate_message(f"{what}: multiplier {rq.multiplier}, shift {rq.shift} "
                                          f"(real scale {rq.scale:.6g}) {problem}", lo, hi, rq.out, scale, field))


def _degenerate_message(head: str, lo: int, hi: int, out: IntFormat, scale, field) -> str:
    s_lo, s_hi = requantizer_scale_range((lo, hi), out)
    msg = head if scale is None else f"{head}; it was derived from the scale {scale:.6g}"
    msg += f"; scales in about [{s_lo:.6g}, {s_hi:.6g}) work"
    if field is not None:
        name, value, convert = field
        a, b = sorted((convert(s_lo), convert(s_hi)))
        msg += f": {name} is {value:.6g}, {name} in about [{a:.6g}, {b:.6g}] works"
    return msg


def requantizer_for(scale: float, in_range, *, what: str, out: IntFormat = INT8, field: tuple | None = None,
                    multiplier_width: int = 16) -> Requantizer:
    """``Requantizer.from_scale(scale)`` checked by ``check_requantizer`` against ``in_range``.

    A scale too large for the multiplier raises the same ``ConfigError`` (with the scales that work)
    instead of ``from_scale``'s own error.
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"{what}: the scale must be a positive finite number, not {scale!r}")
    try:
        rq = Requantizer.from_scale(scale, out=out, multiplier_width=multiplier_width)
    except ConfigError:
        lo, hi = _bounds(in_range)
        raise ConfigError(_degenerate_message(f"{what}: the scale {scale:.6g} needs a left shift (more than a "
                                              f"{multiplier_width}-bit multiplier)", lo, hi, out, None,
                                              field)) from None
    return check_requantizer(rq, in_range, what=what, scale=scale, field=field)
