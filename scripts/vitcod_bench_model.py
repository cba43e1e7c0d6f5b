"""The benchmark's d = 64 mask sets through the cycle model, with the masks' G and with the host's G' per
head (``hw/vitcod/cycles.sent_globals``, ``attnforge vitcod sim --global-columns cycles``).

``attnforge bench vitcod_hw`` sends G' = G; this replays its heads (the same mask sets, seeds and
``HEADS`` heads back to back, N = 197, d = 64) for its configurations both ways and prints the run's
utilization (first command to last output beat, as the benchmark) as ``G' = G / G' chosen``. The cycle model is exact on the RTL (the RTL sweeps in
tests/rtl/test_vitcod.py; ``scripts/vitcod_rtl_tiles.py ... --global-columns cycles`` runs a configuration
on Verilator). docs/vitcod-hw.md quotes its output.

Run: ``nice -n 10 .venv/bin/python scripts/vitcod_bench_model.py [--row-slots N] [--divider-bits B]
[--merge-depth D]`` (seconds; the options set those configuration fields, default the RTL's defaults and
each tiled configuration's merger depth below).
"""

from __future__ import annotations

import argparse

from attnforge.benchmarks import vitcod_hw as bench
from attnforge.formats.masks import head_csr
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import HeadShape, run_cycles, sent_globals

CONFIGS = ((1, 4, 4, 256, 1), (1, 8, 8, 512, 1), (2, 4, 4, 512, 1), (4, 4, 4, 512, 1), (4, 8, 8, 512, 3),
           (8, 4, 4, 512, 2))


def utilization(run) -> float:
    return sum(h["ideal_cycles"] for h in run["heads"]) / run["total_cycles"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--row-slots", type=int, default=VitcodConfig.row_slots)
    ap.add_argument("--divider-bits", type=int, default=VitcodConfig.divider_bits)
    ap.add_argument("--merge-depth", type=int, default=None, help="every tiled configuration's merger depth")
    args = ap.parse_args()
    sets = bench._mask_sets(bench.HEADS, False)
    n = bench.N
    for tiles, dl, sl, width, depth in CONFIGS:
        if args.merge_depth is not None and tiles > 1:
            depth = args.merge_depth
        cfg = VitcodConfig(head_dim=bench.D, max_tokens=n, max_nnz=16000, macs=8, dense_lines=dl, sparse_lines=sl,
                           data_width=width, tiles=tiles, merge_depth=depth, row_slots=args.row_slots,
                           divider_bits=args.divider_bits)
        out = []
        for (kind, s), ms in sorted(sets.items(), key=lambda x: (x[0][1], x[0][0])):
            if s not in (0.9, 0.95):
                continue
            shapes = []
            for h in range(ms.heads):
                g, csr = head_csr(ms, 0, h)
                shapes.append(HeadShape.from_csr(g, csr.row_ptr, n))
            chosen = [x.with_sent_globals(g2) for x, g2 in zip(shapes, sent_globals(cfg, shapes))]
            out.append(f"{kind} {round(s * 100)} %: {utilization(run_cycles(cfg, shapes)):.3f} / "
                       f"{utilization(run_cycles(cfg, chosen)):.3f}")
        name = f"{tiles} x ({dl}+{sl})" if tiles > 1 else f"{dl}+{sl}"
        print(f"{name} x 8, {width} b, merge_depth {depth} [G' = G / G' chosen]: " + "; ".join(out), flush=True)


if __name__ == "__main__":
    main()
