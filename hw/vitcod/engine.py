"""Denser and Sparser Engines of the ViTCoD accelerator (one class, two column sources).

An engine owns L ``AttentionLine``s, a score buffer per score group, an exponent
buffer and an exponent unit (``ExpUnit``). Per query row it runs three jobs:
score and pv jobs started by the ``RowScheduler`` (``job``), exponent jobs by
the ``SoftmaxStage`` (``exp``):

* **score** (SDDMM): the lines form K = L / S groups of S lines
  (``VitcodConfig.score_split``); a group scores one key, each of its lines
  taking ``d / (M S)`` of the key's M-channel chunks, so K keys take
  ``d / (M S)`` cycles and a row of n keys ``ceil(n / K) * d / (M S)`` (with
  S = 1 this is one key per line, ``d / M`` cycles, the row rounded up to
  whole groups of L keys). One more stage sums the S partial scores. The
  Denser Engine's keys are the global columns ``0 .. G-1``, then the CSR
  entries of the row's first half-row; the Sparser Engine's are the CSR
  entries of its second half-row (``hw/vitcod/balance.py``), read from the
  index buffer (no engine touches a pruned entry). Scores go to the group's
  score buffer; the job reports the row maximum.
* **exp** (``ExpUnit``, runs beside the lines): ``z`` and ``E`` of every score
  of the row against the row maximum of both engines, ``E`` to the exponent
  buffer, and the engine's share of the row sum.
* **pv** (SpMM): ``P_j = prob(E_j, r)`` computed on the fly, one key per cycle,
  ``L`` output chunks per pass; the engine's share of the output row goes to a ring of
  ``pv_queue`` shares (``job.out`` is the oldest until the output stage takes it), so the next
  row's pv job issues right behind this one's last beat while this row waits for the other engine.

Pipeline of score and pv beats: issue (Q and column index addresses), read (Q
word and column indices arrive; K and V addresses), operands (K and V words
arrive, P is rounded; the lines' inputs), the lines' ``LINE_LATENCY`` stages,
and for scores one stage that sums a group's S partial scores.

Score and exp buffers hold ``row_slots`` rows (slot = row mod ``row_slots``), so
the score jobs of the next rows and the exp job of row i run at the same time,
and the pv job of row i reads E while later rows' exp jobs write other slots.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out

from attnforge.errors import check_int
from attnforge.hw.common import log2_ceil, mux_tree, requant_round, tree_sum
from attnforge.numfmt import INT8
from attnforge.softmax_int import E_FORMAT, PROB_FORMAT, PROB_SHIFT

from .config import INDEX_WIDTH, VitcodConfig
from .exp_unit import ExpUnit
from .line import LINE_LATENCY, AttentionLine
from .signatures import EngineJobSignature, ExpJobSignature

__all__ = ["Engine"]


class Engine(wiring.Component):
    """One engine with ``lines`` lines; ``sparse``: the Sparser Engine (its keys are CSR entries only).

    Parameters
    ----------
    config : VitcodConfig
    sparse : bool
        Sparser Engine (keys from the column index buffer) or Denser Engine (keys 0 .. G-1,
        then from the column index buffer).
    lines : int
        L, lines of the engine; S = ``config.score_split(lines)`` lines share a key in a
        score job, K = L / S keys per score step (``score_groups``).

    Members
    -------
    job : ``In(EngineJobSignature(config))``
        Score and pv jobs from the row scheduler; the row maximum and the engine's share of
        the output row back.
    exp : ``In(ExpJobSignature(config))``
        Exponent jobs from the softmax stage; the engine's share of the row sum back.
    q : ``In(ReadPort.Signature(qkv_addr_width, qkv_word_width))``
        The Q buffer (words of ``qkv_word_chunks`` chunks, bank bits on top).
    k, v : ``In(ReadPort.Signature(qkv_addr_width, qkv_word_width)).array(K)``
        Per score group g: the K buffer (group g's key in a score step) and the V buffer
        (group g's S chunks of a pv pass).
    col : ``In(ReadPort.Signature(ci_addr_width, data_width)).array(K)``
        The column index buffer: group g's key in a score step; port 0 also the key of a pv beat
        (an engine issues one job at a time).
    active : ``Out(1)``
        The engine issues a score or pv beat to its lines this cycle (its MACs start work):
        the accelerator's MAC-activity counter (``hw/vitcod/axi.py``).
    """

    def __init__(self, config: VitcodConfig, *, sparse: bool, lines: int):
        if not isinstance(config, VitcodConfig):
            raise TypeError(f"Engine needs a VitcodConfig, not {config!r}")
        if not isinstance(sparse, bool):
            raise TypeError(f"Engine sparse must be True or False, not {sparse!r}")
        self._config, self._sparse = config, sparse
        self._lines = check_int("Engine lines", lines, 1, 64)
        self._split = config.score_split(lines)
        self._groups = lines // self._split
        word = ReadPort.Signature(addr_width=config.qkv_addr_width, shape=unsigned(config.qkv_word_width))
        members = {"job": In(EngineJobSignature(config)), "exp": In(ExpJobSignature(config)),
                   "q": In(word), "k": In(word).array(self._groups), "v": In(word).array(self._groups)}
        index = ReadPort.Signature(addr_width=config.ci_addr_width, shape=unsigned(config.data_width))
        members["col"] = In(index).array(self._groups)
        members["active"] = Out(1)
        super().__init__(members)

    @property
    def sparse(self) -> bool:
        return self._sparse

    @property
    def score_split(self) -> int:
        """S, lines per key in a score job."""
        return self._split

    @property
    def score_groups(self) -> int:
        """K, keys per score step (one K/V read port each)."""
        return self._groups

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        lines = [AttentionLine(cfg.macs, cfg.score_width, cfg.pv_width) for _ in range(self._lines)]
        for index, line in enumerate(lines):
            m.submodules[f"line{index}"] = line
        score_writes, e_read = self._buffers(m)
        issue = self._issue(m, e_read)
        m.d.comb += self.active.eq(issue.score_issuing | issue.pv_issuing)
        self._operands(m, issue, lines, e_read)
        self._results(m, issue, lines, score_writes)
        return m

    # -- buffers ---------------------------------------------------------------------------
    def _buffers(self, m):
        """Score buffers (one per group), the exponent buffer and the exponent unit between them."""
        cfg, K = self._config, self._groups
        m.submodules.exp_unit = exp_unit = ExpUnit(cfg, groups=K)
        wiring.connect(m, wiring.flipped(self.exp), exp_unit.job)
        score_writes = []
        for g in range(K):
            mem = Memory(shape=signed(cfg.score_width), depth=1 << ExpUnit.score_addr_width(cfg, K), init=[])
            m.submodules[f"score_buf{g}"] = mem
            score_writes.append(mem.write_port())
            wiring.connect(m, exp_unit.scores[g], mem.read_port())
        m.submodules.exp_buf = e_mem = Memory(shape=unsigned(E_FORMAT.width), depth=1 << ExpUnit.e_addr_width(cfg),
                                              init=[])
        wiring.connect(m, exp_unit.e_write, e_mem.write_port())
        return score_writes, e_mem.read_port()

    # -- addresses -------------------------------------------------------------------------
    def _qkv_addr(self, m, bank, row, word):
        """Word ``word`` of token ``row`` in a Q/K/V bank (with several tokens per word, the word
        holding token ``row``: ``word`` is then 0)."""
        cfg = self._config
        local = Signal(cfg.qkv_addr_width - cfg.bank_bits)
        wpt = cfg.qkv_words_per_token
        if cfg.qkv_tokens_per_word > 1:
            m.d.comb += local.eq(row >> log2_ceil(cfg.qkv_tokens_per_word))
        elif wpt & (wpt - 1) == 0:      # a power of two: the word number below the row's bits, no adder
            m.d.comb += local.eq(Cat(word[:log2_ceil(wpt)], row) if wpt > 1 else row)
        else:
            m.d.comb += local.eq(row * wpt + word)
        return Cat(local, bank)

    def _token_in_word(self, row):
        """(Several tokens per Q/K/V word) which of its word's tokens token ``row`` is."""
        return row[:log2_ceil(self._config.qkv_tokens_per_word)]

    def _ci_addr(self, bank, entry):
        """The column index buffer word of CSR entry ``entry``."""
        cfg = self._config
        return Cat((entry >> log2_ceil(cfg.indices_per_word))[:cfg.ci_addr_width - cfg.bank_bits], bank)

    def _chunk_at(self, step, index):
        """Chunk number ``step * S + index`` (as bits: its word, then the chunk in the word)."""
        lg_s = log2_ceil(self._split)
        return Cat(Const(index, lg_s), step) if lg_s else step

    def _word_of(self, step):
        """The Q/K/V word number holding chunks ``step * S .. step * S + S - 1``."""
        return self._chunk_at(step, 0)[log2_ceil(self._config.qkv_word_chunks):]

    def _chunk_of(self, word, chunk, token=None):
        """The M-channel chunk of a buffer word that holds chunk number ``chunk`` (of the word's
        token ``token`` when a word holds several: ``_token_in_word``, registered with the read)."""
        cfg = self._config
        qc = cfg.qkv_word_chunks
        if cfg.qkv_tokens_per_word > 1:
            lane = Cat(chunk[:log2_ceil(cfg.chunks_per_token)], token) if cfg.chunks_per_token > 1 else token
            return word.word_select(lane, cfg.chunk_width)
        return word.word_select(chunk[:log2_ceil(qc)], cfg.chunk_width) if qc > 1 else word[:cfg.chunk_width]

    def _column(self, index_word, lane, entry, is_global):
        """Key of a score or pv beat: the entry itself when ``is_global`` (registered in the issue
        stage: the entry is below the job's prefix, the Denser Engine's global columns), else the
        CSR column from the index buffer."""
        if self._config.indices_per_word > 1:
            column = index_word.word_select(lane, INDEX_WIDTH)
        else:
            column = index_word[:INDEX_WIDTH]
        return column if self._sparse else Mux(is_global, entry, column)

    # -- issue stage -----------------------------------------------------------------------
    def _issue(self, m, e_read):
        """Job registers and the sequencer: which key, chunk and entry each cycle issues."""
        cfg, job, K = self._config, self.job, self._groups
        steps = cfg.chunks_per_token // self._split       # cycles per score step
        passes = -(-cfg.chunks_per_token // self._lines)  # pv passes over the row's keys
        step_bits = log2_ceil(-(-cfg.max_tokens // K))
        # Score and pv jobs keep separate parameters: the next job's issue starts in the
        # cycle after the previous job's last issue, while that one drains.
        score = SimpleNamespace(bank=Signal(cfg.bank_bits, name="score_bank"), row=Signal(INDEX_WIDTH, name="score_row"),
                                n=Signal(INDEX_WIDTH, name="score_n"), base=Signal(INDEX_WIDTH, name="score_base"),
                                prefix=Signal(INDEX_WIDTH, name="score_prefix"),
                                slot=Signal.like(job.score.slot, name="score_slot"))
        pv = SimpleNamespace(bank=Signal(cfg.bank_bits, name="pv_bank"), n=Signal(INDEX_WIDTH, name="pv_n"),
                             base=Signal(INDEX_WIDTH, name="pv_base"), prefix=Signal(INDEX_WIDTH, name="pv_prefix"),
                             slot=Signal.like(job.pv.slot, name="pv_slot"),
                             recip=Signal.like(job.pv.recip, name="pv_recip"))
        issue = SimpleNamespace(score=score, pv=pv, steps=steps, passes=passes, step_bits=step_bits)
        issue.score_issuing, issue.pv_issuing = Signal(), Signal()
        issue.score_first = Signal(INDEX_WIDTH)          # entry of group 0's key in this score step
        issue.score_step = Signal(step_bits + 1)         # score step of the row (score buffer word)
        issue.step_cycle = Signal(range(max(steps, 2)))  # lines take chunks step_cycle * S + s
        issue.pv_entry = Signal(INDEX_WIDTH)
        issue.pv_pass = Signal(range(max(passes, 2)))
        score_issue_last, pv_issue_last = Signal(), Signal()
        issue.score_issue_last, issue.pv_issue_last = score_issue_last, pv_issue_last
        # ``issue_free`` goes to the scheduler's job start: its terms come from registers, not from
        # adders and comparators on the job's counters (issue 15).
        # The score step is the last when ``score_first + K >= n``. With two or more cycles per step
        # that is read at least two cycles after score_first or n changed, so a register that compares
        # them every cycle (one cycle late) holds it; with one cycle per step it is compared directly.
        final_step = Signal(name="score_final_step")
        if steps > 1:
            m.d.sync += final_step.eq(issue.score_first + K >= score.n)
        else:
            m.d.comb += final_step.eq(issue.score_first + K >= score.n)
        # The pv entry is the row's last when ``pv_entry == n - 1``: in the cycle after a start or after
        # the entry went back to 0 (next pass) that is ``n == 1`` (registered at the start), else the
        # previous cycle's ``pv_entry + 2 == n`` (the entry has counted up by one since).
        entry_ahead, n_is_one, entry_reset = Signal(name="pv_entry_ahead"), Signal(name="pv_n_is_one"), Signal()
        entry_last = issue.entry_last = Signal(name="pv_entry_last")
        m.d.sync += [entry_ahead.eq(issue.pv_entry + 2 == pv.n),
                     entry_reset.eq(job.pv_start | (issue.pv_issuing & entry_last))]
        with m.If(job.issue_free):
            m.d.sync += n_is_one.eq(job.pv.single)
        m.d.comb += [
            entry_last.eq(Mux(entry_reset, n_is_one, entry_ahead)),
            score_issue_last.eq(issue.score_issuing & (issue.step_cycle == steps - 1) & final_step),
            pv_issue_last.eq(issue.pv_issuing & entry_last & (issue.pv_pass == passes - 1))]
        self._issue_free(m, issue, n_is_one)

        with m.If(issue.score_issuing):
            m.d.sync += issue.step_cycle.eq(issue.step_cycle + 1)
            with m.If(issue.step_cycle == steps - 1):
                m.d.sync += [issue.step_cycle.eq(0), issue.score_step.eq(issue.score_step + 1),
                             issue.score_first.eq(issue.score_first + K)]
            with m.If(score_issue_last):
                m.d.sync += issue.score_issuing.eq(0)
        with m.If(issue.pv_issuing):
            m.d.sync += issue.pv_entry.eq(issue.pv_entry + 1)
            with m.If(entry_last):
                m.d.sync += [issue.pv_entry.eq(0), issue.pv_pass.eq(issue.pv_pass + 1)]
            with m.If(pv_issue_last):
                m.d.sync += issue.pv_issuing.eq(0)
        # While the engine is free (idle, or issuing a job's last beat) its job registers take the
        # offered jobs and its counters go to 0, so they hold the job that starts; a start (allowed
        # only then) sets the issuing flag only. So the scheduler's start decision drives two flip-flops
        # here, not the enables of every job register (issue 15). These win over the updates above.
        with m.If(job.issue_free):
            m.d.sync += [score.bank.eq(job.score.bank), score.row.eq(job.score.row), score.n.eq(job.score.n),
                         score.base.eq(job.score.base), score.prefix.eq(job.score.prefix),
                         score.slot.eq(job.score.slot), issue.score_first.eq(0), issue.score_step.eq(0),
                         issue.step_cycle.eq(0),
                         pv.bank.eq(job.pv.bank), pv.n.eq(job.pv.n), pv.base.eq(job.pv.base),
                         pv.prefix.eq(job.pv.prefix), pv.slot.eq(job.pv.slot), pv.recip.eq(job.pv.recip),
                         issue.pv_entry.eq(0), issue.pv_pass.eq(0)]
        with m.If(job.score_start):
            m.d.sync += issue.score_issuing.eq(job.score.nonzero)
        with m.If(job.pv_start):
            m.d.sync += issue.pv_issuing.eq(job.pv.nonzero)
        # a pv job without keys outputs zeros: its share is cleared a cycle later, from a register
        # (not from pv_start, whose scheduler logic would otherwise drive the enables of every
        # share bit; ``_results``); its pv_done comes in that cycle. It starts only when no pv beats
        # are in flight, so shares complete in job order
        issue.zero_out = zero_out = Signal()
        m.d.sync += zero_out.eq(job.pv_start & ~job.pv.nonzero)
        # ... one copy per chunk of the share clears that chunk (``replica``): zero_out alone drove the
        # enables of a whole share, the routed critical path of issue 15 (26.4 ns, 97 % routing)
        issue.zero_copies = [Signal(name=f"zero_out_rep{c}", attrs={"replica": 1})
                             for c in range(cfg.chunks_per_token)]
        m.d.sync += [copy.eq(job.pv_start & ~job.pv.nonzero) for copy in issue.zero_copies]

        # addresses: group g's key is entry score_first + g; the Q word holds the step's chunks
        issue.entry = [Signal(INDEX_WIDTH, name=f"entry{g}") for g in range(K)]
        issue.key_ok = [Signal(name=f"key_ok{g}") for g in range(K)]
        for g in range(K):
            m.d.comb += [issue.entry[g].eq(issue.score_first + g),
                         issue.key_ok[g].eq(issue.score_issuing & (issue.score_first + g < score.n))]
        m.d.comb += self.q.addr.eq(self._qkv_addr(m, score.bank, score.row, self._word_of(issue.step_cycle)))
        for g in range(K):
            score_addr = Mux(issue.key_ok[g], self._ci_addr(score.bank, score.base + issue.entry[g]), 0)
            if g == 0:   # a pv beat's key too (score and pv jobs never issue in the same cycle)
                score_addr = Mux(issue.pv_issuing, self._ci_addr(pv.bank, pv.base + issue.pv_entry), score_addr)
            m.d.comb += self.col[g].addr.eq(score_addr)
        m.d.comb += e_read.addr.eq(Cat(issue.pv_entry[:log2_ceil(cfg.max_tokens)], pv.slot))
        return issue

    def _issue_free(self, m, issue, n_is_one):
        """``issue_free`` (not issuing, or issuing a job's last beat) as a register, computed a cycle
        ahead from this cycle's state and starts, so the scheduler's start decision begins at
        flip-flops; also the next cycle's issuing flags (``issue.score_next``, ``issue.pv_next``)."""
        job, K, steps, passes = self.job, self._groups, issue.steps, issue.passes
        score, pv = issue.score, issue.pv
        score_issue_last, pv_issue_last, entry_last = issue.score_issue_last, issue.pv_issue_last, issue.entry_last
        free = Signal(init=1, name="issue_free")
        on = Const(1, 1)
        score_next = Mux(job.score_start, job.score.nonzero, issue.score_issuing & ~score_issue_last)
        pv_next = Mux(job.pv_start, job.pv.nonzero, issue.pv_issuing & ~pv_issue_last)
        # the next beat is a score job's last: its step's last cycle, and the final step
        if steps > 1:
            # (never right after a start: step 0's first cycle; final_step is then the register in ``_issue``)
            step_end_next, final_next = issue.step_cycle == steps - 2, issue.score_first + K >= score.n
        else:
            step_end_next, final_next = on, issue.score_first + 2 * K >= score.n
        score_last_next = Mux(job.score_start, job.score.nonzero & (on if steps == 1 else 0) & (job.score.n <= K),
                              issue.score_issuing & ~score_issue_last & step_end_next & final_next)
        # ... a pv job's last: its last entry of the last pass
        entry_last_next = Mux(entry_last, n_is_one, issue.pv_entry + 2 == pv.n)
        pass_last_next = Mux(entry_last, issue.pv_pass + 1 == passes - 1, issue.pv_pass == passes - 1)
        pv_last_next = Mux(job.pv_start, job.pv.nonzero & job.pv.single & (on if passes == 1 else 0),
                           issue.pv_issuing & ~pv_issue_last & entry_last_next & pass_last_next)
        m.d.sync += free.eq(~(score_next | pv_next) | score_last_next | pv_last_next)
        m.d.comb += job.issue_free.eq(free)
        issue.score_next, issue.pv_next = score_next, pv_next

    # -- operand stages ----------------------------------------------------------------------
    def _operands(self, m, issue, lines, e_read):
        """Stage ``read`` (Q word, column indices, E arrive; K/V addresses) and stage ``operands``
        (K/V words and P arrive; the lines' inputs)."""
        cfg, K, S, L = self._config, self._groups, self._split, self._lines
        M, chunks = cfg.macs, cfg.chunks_per_token
        lane_bits = max(log2_ceil(cfg.indices_per_word), 1)
        score, pv = issue.score, issue.pv
        # read stage
        rd = SimpleNamespace(score_valid=Signal(name="read_score_valid"), pv_valid=Signal(name="read_pv_valid"),
                             step_cycle=Signal.like(issue.step_cycle, name="read_step_cycle"),
                             step=Signal.like(issue.score_step, name="read_step"),
                             score_first=Signal(name="read_score_first"), score_last=Signal(name="read_score_last"),
                             pv_first=Signal(name="read_pv_first"), pv_last=Signal(name="read_pv_last"),
                             pv_lane=Signal(lane_bits, name="read_pv_lane"),
                             pv_entry=Signal(INDEX_WIDTH, name="read_pv_entry"),
                             pv_pass=Signal.like(issue.pv_pass, name="read_pv_pass"))
        # a score job's beats carry its bank, slot and last beat (and, compared with its prefix,
        # ``is_global``) down the pipeline: the next score job may issue right after this one's last
        # beat while these beats are still on their way
        rd.score_bank = Signal(cfg.bank_bits, name="read_score_bank")
        rd.score_slot = Signal.like(score.slot, name="read_score_slot")
        rd.job_last = Signal(name="read_job_last")
        m.d.sync += [rd.score_bank.eq(score.bank), rd.score_slot.eq(score.slot), rd.job_last.eq(issue.score_issue_last)]
        # so do a pv job's bank, reciprocal and last beat (and ``pv_global``): the next pv job may
        # issue right after this one's last beat (plan step 2, P.V side)
        rd.pv_bank = Signal(cfg.bank_bits, name="read_pv_bank")
        rd.pv_recip, rd.pv_job_last = Signal.like(pv.recip, name="read_pv_recip"), Signal(name="read_pv_job_last")
        m.d.sync += [rd.pv_bank.eq(pv.bank), rd.pv_recip.eq(pv.recip), rd.pv_job_last.eq(issue.pv_issue_last)]
        rd.key_ok = [Signal(name=f"read_key_ok{g}") for g in range(K)]
        rd.lane = [Signal(lane_bits, name=f"read_lane{g}") for g in range(K)]
        rd.entry = [Signal(INDEX_WIDTH, name=f"read_entry{g}") for g in range(K)]
        # (Denser Engine) the beat's key is a global column: compared in the issue stage, so the
        # column index read goes through two multiplexers only to the K and V addresses
        rd.is_global = [Signal(name=f"read_global{g}") for g in range(K)]
        rd.pv_global = Signal(name="read_pv_global")
        m.d.sync += rd.pv_global.eq(issue.pv_entry < pv.prefix)
        m.d.sync += [rd.score_valid.eq(issue.score_issuing), rd.pv_valid.eq(issue.pv_issuing),
                     rd.step_cycle.eq(issue.step_cycle), rd.step.eq(issue.score_step),
                     rd.score_first.eq(issue.step_cycle == 0), rd.score_last.eq(issue.step_cycle == issue.steps - 1),
                     rd.pv_first.eq(issue.pv_entry == 0), rd.pv_last.eq(issue.entry_last),
                     rd.pv_entry.eq(issue.pv_entry), rd.pv_pass.eq(issue.pv_pass),
                     rd.pv_lane.eq((pv.base + issue.pv_entry)[:lane_bits])]
        for g in range(K):
            m.d.sync += [rd.key_ok[g].eq(issue.key_ok[g]), rd.entry[g].eq(issue.entry[g]),
                         rd.is_global[g].eq(issue.entry[g] < score.prefix),
                         rd.lane[g].eq((score.base + issue.entry[g])[:lane_bits])]
        # with several tokens per Q/K/V word, which of the word's tokens a read returns travels with it
        tpw_bits = log2_ceil(cfg.qkv_tokens_per_word)
        rd.q_token = Signal(max(tpw_bits, 1), name="read_q_token")
        if tpw_bits:
            m.d.sync += rd.q_token.eq(self._token_in_word(score.row))
        q_chunks = [self._chunk_of(self.q.data, self._chunk_at(rd.step_cycle, s), rd.q_token) for s in range(S)]
        keys = []
        for g in range(K):
            key = Signal(INDEX_WIDTH, name=f"key{g}")
            keys.append(key)
            m.d.comb += key.eq(self._column(self.col[g].data, rd.lane[g], rd.entry[g], rd.is_global[g]))
            m.d.comb += self.k[g].addr.eq(Mux(rd.key_ok[g], self._qkv_addr(m, rd.score_bank, key,
                                                                             self._word_of(rd.step_cycle)), 0))
        pv_key = Signal(INDEX_WIDTH)
        m.d.comb += pv_key.eq(self._column(self.col[0].data, rd.pv_lane, rd.pv_entry, rd.pv_global))
        # pv pass p: line l = g * S + s takes chunk p * L + l = (p * K + g) * S + s
        for g in range(K):
            pv_step = Signal(range(issue.passes * K + 1), name=f"pv_step{g}")
            m.d.comb += pv_step.eq(rd.pv_pass * K + g)
            m.d.comb += self.v[g].addr.eq(Mux(rd.pv_valid & (pv_step * S < chunks),
                                              self._qkv_addr(m, rd.pv_bank, pv_key, self._word_of(pv_step)), 0))
        # P = min((E * r + round) >> PROB_SHIFT, PROB_MAX): the product here, the rounding next
        e_times_r = Signal(E_FORMAT.width + cfg.recip_width)
        m.d.comb += e_times_r.eq(e_read.data * rd.pv_recip)

        # operand stage
        op = SimpleNamespace(score_valid=Signal(name="op_score_valid"), pv_valid=Signal(name="op_pv_valid"),
                             step_cycle=Signal.like(issue.step_cycle, name="op_step_cycle"),
                             step=Signal.like(issue.score_step, name="op_step"),
                             first=Signal(name="op_first"), last=Signal(name="op_last"),
                             e_times_r=Signal.like(e_times_r, name="op_e_times_r"),
                             pv_pass=Signal.like(issue.pv_pass, name="op_pv_pass"))
        op.key_ok = [Signal(name=f"op_key_ok{g}") for g in range(K)]
        op.score_slot, op.job_last = Signal.like(rd.score_slot, name="op_score_slot"), Signal(name="op_job_last")
        op.pv_job_last = Signal(name="op_pv_job_last")
        m.d.sync += [op.score_slot.eq(rd.score_slot), op.job_last.eq(rd.job_last), op.pv_job_last.eq(rd.pv_job_last)]
        op.q = [Signal(cfg.chunk_width, name=f"op_q{s}") for s in range(S)]
        op.k_token = [Signal(max(tpw_bits, 1), name=f"op_k_token{g}") for g in range(K)]
        op.v_token = Signal(max(tpw_bits, 1), name="op_v_token")
        if tpw_bits:
            m.d.sync += [op.k_token[g].eq(self._token_in_word(keys[g])) for g in range(K)]
            m.d.sync += op.v_token.eq(self._token_in_word(pv_key))
        m.d.sync += [op.score_valid.eq(rd.score_valid), op.pv_valid.eq(rd.pv_valid), op.step_cycle.eq(rd.step_cycle),
                     op.step.eq(rd.step), op.first.eq(Mux(rd.pv_valid, rd.pv_first, rd.score_first)),
                     op.last.eq(Mux(rd.pv_valid, rd.pv_last, rd.score_last)), op.e_times_r.eq(e_times_r),
                     op.pv_pass.eq(rd.pv_pass)]
        m.d.sync += [a.eq(b) for a, b in zip(op.q, q_chunks)]
        m.d.sync += [op.key_ok[g].eq(rd.key_ok[g]) for g in range(K)]
        prob = Signal(PROB_FORMAT.width)
        m.d.comb += prob.eq(requant_round(op.e_times_r, PROB_SHIFT, PROB_FORMAT))
        for index, line in enumerate(lines):
            g, s = divmod(index, S)
            k_chunk = self._chunk_of(self.k[g].data, self._chunk_at(op.step_cycle, s), op.k_token[g])
            pv_step = Signal(range(issue.passes * K + 1), name=f"op_pv_step{index}")
            m.d.comb += pv_step.eq(op.pv_pass * K + g)
            v_chunk = self._chunk_of(self.v[g].data, self._chunk_at(pv_step, s), op.v_token)
            m.d.comb += [line.pv.eq(op.pv_valid), line.first.eq(op.first), line.last.eq(op.last),
                         line.valid.eq(Mux(op.pv_valid, op.pv_pass * L + index < chunks,
                                           op.key_ok[g] & op.score_valid))]
            for i in range(M):
                m.d.comb += [line.a[i].eq(Mux(op.pv_valid, prob, _byte(op.q[s], i))),
                             line.b[i].eq(Mux(op.pv_valid, _byte(v_chunk, i), _byte(k_chunk, i)))]
        issue.read, issue.op = rd, op

    # -- result stages -----------------------------------------------------------------------
    def _results(self, m, issue, lines, score_writes):
        """Stages behind the lines: group sums to the score buffers, the row maximum, ``out``,
        and job completion."""
        cfg, job, K, S, L = self._config, self.job, self._groups, self._split, self._lines
        op = issue.op
        # the lines take LINE_LATENCY cycles (operands, product, adder tree, accumulator); the group
        # sum one more. Each beat's flags travel beside it: stage 3 is the lines' first
        D = LINE_LATENCY

        def chain(first, n, name):
            regs = [Signal.like(first, name=f"{name}{3 + k}") for k in range(n)]
            m.d.sync += [reg.eq(prev) for reg, prev in zip(regs, [first, *regs[:-1]])]
            return regs

        score_valid = chain(op.score_valid, D + 1, "score_valid")
        pv_valid = chain(op.pv_valid, D, "pv_valid")
        step = chain(op.step, D + 1, "step")
        pv_pass = chain(op.pv_pass, D, "pv_pass")
        # a group's score is the sum of its S lines' partial scores (an exact integer that
        # fits score_width, so the wrap-around sum is exact)
        group_dot = [Signal(signed(cfg.score_width), name=f"group_dot{g}") for g in range(K)]
        group_valid = [Signal(name=f"group_valid{g}") for g in range(K)]
        for g in range(K):
            m.d.sync += [group_dot[g].eq(tree_sum(lines[g * S + s].dot for s in range(S))),
                         group_valid[g].eq(lines[g * S].dot_valid)]
        # the score job's slot and last beat, beside ``step`` (the next job's beats may follow right behind)
        slot = chain(op.score_slot, D + 1, "score_slot")
        job_last = chain(op.job_last, D + 1, "job_last")
        # the row maximum starts over with a job's first step (group 0 always has a key there)
        lowest = -(1 << (cfg.score_width - 1))
        row_max = Signal(signed(cfg.score_width), name="row_max")
        run_max = Signal(signed(cfg.score_width), name="max_base")
        m.d.comb += run_max.eq(Mux(group_valid[0] & (step[-1] == 0), lowest, row_max))
        for g in range(K):
            m.d.comb += [score_writes[g].addr.eq(Cat(step[-1][:issue.step_bits], slot[-1])),
                         score_writes[g].data.eq(group_dot[g]), score_writes[g].en.eq(group_valid[g])]
            nxt = Signal(signed(cfg.score_width), name=f"max{g}")
            m.d.comb += nxt.eq(Mux(group_valid[g] & (group_dot[g] > run_max), group_dot[g], run_max))
            run_max = nxt
        m.d.sync += row_max.eq(run_max)
        # the engine's shares of rows, a ring of pv_queue: a pv job's chunks go to entry ``share_wr``,
        # which moves on with the job's last chunk (or a job without keys, whose share is zeros);
        # ``out`` is the oldest share, until the output stage takes it (pv_take)
        Q = cfg.pv_queue
        share_layout = job.out.shape()
        shares = [Signal(share_layout, name=f"share{k}") for k in range(Q)]
        share_wr, share_rd = Signal(range(max(Q, 2)), name="share_wr"), Signal(range(max(Q, 2)), name="share_rd")
        pv_job_last = chain(op.pv_job_last, D, "pv_job_last")
        share_done = Signal()
        m.d.comb += share_done.eq((pv_valid[-1] & pv_job_last[-1]) | issue.zero_out)
        for k, share in enumerate(shares):
            with m.If(share_wr == k):
                for chunk in range(cfg.chunks_per_token):
                    line, p = chunk % L, chunk // L
                    with m.If(lines[line].vec_valid & (pv_pass[-1] == p)):
                        m.d.sync += [share[chunk * cfg.macs + i].eq(lines[line].vec[i]) for i in range(cfg.macs)]
                for chunk, copy in enumerate(issue.zero_copies):
                    with m.If(copy):
                        m.d.sync += [share[chunk * cfg.macs + i].eq(0) for i in range(cfg.macs)]
        with m.If(share_done):
            m.d.sync += share_wr.eq(Mux(share_wr == Q - 1, 0, share_wr + 1))
        with m.If(job.pv_take):
            m.d.sync += share_rd.eq(Mux(share_rd == Q - 1, 0, share_rd + 1))
        m.d.comb += job.out.eq(mux_tree([sh.as_value() for sh in shares], share_rd))

        # job completion: a job is done when its last result has been written. A score job's done
        # pulse comes with its last beat (the cycle after its group sums), with its slot; one without
        # keys is done in the cycle after its start (it starts only when no score job is in flight)
        done_last, done_slot, done_empty = Signal(), Signal.like(slot[-1]), Signal()
        m.d.sync += [done_last.eq(job_last[-1]), done_slot.eq(slot[-1]),
                     done_empty.eq(job.score_start & ~job.score.nonzero)]
        # a pv job is done in the cycle after its last chunk is written (DRAIN cycles after its last
        # issue), one without keys in the cycle after its start (its zeros are written then)
        pv_done_last = Signal()
        m.d.sync += pv_done_last.eq(pv_valid[-1] & pv_job_last[-1])
        rd = issue.read
        # a row without keys here (no beats) has no maximum
        m.d.comb += [job.score_done.eq(done_last | done_empty), job.max.eq(Mux(done_empty, lowest, row_max)),
                     job.done_slot.eq(Mux(done_empty, issue.score.slot, done_slot)),
                     job.pv_done.eq(pv_done_last | issue.zero_out)]
        # score_active: beats issuing or in flight, or the done cycle (score_issuing | read | operand |
        # the lines' stages | done_last | done_empty); pv_active likewise. Registers holding next
        # cycle's value of that OR (each term's next value from this cycle's), so the start decision
        # reads one flip-flop each (issue 15)
        score_active, pv_active = Signal(name="score_active"), Signal(name="pv_active")
        m.d.sync += [
            score_active.eq(issue.score_next | issue.score_issuing | rd.score_valid | op.score_valid
                            | Cat(*score_valid[:-1]).any() | job_last[-1] | (job.score_start & ~job.score.nonzero)),
            pv_active.eq(issue.pv_next | issue.pv_issuing | rd.pv_valid | op.pv_valid | Cat(*pv_valid[:-1]).any()
                         | (pv_valid[-1] & pv_job_last[-1]) | (job.pv_start & ~job.pv.nonzero))]
        m.d.comb += [job.score_active.eq(score_active), job.pv_active.eq(pv_active)]


def _byte(vec, i):
    """Lane i of a vector of int8."""
    return vec.word_select(i, INT8.width).as_signed()
