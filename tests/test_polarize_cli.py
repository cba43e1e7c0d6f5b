"""``attnforge vitcod polarize`` end to end (issue 14): a raw boolean ``.npy`` (True = kept, or
True = pruned with ``--pruned``) becomes a polarized ``masks.npz`` whose global columns are whole
and first, which loads and round-trips through ``head_csr``; bad input exits 2 with one line and
writes nothing."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from attnforge.algo.vitcod.raw_masks import default_global_threshold, load_raw_masks, polarize_raw
from attnforge.algo.vitcod.synthetic import real_shaped_mask_set
from attnforge.cli import EXIT_BAD_INPUT, EXIT_OK, main
from attnforge.errors import ArtifactError, ConfigError
from attnforge.formats.masks import head_csr, head_keep_from_csr, load_masks

NQ, NK = 12, 10


def _raw(seed=0, shape=(2, 3, NQ, NK)):
    """Random kept entries (30 %) with planted columns: 1 kept by every row, 2 by NQ//2 + 1 rows,
    3 by exactly NQ // 2 rows (not global by default: not more than half)."""
    keep = np.random.default_rng(seed).random(shape) < 0.3
    keep[..., 1:4] = False
    keep[..., :, 1] = True
    keep[..., : NQ // 2 + 1, 2] = True
    keep[..., : NQ // 2, 3] = True
    keep[..., 4] = False
    return keep


def _run(tmp_path, raw, *extra, name="raw.npy"):
    path = tmp_path / name
    np.save(path, raw)
    out, report = tmp_path / "masks.npz", tmp_path / "report.json"
    code = main(["vitcod", "polarize", "--raw", str(path), "-o", str(out), "--json", str(report), *extra])
    return code, out, report


def _check_polarized(ms, raw):
    """Global columns whole and first; nothing kept in the raw masks is lost; CSR round trip."""
    for l in range(ms.layers):
        for h in range(ms.heads):
            g = int(ms.n_global[l, h])
            keep, order = ms.keep[l, h], ms.order[l, h]
            assert keep[:, order[:g]].all()
            assert (keep | ~raw[l, h]).all()                          # only whole columns were added
            assert np.array_equal(keep[:, order[g:]], raw[l, h][:, order[g:]])
            g2, csr = head_csr(ms, l, h)
            assert g2 == g and np.array_equal(head_keep_from_csr(g, csr, order), keep)


def test_polarize_end_to_end(tmp_path, capsys):
    raw = _raw()
    code, out, report_path = _run(tmp_path, raw)
    assert code == EXIT_OK
    ms = load_masks(out)
    _check_polarized(ms, raw)
    # Default threshold NQ // 2 + 1 = 7 rows: columns 1 and 2 global (1 first: kept by more rows), 3 not.
    assert default_global_threshold(NQ) == NQ // 2 + 1
    assert (ms.order[..., 0] == 1).all() and (ms.order[..., 1] == 2).all()
    assert (ms.keep[..., 3].sum(-1) == NQ // 2).all()
    report = json.loads(report_path.read_text())
    assert report["global_threshold"] == NQ // 2 + 1
    assert report["shape"] == [2, 3, NQ, NK]
    assert report["n_global"] == ms.n_global.tolist()
    assert report["per_layer_sparsity_raw"] == pytest.approx([1 - raw[l].mean() for l in range(2)])
    assert report["per_layer_sparsity"] == pytest.approx([1 - ms.keep[l].mean() for l in range(2)])
    assert report["sparsity_raw"] == pytest.approx(1 - raw.mean())
    assert report["sparsity"] == pytest.approx(ms.sparsity()) and report["sparsity"] <= report["sparsity_raw"]
    assert ms.meta["global_threshold"] == NQ // 2 + 1 and ms.meta["pruned"] is False
    printed = capsys.readouterr().out
    assert "layer 1: sparsity" in printed and "G per head" in printed and str(out) in printed


def test_pruned_inverts(tmp_path):
    raw = _raw(seed=1)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    code_kept, kept_out, _ = _run(tmp_path / "a", raw)
    code_pruned, pruned_out, report = _run(tmp_path / "b", ~raw, "--pruned")
    assert code_kept == code_pruned == EXIT_OK
    a, b = load_masks(kept_out), load_masks(pruned_out)
    assert np.array_equal(a.keep, b.keep) and np.array_equal(a.order, b.order)
    assert np.array_equal(a.n_global, b.n_global)
    assert json.loads(report.read_text())["pruned"] is True
    # Without --pruned the same file means the opposite masks.
    code, out, _ = _run(tmp_path, ~raw)
    assert code == EXIT_OK and not np.array_equal(load_masks(out).keep, a.keep)


@pytest.mark.parametrize("threshold,globals_", [(NQ, [1]), (NQ // 2, [1, 2, 3])])
def test_global_threshold_counts_rows(tmp_path, threshold, globals_):
    raw = _raw(seed=2)
    raw[..., 5:] = False                        # only the planted columns (and column 0) can be global
    raw[..., 0] = False
    raw[..., 0, 0] = True
    code, out, _ = _run(tmp_path, raw, "--global-threshold", str(threshold))
    assert code == EXIT_OK
    ms = load_masks(out)
    assert (ms.n_global == len(globals_)).all()
    assert (np.sort(ms.order[..., : len(globals_)], axis=-1) == globals_).all()
    _check_polarized(ms, raw)


def test_three_dimensions_is_one_layer_and_numbers_0_1_are_accepted(tmp_path):
    raw = _raw(shape=(3, NQ, NK))
    code, out, _ = _run(tmp_path, raw.astype(np.float32))
    assert code == EXIT_OK
    ms = load_masks(out)
    assert ms.keep.shape == (1, 3, NQ, NK)
    _check_polarized(ms, raw[None])
    code, out2, _ = _run(tmp_path, raw.astype(np.uint8), name="raw_u8.npy")
    assert code == EXIT_OK and np.array_equal(load_masks(out2).keep, ms.keep)


def test_real_shaped_masks_through_the_command(tmp_path):
    """DeiT-shaped masks: polarization only adds whole columns; the synthetic G columns stay global."""
    synth = real_shaped_mask_set(3, 3, 197, [0.5, 0.9, 0.95], seed=5)
    code, out, report = _run(tmp_path, ~synth.keep, "--pruned")
    assert code == EXIT_OK
    ms = load_masks(out)
    _check_polarized(ms, synth.keep)
    for l in range(3):
        for h in range(3):
            g = int(synth.n_global[l, h])
            assert set(synth.order[l, h, :g]) <= set(ms.order[l, h, : ms.n_global[l, h]])
    assert json.loads(report.read_text())["per_layer_sparsity_raw"] == pytest.approx(
        synth.meta["per_layer_sparsity"])


def _refused(tmp_path, capsys, raw_path, *extra, words=()):
    out, report = tmp_path / "out" / "masks.npz", tmp_path / "out" / "report.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text('{"stale": true}')
    code = main(["vitcod", "polarize", "--raw", str(raw_path), "-o", str(out), "--json", str(report), *extra])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists() and not report.exists()            # nothing written, the stale report gone
    assert [p.name for p in out.parent.iterdir()] == []


def _save(tmp_path, name, array, **kwargs):
    path = tmp_path / name
    np.save(path, array, **kwargs)
    return path


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make,words", [
    (lambda d: _save(d, "m2.npy", np.ones((4, 4), bool)), ["m2.npy", "3 dimensions", "got 2"]),
    (lambda d: _save(d, "m5.npy", np.ones((1, 1, 1, 4, 4), bool)), ["m5.npy", "got 5"]),
    (lambda d: _save(d, "two.npy", np.full((1, 2, 4, 4), 2, np.int8)), ["two.npy", "0 and 1", "2"]),
    (lambda d: _save(d, "half.npy", np.full((1, 2, 4, 4), 0.5)), ["half.npy", "0 and 1", "0.5"]),
    (lambda d: _save(d, "nan.npy", np.full((2, 4, 4), np.nan)), ["nan.npy", "0 and 1", "nan"]),
    (lambda d: _save(d, "str.npy", np.full((2, 4, 4), "x")), ["str.npy", "dtype"]),
    (lambda d: _save(d, "empty.npy", np.ones((1, 0, 4, 4), bool)), ["empty.npy", "empty", "[1, 0, 4, 4]"]),
    (lambda d: _save(d, "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True),
     ["obj.npy", "not a readable .npy"]),
    (lambda d: d / "missing.npy", ["missing.npy", "no such file"]),
    (lambda d: _write(d, "bad.npy", b"not numpy"), ["bad.npy", "not a readable"]),
    (lambda d: _write(d, "m.npz", b""), ["m.npz", ".npy file", "'.npz'"]),
    (lambda d: _write(d, "rawmasks", b""), ["rawmasks", ".npy file", "no suffix"]),
])
def test_bad_raw_files_refused(tmp_path, capsys, make, words):
    _refused(tmp_path, capsys, make(tmp_path), words=words)


@pytest.mark.parametrize("threshold", ["0", str(NQ + 1), "-3"])
def test_threshold_out_of_range_refused(tmp_path, capsys, threshold):
    path = _save(tmp_path, "raw.npy", _raw())
    _refused(tmp_path, capsys, path, "--global-threshold", threshold,
             words=["global_threshold", f"[1, {NQ}]", threshold, f"Nq = {NQ}"])


def test_polarize_raw_refuses_a_threshold_out_of_range():
    with pytest.raises(ConfigError, match=r"global_threshold must be in \[1, 12\], not 13"):
        polarize_raw(_raw(), NQ + 1)


# ---------------------------------------------------------------- fuzzing the loader (as tests/test_fuzz_loaders.py)

_SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=3)
_arrays = st.one_of(
    st.sampled_from(["bool", "int8", "uint8", "int64", "float16", "float64", "complex64", "<U2"]).flatmap(
        lambda dt: hnp.arrays(dt, _SHAPES)),                                   # anything
    st.sampled_from(["int8", "uint8", "int64", "float32"]).flatmap(
        lambda dt: hnp.arrays(dt, _SHAPES, elements=st.sampled_from([0, 1]))))   # numbers 0/1: accepted


@given(array=_arrays, pruned=st.booleans())
def test_fuzz_raw_loader_answers_or_names_the_file(array, pruned):
    """Any array: masks that polarize into a valid MaskSet, or ArtifactError naming the file."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.npy"
        np.save(path, array)
        try:
            keep = load_raw_masks(path, pruned=pruned)
        except ArtifactError as e:
            assert "fuzz.npy" in str(e)
            return
    assert keep.dtype == np.bool_ and keep.ndim == 4 and keep.size > 0
    expected = (array != 0) if array.dtype != np.bool_ else array
    assert np.array_equal(keep.reshape(array.shape), expected ^ pruned)
    ms, report = polarize_raw(keep)
    assert ms.keep.shape == keep.shape and report["n_global"] == ms.n_global.tolist()


@given(data=st.binary(max_size=200))
def test_fuzz_raw_loader_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bytes.npy"
        path.write_bytes(np.lib.format.magic(1, 0) + data if data[:1] == b"\x00" else data)
        try:
            load_raw_masks(path)
        except ArtifactError as e:
            assert "bytes.npy" in str(e)


def test_cycles_mode_chooses_g_for_the_accelerator(tmp_path):
    """--polarize cycles: G per head from the accelerator's exact cycle model; never more cycles than the
    fixed rule's G (one of its candidates), each head checked with the cycle model itself; a configuration
    that cannot be built exits 2 and writes nothing."""
    from attnforge.algo.vitcod.polarize import fit_accelerator
    from attnforge.hw.vitcod import VitcodConfig
    from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

    raw = real_shaped_mask_set(1, 3, 33, 0.8, seed=5).keep
    code, out, report_path = _run(tmp_path, raw, "--polarize", "cycles", "--head-dim", "16", "--dense-lines", "2",
                                  "--sparse-lines", "6")
    assert code == EXIT_OK
    report = json.loads(report_path.read_text())
    assert report["polarize"] == "cycles" and report["accelerator"]["dense_lines"] == 2
    ms = load_masks(out)
    _check_polarized(ms, raw)
    fixed = polarize_raw(raw)[0]
    cfg = fit_accelerator(VitcodConfig(head_dim=16, dense_lines=2, sparse_lines=6, data_width=128), 33, 33, 33 * 33)

    def steady(masks, h):     # the second of three identical heads back to back
        g, csr = head_csr(masks, 0, h)
        return run_cycles(cfg, [HeadShape.from_csr(g, csr.row_ptr, 33)] * 3)["heads"][1]["cycles"]
    for h in range(3):
        assert report["cycles"][0][h] == steady(ms, h) <= steady(fixed, h)
    bad = tmp_path / "bad.npz"
    code = main(["vitcod", "polarize", "--raw", str(tmp_path / "raw.npy"), "-o", str(bad), "--polarize", "cycles",
                 "--head-dim", "12"])
    assert code == EXIT_BAD_INPUT and not bad.exists()
