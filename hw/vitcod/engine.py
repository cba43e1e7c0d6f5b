"""Denser and Sparser Engines of the ViTCoD accelerator (one class, two column sources).

An engine owns L ``AttentionLine``s, a score buffer per score group, an exponent
buffer and an exponent unit. Per query row it runs three jobs, started by the
accelerator's controller:

* **score** (SDDMM): the lines form K = L / S groups of S lines
  (``VitcodConfig.score_split``); a group scores one key, each of its lines
  taking ``d / (M S)`` of the key's M-channel chunks, so K keys take
  ``d / (M S)`` cycles and a row of n keys ``ceil(n / K) * d / (M S)`` (with
  S = 1 this is one key per line, ``d / M`` cycles, the row rounded up to
  whole groups of L keys). One more stage sums the S partial scores. The
  Denser Engine's keys are the global columns ``0 .. G-1``, the Sparser
  Engine's are the row's CSR entries, read from the index buffer (it never
  touches a pruned entry). Scores go to the group's score buffer; the job
  reports the row maximum.
* **exp** (own pipeline, runs beside the lines): ``z`` and ``E`` of every score
  of the row against the row maximum of both engines, ``E`` to the exponent
  buffer, and the engine's share of the row sum.
* **pv** (SpMM): ``P_j = prob(E_j, r)`` computed on the fly, one key per cycle,
  ``L`` output chunks per pass; the engine's share of ``O`` stays in ``out``.

Score and exp buffers hold ``ROW_SLOTS`` rows (slot = row mod ROW_SLOTS), so
the score jobs of the next rows and the exp job of row i run at the same time,
and the pv job of row i reads E while later rows' exp jobs write other slots.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib.memory import Memory

from attnforge.softmax_int import (E_FORMAT, EXP2_LUT, EXP_BITS, EXP_FRAC_BITS, PROB_MAX, PROB_SHIFT, Z_FORMAT)

from .config import INDEX_WIDTH, VitcodConfig
from .line import AttentionLine

__all__ = ["Engine"]


def _log2(n: int) -> int:
    return (n - 1).bit_length()


def _pick(values, index):
    """``values[index]`` as a tree of multiplexers (plain assignments, see ``_rom``)."""
    level = list(values)
    for bit in range(len(index)):
        level = [Mux(index[bit], level[i + 1], level[i]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def _rom(values, width, index):
    """A constant table as a tree of multiplexers on the index bits.

    (Not an ``Array`` of constants: Yosys writes that as a case statement in a
    combinational process, which Icarus leaves at X while the index keeps its
    initial value.)
    """
    level = [Const(v, width) for v in values]
    for bit in range(len(index)):
        level = [Mux(index[bit], level[i + 1], level[i]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


class Engine(Elaboratable):
    """One engine with ``lines`` lines; ``sparse`` selects the CSR column source.

    The accelerator connects the buffer read ports, all of words of ``qkv_word_chunks``
    chunks: ``q_addr``/``q_data``, and per score group g ``k_addr[g]``/``k_data[g]`` (the
    group's key in a score step) and ``v_addr[g]``/``v_data[g]`` (the group's S chunks of a pv
    pass); for the Sparser Engine also ``ci_addr[g]``/``ci_data[g]`` and
    ``ci_pv_addr``/``ci_pv_data``.
    """

    def __init__(self, cfg: VitcodConfig, *, sparse: bool, lines: int):
        self.cfg = cfg
        self.sparse = sparse
        self.L = lines
        self.S = cfg.score_split(lines)     # lines per key in a score job
        self.K = lines // self.S            # keys per score step
        W = cfg.data_width
        self.qkv_aw = _log2(cfg.qkv_bank_words) + 1
        self.ci_aw = _log2(cfg.ci_bank_words) + 1
        ww = 8 * cfg.macs * cfg.qkv_word_chunks
        self.q_addr = Signal(self.qkv_aw)
        self.q_data = Signal(ww)
        self.k_addr = [Signal(self.qkv_aw, name=f"k_addr{g}") for g in range(self.K)]
        self.k_data = [Signal(ww, name=f"k_data{g}") for g in range(self.K)]
        self.v_addr = [Signal(self.qkv_aw, name=f"v_addr{g}") for g in range(self.K)]
        self.v_data = [Signal(ww, name=f"v_data{g}") for g in range(self.K)]
        self.ci_addr = [Signal(self.ci_aw, name=f"ci_addr{g}") for g in range(self.K)]
        self.ci_data = [Signal(W, name=f"ci_data{g}") for g in range(self.K)]
        self.ci_pv_addr = Signal(self.ci_aw)
        self.ci_pv_data = Signal(W)

        cw = INDEX_WIDTH
        # job parameters (held by the controller while a job runs)
        self.bank = Signal()
        self.row = Signal(cw)
        self.n = Signal(cw)
        self.base = Signal(cw)
        sb = _log2(cfg.row_slots)
        self.parity = Signal(sb)      # row slot of the job
        self.recip = Signal(cfg.recip_width)
        self.score_start = Signal()   # allowed when issue_free and not score_active
        self.pv_start = Signal()      # allowed when issue_free and not pv_active
        self.issue_free = Signal()    # the issue stage can take a new job this cycle
        self.score_active = Signal()
        self.pv_active = Signal()
        self.score_done = Signal()    # one-cycle pulse: the score job's results are all written
        self.pv_done = Signal()       # one-cycle pulse: ``out`` holds the pv job's results
        self.busy = Signal()
        self.max = Signal(signed(cfg.score_width))
        # exp job
        self.exp_start = Signal()
        self.exp_parity = Signal(sb)
        self.exp_n = Signal(cw)
        self.exp_m = Signal(signed(cfg.score_width))
        self.exp_mult = Signal(16)
        self.exp_shift = Signal(6)
        self.exp_busy = Signal()
        self.exp_sum = Signal(cfg.sum_width)
        # this engine's share of O for the last pv job
        self.out = [Signal(signed(cfg.pv_width), name=f"out{i}") for i in range(cfg.head_dim)]

    def elaborate(self, platform):
        cfg, L, S, K = self.cfg, self.L, self.S, self.K
        M, CPT, IPW = cfg.macs, cfg.chunks_per_token, cfg.indices_per_word
        QC, QWPT = cfg.qkv_word_chunks, cfg.qkv_words_per_token
        P = CPT // S            # cycles per score step
        lg_ipw, lg_s, lg_qc = _log2(IPW), _log2(S), _log2(QC)
        qkv_local = self.qkv_aw - 1
        ci_local = self.ci_aw - 1
        m = Module()

        lines = [AttentionLine(M, cfg.score_width, cfg.pv_width) for _ in range(L)]
        for l, ln in enumerate(lines):
            m.submodules[f"line{l}"] = ln

        slots = -(-cfg.max_tokens // K)
        slot_w = _log2(slots)
        smems = []
        s_wr, s_rd = [], []
        for g in range(K):
            mem = Memory(shape=signed(cfg.score_width), depth=cfg.row_slots << slot_w, init=[])
            m.submodules[f"smem{g}"] = mem
            s_wr.append(mem.write_port())
            s_rd.append(mem.read_port())
            smems.append(mem)
        e_w = _log2(cfg.max_tokens)
        emem = Memory(shape=unsigned(E_FORMAT.width), depth=cfg.row_slots << e_w, init=[])
        m.submodules.emem = emem
        e_wr = emem.write_port()
        e_rd = emem.read_port()

        def qkv_addr(bank, row, word):
            """Word ``word`` of token ``row`` in a Q/K/V bank."""
            local = Signal(qkv_local)
            m.d.comb += local.eq(row * QWPT + word)
            return Cat(local, bank)

        def chunk_at(step, s_):
            """Chunk ``step * S + s_`` (its bits, for the word and the chunk in it)."""
            return Cat(Const(s_, lg_s), step) if lg_s else step

        def ci_addr(bank, entry):
            return Cat((entry >> lg_ipw)[:ci_local], bank)

        def chunk_of(word, chunk):
            """The M-channel chunk of a buffer word that holds chunk number ``chunk``."""
            return word.word_select(chunk[:lg_qc], 8 * M) if QC > 1 else word[:8 * M]

        def byte(vec, i):
            return vec[8 * i:8 * i + 8].as_signed()

        # ------------------------------------------------------------ job latches
        # Score and pv jobs keep separate parameters: the next job's issue starts in
        # the cycle after the previous job's last issue, while that one drains.
        sb = _log2(cfg.row_slots)
        js_bank, js_row, js_n, js_base, js_par = Signal(), Signal(16), Signal(16), Signal(16), Signal(sb)
        jp_bank, jp_n, jp_base, jp_par = Signal(), Signal(16), Signal(16), Signal(sb)
        jp_recip = Signal(cfg.recip_width)

        # ----------------------------------------------------- sequencer (issue stage)
        s_iss = Signal()        # issuing score beats
        p_iss = Signal()        # issuing pv beats
        s_ebase = Signal(16)    # first entry of the score step
        grp = Signal(slot_w + 1)
        spas = Signal(range(max(P, 2)))   # cycle of the score step: lines take chunks spas * S + s
        p_ent = Signal(16)      # pv entry
        npass = -(-CPT // L)
        pas = Signal(range(max(npass, 2)))

        s_last = Signal()
        p_last = Signal()
        m.d.comb += [s_last.eq(s_iss & (spas == P - 1) & (s_ebase + K >= js_n)),
                     p_last.eq(p_iss & (p_ent == jp_n - 1) & (pas == npass - 1)),
                     self.issue_free.eq(~(s_iss | p_iss) | s_last | p_last)]

        with m.If(s_iss):
            m.d.sync += spas.eq(spas + 1)
            with m.If(spas == P - 1):
                m.d.sync += [spas.eq(0), grp.eq(grp + 1), s_ebase.eq(s_ebase + K)]
            with m.If(s_last):
                m.d.sync += s_iss.eq(0)
        with m.If(p_iss):
            m.d.sync += p_ent.eq(p_ent + 1)
            with m.If(p_ent == jp_n - 1):
                m.d.sync += [p_ent.eq(0), pas.eq(pas + 1)]
            with m.If(p_last):
                m.d.sync += p_iss.eq(0)
        # a start (allowed only when issue_free) wins over the last beat's updates above
        with m.If(self.score_start):
            m.d.sync += [js_bank.eq(self.bank), js_row.eq(self.row), js_n.eq(self.n), js_base.eq(self.base),
                         js_par.eq(self.parity),
                         s_iss.eq(self.n != 0), s_ebase.eq(0), grp.eq(0), spas.eq(0)]
        with m.If(self.pv_start):
            m.d.sync += [jp_bank.eq(self.bank), jp_n.eq(self.n), jp_base.eq(self.base), jp_par.eq(self.parity),
                         jp_recip.eq(self.recip),
                         p_iss.eq(self.n != 0), p_ent.eq(0), pas.eq(0)]
        # a pv job without keys outputs zeros: cleared a cycle later, from a register (not from
        # pv_start, whose controller logic would otherwise drive the enables of every out bit);
        # its pv_done comes in that cycle, and out is read only after pv_done has been registered
        zero_out = Signal()
        m.d.sync += zero_out.eq(self.pv_start & (self.n == 0))
        with m.If(zero_out):
            m.d.sync += [o.eq(0) for o in self.out]

        # issue-stage addresses
        # (per score group g: its key is entry s_ebase + g)
        entry = [Signal(16, name=f"entry{g}") for g in range(K)]
        lane_ok = [Signal(name=f"lane_ok{g}") for g in range(K)]
        for g in range(K):
            m.d.comb += [entry[g].eq(s_ebase + g), lane_ok[g].eq(s_iss & (s_ebase + g < js_n))]
        # the Q word holding chunks spas * S .. spas * S + S - 1 of the row
        m.d.comb += self.q_addr.eq(qkv_addr(js_bank, js_row, chunk_at(spas, 0)[lg_qc:]))
        if self.sparse:
            for g in range(K):
                m.d.comb += self.ci_addr[g].eq(Mux(lane_ok[g], ci_addr(js_bank, js_base + entry[g]), 0))
            m.d.comb += self.ci_pv_addr.eq(Mux(p_iss, ci_addr(jp_bank, jp_base + p_ent), 0))
        m.d.comb += [e_rd.addr.eq(Cat(p_ent[:e_w], jp_par))]

        # ------------------------------------------------------------- stage 1
        lw = max(lg_ipw, 1)
        s1v, p1v = Signal(), Signal()
        s1_ok = [Signal(name=f"s1_ok{g}") for g in range(K)]
        s1_lane = [Signal(lw, name=f"s1_lane{g}") for g in range(K)]
        s1_ent = [Signal(16, name=f"s1_ent{g}") for g in range(K)]
        s1_pas = Signal.like(spas)
        s1_grp = Signal.like(grp)
        s1_first, s1_last, p1_first, p1_last = Signal(), Signal(), Signal(), Signal()
        p1_lane = Signal(lw)
        p1_ent = Signal(16)
        p1_pass = Signal.like(pas)
        m.d.sync += [s1v.eq(s_iss), p1v.eq(p_iss), s1_pas.eq(spas), s1_grp.eq(grp),
                     s1_first.eq(spas == 0), s1_last.eq(spas == P - 1),
                     p1_first.eq(p_ent == 0), p1_last.eq(p_ent == jp_n - 1),
                     p1_ent.eq(p_ent), p1_pass.eq(pas), p1_lane.eq((jp_base + p_ent)[:lw])]
        for g in range(K):
            m.d.sync += [s1_ok[g].eq(lane_ok[g]), s1_ent[g].eq(entry[g]),
                         s1_lane[g].eq((js_base + entry[g])[:lw])]

        def column(l_data, lane, ent):
            if self.sparse:
                return l_data.word_select(lane, INDEX_WIDTH) if IPW > 1 else l_data[:INDEX_WIDTH]
            return ent

        # score: the S q chunks of the step, K addresses (line g * S + s: chunk s1_pas * S + s
        # of group g's key); pv: V addresses and P
        q_chunk1 = [Signal(8 * M, name=f"q_chunk{s_}") for s_ in range(S)]
        for s_ in range(S):
            m.d.comb += q_chunk1[s_].eq(chunk_of(self.q_data, chunk_at(s1_pas, s_)))
        col = []
        for g in range(K):
            c_ = Signal(16, name=f"col{g}")
            m.d.comb += c_.eq(column(self.ci_data[g] if self.sparse else None, s1_lane[g], s1_ent[g]))
            col.append(c_)
        # (group g's S chunks s1_pas * S .. + S - 1 of its key lie in one word)
        for g in range(K):
            m.d.comb += self.k_addr[g].eq(Mux(s1_ok[g], qkv_addr(js_bank, col[g], chunk_at(s1_pas, 0)[lg_qc:]), 0))
        pcol = Signal(16)
        m.d.comb += pcol.eq(column(self.ci_pv_data, p1_lane, p1_ent))
        # pv pass p: line l = g * S + s takes chunk p * L + l = (p * K + g) * S + s
        for g in range(K):
            gs = Signal(range(npass * K + 1), name=f"pv_step{g}")
            m.d.comb += gs.eq(p1_pass * K + g)
            m.d.comb += self.v_addr[g].eq(Mux(p1v & (gs * S < CPT), qkv_addr(jp_bank, pcol, chunk_at(gs, 0)[lg_qc:]),
                                              0))
        # P = min((E * r + round) >> PROB_SHIFT, PROB_MAX): the product here, the rest in stage 2
        e_times_r = Signal(E_FORMAT.width + cfg.recip_width)
        m.d.comb += e_times_r.eq(e_rd.data * jp_recip)

        # ------------------------------------------------------------- stage 2
        s2v, p2v = Signal(), Signal()
        s2_ok = [Signal(name=f"s2_ok{g}") for g in range(K)]
        s2_pas = Signal.like(spas)
        s2_grp = Signal.like(grp)
        s2_first, s2_last = Signal(), Signal()
        s2_q = [Signal(8 * M, name=f"s2_q{s_}") for s_ in range(S)]
        p2_etr = Signal.like(e_times_r)
        p2_pass = Signal.like(pas)
        m.d.sync += [s2v.eq(s1v), p2v.eq(p1v), s2_pas.eq(s1_pas), s2_grp.eq(s1_grp),
                     s2_first.eq(Mux(p1v, p1_first, s1_first)), s2_last.eq(Mux(p1v, p1_last, s1_last)),
                     p2_etr.eq(e_times_r), p2_pass.eq(p1_pass)]
        p2_prob = Signal(range(PROB_MAX + 1))
        rounded = Signal(e_times_r.shape().width + 1)
        m.d.comb += rounded.eq((p2_etr + (1 << (PROB_SHIFT - 1))) >> PROB_SHIFT)
        m.d.comb += p2_prob.eq(Mux(rounded > PROB_MAX, PROB_MAX, rounded))
        m.d.sync += [a.eq(b) for a, b in zip(s2_q, q_chunk1)]
        m.d.sync += [s2_ok[g].eq(s1_ok[g]) for g in range(K)]
        for l, ln in enumerate(lines):
            g, s_ = divmod(l, S)
            kch = chunk_of(self.k_data[g], chunk_at(s2_pas, s_))
            gs = Signal(range(npass * K + 1), name=f"pv2_step{l}")
            m.d.comb += gs.eq(p2_pass * K + g)
            vch = chunk_of(self.v_data[g], chunk_at(gs, s_))
            cc = p2_pass * L + l
            s_ok = s2_ok[g] & s2v if g < K else Const(0)   # lines beyond K * S do not score
            m.d.comb += [ln.pv.eq(p2v), ln.first.eq(s2_first), ln.last.eq(s2_last),
                         ln.valid.eq(Mux(p2v, cc < CPT, s_ok))]
            for i in range(M):
                m.d.comb += [ln.a[i].eq(Mux(p2v, p2_prob, byte(s2_q[s_ % S], i))),
                             ln.b[i].eq(Mux(p2v, byte(vch, i), byte(kch, i)))]

        # --------------------------------------------------- stages 3, 4, 5 (results)
        s3v, s4v, s5v, p3v, p4v = Signal(), Signal(), Signal(), Signal(), Signal()
        s3_grp, s4_grp, s5_grp = Signal.like(grp), Signal.like(grp), Signal.like(grp)
        p3_pass, p4_pass = Signal.like(pas), Signal.like(pas)
        m.d.sync += [s3v.eq(s2v), s4v.eq(s3v), s5v.eq(s4v), p3v.eq(p2v), p4v.eq(p3v),
                     s3_grp.eq(s2_grp), s4_grp.eq(s3_grp), s5_grp.eq(s4_grp), p3_pass.eq(p2_pass),
                     p4_pass.eq(p3_pass)]
        # stage 5: a group's score is the sum of its S lines' partial scores (an exact integer
        # that fits score_width, so the wrap-around sum is exact)
        g_dot = [Signal(signed(cfg.score_width), name=f"g_dot{g}") for g in range(K)]
        g_valid = [Signal(name=f"g_valid{g}") for g in range(K)]
        for g in range(K):
            tree = [lines[g * S + s_].dot for s_ in range(S)]
            while len(tree) > 1:
                tree = [tree[i] + tree[i + 1] for i in range(0, len(tree), 2)]
            m.d.sync += [g_dot[g].eq(tree[0]), g_valid[g].eq(lines[g * S].dot_valid)]
        run_max = self.max
        for g in range(K):
            m.d.comb += [s_wr[g].addr.eq(Cat(s5_grp[:slot_w], js_par)), s_wr[g].data.eq(g_dot[g]),
                         s_wr[g].en.eq(g_valid[g])]
            nxt = Signal(signed(cfg.score_width), name=f"max{g}")
            m.d.comb += nxt.eq(Mux(g_valid[g] & (g_dot[g] > run_max), g_dot[g], run_max))
            run_max = nxt
        m.d.sync += self.max.eq(run_max)
        with m.If(self.score_start):
            m.d.sync += self.max.eq(-(1 << (cfg.score_width - 1)))
        for cc in range(CPT):
            l, p = cc % L, cc // L
            with m.If(lines[l].vec_valid & (p4_pass == p)):
                m.d.sync += [self.out[cc * M + i].eq(lines[l].vec[i]) for i in range(M)]

        # job completion: a job is done when its last result has been written
        s_active, p_active = Signal(), Signal()
        s_draining = s_iss | s1v | s2v | s3v | s4v | s5v
        p_draining = p_iss | p1v | p2v | p3v | p4v
        m.d.comb += [self.score_done.eq(s_active & ~s_draining), self.pv_done.eq(p_active & ~p_draining),
                     self.score_active.eq(s_active), self.pv_active.eq(p_active)]
        with m.If(self.score_done):
            m.d.sync += s_active.eq(0)
        with m.If(self.pv_done):
            m.d.sync += p_active.eq(0)
        with m.If(self.score_start):
            m.d.sync += s_active.eq(1)
        with m.If(self.pv_start):
            m.d.sync += p_active.eq(1)
        m.d.comb += self.busy.eq(s_active | p_active)

        # ------------------------------------------------------------------ exp unit
        x_run = Signal()
        x_e = Signal(16)
        x_g = Signal(slot_w + 1)
        x_l = Signal(range(max(K, 2)))
        x_n = Signal(16)
        x_par = Signal(sb)
        x_m = Signal(signed(cfg.score_width))
        x_mult = Signal(16)
        x_shift = Signal(6)
        with m.If(self.exp_start):
            m.d.sync += [x_run.eq(self.exp_n != 0), x_e.eq(0), x_g.eq(0), x_l.eq(0), x_n.eq(self.exp_n),
                         x_par.eq(self.exp_parity), x_m.eq(self.exp_m), x_mult.eq(self.exp_mult),
                         x_shift.eq(self.exp_shift), self.exp_sum.eq(0)]
        with m.If(x_run):
            m.d.sync += [x_e.eq(x_e + 1), x_l.eq(x_l + 1)]
            with m.If(x_l == K - 1):
                m.d.sync += [x_l.eq(0), x_g.eq(x_g + 1)]
            with m.If(x_e == x_n - 1):
                m.d.sync += x_run.eq(0)
        for g in range(K):
            m.d.comb += s_rd[g].addr.eq(Cat(x_g[:slot_w], x_par))
        # x1: difference to the row maximum
        x1v, x1_l, x1_e = Signal(), Signal.like(x_l), Signal(16)
        m.d.sync += [x1v.eq(x_run), x1_l.eq(x_l), x1_e.eq(x_e)]
        score = Array(p.data for p in s_rd)[x1_l]
        xd_v, xd_e = Signal(), Signal(16)
        xd_diff = Signal(cfg.score_width + 1)
        m.d.sync += [xd_v.eq(x1v), xd_e.eq(x1_e), xd_diff.eq(x_m - score)]
        # xd: product
        x2v, x2_e = Signal(), Signal(16)
        x2_prod = Signal(cfg.score_width + 1 + 16)
        m.d.sync += [x2v.eq(xd_v), x2_e.eq(xd_e), x2_prod.eq(xd_diff * x_mult)]
        # x2: rounding shift and saturation to z
        rnd = Signal(63)
        m.d.comb += rnd.eq((Const(1, 64) << x_shift) >> 1)
        zfull = Signal(x2_prod.shape().width + 1)
        m.d.comb += zfull.eq((x2_prod + rnd) >> x_shift)
        x3v, x3_e = Signal(), Signal(16)
        x3_z = Signal(Z_FORMAT.width)
        m.d.sync += [x3v.eq(x2v), x3_e.eq(x2_e), x3_z.eq(Mux(zfull > Z_FORMAT.max, Z_FORMAT.max, zfull))]
        # x3: table and shift
        ipart = x3_z[EXP_FRAC_BITS:]
        e_val = Signal(E_FORMAT.width)
        m.d.comb += e_val.eq(Mux(ipart > EXP_BITS, 0, _rom(EXP2_LUT, E_FORMAT.width, x3_z[:EXP_FRAC_BITS])
                                 >> ipart[:5]))
        x4v, x4_e = Signal(), Signal(16)
        x4_val = Signal(E_FORMAT.width)
        m.d.sync += [x4v.eq(x3v), x4_e.eq(x3_e), x4_val.eq(e_val)]
        m.d.comb += [e_wr.addr.eq(Cat(x4_e[:e_w], x_par)), e_wr.data.eq(x4_val), e_wr.en.eq(x4v)]
        with m.If(x4v & ~self.exp_start):
            m.d.sync += self.exp_sum.eq(self.exp_sum + x4_val)
        m.d.comb += self.exp_busy.eq(x_run | x1v | xd_v | x2v | x3v | x4v)
        return m
