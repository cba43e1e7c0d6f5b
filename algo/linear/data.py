"""Byte-level text corpus that exists on every machine: the Python standard library's sources.

Files: every ``*.py`` under ``sysconfig.get_paths()["stdlib"]`` (site-packages
and ``__pycache__`` excluded), sorted by relative path. A file goes to the
held-out split iff ``crc32(relative path) % 10 == 0`` (about 10 %), so the split
does not depend on the order files are found in or on how many there are.
Train and held-out text are the concatenations of their files (separated by a
blank line), cut to ``max_train_bytes`` / ``max_val_bytes``. The vocabulary is
the 256 byte values.
"""

from __future__ import annotations

import hashlib
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Corpus", "load_corpus", "stdlib_files", "VOCAB_SIZE"]

VOCAB_SIZE = 256


def stdlib_files(root: Path | None = None) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"]) if root is None else Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"text corpus folder {root} does not exist")
    files = [f for f in root.rglob("*.py")
             if not {"site-packages", "dist-packages", "__pycache__"} & set(f.relative_to(root).parts)]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


@dataclass
class Corpus:
    train: torch.Tensor  # uint8 [N]
    val: torch.Tensor  # uint8 [M]
    meta: dict

    def batch(self, split: str, batch_size: int, block: int, generator: torch.Generator):
        """Random windows ``x`` and their next-byte targets ``y``, both ``[batch, block]`` int64."""
        data = self.train if split == "train" else self.val
        if len(data) <= block + 1:
            raise ValueError(f"{split} split has {len(data)} bytes, fewer than block+1={block + 1}")
        ix = torch.randint(len(data) - block - 1, (batch_size,), generator=generator)
        x = torch.stack([data[i: i + block] for i in ix.tolist()]).long()
        y = torch.stack([data[i + 1: i + block + 1] for i in ix.tolist()]).long()
        return x, y

    def eval_windows(self, block: int, max_windows: int):
        """Fixed, non-overlapping held-out windows (the same for every model): ``x, y`` ``[n, block]``."""
        n = min(max_windows, (len(self.val) - 1) // block)
        if n < 1:
            raise ValueError(f"held-out split has {len(self.val)} bytes, too few for one window of {block}")
        x = self.val[: n * block].long().view(n, block)
        y = self.val[1: n * block + 1].long().view(n, block)
        return x, y


def load_corpus(max_train_bytes: int = 4_000_000, max_val_bytes: int = 400_000, root: Path | None = None) -> Corpus:
    files = stdlib_files(root)
    base = Path(sysconfig.get_paths()["stdlib"]) if root is None else Path(root)
    train, val = bytearray(), bytearray()
    n_train = n_val = 0
    for f in files:
        rel = f.relative_to(base).as_posix()
        held_out = zlib.crc32(rel.encode()) % 10 == 0
        buf, cap = (val, max_val_bytes) if held_out else (train, max_train_bytes)
        if len(buf) >= cap:
            continue
        buf += f.read_bytes() + b"\n\n"
        if held_out:
            n_val += 1
        else:
            n_train += 1
    train, val = bytes(train[:max_train_bytes]), bytes(val[:max_val_bytes])
    meta = {"source": str(base), "files_train": n_train, "files_val": n_val, "bytes_train": len(train),
            "bytes_val": len(val), "split": "crc32(relative path) % 10 == 0 -> held out",
            "sha256_val": hashlib.sha256(val).hexdigest()[:16]}
    return Corpus(torch.frombuffer(bytearray(train), dtype=torch.uint8),
                  torch.frombuffer(bytearray(val), dtype=torch.uint8), meta)
