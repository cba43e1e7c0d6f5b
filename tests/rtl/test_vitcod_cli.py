"""``attnforge vitcod sim`` end to end: every head of a mask file, real tensors, on the RTL."""

import json
from pathlib import Path

import numpy as np
import pytest

from attnforge.cli import main
from attnforge.flows.vitcod import mask_heads
from attnforge.formats.digest import output_digest
from attnforge.formats.head_tensors import HeadTensors, load_head_tensors, save_head_tensors
from attnforge.formats.masks import load_masks, save_masks
from attnforge.hw.vitcod import VitcodConfig
from attnforge.algo.vitcod.synthetic import polarized_mask_set

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
KEYS = {"bit_exact", "cycles", "ideal_cycles", "utilization", "dense_baseline_cycles", "speedup", "load_cycles",
        "bound_cycles", "limited_by"}


@pytest.mark.full     # make test time; the algorithm pipeline's heads run on the RTL in test_vitcod_pipeline.py
def test_vitcod_sim_all_heads_with_tensors(tmp_path):
    layers, heads, n, d = 2, 3, 20, 16
    masks = save_masks(polarized_mask_set(layers, heads, n, 0.85, seed=5), tmp_path / "masks.npz")
    rng = np.random.default_rng(6)
    i8 = lambda *s: rng.integers(-128, 128, s).astype(np.int8)  # noqa: E731
    f32 = lambda *s: rng.uniform(0.01, 0.04, s).astype(np.float32)  # noqa: E731
    tensors = save_head_tensors(HeadTensors(q=i8(layers, heads, n, d), k=i8(layers, heads, n, d),
                                            v=i8(layers, heads, n, d), q_scale=f32(layers, heads),
                                            k_scale=f32(layers, heads), v_scale=f32(layers, heads),
                                            o_scale=f32(layers, heads)), tmp_path / "tensors.npz")
    out = tmp_path / "report.json"
    rc = main(["vitcod", "sim", "--masks", str(masks), "--all-heads", "--tensors", str(tensors), "--seed", "3",
               "--dense-lines", "1", "--sparse-lines", "2", "--data-width", "64", "--build-root", str(BUILD),
               "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0 and report["bit_exact"] is True
    assert KEYS <= set(report) and len(report["heads"]) == layers * heads
    for h in report["heads"]:
        assert KEYS - {"bit_exact"} <= set(h)
        assert h["model_cycles"] == h["cycles"]
        assert 0 < h["utilization"] <= 1
    assert report["cycles"] == sum(h["cycles"] for h in report["heads"])
    assert report["speedup"] > 1
    # output_digest: the RTL's int8 outputs, heads in run order; bit-exact, so the golden outputs' digest
    ms, ht = load_masks(masks), load_head_tensors(tensors)
    pairs = [(l, h) for l in range(layers) for h in range(heads)]
    tb_heads = mask_heads(VitcodConfig(**report["config"]), ms, pairs, seed=3, tensors=ht)
    assert report["output_digest"] == output_digest([t.expected for t in tb_heads], "int8")
    # load cycles: the beats the testbench streamed for each head (one per cycle)
    assert [h["load_cycles"] for h in report["heads"]] == [len(t.beats) for t in tb_heads]
    assert report["load_cycles"] == sum(len(t.beats) for t in tb_heads)


def _decoder_tensors(path, layers, heads, hc, n, d):
    """Random int8 head tensors with the decoder's compressed Q/K and weights (seed 9), saved at ``path``."""
    rng = np.random.default_rng(9)
    i8 = lambda *s: rng.integers(-128, 128, s).astype(np.int8)  # noqa: E731
    f32 = lambda *s: rng.uniform(0.01, 0.04, s).astype(np.float32)  # noqa: E731
    return save_head_tensors(HeadTensors(
        q=i8(layers, heads, n, d), k=i8(layers, heads, n, d), v=i8(layers, heads, n, d),
        q_scale=f32(layers, heads) * 40, k_scale=f32(layers, heads) * 40, v_scale=f32(layers, heads),
        o_scale=f32(layers, heads), qc=i8(layers, hc, n, d), kc=i8(layers, hc, n, d), qc_scale=f32(layers),
        kc_scale=f32(layers), dec_wq=i8(layers, heads, hc), dec_wk=i8(layers, heads, hc),
        dec_wq_scale=f32(layers), dec_wk_scale=f32(layers)), path)


@pytest.mark.full     # the decoder's RTL runs in tests/rtl/test_vitcod.py (d64-decoder) in make test
def test_vitcod_sim_all_heads_through_the_decoder(tmp_path):
    """--decoder: each layer's compressed Q/K are loaded once; its three heads decode theirs on chip."""
    layers, heads, hc, n, d = 2, 3, 2, 12, 16
    masks = save_masks(polarized_mask_set(layers, heads, n, 0.7, seed=8), tmp_path / "masks.npz")
    tensors = _decoder_tensors(tmp_path / "tensors.npz", layers, heads, hc, n, d)
    out = tmp_path / "report.json"
    rc = main(["vitcod", "sim", "--masks", str(masks), "--all-heads", "--tensors", str(tensors), "--decoder",
               "--dense-lines", "1", "--sparse-lines", "2", "--data-width", "64", "--build-root", str(BUILD),
               "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0 and report["bit_exact"] is True and report["config"]["decoder"] is True
    assert len(report["heads"]) == layers * heads
    for h in report["heads"]:
        assert h["model_cycles"] == h["cycles"]


def test_vitcod_sim_refuses_bad_input(tmp_path, capsys):
    bad = tmp_path / "masks.npz"
    bad.write_bytes(b"not a zip")
    assert main(["vitcod", "sim", "--masks", str(bad)]) == 2
    assert "masks.npz" in capsys.readouterr().err
    masks = save_masks(polarized_mask_set(1, 2, 8, 0.5), tmp_path / "m.npz")
    assert main(["vitcod", "sim", "--masks", str(masks), "--layer", "0", "--head", "5"]) == 2
    assert "head 5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["vitcod", "sim", "--masks", str(masks), "--global-columns", "fast"])
    assert exc.value.code == 2 and "--global-columns: invalid choice: 'fast'" in capsys.readouterr().err


@pytest.mark.full     # make test: the host's G' and two rows per beat run in the Amaranth simulator (test_vitcod_components)
def test_vitcod_sim_sends_global_columns_as_csr_on_a_two_row_stream(tmp_path):
    """--global-columns cycles on 1 + 1 lines with two token rows per beat (d = 16, 256 bits): heads whose
    G is large next to their rows' sparse part get G' < G; every head bit-exact, the cycle model exact on
    the RTL, and the run faster than the model's figure for the masks' G."""
    from attnforge.hw.vitcod.cycles import run_cycles
    from attnforge.tb.vitcod_jobs import shapes_of

    # 80 % of the kept entries in G = 3 global columns of 21: the Denser Engine's share outweighs the rows' CSR part
    masks = save_masks(polarized_mask_set(1, 3, 21, 0.8, 0.8, seed=2), tmp_path / "masks.npz")
    out = tmp_path / "report.json"
    rc = main(["vitcod", "sim", "--masks", str(masks), "--all-heads", "--head-dim", "16", "--dense-lines", "1",
               "--sparse-lines", "1", "--data-width", "256", "--global-columns", "cycles", "--build-root", str(BUILD),
               "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0 and report["bit_exact"] is True and report["global_columns"] == "cycles"
    assert any(h["g_sent"] < h["g"] for h in report["heads"])
    assert [h["cycles"] for h in report["heads"]] == [h["model_cycles"] for h in report["heads"]]
    cfg = VitcodConfig(**report["config"])
    plain = mask_heads(cfg, load_masks(masks), [(0, h) for h in range(3)])     # G' = G
    assert report["cycles"] < run_cycles(cfg, shapes_of(plain))["total_cycles"]


@pytest.mark.parametrize("decoder", [False, True])
def test_vitcod_sim_global_columns_cycles_sends_the_chosen_heads(tmp_path, monkeypatch, decoder):
    """--global-columns cycles without the RTL (run_heads replaced): the heads handed to the testbench carry
    the G' that sent_globals chooses for them in run order (with the decoder, layer loads between), the
    index buffer holds their CSR entries, and the report names G and G' per head."""
    import attnforge.flows.vitcod as flow
    from attnforge.hw.vitcod.cycles import run_cycles, sent_globals
    from attnforge.tb.vitcod_jobs import shapes_of

    layers, heads, hc, n, d = 2, 2, 1, 12, 16
    masks = save_masks(polarized_mask_set(layers, heads, n, 0.8, 0.8, seed=2), tmp_path / "masks.npz")
    tensors = _decoder_tensors(tmp_path / "tensors.npz", layers, heads, hc, n, d)
    seen = {}

    class Result:
        passed, simulator, build_dir, run_dir = True, "stub", tmp_path, tmp_path

    def fake_run_heads(cfg, tb_heads, **kw):
        seen["cfg"], seen["heads"] = cfg, tb_heads
        Result.report = run_cycles(cfg, shapes_of(tb_heads))
        return Result

    monkeypatch.setattr(flow, "run_heads", fake_run_heads)
    report = flow.simulate_masks(masks, all_heads=True, tensors_path=tensors, decoder=decoder, dense_lines=1,
                                 sparse_lines=1, data_width=128, global_columns="cycles", build_root=tmp_path)
    cfg, sent = seen["cfg"], seen["heads"]
    plain = shapes_of(flow.mask_heads(cfg, load_masks(masks), [(l, h) for l in range(layers) for h in range(heads)],
                                      tensors=load_head_tensors(tensors), decoder=decoder))
    want = [g for g, s in zip(sent_globals(cfg, plain), plain) if not s.layer]
    assert [h["g_sent"] for h in report["heads"]] == want and any(g2 < h["g"] for g2, h in zip(want, report["heads"]))
    assert [t.cmd["g"] for t in sent] == want and all(t.cmd["nnz"] <= cfg.max_nnz for t in sent)
    assert report["global_columns"] == "cycles" and report["cycles"] == report["model_cycles"]
    with pytest.raises(ValueError, match="--global-columns 'fast': expected one of mask, cycles"):
        flow.simulate_masks(masks, global_columns="fast")
