"""The digits ViT's heads (issue 14's last goal) through the exact cycle model for the controller's options.

For 4 x (1+1) lines of 8 MACs at a 256-bit stream (two token rows per beat), G' chosen per head
(``hw/vitcod/cycles.sent_globals``, ``--global-columns cycles``), every head of the masks back to back:
the utilization (ideal MAC cycles / cycles from the first command to the last output beat) with two and
four buffer banks (``banks``), 8 to 32 row slots, a 2- or 4-bit divider and a one- or two-row merger.
The cycle model is exact on the RTL (tests/rtl/test_vitcod.py); docs/vitcod-hw.md quotes this table
and the RTL run of its best row.

Run: ``nice -n 10 .venv/bin/python scripts/vitcod_digits_sweep.py MASKS.npz`` (seconds per row; the
masks of ``attnforge vitcod masks --sparsity 0.9`` on the digits ViT).
"""

from __future__ import annotations

import argparse

from attnforge.flows.explore import _mask_shapes
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import ideal_cycles, run_cycles, sent_globals

#: (row_slots, divider_bits, merge_depth)
OPTIONS = ((8, 4, 1), (16, 4, 1), (16, 4, 2), (32, 4, 2), (16, 2, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("masks")
    heads = _mask_shapes(ap.parse_args().masks)
    shapes = list(heads.shapes)
    for slots, bits, depth in OPTIONS:
        row = []
        for banks in (2, 4):
            cfg = VitcodConfig(head_dim=16, max_tokens=max(heads.nq, heads.nk), max_nnz=heads.max_nnz, macs=8,
                               dense_lines=1, sparse_lines=1, tiles=4, data_width=256, row_slots=slots,
                               divider_bits=bits, merge_depth=depth, banks=banks)
            ideal = sum(ideal_cycles(cfg, s) for s in shapes)
            sent = [s.with_sent_globals(g) for s, g in zip(shapes, sent_globals(cfg, shapes))]
            cycles = run_cycles(cfg, sent)["total_cycles"]
            row.append(f"banks {banks}: {cycles} cycles, {ideal / cycles:.3f}")
        print(f"{slots} slots, {bits}-bit divider, merger {depth}: " + "; ".join(row), flush=True)


if __name__ == "__main__":
    main()
