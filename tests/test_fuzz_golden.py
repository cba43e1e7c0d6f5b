"""Property-based fuzzing of the golden models' input checks: the ViTCoD head golden
(algo/vitcod/golden.py), the linear decode golden (algo/linear/golden.py), the number
formats (numfmt.py) and the integer softmax's entry points (softmax_int.py).

Whatever arrays, dtypes, shapes and values come in, the result is an answer or a
``ValueError``/``TypeError`` (``ConfigError`` and ``ArtifactError`` are ``ValueError``s)
whose message names the argument; never IndexError, KeyError, ZeroDivisionError,
OverflowError or AttributeError. Sizes stay small: the golden models are O(N^2).
"""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from attnforge.algo.linear.golden import LinearDecodeGolden
from attnforge.algo.vitcod.golden import HeadParams, head_params, vitcod_head_golden
from attnforge.formats.csr import CSR, dense_to_csr
from attnforge.linear_format import LinearDecodeFormat
from attnforge.numfmt import INT8, IntFormat, Requantizer
from attnforge.softmax_int import PROB_MAX, exp2_neg, exp_requantizer, out_requantizer, probability, reciprocal

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint64", "float16", "float32", "float64", "<U2"]


def arrays(max_dims=3, max_side=4, dtypes=DTYPES):
    return st.sampled_from(dtypes).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side)))


def int8_like(shape):
    """Mostly int8-range integers of ``shape``, sometimes a value outside int8 or another dtype."""
    return st.one_of(hnp.arrays(np.int8, shape),
                     hnp.arrays(st.sampled_from(["int16", "int64", "uint64"]), shape),
                     hnp.arrays(np.int64, shape, elements=st.integers(-128, 127)))


numbers = st.one_of(st.floats(), st.integers(-2, 2**1100), st.booleans(), st.floats(1e-320, 1e-300),
                    st.floats(1e300, 1e308), st.sampled_from([0.0, -0.0, 1.0, 1e-6, 0.5]))
anything = st.one_of(numbers, st.none(), st.text(max_size=3), arrays(max_dims=1, max_side=2))


def expect(call, *names):
    """``call()``, or a ValueError/TypeError whose message names one of ``names``."""
    try:
        return call()
    except (ValueError, TypeError) as exc:
        assert any(n in str(exc) for n in names), f"{type(exc).__name__} names none of {names}: {exc}"
        return None


# ---------------------------------------------------------------- numfmt, softmax_int

@given(st.one_of(st.integers(-2, 300), anything), st.one_of(st.booleans(), st.none(), st.integers(-1, 2)))
def test_int_format(width, signed):
    fmt = expect(lambda: IntFormat(width, signed), "IntFormat width")
    if fmt is not None:
        assert fmt.min < fmt.max and fmt.contains(0)


@given(numbers, st.integers(1, 32) | anything)
def test_requantizer_from_scale(scale, multiplier_width):
    rq = expect(lambda: Requantizer.from_scale(scale, multiplier_width=multiplier_width),
                "scale", "multiplier_width", "multiplier", "shift")
    if rq is not None:
        assert 0 <= rq.multiplier < 1 << rq.multiplier_width and 0 <= rq.shift <= 62


@given(st.one_of(st.integers(-3, 2**40), anything), st.one_of(st.integers(-3, 80), anything),
       st.one_of(st.integers(-1, 40), anything))
def test_requantizer_fields(multiplier, shift, width):
    expect(lambda: Requantizer(multiplier, shift, INT8, width), "multiplier", "shift")


@given(numbers, numbers, st.one_of(st.integers(-2, 300), anything))
def test_exp_requantizer(q_scale, k_scale, head_dim):
    expect(lambda: exp_requantizer(q_scale, k_scale, head_dim), "q_scale", "k_scale", "head_dim", "scale")


@given(numbers, numbers)
def test_out_requantizer(v_scale, o_scale):
    expect(lambda: out_requantizer(v_scale, o_scale), "v_scale", "o_scale", "scale")


@given(st.one_of(st.integers(-2**20, 2**70), arrays(max_dims=2)))
def test_exp2_neg(z):
    e = expect(lambda: exp2_neg(z), "z")
    if e is not None:
        assert (np.asarray(e) >= 0).all() and (np.asarray(e) <= 1 << 15).all()


@given(st.one_of(st.integers(-2**20, 2**70), anything))
def test_reciprocal(total):
    expect(lambda: reciprocal(total), "row sum", "total")


@given(st.one_of(st.integers(-2**20, 2**20), hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0),
                                                      elements=st.integers(-2**20, 2**20))),
       st.integers(0, 1 << 25))
def test_probability(e, r):
    """Its documented domain only (Python ints or int64 arrays): the golden model's own inner step."""
    p = probability(e, r)
    assert (np.asarray(p) <= PROB_MAX).all()


# ---------------------------------------------------------------- the ViTCoD head golden

PARAMS = head_params(0.05, 0.05, 0.05, 0.05, 4)


@st.composite
def head_case(draw):
    nq, nk, d = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    q = draw(st.one_of(int8_like((nq, d)), arrays()))
    k = draw(st.one_of(int8_like((nk, d)), arrays()))
    v = draw(st.one_of(int8_like((nk, d)), arrays()))
    g = draw(st.one_of(st.integers(-1, nk + 1), st.sampled_from([np.int32(1), math.nan, math.inf, 1.5, None, "1"])))
    dense = draw(hnp.arrays(np.bool_, (nq, nk)))
    g0 = min(max(g, 0), nk) if isinstance(g, int) else 0
    sparse = dense_to_csr(dense[:, g0:])
    valid = CSR(sparse.row_ptr, sparse.col_idx + np.int32(g0), (nq, nk))
    csr = draw(st.one_of(st.just(valid), st.just(dense_to_csr(dense)),
                         st.builds(CSR, arrays(max_dims=2, max_side=6), arrays(max_dims=2, max_side=6),
                                   st.tuples(st.integers(-1, 5), st.integers(-1, 5))),
                         st.just(None)))
    params = draw(st.one_of(st.just(PARAMS), st.just(None), st.just((1, 2))))
    return q, k, v, g, csr, params


@given(head_case())
def test_vitcod_head_golden(case):
    q, k, v, g, csr, params = case
    out = expect(lambda: vitcod_head_golden(q, k, v, g, csr, params),
                 "q", "k", "v", "G", "CSR", "sparse part", "params")
    if out is not None:
        assert out.dtype == np.int8 and out.shape == np.shape(q)
        assert all(np.issubdtype(np.asarray(x).dtype, np.integer) and (np.asarray(x).size == 0 or
                   INT8.min <= int(np.asarray(x).min()) and int(np.asarray(x).max()) <= INT8.max) for x in (q, k, v))


@given(numbers, numbers, numbers, numbers, st.one_of(st.integers(-2, 64), anything))
def test_head_params(q_scale, k_scale, v_scale, o_scale, head_dim):
    p = expect(lambda: head_params(q_scale, k_scale, v_scale, o_scale, head_dim),
               "q_scale", "k_scale", "v_scale", "o_scale", "head_dim", "scale")
    assert p is None or isinstance(p, HeadParams)


# ---------------------------------------------------------------- the linear decode golden

FORMATS = [LinearDecodeFormat(d=2, conv_taps=1, t_max=2, max_tokens=4),
           LinearDecodeFormat(d=3, conv_taps=3, t_max=4, max_tokens=16, feature_map="relu_norm")]


def _refuses_out_of_range(out, *inputs):
    """An answer came back only for integer inputs in int8 range."""
    if out is not None:
        for x in inputs:
            a = np.asarray(x)
            assert a.dtype.kind in "iu" and (a.size == 0 or (INT8.min <= int(a.min()) and int(a.max()) <= INT8.max))


@given(st.sampled_from(FORMATS), st.data())
def test_linear_verify_commit(fmt, data):
    gold = LinearDecodeGolden(fmt)
    t = data.draw(st.integers(0, fmt.t_max + 1))
    shape = data.draw(st.sampled_from([(t, fmt.d), (fmt.d,), (t, fmt.d + 1), (t,)]))
    q, k, v = (data.draw(st.one_of(int8_like(shape), arrays())) for _ in range(3))
    out = expect(lambda: gold.verify(q, k, v), "q", "k", "v", "verify block")
    _refuses_out_of_range(out, q, k, v)
    if out is not None:
        a = data.draw(st.one_of(st.integers(-1, out.shape[0] + 1), anything))
        expect(lambda: gold.commit(a), "commit")


@given(st.sampled_from(FORMATS), st.data())
def test_linear_load_taps_and_run(fmt, data):
    gold = LinearDecodeGolden(fmt)
    taps = data.draw(st.one_of(int8_like((fmt.conv_taps, fmt.d)), arrays()))
    _refuses_out_of_range(expect(lambda: gold.load_taps(taps) or True, "conv taps"), taps)
    n = data.draw(st.integers(0, 3))
    q, k, v = (data.draw(st.one_of(int8_like((data.draw(st.integers(0, 3)), fmt.d)), int8_like((n, fmt.d))))
               for _ in range(3))
    _refuses_out_of_range(expect(lambda: gold.run(q, k, v), "q", "k", "v", "verify block"), q, k, v)


@pytest.mark.parametrize("a", [True, 1.0, "1"])
def test_linear_commit_refuses_non_integers(a):
    gold = LinearDecodeGolden(FORMATS[0])
    gold.verify(np.zeros((1, 2), np.int8), np.zeros((1, 2), np.int8), np.zeros((1, 2), np.int8))
    with pytest.raises(ValueError, match="commit"):
        gold.commit(a)


def test_head_without_keys_is_refused():
    """Masks with Nk = 0 are refused since issue 21 part B; the golden model names k (it raised numpy's error)."""
    q = np.ones((2, 4), np.int8)
    kv = np.zeros((0, 4), np.int8)
    empty = CSR(np.zeros(3, np.int32), np.zeros(0, np.int32), (2, 0))
    with pytest.raises(ValueError, match="k and v hold no keys"):
        vitcod_head_golden(q, kv, kv, 0, empty, PARAMS)


# ---------------------------------------------------------------- what the fuzzers found, pinned

Z2 = np.zeros((1, 2), np.int8)


@pytest.mark.parametrize("call, error, match", [
    (lambda: Requantizer.from_scale(10**400), ValueError, "scale"),                    # was OverflowError
    (lambda: Requantizer.from_scale(1.0, multiplier_width=1.5), TypeError, "multiplier_width"),
    (lambda: exp_requantizer(1.0, 1.0, 10**400), ValueError, "head_dim"),              # was OverflowError
    (lambda: out_requantizer(10**400, 1.0), ValueError, "v_scale"),                    # was OverflowError
    (lambda: head_params(10**400, 1.0, 1.0, 1.0, 4), ValueError, "q_scale"),           # was OverflowError
    (lambda: exp2_neg(-1), ValueError, "z"),
    (lambda: exp2_neg(np.array(0.5)), TypeError, "z"),
    (lambda: reciprocal(None), TypeError, "row sum"),
    (lambda: vitcod_head_golden(Z2, Z2, Z2, math.inf, dense_to_csr(np.ones((1, 1), bool)), PARAMS),
     ValueError, "G"),                                                                  # was OverflowError
    (lambda: vitcod_head_golden(Z2, Z2, Z2, 0, None, PARAMS), TypeError, "csr"),       # was AttributeError
    (lambda: vitcod_head_golden(Z2, Z2, Z2, 0, dense_to_csr(np.ones((1, 1), bool)), None), TypeError, "params"),
    (lambda: LinearDecodeGolden(FORMATS[0]).verify(Z2[:0], Z2[:0], Z2[:0]), ValueError, "verify block"),
    (lambda: LinearDecodeGolden(FORMATS[0]).run(Z2, Z2[:0], Z2), ValueError, "same number"),   # was IndexError
    (lambda: LinearDecodeGolden(FORMATS[0]).load_taps(np.full((1, 2), 2**64 - 128, np.uint64)), ValueError,
     "conv taps"),                                                                      # was accepted as -128
])
def test_found_by_fuzzing(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_exp2_neg_of_uint64_z():
    assert exp2_neg(np.array([0, 2**63], np.uint64)).tolist() == [1 << 15, 0]   # was TypeError
