"""The host's split of each row's CSR entries between the Denser and the Sparser Engine (hw/vitcod/balance.py)."""

import numpy as np
import pytest

from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.balance import CARRY, engine_job_cycles, globals_as_csr, half_row_pointers, split_rows
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


def test_globals_as_csr_hand_worked():
    # G = 3, two of them (columns 1 and 2) sent as CSR entries: every row starts with them, in column order
    rp, ci = globals_as_csr(3, 1, [0, 2, 2, 3], [5, 7, 4])
    assert rp.tolist() == [0, 4, 6, 9] and ci.tolist() == [1, 2, 5, 7, 1, 2, 1, 2, 4]
    rp, ci = globals_as_csr(3, 3, [0, 2], [5, 7])          # G' = G: the mask's CSR
    assert rp.tolist() == [0, 2] and ci.tolist() == [5, 7]
    for bad in (4, -1, 1.0, True):
        with pytest.raises(ValueError, match=rf"G'\) = {bad!r}: expected an integer in \[0, G = 3\]"):
            globals_as_csr(3, bad, [0, 2], [5, 7])


def test_globals_as_csr_keeps_the_golden_output():
    """The same keys per row, so the integer golden model gives the same output from the sent head."""
    from attnforge.algo.vitcod.golden import head_params, vitcod_head_golden
    from attnforge.formats.csr import CSR
    from attnforge.tb.vitcod_jobs import random_csr

    rng = np.random.default_rng(4)
    nq, nk, g, d = 9, 12, 4, 16
    q, k, v = (rng.integers(-128, 128, (n, d)).astype(np.int8) for n in (nq, nk, nk))
    csr = random_csr(rng, nq, nk, g, 0.7, empty_rows=2)
    params = head_params(0.03, 0.02, 0.04, 0.02, d)
    want = vitcod_head_golden(q, k, v, g, csr, params)
    for g2 in (0, 1, 3):
        rp, ci = globals_as_csr(g, g2, csr.row_ptr, csr.col_idx)
        assert rp[-1] == csr.nnz + nq * (g - g2)
        assert np.array_equal(vitcod_head_golden(q, k, v, g2, CSR(rp, ci, (nq, nk)), params), want)


def test_sent_globals_pays_where_the_denser_engine_is_overloaded():
    """1 + 1 lines, d = 16: a head whose G = 6 global keys exceed its rows' 2-4 CSR entries keeps the
    Denser Engine busy while the Sparser Engine idles; sending some as CSR entries balances them. The
    choice is never worse than the mask's G, and takes G itself where that is best."""
    from attnforge.hw.vitcod.cycles import sent_globals

    cfg = VitcodConfig(head_dim=16, max_tokens=65, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=1,
                       data_width=128)
    rng = np.random.default_rng(1)
    heavy = HeadShape(65, 65, 6, rng.integers(2, 5, 65).tolist())
    light = HeadShape(65, 65, 1, rng.integers(10, 30, 65).tolist())
    chosen = sent_globals(cfg, [heavy, light, heavy])
    assert chosen[1] == 1 and chosen[0] < 6 and chosen[2] < 6
    mask = run_cycles(cfg, [heavy, light, heavy])["total_cycles"]
    sent = run_cycles(cfg, [s.with_sent_globals(g2) for s, g2 in zip([heavy, light, heavy], chosen)])
    assert sent["total_cycles"] < 0.9 * mask
    with pytest.raises(ValueError, match=r"expected an integer in \[0, G = 6\]"):
        heavy.with_sent_globals(7)
