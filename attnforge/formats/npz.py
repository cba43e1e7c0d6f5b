"""The one loader protocol of attnforge's ``.npz`` artifacts.

Every artifact kind (masks, head tensors, linear decode tensors, ticket CSR)
loads through ``read_npz`` and writes through ``write_npz``:

* reading: the file must exist (else ``MissingArtifactError``), be a readable
  ``.npz`` without pickled objects, hold every required field, and carry the
  expected ``format`` tag; the kind's own loader then checks dtypes, shapes and
  ranges with ``check_array``/``fail``. Every problem is an ``ArtifactError``
  whose message starts with the file (or object) it came from.
* writing: through ``atomic.atomic_write`` (a unique temporary file beside the
  target, fsynced, then renamed over it), so an interrupted or refused write
  leaves nothing half-written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from attnforge.errors import ArtifactError, MissingArtifactError

from .atomic import atomic_write

__all__ = ["fail", "read_npz", "json_field", "check_array", "write_npz"]


def fail(source, message: str):
    """Raise ``ArtifactError("{source}: {message}")``."""
    raise ArtifactError(f"{source}: {message}")


def read_npz(path, *, kind: str, format: str, required=()) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` at ``path``, after the protocol's checks (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"{path}: no such {kind} file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # not a zip, truncated, pickled objects...
        fail(path, f"not a readable .npz file ({exc})")
    missing = ({"format", *required}) - set(arrays)
    if missing:
        fail(path, f"missing field(s) {sorted(missing)}")
    tag = str(arrays["format"])
    if tag != format:
        fail(path, f"field 'format' is {tag!r}, expected {format!r}")
    return arrays


def json_field(arrays: dict, key: str, source) -> object:
    """The JSON value stored as a string in field ``key``."""
    try:
        return json.loads(str(arrays[key]))
    except (json.JSONDecodeError, RecursionError) as exc:   # RecursionError: nested deeper than Python's limit
        fail(source, f"field {key!r} is not JSON ({exc})")


def check_array(source, name: str, a, dtype, ndim: int | None = None, shape: tuple | None = None) -> np.ndarray:
    """``a`` if it is a numpy array of ``dtype`` (and ``ndim`` dimensions or exactly ``shape``)."""
    want = f"{np.dtype(dtype)} {list(shape)}" if shape is not None else \
        f"{np.dtype(dtype)} with {ndim} dimensions" if ndim is not None else f"{np.dtype(dtype)}"
    if not isinstance(a, np.ndarray) or a.dtype != dtype or (ndim is not None and a.ndim != ndim) \
            or (shape is not None and a.shape != tuple(shape)):
        fail(source, f"field {name!r} must be {want}, got {getattr(a, 'dtype', type(a).__name__)} "
                     f"shape {list(getattr(a, 'shape', ())) if hasattr(a, 'shape') else None}")
    return a


def write_npz(path, arrays: dict, *, compressed: bool = False) -> Path:
    """Write ``arrays`` to ``path`` through a temporary file and a rename; returns ``path``."""
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda f: save(f, **arrays), binary=True)
