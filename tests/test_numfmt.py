"""Number formats: ranges, accumulator widths and requantization, checked against brute force."""

import itertools

import numpy as np
import pytest
import torch

from attnforge.numfmt import INT8, IntFormat, Requantizer, accumulator_width, product_format, saturate


def test_int8_range():
    assert (INT8.min, INT8.max) == (-128, 127)
    assert (IntFormat(8, signed=False).min, IntFormat(8, signed=False).max) == (0, 255)


@pytest.mark.parametrize("value, wrapped", [(127, 127), (128, -128), (-129, 127), (256, 0), (-1, -1), (255, -1)])
def test_wrap_int8(value, wrapped):
    assert INT8.wrap(value) == wrapped


@pytest.mark.parametrize("width", [2, 3, 4, 5])
@pytest.mark.parametrize("terms", [1, 2, 3, 7, 8, 9])
def test_accumulator_width_is_least_that_holds_every_sum(width, terms):
    fmt = IntFormat(width)
    values = range(fmt.min, fmt.max + 1)
    products = [a * b for a, b in itertools.product(values, values)]
    lo, hi = min(products) * terms, max(products) * terms  # extremes of a sum of `terms` products
    bits = accumulator_width(fmt, fmt, terms)
    assert IntFormat(bits).contains(lo) and IntFormat(bits).contains(hi)
    assert not (IntFormat(bits - 1).contains(lo) and IntFormat(bits - 1).contains(hi))


def test_int8_products_need_16_bits():
    # (-128) * (-128) = 16384 = 2**14 needs 16 signed bits, not 15.
    assert product_format(INT8, INT8).width == 16
    assert accumulator_width(INT8, INT8, 1) == 16
    assert accumulator_width(INT8, INT8, 4096) == 28


@pytest.mark.parametrize("bad", [0, 1, 257, 3.0, True])
def test_intformat_wrong_width(bad):
    with pytest.raises((TypeError, ValueError), match="width"):
        IntFormat(bad)


@pytest.mark.parametrize("x, mult, shift, want", [
    (5, 1, 1, 3),        # 2.5 rounds half up to 3
    (-5, 1, 1, -2),      # -2.5 rounds half up to -2
    (7, 1, 2, 2),        # 1.75 -> 2
    (-7, 1, 2, -2),      # -1.75 -> -2
    (1000, 3, 2, 127),   # 750 saturates
    (-1000, 3, 2, -128),
    (100, 1, 0, 100),    # no shift, no rounding term
])
def test_requantize_by_hand(x, mult, shift, want):
    assert Requantizer(mult, shift)(x) == want


def test_requantize_same_on_int_numpy_torch():
    rq = Requantizer.from_scale(0.0123)
    xs = list(range(-20000, 20000, 37))
    as_int = [rq(x) for x in xs]
    assert np.array_equal(rq(np.array(xs, dtype=np.int64)), as_int)
    assert rq(torch.tensor(xs, dtype=torch.int64)).tolist() == as_int


@pytest.mark.parametrize("scale", [1e-6, 0.0123, 0.5, 0.999, 1.0, 3.7, 200.0])
def test_requantizer_from_scale_error_bound(scale):
    rq = Requantizer.from_scale(scale, multiplier_width=16)
    assert abs(rq.scale - scale) / scale <= 2.0 ** -15
    # Applied to values, the result is the float product rounded, within one step.
    xs = np.arange(-3000, 3000, 7)
    want = np.clip(np.floor(xs * scale + 0.5), -128, 127)
    assert np.max(np.abs(rq(xs) - want)) <= 1


def test_requantizer_wrong_inputs():
    with pytest.raises(ValueError, match="positive finite"):
        Requantizer.from_scale(-1.0)
    with pytest.raises(ValueError, match="multiplier"):
        Requantizer(1 << 16, 3)
    with pytest.raises(ValueError, match="left shift"):
        Requantizer.from_scale(1e6)


def test_saturate_kinds():
    assert saturate(300, INT8) == 127
    assert saturate(np.array([-300, 5]), INT8).tolist() == [-128, 5]
    assert saturate(torch.tensor([-300, 5]), INT8).tolist() == [-128, 5]


def test_requantizer_exact_where_int64_would_wrap():
    """A wide value times the multiplier can leave int64 (i-GELU's q (L + C) times a 16-bit multiplier: a
    1-epoch 17-token ViT gave T = 156871, C = 27228954681, multiplier 34016, shift 57); numpy and torch wrap
    silently, so the requantizer computes such arrays on Python ints: the same as on a Python int."""
    import numpy as np
    import torch

    rq = Requantizer(multiplier=34016, shift=57, out=INT8, multiplier_width=16)
    g = 8563 * (2 * 27228954681 - (8563 - 156871) ** 2)         # 2.7e14: g * 34016 > 2**63
    assert g * 34016 >= 1 << 63
    want = [rq(v) for v in (g, -g, 5, -(1 << 62))]
    assert want[0] == 66 and want[1] == -66                      # the wrapped int64 product gave -62
    arr = np.array([g, -g, 5, -(1 << 62)], np.int64)
    assert rq(arr).tolist() == want and rq(arr).dtype == np.int64
    assert rq(torch.tensor(arr)).tolist() == want
    assert rq(np.zeros(0, np.int64)).size == 0
