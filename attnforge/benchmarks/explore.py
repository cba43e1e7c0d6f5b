"""Benchmark of ``attnforge explore vitcod``: how long the design-space answer takes (issue goal: <= 30 s).

Masks shaped like real pruned models (``real_shaped_mask_set``, 90 % sparse): the digits
ViT's shape (4 layers x 4 heads, N = 65, d = 16; the flow's model) and DeiT-Tiny's
(12 x 3, N = 197, d = 64). For each: the wall time of a cold run (empty cache, every
configuration through the cycle model in a process pool of the machine's CPUs) and of a
rerun (from the cache), the cold run's CPU time (user + system of this process and its
workers: what a busy machine changes much less than the wall time) and the 1-minute load
average before and after it, the number of configurations, the Pareto front and the
fastest configuration that fits ECP5-85k. Writes ``explore.json``.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from attnforge.algo.vitcod.synthetic import real_shaped_mask_set
from attnforge.flows.explore import explore_vitcod
from attnforge.formats.atomic import write_json_atomic
from attnforge.formats.masks import save_masks

__all__ = ["run"]

#: name: (layers, heads, N, head_dim)
SHAPES = {"digits_vit": (4, 4, 65, 16), "deit_tiny": (12, 3, 197, 64)}


def _cpu_seconds() -> float:
    """User + system time of this process and its finished children (the pool's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _summary(row: dict | None) -> dict | None:
    if row is None:
        return None
    keys = ("dense_lines", "sparse_lines", "macs", "data_width", "decoder", "cycles", "utilization", "speedup",
            "resources", "area", "binding")
    return {k: row[k] for k in keys}


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench explore") -> Path:
    results = {}
    shapes = {"digits_vit": SHAPES["digits_vit"]} if quick else SHAPES
    with tempfile.TemporaryDirectory() as tmp:
        for name, (layers, heads, n, d) in shapes.items():
            masks = save_masks(real_shaped_mask_set(layers, heads, n, 0.9, seed=0), Path(tmp) / f"{name}.npz")
            cache = Path(tmp) / f"cache_{name}"
            t0, cpu0, load0 = time.perf_counter(), _cpu_seconds(), os.getloadavg()
            cold = explore_vitcod(masks, head_dim=d, cache_dir=cache)
            t1, cpu1, load1 = time.perf_counter(), _cpu_seconds(), os.getloadavg()
            warm = explore_vitcod(masks, head_dim=d, cache_dir=cache)
            t2 = time.perf_counter()
            assert warm["rows"] == cold["rows"]
            results[name] = {"layers": layers, "heads": heads, "n": n, "head_dim": d, "sparsity": 0.9,
                             "candidates": cold["candidates"], "cold_seconds": round(t1 - t0, 2),
                             "cold_cpu_seconds": round(cpu1 - cpu0, 2),
                             "cold_loadavg_1min": [round(load0[0], 2), round(load1[0], 2)],
                             "cached_seconds": round(t2 - t1, 2), "pareto_size": len(cold["pareto"]),
                             "fits": sum(r["fits"] for r in cold["rows"]),
                             "fastest_fitting": _summary(cold["fastest_fitting"]),
                             "pareto": [_summary(r) for r in cold["pareto"]]}
    path = Path(out_dir) / "explore.json"
    write_json_atomic(path, {"benchmark": "explore", "command": command, "quick": quick,
                             "date": datetime.datetime.now().isoformat(timespec="seconds"),
                             "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                             "masks": "real_shaped_mask_set(layers, heads, N, 0.9, seed=0)", "results": results})
    return path
