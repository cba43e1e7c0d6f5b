"""Load balance between the Denser and the Sparser Engine: how a row's CSR entries are split.

Each query row's work is its G global keys (always the Denser Engine's) and its
CSR entries. The row pointer section of a head carries ``2 Nq + 1`` pointers,
two *half-rows* per query row: half-row ``2i`` (entries ``ptr[2i] ..
ptr[2i+1]``) goes to the Denser Engine after its G global keys, half-row
``2i+1`` (``ptr[2i+1] .. ptr[2i+2]``) to the Sparser Engine. The split point is
the host's choice; the result does not depend on it (integer sums are exact
in any order), only the cycles do.

Real pruned models keep few global columns (G of 1 to 10 of 197), so without
moving CSR entries the Denser Engine would idle while the Sparser Engine works
(utilization about 0.56 on 4+4 lines). ``split_rows`` gives each row the split
that keeps the two engines' running totals of issue cycles (score and P·V
jobs, the same per-job counts as the RTL and the cycle model) closest.

The host may also send only ``G' <= G`` of a head's global columns as global columns and the
other ``G - G'`` as CSR entries of every row (``globals_as_csr``): the Denser Engine must take a
row's global keys, so on masks whose G is large next to their rows' CSR entries (the digits ViT's
G of 2-6 at 65 tokens) it can end up with more keys than the Sparser Engine whatever the split;
as CSR entries they can go to either engine. The output does not change (the same keys of every
row), only the cycles and the stream (``Nq (G - G')`` more column indices). ``cycles.sent_globals``
chooses ``G'`` per head with the exact cycle model.

Pure numpy: the host code, the cycle model and the testbench share it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import VitcodConfig

__all__ = ["engine_job_cycles", "split_rows", "half_row_pointers", "globals_as_csr", "check_sent_globals",
           "BALANCE_MODES", "CARRY",
           "GLOBAL_COLUMNS"]

#: ``balanced``: per row, the split that equalizes both engines' issue cycles;
#: ``none``: every CSR entry on the Sparser Engine (the Denser Engine takes only the G global keys).
BALANCE_MODES = ("balanced", "none")
#: Share of the engines' running totals carried from one row to the next by ``balanced``: 0 balances
#: each row alone, 1 the whole head. The engines may be ``row_slots - 1`` rows apart, so imbalance
#: further back no longer matters. 0.75 (cycle model, N = 197, d = 64, 4+4 and 8+8 lines, real-shaped
#: and synthetic masks at 90 and 95 %): 0.3-1.8 points above 0 and 0.5-1.5 above 1 at 4+4.
CARRY = 0.75
#: Which global columns the host sends as global (``attnforge vitcod sim --global-columns``): ``mask``,
#: all G of every head; ``cycles``, G' <= G per head, chosen with the cycle model (``cycles.sent_globals``),
#: the others as CSR entries.
GLOBAL_COLUMNS = ("mask", "cycles")


def engine_job_cycles(cfg: VitcodConfig, engine: int, n):
    """Issue cycles of a row's score job plus its P·V job on engine 0 (Denser) or 1 (Sparser) for ``n`` keys
    (scalar or array): ``ceil(n / K) * d / (M S)`` + ``ceil(n / P) * ceil((d / M) / (L / P))``."""
    lines = cfg.dense_lines if engine == 0 else cfg.sparse_lines
    split = cfg.score_split(lines)
    keys, spass = lines // split, cfg.chunks_per_token // split
    pv_keys = cfg.pv_keys(lines)
    npass = -(-cfg.chunks_per_token // (lines // pv_keys))
    n = np.asarray(n, dtype=np.int64)
    return -(-n // keys) * spass + -(-n // pv_keys) * npass


def split_rows(cfg: VitcodConfig, g: int, row_nnz, mode: str = "balanced") -> np.ndarray:
    """CSR entries of each row that the Denser Engine takes (the first ones of the row), ``int64 [Nq]``.

    ``balanced`` goes through the rows in order and gives each row the split that keeps the two
    engines' *running totals* of issue cycles closest, each total decayed by ``CARRY`` per row
    (the engines may be up to ``row_slots - 1`` rows apart, so a row the Denser Engine must take
    alone, G > its CSR entries, is made up for in the next rows): per row it minimizes the larger
    running total, then the row's issue cycles on both, then its larger key count (the exponent
    units' time), then the entries moved. With ``tiles`` T > 1 each residue class of rows mod T
    (one tile's rows of the head) is balanced as a sequence of its own (it runs on one tile's
    engine pair).
    """
    if mode not in BALANCE_MODES:
        raise ValueError(f"balance mode {mode!r}: expected one of {', '.join(BALANCE_MODES)}")
    row_nnz = np.maximum(np.asarray(row_nnz, dtype=np.int64), 0)
    out = np.zeros(row_nnz.shape, dtype=np.int64)
    if mode == "none":
        return out
    if cfg.tiles > 1:
        # each residue class of rows mod T runs on one tile's engine pair: balance it as a sequence of its own
        for t in range(cfg.tiles):
            out[t::cfg.tiles] = split_rows(dataclasses.replace(cfg, tiles=1), g, row_nnz[t::cfg.tiles], mode)
        return out
    # engine_job_cycles in plain integers: rows hold a few dozen entries, so a Python loop over the
    # candidate splits is several times faster than numpy's per-call overhead (the cycle model runs
    # this for every head of every configuration ``attnforge explore`` sweeps). Same arithmetic, same
    # order of keys (min of the tuple = the first of the lexicographic sort), so the same splits.
    params = []
    for lines in (cfg.dense_lines, cfg.sparse_lines):
        split = cfg.score_split(lines)
        pv_keys = cfg.pv_keys(lines)
        params.append((lines // split, cfg.chunks_per_token // split, pv_keys,
                       -(-cfg.chunks_per_token // (lines // pv_keys))))
    (k0, s0, p0, q0), (k1, s1, p1, q1) = params
    t0, t1 = 0, 0
    for i, n in enumerate(row_nnz.tolist()):
        # the least (larger total, both engines' cycles, larger key count, d) over d = 0..n; d rises,
        # so a later d wins only on a strictly smaller first three
        best = None
        for d in range(n + 1):
            dn, sn = g + d, n - d
            dense = -(-dn // k0) * s0 + -(-dn // p0) * q0
            sparse = -(-sn // k1) * s1 + -(-sn // p1) * q1
            a, b = t0 + dense, t1 + sparse
            top = a if a >= b else b
            both = dense + sparse
            keys = dn if dn >= sn else sn
            if (best is None or top < best_top or (top == best_top and (both < best_both or (
                    both == best_both and keys < best_keys)))):
                best, best_top, best_both, best_keys, best_dense, best_sparse = d, top, both, keys, dense, sparse
        out[i] = best
        t0, t1 = CARRY * (t0 + best_dense), CARRY * (t1 + best_sparse)
    return out


def half_row_pointers(row_ptr, dense_entries) -> np.ndarray:
    """The ``2 Nq + 1`` pointers of the stream from a CSR ``row_ptr [Nq + 1]`` and ``split_rows``."""
    rp = np.asarray(row_ptr, dtype=np.int64)
    out = np.empty(2 * (rp.size - 1) + 1, dtype=np.int64)
    out[0::2] = rp
    out[1::2] = rp[:-1] + np.asarray(dense_entries, dtype=np.int64)
    return out


def check_sent_globals(g: int, g_sent) -> int:
    """``g_sent`` as an int in ``[0, g]`` (the global columns the host sends as global), else ValueError."""
    if isinstance(g_sent, bool) or not isinstance(g_sent, (int, np.integer)) or not 0 <= g_sent <= g:
        raise ValueError(f"global columns sent as global (G') = {g_sent!r}: expected an integer in [0, G = {g}]")
    return int(g_sent)


def globals_as_csr(g: int, g_sent: int, row_ptr, col_idx) -> tuple:
    """The CSR of a head whose global columns ``g_sent .. g - 1`` go as CSR entries of every row.

    Returns ``(row_ptr, col_idx)`` (``int64``): each row's entries are ``g_sent .. g - 1`` followed
    by its own (columns ``>= g``), so a row stays in column order and its keys are the same.
    """
    g_sent = check_sent_globals(g, g_sent)
    rp = np.asarray(row_ptr, dtype=np.int64)
    ci = np.asarray(col_idx, dtype=np.int64)
    extra = g - g_sent
    if extra == 0:
        return rp.copy(), ci.copy()
    nq = rp.size - 1
    lengths = np.diff(rp) + extra
    out_rp = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_rp[1:])
    moved = np.arange(g_sent, g, dtype=np.int64)
    out_ci = np.concatenate([np.concatenate([moved, ci[rp[i]:rp[i + 1]]]) for i in range(nq)]) if nq else ci[:0]
    return out_rp, out_ci.astype(np.int64)
