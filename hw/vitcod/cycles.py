"""Cycle model of the ViTCoD accelerator (``hw/vitcod``): RTL cycles from (configuration, masks) in milliseconds.

It replays the accelerator's controller at job granularity, with the exact
latencies of the RTL: the loader (one beat per cycle, a commit cycle, two
banks; with the decoder, layer loads and each head's Q/K replay from the layer
store, two cycles behind its key order), the host's split of each row between the engines
(``hw/vitcod/balance.py``: the Denser Engine's G global keys and its half-row, the Sparser
Engine's half-row), each engine's job sequence (score ``ceil(n/K) * d/(M S)`` issue cycles
with S lines per key and K = L/S keys per step, ``VitcodConfig.score_split``,
and a six-cycle drain, which the next score job with keys does not wait for (its beats follow
the previous job's, each with its row slot) but one without keys does; pv ``n * ceil((d/M)/L)``
and a five-cycle drain, the same way (while the engine holds fewer than ``pv_queue`` rows' shares for the
output); the issue of the next job in the cycle after the last one), the softmax (exponent units
``n + EXP_LATENCY`` cycles, the divider ``ceil(26 / divider_bits) + 1``), the output serializer and
its two requantizer stages, and the head hand-over.
Only data-independent timing exists in the RTL, so the model needs the mask
(G and the row lengths), never the values. It assumes, like the benchmark,
that the data source never idles and the output is never stalled.

``tests/rtl/test_vitcod.py`` holds it to the cycle against the RTL (every head of a run back
to back, refused heads and the decoder's layer loads between them) over a sweep of masks and
configurations; ``tests/test_vitcod_cycles.py`` checks it against hand-worked cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.balance import check_sent_globals, split_rows

__all__ = ["HeadShape", "head_beats", "replay_cycles", "head_cycles", "run_cycles", "sent_globals", "ideal_cycles",
           "dense_baseline_shape",
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
#: the divider at the default 2 quotient bits per cycle for the 26-bit reciprocal (``VitcodConfig.divider_cycles``)
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

    def with_sent_globals(self, g_sent: int) -> "HeadShape":
        """This head as the accelerator gets it when the host sends only ``g_sent`` of its G global
        columns as global columns, the others as CSR entries of every row (``balance.globals_as_csr``)."""
        g_sent = check_sent_globals(self.g, g_sent)
        extra = self.g - g_sent
        return replace(self, g=g_sent, row_nnz=[int(n) + extra for n in self.row_nnz], info=dict(self.info))


def head_beats(cfg: VitcodConfig, s: HeadShape) -> int:
    """Data-stream beats of one head or layer load (the stream layout of ``hw/vitcod/accelerator.py``)."""
    wpt, ipw = cfg.words_per_token, cfg.indices_per_word
    if s.layer:
        return (s.nq + s.nk) * wpt * s.hc
    # with the decoder the stream carries the key order; Q and K come from the layer store
    qk = -(-s.nk // ipw) if cfg.decoder else cfg.token_beats(s.nq) + cfg.token_beats(s.nk)
    return qk + cfg.token_beats(s.nk) + -(-(2 * s.nq + 1) // ipw) + -(-s.nnz // ipw)


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


_SPLIT_MEMO: dict = {}
_SPLIT_MEMO_SIZE = 256


def _split_rows(cfg: VitcodConfig, g: int, row_nnz: list, balance: str) -> list:
    """``split_rows`` as a list, remembered: it depends on the lines, ``chunks_per_token`` and tiles
    only, so configurations that differ in stream width or decoder share it."""
    key = (cfg.dense_lines, cfg.sparse_lines, cfg.head_dim, cfg.macs, cfg.tiles, g, tuple(row_nnz), balance)
    hit = _SPLIT_MEMO.get(key)
    if hit is None:
        hit = split_rows(cfg, g, row_nnz, balance).tolist()
        if len(_SPLIT_MEMO) >= _SPLIT_MEMO_SIZE:
            _SPLIT_MEMO.clear()
        _SPLIT_MEMO[key] = hit
    return hit


# What a scheduled event does (``_HeadTimeline.at``), applied in the order scheduled:
_SET_SDONE = 0      # (x, slot): engine x's score job of that row slot is done
_SET_PDONE = 1      # (x, -): engine x's P.V job is done (one more share for the output)
_CLEAR_OK = 2       # (x, slot): the P.V job took the slot's softmax result; engine x holds one more share
_CLEAR_SDONE = 3    # (-, slot): the exponent units took the slot's scores of both engines
_SET_OK = 4         # (-, slot): the divider's result of the slot is ready for both engines
_WAKE = 5           # nothing changes; the exponent FSM is idle again (a cycle to look at)
_COMBINED = 6       # the output took both engines' shares of a row: the next row may go out


class _HeadTimeline:
    """The controller of one head's compute part, replayed cycle by cycle (events between).

    Written for speed (``attnforge explore`` replays every head of every configuration it sweeps):
    parameters are read once into attributes and events are small tuples, not closures.
    """

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
        row_nnz = [int(n) for n in s.row_nnz]
        moved = _split_rows(cfg, s.g, row_nnz, s.balance)
        self.row_n = ([s.g + moved[i] for i in rows], [row_nnz[i] - moved[i] for i in rows])
        self.slots = slots = cfg.row_slots
        self.words_per_token = cfg.words_per_token
        self.div_cycles = cfg.divider_cycles
        self.ns, self.npv = [0, 0], [0, 0]
        self.issue_free = [h, h]
        self.s_free = [h, h]
        self.p_free = [h, h]
        self.sdone = [[False] * slots, [False] * slots]
        self.smx_ok = [[False] * slots, [False] * slots]
        self.pdone = [0, 0]        # per engine: finished P.V shares the output has not taken
        self.pv_held = [0, 0]      # per engine: started P.V jobs whose row the output has not taken
        self.pv_queue = cfg.pv_queue
        self.rp_ok_from = [h + 1, h + 1]
        self.sm_row = 0
        self.cm_row = 0
        self.exp_state = None      # None (IDLE) or (row, cycle from which the exp units are idle)
        self.div_busy_until = -1   # last cycle of RUN/DONE
        self.ser_until = -1        # last cycle ser_active is high
        self.last_beat = None
        self.windows = []          # (first, last) cycle of each job's issue to the engine's MAC lines
        self.sched = {}            # cycle -> [(event, x, slot)] applied at its start
        self.c = h

    def at(self, c, event, x=0, p=0):
        ops = self.sched.get(c)
        if ops is None:
            self.sched[c] = [(event, x, p)]
        else:
            ops.append((event, x, p))

    def apply(self, ops):
        """The events scheduled for one cycle, in the order scheduled."""
        for event, x, p in ops:
            if event == _SET_SDONE:
                self.sdone[x][p] = True
            elif event == _SET_PDONE:
                self.pdone[x] += 1
            elif event == _CLEAR_OK:
                self.smx_ok[x][p] = False
                self.pv_held[x] += 1
            elif event == _CLEAR_SDONE:
                self.sdone[0][p] = self.sdone[1][p] = False
            elif event == _SET_OK:
                self.smx_ok[0][p] = self.smx_ok[1][p] = True
            elif event == _COMBINED:
                self.pdone[0] -= 1
                self.pdone[1] -= 1
                self.pv_held[0] -= 1
                self.pv_held[1] -= 1
                self.cm_row += 1

    def n_of(self, x, row):
        return self.row_n[x][row]

    def engines(self, c) -> bool:
        fired = False
        slots, ns, npv, issue_free = self.slots, self.ns, self.npv, self.issue_free
        for x in (0, 1):
            if c < issue_free[x]:      # both kinds of job wait for the engine's issue
                continue
            nsx, npvx = ns[x], npv[x]
            par_s = nsx % slots
            if (nsx < self.nq and nsx <= npvx + slots - 1 and (self.row_n[x][nsx] or c >= self.s_free[x])
                    and not self.sdone[x][par_s] and c >= self.rp_ok_from[x]):
                n_iss = -(-self.row_n[x][nsx] // self.keys[x]) * self.spass[x]
                if n_iss:      # a job started in cycle c issues in cycles c+1 .. c+n_iss
                    self.windows.append((c + 1, c + n_iss))
                    done = c + n_iss + SCORE_DRAIN
                else:
                    done = c + 1
                issue_free[x] = c + max(n_iss, 1)
                self.s_free[x] = done + 1
                self.at(done + 1, _SET_SDONE, x, par_s)
                ns[x] = nsx + 1
                self.rp_ok_from[x] = c + 2
                fired = True
                continue
            par_p = npvx % slots
            if (npvx < nsx and self.smx_ok[x][par_p] and self.pv_held[x] < self.pv_queue
                    and (self.row_n[x][npvx] or c >= self.p_free[x])):
                n_iss = self.row_n[x][npvx] * self.npass[x]
                if n_iss:
                    self.windows.append((c + 1, c + n_iss))
                    done = c + n_iss + DRAIN
                else:
                    done = c + 1
                issue_free[x] = c + max(n_iss, 1)
                self.p_free[x] = done + 1
                self.at(done + 1, _SET_PDONE, x)
                self.at(c + 1, _CLEAR_OK, x, par_p)
                npv[x] = npvx + 1
                fired = True
        return fired

    def softmax(self, c) -> bool:
        """The exponent units, then the divider."""
        slots = self.slots
        if self.exp_state is None:
            row = self.sm_row
            par = row % slots
            if row < self.nq and self.sdone[0][par] and self.sdone[1][par]:
                nmax = max(self.row_n[0][row], self.row_n[1][row])
                idle_from = c + nmax + EXP_LATENCY if nmax else c + 1
                self.at(c + 1, _CLEAR_SDONE, 0, par)
                self.exp_state = (row, max(idle_from, c + 1))
                self.sm_row = row + 1
                return True
            return False
        row, idle_from = self.exp_state
        if c >= idle_from and c > self.div_busy_until:
            empty = self.row_n[0][row] + self.row_n[1][row] == 0
            done = c + (2 if empty else self.div_cycles + 1)
            self.div_busy_until = done
            self.at(done + 1, _SET_OK, 0, row % slots)
            self.at(c + 1, _WAKE)
            self.exp_state = None      # the exp FSM is IDLE again from c + 1
            return True
        return False

    def output(self, c):
        """True when a row starts out, "end" when the head ends in this cycle, else False."""
        if c > self.ser_until:
            pdone = self.pdone
            if pdone[0] and pdone[1]:
                self.at(c + 1, _COMBINED)
                self.ser_until = c + self.words_per_token
                self.last_beat = c + self.words_per_token + OUT_STAGES
                return True
            if self.cm_row == self.nq:
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
        wake = [t for t in (*self.sched, *self.issue_free, *self.s_free, *self.p_free, *self.rp_ok_from,
                            self.div_busy_until + 1, self.ser_until + 1) if t > c]
        if self.exp_state is not None and self.exp_state[1] > c:
            wake.append(self.exp_state[1])
        return wake

    def run_stepwise(self):
        """The replay to the head's end, one method at a time (``apply``, ``engines``, ``softmax``,
        ``output``): the readable form of the controller, which ``_TiledHead`` steps per tile."""
        c = self.c
        sched = self.sched
        while True:
            ops = sched.pop(c, None)
            if ops:
                self.apply(ops)
            fired = self.engines(c)
            fired = self.softmax(c) or fired
            out = self.output(c)
            if out == "end":
                return c, self.last_beat, self.windows
            c = c + 1 if (fired or out) else self.next_cycle(c)

    def run(self):
        """``run_stepwise`` with ``apply``, ``engines``, ``softmax``, ``output`` and ``next_cycle``
        inlined into one loop over local variables: the same events in the same order, about twice
        as fast (tests/test_vitcod_cycles.py holds the two equal). Returns (c_end, last_beat, windows)."""
        nq, slots, wpt, div_cycles = self.nq, self.slots, self.words_per_token, self.div_cycles
        row_n, keys, spass, npass = self.row_n, self.keys, self.spass, self.npass
        ns, npv, issue_free, s_free, p_free = self.ns, self.npv, self.issue_free, self.s_free, self.p_free
        sdone, smx_ok, pdone, pv_held, pvq = self.sdone, self.smx_ok, self.pdone, self.pv_held, self.pv_queue
        rp_ok_from, windows, sched = self.rp_ok_from, self.windows, self.sched
        sm_row, cm_row, exp_state = self.sm_row, self.cm_row, self.exp_state
        div_busy_until, ser_until, last_beat = self.div_busy_until, self.ser_until, self.last_beat
        c = self.c
        at = sched.setdefault      # at(t, []).append(event): an event in cycle t

        while True:
            ops = sched.pop(c, None)
            if ops:                                     # apply
                for event, x, p in ops:
                    if event == _SET_SDONE:
                        sdone[x][p] = True
                    elif event == _SET_PDONE:
                        pdone[x] += 1
                    elif event == _CLEAR_OK:
                        smx_ok[x][p] = False
                        pv_held[x] += 1
                    elif event == _CLEAR_SDONE:
                        sdone[0][p] = sdone[1][p] = False
                    elif event == _SET_OK:
                        smx_ok[0][p] = smx_ok[1][p] = True
                    elif event == _COMBINED:
                        pdone[0] -= 1
                        pdone[1] -= 1
                        pv_held[0] -= 1
                        pv_held[1] -= 1
                        cm_row += 1
            fired = False
            for x in (0, 1):                            # engines
                if c < issue_free[x]:
                    continue
                nsx, npvx = ns[x], npv[x]
                par_s = nsx % slots
                if (nsx < nq and nsx <= npvx + slots - 1 and (row_n[x][nsx] or c >= s_free[x])
                        and not sdone[x][par_s] and c >= rp_ok_from[x]):
                    n_iss = -(-row_n[x][nsx] // keys[x]) * spass[x]
                    if n_iss:
                        windows.append((c + 1, c + n_iss))
                        done = c + n_iss + SCORE_DRAIN
                    else:
                        done = c + 1
                    issue_free[x] = c + max(n_iss, 1)
                    s_free[x] = done + 1
                    at(done + 1, []).append((_SET_SDONE, x, par_s))
                    ns[x] = nsx + 1
                    rp_ok_from[x] = c + 2
                    fired = True
                    continue
                par_p = npvx % slots
                if npvx < nsx and smx_ok[x][par_p] and pv_held[x] < pvq and (row_n[x][npvx] or c >= p_free[x]):
                    n_iss = row_n[x][npvx] * npass[x]
                    if n_iss:
                        windows.append((c + 1, c + n_iss))
                        done = c + n_iss + DRAIN
                    else:
                        done = c + 1
                    issue_free[x] = c + max(n_iss, 1)
                    p_free[x] = done + 1
                    at(done + 1, []).append((_SET_PDONE, x, 0))
                    at(c + 1, []).append((_CLEAR_OK, x, par_p))
                    npv[x] = npvx + 1
                    fired = True
            if exp_state is None:                       # softmax: the exponent units
                par = sm_row % slots
                if sm_row < nq and sdone[0][par] and sdone[1][par]:
                    nmax = max(row_n[0][sm_row], row_n[1][sm_row])
                    idle_from = c + nmax + EXP_LATENCY if nmax else c + 1
                    at(c + 1, []).append((_CLEAR_SDONE, 0, par))
                    exp_state = (sm_row, max(idle_from, c + 1))
                    sm_row += 1
                    fired = True
            else:                                       # softmax: the divider
                row, idle_from = exp_state
                if c >= idle_from and c > div_busy_until:
                    empty = row_n[0][row] + row_n[1][row] == 0
                    done = c + (2 if empty else div_cycles + 1)
                    div_busy_until = done
                    at(done + 1, []).append((_SET_OK, 0, row % slots))
                    at(c + 1, []).append((_WAKE, 0, 0))
                    exp_state = None
                    fired = True
            if c > ser_until:                           # output
                if pdone[0] and pdone[1]:
                    at(c + 1, []).append((_COMBINED, 0, 0))
                    ser_until = c + wpt
                    last_beat = c + wpt + OUT_STAGES
                    fired = True
                elif cm_row == nq:
                    return c, last_beat, windows
            if fired:
                c += 1
                continue
            # the next cycle at which something may change: every scheduled cycle lies after c
            nxt = min(sched) if sched else None
            for t in (issue_free[0], issue_free[1], s_free[0], s_free[1], p_free[0], p_free[1], rp_ok_from[0],
                      rp_ok_from[1], div_busy_until + 1, ser_until + 1,
                      exp_state[1] if exp_state is not None else c):
                if t > c and (nxt is None or t < nxt):
                    nxt = t
            if nxt is None:
                raise RuntimeError(f"cycle model stuck at cycle {c} (rows {ns}, {npv}, softmax {sm_row}, "
                                   f"out {cm_row})")
            c = nxt


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
                tile.at(c + 1, _COMBINED)
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
                ops = tl.sched.pop(c, None)
                if ops:
                    tl.apply(ops)
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


#: The configuration fields the compute part depends on: all but the decoder's, which change only
#: what the loader streams (``head_beats``, ``replay_cycles``), never the engines' timing.
_COMPUTE_FIELDS = tuple(f.name for f in fields(VitcodConfig) if f.name not in ("decoder", "decoder_heads"))
#: Compute parts already replayed (from cycle 0), by configuration and head shape; see ``_compute``.
_COMPUTE_MEMO: dict = {}
_COMPUTE_MEMO_SIZE = 256


def _compute(cfg: VitcodConfig, s: HeadShape, h: int):
    """Cycles of the compute part of one head whose ``head_on`` is visible from cycle ``h``.

    Returns (c_end, last_output_beat, windows): the cycle in which the head-end condition holds,
    the cycle of the head's last output beat, and each engine job's issue cycles (first, last).

    The replay depends on ``h`` only by a shift (every time in it counts from ``h``; the idle
    markers at -1 lie before any ``h``, which is at least 3), so it is replayed once from cycle 0
    per (configuration, shape) and shifted: a run repeats shapes (the dense baseline's heads are
    all alike) and ``attnforge explore`` sweeps configurations that differ only in the decoder.
    """
    key = (tuple(getattr(cfg, f) for f in _COMPUTE_FIELDS), s.nq, s.nk, s.g, tuple(int(n) for n in s.row_nnz),
           s.balance)
    hit = _COMPUTE_MEMO.get(key)
    if hit is None:
        run = (_TiledHead(cfg, s, 0) if cfg.tiles > 1 else _HeadTimeline(cfg, s, 0)).run()
        hit = (run[0], run[1], tuple(run[2]))
        if len(_COMPUTE_MEMO) >= _COMPUTE_MEMO_SIZE:
            _COMPUTE_MEMO.clear()
        _COMPUTE_MEMO[key] = hit
    c_end, last_beat, windows = hit
    return c_end + h, None if last_beat is None else last_beat + h, [(a + h, b + h) for a, b in windows]


class _Run:
    """The loader and head hand-over of a run, one head at a time (``run_cycles``' loop); ``copy``
    lets ``sent_globals`` try a head's options from the same state."""

    def __init__(self, cfg: VitcodConfig):
        self.cfg = cfg
        self.lb = 0
        self.windows = []
        self.loader_free = 0
        self.bank_free = [0, 0]
        self.head_off = -10
        self.prev_end = 0
        self.out = []

    def copy(self) -> "_Run":
        other = _Run.__new__(_Run)
        other.__dict__.update(self.__dict__)
        other.windows, other.bank_free, other.out = list(self.windows), list(self.bank_free), list(self.out)
        return other

    def add(self, s: HeadShape) -> None:
        cfg = self.cfg
        beats = head_beats(cfg, s)
        a = max(self.loader_free, self.bank_free[self.lb])
        if s.layer:          # the store takes one beat per cycle; no commit cycle
            self.loader_free = a + beats + 1
            return
        beats += replay_cycles(cfg, s)
        if not s.good:
            self.loader_free = a + beats + (1 if s.dropped else 2)
            return
        full_visible = a + beats + 2
        self.loader_free = a + beats + 2
        bank = self.lb
        self.lb ^= 1
        # head_on rises in the cycle after the bank is full and the previous head is off
        h = max(full_visible, self.head_off) + 1
        c_end, last_beat, head_windows = _compute(cfg, s, h)
        self.windows += head_windows
        self.bank_free[bank] = c_end + 1
        self.head_off = c_end + 1
        ideal = ideal_cycles(cfg, s)
        cycles = last_beat - self.prev_end
        self.out.append(dict(s.info, nq=s.nq, nk=s.nk, g=s.g, nnz=s.nnz, cycles=cycles, ideal_cycles=ideal,
                             utilization=ideal / cycles if cycles else 0.0, load_cycles=beats,
                             compute_cycles=last_beat - h + 1, bound_cycles=max(ideal, beats),
                             limited_by="stream" if beats > ideal else "macs"))
        self.prev_end = last_beat


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
    run = _Run(cfg)
    for s in heads:
        run.add(s)
    return {"heads": run.out, "total_cycles": run.prev_end, "mac_active_cycles": _union(run.windows)}


def sent_globals(cfg: VitcodConfig, heads: list) -> list:
    """G' <= G per head: how many of its global columns the host sends as global columns (the
    others as CSR entries of every row, ``balance.globals_as_csr``), chosen with this model.

    Greedy over the run in order: each good head takes the G' whose last output beat comes first
    after the heads before it (with their choices), on the larger G' at a tie (fewer column
    indices on the stream). Layer loads and refused heads keep their G. ``heads`` are the shapes
    with the mask's G (``HeadShape.with_sent_globals`` makes the sent one).
    """
    run = _Run(cfg)
    out = []
    for s in heads:
        if s.layer or not s.good:
            out.append(s.g)
            run.add(s)
            continue
        best = None
        for g2 in range(s.g, -1, -1):
            trial = run.copy()
            trial.add(s.with_sent_globals(g2))
            if best is None or trial.prev_end < best[0]:
                best = (trial.prev_end, g2, trial)
        out.append(best[1])
        run = best[2]
    return out


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
