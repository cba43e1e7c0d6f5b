"""The integer attention path (``algo/linear/int_attention.py``): the closed form equals the golden model's
recurrence value for value, and a linearized LM with every head integer stays close to its float model."""

import numpy as np
import pytest
import torch

from attnforge.algo.linear.golden import LinearDecodeGolden, divide_fixed
from attnforge.algo.linear.int_attention import IntegerAttention, divide_fixed_rows, golden_parallel
from attnforge.algo.linear.model import LinearLM, LMConfig
from attnforge.cli import main
from attnforge.errors import ConfigError
from attnforge.linear_format import LinearDecodeFormat, random_data_requant


@pytest.mark.parametrize("feature_map", ["relu", "relu_norm"])
def test_closed_form_equals_the_recurrence(feature_map):
    rng = np.random.default_rng(7)
    for _ in range(25):
        d, k, t = int(rng.choice([2, 4, 8, 16])), int(rng.integers(1, 6)), int(rng.integers(1, 70))
        fmt = LinearDecodeFormat(d=d, conv_taps=k, max_tokens=128, feature_map=feature_map,
                                 **random_data_requant(d, k, feature_map=feature_map))
        q, kk, v = (rng.integers(-128, 128, (t, d)) for _ in range(3))
        if rng.random() < 0.3:          # rows whose features are all zero (den = 0)
            q[rng.integers(0, t)] = -rng.integers(0, 128, d)
        taps = rng.integers(-128, 128, (k, d))
        want = LinearDecodeGolden(fmt, taps).run(q, kk, v)
        assert np.array_equal(golden_parallel(fmt, taps, q, kk, v), want)


def test_row_divider_equals_the_golden_divider():
    rng = np.random.default_rng(1)
    dens = np.array([0, 1, 2, 3, 2**16 - 1, 2**16, 2**16 + 1, 2**17 - 1, 2**17, 2**31 + 5, 2**40 - 3, 2**52 + 1])
    dens = np.concatenate([dens, rng.integers(0, 2**45, 200)])
    num = rng.integers(-2**50, 2**50, (len(dens), 5))
    got = divide_fixed_rows(num, dens)
    for row, den in enumerate(dens):
        assert np.array_equal(got[row], divide_fixed(num[row], int(den))), den


def test_longer_than_max_tokens_is_refused():
    fmt = LinearDecodeFormat(d=4, conv_taps=1, max_tokens=8)
    x = np.zeros((9, 4), dtype=np.int64)
    with pytest.raises(ConfigError, match="exceed max_tokens=8"):
        golden_parallel(fmt, np.zeros((1, 4), dtype=np.int64), x, x, x)


def _model(**kw):
    torch.manual_seed(0)
    cfg = dict(attention="relu", augment=True, chunk=0, n_layer=2, n_head=2, d_model=32, block_size=48, conv_kernel=3)
    cfg.update(kw)
    return LinearLM(LMConfig(**cfg)).eval()


def test_integer_model_is_close_to_float_and_each_head_is_the_closed_form():
    model = _model()
    gen = torch.Generator().manual_seed(3)
    calib = torch.randint(0, 256, (8, 48), generator=gen)
    idx = torch.randint(0, 256, (4, 48), generator=gen)
    ia = IntegerAttention.calibrate(model, calib)
    with torch.no_grad():
        ref, _ = model(idx)
        logits, _ = ia.forward(idx)
    # the attention is now integer (not the float path) yet the logits stay close
    assert not torch.equal(logits, ref)
    assert (logits - ref).abs().max() < 0.05 * ref.abs().max()
    # a head inside the model computes exactly the closed form on its quantized inputs
    q, k, v = (torch.randn(1, 2, 10, 16, generator=gen) for _ in range(3))
    out = ia.attention(1, q, k, v)
    hq = ia.heads[1][0]
    from attnforge.algo.linear.golden import quantize_int8
    want = golden_parallel(hq.fmt, hq.taps, *(quantize_int8(x[0, 0].double().numpy(), s)
                                              for x, s in ((q, hq.q), (k, hq.k), (v, hq.v))))
    assert np.array_equal(np.rint(out[0, 0].double().numpy() / hq.out), want)     # (float32 in the model)
    # the model is its float self again outside use()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], ref)


def test_only_the_hardware_variant_is_accepted():
    with pytest.raises(ConfigError, match="chunk=16"):
        IntegerAttention.calibrate(_model(chunk=16), torch.zeros(1, 8, dtype=torch.long))


def test_cli_int_eval(tmp_path, capsys):
    import json

    from attnforge.algo.linear.train import save_checkpoint

    ck = save_checkpoint(tmp_path / "m.pt", _model())
    out = tmp_path / "r.json"
    assert main(["linear", "int-eval", str(ck), "--calib-windows", "4", "--eval-windows", "4", "--train-bytes",
                 "20000", "--val-bytes", "20000", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r) >= {"float", "integer", "ppl_ratio", "heads"} and len(r["heads"]) == 4
    assert r["ppl_ratio"] == pytest.approx(r["integer"]["ppl"] / r["float"]["ppl"])
