"""The ViTCoD head golden model: integer softmax bounds, float agreement, decoder, tensor files.

Tolerance (stated here, held by the tests): the integer head's output, scaled by
``o_scale``, is within **1.0 output LSB** (``o_scale``) of float softmax attention
on the same int8 inputs and mask: 0.5 LSB from the final rounding plus the
exponent approximation (``EXP_ERROR_BOUND``, about 0.55 %) and the 15-bit
probabilities.
"""

import math

import numpy as np
import pytest

from attnforge.errors import ArtifactError
from attnforge.algo.vitcod.golden import (HeadParams, decode_qk, head_inputs, head_params, polarized_keep,
                                          vitcod_head_float, vitcod_head_golden)
from attnforge.formats.csr import CSR, dense_to_csr
from attnforge.formats.head_tensors import (HEAD_TENSORS_FORMAT, HeadTensors, decoder_requantizers,
                                    load_head_tensors, save_head_tensors)
from attnforge.numfmt import INT8, Requantizer
from attnforge.softmax_int import (EXP2_LUT, EXP_BITS, EXP_ERROR_BOUND, EXP_FRAC_BITS, PROB_BITS, PROB_MAX, Z_FORMAT,
                                   exp2_neg, exp_requantizer, probability, reciprocal)

TOLERANCE_LSB = 1.0


def random_head(rng, nq, nk, d, sparsity, g, empty_rows=0):
    q = rng.integers(-128, 128, (nq, d)).astype(np.int8)
    k = rng.integers(-128, 128, (nk, d)).astype(np.int8)
    v = rng.integers(-128, 128, (nk, d)).astype(np.int8)
    keep = rng.random((nq, nk - g)) >= sparsity
    keep[:empty_rows] = False
    s = dense_to_csr(keep)
    csr = CSR(s.row_ptr, s.col_idx + np.int32(g), (nq, nk))
    return q, k, v, csr


@pytest.mark.parametrize("nq,nk,d,sparsity,g,empty", [
    (40, 40, 64, 0.0, 0, 0), (40, 40, 64, 0.5, 3, 2), (33, 47, 32, 0.9, 5, 3), (50, 50, 16, 0.99, 0, 5),
    (24, 24, 64, 0.8, 24, 0),   # G = N: all dense
    (30, 20, 32, 0.95, 0, 30),  # no kept key at all: output 0
])
def test_golden_matches_float_within_tolerance(nq, nk, d, sparsity, g, empty):
    rng = np.random.default_rng(nq * 1000 + nk + g)
    q, k, v, csr = random_head(rng, nq, nk, d, sparsity, g, empty)
    scales = dict(q_scale=0.02, k_scale=0.025, v_scale=0.03)
    o_scale = 0.03
    params = head_params(o_scale=o_scale, head_dim=d, **scales)
    out = vitcod_head_golden(q, k, v, g, csr, params)
    assert out.dtype == np.int8 and out.shape == (nq, d)
    ref = vitcod_head_float(q, k, v, polarized_keep(g, csr), **scales)
    err = np.abs(out.astype(np.float64) * o_scale - ref).max() / o_scale
    assert err <= TOLERANCE_LSB, f"golden differs from float by {err:.3f} LSB"
    empty_rows = ~polarized_keep(g, csr).any(axis=1)
    assert (out[empty_rows] == 0).all()


def test_pruned_entries_never_matter():
    rng = np.random.default_rng(1)
    q, k, v, csr = random_head(rng, 20, 30, 16, 0.7, 4)
    params = head_params(0.02, 0.02, 0.02, 0.02, 16)
    out = vitcod_head_golden(q, k, v, 4, csr, params)
    used = polarized_keep(4, csr).any(axis=0)
    k2, v2 = k.copy(), v.copy()
    k2[~used] = 127
    v2[~used] = -128
    assert (vitcod_head_golden(q, k2, v2, 4, csr, params) == out).all()
    # ...but a kept entry does: flip one kept key.
    j = int(np.argmax(used))
    k2[j] = -k2[j] - 1
    v2[j] = -v2[j] - 1
    assert (vitcod_head_golden(q, k2, v2, 4, csr, params) != out).any()


def test_exponent_error_bound_holds_over_all_z():
    rq = exp_requantizer(0.03, 0.02, 64)
    c = rq.scale / (1 << EXP_FRAC_BITS)  # log2 units per score step, as the requantizer implements it
    diffs = np.arange(0, 200000, 7, dtype=np.int64)
    e = exp2_neg(rq(diffs))
    exact = (1 << EXP_BITS) * np.exp2(-diffs * c)
    assert (np.abs(e - exact) <= EXP_ERROR_BOUND * e + 1).all()
    assert EXP_ERROR_BOUND < 0.006
    assert exp2_neg(0) == 1 << EXP_BITS and EXP2_LUT[0] == 1 << EXP_BITS
    # int, numpy and torch agree
    import torch
    zs = np.arange(0, Z_FORMAT.max + 1, 5, dtype=np.int64)
    assert (exp2_neg(torch.tensor(zs)).numpy() == exp2_neg(zs)).all()
    assert [exp2_neg(int(z)) for z in zs[:400]] == exp2_neg(zs[:400]).tolist()


def test_reciprocal_and_probabilities():
    assert reciprocal(1 << EXP_BITS) == 1 << (40 - EXP_BITS)
    with pytest.raises(ValueError, match="row sum"):
        reciprocal(5)
    r = reciprocal(1 << EXP_BITS)
    assert probability(1 << EXP_BITS, r) == PROB_MAX  # p = 1 saturates to 2**15 - 1
    assert probability(np.array([1 << EXP_BITS]), r)[0] == PROB_MAX
    assert PROB_MAX == (1 << PROB_BITS) - 1


def test_golden_rejects_bad_inputs():
    rng = np.random.default_rng(2)
    q, k, v, csr = random_head(rng, 8, 8, 16, 0.5, 2)
    p = head_params(0.02, 0.02, 0.02, 0.02, 16)
    with pytest.raises(ValueError, match="G"):
        vitcod_head_golden(q, k, v, 9, csr, p)
    with pytest.raises(ValueError, match="global columns"):
        one = CSR(np.array([0] + [1] * 8, np.int32), np.array([1], np.int32), (8, 8))
        vitcod_head_golden(q, k, v, 2, one, p)
    bad = CSR(csr.row_ptr, np.full_like(csr.col_idx, 99), csr.shape)
    with pytest.raises(ValueError, match="col_idx"):
        vitcod_head_golden(q, k, v, 2, bad, p)
    with pytest.raises(ValueError, match="q has values"):
        vitcod_head_golden(q.astype(np.int32) * 4, k, v, 2, csr, p)
    with pytest.raises(ValueError, match="must be"):
        vitcod_head_golden(q, k[:, :8], v, 2, csr, p)


def test_decoder_matches_float_reconstruction():
    rng = np.random.default_rng(3)
    hc, h, n, d = 2, 3, 10, 16
    xc = rng.integers(-128, 128, (hc, n, d)).astype(np.int8)
    w = rng.integers(-128, 128, (h, hc)).astype(np.int8)
    xc_s, w_s, x_s = 0.01, 0.005, 0.02
    rq = Requantizer.from_scale(xc_s * w_s / x_s)
    x = decode_qk(xc, w, rq)
    real = np.einsum("hj,jnc->hnc", w.astype(np.float64) * w_s, xc.astype(np.float64) * xc_s)
    expect = np.clip(np.round(real / x_s), -128, 127)
    assert np.abs(x.astype(np.float64) - expect).max() <= 1


def make_tensors(rng, L=1, H=3, nq=12, nk=12, d=16, decoder=True):
    i8 = lambda *s: rng.integers(-128, 128, s).astype(np.int8)  # noqa: E731
    f32 = lambda *s: rng.uniform(0.01, 0.03, s).astype(np.float32)  # noqa: E731
    kw = dict(q=i8(L, H, nq, d), k=i8(L, H, nk, d), v=i8(L, H, nk, d), q_scale=f32(L, H), k_scale=f32(L, H),
              v_scale=f32(L, H), o_scale=f32(L, H), meta={"source": "test"})
    if decoder:
        hc = (H + 1) // 2
        kw.update(qc=i8(L, hc, nq, d), kc=i8(L, hc, nk, d), qc_scale=f32(L), kc_scale=f32(L),
                  dec_wq=i8(L, H, hc), dec_wk=i8(L, H, hc), dec_wq_scale=f32(L), dec_wk_scale=f32(L))
    return HeadTensors(**kw)


def test_head_tensors_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    t = make_tensors(rng)
    path = save_head_tensors(t, tmp_path / "t.npz")
    back = load_head_tensors(path)
    assert back.meta == {"source": "test"} and back.has_decoder
    for name in ("q", "k", "v", "o_scale", "qc", "dec_wk"):
        assert (getattr(back, name) == getattr(t, name)).all()
    order = rng.permutation(12)
    inp = head_inputs(back, 0, 1, order)
    assert (inp["k"] == t.k[0, 1][order]).all()
    dec = head_inputs(back, 0, 2, order, use_decoder=True)
    rq, rk = decoder_requantizers(back, 0, 2)
    assert (dec["q"] == decode_qk(t.qc[0], t.dec_wq[0, 2:3], rq)[0]).all()
    assert isinstance(dec["params"], HeadParams)
    no_dec = save_head_tensors(make_tensors(rng, decoder=False), tmp_path / "n.npz")
    assert not load_head_tensors(no_dec).has_decoder


def test_head_tensors_errors_name_file_and_field(tmp_path):
    rng = np.random.default_rng(5)
    t = make_tensors(rng)
    good = save_head_tensors(t, tmp_path / "good.npz")
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}

    def write(name, **change):
        a = dict(arrays, **change)
        for key in [k for k, val in change.items() if val is None]:
            del a[key]
        p = tmp_path / name
        np.savez(p, **a)
        return p

    cases = [
        (write("fmt.npz", format=np.array("other/1")), "'format'"),
        (write("dtype.npz", q=arrays["q"].astype(np.int16)), "'q'"),
        (write("shape.npz", v=arrays["v"][:, :, :5]), "'v'"),
        (write("scale.npz", k_scale=-arrays["k_scale"]), "'k_scale'"),
        (write("missing.npz", o_scale=None), "o_scale"),
        (write("partial.npz", kc=None), "decoder fields"),
        (write("hc.npz", dec_wq=arrays["dec_wq"][:, :, :1]), "'dec_wq'"),
    ]
    for path, field in cases:
        with pytest.raises(ArtifactError, match=str(path.name)) as info:
            load_head_tensors(path)
        assert field in str(info.value), str(info.value)
    with pytest.raises(ArtifactError, match="no such"):
        load_head_tensors(tmp_path / "absent.npz")
    bad = tmp_path / "nothing.npz"
    t.o_scale = np.zeros((1, 3), np.float32)
    with pytest.raises(ArtifactError, match="o_scale"):
        save_head_tensors(t, bad)
    assert not bad.exists()
    assert HEAD_TENSORS_FORMAT == "attnforge.vitcod_head/1"
    assert math.isclose(INT8.max, 127)
