"""The one loader protocol of the .npz artifacts (attnforge/formats/npz.py) and its one error type."""

import numpy as np
import pytest

from attnforge.errors import ArtifactError, MissingArtifactError
from attnforge.formats.head_tensors import load_head_tensors
from attnforge.formats.linear_tensors import load_linear_tensors
from attnforge.formats.masks import load_masks
from attnforge.formats.npz import check_array, read_npz, write_npz
from attnforge.formats.ticket_csr import load_ticket_csr

LOADERS = [load_masks, load_head_tensors, load_linear_tensors, load_ticket_csr]


@pytest.mark.parametrize("load", LOADERS)
def test_every_loader_raises_artifact_errors_naming_the_file(tmp_path, load):
    missing = tmp_path / "none.npz"
    with pytest.raises(MissingArtifactError, match="none.npz: no such") as info:
        load(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ArtifactError)
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(ArtifactError, match="junk.npz: not a readable .npz file"):
        load(junk)
    other = write_npz(tmp_path / "other.npz", {"format": np.array("someone.else/1"), "meta": np.array("{}")})
    with pytest.raises(ArtifactError, match="other.npz: (field 'format' is 'someone.else/1'|missing field)"):
        load(other)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, format=np.array("x/1"), obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ArtifactError, match="not a readable .npz"):
        read_npz(path, kind="test", format="x/1")


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "a.npz", {"format": np.array("x/1"), "v": np.arange(3)})
    assert read_npz(path, kind="test", format="x/1", required=("v",))["v"].tolist() == [0, 1, 2]

    def broken(file, **arrays):
        file.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        write_npz(tmp_path / "b.npz", {"format": np.array("x/1")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]   # no b.npz, no temporary file


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    import json
    import os

    from attnforge.formats.atomic import atomic_write, write_json_atomic

    path = write_json_atomic(tmp_path / "sub" / "r.json", {"bit_exact": True})
    assert json.loads(path.read_text()) == {"bit_exact": True}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask          # not mkstemp's private 0600

    def half(f):
        f.write('{"bit_exact": fa')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert json.loads(path.read_text()) == {"bit_exact": True}       # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]   # no temporary file


def test_check_array_names_source_field_and_expectation():
    with pytest.raises(ArtifactError, match=r"src: field 'q' must be int8 with 2 dimensions, got int16 shape \[3\]"):
        check_array("src", "q", np.zeros(3, np.int16), np.int8, ndim=2)
    assert check_array("src", "q", np.zeros((2, 2), np.int8), np.int8, shape=(2, 2)).shape == (2, 2)


def test_output_digest_order_and_width():
    from attnforge.formats.digest import output_digest
    import hashlib

    rows = [np.array([[1, -1], [127, -128]], np.int8), np.array([[0, 5]], np.int8)]
    assert output_digest(rows) == hashlib.sha256(bytes([1, 255, 127, 128, 0, 5])).hexdigest()
    assert output_digest([[1, -1], [127, -128], [0, 5]]) == output_digest(rows)      # lists, same order
    assert output_digest([[3], [-2]], "int64") == hashlib.sha256(
        (3).to_bytes(8, "little", signed=True) + (-2).to_bytes(8, "little", signed=True)).hexdigest()
    assert output_digest(rows) != output_digest(rows[::-1])
    with pytest.raises(ValueError, match="do not fit int8"):
        output_digest([[200]])
