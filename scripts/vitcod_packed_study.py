"""Design study for issue 14's last goal: what a *row-packed* ViTCoD pipeline would reach on the digits
ViT's heads (d = 16, 65 tokens) at 4+4 lines x 8 MACs, next to the RTL's row-per-job pipeline.

This is a model of a design that does **not** exist in ``hw/vitcod`` (the RTL and its exact cycle model,
``hw/vitcod/cycles.py``, compute one query row per engine job; of the design's parts the RTL has the host's
G' choice, ``cycles.sent_globals``, two token rows per beat, ``data_width = 2 * 8 * d``, and score and
P.V jobs that follow each other without a drain, two rows' P.V shares per engine). It is written to size the next design
(row slots, exponent units, dividers, head overlap) before building it, and docs/vitcod-hw.md quotes it as
such. The packed pipeline, per engine (L lines of M MACs, ``c = d / M`` chunks per key):

* **score steps** take K = L / S keys (S lines per key as in the RTL's ``score_split``) every
  ``c / S`` cycles from a stream of keys that runs across query rows (a step may finish one row and start
  the next), up to ``row_slots`` rows in flight (entered, not yet out);
* **P.V steps** take P = max(1, L / c) keys every ``ceil(c / L)`` cycles, across rows too (a step's keys
  may belong to two rows: two output accumulators), rows whose softmax is done, in row order, with
  priority over score steps on the engine's issue port;
* the **softmax** takes a row when both engines' scores of it are done, in row order: ``exp_units``
  scores per cycle and engine, pipelined (``EXP_LATENCY`` after its last score), then one of ``dividers``
  dividers (``DIV_CYCLES + 1`` cycles each, as the RTL's);
* a row leaves when both engines' P.V of it is done (``DRAIN`` after its last step), through the
  serializer in row order (``words_per_token`` cycles, ``OUT_STAGES`` after);
* **heads overlap**: the next head's rows enter as soon as its bank is loaded (two banks, the loader one
  beat per cycle with the RTL's stream layout, ``head_beats``), not after the previous head's last row;
* the host splits each row between the engines (the Denser Engine's G global keys plus the first CSR
  entries, the Sparser Engine the rest) so that the engines' running totals of issue cycles stay equal.

Run: ``.venv/bin/python scripts/vitcod_packed_study.py MASKS.npz`` (seconds): for each tiling of 8 lines
of 8 MACs at d = 16, the RTL's cycle model and the packed model's utilization over every head back to
back, and the load bound.
"""

from __future__ import annotations

import argparse
import heapq
import math

from attnforge.flows.explore import _mask_shapes
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import (DIV_CYCLES, DRAIN, EXP_LATENCY, OUT_STAGES, SCORE_DRAIN, head_beats,
                                        run_cycles, sent_globals)


def _pack(row_keys, r, off, take, ready, done, at):
    """One packed step: up to ``take`` keys from row ``r`` (``off`` of its keys already issued) on, across
    row ends while ``ready(row)``; a row whose last key goes out (or that has none) gets ``done[row] = at``.
    Returns the next (row, offset)."""
    while take and ready(r):
        n = min(take, row_keys[r] - off)
        take -= n
        off += n
        if off == row_keys[r]:
            done[r] = at
            r, off = r + 1, 0
            while ready(r) and row_keys[r] == 0:
                done[r] = at
                r += 1
    return r, off



def split_rows(row_nnz, g: int, cd: float, cs: float, choose_g: bool = True) -> list:
    """(dense keys, sparse keys) per row, a row's key costing ``cd`` / ``cs`` issue cycles on the Denser /
    Sparser Engine: running totals kept equal; with ``choose_g`` the G' <= G (the other global columns sent as
    CSR entries) whose split ends with the smaller larger total. Shared with scripts/vitcod_step_whatif.py."""
    best_all = None
    for g2 in (range(g + 1) if choose_g else (g,)):
        td = ts = 0.0
        out = []
        for n in row_nnz:
            n = n + g - g2
            best = None
            for moved in range(n + 1):
                a, b = td + (g2 + moved) * cd, ts + (n - moved) * cs
                if best is None or max(a, b) < best[0]:
                    best = (max(a, b), moved, a, b)
            _, moved, td, ts = best
            out.append((g2 + moved, n - moved))
        if best_all is None or max(td, ts) < best_all[0]:
            best_all = (max(td, ts), out)
    return best_all[1]

class PackedModel:
    """One Denser + one Sparser Engine with row-packed score and P.V steps (see the module docstring)."""

    def __init__(self, cfg: VitcodConfig, *, row_slots: int = 16, exp_units: int = 2, dividers: int = 4,
                 tokens_per_beat: int = 1, choose_g: bool = True):
        self.cfg, self.row_slots, self.exp_units, self.dividers = cfg, row_slots, exp_units, dividers
        self.tokens_per_beat, self.choose_g = tokens_per_beat, choose_g
        c = cfg.chunks_per_token
        self.eng = []
        for lines in (cfg.dense_lines, cfg.sparse_lines):
            s = cfg.score_split(lines)
            self.eng.append(dict(k=lines // s, spass=c // s, p=max(1, lines // c), npass=-(-c // lines)))

    def key_cost(self, e: int) -> float:
        x = self.eng[e]
        return x["spass"] / x["k"] + x["npass"] / x["p"]

    def split(self, g: int, row_nnz) -> list:
        """(dense keys, sparse keys) per row: running totals of issue cycles kept equal. The host may also
        send some of the G global columns as CSR entries (G' <= G, the rest of each row's keys moved to the
        Sparser Engine): the G' whose split ends with the smaller larger total."""
        return split_rows(row_nnz, g, self.key_cost(0), self.key_cost(1), self.choose_g)

    def run(self, shapes) -> dict:
        cfg = self.cfg
        # rows of every head, in order; the loader gives each head its start cycle
        rows, head_rows, ready = [], [], []
        for h, s in enumerate(shapes):
            head_rows.append(len(rows))
            rows += [(h, dn, sn) for dn, sn in self.split(s.g, [int(n) for n in s.row_nnz])]
        nrows = len(rows)
        head_last = [head_rows[h + 1] - 1 if h + 1 < len(shapes) else nrows - 1 for h in range(len(shapes))]
        loader_free, bank_free = 0, [0, 0]
        head_start = [None] * len(shapes)
        beats = [-(-head_beats(cfg, s) // self.tokens_per_beat) for s in shapes]
        head_out_end = [None] * len(shapes)

        score_done = [[None] * nrows, [None] * nrows]
        pv_done = [[None] * nrows, [None] * nrows]
        smx_ok = [None] * nrows
        left = [None] * nrows          # cycle the row's output is taken (slot free from the next)
        keys = [[r[1] for r in rows], [r[2] for r in rows]]
        s_ptr = [0, 0]                 # next row to score, keys of it already issued
        s_off = [0, 0]
        p_ptr, p_off = [0, 0], [0, 0]
        busy = [0, 0]
        exp_free = 0
        divs = [0] * self.dividers
        sm_next = 0
        out_next, ser_free = 0, 0
        entered = 0                    # rows that may be in flight (slots)
        last_beat = 0
        h_loaded = 0                   # heads whose load has been scheduled
        t = 0
        windows = 0
        while out_next < nrows:
            # loader: schedule the next head's load when its bank is free
            while h_loaded < len(shapes):
                h = h_loaded
                bank = h % 2
                if h >= 2 and head_out_end[h - 2] is None:
                    break
                a = max(loader_free, bank_free[bank] if h < 2 else head_out_end[h - 2] + 1)
                loader_free = a + beats[h] + 2
                head_start[h] = a + beats[h] + 3
                h_loaded += 1
            # slots: rows enter in order while slots are free and their head is loaded
            while entered < nrows:
                h = rows[entered][0]
                inflight = entered - out_next
                if inflight >= self.row_slots or head_start[h] is None or head_start[h] > t:
                    break
                entered += 1
            for e in (0, 1):
                x = self.eng[e]
                if busy[e] > t:
                    continue
                # P.V first: rows whose softmax is done, in order, P keys per step across rows
                r = p_ptr[e]
                while r < nrows and keys[e][r] == 0 and smx_ok[r] is not None and smx_ok[r] <= t:
                    pv_done[e][r] = t
                    r += 1
                p_ptr[e], p_off[e] = (r, 0) if r != p_ptr[e] else (r, p_off[e])
                if r < nrows and smx_ok[r] is not None and smx_ok[r] <= t and keys[e][r] > 0:
                    p_ptr[e], p_off[e] = _pack(keys[e], r, p_off[e], x["p"],
                                               lambda i: i < nrows and smx_ok[i] is not None and smx_ok[i] <= t,
                                               pv_done[e], t + x["npass"] + DRAIN)
                    busy[e] = t + x["npass"]
                    windows += x["npass"]
                    continue
                # score: K keys per step across entered rows
                r = s_ptr[e]
                while r < entered and keys[e][r] == 0:
                    score_done[e][r] = t
                    r += 1
                s_ptr[e] = r
                if r < entered:
                    s_ptr[e], s_off[e] = _pack(keys[e], r, s_off[e], x["k"], lambda i: i < entered,
                                               score_done[e], t + x["spass"] + SCORE_DRAIN)
                    busy[e] = t + x["spass"]
                    windows += x["spass"]
            # softmax: rows in order, exp units pipelined, then the first free divider
            while (sm_next < nrows and score_done[0][sm_next] is not None and score_done[1][sm_next] is not None
                   and max(score_done[0][sm_next], score_done[1][sm_next]) <= t and exp_free <= t):
                n = max(keys[0][sm_next], keys[1][sm_next])
                span = max(1, math.ceil(n / self.exp_units))
                exp_free = t + span
                exp_end = t + span + EXP_LATENCY
                d = heapq.heappop(divs)
                start = max(d, exp_end)
                heapq.heappush(divs, start + DIV_CYCLES + 1)
                smx_ok[sm_next] = start + DIV_CYCLES + 2
                sm_next += 1
                break
            # output: in row order through the serializer
            if (out_next < nrows and ser_free <= t and pv_done[0][out_next] is not None
                    and pv_done[1][out_next] is not None and max(pv_done[0][out_next], pv_done[1][out_next]) < t):
                left[out_next] = t
                ser_free = t + cfg.words_per_token
                last_beat = t + cfg.words_per_token + OUT_STAGES
                h = rows[out_next][0]
                if out_next == head_last[h]:
                    head_out_end[h] = last_beat
                out_next += 1
            t += 1
        return {"total_cycles": last_beat, "mac_active": windows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("masks")
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--data-width", type=int, default=128)
    args = ap.parse_args()
    heads = _mask_shapes(args.masks)
    shapes = list(heads.shapes)
    ntok = max(heads.nq, heads.nk)
    base = dict(head_dim=args.head_dim, max_tokens=ntok, max_nnz=heads.max_nnz, macs=8, data_width=args.data_width)
    one = VitcodConfig(**base, dense_lines=4, sparse_lines=4)
    ideal = sum(s.macs(args.head_dim) for s in shapes) / one.total_macs
    load = sum(head_beats(one, s) for s in shapes)
    print(f"{len(shapes)} heads of {heads.nq} x {heads.nk}, d = {args.head_dim}: ideal {ideal:.0f} cycles on 64 MACs, "
          f"stream {load} beats at {args.data_width} bits (load bound {ideal / load:.3f} if the stream limits)")
    for width in sorted({args.data_width, 2 * 8 * args.head_dim}):
        for tiles, dl, sl in ((1, 4, 4), (2, 2, 2), (4, 1, 1)):
            cfg = VitcodConfig(**dict(base, data_width=width), dense_lines=dl, sparse_lines=sl, tiles=tiles)
            total = run_cycles(cfg, shapes)["total_cycles"]
            # the host sending G - G' of each head's global columns as CSR entries (vitcod sim --global-columns cycles)
            moved = [s.with_sent_globals(g2) for s, g2 in zip(shapes, sent_globals(cfg, shapes))]
            best = run_cycles(cfg, moved)["total_cycles"]
            print(f"RTL today, {tiles} x ({dl}+{sl}), {width} bits ({cfg.tokens_per_beat} token row(s) per beat): "
                  f"{total} cycles, utilization {ideal / total:.3f}; with G' per head (sent_globals) {best} cycles, "
                  f"{ideal / best:.3f}")
    for tpb in (1, 2):
        for slots, exp_units, dividers in ((4, 1, 1), (8, 1, 2), (16, 2, 4), (16, 4, 8), (32, 2, 4), (32, 4, 8),
                                           (64, 4, 8), (32, 8, 16)):
            r = PackedModel(one, row_slots=slots, exp_units=exp_units, dividers=dividers,
                            tokens_per_beat=tpb).run(shapes)
            print(f"packed 4+4, {tpb} token(s) per beat, {slots} row slots, {exp_units} exp units/engine, "
                  f"{dividers} dividers: {r['total_cycles']} cycles, utilization {ideal / r['total_cycles']:.3f}, "
                  f"MACs issuing {r['mac_active'] / 2 / r['total_cycles']:.3f} of the time")
        r = PackedModel(one, row_slots=32, exp_units=4, dividers=8, tokens_per_beat=tpb, choose_g=False).run(shapes)
        print(f"packed 4+4, {tpb} token(s) per beat, 32 row slots, 4 exp units/engine, 8 dividers, the masks' G: "
              f"{r['total_cycles']} cycles, utilization {ideal / r['total_cycles']:.3f}")


if __name__ == "__main__":
    main()
