"""Cycle-model totals of the vitcod_hw benchmark's configurations on its mask sets (12 heads each), to
compare two commits' controllers (issue 15: cycles within 1 % of the figures before the pipelining).

    .venv/bin/python scripts/vitcod_cycles_compare.py run OUT.json ["4+4 x 8" ...]   # this tree's model
    .venv/bin/python scripts/vitcod_cycles_compare.py diff BEFORE.json AFTER.json    # the table

For the "before" side run ``run`` from a worktree of the older commit (``git worktree add``), with
``scripts/worktree_sitecustomize.py`` copied to that worktree's root as ``sitecustomize.py`` and the
worktree on ``PYTHONPATH``: the editable install otherwise maps ``attnforge.hw`` to the main checkout
whatever ``PYTHONPATH`` says.
"""

from __future__ import annotations

import json
import sys


def run(out: str, names: list[str]) -> None:
    from attnforge.benchmarks import vitcod_hw as b
    from attnforge.formats.masks import head_csr
    from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

    masks = b._mask_sets(b.HEADS, False)
    max_nnz = max(int(ms.keep[0].sum(axis=(1, 2)).max()) for ms in masks.values())
    cfgs = {name: b._config(dl + sl, dl, max(max_nnz, b.N * b.N), width, tiles, depth)
            for name, dl, sl, width, tiles, depth in b.MODEL_CONFIGS if not names or name in names}
    totals = {}
    for (kind, s), ms in masks.items():
        shapes = [HeadShape.from_csr(g, csr.row_ptr, b.N) for g, csr in (head_csr(ms, 0, h) for h in range(ms.heads))]
        for name, cfg in cfgs.items():
            totals[f"{name}|{kind}|{s}"] = run_cycles(cfg, shapes)["total_cycles"]
    with open(out, "w") as f:
        json.dump(totals, f, indent=0)


def diff(before: str, after: str) -> None:
    old, new = json.load(open(before)), json.load(open(after))
    worst = 0.0
    for key in old:
        change = new[key] / old[key] - 1
        worst = max(worst, change)
        print(f"{key:40s} {old[key]:8d} {new[key]:8d} {100 * change:+.2f} %")
    print(f"largest increase {100 * worst:+.2f} %")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
