"""Ticket export as int8 CSR (round trip, validation) and the integer sparse linear golden model."""

import json

import numpy as np
import pytest
import torch

from attnforge.errors import ArtifactError, ConfigError
from attnforge.algo.tickets.export import (CSR_FORMAT, export_model, golden_error_bound,
                                           layer_requantizer, load_ticket_csr, quantize_bias, save_ticket_csr,
                                           sparse_linear_float, sparse_linear_golden)
from attnforge.algo.tickets.models import build_model, prunable_layers
from attnforge.algo.tickets.pruning import Level, apply_masks, one_shot
from attnforge.formats.csr import csr_to_dense
from attnforge.numfmt import Requantizer

torch.set_num_threads(1)


def _ticket_model(pattern="unstructured", level="0.8", seed=0):
    torch.manual_seed(seed)
    model = build_model("cnn")
    masks = one_shot(model, Level.parse(pattern, level), "layer")
    return apply_masks(model, masks), masks


@pytest.mark.parametrize("pattern,level", [("unstructured", "0.8"), ("channel", "0.5"), ("nm", "2:4")])
def test_export_load_round_trip(tmp_path, pattern, level):
    model, masks = _ticket_model(pattern, level)
    layers = export_model(model)
    path = save_ticket_csr(tmp_path / "t.npz", layers, {"model": "cnn", "pattern": pattern})
    loaded, meta = load_ticket_csr(path)
    assert meta["model"] == "cnn" and [l["name"] for l in meta["layers"]] == list(prunable_layers(model))
    for layer, back, (name, mod) in zip(layers, loaded, prunable_layers(model).items()):
        assert back.name == name and back.weight_shape == tuple(mod.weight.shape)
        for a in ("row_ptr", "col_idx", "values"):
            assert np.array_equal(getattr(back.csr, a), getattr(layer.csr, a))
            assert getattr(back.csr, a).dtype == getattr(layer.csr, a).dtype
        assert back.scale == layer.scale and np.array_equal(back.bias, layer.bias)
        # the pattern is exactly the mask
        mask = masks[f"{name}.weight"].reshape(mod.weight.shape[0], -1).numpy() > 0
        pattern_back = np.zeros(back.csr.shape, dtype=bool)
        pattern_back[np.repeat(np.arange(back.csr.shape[0]), np.diff(back.csr.row_ptr)), back.csr.col_idx] = True
        assert np.array_equal(pattern_back, mask)
        # values are the int8 weights: within half a step of the float ones
        w = mod.weight.detach().reshape(mask.shape).numpy()
        assert np.abs(back.dense_float() - np.where(mask, w, 0)).max() <= back.scale / 2 + 1e-12
        assert np.abs(back.csr.values).max() == 127


def test_load_refuses_bad_files(tmp_path):
    model, _ = _ticket_model()
    path = save_ticket_csr(tmp_path / "t.npz", export_model(model))
    data = dict(np.load(path))

    def write(**changes):
        bad = tmp_path / "bad.npz"
        np.savez(bad, **{**data, **changes})
        return bad

    with pytest.raises(ArtifactError, match="field 'format' is 'x'"):
        load_ticket_csr(write(format=np.array("x")))
    col = data["L0_col_idx"].copy()
    col[0] = 99
    with pytest.raises(ArtifactError, match=r"bad.npz: layer 0 \(conv1\): col_idx values in"):
        load_ticket_csr(write(L0_col_idx=col))
    with pytest.raises(ArtifactError, match="'L1_values' is int16"):
        load_ticket_csr(write(L1_values=data["L1_values"].astype(np.int16)))
    with pytest.raises(ArtifactError, match="'L2_scale' is -1.0"):
        load_ticket_csr(write(L2_scale=np.array(-1.0)))
    with pytest.raises(FileNotFoundError, match="no such"):
        load_ticket_csr(tmp_path / "none.npz")


@pytest.mark.parametrize("pattern,level", [("unstructured", "0.9"), ("nm", "2:4"), ("channel", "0.5")])
def test_integer_sparse_layer_matches_float_within_bound(pattern, level):
    """Golden int8 SpMM + requantization vs the float layer, within the stated per-output bound."""
    model, _ = _ticket_model(pattern, level, seed=1)
    fc = next(l for l in export_model(model) if l.name == "fc")
    w_float = prunable_layers(model)["fc"].weight.detach().double().numpy()
    rng = np.random.default_rng(0)
    x_float = np.maximum(rng.normal(0, 1, size=(16, fc.csr.shape[1])), 0)     # ReLU activations
    x_scale = x_float.max() / 127
    x_q = np.clip(np.rint(x_float / x_scale), -127, 127).astype(np.int64)
    y_float = sparse_linear_float(w_float, x_q * x_scale, fc.bias)
    y_scale = np.abs(y_float).max() / 120                                       # no saturation
    rq = layer_requantizer(fc, x_scale, y_scale)
    y_q = sparse_linear_golden(fc.csr, x_q, rq, quantize_bias(fc.bias, fc.scale, x_scale))
    assert y_q.dtype == np.int64 and y_q.min() >= -128 and y_q.max() <= 127
    err = np.abs(y_q * y_scale - y_float)
    bound = golden_error_bound(fc, x_q, x_scale, y_scale, rq)
    assert (err <= bound).all(), float((err - bound).max())
    # and the bound is tight enough to mean something: a few output steps at most
    assert bound.max() < 6 * y_scale
    # an independent integer path: dense int8 matrix product, then the same requantizer
    acc = x_q @ csr_to_dense(fc.csr).astype(np.int64).T + quantize_bias(fc.bias, fc.scale, x_scale)
    assert np.array_equal(y_q, rq(acc))


@pytest.mark.parametrize("y_scale, message", [(1e30, "maps every input in"), (1e-30, "y_scale"),
                                              (float("nan"), "y_scale must be a positive finite number"),
                                              (0.0, "y_scale must be a positive finite number")])
def test_degenerate_output_scale_is_refused(y_scale, message):
    """A requantizer that would zero every output (the "verified" all-zeros of the first round) or saturate
    every nonzero one is refused, naming y_scale and the range that works."""
    model, _ = _ticket_model()
    fc = next(l for l in export_model(model) if l.name == "fc")
    with pytest.raises(ConfigError, match=message):
        layer_requantizer(fc, 0.01, y_scale)
    assert layer_requantizer(fc, 0.01, 0.05).multiplier > 0


def test_golden_refuses_bad_input():
    model, _ = _ticket_model()
    fc = next(l for l in export_model(model) if l.name == "fc")
    rq = Requantizer.from_scale(0.01)
    with pytest.raises(ValueError, match="input x has values in"):
        sparse_linear_golden(fc.csr, np.full(fc.csr.shape[1], 300), rq)
    with pytest.raises(TypeError, match="integer inputs"):
        sparse_linear_golden(fc.csr, np.zeros(fc.csr.shape[1]), rq)
    with pytest.raises(ValueError, match="the layer takes"):
        sparse_linear_golden(fc.csr, np.zeros(3, dtype=np.int8), rq)
    with pytest.raises(ValueError, match="accumulator has values in"):
        sparse_linear_golden(fc.csr, np.full(fc.csr.shape[1], 127), rq, acc_width=8)
