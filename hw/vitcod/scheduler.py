"""The row scheduler of the ViTCoD accelerator: which job each engine runs next.

Each engine runs its own job sequence, scoring up to ``row_slots - 1`` rows
ahead of its pv jobs (score first when both could start): ``score(0) score(1)
score(2) pv(0) score(3) pv(1) ...``, a job's issue starting in the cycle after
the previous job's last issue (a job with keys does not wait for the previous job's
drain; each engine holds up to ``pv_queue`` rows' pv shares for the output). The engines meet
only where a row needs both: its softmax (both score jobs done) and its output row (both pv
jobs done).

**Heads overlap.** The scheduler adopts the heads of full banks in load order
(the banks in a ring, ``banks`` of them) and copies each one's descriptor. Each
stage (each engine's score and pv stage, the softmax, the output) walks the rows
of the adopted heads in order: its own bank, local row and row slot (slots count
rows across heads). At the end of its head's rows a stage moves on to the next
head's row 0 as soon as that head is adopted, so the next head's rows follow the
previous head's through every stage without a drain between heads. A head is
released (its bank may load again) when its last row goes to the output stage.

Each engine's row pointers are read ahead of its score stage by a walk of their
own (``_pointer_queue``): a row's keys and CSR base wait in a ring of
``POINTER_QUEUE`` rows, so a job start depends on registers only, and the next
score and pv job are offered to the engine in every cycle (it loads them while
free; a start only sets its issuing flag).

With ``tiles`` T > 1 there is one scheduler per tile t, all adopting the same
heads. The rows of all heads are dealt to the tiles in one rotation: a head's
row i is on tile ``(i + off) mod T``, ``off`` the rows of the heads before it mod
T (the loader's count, in the head's descriptor), so no tile gets the extra row
of every head. Tile t runs the query rows ``first + T r`` (local row r, ``first
= (t - off) mod T``) on its engines and softmax and reads their pointers from
its narrow row pointer memories (local row r; the Sparser Engine's end pointer
``ptr[2i + 2]`` is row i + 1's start, in tile t + 1's memory, at local row r + 1
when ``first == T - 1``). The row merger puts the rows back in order and tells
every tile (``released``) when a head's last row has left.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from attnforge.hw.common import ConfiguredComponent, log2_ceil, mux_tree

from .config import INDEX_WIDTH, POINTER_QUEUE, VitcodConfig
from .output import output_beat_layout, output_row_layout, pick_beat, row_beats
from .signatures import EngineJobSignature, HeadBanksSignature, head_layout
from .softmax import recip_layout, softmax_row_layout

__all__ = ["RowScheduler"]


def _set_at(m, registers, index, value):
    """``registers[index] <= value`` (sync)."""
    for i, reg in enumerate(registers):
        with m.If(index == i):
            m.d.sync += reg.eq(value)


class RowScheduler(ConfiguredComponent):
    """Heads of the full banks, row by row, through both engines, the softmax and the output.

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    banks : ``In(HeadBanksSignature(config))``
        Full banks and their heads from the loader; the scheduler releases the oldest head's
        bank when its last row has gone out.
    tile : int
        (``tiles > 1``) The tile t whose rows (a head's row i when ``(i + off) mod tiles == t``) this
        scheduler runs.
    row_ptr : ``In(ReadPort.Signature(rp_addr_width, data_width)).array(4)``
        The row pointer buffer (two half-rows per query row, ``hw/vitcod/balance.py``):
        ``ptr[2i]``, ``ptr[2i + 1]`` of the Denser Engine's next score row i, then
        ``ptr[2j + 1]``, ``ptr[2j + 2]`` of the Sparser Engine's next score row j. With
        ``tiles > 1`` ports of ``tile_rp_width`` bits on the tiles' row pointer memories, in the
        same order: this tile's starts, its split points (twice), the next tile's starts.
    released : ``In(1)``
        (``tiles > 1``) The row merger hands the oldest head's last row to the output stage: the
        head is done (the scheduler of tile 0 releases its bank; every tile forgets it).
    dense, sparse : ``Out(EngineJobSignature(config))``
        Score and pv jobs of the Denser and the Sparser Engine.
    softmax_rows : ``Out(stream.Signature(softmax_row_layout(config)))``
        Rows whose scores are in (both engines), in row order.
    recips : ``In(stream.Signature(recip_layout(config), always_ready=True))``
        Their reciprocals back: the row's pv jobs may start.
    rows : ``Out(stream.Signature(output_beat_layout(config)))`` (one tile) or ``Out(stream.Signature(output_row_layout(config)))`` (tiles)
        Finished rows (both engines' shares summed) with the output requantizer. With one tile a
        row goes out one beat per transfer, each beat's lanes picked from both engines' shares and
        added here (no whole-row sum or register anywhere: issue 15); the engines' shares are
        taken with the row's last beat. With tiles a whole row per transfer, to the row merger.
    busy : ``Out(1)``
        A head has been adopted and is not yet out.
    """

    config_type = VitcodConfig

    def __init__(self, config, tile: int = 0):
        tiles = config.tiles if isinstance(config, VitcodConfig) else 1
        if not isinstance(tile, int) or not 0 <= tile < tiles:
            raise ValueError(f"RowScheduler tile={tile!r}: expected an int in [0, {tiles})")
        self._tile = tile
        super().__init__(config)

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        if config.tiles == 1:
            index_word = ReadPort.Signature(addr_width=config.rp_addr_width, shape=config.data_width)
        else:
            index_word = ReadPort.Signature(addr_width=config.tile_rp_addr_width, shape=config.tile_rp_width)
        tiled = {"released": In(1)} if config.tiles > 1 else {}
        return {
            **tiled,
            "banks": In(HeadBanksSignature(config)),
            "row_ptr": In(index_word).array(4),
            "dense": Out(EngineJobSignature(config)),
            "sparse": Out(EngineJobSignature(config)),
            "softmax_rows": Out(stream.Signature(softmax_row_layout(config))),
            "recips": In(stream.Signature(recip_layout(config), always_ready=True)),
            "rows": Out(stream.Signature(output_beat_layout(config) if config.tiles == 1
                                         else output_row_layout(config))),
            "busy": Out(1),
        }

    def elaborate(self, platform):
        m = Module()
        st = self._state(m)
        # the output takes a row (its last beat, with one tile): the engines' shares go, the
        # output walk moves on (``_output``)
        st.row_taken = Signal(name="row_taken")
        self._row_pointers(m, st)
        for x, job in enumerate((self.dense, self.sparse)):
            self._engine_jobs(m, st, x, job)
        self._softmax(m, st)
        self._output(m, st)
        self._heads(m, st)
        for x in range(2):
            self._slot_lookahead(m, st, x)
        return m

    def _state(self, m):
        cfg = self._config
        slots = cfg.row_slots
        row_w = INDEX_WIDTH + 1     # row counters reach Nq
        slot_bits = log2_ceil(slots)
        B = cfg.banks
        st = SimpleNamespace(
            # the heads of the banks, copied when adopted (in load order: the banks in a ring)
            heads=[Signal(head_layout(cfg), name=f"head{b}") for b in range(B)],
            adopted=[Signal(name=f"adopted{b}") for b in range(B)],
            # bank of the head adopted last (the next: the one after); of the oldest (released first)
            newest=Signal(cfg.bank_bits, init=B - 1, name="newest"),
            oldest=Signal(cfg.bank_bits, name="oldest"),
            # rows of this tile in each bank's head; (tiles > 1) its first query row there
            nq_local=[Signal(row_w, name=f"nq_local{b}") for b in range(B)],
            first=[Signal(range(max(cfg.tiles, 2)), name=f"first{b}") for b in range(B)],
            slot_bits=slot_bits,
            # per engine: rows whose score job has started and whose pv job has not (at most row_slots)
            inflight=[Signal(range(slots + 1), name=f"inflight{x}") for x in range(2)],
            # per engine and row slot: scores in / the row's max / reciprocal in (pv may start)
            scored=[[Signal(name=f"scored{x}_{p}") for p in range(slots)] for x in range(2)],
            row_max=[[Signal(signed(cfg.score_width), name=f"row_max{x}_{p}") for p in range(slots)]
                     for x in range(2)],
            recip_ready=[[Signal(name=f"recip_ready{x}_{p}") for p in range(slots)] for x in range(2)],
            # per engine: rows whose pv share is in / whose pv job has started, not yet taken by the
            # output stage (at most ``pv_queue``: the engine's shares)
            pv_finished=[Signal(range(cfg.pv_queue + 1), name=f"pv_finished{x}") for x in range(2)],
            pv_held=[Signal(range(cfg.pv_queue + 1), name=f"pv_held{x}") for x in range(2)],
            # per engine and row slot: the row's keys and the CSR entry of its key G (Denser Engine:
            # G global keys, then its half-row) or key 0 (Sparser Engine); per slot its reciprocal
            row_n=[[Signal(INDEX_WIDTH, name=f"row_n{x}_{p}") for p in range(slots)] for x in range(2)],
            row_base=[[Signal(INDEX_WIDTH, name=f"row_base{x}_{p}") for p in range(slots)] for x in range(2)],
            # ... and flags of its keys: n != 0, n == 1 (the pv start decision's, ``_slot_lookahead``)
            row_nonzero=[[Signal(name=f"row_nonzero{x}_{p}") for p in range(slots)] for x in range(2)],
            row_single=[[Signal(name=f"row_single{x}_{p}") for p in range(slots)] for x in range(2)],
            recip=[Signal(cfg.recip_width, name=f"recip{p}") for p in range(slots)],
            # per engine, the pointer queue's oldest row (``_pointer_queue``)
            queue_ready=[None, None], queue_n=[None, None], queue_base=[None, None], queue_nonzero=[None, None],
            queue_pop=[None, None],
            # per engine, the flags of the score and pv stages' current slots, registered a cycle
            # ahead (``_slot_lookahead``): scored[score slot], recip_ready[pv slot], row_n[pv slot]
            # != 0 and == 1
            slot_scored=[Signal(name=f"slot_scored{x}") for x in range(2)],
            slot_ready=[Signal(name=f"slot_ready{x}") for x in range(2)],
            slot_nonzero=[Signal(name=f"slot_nonzero{x}") for x in range(2)],
            slot_single=[Signal(name=f"slot_single{x}") for x in range(2)],
            starts=[None, None], started=[None, None], score_done=[None, None], smx_taken=None,
        )
        # where each stage is in the stream of rows: the score and pv stages of each engine, the
        # softmax and the output (each its own bank, row and row slot)
        st.score = [_Walk(m, st, f"score{x}") for x in range(2)]
        # per engine, the walk that reads the row pointers ahead of its score stage (``_pointer_queue``)
        st.ptr = [_Walk(m, st, f"pointer{x}") for x in range(2)]
        st.pv = [_Walk(m, st, f"pv{x}") for x in range(2)]
        st.smx = _Walk(m, st, "softmax")
        st.out = _Walk(m, st, "output")
        return st

    def _global_row(self, st, walk):
        """The query row of the stage's local row (in its bank's head)."""
        T = self._config.tiles
        return walk.row if T == 1 else mux_tree(st.first, walk.bank) + walk.row * T

    def _row_pointers(self, m, st):
        """Per engine, the two pointers of its half-row of the pointer walk's row (read a cycle after
        the address): ``ptr[2i + x]`` and ``ptr[2i + x + 1]`` for engine x (0: Denser, 1: Sparser);
        then the pointer queue of each engine (``_pointer_queue``)."""
        cfg = self._config
        if cfg.tiles > 1:
            return self._tile_row_pointers(m, st)
        lg_ipw = log2_ceil(cfg.indices_per_word)
        lane_bits = max(lg_ipw, 1)
        for x in range(2):
            walk = st.ptr[x]
            row = walk.row
            pointers = []
            for k in range(2):
                port, lane = self.row_ptr[2 * x + k], Signal(lane_bits, name=f"pointer_lane{x}_{k}")
                entry = Signal(row.shape().width + 2, name=f"pointer_entry{x}_{k}")
                m.d.comb += [entry.eq(row * 2 + (x + k)),
                             port.addr.eq(Cat((entry >> lg_ipw)[:cfg.rp_addr_width - cfg.bank_bits], walk.bank))]
                m.d.sync += lane.eq(entry[:lane_bits])
                pointers.append(port.data.word_select(lane, INDEX_WIDTH) if lg_ipw else port.data[:INDEX_WIDTH])
            self._pointer_queue(m, st, x, *pointers)

    def _tile_row_pointers(self, m, st):
        """(tiles > 1) The same from the tiles' row pointer memories, at local rows: the Denser
        Engine's start and split point of its row r, the Sparser Engine's split point of its row r
        and the start of the next query row (the next tile's local row r, or r + 1 when this tile
        holds the last query row of a group of T, ``first == T - 1``)."""
        cfg = self._config
        T = cfg.tiles
        lg_w = log2_ceil(cfg.tile_rp_words_per_entry)
        for x in range(2):
            walk = st.ptr[x]
            row = walk.row
            pointers = []
            for k in range(2):
                port = self.row_ptr[2 * x + k]
                entry = Signal(row.shape().width + 1, name=f"pointer_entry{x}_{k}")
                wrap = (mux_tree(st.first, walk.bank) == T - 1) if (x, k) == (1, 1) else 0
                m.d.comb += [entry.eq(row + wrap),
                             port.addr.eq(Cat((entry >> lg_w)[:cfg.tile_rp_addr_width - cfg.bank_bits], walk.bank))]
                if lg_w:
                    lane = Signal(lg_w, name=f"pointer_lane{x}_{k}")
                    m.d.sync += lane.eq(entry[:lg_w])
                    pointers.append(port.data.word_select(lane, INDEX_WIDTH))
                else:
                    pointers.append(port.data[:INDEX_WIDTH])
            self._pointer_queue(m, st, x, *pointers)

    def _pointer_queue(self, m, st, x, start, end):
        """Engine x's next score rows, ready to start: their keys ``n`` and CSR base, in a queue that
        the pointer walk fills ahead of the score stage.

        The pointer walk takes a row (cycle t) while the queue and the reads in flight hold fewer
        than ``POINTER_QUEUE`` rows; its pointers arrive from the memory (t + 1) into registers, ``n``
        and the base are computed from those (t + 2) into the queue: a row is ready to start in cycle
        t + ``POINTER_LATENCY``. So no memory read or adder sits in front of the job start (the
        longest path before, issue 15), and a score stage that takes a row per cycle finds the next
        one ready."""
        walk, Q = st.ptr[x], POINTER_QUEUE
        held = Signal(range(Q + 1), name=f"pointer_held{x}")     # rows taken by the walk, not yet started
        take = Signal(name=f"pointer_take{x}")
        pop = Signal(name=f"pointer_pop{x}")
        m.d.comb += take.eq(walk.in_head & (held != Q))
        walk.step(m, take)
        # t + 1: the pointers arrive; (Denser Engine) the head's G beside them
        prefix1 = Signal(INDEX_WIDTH, name=f"pointer_prefix{x}_1")
        valid1 = Signal(name=f"pointer_valid{x}_1")
        m.d.sync += [valid1.eq(take), prefix1.eq(mux_tree([h.g for h in st.heads], walk.bank) if x == 0 else 0)]
        # t + 2: the pointers registered
        start2, end2 = Signal(INDEX_WIDTH, name=f"row_start{x}"), Signal(INDEX_WIDTH, name=f"row_end{x}")
        prefix2, valid2 = Signal(INDEX_WIDTH, name=f"pointer_prefix{x}_2"), Signal(name=f"pointer_valid{x}_2")
        m.d.sync += [start2.eq(start), end2.eq(end), prefix2.eq(prefix1), valid2.eq(valid1)]
        # the queue, a ring of Q entries (written at ``wr``, the oldest at ``rd``): a pop moves ``rd``
        # only, so the start decision drives a few flip-flops, not the enables of every entry
        n = [Signal(INDEX_WIDTH, name=f"queued_n{x}_{k}") for k in range(Q)]
        base = [Signal(INDEX_WIDTH, name=f"queued_base{x}_{k}") for k in range(Q)]
        nonzero = [Signal(name=f"queued_nonzero{x}_{k}") for k in range(Q)]
        count = Signal(range(Q + 1), name=f"queued{x}")
        wr, rd = Signal(range(Q), name=f"queue_wr{x}"), Signal(range(Q), name=f"queue_rd{x}")
        new_n = Signal(INDEX_WIDTH, name=f"pointer_n{x}")
        m.d.comb += new_n.eq(prefix2 + end2 - start2)
        with m.If(valid2):
            for k in range(Q):
                with m.If(wr == k):
                    m.d.sync += [n[k].eq(new_n), base[k].eq(start2 - prefix2), nonzero[k].eq(new_n != 0)]
            m.d.sync += wr.eq(wr + 1)          # Q is a power of two: the ring wraps by itself
        with m.If(pop):
            m.d.sync += rd.eq(rd + 1)
        m.d.sync += [count.eq(count + valid2 - pop), held.eq(held + take - pop)]
        # the oldest row's nonzero flag, a register holding next cycle's (the start decision reads it;
        # the pop, a start, enters last)
        head_nonzero = Signal(name=f"queue_head_nonzero{x}")

        def nonzero_at(k):
            return Mux(valid2 & (wr == k), new_n != 0, mux_tree(nonzero, k))
        with m.If(pop):     # (``If``: see ``_slot_lookahead``)
            m.d.sync += head_nonzero.eq(nonzero_at((rd + 1)[:len(rd)]))
        with m.Else():
            m.d.sync += head_nonzero.eq(nonzero_at(rd))
        st.queue_ready[x], st.queue_n[x], st.queue_base[x] = count != 0, mux_tree(n, rd), mux_tree(base, rd)
        st.queue_nonzero[x], st.queue_pop[x] = head_nonzero, pop

    def _engine_jobs(self, m, st, x, job):
        """Start engine x's next score or pv job; record its results."""
        slots = self._config.row_slots
        sw, pw = st.score[x], st.pv[x]
        score_slot, pv_slot = sw.slot, pw.slot
        # the row's keys: (Denser Engine) the G global keys, then the half-row's CSR entries; the
        # engine finds key j >= prefix at CSR entry base + j
        score_prefix = mux_tree([h.g for h in st.heads], sw.bank) if x == 0 else 0
        pv_prefix = mux_tree([h.g for h in st.heads], pw.bank) if x == 0 else 0
        # the row's keys and CSR base, from the pointer queue (computed ahead, in registers)
        n_score, base_score = st.queue_n[x], st.queue_base[x]
        # a score job with keys may issue right behind the previous one (its beats carry their slot);
        # one without keys waits until no score job is in flight (its done pulse comes at once)
        # (the slot flags from registers, ``_slot_lookahead``: no multiplexer on the slot in front of
        # the start)
        can_score = (sw.in_head & (st.inflight[x] != slots) & job.issue_free
                     & (~job.score_active | st.queue_nonzero[x]) & ~st.slot_scored[x]
                     & st.queue_ready[x])
        # a pv job with keys may issue right behind the previous one (plan step 2, P.V side) while
        # the engine has room for its share; one without keys waits until no pv beats are in flight
        n_pv = Signal(INDEX_WIDTH, name=f"n_pv{x}")
        m.d.comb += n_pv.eq(mux_tree(st.row_n[x], pv_slot))
        can_pv = (pw.in_head & (st.inflight[x] != 0) & st.slot_ready[x]
                  & (st.pv_held[x] != self._config.pv_queue) & job.issue_free
                  & (~job.pv_active | st.slot_nonzero[x]))
        start_score, start_pv = Signal(name=f"start_score{x}"), Signal(name=f"start_pv{x}")
        # the next score and pv jobs are offered in every cycle, apart (no multiplexer on the start)
        m.d.comb += [start_score.eq(can_score), start_pv.eq(can_pv & ~can_score),
                     job.score_start.eq(start_score), job.pv_start.eq(start_pv),
                     job.score.bank.eq(sw.bank), job.score.row.eq(self._global_row(st, sw)),
                     job.score.n.eq(n_score), job.score.nonzero.eq(st.queue_nonzero[x]),
                     job.score.prefix.eq(score_prefix), job.score.base.eq(base_score), job.score.slot.eq(score_slot),
                     job.pv.bank.eq(pw.bank), job.pv.n.eq(n_pv), job.pv.nonzero.eq(st.slot_nonzero[x]),
                     job.pv.single.eq(st.slot_single[x]),
                     job.pv.prefix.eq(pv_prefix), job.pv.base.eq(mux_tree(st.row_base[x], pv_slot)),
                     job.pv.slot.eq(pv_slot), job.pv.recip.eq(mux_tree(st.recip, pv_slot))]
        m.d.comb += st.queue_pop[x].eq(start_score)
        sw.step(m, start_score)
        pw.step(m, start_pv)
        m.d.sync += st.inflight[x].eq(st.inflight[x] + start_score - start_pv)
        # the started row's keys and base go to its slot a cycle later, from registers (read at the
        # earliest two cycles after the start: the softmax after a score job without keys)
        started, started_slot = Signal(name=f"score_started{x}"), Signal.like(score_slot, name=f"started_slot{x}")
        started_n = Signal.like(n_score, name=f"started_n{x}")
        started_base = Signal.like(base_score, name=f"started_base{x}")
        started_nonzero, started_single = Signal(name=f"started_nonzero{x}"), Signal(name=f"started_single{x}")
        m.d.sync += [started.eq(start_score), started_slot.eq(score_slot), started_n.eq(n_score),
                     started_base.eq(base_score), started_nonzero.eq(st.queue_nonzero[x]),
                     started_single.eq(n_score == 1)]
        st.starts[x], st.started[x] = (start_score, start_pv), (started, started_slot, started_nonzero, started_single)
        st.score_done[x] = (job.score_done, job.done_slot)
        with m.If(started):
            _set_at(m, st.row_n[x], started_slot, started_n)
            _set_at(m, st.row_base[x], started_slot, started_base)
            _set_at(m, st.row_nonzero[x], started_slot, started_nonzero)
            _set_at(m, st.row_single[x], started_slot, started_single)
        take = st.row_taken       # the output takes a row of both engines
        m.d.comb += job.pv_take.eq(take)
        m.d.sync += [st.pv_held[x].eq(st.pv_held[x] + start_pv - take),
                     st.pv_finished[x].eq(st.pv_finished[x] + job.pv_done - take)]
        with m.If(start_pv):
            _set_at(m, st.recip_ready[x], pv_slot, 0)
        with m.If(job.score_done):
            _set_at(m, st.scored[x], job.done_slot, 1)
            _set_at(m, st.row_max[x], job.done_slot, job.max)

    def _softmax(self, m, st):
        """Rows to the softmax stage; their reciprocals back."""
        walk = st.smx
        head, slot = _head_of(walk.bank, st.heads), walk.slot
        dense_n, sparse_n = mux_tree(st.row_n[0], slot), mux_tree(st.row_n[1], slot)
        dense_max, sparse_max = mux_tree(st.row_max[0], slot), mux_tree(st.row_max[1], slot)
        out = self.softmax_rows
        # both engines' scored flags of the stage's slot, registers a cycle ahead (``_slot_lookahead``)
        ready = [Signal(name=f"softmax_scored{x}") for x in range(2)]
        m.d.comb += [
            out.valid.eq(walk.in_head & ready[0] & ready[1]),
            out.payload.slot.eq(slot), out.payload.dense_n.eq(dense_n), out.payload.sparse_n.eq(sparse_n),
            out.payload.max.eq(Mux(dense_n == 0, sparse_max,
                                   Mux((sparse_n == 0) | (dense_max > sparse_max), dense_max, sparse_max))),
            out.payload.multiplier.eq(head.exp_mult), out.payload.shift.eq(head.exp_shift)]
        taken = out.valid & out.ready
        st.smx_taken = taken
        after = (slot + 1)[:len(slot)]
        for x in range(2):
            done, done_slot = st.score_done[x]

            def scored_next(at, flag=ready[x], x=x, done=done, done_slot=done_slot):
                with m.If(done & (done_slot == at)):
                    m.d.sync += flag.eq(1)
                with m.Else():
                    m.d.sync += flag.eq(mux_tree(st.scored[x], at))
            with m.If(taken):       # the stage moves on; (one slot) its clear wins over a done
                if self._config.row_slots == 1:
                    m.d.sync += ready[x].eq(0)
                else:
                    scored_next(after)
            with m.Else():
                scored_next(slot)
        walk.step(m, taken)
        with m.If(taken):
            # clear only this row's flags: the other slots may be set in this very cycle
            _set_at(m, st.scored[0], slot, 0)
            _set_at(m, st.scored[1], slot, 0)
        with m.If(self.recips.valid):
            slot = self.recips.payload.slot
            _set_at(m, st.recip, slot, self.recips.payload.recip)
            _set_at(m, st.recip_ready[0], slot, 1)
            _set_at(m, st.recip_ready[1], slot, 1)

    def _slot_lookahead(self, m, st, x):
        """Engine x's flags of its score and pv stages' current row slots, as registers that hold
        next cycle's values: each flag's next value in both the current slot and the one after it
        (from this cycle's updates, in the priority they have above: the softmax's clear of
        ``scored`` and set of ``recip_ready`` win), the stage's own start choosing between the two
        last. So the start decision reads four flip-flops instead of multiplexers on the slot
        (issue 15), and the start reaches them through one multiplexer."""
        slots, bits = self._config.row_slots, st.slot_bits
        start_score, start_pv = st.starts[x]
        started, started_slot, started_nonzero, started_single = st.started[x]
        done, done_slot = st.score_done[x]
        recips = self.recips

        smx_taken, smx_slot = st.smx_taken, st.smx.slot
        score_slot, pv_slot = st.score[x].slot, st.pv[x].slot
        score_after, pv_after = (score_slot + 1)[:bits], (pv_slot + 1)[:bits]
        # Written as conditions (``If``), not multiplexers, with the late signals (the starts, the
        # engines' and the softmax's pulses) outermost: the same logic, and Icarus, which takes an
        # unknown condition as false (as it did with the enables these flags replace), keeps an X of
        # a pulse at start-up out of them (a multiplexer would carry it into the start decision).

        def scored_next(slot):      # the softmax's clear wins over the engine's done
            with m.If(smx_taken & (smx_slot == slot)):
                m.d.sync += st.slot_scored[x].eq(0)
            with m.Elif(done & (done_slot == slot)):
                m.d.sync += st.slot_scored[x].eq(1)
            with m.Else():
                m.d.sync += st.slot_scored[x].eq(mux_tree(st.scored[x], slot))

        def ready_next(slot):       # the reciprocal's set (a pv start clears the slot it leaves)
            with m.If(recips.valid & (recips.payload.slot == slot)):
                m.d.sync += st.slot_ready[x].eq(1)
            with m.Else():
                m.d.sync += st.slot_ready[x].eq(0 if slots == 1 and slot is pv_after else
                                                mux_tree(st.recip_ready[x], slot))

        def row_flags_next(slot):   # row_n's flags are written a cycle after a score start (``started``)
            with m.If(started & (started_slot == slot)):
                m.d.sync += [st.slot_nonzero[x].eq(started_nonzero), st.slot_single[x].eq(started_single)]
            with m.Else():
                m.d.sync += [st.slot_nonzero[x].eq(mux_tree(st.row_nonzero[x], slot)),
                             st.slot_single[x].eq(mux_tree(st.row_single[x], slot))]

        with m.If(start_score):
            scored_next(score_after)
        with m.Else():
            scored_next(score_slot)
        with m.If(start_pv):
            ready_next(pv_after)
            row_flags_next(pv_after)
        with m.Else():
            ready_next(pv_slot)
            row_flags_next(pv_slot)

    def _output(self, m, st):
        """A row both engines have finished goes to the output stage."""
        rows, walk = self.rows, st.out
        head = _head_of(walk.bank, st.heads)
        m.d.comb += [rows.valid.eq(walk.in_head & (st.pv_finished[0] != 0) & (st.pv_finished[1] != 0)),
                     rows.payload.multiplier.eq(head.out_mult), rows.payload.shift.eq(head.out_shift),
                     rows.payload.head_last.eq(self._global_row(st, walk) + 1 == head.nq)]
        cfg = self._config
        if cfg.tiles > 1:
            m.d.comb += [rows.payload.values[i].eq(self.dense.out[i] + self.sparse.out[i])
                         for i in range(cfg.head_dim)]
            m.d.comb += st.row_taken.eq(rows.valid & rows.ready)
        else:
            # one beat per transfer: each lane picks its channel of both shares, then adds them
            # (the row-last flag a register: no compare ahead of the release and the walk, the
            # placement estimate's path from the counter to the loader)
            beat, row_last = row_beats(m, cfg, rows.valid & rows.ready, "out")
            dense, sparse = pick_beat(self.dense.out, beat, cfg), pick_beat(self.sparse.out, beat, cfg)
            m.d.comb += [*(rows.payload.values[b].eq(d + s) for b, (d, s) in enumerate(zip(dense, sparse))),
                         rows.payload.row_last.eq(row_last),
                         st.row_taken.eq(rows.valid & rows.ready & row_last)]
        walk.step(m, st.row_taken)

    def _heads(self, m, st):
        """Adopt the heads of full banks in load order; release the oldest when its last row has
        left (one tile: this scheduler's output; tiles: the row merger's, ``released``)."""
        cfg, banks = self._config, self.banks
        nxt = Signal.like(st.newest)
        m.d.comb += nxt.eq(st.newest + 1)
        with m.If(mux_tree([banks.full[b] & ~st.adopted[b] for b in range(cfg.banks)], nxt)):
            m.d.sync += st.newest.eq(nxt)
            for b in range(cfg.banks):
                with m.If(nxt == b):
                    head = banks.heads[b]
                    m.d.sync += [st.adopted[b].eq(1), st.heads[b].eq(head)]
                    if cfg.tiles == 1:
                        m.d.sync += st.nq_local[b].eq(head.nq)
                    else:
                        T, t = cfg.tiles, self._tile
                        first = Signal(range(T), name=f"adopt_first{b}")
                        if t == T - 1:      # off <= T - 1 always (no constant comparison: lint-clean)
                            m.d.comb += first.eq(t - head.off)
                        else:
                            m.d.comb += first.eq(Mux(head.off <= t, t - head.off, t + T - head.off))
                        m.d.sync += [st.first[b].eq(first), st.nq_local[b].eq((head.nq + (T - 1) - first) // T)]
        if cfg.tiles == 1:
            release = st.row_taken & self.rows.payload.head_last
        else:
            release = self.released
        with m.If(release):
            m.d.sync += st.oldest.eq(st.oldest + 1)
            for b in range(cfg.banks):
                with m.If(st.oldest == b):
                    m.d.sync += st.adopted[b].eq(0)
        m.d.comb += [banks.release.eq(release), banks.release_bank.eq(st.oldest),
                     self.busy.eq(Cat(*st.adopted).any())]


def _head_of(bank, heads):
    """The fields of a bank's head the softmax and output need (the banks' registers multiplexed)."""
    return SimpleNamespace(**{name: mux_tree([h[name] for h in heads], bank)
                              for name in ("nq", "exp_mult", "exp_shift", "out_mult", "out_shift")})


class _Walk:
    """A stage's place in the stream of rows: its head's bank, its local row there, and the row
    slot (row order mod ``row_slots``, continuing across heads). At the end of a head (row =
    the tile's rows of it) the stage moves on to row 0 of the next bank's head once that head is
    adopted (and its own head is not the newest, so the next bank holds a later head, not an
    earlier one): a cycle of its own (``wrap``)."""

    def __init__(self, m, st, name):
        row_w = st.nq_local[0].shape().width
        last = len(st.nq_local) - 1
        self.bank = Signal.like(st.newest, init=last, name=f"{name}_bank")   # at reset: at the end of an empty bank
        self.row = Signal(row_w, name=f"{name}_row")
        self.slot = Signal(st.slot_bits, name=f"{name}_slot")
        # the head's rows from ``row`` on, counted down (``in_head``: some are left; no comparison
        # with the bank's multiplexed row count)
        self.left = Signal(row_w, name=f"{name}_left")
        self.in_head = Signal(name=f"{name}_in_head")
        self.wrap = Signal(name=f"{name}_wrap")
        following = Signal.like(self.bank, name=f"{name}_following")
        # ``in_head`` (``left != 0``) is a register, written with ``left`` (issue 15: the start decisions
        # read it; it was a zero test of ``left``)
        m.d.comb += [following.eq(self.bank + 1),
                     self.wrap.eq(~self.in_head & mux_tree(st.adopted, following) & (st.newest != self.bank))]
        with m.If(self.wrap):
            rows = mux_tree(st.nq_local, following)
            m.d.sync += [self.bank.eq(following), self.row.eq(0), self.left.eq(rows), self.in_head.eq(rows != 0)]

    def step(self, m, go):
        """The stage takes its row (only while ``in_head``, so never with ``wrap``)."""
        with m.If(go):
            m.d.sync += [self.row.eq(self.row + 1), self.slot.eq(self.slot + 1), self.left.eq(self.left - 1),
                         self.in_head.eq(self.left != 1)]
