"""Denser and Sparser Engines of the ViTCoD accelerator (one class, two column sources).

An engine owns L ``AttentionLine``s, a score buffer per line, an exponent
buffer and an exponent unit. Per query row it runs three jobs, started by the
accelerator's controller:

* **score** (SDDMM): L keys at a time, ``d / M`` cycles each; the Denser Engine's
  keys are the global columns ``0 .. G-1``, the Sparser Engine's are the row's
  CSR entries, read from the index buffer (it never touches a pruned entry).
  Scores go to the line's score buffer; the job reports the row maximum.
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

    The accelerator connects the buffer read ports: ``q_addr``/``q_data``,
    ``k_addr[l]``/``k_data[l]``, ``v_addr[l]``/``v_data[l]`` and, for the
    Sparser Engine, ``ci_addr[l]``/``ci_data[l]`` and ``ci_pv_addr``/``ci_pv_data``.
    """

    def __init__(self, cfg: VitcodConfig, *, sparse: bool, lines: int):
        self.cfg = cfg
        self.sparse = sparse
        self.L = lines
        W = cfg.data_width
        self.qkv_aw = _log2(cfg.qkv_bank_words) + 1
        self.ci_aw = _log2(cfg.ci_bank_words) + 1
        self.q_addr = Signal(self.qkv_aw)
        self.q_data = Signal(W)
        self.k_addr = [Signal(self.qkv_aw, name=f"k_addr{l}") for l in range(lines)]
        self.k_data = [Signal(W, name=f"k_data{l}") for l in range(lines)]
        self.v_addr = [Signal(self.qkv_aw, name=f"v_addr{l}") for l in range(lines)]
        self.v_data = [Signal(W, name=f"v_data{l}") for l in range(lines)]
        self.ci_addr = [Signal(self.ci_aw, name=f"ci_addr{l}") for l in range(lines)]
        self.ci_data = [Signal(W, name=f"ci_data{l}") for l in range(lines)]
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
        cfg, L = self.cfg, self.L
        M, CPT, CPW, WPT, IPW = cfg.macs, cfg.chunks_per_token, cfg.chunks_per_word, cfg.words_per_token, \
            cfg.indices_per_word
        lg_cpw, lg_ipw = _log2(CPW), _log2(IPW)
        qkv_local = self.qkv_aw - 1
        ci_local = self.ci_aw - 1
        m = Module()

        lines = [AttentionLine(M, cfg.score_width, cfg.pv_width) for _ in range(L)]
        for l, ln in enumerate(lines):
            m.submodules[f"line{l}"] = ln

        slots = -(-cfg.max_tokens // L)
        slot_w = _log2(slots)
        smems = []
        s_wr, s_rd = [], []
        for l in range(L):
            mem = Memory(shape=signed(cfg.score_width), depth=cfg.row_slots << slot_w, init=[])
            m.submodules[f"smem{l}"] = mem
            s_wr.append(mem.write_port())
            s_rd.append(mem.read_port())
            smems.append(mem)
        e_w = _log2(cfg.max_tokens)
        emem = Memory(shape=unsigned(E_FORMAT.width), depth=cfg.row_slots << e_w, init=[])
        m.submodules.emem = emem
        e_wr = emem.write_port()
        e_rd = emem.read_port()

        def qkv_addr(bank, row, chunk):
            local = Signal(qkv_local)
            m.d.comb += local.eq(row * WPT + (chunk >> lg_cpw))
            return Cat(local, bank)

        def ci_addr(bank, entry):
            return Cat((entry >> lg_ipw)[:ci_local], bank)

        def chunk_of(word, sel):
            return word.word_select(sel, 8 * M) if CPW > 1 else word[:8 * M]

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
        s_ebase = Signal(16)    # first entry of the score group
        grp = Signal(slot_w + 1)
        chunk = Signal(range(max(CPT, 2)))
        p_ent = Signal(16)      # pv entry
        npass = -(-CPT // L)
        pas = Signal(range(max(npass, 2)))

        s_last = Signal()
        p_last = Signal()
        m.d.comb += [s_last.eq(s_iss & (chunk == CPT - 1) & (s_ebase + L >= js_n)),
                     p_last.eq(p_iss & (p_ent == jp_n - 1) & (pas == npass - 1)),
                     self.issue_free.eq(~(s_iss | p_iss) | s_last | p_last)]

        with m.If(s_iss):
            m.d.sync += chunk.eq(chunk + 1)
            with m.If(chunk == CPT - 1):
                m.d.sync += [chunk.eq(0), grp.eq(grp + 1), s_ebase.eq(s_ebase + L)]
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
                         s_iss.eq(self.n != 0), s_ebase.eq(0), grp.eq(0), chunk.eq(0)]
        with m.If(self.pv_start):
            m.d.sync += [jp_bank.eq(self.bank), jp_n.eq(self.n), jp_base.eq(self.base), jp_par.eq(self.parity),
                         jp_recip.eq(self.recip),
                         p_iss.eq(self.n != 0), p_ent.eq(0), pas.eq(0)]
            with m.If(self.n == 0):
                m.d.sync += [o.eq(0) for o in self.out]

        # issue-stage addresses
        entry = [Signal(16, name=f"entry{l}") for l in range(L)]
        lane_ok = [Signal(name=f"lane_ok{l}") for l in range(L)]
        for l in range(L):
            m.d.comb += [entry[l].eq(s_ebase + l), lane_ok[l].eq(s_iss & (s_ebase + l < js_n))]
        m.d.comb += self.q_addr.eq(qkv_addr(js_bank, js_row, chunk))
        if self.sparse:
            for l in range(L):
                m.d.comb += self.ci_addr[l].eq(Mux(lane_ok[l], ci_addr(js_bank, js_base + entry[l]), 0))
            m.d.comb += self.ci_pv_addr.eq(Mux(p_iss, ci_addr(jp_bank, jp_base + p_ent), 0))
        m.d.comb += [e_rd.addr.eq(Cat(p_ent[:e_w], jp_par))]

        # ------------------------------------------------------------- stage 1
        lw = max(lg_ipw, 1)
        s1v, p1v = Signal(), Signal()
        s1_ok = [Signal(name=f"s1_ok{l}") for l in range(L)]
        s1_lane = [Signal(lw, name=f"s1_lane{l}") for l in range(L)]
        s1_ent = [Signal(16, name=f"s1_ent{l}") for l in range(L)]
        s1_chunk = Signal.like(chunk)
        s1_grp = Signal.like(grp)
        s1_first, s1_last, p1_first, p1_last = Signal(), Signal(), Signal(), Signal()
        p1_lane = Signal(lw)
        p1_ent = Signal(16)
        p1_pass = Signal.like(pas)
        m.d.sync += [s1v.eq(s_iss), p1v.eq(p_iss), s1_chunk.eq(chunk), s1_grp.eq(grp),
                     s1_first.eq(chunk == 0), s1_last.eq(chunk == CPT - 1),
                     p1_first.eq(p_ent == 0), p1_last.eq(p_ent == jp_n - 1),
                     p1_ent.eq(p_ent), p1_pass.eq(pas), p1_lane.eq((jp_base + p_ent)[:lw])]
        for l in range(L):
            m.d.sync += [s1_ok[l].eq(lane_ok[l]), s1_ent[l].eq(entry[l]),
                         s1_lane[l].eq((js_base + entry[l])[:lw])]

        def column(l_data, lane, ent):
            if self.sparse:
                return l_data.word_select(lane, INDEX_WIDTH) if IPW > 1 else l_data[:INDEX_WIDTH]
            return ent

        # score: K addresses; pv: V addresses and P
        q_chunk1 = Signal(8 * M)
        m.d.comb += q_chunk1.eq(chunk_of(self.q_data, s1_chunk[:lg_cpw] if CPW > 1 else 0))
        for l in range(L):
            col = Signal(16, name=f"col{l}")
            m.d.comb += col.eq(column(self.ci_data[l], s1_lane[l], s1_ent[l]))
            m.d.comb += self.k_addr[l].eq(Mux(s1_ok[l], qkv_addr(js_bank, col, s1_chunk), 0))
        pcol = Signal(16)
        m.d.comb += pcol.eq(column(self.ci_pv_data, p1_lane, p1_ent))
        for l in range(L):
            cc = Signal(range(npass * L + 1), name=f"cc{l}")
            m.d.comb += cc.eq(p1_pass * L + l)
            m.d.comb += self.v_addr[l].eq(Mux(p1v & (cc < CPT), qkv_addr(jp_bank, pcol, cc), 0))
        prob = Signal(range(PROB_MAX + 1))
        e_times_r = Signal(E_FORMAT.width + cfg.recip_width)
        m.d.comb += e_times_r.eq(e_rd.data * jp_recip)
        rounded = Signal(e_times_r.shape().width + 1)
        m.d.comb += rounded.eq((e_times_r + (1 << (PROB_SHIFT - 1))) >> PROB_SHIFT)
        m.d.comb += prob.eq(Mux(rounded > PROB_MAX, PROB_MAX, rounded))

        # ------------------------------------------------------------- stage 2
        s2v, p2v = Signal(), Signal()
        s2_ok = [Signal(name=f"s2_ok{l}") for l in range(L)]
        s2_chunk = Signal.like(chunk)
        s2_grp = Signal.like(grp)
        s2_first, s2_last = Signal(), Signal()
        s2_q = Signal(8 * M)
        p2_prob = Signal.like(prob)
        p2_pass = Signal.like(pas)
        m.d.sync += [s2v.eq(s1v), p2v.eq(p1v), s2_chunk.eq(s1_chunk), s2_grp.eq(s1_grp),
                     s2_first.eq(Mux(p1v, p1_first, s1_first)), s2_last.eq(Mux(p1v, p1_last, s1_last)),
                     s2_q.eq(q_chunk1), p2_prob.eq(prob), p2_pass.eq(p1_pass)]
        m.d.sync += [s2_ok[l].eq(s1_ok[l]) for l in range(L)]
        for l, ln in enumerate(lines):
            kch = chunk_of(self.k_data[l], s2_chunk[:lg_cpw] if CPW > 1 else 0)
            cc = p2_pass * L + l
            vch = chunk_of(self.v_data[l], cc[:lg_cpw] if CPW > 1 else 0)
            m.d.comb += [ln.pv.eq(p2v), ln.first.eq(s2_first), ln.last.eq(s2_last),
                         ln.valid.eq(Mux(p2v, cc < CPT, s2_ok[l] & s2v))]
            for i in range(M):
                m.d.comb += [ln.a[i].eq(Mux(p2v, p2_prob, byte(s2_q, i))),
                             ln.b[i].eq(Mux(p2v, byte(vch, i), byte(kch, i)))]

        # ------------------------------------------------------ stages 3, 4 (results)
        s3v, s4v, p3v, p4v = Signal(), Signal(), Signal(), Signal()
        s3_grp, s4_grp = Signal.like(grp), Signal.like(grp)
        p3_pass, p4_pass = Signal.like(pas), Signal.like(pas)
        m.d.sync += [s3v.eq(s2v), s4v.eq(s3v), p3v.eq(p2v), p4v.eq(p3v),
                     s3_grp.eq(s2_grp), s4_grp.eq(s3_grp), p3_pass.eq(p2_pass), p4_pass.eq(p3_pass)]
        run_max = self.max
        for l, ln in enumerate(lines):
            m.d.comb += [s_wr[l].addr.eq(Cat(s4_grp[:slot_w], js_par)), s_wr[l].data.eq(ln.dot),
                         s_wr[l].en.eq(ln.dot_valid)]
            nxt = Signal(signed(cfg.score_width), name=f"max{l}")
            m.d.comb += nxt.eq(Mux(ln.dot_valid & (ln.dot > run_max), ln.dot, run_max))
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
        s_draining = s_iss | s1v | s2v | s3v | s4v
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
        x_l = Signal(range(max(L, 2)))
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
            with m.If(x_l == L - 1):
                m.d.sync += [x_l.eq(0), x_g.eq(x_g + 1)]
            with m.If(x_e == x_n - 1):
                m.d.sync += x_run.eq(0)
        for l in range(L):
            m.d.comb += s_rd[l].addr.eq(Cat(x_g[:slot_w], x_par))
        # x1: difference and product
        x1v, x1_l, x1_e = Signal(), Signal.like(x_l), Signal(16)
        m.d.sync += [x1v.eq(x_run), x1_l.eq(x_l), x1_e.eq(x_e)]
        score = Array(p.data for p in s_rd)[x1_l]
        diff = Signal(cfg.score_width + 1)
        m.d.comb += diff.eq(x_m - score)
        x2v, x2_e = Signal(), Signal(16)
        x2_prod = Signal(cfg.score_width + 1 + 16)
        m.d.sync += [x2v.eq(x1v), x2_e.eq(x1_e), x2_prod.eq(diff * x_mult)]
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
        m.d.comb += self.exp_busy.eq(x_run | x1v | x2v | x3v | x4v)
        return m
