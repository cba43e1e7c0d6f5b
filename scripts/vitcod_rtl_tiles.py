"""Run one tiled configuration of ``attnforge bench vitcod_hw`` on the RTL (Verilator), outside the
benchmark: the benchmark's own mask sets (90 and 95 %, synthetic and real-shaped), heads,
configuration and build folder (``build/bench``), four heads back to back per set, every output
checked bit for bit (``measure_rtl`` raises otherwise), then its irregular heads (49 x 196, 16 x 49,
G = 0, G = N). Prints per set the RTL's and the cycle model's cycles per head, and as the benchmark's
rows (means over heads 2-4) the utilization and cycles / max(ideal, load), and writes them to
``build/rtl_tiles_<T>x<L>+<L>.json`` (``..._m<D>.json`` with a row merger of D rows per tile).

Run: ``nice -n 10 .venv/bin/python scripts/vitcod_rtl_tiles.py TILES [LINES_PER_ENGINE [MERGE_DEPTH]]``
(e.g. ``8`` for 8 x (4+4), ``4 8`` for 4 x (8+8), ``4 8 2`` for 4 x (8+8) with ``merge_depth`` 2;
512-bit stream; minutes, most of it the Verilator compile). docs/vitcod-hw.md quotes its runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from attnforge.benchmarks import vitcod_hw as bench
from attnforge.flows.vitcod import shapes_of
from attnforge.hw.vitcod.cycles import run_cycles


def main(tiles: int, lines: int = 4, merge_depth: int = 1) -> None:
    masks = bench._mask_sets(4, False)
    max_nnz = max(int(ms.keep[0].sum(axis=(1, 2)).max()) for ms in masks.values())
    cfg = bench._config(2 * lines, lines, max(max_nnz, bench.N * bench.N), 512, tiles, merge_depth)
    depth = f"_m{merge_depth}" if merge_depth > 1 else ""
    name = f"{tiles}x({lines}+{lines}) x 8" + (f" m{merge_depth}" if merge_depth > 1 else "")
    build = Path("build") / "bench"
    dst = Path("build") / f"rtl_tiles_{tiles}x{lines}+{lines}{depth}.json"
    out = {}
    for kind, s in (("real-shaped", 0.9), ("real-shaped", 0.95), ("synthetic", 0.95), ("synthetic", 0.9)):
        t0 = time.time()
        heads = bench._heads(cfg, masks[(kind, s)], seed=int(s * 1000))
        rep = bench.measure_rtl(cfg, heads, f"vitcod_{bench._slug(name)}_{kind}_s{int(s * 100)}_rtl", build)
        model = run_cycles(cfg, shapes_of(heads))["heads"]
        rtl = [h["cycles"] for h in rep["heads"]]
        row = {"rtl": rtl, "model": [h["cycles"] for h in model], "ideal": [h["ideal_cycles"] for h in model],
               "load": [h["load_cycles"] for h in model]}
        # steady state as the benchmark's rows: means over heads 2..4
        cycles, ideal, load = (float(np.mean(row[k][1:])) for k in ("rtl", "ideal", "load"))
        row.update(cycles=cycles, utilization=ideal / cycles, cycles_over_bound=cycles / max(ideal, load),
                   model_exact=row["rtl"] == row["model"], wall_s=time.time() - t0)
        out[f"{kind} {s}"] = row
        print(kind, s, row, flush=True)
        dst.write_text(json.dumps(out, indent=1))
    t0 = time.time()
    out["irregular"] = dict(bench._irregular_run(name, cfg, build), wall_s=time.time() - t0)
    print(out["irregular"], flush=True)
    dst.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
