"""Benchmarks run by ``make bench`` / ``attnforge bench``: one module per area.

Each entry maps a benchmark name to ``"module:function"``; the function takes
``(out_dir: Path, *, quick: bool, command: str)``, writes JSON (with the command
that produced it) under ``out_dir`` and returns the path it wrote.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["BENCHMARKS", "run_benchmarks"]

BENCHMARKS = {
    "mac_line": "attnforge.benchmarks.mac_line:run",
    "linear_algo": "attnforge.benchmarks.linear_algo:run",
    "vitcod_algo": "attnforge.benchmarks.vitcod_algo:run",
    "tickets": "attnforge.benchmarks.tickets:run",
    "vitcod_hw": "attnforge.benchmarks.vitcod_hw:run",
    "linear_hw": "attnforge.benchmarks.linear_hw:run",
    "speculative": "attnforge.benchmarks.speculative:run",
    "explore": "attnforge.benchmarks.explore:run",
    "fuzz": "attnforge.benchmarks.fuzz:run",
}


def run_benchmarks(out_dir: Path, names=None, *, quick: bool = False, command: str = "attnforge bench") -> list[Path]:
    names = list(names or BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    paths = []
    for name in names:
        module, func = BENCHMARKS[name].split(":")
        paths.append(getattr(importlib.import_module(module), func)(out_dir, quick=quick, command=command))
    return paths
