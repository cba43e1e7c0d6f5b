"""Benchmarks run by ``make bench`` / ``attnforge bench``: one module per area.

Each entry maps a benchmark name to ``"module:function"``; the function takes
``(out_dir: Path, *, quick: bool, command: str)``, writes JSON (with the command
that produced it) under ``out_dir`` and returns the path it wrote. A benchmark
made of independent runs (a sweep) also takes ``workers`` and ``cluster`` and runs
them through ``attnforge.jobs.run_jobs`` (``attnforge bench NAME --workers N`` or
``--cluster ADDRESS``); its JSON does not depend on where they ran.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

__all__ = ["BENCHMARKS", "run_benchmarks", "takes_jobs"]

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
    "board_sim": "attnforge.benchmarks.board_sim:run",
}


def _function(name: str):
    module, func = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(module), func)


def takes_jobs(name: str) -> bool:
    """Whether benchmark ``name`` runs its sweep as jobs (takes ``workers`` and ``cluster``)."""
    params = inspect.signature(_function(name)).parameters
    return "workers" in params and "cluster" in params


def run_benchmarks(out_dir: Path, names=None, *, quick: bool = False, command: str = "attnforge bench",
                   workers: int | None = None, cluster: str | None = None, synth_report=None) -> list[Path]:
    """Run ``names`` (all by default); ``workers`` / ``cluster`` go to those that ``takes_jobs``
    (the others run in this process, and say so when either was given); ``synth_report`` to vitcod_hw."""
    names = list(names or BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    if synth_report is not None and "vitcod_hw" not in names:
        raise ValueError(f"--synth-report {synth_report}: only vitcod_hw reads it, and it is not among {names}")
    paths = []
    for name in names:
        kw = {}
        if takes_jobs(name):
            kw = {"workers": workers, "cluster": cluster} if workers is not None or cluster else {}
        elif workers is not None or cluster:
            print(f"bench {name}: no sweep of independent runs; it runs in this process", file=sys.stderr)
        if name == "vitcod_hw" and synth_report is not None:
            kw["synth_report"] = synth_report
        paths.append(_function(name)(out_dir, quick=quick, command=command, **kw))
    return paths
