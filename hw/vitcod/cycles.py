"""Cycle model of the ViTCoD accelerator (``hw/vitcod``): RTL cycles from (configuration, masks) in milliseconds.

It replays the accelerator's controller at job granularity, with the exact
latencies of the RTL: the loader (one beat per cycle, a commit cycle, two
banks; with the decoder, layer loads and each head's Q/K replay from the layer
store, two cycles behind its key order), the host's split of each row between the engines
(``hw/vitcod/balance.py``: the Denser Engine's G global keys and its half-row, the Sparser
Engine's half-row), each engine's job sequence (score ``ceil(n/K) * d/(M S)`` issue cycles
with S lines per key and K = L/S keys per step, ``VitcodConfig.score_split``,
and a six-cycle drain; pv ``n * ceil((d/M)/L)`` and a five-cycle drain; the
issue of the next job in the cycle after the last one), the softmax (exponent units
``n + EXP_LATENCY`` cycles, the divider ``ceil(26/2) + 1``), the output serializer and
its two requantizer stages, and the head hand-over.
Only data-independent timing exists in the RTL, so the model needs the mask
(G and the row lengths), never the values. It assumes, like the benchmark,
that the data source never idles and the output is never stalled.

``tests/rtl/test_vitcod.py`` holds it to the cycle against the RTL (every head of a run back
to back, refused heads and the decoder's layer loads between them) over a sweep of masks and
configurations; ``tests/test_vitcod_cycles.py`` checks it against hand-worked cases.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.balance import split_rows

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
    balance: str = "balanced"   # how the host splits each row's CSR entries (``hw/vitcod/balance.py``)

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
    return qk + s.nk * wpt + -(-(2 * s.nq + 1) // ipw) + -(-s.nnz // ipw)


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


class _HeadTimeline:
    """The controller of one head's compute part, replayed cycle by cycle (events between)."""

    def __init__(self, cfg: VitcodConfig, s: HeadShape, h: int, tile: int = 0):
        self.cfg, self.s = cfg, s
        rows = range(tile, s.nq, cfg.tiles)      # the query rows of this tile (all with one tile)
        self.nq = len(rows)
        cpt = cfg.chunks_per_token
        self.lines = (cfg.dense_lines, cfg.sparse_lines)
        self.npass = [-(-cpt // L) for L in self.lines]
        split = [cfg.score_split(L) for L in self.lines]
        self.keys = [L // sp for L, sp in zip(self.lines, split)]   # keys per score step
        self.spass = [cpt // sp for sp in split]                    # cycles per score step
        moved = split_rows(cfg, s.g, s.row_nnz, s.balance)
        self.row_n = ([s.g + int(moved[i]) for i in rows], [int(s.row_nnz[i]) - int(moved[i]) for i in rows])
        self.ns, self.npv = [0, 0], [0, 0]
        self.issue_free = [h, h]
        self.s_free = [h, h]
        self.p_free = [h, h]
        slots = cfg.row_slots
        self.sdone = [[False] * slots, [False] * slots]
        self.smx_ok = [[False] * slots, [False] * slots]
        self.pdone = [False, False]
        self.out_hold = [False, False]
        self.rp_ok_from = [h + 1, h + 1]
        self.sm_row = 0
        self.cm_row = 0
        self.exp_state = None      # None (IDLE) or (row, cycle from which the exp units are idle)
        self.div_busy_until = -1   # last cycle of RUN/DONE
        self.ser_until = -1        # last cycle ser_active is high
        self.last_beat = None
        self.windows = []          # (first, last) cycle of each job's issue to the engine's MAC lines
        self.sched = defaultdict(list)
        self.c = h

    def at(self, c, fn):
        self.sched[c].append(fn)

    def n_of(self, x, row):
        return self.row_n[x][row]

    def _issue(self, c, n_iss):
        """A job started in cycle c issues in cycles c+1 .. c+n_iss (the engine's ``active``)."""
        if n_iss:
            self.windows.append((c + 1, c + n_iss))

    def engines(self, c) -> bool:
        fired = False
        slots = self.cfg.row_slots
        for x in (0, 1):
            par_s, par_p = self.ns[x] % slots, self.npv[x] % slots
            can_s = (self.ns[x] < self.nq and self.ns[x] <= self.npv[x] + slots - 1 and c >= self.issue_free[x]
                     and c >= self.s_free[x] and not self.sdone[x][par_s] and c >= self.rp_ok_from[x])
            can_p = (self.npv[x] < self.ns[x] and self.smx_ok[x][par_p] and not self.out_hold[x]
                     and c >= self.issue_free[x] and c >= self.p_free[x])
            if can_s:
                n_iss = -(-self.n_of(x, self.ns[x]) // self.keys[x]) * self.spass[x]
                self._issue(c, n_iss)
                self.issue_free[x] = c + max(n_iss, 1)
                done = c + n_iss + SCORE_DRAIN if n_iss else c + 1
                self.s_free[x] = done + 1

                def set_sdone(x=x, p=par_s):
                    self.sdone[x][p] = True
                self.at(done + 1, set_sdone)
                self.ns[x] += 1
                self.rp_ok_from[x] = c + 2
                fired = True
            elif can_p:
                n_iss = self.n_of(x, self.npv[x]) * self.npass[x]
                self._issue(c, n_iss)
                self.issue_free[x] = c + max(n_iss, 1)
                done = c + n_iss + DRAIN if n_iss else c + 1
                self.p_free[x] = done + 1

                def set_pdone(x=x):
                    self.pdone[x] = True

                def clear_ok(x=x, p=par_p):
                    self.smx_ok[x][p] = False
                    self.out_hold[x] = True
                self.at(done + 1, set_pdone)
                self.at(c + 1, clear_ok)
                self.npv[x] += 1
                fired = True
        return fired

    def softmax(self, c) -> bool:
        """The exponent units, then the divider."""
        slots, s = self.cfg.row_slots, self.s
        if self.exp_state is None:
            par = self.sm_row % slots
            if self.sm_row < self.nq and self.sdone[0][par] and self.sdone[1][par]:
                nmax = max(self.row_n[0][self.sm_row], self.row_n[1][self.sm_row])
                idle_from = c + nmax + EXP_LATENCY if nmax else c + 1

                def clear_sdone(p=par):
                    self.sdone[0][p] = self.sdone[1][p] = False
                self.at(c + 1, clear_sdone)
                self.exp_state = (self.sm_row, max(idle_from, c + 1))
                self.sm_row += 1
                return True
            return False
        row, idle_from = self.exp_state
        if c >= idle_from and c > self.div_busy_until:
            empty = self.row_n[0][row] + self.row_n[1][row] == 0
            done = c + (2 if empty else DIV_CYCLES + 1)
            self.div_busy_until = done

            def set_ok(p=row % slots):
                self.smx_ok[0][p] = self.smx_ok[1][p] = True
            self.at(done + 1, set_ok)
            self.at(c + 1, lambda: None)
            self.exp_state = None      # the exp FSM is IDLE again from c + 1
            return True
        return False

    def output(self, c):
        """True when a row starts out, "end" when the head ends in this cycle, else False."""
        if self.pdone[0] and self.pdone[1] and c > self.ser_until:
            def combined():
                self.pdone[0] = self.pdone[1] = False
                self.out_hold[0] = self.out_hold[1] = False
                self.cm_row += 1
            self.at(c + 1, combined)
            self.ser_until = c + self.cfg.words_per_token
            self.last_beat = c + self.cfg.words_per_token + OUT_STAGES
            return True
        if self.cm_row == self.nq and c > self.ser_until:
            return "end"
        return False

    def next_cycle(self, c) -> int:
        wake = self.wakes(c)
        if not wake:
            raise RuntimeError(f"cycle model stuck at cycle {c} (rows {self.ns}, {self.npv}, "
                               f"softmax {self.sm_row}, out {self.cm_row})")
        return min(wake)

    def wakes(self, c) -> list:
        """Cycles after c at which something may change."""
        wake = [t for t in self.sched if t > c]
        wake += [t for t in (*self.issue_free, *self.s_free, *self.p_free, *self.rp_ok_from,
                             self.div_busy_until + 1, self.ser_until + 1) if t > c]
        if self.exp_state is not None and self.exp_state[1] > c:
            wake.append(self.exp_state[1])
        return wake

    def run(self):
        c = self.c
        while True:
            for fn in self.sched.pop(c, ()):
                fn()
            fired = self.engines(c)
            fired = self.softmax(c) or fired
            out = self.output(c)
            if out == "end":
                return c, self.last_beat, self.windows
            c = c + 1 if (fired or out) else self.next_cycle(c)


class _TiledHead:
    """(tiles > 1) The tiles' row pipelines of one head, started together, each its own
    ``_HeadTimeline``; they meet at the row merger (a buffer of ``merge_depth`` rows per tile,
    row i from tile ``i mod T``'s buffer, in row order) in front of the shared output serializer,
    and end the head together."""

    def __init__(self, cfg: VitcodConfig, s: HeadShape, h: int):
        self.cfg, self.s, self.c = cfg, s, h
        self.tiles = [_HeadTimeline(cfg, s, h, tile=t) for t in range(cfg.tiles)]
        self.turn = 0              # the merger's tile
        self.held = [0] * cfg.tiles   # rows in the merger's buffer of each tile (at most merge_depth)
        self.out_row = 0           # rows handed to the serializer
        self.ser_until = -1
        self.last_beat = None

    def output(self, c):
        """The merger (a buffer of ``merge_depth`` rows per tile; row i from tile ``i mod T``'s
        buffer) and the serializer: True when something moved, "end" when the head ends in this
        cycle. A tile hands a row on while its buffer has room or is being read from."""
        depth = self.cfg.merge_depth
        take = self.out_row < self.s.nq and self.held[self.turn] > 0 and c > self.ser_until
        loads = []
        for t, tile in enumerate(self.tiles):
            if tile.pdone[0] and tile.pdone[1] and (self.held[t] < depth or (take and t == self.turn)):
                def combined(tl=tile):
                    tl.pdone[0] = tl.pdone[1] = False
                    tl.out_hold[0] = tl.out_hold[1] = False
                    tl.cm_row += 1
                tile.at(c + 1, combined)
                loads.append(t)
        if take:
            self.held[self.turn] -= 1
            self.ser_until = c + self.cfg.words_per_token
            self.last_beat = c + self.cfg.words_per_token + OUT_STAGES
            self.out_row += 1
            self.turn = 0 if self.out_row == self.s.nq else (self.turn + 1) % self.cfg.tiles
        for t in loads:
            self.held[t] += 1
        if take or loads:
            return True
        if all(tl.cm_row == tl.nq for tl in self.tiles) and not any(self.held) and c > self.ser_until:
            return "end"
        return False

    def run(self):
        c = self.c
        while True:
            for tl in self.tiles:
                for fn in tl.sched.pop(c, ()):
                    fn()
            fired = False
            for tl in self.tiles:
                fired = tl.engines(c) or fired
                fired = tl.softmax(c) or fired
            out = self.output(c)
            if out == "end":
                return c, self.last_beat, [w for tl in self.tiles for w in tl.windows]
            if fired or out:
                c += 1
                continue
            wake = [t for tl in self.tiles for t in tl.wakes(c)]
            wake += [self.ser_until + 1] if self.ser_until >= c else []
            if not wake:
                raise RuntimeError(f"cycle model stuck at cycle {c} (tiles: rows out {self.out_row})")
            c = min(wake)


def _compute(cfg: VitcodConfig, s: HeadShape, h: int):
    """Cycles of the compute part of one head whose ``head_on`` is visible from cycle ``h``.

    Returns (c_end, last_output_beat, windows): the cycle in which the head-end condition holds,
    the cycle of the head's last output beat, and each engine job's issue cycles (first, last).
    """
    if cfg.tiles > 1:
        return _TiledHead(cfg, s, h).run()
    return _HeadTimeline(cfg, s, h).run()


def run_cycles(cfg: VitcodConfig, heads: list) -> dict:
    """Cycles of a run of heads back to back, counted from the first command transfer.

    Returns ``total_cycles`` (to the last output beat) and per good head its
    ``cycles`` (from the previous good head's last output beat, or from the first
    command for the first), ``ideal_cycles`` (its MACs over all MACs) and ``utilization``;
    ``load_cycles`` (its data-stream beats, one per cycle, with the decoder's Q/K replay),
    ``compute_cycles`` (from its start, once its bank is full, to its last output beat; the
    next head loads meanwhile), ``bound_cycles`` = max(ideal, load) and ``limited_by``:
    ``"stream"`` when loading the head takes longer than its ideal compute, else ``"macs"``;
    ``mac_active_cycles``: the cycles in which the Denser or the Sparser Engine issues to its
    MAC lines (the AXI wrapper's MAC_ACTIVE counter).
    """
    lb = 0
    windows = []
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
        c_end, last_beat, head_windows = _compute(cfg, s, h)
        windows += head_windows
        bank_free[bank] = c_end + 1
        head_off = c_end + 1
        ideal = ideal_cycles(cfg, s)
        cycles = last_beat - prev_end
        out.append(dict(s.info, nq=s.nq, nk=s.nk, g=s.g, nnz=s.nnz, cycles=cycles, ideal_cycles=ideal,
                        utilization=ideal / cycles if cycles else 0.0, load_cycles=beats,
                        compute_cycles=last_beat - h + 1, bound_cycles=max(ideal, beats),
                        limited_by="stream" if beats > ideal else "macs"))
        prev_end = last_beat
    return {"heads": out, "total_cycles": prev_end, "mac_active_cycles": _union(windows)}


def _union(windows) -> int:
    """Cycles covered by at least one of the (first, last) windows."""
    covered, end = 0, None
    for first, last in sorted(windows):
        if end is None or first > end:
            covered += last - first + 1
            end = last
        elif last > end:
            covered += last - end
            end = last
    return covered


def head_cycles(cfg: VitcodConfig, s: HeadShape) -> int:
    """Cycles of one head alone (first command to last output beat)."""
    return run_cycles(cfg, [s])["total_cycles"]
