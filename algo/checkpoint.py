"""Checkpoints of plain data: saved atomically, loaded without running anything.

A checkpoint file is a ``torch.save`` of a dict holding only what
``torch.load(weights_only=True)`` accepts: tensors, str, int, float, bool,
None, and lists, tuples and dicts of these. Configurations are stored as
``dataclasses.asdict`` dicts and rebuilt by the loader, masks as tensors. So a
file from elsewhere is read by PyTorch's restricted unpickler: a pickle that
would build any other object (and run code while doing so) is refused, never
executed.

``load_checkpoint_file`` turns every way a file can fail to be a checkpoint
(missing, empty, random bytes, truncated, a payload, a foreign object) into
``ArtifactError`` (``MissingArtifactError`` when missing) naming the file.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

from attnforge.errors import ArtifactError, MissingArtifactError
from attnforge.formats.atomic import atomic_write

__all__ = ["save_checkpoint_file", "load_checkpoint_file", "read_plain"]


def save_checkpoint_file(path, payload: dict) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (see ``attnforge.formats.atomic``)."""
    import torch

    return atomic_write(path, lambda f: torch.save(payload, f), binary=True)


def read_plain(path, *, kind: str):
    """Whatever plain data ``path`` holds (``torch.load(weights_only=True)``); ``ArtifactError`` otherwise."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder, not a {kind} file")
    if not path.is_file():
        raise MissingArtifactError(f"{path} does not exist (no {kind} there)")
    try:
        with warnings.catch_warnings():   # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # empty, random bytes, truncated, a pickle of anything but plain data
        raise ArtifactError(f"{path}: not a readable {kind} ({_why(exc)})") from None


def _why(exc: Exception) -> str:
    """One short line for why ``torch.load(weights_only=True)`` refused a file."""
    text = str(exc)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return (f"it refers to {m.group(1)}, and only plain data is loaded: unpickling it could run code, "
                f"so it was not unpickled")
    if isinstance(exc, EOFError) or "EOF" in text:
        return "empty or cut short"
    if isinstance(exc, pickle.UnpicklingError):
        return "not a torch file of plain data: tensors, numbers, strings, lists, dicts"
    if "zip archive" in text:
        return "a damaged or foreign zip archive"
    first = " ".join(text.split())[:160]
    return f"{type(exc).__name__}: {first}"


def load_checkpoint_file(path, *, kind: str, format: str | None = None) -> dict:
    """The dict saved at ``path``, read with ``torch.load(weights_only=True)``.

    ``kind`` names the checkpoint in messages ("ViTCoD checkpoint"); with
    ``format`` the dict's ``"format"`` entry must equal it, without it the dict
    must have a ``"format"`` entry.
    """
    ck = read_plain(path, kind=kind)
    found = ck.get("format") if isinstance(ck, dict) else None
    if not isinstance(ck, dict) or found is None or (format is not None and found != format):
        what = f"format {found!r}" if isinstance(ck, dict) else f"a {type(ck).__name__}"
        want = f"format {format!r}" if format else "a 'format' entry"
        raise ArtifactError(f"{path}: not an attnforge {kind} ({what}, expected {want})")
    return ck
