"""Cycle model of the ViTCoD accelerator (``hw/vitcod``): RTL cycles from (configuration, masks) in milliseconds.

It replays the accelerator's controller at job granularity, with the exact
latencies of the RTL: the loader (one beat per cycle, a commit cycle, two
banks; with the decoder, layer loads and each head's Q/K replay from the layer
store, two cycles behind its key order), each engine's job sequence (score ``ceil(n/K) * d/(M S)`` issue cycles
with S lines per key and K = L/S keys per step, ``VitcodConfig.score_split``,
and a six-cycle drain; pv ``n * ceil((d/M)/L)`` and a five-cycle drain; the
issue of the next job in the cycle after the last one), the softmax (exponent units
``n + EXP_LATENCY`` cycles, the divider ``ceil(26/2) + 1``), the output serializer and
its two requantizer stages, and the head hand-over.
Only data-independent timing exists in the RTL, so the model needs the mask
(G and the row lengths), never the values. It assumes, like the benchmark,
that the data source never idles and the output is never stalled.

``tests/test_vitcod_cycles.py`` and ``tests/rtl/test_vitcod.py`` hold it within 5 % of
the RTL over a sweep of masks and configurations (it is exact on all of them so far,
every head of a run back to back included).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from attnforge.hw.vitcod import VitcodConfig

__all__ = ["HeadShape", "head_beats", "replay_cycles", "head_cycles", "run_cycles", "ideal_cycles", "dense_baseline_shape",
           "DRAIN", "SCORE_DRAIN", "EXP_LATENCY", "OUT_STAGES",
           "DIV_CYCLES"]

#: cycles from a job's last issue to its done pulse (stages 1-4 of the engine)
DRAIN = 5
#: the same for a score job: one more stage sums the partial scores of a key's S lines
SCORE_DRAIN = DRAIN + 1
#: cycles from an exponent job's start to its last E and sum (its pipeline: x1, xd, x2, x3, x4)
EXP_LATENCY = 6
#: registered stages of the output requantizer between the serializer and the output stream
OUT_STAGES = 2
#: the divider: 2 quotient bits per cycle for the 26-bit reciprocal
DIV_CYCLES = 13


@dataclass
class HeadShape:
    """What the timing of one head depends on."""

    nq: int
    nk: int
    g: int
    row_nnz: list          # sparse entries of each query row
    hc: int = 1            # compressed heads per Q/K word (decoder)
    good: bool = True      # False: the accelerator refuses it (no output)
    dropped: bool = False  # refused at the command (size): its data is dropped without a commit cycle
    layer: bool = False    # (decoder) a layer load of the compressed Q/K (nq, nk, hc), not a head
    info: dict = field(default_factory=dict)

    @property
    def nnz(self) -> int:
        return int(sum(self.row_nnz))

    @classmethod
    def from_csr(cls, g: int, row_ptr, nk: int, **kw) -> "HeadShape":
        rp = [int(x) for x in row_ptr]
        return cls(len(rp) - 1, nk, int(g), [rp[i + 1] - rp[i] for i in range(len(rp) - 1)], **kw)

    def macs(self, head_dim: int) -> int:
        return 2 * head_dim * (self.nq * self.g + self.nnz)


def head_beats(cfg: VitcodConfig, s: HeadShape) -> int:
    """Data-stream beats of one head or layer load (the stream layout of ``hw/vitcod/accelerator.py``)."""
    wpt, ipw = cfg.words_per_token, cfg.indices_per_word
    if s.layer:
        return (s.nq + s.nk) * wpt * s.hc
    # with the decoder the stream carries the key order; Q and K come from the layer store
    qk = -(-s.nk // ipw) if cfg.decoder else (s.nq + s.nk) * wpt
    return qk + s.nk * wpt + -(-(s.nq + 1) // ipw) + -(-s.nnz // ipw)


def replay_cycles(cfg: VitcodConfig, s: HeadShape) -> int:
    """Loader cycles of a head's Q/K replay from the layer store (decoder; 0 for a head refused at its
    command): one beat per cycle, hc beats per word, two cycles of latency (key order, store)."""
    if not cfg.decoder or s.layer or s.dropped:
        return 0
    return (s.nq + s.nk) * cfg.words_per_token * s.hc + 2


def ideal_cycles(cfg: VitcodConfig, s: HeadShape) -> float:
    return s.macs(cfg.head_dim) / cfg.total_macs


def dense_baseline_shape(cfg: VitcodConfig, nq: int, nk: int) -> HeadShape:
    """The full Nq x Nk attention on the same accelerator, its lines balanced: the Denser Engine
    takes its share of every row's columns as global columns, the Sparser Engine the rest (as CSR)."""
    g = round(nk * cfg.dense_lines / cfg.lines)
    return HeadShape(nq, nk, g, [nk - g] * nq, info={"dense_baseline": True})


def _compute(cfg: VitcodConfig, s: HeadShape, h: int):
    """Cycles of the compute part of one head whose ``head_on`` is visible from cycle ``h``.

    Returns (c_end, last_output_beat): the cycle in which the head-end condition holds,
    and the cycle of the head's last output beat.
    """
    cpt, wpt = cfg.chunks_per_token, cfg.words_per_token
    lines = (cfg.dense_lines, cfg.sparse_lines)
    npass = [-(-cpt // L) for L in lines]
    split = [cfg.score_split(L) for L in lines]
    keys = [L // sp for L, sp in zip(lines, split)]           # keys per score step
    spass = [cpt // sp for sp in split]                        # cycles per score step
    nq = s.nq
    row_n = s.row_nnz

    def n_of(x, row):
        return s.g if x == 0 else row_n[row]

    ns, npv = [0, 0], [0, 0]
    issue_free = [h, h]
    s_free = [h, h]
    p_free = [h, h]
    SL = cfg.row_slots
    sdone = [[False] * SL, [False] * SL]
    smx_ok = [[False] * SL, [False] * SL]
    pdone = [False, False]
    out_hold = [False, False]
    rp_ok_from = h + 1
    sm_row = 0
    cm_row = 0
    exp_state = None      # None (IDLE) or (row, cycle from which the exp units are idle)
    div_busy_until = -1   # last cycle of RUN/DONE
    ser_until = -1        # last cycle ser_active is high
    last_beat = None
    sched = defaultdict(list)

    def at(c, fn):
        sched[c].append(fn)

    c = h
    while True:
        for fn in sched.pop(c, ()):
            fn()
        fired = False
        # ---- engines
        for x in (0, 1):
            L = lines[x]
            par_s, par_p = ns[x] % SL, npv[x] % SL
            can_s = (ns[x] < nq and ns[x] <= npv[x] + SL - 1 and c >= issue_free[x] and c >= s_free[x]
                     and not sdone[x][par_s] and (x == 0 or c >= rp_ok_from))
            can_p = (npv[x] < ns[x] and smx_ok[x][par_p] and not out_hold[x] and c >= issue_free[x]
                     and c >= p_free[x])
            if can_s:
                n = n_of(x, ns[x])
                n_iss = -(-n // keys[x]) * spass[x]
                issue_free[x] = c + max(n_iss, 1)
                done = c + n_iss + SCORE_DRAIN if n_iss else c + 1
                s_free[x] = done + 1

                def set_sdone(x=x, p=par_s):
                    sdone[x][p] = True
                at(done + 1, set_sdone)
                ns[x] += 1
                if x == 1:
                    rp_ok_from = c + 2
                fired = True
            elif can_p:
                n = n_of(x, npv[x])
                n_iss = n * npass[x]
                issue_free[x] = c + max(n_iss, 1)
                done = c + n_iss + DRAIN if n_iss else c + 1
                p_free[x] = done + 1

                def set_pdone(x=x):
                    pdone[x] = True

                def clear_ok(x=x, p=par_p):
                    smx_ok[x][p] = False
                    out_hold[x] = True
                at(done + 1, set_pdone)
                at(c + 1, clear_ok)
                npv[x] += 1
                fired = True
        # ---- softmax: exponent units, then the divider
        if exp_state is None:
            par = sm_row % SL
            if sm_row < nq and sdone[0][par] and sdone[1][par]:
                nmax = max(s.g, row_n[sm_row])
                idle_from = c + nmax + EXP_LATENCY if nmax else c + 1

                def clear_sdone(p=par):
                    sdone[0][p] = sdone[1][p] = False
                at(c + 1, clear_sdone)
                exp_state = (sm_row, max(idle_from, c + 1))
                sm_row += 1
                fired = True
        else:
            row, idle_from = exp_state
            if c >= idle_from and c > div_busy_until:
                empty = s.g + row_n[row] == 0
                done = c + (2 if empty else DIV_CYCLES + 1)
                div_busy_until = done

                def set_ok(p=row % SL):
                    smx_ok[0][p] = smx_ok[1][p] = True
                at(done + 1, set_ok)
                at(c + 1, lambda: None)
                exp_state = None
                fired = True
                # the exp FSM is IDLE again from c + 1
        # ---- output
        if pdone[0] and pdone[1] and c > ser_until:
            def combined():
                nonlocal cm_row
                pdone[0] = pdone[1] = False
                out_hold[0] = out_hold[1] = False
                cm_row += 1
            at(c + 1, combined)
            ser_until = c + wpt
            last_beat = c + wpt + OUT_STAGES
            fired = True
        elif cm_row == nq and c > ser_until:
            return c, last_beat
        # ---- next cycle with something to do
        if fired:
            c += 1
            continue
        wake = [t for t in sched if t > c]
        wake += [t for t in (*issue_free, *s_free, *p_free, rp_ok_from, div_busy_until + 1, ser_until + 1)
                 if t > c]
        if exp_state is not None and exp_state[1] > c:
            wake.append(exp_state[1])
        if not wake:
            raise RuntimeError(f"cycle model stuck at cycle {c} (rows {ns}, {npv}, softmax {sm_row}, out {cm_row})")
        c = min(wake)


def run_cycles(cfg: VitcodConfig, heads: list) -> dict:
    """Cycles of a run of heads back to back, counted from the first command transfer.

    Returns ``total_cycles`` (to the last output beat) and per good head its
    ``cycles`` (from the previous good head's last output beat, or from the first
    command for the first), ``ideal_cycles`` and ``utilization``.
    """
    lb = 0
    loader_free = 0
    bank_free = [0, 0]
    head_off = -10
    prev_end = 0
    out = []
    for s in heads:
        beats = head_beats(cfg, s)
        a = max(loader_free, bank_free[lb])
        if s.layer:          # the store takes one beat per cycle; no commit cycle
            loader_free = a + beats + 1
            continue
        beats += replay_cycles(cfg, s)
        if not s.good:
            loader_free = a + beats + (1 if s.dropped else 2)
            continue
        full_visible = a + beats + 2
        loader_free = a + beats + 2
        bank = lb
        lb ^= 1
        # head_on rises in the cycle after the bank is full and the previous head is off
        h = max(full_visible, head_off) + 1
        c_end, last_beat = _compute(cfg, s, h)
        bank_free[bank] = c_end + 1
        head_off = c_end + 1
        ideal = ideal_cycles(cfg, s)
        cycles = last_beat - prev_end
        out.append(dict(s.info, nq=s.nq, nk=s.nk, g=s.g, nnz=s.nnz, cycles=cycles, ideal_cycles=ideal,
                        utilization=ideal / cycles if cycles else 0.0, load_cycles=beats))
        prev_end = last_beat
    return {"heads": out, "total_cycles": prev_end}


def head_cycles(cfg: VitcodConfig, s: HeadShape) -> int:
    """Cycles of one head alone (first command to last output beat)."""
    return run_cycles(cfg, [s])["total_cycles"]
