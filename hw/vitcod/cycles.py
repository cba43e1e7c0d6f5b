"""Cycle model of the ViTCoD accelerator (``hw/vitcod``): RTL cycles from (configuration, masks) in milliseconds.

It replays the accelerator's controller at job granularity, with the exact
latencies of the RTL: the loader (one beat per cycle, a commit cycle, two
banks; with the decoder, layer loads and each head's Q/K replay from the layer
store, two cycles behind its key order), the host's split of each row between the engines
(``hw/vitcod/balance.py``: the Denser Engine's G global keys and its half-row, the Sparser
Engine's half-row), each engine's job sequence (score ``ceil(n/K) * d/(M S)`` issue cycles
with S lines per key and K = L/S keys per step, ``VitcodConfig.score_split``,
and a drain of ``SCORE_DRAIN`` cycles, which the next score job with keys does not wait for
(its beats follow the previous job's, each with its row slot) but one without keys does; pv
``n * ceil((d/M)/L)`` and a drain of ``DRAIN`` cycles, the same way (while the engine holds fewer
than ``pv_queue`` rows' shares for the output); the issue of the next job in the cycle after the
last one), the softmax (exponent units ``n + EXP_LATENCY`` cycles, the divider
``ceil(26 / divider_bits) + 1``), the output's beats (one per cycle, picked from the engines' shares
or the row merger's buffer, which are free after a row's last beat) and its ``OUT_STAGES`` requantizer stages,
the pointer walk that reads each engine's row pointers ``POINTER_LATENCY`` cycles ahead into a
queue of ``POINTER_QUEUE`` rows, and the heads' overlap: the loader fills ``banks`` banks in a ring, a
head is adopted in the cycle after its bank is seen full, every stage goes on from one head's rows
to the next head's (a cycle to move on), the tiles take the rows of all heads in one rotation, and a
head's bank is free again after its last row's last beat goes out. So the replay is of a whole run
(``_Sim``), not of heads one at a time.
Only data-independent timing exists in the RTL, so the model needs the mask
(G and the row lengths), never the values. It assumes, like the benchmark,
that the data source never idles and the output is never stalled.

``tests/rtl/test_vitcod.py`` holds it to the cycle against the RTL (every head of a run back
to back, refused heads and the decoder's layer loads between them) over a sweep of masks and
configurations; ``tests/test_vitcod_cycles.py`` checks it against hand-worked cases.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.config import POINTER_LATENCY, POINTER_QUEUE
from attnforge.hw.vitcod.balance import check_sent_globals, split_rows
from attnforge.hw.vitcod.line import LINE_LATENCY

__all__ = ["HeadShape", "head_beats", "replay_cycles", "head_cycles", "run_cycles", "sent_globals", "ideal_cycles",
           "dense_baseline_shape",
           "DRAIN", "SCORE_DRAIN", "EXP_LATENCY", "OUT_STAGES",
           "DIV_CYCLES"]

#: cycles from a job's last issue to its done pulse (read and operand stages, the lines, the done cycle)
DRAIN = 3 + LINE_LATENCY
#: the same for a score job: one more stage sums the partial scores of a key's S lines
SCORE_DRAIN = DRAIN + 1
#: cycles from an exponent job's last entry to its sum being final (its pipeline: read, difference,
#: product, shift, z, E, and the done pulse); a job of n entries starts the next one n cycles later
EXP_LATENCY = 7
#: registered stages of the output requantizer between a beat's transfer and the output stream
OUT_STAGES = 4
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


# What a scheduled event does (``_Tile.apply``), applied in the order scheduled:
_SET_SDONE = 0      # (x, slot): engine x's score job of that row slot is done
_SET_PDONE = 1      # (x, -): engine x's P.V job is done (one more share for the output)
_CLEAR_OK = 2       # (x, slot): the P.V job took the slot's softmax result; engine x holds one more share
_CLEAR_SDONE = 3    # (-, slot): the exponent units took the slot's scores of both engines
_SET_OK = 4         # (-, slot): the divider's result of the slot is ready for both engines
_COMBINED = 6       # the output took both engines' shares of a row: the next row may go out
_WRAP = 7           # (stage, -): the stage moves on to its next head

# the stages that walk the rows (``RowScheduler``'s ``_Walk``): each engine's score and P.V stage,
# the softmax, the output and each engine's pointer walk (6 + x)
_SCORE, _PV, _SMX, _OUT, _PTR = (0, 1), (2, 3), 4, 5, 6


class _Tile:
    """One row pipeline (``RowScheduler``, its engines and softmax stage) over the rows of every head
    given so far, replayed at job granularity; ``_Sim`` steps it with the others.

    Rows are numbered across heads (the row slot is that number mod ``row_slots``). Each stage is
    in a head (``walk``; -1 before the first); at the end of its head's rows it moves on to the
    next head in the cycle after that head is adopted (``_WRAP``), unless the head ``banks`` after
    its own is adopted too (its own bank's next head: the RTL then takes it for the newest).
    Written for speed (``attnforge explore`` replays every head of every
    configuration it sweeps): parameters are read once, events are small tuples.
    """

    def __init__(self, sim: "_Sim"):
        cfg = sim.cfg
        self.sim = sim
        cpt = cfg.chunks_per_token
        lines = (cfg.dense_lines, cfg.sparse_lines)
        self.npass = [-(-cpt // L) for L in lines]
        split = [cfg.score_split(L) for L in lines]
        self.keys = [L // sp for L, sp in zip(lines, split)]      # keys per score step
        self.spass = [cpt // sp for sp in split]                  # cycles per score step
        self.slots = slots = cfg.row_slots
        self.pv_queue = cfg.pv_queue
        self.div_cycles = cfg.divider_cycles
        self.row_n = ([], [])      # per engine: keys of each row (rows of every head, in order)
        self.head_end = []         # per good head k: the number of this tile's rows of heads 0..k
        self.walk = [-1] * 8       # per stage: the head it is in (score, pv, softmax, output, pointers)
        self.ns, self.npv = [0, 0], [0, 0]
        self.sm_row = 0
        self.cm_row = 0
        self.issue_free = [0, 0]
        self.s_free = [0, 0]
        self.p_free = [0, 0]
        self.np = [0, 0]           # per engine: rows the pointer walk has taken
        self.rp_ready = ([], [])   # per engine and row: the cycle from which it may start (its pointers in)
        self.sdone = [[False] * slots, [False] * slots]
        self.smx_ok = [[False] * slots, [False] * slots]
        self.pdone = [0, 0]        # per engine: finished P.V shares the output has not taken
        self.pv_held = [0, 0]      # per engine: started P.V jobs whose row the output has not taken
        self.exp_rows = []         # rows in the exponent units, in order: (row, cycle its sums are final)
        self.exp_free_at = 0       # cycle from which the exponent units can start a row
        self.div_busy_until = -1   # last cycle of RUN/DONE
        self.sched = {}            # cycle -> [(event, x, slot)] applied at its start

    def add_rows(self, dense, sparse):
        self.row_n[0].extend(dense)
        self.row_n[1].extend(sparse)
        self.head_end.append(len(self.row_n[0]))

    def at(self, c, event, x=0, p=0):
        self.sched.setdefault(c, []).append((event, x, p))

    def apply(self, ops):
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
            elif event == _WRAP:
                self.walk[x] += 1

    def in_head(self, stage, row) -> bool:
        k = self.walk[stage]
        return k >= 0 and row < self.head_end[k]

    def wraps(self, c) -> bool:
        """Stages at the end of their head's rows that move on to the next head (in cycle c + 1)."""
        adopted, walk, head_end = self.sim.adopted, self.walk, self.head_end
        n = len(adopted)
        k = min(walk)      # adoption times rise: if the least stage's next head is not in, none is
        if k + 1 >= n or adopted[k + 1] > c:
            return False
        B = self.sim.cfg.banks
        fired = False
        ns, npv = self.ns, self.npv
        for stage, row in enumerate((ns[0], ns[1], npv[0], npv[1], self.sm_row, self.cm_row, *self.np)):
            k = walk[stage]
            if k >= 0 and row < head_end[k]:
                continue       # in its head
            if k + 1 < n and adopted[k + 1] <= c and not (k + B < n and adopted[k + B] <= c):
                self.at(c + 1, _WRAP, stage)
                fired = True
        return fired

    def pointers(self, c) -> bool:
        """Each engine's pointer walk takes its next row while fewer than ``POINTER_QUEUE`` rows are
        taken and not started (the rows started before cycle c count as started)."""
        fired = False
        for x in (0, 1):
            row = self.np[x]
            if self.in_head(_PTR + x, row) and row - self.ns[x] < POINTER_QUEUE:
                self.rp_ready[x].append(c + POINTER_LATENCY)
                self.np[x] = row + 1
                fired = True
        return fired

    def engines(self, c) -> bool:
        fired = False
        slots, ns, npv, issue_free, row_n = self.slots, self.ns, self.npv, self.issue_free, self.row_n
        windows = self.sim.windows
        for x in (0, 1):
            if c < issue_free[x]:      # both kinds of job wait for the engine's issue
                continue
            nsx, npvx = ns[x], npv[x]
            par_s = nsx % slots
            if (self.in_head(x, nsx) and nsx - npvx < slots and (row_n[x][nsx] or c >= self.s_free[x])
                    and not self.sdone[x][par_s] and nsx < self.np[x] and self.rp_ready[x][nsx] <= c):
                n_iss = -(-row_n[x][nsx] // self.keys[x]) * self.spass[x]
                if n_iss:      # a job started in cycle c issues in cycles c+1 .. c+n_iss
                    windows.append((c + 1, c + n_iss))
                    self.sim.engine_issue[x] += n_iss
                    done = c + n_iss + SCORE_DRAIN
                else:
                    done = c + 1
                issue_free[x] = c + max(n_iss, 1)
                self.s_free[x] = done + 1
                self.at(done + 1, _SET_SDONE, x, par_s)
                ns[x] = nsx + 1
                fired = True
                continue
            par_p = npvx % slots
            if (self.in_head(2 + x, npvx) and npvx < nsx and self.smx_ok[x][par_p] and self.pv_held[x] < self.pv_queue
                    and (row_n[x][npvx] or c >= self.p_free[x])):
                n_iss = row_n[x][npvx] * self.npass[x]
                if n_iss:
                    windows.append((c + 1, c + n_iss))
                    self.sim.engine_issue[x] += n_iss
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
        """The exponent units (up to two rows in them: a row starts when both units issue their last
        entry of the row before and fewer than two rows wait for the divider), then the divider, one
        row at a time in order once both units' sums of it are final."""
        fired = False
        slots, pending = self.slots, self.exp_rows
        waiting = len(pending)                    # as the RTL's counter holds it in cycle c
        if pending and c >= pending[0][1] and c > self.div_busy_until:
            row = pending.pop(0)[0]
            empty = self.row_n[0][row] + self.row_n[1][row] == 0
            done = c + (2 if empty else self.div_cycles + 1)
            self.div_busy_until = done
            self.at(done + 1, _SET_OK, 0, row % slots)
            fired = True
        row = self.sm_row
        par = row % slots
        if (waiting < 2 and c >= self.exp_free_at and self.in_head(_SMX, row)
                and self.sdone[0][par] and self.sdone[1][par]):
            issued = max(self.row_n[0][row], self.row_n[1][row], 1)     # a row without scores: one ghost entry
            self.at(c + 1, _CLEAR_SDONE, 0, par)
            pending.append((row, c + issued + EXP_LATENCY))
            self.exp_free_at = c + issued
            self.sm_row = row + 1
            fired = True
        return fired

    def row_ready(self) -> bool:
        """The tile offers a finished row (both engines' shares) to the output (one tile) or the merger."""
        return self.pdone[0] > 0 and self.pdone[1] > 0 and self.in_head(_OUT, self.cm_row)

    def wakes(self, c) -> list:
        """Cycles after c at which something may change in this tile."""
        ready = [self.rp_ready[x][self.ns[x]] for x in (0, 1) if self.ns[x] < self.np[x]]
        wake = [t for t in (*self.sched, *self.issue_free, *self.s_free, *self.p_free, *ready,
                            self.div_busy_until + 1) if t > c]
        wake += [t for t in (self.exp_free_at, *(final for _, final in self.exp_rows)) if t > c]
        return wake


class _Sim:
    """The accelerator over a run of heads: the loader (one command at a time, two banks), the
    tiles' row pipelines over every adopted head, the row merger (tiles > 1) and the
    output beats. Heads are given in run order (``add``); nothing before a head's load depends on it,
    so the replay runs up to that load before the head is needed, and ``copy`` lets
    ``sent_globals`` try a head's options from there."""

    def __init__(self, cfg: VitcodConfig):
        self.cfg = cfg
        self.c = 0
        self.tiles = [_Tile(self) for _ in range(cfg.tiles)]
        self.adopted = []          # per good head: the cycle from which the scheduler has adopted it
        self.heads = []            # per good head: what the report needs
        self.row_end = []          # per good head: rows of heads 0..k (the merger's numbering)
        self.lb = 0                # the bank the loader fills next (the banks in a ring)
        self.loader_free = 0
        self.bank_free = [0] * cfg.banks   # cycle from which a bank may load again; None while its head runs
        self.off = 0               # the tile of the next good head's row 0
        self.out_row = 0           # rows whose beats have started
        self.turn = 0              # (tiles) the merger's tile
        self.held = [0] * cfg.tiles   # (tiles) rows in the merger's buffer of each tile
        self.ser_until = -1        # the cycle of the last beat of the row going out (or gone)
        self.released = 0          # good heads whose last row has gone out
        self.windows = []
        self.engine_issue = [0, 0]   # issue cycles per engine kind (Denser, Sparser), every tile

    def copy(self) -> "_Sim":
        return copy.deepcopy(self)

    # -- the loader ------------------------------------------------------------------------
    def wait_for_loader(self) -> None:
        """Replay until the bank of the next command is free (its load's start is known)."""
        while self.bank_free[self.lb] is None:
            self.step()

    def add(self, s: HeadShape) -> None:
        cfg = self.cfg
        self.wait_for_loader()
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
        self.bank_free[bank] = None
        self.lb = (bank + 1) % cfg.banks
        adopted = full_visible + 1    # adopted (by every tile) in the cycle after the bank is seen full
        self.adopted.append(adopted)
        self.row_end.append((self.row_end[-1] if self.row_end else 0) + s.nq)
        self.heads.append(dict(shape=s, adopted=adopted, beats=beats, bank=bank, last_beat=None))
        T = cfg.tiles
        row_nnz = [int(n) for n in s.row_nnz]
        moved = _split_rows(cfg, s.g, row_nnz, s.balance)
        for t, tile in enumerate(self.tiles):
            rows = range((t - self.off) % T, s.nq, T)     # row i of this head is on tile (i + off) mod T
            tile.add_rows([s.g + moved[i] for i in rows], [row_nnz[i] - moved[i] for i in rows])
        self.off = (self.off + s.nq) % T

    # -- the replay ------------------------------------------------------------------------
    def output(self, c) -> bool:
        """The output beats (one tile: from both engines' shares; tiles: from the merger's buffer):
        True when a row moved. A row's ``words_per_token`` beats go in the cycles c .. e = c + wpt - 1,
        one per cycle; its source (the engines' shares, the merger's slot) is free from e + 1."""
        cfg = self.cfg
        if cfg.tiles == 1:
            tile = self.tiles[0]
            if c > self.ser_until and tile.row_ready():
                tile.at(c + cfg.words_per_token, _COMBINED)
                self._serialize(c)
                return True
            return False
        depth = cfg.merge_depth
        fired = False
        if c > self.ser_until and self.held[self.turn] > 0:
            self._serialize(c)
            fired = True
        # the merger's slot is taken with its row's last beat (the cycle replays each cycle once)
        take = c == self.ser_until
        loads = []
        for t, tile in enumerate(self.tiles):
            if tile.row_ready() and (self.held[t] < depth or (take and t == self.turn)):
                tile.at(c + 1, _COMBINED)
                loads.append(t)
        if take:
            self.held[self.turn] -= 1
            self.turn = (self.turn + 1) % cfg.tiles
        for t in loads:
            self.held[t] += 1
        return bool(fired or take or loads)

    def _serialize(self, c) -> None:
        """A row's first beat goes out in cycle c, its last in e = c + wpt - 1; a head's last row
        releases its bank with its last beat."""
        e = c + self.cfg.words_per_token - 1
        self.ser_until = e
        self.out_row += 1
        k = self.released
        if self.out_row == self.row_end[k]:
            head = self.heads[k]
            head["last_beat"] = e + OUT_STAGES
            self.bank_free[head["bank"]] = e + 1
            self.released = k + 1

    def step(self) -> None:
        """One cycle (or up to the next cycle in which something may change)."""
        c = self.c
        fired = False
        for tile in self.tiles:
            ops = tile.sched.pop(c, None)
            if ops:
                tile.apply(ops)
        for tile in self.tiles:
            fired = tile.wraps(c) or fired
            fired = tile.pointers(c) or fired
            fired = tile.engines(c) or fired
            fired = tile.softmax(c) or fired
        fired = self.output(c) or fired
        if fired:
            self.c = c + 1
            return
        wake = [t for tile in self.tiles for t in tile.wakes(c)]
        wake += [t for t in (self.ser_until, self.ser_until + 1, *self.adopted) if t > c]
        if not wake:
            raise RuntimeError(f"cycle model stuck at cycle {c} (rows out {self.out_row} of "
                               f"{self.row_end[-1] if self.row_end else 0})")
        self.c = min(wake)

    def finish(self, heads: int | None = None) -> None:
        """Replay until the first ``heads`` good heads (all given ones by default) are out."""
        heads = len(self.heads) if heads is None else heads
        while self.released < heads:
            self.step()

    def report(self) -> dict:
        cfg = self.cfg
        out, prev_end = [], 0
        for head in self.heads:
            s, last_beat, beats = head["shape"], head["last_beat"], head["beats"]
            ideal = ideal_cycles(cfg, s)
            cycles = last_beat - prev_end
            out.append(dict(s.info, nq=s.nq, nk=s.nk, g=s.g, nnz=s.nnz, cycles=cycles, ideal_cycles=ideal,
                            utilization=ideal / cycles if cycles else 0.0, load_cycles=beats,
                            compute_cycles=last_beat - head["adopted"] + 1, bound_cycles=max(ideal, beats),
                            limited_by="stream" if beats > ideal else "macs"))
            prev_end = last_beat
        return {"heads": out, "total_cycles": prev_end, "mac_active_cycles": _union(self.windows),
                "engine_issue_cycles": list(self.engine_issue)}


def run_cycles(cfg: VitcodConfig, heads: list) -> dict:
    """Cycles of a run of heads back to back, counted from the first command transfer.

    Returns ``total_cycles`` (to the last output beat) and per good head its
    ``cycles`` (from the previous good head's last output beat, or from the first
    command for the first), ``ideal_cycles`` (its MACs over all MACs) and ``utilization``;
    ``load_cycles`` (its data-stream beats, one per cycle, with the decoder's Q/K replay),
    ``compute_cycles`` (from the cycle the scheduler has adopted it, once its bank is full, to its
    last output beat; heads overlap: its rows follow the previous head's through every stage),
    ``bound_cycles`` = max(ideal, load) and ``limited_by``:
    ``"stream"`` when loading the head takes longer than its ideal compute, else ``"macs"``;
    ``mac_active_cycles``: the cycles in which the Denser or the Sparser Engine issues to its
    MAC lines (the AXI wrapper's MAC_ACTIVE counter); ``engine_issue_cycles``: each engine's issue
    cycles (Denser, Sparser; summed over tiles). MAC_ACTIVE is their union, so it depends on how
    the two engines' work overlaps, which output backpressure moves (over the board's UART it
    differs from this full-rate figure); each engine's own count does not, and with one tile
    ``max(engine_issue_cycles) <= MAC_ACTIVE <= sum(engine_issue_cycles)`` at any rate.
    """
    sim = _Sim(cfg)
    for s in heads:
        sim.add(s)
    sim.finish()
    return sim.report()


def sent_globals(cfg: VitcodConfig, heads: list) -> list:
    """G' <= G per head: how many of its global columns the host sends as global columns (the
    others as CSR entries of every row, ``balance.globals_as_csr``), chosen with this model.

    Greedy over the run in order: each good head takes the G' whose last output beat comes first
    after the heads before it (with their choices; the replay from its load on, the heads after it
    not yet given), on the larger G' at a tie (fewer column indices on the stream). Layer loads and
    refused heads keep their G. ``heads`` are the shapes with the mask's G
    (``HeadShape.with_sent_globals`` makes the sent one).
    """
    sim = _Sim(cfg)
    out = []
    for s in heads:
        if s.layer or not s.good:
            out.append(s.g)
            sim.add(s)
            continue
        sim.wait_for_loader()
        best = None
        for g2 in range(s.g, -1, -1):
            trial = sim.copy()
            trial.add(s.with_sent_globals(g2))
            trial.finish()
            end = trial.heads[-1]["last_beat"]
            if best is None or end < best[0]:
                best = (end, g2)
        out.append(best[1])
        sim.add(s.with_sent_globals(best[1]))
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
