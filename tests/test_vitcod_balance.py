"""The host's split of each row's CSR entries between the Denser and the Sparser Engine (hw/vitcod/balance.py)."""

import numpy as np
import pytest

from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.balance import CARRY, engine_job_cycles, half_row_pointers, split_rows
from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

CFG44 = VitcodConfig(head_dim=64, max_tokens=197, max_nnz=8192, macs=8, dense_lines=4, sparse_lines=4,
                     data_width=256)


def test_hand_worked_split():
    # 4 + 4 lines x 8 MACs, d = 64: a score takes 2 cycles per key (4 lines share a key), a P·V
    # pass 2 cycles per key (8 chunks on 4 lines): 4 cycles per key on either engine. A row with
    # G = 3 and 20 CSR entries: 3 + d against 20 - d keys; d = 8 and 9 both give 48 cycles on the
    # busier engine, 92 in all and 12 keys at most; the fewer moved wins.
    assert engine_job_cycles(CFG44, 0, 11) == 44 and engine_job_cycles(CFG44, 1, 12) == 48
    assert split_rows(CFG44, 3, [20, 0, 1]).tolist() == [8, 0, 0]
    # the next row starts from the running totals 0.75 * (44, 48) = (33, 36): d = 9 gives
    # max(33 + 48, 36 + 44) = 81, d = 8 max(77, 84) = 84
    assert split_rows(CFG44, 3, [20, 20]).tolist() == [8, 9]
    # the Denser Engine busy with its global keys alone takes nothing
    assert split_rows(CFG44, 30, [5]).tolist() == [0]


def _reference_split(cfg, g, rows):
    """The documented rule, written out: per row, the d with the least (larger decayed running total,
    both engines' cycles, larger key count, d)."""
    totals, out = (0.0, 0.0), []
    for n in rows:
        options = []
        for d in range(n + 1):
            c0, c1 = int(engine_job_cycles(cfg, 0, g + d)), int(engine_job_cycles(cfg, 1, n - d))
            options.append((max(totals[0] + c0, totals[1] + c1), c0 + c1, max(g + d, n - d), d, c0, c1))
        best = min(options)
        out.append(best[3])
        totals = (CARRY * (totals[0] + best[4]), CARRY * (totals[1] + best[5]))
    return out


@pytest.mark.parametrize("dense_lines, sparse_lines, macs, head_dim", [(4, 4, 8, 64), (1, 4, 8, 16), (2, 3, 4, 32),
                                                                          (16, 16, 8, 64), (8, 2, 8, 64)])
def test_split_follows_the_rule(dense_lines, sparse_lines, macs, head_dim):
    cfg = VitcodConfig(head_dim=head_dim, max_tokens=64, max_nnz=4096, macs=macs, dense_lines=dense_lines,
                       sparse_lines=sparse_lines, data_width=8 * macs)
    rng = np.random.default_rng(dense_lines * 10 + sparse_lines)
    for g in (0, 1, 5, 40):
        rows = rng.integers(0, 64 - min(g, 63), 30)
        moved = split_rows(cfg, g, rows)
        assert ((moved >= 0) & (moved <= rows)).all()
        assert moved.tolist() == _reference_split(cfg, g, rows.tolist())
    assert not split_rows(cfg, 1, rows, "none").any()


def test_half_row_pointers():
    rp = np.array([0, 3, 3, 10])
    ptr = half_row_pointers(rp, [1, 0, 4])
    assert ptr.tolist() == [0, 1, 3, 3, 3, 7, 10]
    with pytest.raises(ValueError, match="balance mode 'fast'"):
        split_rows(CFG44, 1, [3], "fast")


def test_balance_pays_on_masks_with_few_global_columns():
    """The reason for the split: with G = 3 of 197 the Denser Engine alone would idle (cycle model,
    exact on the RTL: tests/rtl/test_vitcod.py)."""
    rng = np.random.default_rng(0)
    rows = np.clip(np.round(rng.lognormal(0, 1, 197) * 15), 1, 194).astype(int).tolist()
    cycles = {b: run_cycles(CFG44, [HeadShape(197, 197, 3, rows, balance=b)])["total_cycles"]
              for b in ("none", "balanced")}
    assert cycles["balanced"] < 0.7 * cycles["none"]
