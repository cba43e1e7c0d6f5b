"""Number formats and constants of the linear-attention decode step, shared by the
integer golden model (``algo/linear/golden.py``) and the generator (``hw/linear/``).

One head's decode step, per token (all integers, see ``docs/linear-hw.md``):

* ``phi(x) = max(x, 0)`` on int8 q and k (ReLU feature map: ``PHI_FORMAT``, uint7);
* state ``S[i][j] += phi(k)[i] * v[j]`` in ``state_format`` (and, for the
  normalized feature map, ``z[i] += phi(k)[i]`` in ``normalizer_format``);
* numerator ``A[j] = sum_i phi(q)[i] * S[i][j]`` in ``numerator_format``, the state
  including the current token;
* normalized variant only: ``den = sum_i phi(q)[i] * z[i]`` and the quotient
  ``A[j] / den`` in fixed point with ``DIV_FRAC_BITS`` fraction bits, computed
  through a reciprocal of ``den`` reduced to ``DIV_DEN_BITS`` significant bits;
* causal depthwise convolution ``C[j] = sum_m w[m][j] * v_{t-m}[j]`` over the
  last ``conv_taps`` values of v (int8 taps), in ``conv_format``;
* output ``saturate(attn_requant(A) + conv_requant(C), INT8)`` where both
  requantizers land in ``MID_FORMAT``.

Everything here is pure Python: the generator asks this object for its widths,
the golden model for the same widths, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnforge.errors import check_int
from attnforge.numfmt import INT8, IntFormat, Requantizer, accumulator_width, requantizer_for

__all__ = [
    "PHI_FORMAT", "MID_FORMAT", "FEATURE_MAPS", "DIV_DEN_BITS", "DIV_FRAC_BITS",
    "CMD_TOKEN", "CMD_COMMIT", "CMD_RESET", "CMD_TAPS", "MAX_WIDTH",
    "LinearDecodeFormat", "random_data_requant",
]

#: ReLU of an int8 value: 0..127.
PHI_FORMAT = IntFormat(7, signed=False)
#: Where both requantizers land before they are added and saturated to int8.
MID_FORMAT = IntFormat(16, signed=True)
#: Feature maps of the golden model. "relu": unnormalized, out = phi(q)^T S.
#: "relu_norm": normalized, out = phi(q)^T S / phi(q)^T z (also built in hardware).
FEATURE_MAPS = ("relu", "relu_norm")
#: Divider precision of the normalized variant: the denominator is reduced to
#: this many significant bits (numerator shifted alike) before its reciprocal
#: floor(2**(DIV_DEN_BITS + DIV_FRAC_BITS) / den) is taken.
DIV_DEN_BITS = 16
#: Fraction bits of the quotient num/den handed to the attention requantizer.
DIV_FRAC_BITS = 8
#: Widest accumulator any of these formats may need (golden model runs in int64,
#: requantization multiplies by a 16-bit multiplier: keep the product < 2**63).
MAX_WIDTH = 44

#: Commands on the datapath's input stream (field ``cmd``).
CMD_TOKEN = 0   # one token (q, k, v) of a verify block; ``last`` ends the block
CMD_COMMIT = 1  # commit(a): fold the first ``a`` tokens of the last block
CMD_RESET = 2   # clear state, normalizer, convolution history, token count
CMD_TAPS = 3    # load convolution taps w[a][:] = v


@dataclass(frozen=True)
class LinearDecodeFormat:
    """Arithmetic of one head's linear-attention decode step.

    Parameters
    ----------
    d : int
        Head dimension (q, k, v have d int8 elements), 2..256.
    conv_taps : int
        K, the causal depthwise convolution's kernel size (current + K-1 past v), 1..16.
    max_tokens : int
        Longest sequence (committed tokens since reset) for which the widths are
        proven not to overflow; past it a sticky flag rises.
    t_max : int
        Most draft tokens in one verify block, 1..64.
    feature_map : str
        One of ``FEATURE_MAPS``.
    attn_multiplier, attn_shift, conv_multiplier, conv_shift : int
        The two requantizers (``Requantizer`` with 16-bit multiplier, out ``MID_FORMAT``).
    """

    d: int = 16
    conv_taps: int = 4
    max_tokens: int = 4096
    t_max: int = 8
    feature_map: str = "relu"
    attn_multiplier: int = 1 << 15
    attn_shift: int = 30
    conv_multiplier: int = 1 << 15
    conv_shift: int = 22

    def __post_init__(self):
        check_int("linear decode d (head dim)", self.d, 2, 256)
        check_int("linear decode conv_taps (K)", self.conv_taps, 1, 16)
        check_int("linear decode max_tokens", self.max_tokens, 1)
        check_int("linear decode t_max (verify block size)", self.t_max, 1, 64)
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"linear decode feature_map must be one of {FEATURE_MAPS}, not {self.feature_map!r}")
        # Requantizer validates multiplier and shift ranges with its own messages.
        self.attn_requant, self.conv_requant  # noqa: B018
        for what, fmt in (("state", self.state_format), ("numerator", self.numerator_format),
                          ("normalizer", self.normalizer_format), ("denominator", self.denominator_format)):
            if fmt.width > MAX_WIDTH:
                raise ValueError(
                    f"linear decode with d={self.d}, max_tokens={self.max_tokens}, t_max={self.t_max} needs a "
                    f"{fmt.width}-bit {what}; at most {MAX_WIDTH} bits are supported (lower max_tokens)")

    # Terms a state accumulator may hold: every committed token plus a full
    # speculative block on top of it.
    @property
    def state_terms(self) -> int:
        return self.max_tokens + self.t_max

    @property
    def state_format(self) -> IntFormat:
        return IntFormat(accumulator_width(PHI_FORMAT, INT8, self.state_terms))

    @property
    def normalizer_format(self) -> IntFormat:
        return IntFormat(accumulator_width(PHI_FORMAT, IntFormat(1, signed=False), self.state_terms))

    @property
    def numerator_format(self) -> IntFormat:
        return IntFormat(accumulator_width(PHI_FORMAT, self.state_format, self.d))

    @property
    def denominator_format(self) -> IntFormat:
        return IntFormat(accumulator_width(PHI_FORMAT, self.normalizer_format, self.d))

    # The normalized variant's divider. Within the proven range every |S[i][j]| <=
    # 128 z[i] (each term is phi(k)[i] * v[j] with |v[j]| <= 128), so |A| <= 128 den:
    # the numerator shifted like the denominator (den >> s keeps DIV_DEN_BITS bits)
    # stays within 128 (den' + 1) <= 2**(DIV_DEN_BITS + 7), and the quotient within
    # 128 (1 + 2**-15) 2**DIV_FRAC_BITS + 1. The hardware holds them at these widths
    # (one bit of margin each); the golden model computes them in int64.
    @property
    def scaled_numerator_format(self) -> IntFormat:
        """``A >> s`` of ``divide_fixed`` (relu_norm)."""
        return IntFormat(DIV_DEN_BITS + 9)

    @property
    def quotient_format(self) -> IntFormat:
        """``divide_fixed``'s result, the attention requantizer's input (relu_norm)."""
        return IntFormat(DIV_FRAC_BITS + 10)

    @property
    def attn_input_format(self) -> IntFormat:
        """What the attention requantizer takes: the numerator, or the quotient (relu_norm)."""
        return self.quotient_format if self.feature_map == "relu_norm" else self.numerator_format

    @property
    def conv_format(self) -> IntFormat:
        return IntFormat(accumulator_width(INT8, INT8, self.conv_taps))

    @property
    def attn_requant(self) -> Requantizer:
        return Requantizer(self.attn_multiplier, self.attn_shift, MID_FORMAT)

    @property
    def conv_requant(self) -> Requantizer:
        return Requantizer(self.conv_multiplier, self.conv_shift, MID_FORMAT)

    @property
    def block_width(self) -> int:
        """Bits of a token count 0..t_max (the ``a`` of commit)."""
        return max(1, max(self.t_max, self.conv_taps - 1).bit_length())

    @staticmethod
    def requant_params(scale_attn: float, scale_conv: float) -> dict:
        """Multiplier/shift keywords for two real scales (accumulator unit -> output unit), unchecked
        (``checked_requant_params`` also checks them against this format's input ranges)."""
        a = Requantizer.from_scale(scale_attn, out=MID_FORMAT)
        c = Requantizer.from_scale(scale_conv, out=MID_FORMAT)
        return dict(attn_multiplier=a.multiplier, attn_shift=a.shift,
                    conv_multiplier=c.multiplier, conv_shift=c.shift)

    def checked_requant_params(self, attn_scale: float, conv_scale: float) -> dict:
        """``requant_params`` for this format's datapath, each requantizer checked against what it takes
        (``attn_input_format``, ``conv_format``; ``numfmt.check_requantizer``).

        ``ConfigError`` naming ``attn_scale`` or ``conv_scale``, the multiplier and shift, and the
        scales that work, if a scale would map every value to 0 (the term vanishes from every
        output) or saturate every nonzero one. The other fields of this format are kept as they are.
        """
        same = lambda s: s  # noqa: E731  (the scale is the field)
        a = requantizer_for(float(attn_scale), self.attn_input_format, out=MID_FORMAT,
                            what="attention requantizer", field=("attn_scale", float(attn_scale), same))
        c = requantizer_for(float(conv_scale), self.conv_format, out=MID_FORMAT,
                            what="convolution requantizer", field=("conv_scale", float(conv_scale), same))
        return dict(attn_multiplier=a.multiplier, attn_shift=a.shift,
                    conv_multiplier=c.multiplier, conv_shift=c.shift)


def random_data_requant(d: int, conv_taps: int, typical_tokens: int = 300, feature_map: str = "relu") -> dict:
    """Requantizer keywords that keep uniformly random int8 data's outputs mostly inside int8.

    For uniform int8 q, k, v the numerator grows like ``2e5 * sqrt(d * tokens)``
    (random-walk state) and the conv sum like ``5.5e3 * sqrt(K)``; both are
    scaled to land around 40 and 30 output units. Normalized (``relu_norm``):
    the quotient is a weighted mean of v with ``DIV_FRAC_BITS`` fraction bits,
    mapped to twice that mean. Used by the testbench and ``attnforge linear sim``
    without ``--tensors``.
    """
    if feature_map == "relu_norm":
        attn = 2.0 / (1 << DIV_FRAC_BITS)
    else:
        attn = 40.0 / (2.0e5 * (d * typical_tokens) ** 0.5)
    conv = 30.0 / (5.5e3 * conv_taps ** 0.5)
    return LinearDecodeFormat.requant_params(attn, conv)
