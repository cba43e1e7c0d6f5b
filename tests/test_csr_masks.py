"""CSR conversion and the masks.npz artifact: round trips and clear errors on malformed input."""

import json

import numpy as np
import pytest

from attnforge.errors import ArtifactError
from attnforge.formats.csr import CSR, check_csr, csr_to_dense, dense_to_csr
from attnforge.formats.masks import MaskSet, head_csr, head_keep_from_csr, load_masks, save_masks


def test_csr_by_hand():
    m = np.array([[0, 3, 0, 4], [0, 0, 0, 0], [5, 0, 0, 0]], dtype=np.int8)
    csr = dense_to_csr(m)
    assert csr.row_ptr.tolist() == [0, 2, 2, 3]
    assert csr.col_idx.tolist() == [1, 3, 0]
    assert csr.values.tolist() == [3, 4, 5]
    assert np.array_equal(csr_to_dense(csr), m)


def test_csr_pattern_round_trip():
    rng = np.random.default_rng(0)
    keep = rng.random((17, 23)) < 0.2
    csr = dense_to_csr(keep)
    assert csr.values is None and csr.nnz == keep.sum()
    check_csr(csr.row_ptr, csr.col_idx, csr.shape)
    assert np.array_equal(csr_to_dense(csr), keep)


@pytest.mark.parametrize("row_ptr, col_idx, match", [
    ([1, 2, 3], [0, 1, 2], r"row_ptr\[0\] is 1"),
    ([0, 2, 1], [0, 1], "row_ptr decreases at row 1"),
    ([0, 1, 3], [0, 1], "row_ptr\\[-1\\] = 3 but col_idx has 2"),
    ([0, 1, 2], [0, 9], r"col_idx values in \[0, 9\], allowed \[0, 3\]"),
    ([0, 2, 2], [2, 1], "row 0 is not strictly increasing"),
])
def test_check_csr_errors(row_ptr, col_idx, match):
    with pytest.raises(ValueError, match=match):
        check_csr(np.array(row_ptr), np.array(col_idx), (2, 4), "test")


def _random_maskset(L=2, H=3, nq=9, nk=11, seed=0):
    rng = np.random.default_rng(seed)
    keep = rng.random((L, H, nq, nk)) < 0.3
    order = np.stack([np.stack([rng.permutation(nk) for _ in range(H)]) for _ in range(L)]).astype(np.int32)
    n_global = rng.integers(0, 4, (L, H)).astype(np.int32)
    for l in range(L):
        for h in range(H):
            keep[l, h][:, order[l, h, :n_global[l, h]]] = True
    return MaskSet(keep, order, n_global, {"model": "test"})


def test_masks_round_trip(tmp_path):
    ms = _random_maskset()
    path = save_masks(ms, tmp_path / "masks.npz")
    back = load_masks(path)
    assert np.array_equal(back.keep, ms.keep) and np.array_equal(back.order, ms.order)
    assert np.array_equal(back.n_global, ms.n_global) and back.meta == {"model": "test"}


def test_head_csr_round_trip_and_columns_after_global():
    ms = _random_maskset(seed=3)
    for l in range(ms.layers):
        for h in range(ms.heads):
            g, csr = head_csr(ms, l, h)
            assert (csr.col_idx >= g).all()
            assert np.array_equal(head_keep_from_csr(g, csr, ms.order[l, h]), ms.keep[l, h])


def _write(tmp_path, **fields):
    ms = _random_maskset()
    arrays = dict(format=np.array("attnforge.masks/1"), keep=ms.keep, order=ms.order,
                  n_global=ms.n_global, meta=np.array(json.dumps({})))
    arrays.update(fields)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("fields, match", [
    (dict(format=np.array("attnforge.masks/0")), "field 'format' is 'attnforge.masks/0'"),
    (dict(order=None), r"missing field\(s\) \['order'\]"),
    (dict(keep=np.zeros((2, 3, 9, 11), dtype=np.int8)), "'keep' must be a bool array"),
    (dict(order=np.zeros((2, 3, 11), dtype=np.int32)), "layer 0 head 0 is not a permutation"),
    (dict(n_global=np.full((2, 3), 12, dtype=np.int32)), r"'n_global' values must be in \[0, 11\]"),
    (dict(meta=np.array("{not json")), "field 'meta' is not JSON"),
])
def test_load_masks_errors_name_file_and_field(tmp_path, fields, match):
    path = _write(tmp_path, **fields)
    with pytest.raises(ArtifactError, match=match) as info:
        load_masks(path)
    assert "bad.npz" in str(info.value)


def test_load_masks_global_columns_must_be_whole(tmp_path):
    ms = _random_maskset()
    keep = ms.keep.copy()
    l, h = np.argwhere(ms.n_global > 0)[0]
    keep[l, h, 0, ms.order[l, h, 0]] = False
    path = _write(tmp_path, keep=keep)
    with pytest.raises(ArtifactError, match="global columns .* are not fully kept"):
        load_masks(path)


def test_load_masks_not_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("hello")
    with pytest.raises(ArtifactError, match="junk.npz: not a readable .npz"):
        load_masks(path)


def test_save_invalid_writes_nothing(tmp_path):
    ms = _random_maskset()
    ms.order = ms.order[..., :-1]
    with pytest.raises(ArtifactError):
        save_masks(ms, tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []
