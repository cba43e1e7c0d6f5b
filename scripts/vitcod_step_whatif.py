"""What-if study for issue 14's digits-ViT goal: which of the plan's remaining steps reach 0.85, in which order.

A cycle-stepped model of the ViTCoD row pipeline (``hw/vitcod``) with the plan steps as switches, so each
can be turned on alone or with others, per tiling of 8 lines x 8 MACs. It is **approximate**: it splits
each row between the engines by its own rule (running issue totals, G' per head and tile) and models the
tiles' row merger as unbounded, so at today's rules its cycles differ from the exact cycle model's
(``hw/vitcod/cycles.py``: 7 128 / 9 675 / 17 068 cycles at 4 x (1+1) / 2 x (2+2) / 1 x (4+4) on the digits
masks at 256 bits, where this gives 8 057 / 9 374 / 16 179); the differences between its rows are what it
is for. docs/vitcod-hw.md ("Not done / limits", the digits paragraph) quotes its output.

Per tile: one Denser + one Sparser Engine, rows i mod T of every head. Switches (``model``):

* ``pack``: a score / P.V step takes keys across rows (plan step 3); ``pvk``: keys per P.V step, 1 (today:
  one key per step, the lines beyond the key's chunks idle) or L / c (step 3);
* ``sdrain`` / ``pvdrain``: a score / P.V job waits for the previous one's drain (today: score no, P.V yes
  before plan step 2's P.V side); ``pvq``: rows' P.V shares an engine holds for the output (1 before step
  2's P.V side, 2 now, None: one per row in flight); ``pvfirst``: P.V before score on the issue port;
* ``slots``: rows in flight per tile (today 4);
* ``X``, ``exppipe``, ``D``, ``dcyc``: exponent entries per cycle and engine, whether the exponent units
  take the next row right after the last entry (today they hold the row until the divider takes it), the
  dividers per tile and their cycles per row (plan step 4; today 1, no, 1, 14);
* ``overlap``: the next head's rows enter once its bank is loaded (plan step 5; today after the previous
  head's end).

``--exact`` instead runs the exact cycle model with other ``row_slots`` / ``divider_bits`` / ``merge_depth``
and with its constants ``PV_QUEUE`` and ``EXP_LATENCY`` changed (what the row-per-job RTL does or would do
with more slots or a faster softmax).

Run: ``nice -n 10 .venv/bin/python scripts/vitcod_step_whatif.py build/intvit/s0/masks.npz [--exact]``
(seconds).
"""

import heapq
import math
import sys

from attnforge.flows.explore import _mask_shapes
from vitcod_packed_study import split_rows        # scripts/ is sys.path[0] when a script runs
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import (DRAIN, EXP_LATENCY, OUT_STAGES, SCORE_DRAIN, HeadShape, head_beats, run_cycles,
                                        sent_globals)


def split(eng, g, row_nnz, choose_g=True):
    return split_rows(row_nnz, g, eng[0]["sc"] + eng[0]["pc"], eng[1]["sc"] + eng[1]["pc"], choose_g)


def model(shapes, d, T, Ld, Ls, width, pack=False, pvk=1, sdrain=False, pvdrain=True, pvfirst=False, slots=4,
          X=1, exppipe=False, D=1, dcyc=14, overlap=False, pvq=1):
    M = 8
    c = d // M
    base = dict(head_dim=d, max_tokens=65, max_nnz=4225, macs=M, data_width=width)
    cfg = VitcodConfig(**base, dense_lines=Ld, sparse_lines=Ls, tiles=T)
    eng = []
    for L in (Ld, Ls):
        s = cfg.score_split(L)
        k, spass = L // s, c // s
        p = max(1, L // c) if pvk != 1 else 1
        npass = -(-c // L)
        eng.append(dict(k=k, spass=spass, p=p, npass=npass, sc=spass / k, pc=npass / p))
    # rows per tile, in head order
    rows = [[] for _ in range(T)]   # (h, global index, dn, sn)
    gorder = []                     # global output order: (tile, local index)
    head_last = []
    for h, s in enumerate(shapes):
        nnz = [int(n) for n in s.row_nnz]
        per_tile = []
        for t in range(T):
            per_tile.append(split(eng, s.g, nnz[t::T]))
        for i in range(s.nq):
            t = i % T
            dn, sn = per_tile[t][i // T]
            rows[t].append((h, dn, sn))
            gorder.append((t, len(rows[t]) - 1))
        head_last.append(len(gorder) - 1)
    nh = len(shapes)
    beats = [head_beats(cfg, s) for s in shapes]
    # state per tile
    st = []
    for t in range(T):
        n = len(rows[t])
        st.append(dict(n=n, keys=[[r[1] for r in rows[t]], [r[2] for r in rows[t]]],
                       sdone=[[None] * n, [None] * n], pdone=[[None] * n, [None] * n], smx=[None] * n,
                       sp=[0, 0], so=[0, 0], pp=[0, 0], po=[0, 0], busy=[0, 0], sfree=[0, 0], pfree=[0, 0],
                       entered=0, out=0, exp_free=0, exp_hold=None, divs=[0] * D, sm=0, handed=0,
))
    head_start = [None] * nh
    head_end = [None] * nh
    loader_free = 0
    hl = 0
    out_g = 0
    ser_free = 0
    last = 0
    t_ = 0
    mac = 0
    ntot = len(gorder)
    while out_g < ntot:
        # loader
        while hl < nh:
            h = hl
            if h >= 2 and head_end[h - 2] is None:
                break
            a = max(loader_free, (head_end[h - 2] + 1) if h >= 2 else 0)
            loader_free = a + beats[h] + 2
            head_start[h] = a + beats[h] + 3
            hl += 1
        for t in range(T):
            S = st[t]
            R = rows[t]
            while S["entered"] < S["n"]:
                h = R[S["entered"]][0]
                if S["entered"] - S["out"] >= slots or head_start[h] is None or head_start[h] > t_:
                    break
                if not overlap and h >= 1 and (head_end[h - 1] is None or head_end[h - 1] >= t_):
                    break
                S["entered"] += 1
            for e in (0, 1):
                x = eng[e]
                if S["busy"][e] > t_:
                    continue
                keys = S["keys"][e]

                def try_pv():
                    r = S["pp"][e]
                    while r < S["n"] and keys[r] == 0 and S["smx"][r] is not None and S["smx"][r] <= t_:
                        S["pdone"][e][r] = t_
                        r += 1
                        S["pp"][e], S["po"][e] = r, 0
                    if not (r < S["n"] and S["smx"][r] is not None and S["smx"][r] <= t_):
                        return 0
                    if pvdrain and S["pfree"][e] > t_:
                        return 0
                    if pvq is not None and r - S["out"] >= pvq:
                        return 0
                    take = x["p"]
                    done_at = t_ + x["npass"] + DRAIN
                    off = S["po"][e]
                    while take and r < S["n"] and S["smx"][r] is not None and S["smx"][r] <= t_:
                        m = min(take, keys[r] - off)
                        take -= m
                        off += m
                        if off == keys[r]:
                            S["pdone"][e][r] = done_at
                            if pvdrain:
                                S["pfree"][e] = done_at + 1
                            r, off = r + 1, 0
                            if not pack or pvdrain or (pvq is not None and r - S["out"] >= pvq):
                                break
                            while r < S["n"] and keys[r] == 0 and S["smx"][r] is not None and S["smx"][r] <= t_:
                                S["pdone"][e][r] = done_at
                                r += 1
                    S["pp"][e], S["po"][e] = r, off
                    return x["npass"]

                def try_score():
                    r = S["sp"][e]
                    while r < S["entered"] and keys[r] == 0:
                        if sdrain and S["sfree"][e] > t_:
                            return 0
                        S["sdone"][e][r] = t_
                        r += 1
                        S["sp"][e], S["so"][e] = r, 0
                    if r >= S["entered"]:
                        return 0
                    if sdrain and S["sfree"][e] > t_:
                        return 0
                    take = x["k"]
                    done_at = t_ + x["spass"] + SCORE_DRAIN
                    off = S["so"][e]
                    while take and r < S["entered"]:
                        m = min(take, keys[r] - off)
                        take -= m
                        off += m
                        if off == keys[r]:
                            S["sdone"][e][r] = done_at
                            if sdrain:
                                S["sfree"][e] = done_at + 1
                            r, off = r + 1, 0
                            if not pack or sdrain:
                                break
                            while r < S["entered"] and keys[r] == 0:
                                S["sdone"][e][r] = done_at
                                r += 1
                    S["sp"][e], S["so"][e] = r, off
                    return x["spass"]

                order = (try_pv, try_score) if pvfirst else (try_score, try_pv)
                for f in order:
                    n = f()
                    if n:
                        S["busy"][e] = t_ + n
                        mac += n * (Ld if e == 0 else Ls)
                        break
            # softmax
            if S["exp_hold"] is not None:
                r, idle = S["exp_hold"]
                dv = S["divs"][0]
                if t_ >= idle and dv <= t_:
                    heapq.heapreplace(S["divs"], t_ + dcyc)
                    S["smx"][r] = t_ + dcyc + 1
                    S["exp_hold"] = None
            r = S["sm"]
            if (S["exp_hold"] is None and r < S["n"] and S["exp_free"] <= t_ and S["sdone"][0][r] is not None
                    and S["sdone"][1][r] is not None and max(S["sdone"][0][r], S["sdone"][1][r]) <= t_):
                n = max(S["keys"][0][r], S["keys"][1][r])
                span = max(1, math.ceil(n / X))
                if exppipe:
                    S["exp_free"] = t_ + span
                    end = t_ + span + EXP_LATENCY
                    dv = heapq.heappop(S["divs"])
                    st_ = max(dv, end)
                    heapq.heappush(S["divs"], st_ + dcyc)
                    S["smx"][r] = st_ + dcyc + 1
                else:
                    S["exp_hold"] = (r, t_ + span + EXP_LATENCY)
                    S["exp_free"] = t_ + 1
                S["sm"] = r + 1
        # output in global order; a tile's row leaves its slot when it goes out
        if out_g < ntot and ser_free <= t_:
            t, li = gorder[out_g]
            S = st[t]
            if all(S["pdone"][e][li] is not None and S["pdone"][e][li] < t_ for e in (0, 1)):
                S["out"] += 1
                ser_free = t_ + cfg.words_per_token
                last = t_ + cfg.words_per_token + OUT_STAGES
                if out_g in head_last:
                    head_end[head_last.index(out_g)] = last
                out_g += 1
        t_ += 1
    return last




TODAY = dict(sdrain=False, pvdrain=True, pvq=1, pvfirst=False, slots=4, X=1, exppipe=False, D=1, dcyc=14,
             overlap=False)
STEP4 = dict(X=4, exppipe=True, D=8)
ROWS = [
    ("today's rules (score side of step 2)", {}),
    ("+ step 2 P.V side, queue of 2", dict(pvdrain=False, pvq=2)),
    ("+ 8 row slots", dict(pvdrain=False, pvq=2, slots=8)),
    ("step 2 + 32 slots (shares per slot) + step 4 (X 4 pipelined, D 8)", dict(pvdrain=False, pvq=None, slots=32, **STEP4)),
    ("the same + step 5 (heads overlap)", dict(pvdrain=False, pvq=None, slots=32, overlap=True, **STEP4)),
    ("the same, P.V before score", dict(pvdrain=False, pvq=None, slots=32, overlap=True, pvfirst=True, **STEP4)),
    ("X 2, D 4, overlap, 32 slots", dict(pvdrain=False, pvq=None, slots=32, X=2, exppipe=True, D=4, overlap=True)),
    ("24 slots, step 4, no overlap", dict(pvdrain=False, pvq=None, slots=24, **STEP4)),
    ("32 slots, D 2 of 4 cycles, X 4", dict(pvdrain=False, pvq=None, slots=32, X=4, exppipe=True, D=2, dcyc=4)),
    ("32 slots, D 4, X 4", dict(pvdrain=False, pvq=None, slots=32, X=4, exppipe=True, D=4)),
    ("32 slots, step 4 but exponents not pipelined", dict(pvdrain=False, pvq=None, slots=32, X=4, D=8)),
    ("32 slots, step 4, 4 shares per engine", dict(pvdrain=False, pvq=4, slots=32, **STEP4)),
    ("step 4 alone", dict(STEP4)),
    ("32 slots + shares alone", dict(pvdrain=False, pvq=None, slots=32)),
]


EXACT = [dict(), dict(slots=8), dict(slots=16), dict(bits=4), dict(bits=4, slots=8), dict(bits=8, slots=8),
         dict(bits=8, slots=16, pvq=8, exp=1, md=8)]


def exact(shapes, ideal):
    """The exact cycle model: the RTL's configuration fields ``row_slots`` (slots), ``divider_bits`` (bits),
    ``merge_depth`` (md), and constants changed (``PV_QUEUE``: pvq, ``EXP_LATENCY``: exp; module globals,
    restored after)."""
    import attnforge.hw.vitcod.config as config_module
    import attnforge.hw.vitcod.cycles as cycles_module
    saved = (config_module.PV_QUEUE, cycles_module.EXP_LATENCY)
    try:
        for T, L in ((4, 1), (2, 2)):
            for kw in EXACT:
                config_module.PV_QUEUE, cycles_module.EXP_LATENCY = kw.get("pvq", 2), kw.get("exp", 6)
                cfg = VitcodConfig(head_dim=16, max_tokens=65, max_nnz=4225, macs=8, data_width=256, dense_lines=L,
                                   sparse_lines=L, tiles=T, merge_depth=kw.get("md", 1), row_slots=kw.get("slots", 4),
                                   divider_bits=kw.get("bits", 2))
                sent = [s.with_sent_globals(g) for s, g in zip(shapes, sent_globals(cfg, shapes))]
                cyc = run_cycles(cfg, sent)["total_cycles"]
                print(f"exact model, {T} x ({L}+{L}), {kw or 'as built'}: {cyc} cycles, {ideal / cyc:.3f}", flush=True)
    finally:
        config_module.PV_QUEUE, cycles_module.EXP_LATENCY = saved
    # heads overlapping (plan step 5), estimated: every head's rows as one head (G' chosen per head as for
    # the heads back to back, each row's G' global keys sent as CSR entries of that row, G = 0)
    for T, L in ((4, 1), (2, 2)):
        for kw in (dict(), dict(row_slots=8, divider_bits=4), dict(row_slots=16, divider_bits=8)):
            small = VitcodConfig(head_dim=16, max_tokens=65, max_nnz=4225, macs=8, data_width=256, dense_lines=L,
                                 sparse_lines=L, tiles=T, **kw)
            sent = [s.with_sent_globals(g) for s, g in zip(shapes, sent_globals(small, shapes))]
            one = HeadShape(sum(s.nq for s in sent), 65, 0, [n + s.g for s in sent for n in s.row_nnz])
            big = VitcodConfig(head_dim=16, max_tokens=one.nq, max_nnz=65535, macs=8, data_width=256, dense_lines=L,
                               sparse_lines=L, tiles=T, **kw)
            cyc = run_cycles(big, [one])["total_cycles"]
            print(f"exact model, {T} x ({L}+{L}), {kw or 'defaults'}, every head's rows as one head (overlap "
                  f"estimate): {cyc} cycles, {ideal / cyc:.3f}", flush=True)


def main():
    heads = _mask_shapes(sys.argv[1])
    shapes = list(heads.shapes)
    ideal = sum(s.macs(16) for s in shapes) / 64
    print(f"{len(shapes)} heads, ideal {ideal:.0f} cycles on 64 MACs; utilization at 256 bits, G' chosen")
    if "--exact" in sys.argv[2:]:
        return exact(shapes, ideal)
    cols = [(4, 1, False), (2, 2, False), (1, 4, False), (1, 4, True)]
    print("design | " + " | ".join(f"{T} x ({L}+{L}){' step 3' if p else ''}" for T, L, p in cols))
    for name, kw in ROWS:
        out = []
        for T, L, pack in cols:
            cyc = model(shapes, 16, T, L, L, 256, pack=pack, pvk=2 if pack else 1, **dict(TODAY, **kw))
            out.append(f"{ideal / cyc:.3f} ({cyc})")
        print(f"{name} | " + " | ".join(out), flush=True)


if __name__ == "__main__":
    main()
