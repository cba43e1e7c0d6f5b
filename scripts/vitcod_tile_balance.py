"""Where tiles lose utilization on the ViTCoD benchmark's heads: the rows' split over the tiles
against each tile's own row pipeline against the tiles together (cycle model).

For each mask set of ``attnforge bench vitcod_hw`` (N = 197, d = 64, four heads back to back) and
each tiled 512-MAC configuration (8 x (4+4), 4 x (8+8), 512-bit stream) it prints, as means over
the steady-state heads 2-4:

* ``ideal``: the head's ideal cycles on all tiles' MACs;
* ``slowest tile's ideal``: the largest of the tiles' ideal cycles for their own rows (``i mod T``)
  on one tile's MACs, and the utilization that bound allows;
* ``slowest tile alone``: each tile's rows run as their own heads, back to back, on one pipeline
  of the tile's lines (no row merger), the slowest of them;
* ``tiled``: the tiles together, as the RTL computes them (the cycle model is exact against it),
  with the row merger's buffer of one row per tile (``merge_depth`` 1) and of ``DEPTHS`` rows.

Run: ``.venv/bin/python scripts/vitcod_tile_balance.py`` (seconds; docs/vitcod-hw.md quotes it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnforge.benchmarks import vitcod_hw as bench
from attnforge.formats.masks import head_csr
from attnforge.hw.vitcod.cycles import HeadShape, ideal_cycles, run_cycles

#: deeper row merger buffers (``VitcodConfig.merge_depth``) beside the one-row buffer
DEPTHS = (2, 4)


def tile_rows(sh: HeadShape, t: int, tiles: int) -> HeadShape:
    """The rows ``t, t + T, ...`` of a head as a head of their own."""
    rows = range(t, sh.nq, tiles)
    return HeadShape(len(rows), sh.nk, sh.g, [sh.row_nnz[i] for i in rows])


def main() -> None:
    masks = bench._mask_sets(4, False)
    for (kind, s), ms in masks.items():
        if s < 0.9:
            continue
        shapes = [HeadShape.from_csr(g, csr.row_ptr, bench.N) for g, csr in (head_csr(ms, 0, h) for h in range(ms.heads))]
        for name, dl, sl, tiles in (("8x(4+4)", 4, 4, 8), ("4x(8+8)", 8, 8, 4)):
            cfg = bench._config(dl + sl, dl, bench.N * bench.N, 512, tiles)
            one = dataclasses.replace(cfg, tiles=1)
            tiled = {d: np.mean([h["cycles"] for h in run_cycles(dataclasses.replace(cfg, merge_depth=d),
                                                                 shapes)["heads"]][1:])
                     for d in (1, *DEPTHS)}
            ideal = np.mean([ideal_cycles(cfg, x) for x in shapes[1:]])
            t_ideal, t_alone = [], []
            for t in range(tiles):
                subs = [tile_rows(sh, t, tiles) for sh in shapes]
                t_ideal.append([ideal_cycles(one, x) for x in subs[1:]])
                t_alone.append([h["cycles"] for h in run_cycles(one, subs)["heads"]][1:])
            max_ideal = np.mean(np.max(t_ideal, axis=0))
            max_alone = np.mean(np.max(t_alone, axis=0))
            print(f"{kind:11s} {int(s * 100)} % {name}: ideal {ideal:.0f} | slowest tile's ideal {max_ideal:.0f} "
                  f"(utilization bound {ideal / max_ideal:.3f}) | slowest tile alone {max_alone:.0f} "
                  f"({ideal / max_alone:.3f}) | tiled " +
                  " | ".join(f"merge_depth {d}: {x:.0f} ({ideal / x:.3f})" for d, x in tiled.items()))


if __name__ == "__main__":
    main()
