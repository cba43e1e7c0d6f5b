"""Run one tiled configuration of ``attnforge bench vitcod_hw`` on the RTL (Verilator), outside the
benchmark: the benchmark's own mask sets (90 and 95 %, synthetic and real-shaped), heads,
configuration and build folder (``build/bench``), ``HEADS`` (12) heads back to back per set, every output
checked bit for bit (``measure_rtl`` raises otherwise), then its irregular heads (49 x 196, 16 x 49,
G = 0, G = N). Prints per set the RTL's and the cycle model's cycles per head, and as the benchmark's
rows (the whole run: first command to last output beat, per head) the utilization and cycles /
max(ideal, load), and writes them to
``build/rtl_tiles_<T>x<L>+<L>.json`` (``..._m<D>.json`` with a row merger of D rows per tile).

Run: ``nice -n 10 .venv/bin/python scripts/vitcod_rtl_tiles.py TILES [LINES_PER_ENGINE [MERGE_DEPTH]]
[--data-width BITS] [--global-columns mask|cycles]`` (e.g. ``8`` for 8 x (4+4), ``4 8`` for 4 x (8+8),
``4 8 2`` for 4 x (8+8) with ``merge_depth`` 2; a 512-bit stream unless ``--data-width``; ``1 4 1
--data-width 256`` is the benchmark's 4+4 x 8 configuration; minutes, most of it the Verilator compile).
``--global-columns cycles``: the host sends G' <= G global columns per head, chosen with the cycle model
(``attnforge vitcod sim --global-columns cycles``; the irregular heads keep G), the JSON name gets ``_gcycles``.
docs/vitcod-hw.md quotes its runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from attnforge.benchmarks import vitcod_hw as bench
from attnforge.flows.vitcod import mask_heads, shapes_of
from attnforge.hw.vitcod.cycles import HeadShape, run_cycles, sent_globals


def main(tiles: int, lines: int = 4, merge_depth: int = 1, data_width: int = 512,
         global_columns: str = "mask") -> None:
    masks = bench._mask_sets(bench.HEADS, False)
    max_nnz = max(int(ms.keep[0].sum(axis=(1, 2)).max()) for ms in masks.values())
    cfg = bench._config(2 * lines, lines, max(max_nnz, bench.N * bench.N), data_width, tiles, merge_depth)
    depth = f"_m{merge_depth}" if merge_depth > 1 else ""
    width = f"_w{data_width}" if data_width != 512 else ""
    gc = "_gcycles" if global_columns == "cycles" else ""
    name = f"{tiles}x({lines}+{lines}) x 8" + (f" m{merge_depth}" if merge_depth > 1 else "")
    build = Path("build") / "bench"
    dst = Path("build") / f"rtl_tiles_{tiles}x{lines}+{lines}{depth}{width}{gc}.json"
    out = {}
    for kind, s in (("real-shaped", 0.9), ("real-shaped", 0.95), ("synthetic", 0.95), ("synthetic", 0.9)):
        t0 = time.time()
        ms = masks[(kind, s)]
        if global_columns == "cycles":
            pairs = [(0, h) for h in range(ms.heads)]
            plain = shapes_of(mask_heads(cfg, ms, pairs, seed=int(s * 1000)))
            g_sent = sent_globals(cfg, [HeadShape(x.nq, x.nk, x.g, x.row_nnz) for x in plain])
            heads = mask_heads(cfg, ms, pairs, seed=int(s * 1000), g_sent=g_sent)
        else:
            heads = bench._heads(cfg, ms, seed=int(s * 1000))
        rep = bench.measure_rtl(cfg, heads, f"vitcod_{bench._slug(name)}_{kind}_s{int(s * 100)}_rtl", build)
        model = run_cycles(cfg, shapes_of(heads))["heads"]
        rtl = [h["cycles"] for h in rep["heads"]]
        row = {"rtl": rtl, "model": [h["cycles"] for h in model], "ideal": [h["ideal_cycles"] for h in model],
               "load": [h["load_cycles"] for h in model], "g": [h.info["g"] for h in heads],
               "g_sent": [h.info.get("g_sent", h.info["g"]) for h in heads]}
        # as the benchmark's rows: the whole run, per head (heads overlap: only the run is a cost)
        cycles, ideal, load = (float(np.mean(row[k])) for k in ("rtl", "ideal", "load"))
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tiles", type=int)
    ap.add_argument("lines", type=int, nargs="?", default=4)
    ap.add_argument("merge_depth", type=int, nargs="?", default=1)
    ap.add_argument("--data-width", type=int, default=512)
    ap.add_argument("--global-columns", choices=("mask", "cycles"), default="mask")
    a = ap.parse_args()
    main(a.tiles, a.lines, a.merge_depth, a.data_width, a.global_columns)
