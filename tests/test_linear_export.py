"""A trained LM's head as the decode datapath's int8 tensors (``algo/linear/export.py``, ``attnforge linear export``).

The captured float head is checked against the independent float64 recurrence (``linear_decode_float``); the
integer golden model against float within a stated tolerance; and the tolerance can fail: a wrong requantizer
scale is far outside it.
"""

import numpy as np
import pytest
import torch

from attnforge.algo.linear.export import (capture_head, check_hardware_variant, export_head, feature_map_of,
                                          golden_error, quantize_head)
from attnforge.algo.linear.golden import linear_decode_float
from attnforge.algo.linear.model import LinearLM, LMConfig
from attnforge.cli import main
from attnforge.errors import ConfigError
from attnforge.formats.linear_tensors import load_linear_tensors
from attnforge.linear_format import LinearDecodeFormat

#: Integer golden model against float on a head of an untrained model, RMS error relative to the float output's
#: RMS (measured 0.8-3.3 % on the heads of trained 1-2 layer models; int8 output rounding alone is ~0.3 LSB).
REL_RMS_TOL = 0.06


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(attention="relu", augment=True, chunk=0, n_layer=2, n_head=2, d_model=32, block_size=64,
               conv_kernel=3, seed=seed)
    cfg.update(kw)
    return LinearLM(LMConfig(**cfg)).eval()


def _tokens(n=48, seed=0):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw, message", [
    (dict(attention="elu"), "attention='elu'"),
    (dict(augment=False), "augment=False"),
    (dict(chunk=16), "chunk=16"),
])
def test_other_variants_are_refused_by_name(tmp_path, kw, message):
    model = _model(**kw)
    with pytest.raises(ConfigError, match=message):
        check_hardware_variant(model.cfg)
    with pytest.raises(ConfigError, match=message):
        export_head(model, _tokens(), 0, 0, tmp_path / "h.npz")
    assert not (tmp_path / "h.npz").exists()


def test_feature_map_follows_the_variant():
    assert feature_map_of(_model().cfg) == "relu_norm"
    assert feature_map_of(_model(variant_kwargs={"normalize": False}).cfg) == "relu"


@pytest.mark.parametrize("normalize", [True, False])
def test_captured_head_is_the_float_recurrence(normalize):
    """The model's own attention output of one head equals linear_decode_float on the captured q, k, v and
    taps (taps[m] on v[t - m]): so the capture takes the right tensors, in the right orientation."""
    model = _model(variant_kwargs={"normalize": normalize})
    cap = capture_head(model, _tokens(), 1, 1)
    ref = linear_decode_float(cap["q"], cap["k"], cap["v"], cap["taps"],
                              feature_map="relu_norm" if normalize else "relu")
    assert cap["taps"].shape == (3, 16)
    np.testing.assert_allclose(cap["out"], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_golden_model_is_close_to_float_and_a_wrong_scale_is_not(seed):
    model = _model(seed)
    cap = capture_head(model, _tokens(seed=seed), seed % 2, 0)
    quant = quantize_head(cap, "relu_norm")
    d, k = cap["q"].shape[1], quant["taps"].shape[0]
    base = LinearDecodeFormat(d=d, conv_taps=k, feature_map="relu_norm")

    def error(q):
        fmt = LinearDecodeFormat(d=d, conv_taps=k, feature_map="relu_norm",
                                 **base.checked_requant_params(q["attn_scale"], q["conv_scale"]))
        return golden_error(cap, q, fmt)

    good = error(quant)
    assert good["rel_rms_err"] < REL_RMS_TOL and not good["overflow"]
    assert error({**quant, "attn_scale": 2 * quant["attn_scale"]})["rel_rms_err"] > 3 * REL_RMS_TOL
    assert error({**quant, "conv_scale": 0.5 * quant["conv_scale"]})["rel_rms_err"] > 2 * REL_RMS_TOL


def test_unnormalized_scales_follow_q_k_v():
    model = _model(variant_kwargs={"normalize": False})
    cap = capture_head(model, _tokens(), 0, 1)
    quant = quantize_head(cap, "relu")
    s = quant["scales"]
    assert quant["attn_scale"] == pytest.approx(s["q"] * s["k"] * s["v"] / s["out"])
    assert quant["conv_scale"] == pytest.approx(s["taps"] * s["v"] / s["out"])
    fmt = LinearDecodeFormat(d=16, conv_taps=3, feature_map="relu",
                             **LinearDecodeFormat(d=16, conv_taps=3, feature_map="relu").checked_requant_params(
                                 quant["attn_scale"], quant["conv_scale"]))
    assert golden_error(cap, quant, fmt)["rel_rms_err"] < REL_RMS_TOL


def test_export_writes_a_tensor_file_the_sim_loads(tmp_path):
    model = _model()
    s = export_head(model, _tokens(40), 1, 0, tmp_path / "h.npz")
    t = load_linear_tensors(tmp_path / "h.npz", d=16, conv_taps=3)
    assert t["q"].shape == (40, 16) and s["tokens"] == 40 and s["feature_map"] == "relu_norm"
    assert t["attn_scale"] == s["attn_scale"] and np.abs(t["q"]).max() == 127


def test_bad_requests_are_refused(tmp_path):
    model = _model()
    with pytest.raises(ConfigError, match="layer must be in"):
        capture_head(model, _tokens(), 2, 0)
    with pytest.raises(ConfigError, match="the model takes 1..64"):
        capture_head(model, _tokens(65), 0, 0)


def test_cli_export_refuses_a_softmax_checkpoint(tmp_path, capsys):
    from attnforge.algo.linear.train import save_checkpoint

    ck = save_checkpoint(tmp_path / "sm.pt", _model(attention="softmax", augment=False))
    assert main(["linear", "export", str(ck), "-o", str(tmp_path / "h.npz"), "--train-bytes", "20000",
                 "--val-bytes", "20000"]) == 2
    assert "not the decode datapath's variant" in capsys.readouterr().err
    assert not (tmp_path / "h.npz").exists()
