"""Integer golden model of the linear-attention decode step (algo/linear/golden.py).

Tolerances (stated here, tested below):
* against the float64 recurrent form run on the same dequantized int8 inputs:
  at most 1 output LSB on every unsaturated output (two round-half-up
  requantizers, each off by <= 1/2 LSB, plus the 16-bit multipliers' 2**-15
  relative error; the normalized variant's reduced reciprocal adds < 2**-14 relative);
* against the float form on the original float inputs: within 4 % of the output
  range (int8 input quantization);
* verify/commit/reset: exact.
"""

import numpy as np
import pytest

from attnforge.algo.linear.golden import (LinearDecodeGolden, divide_fixed, linear_decode_float,
                                          quantize_int8)
from attnforge.linear_format import DIV_FRAC_BITS, LinearDecodeFormat
from attnforge.numfmt import IntFormat


def _case(seed, d=16, n=120, k_taps=3, feature_map="relu"):
    rng = np.random.default_rng(seed)
    qf, kf, vf = (rng.standard_normal((n, d)) for _ in range(3))
    wf = rng.standard_normal((k_taps, d)) * 0.5
    sq, sk, sv = (np.abs(x).max() / 127 for x in (qf, kf, vf))
    sw = np.abs(wf).max() / 127
    q, k, v, w = quantize_int8(qf, sq), quantize_int8(kf, sk), quantize_int8(vf, sv), quantize_int8(wf, sw)
    deq = linear_decode_float(q * sq, k * sk, v * sv, w * sw, feature_map=feature_map)
    so = np.abs(deq).max() / 100  # output scale: the largest output lands near 100
    if feature_map == "relu":
        scale_attn = sq * sk * sv / so
    else:
        scale_attn = sv / (2 ** DIV_FRAC_BITS * so)
    fmt = LinearDecodeFormat(d=d, conv_taps=k_taps, max_tokens=1024, t_max=8, feature_map=feature_map,
                             **LinearDecodeFormat.requant_params(scale_attn, sw * sv / so))
    return fmt, (q, k, v, w), (qf, kf, vf, wf), deq, so


@pytest.mark.parametrize("feature_map", ["relu", "relu_norm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_golden_matches_float_on_dequantized_inputs(seed, feature_map):
    fmt, (q, k, v, w), _, deq, so = _case(seed, feature_map=feature_map)
    got = LinearDecodeGolden(fmt, w).run(q, k, v)
    ref = deq / so
    unsat = np.abs(ref) < 126.5
    err = np.abs(got - ref)[unsat]
    assert unsat.mean() > 0.99
    assert err.max() <= 1.0, f"max error {err.max():.3f} LSB"


@pytest.mark.parametrize("feature_map", ["relu", "relu_norm"])
def test_golden_close_to_float_inputs(feature_map):
    fmt, (q, k, v, w), (qf, kf, vf, wf), _, so = _case(7, feature_map=feature_map)
    got = LinearDecodeGolden(fmt, w).run(q, k, v) * so
    ref = linear_decode_float(qf, kf, vf, wf, feature_map=feature_map)
    assert np.abs(got - ref).max() <= 0.04 * np.abs(ref).max()


def test_golden_is_not_trivially_close():
    """The float comparison can fail: a wrong tap index moves the error far past 1 LSB."""
    fmt, (q, k, v, w), _, deq, so = _case(3)
    got = LinearDecodeGolden(fmt, w[::-1].copy()).run(q, k, v)
    assert np.abs(got - deq / so).max() > 3


def test_divide_fixed_within_one_lsb():
    rng = np.random.default_rng(5)
    for den in [1, 3, 1000, 65535, 65536, 1 << 30, (1 << 40) + 12345]:
        num = rng.integers(-128 * den, 127 * den + 1, size=50, dtype=np.int64)
        got = divide_fixed(num, den)
        exact = num / den * 2 ** DIV_FRAC_BITS
        assert np.abs(got - exact).max() <= 1.0
    assert (divide_fixed(np.array([5, -5]), 0) == 0).all()


def _random_tokens(rng, t, d):
    return [rng.integers(-128, 128, size=(t, d)) for _ in range(3)]


@pytest.mark.parametrize("feature_map", ["relu", "relu_norm"])
@pytest.mark.parametrize("k_taps", [1, 4])
def test_verify_commit_rollback_is_exact(feature_map, k_taps):
    """verify(T) + commit(a) == decoding only the first a tokens; outputs == sequential decode."""
    d = 8
    fmt = LinearDecodeFormat(d=d, conv_taps=k_taps, t_max=8, feature_map=feature_map, attn_shift=24)
    rng = np.random.default_rng(11)
    taps = rng.integers(-128, 128, size=(k_taps, d))
    spec, seq = LinearDecodeGolden(fmt, taps), LinearDecodeGolden(fmt, taps)
    for step in range(60):
        t = int(rng.integers(1, 9))
        a = [0, t, int(rng.integers(0, t + 1))][step % 3]
        q, k, v = _random_tokens(rng, t, d)
        out = spec.verify(q, k, v)
        # Sequential decode of all T from a copy gives the same T outputs.
        probe = LinearDecodeGolden(fmt, taps)
        probe.S, probe.z, probe._ring, probe._head = seq.S.copy(), seq.z.copy(), seq._ring.copy(), seq._head
        assert (np.stack([probe.decode(q[i], k[i], v[i]) for i in range(t)]) == out).all()
        spec.commit(a)
        for i in range(a):
            seq.decode(q[i], k[i], v[i])
        a_snap, b_snap = spec.snapshot(), seq.snapshot()
        for key in a_snap:
            assert np.array_equal(a_snap[key], b_snap[key]), f"step {step}: {key} differs after commit({a}) of {t}"


def test_commit_zero_and_new_block_drop_pending():
    fmt = LinearDecodeFormat(d=4, conv_taps=2, t_max=4)
    rng = np.random.default_rng(2)
    g = LinearDecodeGolden(fmt, rng.integers(-128, 128, size=(2, 4)))
    g.decode(*[x[0] for x in _random_tokens(rng, 1, 4)])
    before = g.snapshot()
    g.verify(*_random_tokens(rng, 3, 4))
    g.verify(*_random_tokens(rng, 2, 4))  # drops the first block
    g.commit(0)
    after = g.snapshot()
    for key in before:
        assert np.array_equal(before[key], after[key])


def test_reset_mid_sequence_equals_fresh_model():
    fmt = LinearDecodeFormat(d=8, conv_taps=3)
    rng = np.random.default_rng(3)
    taps = rng.integers(-128, 128, size=(3, 8))
    a, b = LinearDecodeGolden(fmt, taps), LinearDecodeGolden(fmt, taps)
    a.run(*_random_tokens(rng, 20, 8))
    a.reset()
    toks = _random_tokens(rng, 10, 8)
    assert (a.run(*toks) == b.run(*toks)).all()


def test_state_width_holds_extremes_up_to_max_tokens_then_flags():
    """k=127, v=-128 every token: the state reaches its proven extreme exactly, then the flag rises."""
    n = 40
    fmt = LinearDecodeFormat(d=4, conv_taps=1, max_tokens=n, t_max=2)
    g = LinearDecodeGolden(fmt)
    ones = np.ones((1, 4), dtype=np.int64)
    for _ in range(n):
        g.decode(127 * ones[0], 127 * ones[0], -128 * ones[0])
    assert not g.overflow
    assert (g.S == -128 * 127 * n).all()
    assert fmt.state_format.contains(-128 * 127 * (n + fmt.t_max))
    g.decode(ones[0], ones[0], ones[0])
    assert g.overflow


def test_conv_sees_only_past_and_present():
    fmt = LinearDecodeFormat(d=4, conv_taps=4, attn_multiplier=0)
    rng = np.random.default_rng(4)
    g = LinearDecodeGolden(fmt, rng.integers(-128, 128, size=(4, 4)))
    q, k, v = _random_tokens(rng, 8, 4)
    out1 = g.verify(q, k, v)
    v2 = v.copy()
    v2[5] = -v2[5] - 1
    out2 = LinearDecodeGolden(fmt, g.taps).verify(q, k, v2)
    assert (out1[:5] == out2[:5]).all() and not (out1[5:] == out2[5:]).all()


def test_bad_inputs_are_refused():
    fmt = LinearDecodeFormat(d=4, conv_taps=2, t_max=2)
    g = LinearDecodeGolden(fmt)
    z = np.zeros((1, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"q must have shape \[T, 4\]"):
        g.verify(np.zeros((1, 5), dtype=np.int64), z, z)
    with pytest.raises(ValueError, match=r"outside the int8 range"):
        g.verify(z + 200, z, z)
    with pytest.raises(TypeError, match="integer array"):
        g.verify(z.astype(float), z, z)
    with pytest.raises(ValueError, match="1..t_max=2 tokens, not 3"):
        g.verify(*(np.zeros((3, 4), dtype=np.int64),) * 3)
    with pytest.raises(ValueError, match="pending verify block"):
        g.commit(0)
    g.verify(z, z, z)
    with pytest.raises(ValueError, match=r"0 <= a <= 1"):
        g.commit(2)
    with pytest.raises(ValueError, match="conv taps must be"):
        g.load_taps(np.zeros((3, 4), dtype=np.int64))


def test_format_refuses_bad_parameters():
    with pytest.raises(ValueError, match="feature_map must be one of"):
        LinearDecodeFormat(feature_map="elu")
    with pytest.raises(ValueError, match="d \\(head dim\\) must be in \\[2, 256\\], not 1"):
        LinearDecodeFormat(d=1)
    with pytest.raises(TypeError, match="must be an integer"):
        LinearDecodeFormat(conv_taps=2.0)
    with pytest.raises(ValueError, match="at most 44 bits"):
        LinearDecodeFormat(d=256, max_tokens=1 << 30)
    with pytest.raises(ValueError, match="multiplier"):
        LinearDecodeFormat(attn_multiplier=1 << 16)


def test_widths_follow_from_d_and_max_tokens():
    f = LinearDecodeFormat(d=64, max_tokens=4096, t_max=8)
    # 4104 products of uint7 * int8, each in [-16256, 16129]: 27 bits signed.
    assert f.state_format.width == 27
    assert f.numerator_format.contains(64 * 127 * f.state_format.min)
    # ... and one bit less would not hold the extreme numerator.
    assert not IntFormat(f.numerator_format.width - 1).contains(64 * 127 * f.state_format.min)
