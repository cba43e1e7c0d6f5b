"""Inputs that used to be accepted and give wrong results (issue 21): each is now refused.

* degenerate requantizers (every value to 0, or every nonzero value saturated):
  the check itself at its boundaries (``numfmt.check_requantizer``), and the
  files that lead to one (head tensors, linear tensors) through the commands;
* ticket CSR files with no layer, NaN biases, incomplete layer entries;
* masks with an empty token dimension.

No RTL runs here: every refusal comes before the simulator starts.
"""

import json
import math

import numpy as np
import pytest

from attnforge.cli import main
from attnforge.errors import ArtifactError, ConfigError
from attnforge.formats.csr import CSR
from attnforge.formats.head_tensors import HeadTensors, decoder_requantizers, save_head_tensors
from attnforge.formats.linear_tensors import save_linear_tensors
from attnforge.formats.masks import MaskSet, load_masks, save_masks
from attnforge.formats.npz import write_npz
from attnforge.formats.ticket_csr import SparseLayer, load_ticket_csr, save_ticket_csr
from attnforge.linear_format import LinearDecodeFormat
from attnforge.numfmt import INT8, IntFormat, Requantizer, check_requantizer, requantizer_for, requantizer_scale_range
from attnforge.softmax_int import exp_requantizer, out_requantizer

# ---------------------------------------------------------------- the requantizer check


@pytest.mark.parametrize("rq, in_range, ok", [
    # (127 + 128) >> 8 = 0 everywhere on [0, 127]; 128 reaches 1.
    (Requantizer(1, 8), (0, 127), False),
    (Requantizer(1, 8), (0, 128), True),
    # round half up: -128 gives (-128 + 128) >> 8 = 0, -129 gives -1.
    (Requantizer(1, 8), (-128, 0), False),
    (Requantizer(1, 8), (-129, 0), True),
    (Requantizer(0, 62), INT8, False),
    # 1 -> 128 and -1 -> -128: -1 is still representable in int8.
    (Requantizer(128, 0), (-5, 5), True),
    (Requantizer(129, 0), (-5, 5), False),
    (Requantizer(128, 0), (0, 5), False),
    (Requantizer(127, 0), (0, 5), True),
    (Requantizer(3, 0, IntFormat(16, signed=False)), (0, 1), True),
])
def test_check_requantizer_boundaries(rq, in_range, ok):
    if ok:
        assert check_requantizer(rq, in_range, what="test") is rq
    else:
        with pytest.raises(ConfigError, match=rf"test: multiplier {rq.multiplier}, shift {rq.shift} .*work"):
            check_requantizer(rq, in_range, what="test")


@pytest.mark.parametrize("in_range, out", [(INT8, INT8), ((0, 1000), IntFormat(16, signed=False)),
                                           ((-(1 << 30), 1 << 30), IntFormat(16))])
def test_scale_range_agrees_with_the_check(in_range, out):
    """Away from its ends (the 16-bit multiplier rounds the scale), the range is exactly what the check takes."""
    lo, hi = requantizer_scale_range(in_range, out)
    for s in np.geomspace(lo / 1e3, min(hi * 10, 60000), 400):
        inside = lo * (1 + 1e-3) <= s < hi * (1 - 1e-3)
        outside = s < lo * (1 - 1e-3) or s > hi * (1 + 1e-3)
        try:
            requantizer_for(float(s), in_range, out=out, what="t")
            accepted = True
        except ConfigError:
            accepted = False
        assert (inside and accepted) or (outside and not accepted) or not (inside or outside), s


def test_scale_requantizers_refuse_degenerate_scales():
    with pytest.raises(ConfigError, match=r"multiplier 0, shift 62 .* to 0.*o_scale is 1e\+30, o_scale in about"):
        out_requantizer(0.02, 1e30)
    with pytest.raises(ConfigError, match=r"saturates every nonzero input.*o_scale is 1e-09"):
        out_requantizer(0.02, 1e-9)
    with pytest.raises(ConfigError, match=r"softmax exponent requantizer.*q_scale \* k_scale is 1e-12"):
        exp_requantizer(1e-6, 1e-6, 64)
    with pytest.raises(ConfigError, match="needs a left shift.*q_scale \\* k_scale"):
        exp_requantizer(1e3, 1e3, 64)
    fmt = LinearDecodeFormat(d=16, conv_taps=3, max_tokens=64)
    with pytest.raises(ConfigError, match=r"attention requantizer: multiplier 0.*attn_scale is 1e-30"):
        fmt.checked_requant_params(1e-30, 0.01)
    with pytest.raises(ConfigError, match=r"convolution requantizer.*conv_scale is 1e-30"):
        fmt.checked_requant_params(1e-4, 1e-30)
    # Ordinary scales still pass, and give what requant_params gives.
    assert out_requantizer(0.02, 0.02).multiplier and exp_requantizer(0.02, 0.02, 64).multiplier
    assert fmt.checked_requant_params(1e-4, 0.01) == LinearDecodeFormat.requant_params(1e-4, 0.01)


# ---------------------------------------------------------------- files through the commands


def _head_tensors(rng, L=1, H=2, n=8, d=8, decoder=False, **change) -> HeadTensors:
    i8 = lambda *s: rng.integers(-128, 128, s).astype(np.int8)  # noqa: E731
    f32 = lambda *s: np.full(s, 0.02, np.float32)  # noqa: E731
    kw = dict(q=i8(L, H, n, d), k=i8(L, H, n, d), v=i8(L, H, n, d), q_scale=f32(L, H), k_scale=f32(L, H),
              v_scale=f32(L, H), o_scale=f32(L, H), meta={})
    if decoder:
        hc = (H + 1) // 2
        kw.update(qc=i8(L, hc, n, d), kc=i8(L, hc, n, d), qc_scale=f32(L), kc_scale=f32(L),
                  dec_wq=i8(L, H, hc), dec_wk=i8(L, H, hc), dec_wq_scale=f32(L), dec_wk_scale=f32(L))
    kw.update(change)
    return HeadTensors(**kw)


def _masks(L=1, H=2, n=8) -> MaskSet:
    keep = np.ones((L, H, n, n), dtype=bool)
    order = np.tile(np.arange(n, dtype=np.int32), (L, H, 1))
    return MaskSet(keep, order, np.full((L, H), 2, np.int32), {})


def test_vitcod_sim_refuses_a_degenerate_output_scale(tmp_path, capsys):
    """o_scale = 1e30 made every output 0 and the run "bit exact"; now exit 2 naming file, head and field."""
    rng = np.random.default_rng(0)
    o_scale = np.full((1, 2), 0.02, np.float32)
    o_scale[0, 1] = 1e30
    tensors = save_head_tensors(_head_tensors(rng, o_scale=o_scale), tmp_path / "t.npz")
    masks = save_masks(_masks(), tmp_path / "m.npz")
    assert main(["vitcod", "sim", "--masks", str(masks), "--tensors", str(tensors)]) == 2
    err = capsys.readouterr().err
    assert f"{tensors}: layer 0 head 1: attention output requantizer: multiplier 0, shift 62" in err
    assert "o_scale is 1e+30" in err


def test_degenerate_decoder_scales_name_the_head_field(tmp_path):
    rng = np.random.default_rng(1)
    q_scale = np.full((1, 2), 0.02, np.float32)
    q_scale[0, 0] = 1e30
    t = _head_tensors(rng, decoder=True, q_scale=q_scale)
    with pytest.raises(ConfigError, match=r"q decoder requantizer of layer 0 head 0.*q_scale\[0, 0\] is 1e\+30"):
        decoder_requantizers(t, 0, 0)
    decoder_requantizers(t, 0, 1)   # the other head is fine


def test_linear_sim_refuses_vanishing_scales(tmp_path, capsys):
    """Scales of 1e-30 made the attention term vanish and the run "bit exact"; now exit 2 before any RTL."""
    rng = np.random.default_rng(2)
    q, k, v = (rng.integers(-128, 128, (6, 16)) for _ in range(3))
    path = save_linear_tensors(tmp_path / "lin.npz", q=q, k=k, v=v, taps=rng.integers(-128, 128, (4, 16)),
                               attn_scale=1e-30, conv_scale=1e-30)
    assert main(["linear", "sim", "--tensors", str(path), "--d", "16", "--build-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: attention requantizer: multiplier 0, shift 62" in err and "attn_scale is 1e-30" in err


# ---------------------------------------------------------------- ticket CSR and masks


def _ticket(tmp_path, **change):
    """A valid one-layer ticket file, then its arrays/meta changed."""
    csr = CSR(np.array([0, 1, 2], np.int32), np.array([0, 2], np.int32), (2, 3), np.array([5, -7], np.int8))
    path = save_ticket_csr(tmp_path / "ok.npz", [SparseLayer("fc", "linear", (2, 3), csr, 0.1,
                                                             np.zeros(2, np.float32))])
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    for key, value in change.items():
        if key == "meta":
            value(meta)
        else:
            arrays[key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    return write_npz(tmp_path / "bad.npz", arrays)


@pytest.mark.parametrize("change, match", [
    (dict(meta=lambda m: m.update(layers=[])), "at least one layer"),
    (dict(L0_bias=np.array([0.0, math.nan], np.float32)), r"'L0_bias' holds 1 NaN or infinite"),
    (dict(meta=lambda m: m["layers"][0].pop("rows")), r"'meta' layer 0 \(fc\) has no 'rows'"),
    (dict(meta=lambda m: m["layers"][0].update(cols="3")), r"'cols' must be of type int"),
    (dict(meta=lambda m: m["layers"][0].update(kind="conv3d")), r"'kind' must be one of"),
    (dict(meta=lambda m: m["layers"].append(7)), r"layer 1 must be a JSON object"),
])
def test_ticket_csr_files_that_loaded_but_were_wrong(tmp_path, change, match):
    load_ticket_csr(_ticket(tmp_path))   # the unchanged file loads
    path = _ticket(tmp_path, **change)
    with pytest.raises(ArtifactError, match=f"^{path}: .*{match}"):
        load_ticket_csr(path)


@pytest.mark.parametrize("nq, nk", [(0, 4), (4, 0)])
def test_masks_with_no_tokens_are_refused(tmp_path, nq, nk):
    with pytest.raises(ArtifactError, match=r"'keep' has an empty dimension"):
        MaskSet(np.zeros((1, 1, nq, nk), bool), np.zeros((1, 1, nk), np.int32), np.zeros((1, 1), np.int32))
    path = write_npz(tmp_path / "m.npz", dict(format=np.array("attnforge.masks/1"),
                                              keep=np.zeros((1, 1, nq, nk), bool),
                                              order=np.zeros((1, 1, nk), np.int32),
                                              n_global=np.zeros((1, 1), np.int32), meta=np.array("{}")))
    with pytest.raises(ArtifactError, match=f"^{path}: 'keep' has an empty dimension"):
        load_masks(path)


# ---------------------------------------------------------------- overflow is reported


def test_linear_sim_reports_overflow_without_failing(tmp_path, monkeypatch, capsys):
    """The JSON carries the testbench's per-head ``overflow`` and stderr warns; the exit status stays
    0 for a bit-exact run (1 means the RTL differs). The simulator is replaced by its result here;
    tests/rtl/test_linear_decode.py runs the real one past max_tokens."""
    import attnforge.flows.linear as flow
    from attnforge.sim.runner import SimResult

    def fake(design, config, **kw):
        report = {"overflow": [False, True], "modes": [{"tokens": 5, "steady_cycles_per_accepted": 40.0}]}
        return SimResult("verilator", 2, 0, tmp_path, tmp_path / "results.xml", None, report, 0.0, 0.0,
                         tmp_path, skipped=1)

    monkeypatch.setattr(flow, "simulate", fake)
    out = tmp_path / "sim.json"
    assert main(["linear", "sim", "--tokens", "5", "--heads", "2", "--max-tokens", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["overflow"] == [False, True] and report["bit_exact"] and report["tests"] == 2
    assert "WARNING: overflow on head(s) [1]: more than max_tokens=4" in capsys.readouterr().err


def test_ticket_csr_writer_refuses_what_the_loader_refuses(tmp_path):
    path = tmp_path / "none.npz"
    with pytest.raises(ArtifactError, match="needs at least one layer"):
        save_ticket_csr(path, [])
    assert not path.exists()


def test_vitcod_export_refuses_degenerate_scales_before_writing(tmp_path, monkeypatch):
    """The exporter checks what the simulator would refuse, and writes nothing then."""
    from attnforge.algo.vitcod import export

    rng = np.random.default_rng(1)
    o_scale = np.full((1, 2), 0.02, np.float32)
    o_scale[0, 0] = 1e30
    monkeypatch.setattr(export, "quantize_heads", lambda model, image, meta=None: _head_tensors(rng, o_scale=o_scale))
    path = tmp_path / "heads.npz"
    with pytest.raises(ArtifactError, match=f"^{path}: layer 0 head 0: .*o_scale is 1e\\+30"):
        export.export_head_tensors(None, None, path)
    assert not path.exists()
