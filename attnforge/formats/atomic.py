"""The one way attnforge writes a file: whole or not at all.

``atomic_write(path, write)`` opens a uniquely named temporary file in the
target's folder (``tempfile.mkstemp``, so two processes writing the same path
never share one), lets ``write`` fill it, flushes and fsyncs it, and renames it
over ``path`` (``os.replace``). If ``write`` raises, the temporary file is
removed and ``path`` is left as it was. Readers therefore see either the old
file or the new one, never half of one; of two concurrent writers, the last
rename wins.

Every artifact and results writer goes through here: ``--json`` reports,
``.npz`` artifacts (``formats/npz.py``), checkpoints, benchmark results.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_json_atomic", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, *, binary: bool = False) -> Path:
    """Create or replace ``path`` with what ``write(file)`` writes (text, or bytes with ``binary``).

    The folder is created if missing; the file gets the usual permissions
    (0666 less the umask), not ``mkstemp``'s private 0600. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    """``atomic_write`` of one string."""
    return atomic_write(path, lambda f: f.write(text))


def write_json_atomic(path, obj, *, indent: int | None = 2, **dumps) -> Path:
    """``obj`` as JSON (with a final newline), written atomically; ``dumps`` go to ``json.dumps``."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, **dumps) + "\n")
