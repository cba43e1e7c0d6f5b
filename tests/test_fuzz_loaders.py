"""Property-based fuzzing of every artifact loader (attnforge/formats/): whatever the file holds,
the loader returns an artifact that writes and re-loads equal, or raises ``ArtifactError``
naming the file (and, for a field, a field). Never another exception type.

Inputs: npz files of arbitrary arrays (every dtype numpy writes, NaN/inf, object arrays,
strings, 0-size dimensions), a valid file (written by the project's own writer) with one
field mutated, raw bytes, truncated and empty files, a directory. Example counts come from
the hypothesis profile (conftest.py: ``ci`` in ``make test``, ``long`` in ``make fuzz``).
The cases issue 21 part B fixed (ticket-CSR meta entries, NaN biases, empty layers) are pinned at the end.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from attnforge.errors import ArtifactError
from attnforge.formats.csr import CSR, check_csr, csr_to_dense, dense_to_csr
from attnforge.formats.head_tensors import (HEAD_TENSORS_FORMAT, HeadTensors, decoder_heads, load_head_tensors,
                                            save_head_tensors)
from attnforge.formats.linear_tensors import FORMAT as LINEAR_FORMAT, load_linear_tensors, save_linear_tensors
from attnforge.formats.masks import MASKS_FORMAT, MaskSet, load_masks, save_masks
from attnforge.formats.ticket_csr import CSR_FORMAT, SparseLayer, load_ticket_csr, save_ticket_csr

# ---------------------------------------------------------------- arbitrary arrays

NUMERIC = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "complex64"]
small_shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=3)
numeric_arrays = st.sampled_from(NUMERIC).flatmap(lambda dt: hnp.arrays(dt, small_shapes))
string_arrays = hnp.arrays(st.sampled_from(["<U8", "S8"]), hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
object_arrays = st.builds(lambda xs: np.array(xs + [None], dtype=object), st.lists(st.integers(), max_size=3))
any_array = st.one_of(numeric_arrays, string_arrays, object_arrays)

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                           max_leaves=8)
json_text = st.one_of(
    st.sampled_from(["{}", '{"model": "x"}', "[]", "null", "3", '"s"', "{not json", "", "NaN",
                     '{"layers": []}', '{"layers": 5}', '{"layers": [1]}', '{"layers": [{}]}']),
    st.builds(lambda: "[" * 5000 + "]" * 5000),   # nested deeper than Python's recursion limit
    json_values.map(json.dumps))


def any_field(tag: str):
    """A value for a field named ``format``/``meta`` or any other: usually plausible, sometimes anything."""
    if tag == "format":
        return st.one_of(st.just(np.array(tag)), st.text(max_size=30).map(np.array), any_array)
    return st.one_of(json_text.map(np.array), any_array)


# ---------------------------------------------------------------- valid artifacts, from the writers

@st.composite
def valid_masks(draw):
    L, H, nq, nk = (draw(st.integers(1, 3)) for _ in range(4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    keep = rng.random((L, H, nq, nk)) < 0.4
    order = np.stack([np.stack([rng.permutation(nk) for _ in range(H)]) for _ in range(L)]).astype(np.int32)
    n_global = rng.integers(0, nk + 1, (L, H)).astype(np.int32)
    for l in range(L):
        for h in range(H):
            keep[l, h][:, order[l, h, :n_global[l, h]]] = True
    return MaskSet(keep, order, n_global, {"model": "fuzz"})


@st.composite
def valid_head_tensors(draw):
    L, H, nq, nk, d = (draw(st.integers(1, 3)) for _ in range(5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    i8 = lambda *s: rng.integers(-128, 128, s, dtype=np.int8)   # noqa: E731
    f32 = lambda *s: rng.uniform(1e-3, 1.0, s).astype(np.float32)   # noqa: E731
    fields = dict(q=i8(L, H, nq, d), k=i8(L, H, nk, d), v=i8(L, H, nk, d),
                  q_scale=f32(L, H), k_scale=f32(L, H), v_scale=f32(L, H), o_scale=f32(L, H))
    if draw(st.booleans()):
        hc = decoder_heads(H)
        fields.update(qc=i8(L, hc, nq, d), kc=i8(L, hc, nk, d), dec_wq=i8(L, H, hc), dec_wk=i8(L, H, hc),
                      qc_scale=f32(L), kc_scale=f32(L), dec_wq_scale=f32(L), dec_wk_scale=f32(L))
    return HeadTensors(**fields, meta={"fuzz": True})


@st.composite
def valid_linear(draw):
    n, d, taps = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    i8 = lambda *s: rng.integers(-128, 128, s, dtype=np.int8)   # noqa: E731
    return dict(q=i8(n, d), k=i8(n, d), v=i8(n, d), taps=i8(taps, d), attn_scale=1e-6, conv_scale=1e-3)


@st.composite
def valid_ticket_layers(draw):
    layers = []
    for i in range(draw(st.integers(1, 3))):   # the loader refuses a file without layers
        rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        dense = np.where(rng.random((rows, cols)) < 0.5, rng.integers(-127, 128, (rows, cols)), 0).astype(np.int8)
        layers.append(SparseLayer(f"fc{i}", "linear", (rows, cols), dense_to_csr(dense), float(rng.uniform(0.01, 1)),
                                  rng.standard_normal(rows).astype(np.float32)))
    return layers


def _arrays_of(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _write_valid(kind: str, artifact, path: Path) -> Path:
    if kind == "masks":
        return save_masks(artifact, path)
    if kind == "head":
        return save_head_tensors(artifact, path)
    if kind == "linear":
        return save_linear_tensors(path, **artifact)
    return save_ticket_csr(path, artifact, {"model": "fuzz"})


# ---------------------------------------------------------------- round trips of what a loader accepts

def _same_json(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _round_trip_masks(ms, tmp: Path):
    MaskSet(ms.keep, ms.order, ms.n_global, ms.meta)       # its own validate
    back = load_masks(save_masks(ms, tmp / "again.npz"))
    assert np.array_equal(back.keep, ms.keep) and np.array_equal(back.order, ms.order)
    assert np.array_equal(back.n_global, ms.n_global) and _same_json(back.meta, ms.meta)


def _round_trip_head(t, tmp: Path):
    names = [n for n in HeadTensors.__dataclass_fields__ if n != "meta"]
    HeadTensors(**{n: getattr(t, n) for n in names}, meta=t.meta)
    back = load_head_tensors(save_head_tensors(t, tmp / "again.npz"))
    for n in names:
        a, b = getattr(t, n), getattr(back, n)
        assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), n
    assert _same_json(back.meta, t.meta)


def _round_trip_linear(out, tmp: Path):
    back = load_linear_tensors(save_linear_tensors(tmp / "again.npz", **out))
    assert back.keys() == out.keys()
    assert all(np.array_equal(back[k], out[k]) for k in out)


def _round_trip_tickets(loaded, tmp: Path):
    layers, meta = loaded
    back, meta2 = load_ticket_csr(save_ticket_csr(tmp / "again.npz", layers, {k: v for k, v in meta.items()
                                                                               if k != "layers"}))
    assert len(back) == len(layers)
    for a, b in zip(layers, back):
        assert (a.name, a.kind, a.weight_shape, a.csr.shape) == (b.name, b.kind, b.weight_shape, b.csr.shape)
        assert np.array_equal(a.dense_int8(), b.dense_int8()) and a.scale == b.scale
        assert np.array_equal(a.bias, b.bias, equal_nan=True)


KINDS = {  # kind: (loader, format tag, fields, round trip)
    "masks": (load_masks, MASKS_FORMAT, ("keep", "order", "n_global", "meta"), _round_trip_masks),
    "head": (load_head_tensors, HEAD_TENSORS_FORMAT,
             tuple(n for n in HeadTensors.__dataclass_fields__) , _round_trip_head),
    "linear": (load_linear_tensors, LINEAR_FORMAT, ("q", "k", "v", "taps", "attn_scale", "conv_scale"),
               _round_trip_linear),
    "tickets": (load_ticket_csr, CSR_FORMAT, ("meta", "L0_row_ptr", "L0_col_idx", "L0_values", "L0_scale",
                                              "L0_bias", "L1_row_ptr"), _round_trip_tickets),
}
VALID = {"masks": valid_masks(), "head": valid_head_tensors(), "linear": valid_linear(),
         "tickets": valid_ticket_layers()}
FIELD_WORDS = {   # what an error about a field may call it
    "masks": ("keep", "order", "n_global", "meta", "global columns", "format"),
    "head": tuple(HeadTensors.__dataclass_fields__) + ("format", "decoder fields"),
    "linear": ("q", "k", "v", "taps", "attn_scale", "conv_scale", "format"),
    "tickets": ("meta", "row_ptr", "col_idx", "values", "scale", "bias", "weight shape", "format"),
}


def check_loader(kind: str, path: Path, tmp: Path, field: str | None = None) -> None:
    """The property: an artifact that round-trips, or ``ArtifactError`` naming ``path`` (and a field)."""
    load, _, _, round_trip = KINDS[kind]
    try:
        loaded = load(path)
    except ArtifactError as exc:
        assert str(path) in str(exc), f"the error does not name the file: {exc}"
        if field is not None and "readable .npz" not in str(exc) and "missing field" not in str(exc):
            assert any(w in str(exc) for w in FIELD_WORDS[kind]), f"the error names no field: {exc}"
        return
    round_trip(loaded, tmp)


# ---------------------------------------------------------------- the fuzzers

@st.composite
def arbitrary_npz(draw, kind):
    """An arbitrary dict of arrays over the kind's field names, extra names, the right or a wrong tag."""
    _, tag, fields, _ = KINDS[kind]
    names = draw(st.lists(st.sampled_from((*fields, "format", "extra", "L9_values")), unique=True, max_size=9))
    arrays = {n: draw(any_field(tag if n == "format" else n)) for n in names}
    if draw(st.booleans()):
        arrays["format"] = np.array(tag)
    return arrays


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_arbitrary_fields(kind, data):
    arrays = data.draw(arbitrary_npz(kind))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.npz"
        np.savez(path, **arrays)                      # object arrays are pickled: the loader must refuse them
        check_loader(kind, path, Path(d))


def _cast(a: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        return a.astype(dtype)


def _set_flat(a: np.ndarray, i: int, value) -> np.ndarray:
    b = a.copy().reshape(-1)
    b[i] = _cast(np.array(value), b.dtype)
    return b.reshape(a.shape)


@st.composite
def _json_mutation(draw, text: str):
    """The JSON object in ``text`` with one key (at the top or in one list entry) changed or dropped."""
    obj = json.loads(text)
    targets = [obj] + [e for v in obj.values() if isinstance(v, list) for e in v if isinstance(e, dict)]
    target = draw(st.sampled_from(targets))
    key = draw(st.sampled_from(sorted(target) + ["rows", "cols", "shape", "name", "layers"]))
    if draw(st.integers(0, 4)) == 0:
        target.pop(key, None)
    else:
        target[key] = draw(st.one_of(json_values, st.integers(-3, 5), st.text(max_size=3),
                                     st.lists(st.integers(-2, 5), max_size=3)))
    return json.dumps(obj)


def _mutations(a: np.ndarray):
    """One change of one array: another dtype, shape or value (or a JSON field with one key changed)."""
    if a.dtype.kind == "U":
        try:
            is_object = isinstance(json.loads(str(a)), dict)
        except json.JSONDecodeError:
            is_object = False
        text = [_json_mutation(str(a)).map(np.array)] if is_object else []
        return st.one_of(*text, st.text(max_size=30).map(np.array), json_text.map(np.array), any_array)
    casts = [st.sampled_from(NUMERIC + ["<U3"]).map(lambda dt: _cast(a, dt))]
    shapes = [st.just(a[None]), st.just(a.reshape(-1)), st.just(a[..., :0] if a.ndim else a[None][:0]),
              st.just(a[..., :-1] if a.ndim else a), st.just(np.concatenate([a, a], axis=-1) if a.ndim else a)]
    values = []
    if a.size and a.dtype.kind in "iuf":
        extremes = [-1, 0, 2**31 - 1, -2**31] + ([np.nan, np.inf, -np.inf, 1e-45, 1e38] if a.dtype.kind == "f" else [])
        values.append(st.tuples(st.integers(0, a.size - 1), st.sampled_from(extremes)).map(
            lambda iv: _set_flat(a, *iv)))
    return st.one_of(*casts, *shapes, *values, any_array)


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_mutated_valid_file(kind, data):
    artifact = data.draw(VALID[kind])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        arrays = _arrays_of(_write_valid(kind, artifact, tmp / "valid.npz"))
        field = data.draw(st.sampled_from(sorted(arrays)))
        if data.draw(st.integers(0, 9)) == 0:
            del arrays[field]
        else:
            arrays[field] = data.draw(_mutations(arrays[field]))
        path = tmp / "fuzz.npz"
        np.savez(path, **arrays)
        check_loader(kind, path, tmp, field)


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_valid_file_round_trips(kind, data):
    with tempfile.TemporaryDirectory() as d:
        check_loader(kind, _write_valid(kind, data.draw(VALID[kind]), Path(d) / "valid.npz"), Path(d))


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_bytes_truncated_empty_and_directories(kind, data):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        whole = _write_valid(kind, data.draw(VALID[kind]), tmp / "valid.npz").read_bytes()
        content = data.draw(st.one_of(st.binary(max_size=300), st.integers(0, len(whole) - 1).map(lambda n: whole[:n]),
                                      st.just(b""), st.just(b"PK\x03\x04" + bytes(30)), st.just("a directory")))
        path = tmp / "fuzz.npz"
        if content == "a directory":
            path.mkdir()
        else:
            path.write_bytes(content)
        check_loader(kind, path, tmp)


# ---------------------------------------------------------------- CSR helpers

arrays_0to2d = st.sampled_from(NUMERIC).flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=2,
                                                                                      min_side=0, max_side=6)))


@st.composite
def csr_arrays(draw):
    """Arbitrary row_ptr/col_idx, or a valid CSR with one mutation."""
    rows, cols = draw(st.integers(-2, 4)), draw(st.integers(-2, 4))
    if draw(st.booleans()):
        return draw(arrays_0to2d), draw(arrays_0to2d), (rows, cols)
    rows, cols = abs(rows), abs(cols)
    dense = draw(hnp.arrays(np.bool_, (rows, cols)))
    c = dense_to_csr(dense)
    row_ptr, col_idx = c.row_ptr, c.col_idx
    which = draw(st.sampled_from(["row_ptr", "col_idx", "none"]))
    if which != "none":
        a = row_ptr if which == "row_ptr" else col_idx
        a = draw(_mutations(a))
        row_ptr, col_idx = (a, col_idx) if which == "row_ptr" else (row_ptr, a)
    return row_ptr, col_idx, (rows, cols)


@given(csr_arrays())
def test_check_csr_accepts_only_valid_csr(case):
    row_ptr, col_idx, shape = case
    try:
        check_csr(row_ptr, col_idx, shape, name="fuzzed CSR")
    except ArtifactError as exc:
        assert str(exc).startswith("fuzzed CSR: ")
        return
    # Accepted: the CSR is exactly the one of its own dense pattern.
    dense = csr_to_dense(CSR(row_ptr, col_idx, shape))
    again = dense_to_csr(dense)
    assert np.array_equal(again.row_ptr, row_ptr) and np.array_equal(again.col_idx, col_idx)


@given(st.sampled_from(NUMERIC).flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=2, max_dims=2,
                                                                                   min_side=0, max_side=5))))
def test_dense_csr_round_trip(matrix):
    c = dense_to_csr(matrix)
    check_csr(c.row_ptr, c.col_idx, c.shape)
    back = csr_to_dense(c)
    if matrix.dtype == bool:
        assert np.array_equal(back, matrix)
    else:
        assert np.array_equal(back, np.where(matrix.astype(bool), matrix, 0), equal_nan=True)


# ---------------------------------------------------------------- what issue 21 part B fixed, as the fuzzer met it

def _ticket_file(tmp_path, meta_layers, **arrays) -> Path:
    base = {"format": np.array(CSR_FORMAT), "meta": np.array(json.dumps({"layers": meta_layers}))}
    path = tmp_path / "t.npz"
    np.savez(path, **base, **arrays)
    return path


ONE_LAYER = dict(L0_row_ptr=np.array([0, 1], np.int32), L0_col_idx=np.array([0], np.int32),
                 L0_values=np.array([3], np.int8), L0_scale=np.array(0.5), L0_bias=np.zeros(1, np.float32))


def test_part_b_ticket_meta_entry_without_rows(tmp_path):
    path = _ticket_file(tmp_path, [{"name": "fc", "kind": "linear", "shape": [1, 1], "cols": 1}], **ONE_LAYER)
    with pytest.raises(ArtifactError, match="t.npz"):
        load_ticket_csr(path)


def test_part_b_ticket_nan_bias(tmp_path):
    layer = {"name": "fc", "kind": "linear", "shape": [1, 1], "rows": 1, "cols": 1}
    path = _ticket_file(tmp_path, [layer], **{**ONE_LAYER, "L0_bias": np.array([np.nan], np.float32)})
    with pytest.raises(ArtifactError, match="L0_bias"):
        load_ticket_csr(path)


def test_part_b_ticket_empty_layer_is_refused(tmp_path):
    layer = {"name": "fc", "kind": "linear", "shape": [0, 1], "rows": 0, "cols": 1}
    path = _ticket_file(tmp_path, [layer], L0_row_ptr=np.array([0], np.int32), L0_col_idx=np.zeros(0, np.int32),
                        L0_values=np.zeros(0, np.int8), L0_scale=np.array(0.5), L0_bias=np.zeros(0, np.float32))
    with pytest.raises(ArtifactError, match="t.npz: .*'rows' and 'cols' must be >= 1"):
        load_ticket_csr(path)


# ---------------------------------------------------------------- what the fuzzers found, pinned

Z1 = np.zeros((1, 1), np.int8)

@pytest.mark.parametrize("meta_layers, match", [
    (None, "must list at least one layer"),                  # was TypeError
    ({"model": "x"}, "must list at least one layer"),        # was TypeError
    ([{"name": "fc", "kind": "linear", "shape": [1, 1], "rows": "", "cols": 1}], "'rows' must be of type int"),
    ([{"name": "fc", "kind": "linear", "shape": [], "rows": 1, "cols": 1}], "'shape' must list"),   # was IndexError
])
def test_ticket_meta_found_by_fuzzing(tmp_path, meta_layers, match):
    with pytest.raises(ArtifactError, match=match):
        load_ticket_csr(_ticket_file(tmp_path, meta_layers, **ONE_LAYER))


def test_deep_json_meta_and_vector_scale_found_by_fuzzing(tmp_path):
    path = tmp_path / "m.npz"
    ms = MaskSet(np.ones((1, 1, 1, 1), bool), np.zeros((1, 1, 1), np.int32), np.zeros((1, 1), np.int32))
    np.savez(path, **{**_arrays_of(save_masks(ms, path)), "meta": np.array("[" * 5000 + "]" * 5000)})
    with pytest.raises(ArtifactError, match="'meta' is not JSON"):            # was RecursionError
        load_masks(path)
    path = save_linear_tensors(tmp_path / "l.npz", q=Z1, k=Z1, v=Z1, taps=Z1, attn_scale=1e-6, conv_scale=1e-3)
    np.savez(path, **{**_arrays_of(path), "attn_scale": np.array([1e-6])})
    with pytest.raises(ArtifactError, match="l.npz: field 'attn_scale'"):     # was TypeError
        load_linear_tensors(path)


@pytest.mark.parametrize("row_ptr, col_idx, shape", [
    (np.array([0.0, 1.0]), np.array([0], np.int32), (1, 1)),          # float row_ptr: was TypeError in use
    (np.array([0, 0], np.int32), np.array(0, np.int32), (1, 1)),      # 0-d col_idx: was IndexError
    (np.zeros(0, np.int32), np.zeros(0, np.int32), (-1, 1)),          # negative rows: was IndexError
    (np.array([0, 2, 1], np.uint32), np.array([0], np.int32), (2, 2)),   # uint decrease: was accepted
])
def test_check_csr_found_by_fuzzing(row_ptr, col_idx, shape):
    with pytest.raises(ArtifactError, match="^case: "):
        check_csr(row_ptr, col_idx, shape, name="case")


# ---------------------------------------------------------------- checkpoints (algo/checkpoint.py, issue 21 part A)

@st.composite
def checkpoint_bytes(draw, tmp: Path) -> bytes:
    """A checkpoint the writer made (right or wrong format, a dict or not), then maybe cut, or other bytes."""
    import pickle

    import torch

    from attnforge.algo.checkpoint import save_checkpoint_file

    payload = draw(st.one_of(
        st.builds(lambda tag, n: {"format": tag, "w": torch.arange(n)}, st.sampled_from(["fuzz/1", "other/1", None]),
                  st.integers(0, 4)),
        json_values))
    whole = save_checkpoint_file(tmp / "valid.pt", payload).read_bytes()
    return draw(st.one_of(st.just(whole), st.integers(0, len(whole) - 1).map(lambda n: whole[:n]),
                          st.binary(max_size=200), st.just(pickle.dumps(Path("x")))))


@given(st.data())
def test_checkpoint_loader(data):
    from attnforge.algo.checkpoint import load_checkpoint_file

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = tmp / "fuzz.pt"
        if data.draw(st.integers(0, 19)) == 0:
            path.mkdir()
        else:
            path.write_bytes(data.draw(checkpoint_bytes(tmp)))
        try:
            ck = load_checkpoint_file(path, kind="fuzz checkpoint", format="fuzz/1")
        except ArtifactError as exc:
            assert str(path) in str(exc), exc
            return
        assert isinstance(ck, dict) and ck["format"] == "fuzz/1"
