"""The ViTCoD accelerator: one attention head at a time, many heads in a row.

Data path: the loader writes a head's Q, K, V, row pointers and column indices
from the data stream into one of two buffer banks (double buffering: the next
head loads while the current one computes), checking every index as it
arrives. The controller then runs the rows through the Denser Engine (global
columns) and the Sparser Engine (CSR entries) side by side, in a row pipeline
``score(i+1) | softmax(i) | pv(i)``: while the engines' lines compute the scores
of the next row, the exponent units and the divider finish the softmax of the
current one. Each output row (both engines' share of ``P·V``, requantized to
int8) leaves on the output stream.

Data stream layout of one head (``data_width`` bits per beat, little-endian
bytes, the first element in the lowest bits):

1. Q: ``Nq * d`` int8, row by row (``Nq * d / B`` beats, B = data_width / 8);
2. K: ``Nk * d`` int8 in polarized key order;
3. V: ``Nk * d`` int8 in polarized key order;
4. row_ptr: ``Nq + 1`` uint16, ``B / 2`` per beat, the last beat padded;
5. col_idx: ``nnz`` uint16 (positions in the polarized order), ``B / 2`` per beat.

With the Q/K decoder (``decoder=True``) Q and K do not travel per head. A
*layer* command (``layer = 1``: Nq, Nk, Hc) carries the layer's compressed Q
then compressed K, int8 ``[Hc, N, d]`` in model token order, as ``Hc`` beats
(one per compressed head) for each beat-sized word of each token row; they go
to an on-chip layer store. A head command (``layer = 0``) then carries

1. the key order: ``Nk`` uint16, polarized position -> model token (``B / 2`` per beat);
2. V, row_ptr, col_idx as above;

and the loader replays the head's Q rows, and its K rows through the key
order, from the store into the decoder (one beat per cycle, two cycles of
latency), which writes the head's decoded Q and K into the bank. A head whose
Nq, Nk or Hc differs from the loaded layer is refused (``ERR_LAYER``).

Output: ``Nq * d / B`` beats, row by row, int8.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from attnforge.numfmt import INT8
from attnforge.softmax_int import RECIP_BITS

from .config import ERR_COL_IDX, ERR_LAYER, ERR_ROW_PTR, ERR_SIZE, ERROR_BITS, INDEX_WIDTH, VitcodConfig
from attnforge.hw.common import log2_ceil as _log2, mux_tree as _pick

from .engine import Engine
from .output import OutputStage
from .scheduler import RowScheduler
from .softmax import SoftmaxStage

__all__ = ["VitcodAccelerator"]


def _requant_product(value, mult):
    """The multiply of ``_requant`` (the rest is ``_requant_round``)."""
    return value * Cat(mult, Const(0, 1)).as_signed()


def _requant_round(m, prod, shift, name):
    """Rounding shift and int8 saturation of a requantizer's product."""
    rnd = Signal(64, name=f"{name}_rnd")
    m.d.comb += rnd.eq((Const(1, 64) << shift) >> 1)
    shifted = Signal(signed(prod.shape().width + 1), name=f"{name}_sh")
    m.d.comb += shifted.eq((prod + rnd) >> shift)
    out = Signal(signed(8), name=name)
    m.d.comb += out.eq(Mux(shifted > INT8.max, INT8.max, Mux(shifted < INT8.min, INT8.min, shifted)))
    return out


def _requant(m, value, mult, shift, name):
    """Round-half-up requantization to int8 (``attnforge.numfmt.Requantizer``) in hardware."""
    prod = Signal(signed(value.shape().width + 18), name=f"{name}_prod")
    m.d.comb += prod.eq(_requant_product(value, mult))
    return _requant_round(m, prod, shift, name)


class VitcodAccelerator(wiring.Component):
    """ViTCoD attention accelerator (Denser + Sparser Engines, integer softmax).

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    cmd : ``In(stream.Signature(config.cmd_layout))``
        One transfer per head: Nq, Nk, G, nnz and the exponent and output
        requantizers (multiplier, shift). The head's data follows on ``data``.
        With the decoder, also Hc, the head's decoder weights and requantizers,
        and ``layer``: 1 makes the transfer a layer load (Nq, Nk, Hc) instead of a head.
    data : ``In(stream.Signature(config.data_width))``
        Q, K, V, row pointers and column indices of each commanded head, in order.
    o : ``Out(stream.Signature(config.data_width))``
        The int8 output rows of every head without an error, in order.
    busy : ``Out(1)``
        A head is loading, waiting or computing.
    heads_done : ``Out(16)``
        Heads computed and fully output since reset (counted with their last output beat).
    heads_failed : ``Out(16)``
        Commands refused: heads (their data consumed and dropped, no output) and, with the
        decoder, layer loads.
    error : ``Out(4)``
        Sticky since reset: ``ERR_SIZE``, ``ERR_ROW_PTR``, ``ERR_COL_IDX``, ``ERR_LAYER`` (decoder).
    """

    def __init__(self, config: VitcodConfig):
        if not isinstance(config, VitcodConfig):
            raise TypeError(f"VitcodAccelerator needs a VitcodConfig, not {config!r}")
        self._config = config
        super().__init__({
            "cmd": In(stream.Signature(config.cmd_layout)),
            "data": In(stream.Signature(config.data_width)),
            "o": Out(stream.Signature(config.data_width)),
            "busy": Out(1),
            "heads_done": Out(16),
            "heads_failed": Out(16),
            "error": Out(ERROR_BITS),
        })

    @property
    def config(self) -> VitcodConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        W, B, WPT, IPW = cfg.data_width, cfg.data_bytes, cfg.words_per_token, cfg.indices_per_word
        lg_ipw = _log2(IPW)
        Nmax = cfg.max_tokens

        # ------------------------------------------------------------------ buffers
        qkv_lw = _log2(cfg.qkv_bank_words)
        rp_lw = _log2(cfg.rp_bank_words)
        ci_lw = _log2(cfg.ci_bank_words)
        # Q/K/V words hold qkv_word_chunks chunks (QB beats): a score step reads a key's S chunks,
        # and a pv pass a line group's S chunks, from one word, so each engine has one K and one
        # V read port per score group (K of them), not one per line.
        QB = cfg.qkv_beats_per_word
        lg_qb = _log2(QB)
        mems = {}
        for name, width, depth in (("q", W * QB, cfg.qkv_bank_words), ("k", W * QB, cfg.qkv_bank_words),
                                   ("v", W * QB, cfg.qkv_bank_words), ("rp", W, cfg.rp_bank_words),
                                   ("ci", W, cfg.ci_bank_words)):
            mem = Memory(shape=unsigned(width), depth=2 * depth, init=[])
            m.submodules[f"{name}_buf"] = mem
            mems[name] = mem
        wports = {name: mem.write_port() for name, mem in mems.items()}

        m.submodules.denser = dense = Engine(cfg, sparse=False, lines=cfg.dense_lines)
        m.submodules.sparser = sparse = Engine(cfg, sparse=True, lines=cfg.sparse_lines)
        engines = (dense, sparse)
        for eng in engines:
            wiring.connect(m, eng.q, mems["q"].read_port())
            for g in range(eng.score_groups):
                wiring.connect(m, eng.k[g], mems["k"].read_port())
                wiring.connect(m, eng.v[g], mems["v"].read_port())
        for g in range(sparse.score_groups):
            wiring.connect(m, sparse.col[g], mems["ci"].read_port())
        wiring.connect(m, sparse.pv_col, mems["ci"].read_port())
        rp0, rp1 = mems["rp"].read_port(), mems["rp"].read_port()

        # ------------------------------------------------------------------- status
        full = [Signal(name="full0"), Signal(name="full1")]   # bank holds a loaded head
        err = Signal(ERROR_BITS)
        m.d.comb += [self.error.eq(err)]
        heads_done = Signal(16)
        heads_failed = Signal(16)
        m.d.comb += [self.heads_done.eq(heads_done), self.heads_failed.eq(heads_failed)]

        # per-bank head descriptors
        desc_fields = ("nq", "nk", "g", "nnz", "exp_mult", "exp_shift", "out_mult", "out_shift")
        desc = [{f: Signal.like(getattr(self.cmd.p, f), name=f"b{b}_{f}") for f in desc_fields} for b in range(2)]

        # ------------------------------------------------------------------- loader
        lb = Signal()              # bank being loaded
        ld = {f: Signal.like(getattr(self.cmd.p, f), name=f"ld_{f}") for f in desc_fields}
        dec_fields = ("hc", "wq", "wk", "dq_mult", "dq_shift", "dk_mult", "dk_shift") if cfg.decoder else ()
        ld.update({f: Signal.like(getattr(self.cmd.p, f), name=f"ld_{f}") for f in dec_fields})
        sec = Signal(3)            # 0 Q, 1 K, 2 V, 3 RP, 4 CI, 5 key order (decoder)
        cnt = Signal(32)           # beats left in this section (or in the dropped head)
        waddr = Signal(max(qkv_lw + lg_qb, rp_lw, ci_lw) + 1)   # beats of a section
        ent = Signal(INDEX_WIDTH + 1)   # index of lane 0's entry in RP / CI sections
        rp_prev = Signal(INDEX_WIDTH)
        head_err = Signal(ERROR_BITS)
        ci_beats = Signal(INDEX_WIDTH)
        q_hold = [Signal(W, name=f"q_hold{j}") for j in range(QB - 1)]
        # Outputs come from registers through plain assignments (no FSM-conditional
        # combinational processes): Icarus does not evaluate those at time 0.
        ld_taking = Signal()       # LOAD or DROP: data.ready
        ld_busy = Signal()         # LOAD, DROP or COMMIT

        # With the decoder, the Q and K sections are replayed from the layer store (``src``),
        # not taken from the data stream.
        replaying = Signal()
        r_valid = Signal()         # a replayed beat is on src_data
        src_data = Signal(W)
        take = Signal()
        if cfg.decoder:
            m.d.comb += take.eq(Mux(replaying, r_valid, self.data.valid & self.data.ready))
        else:
            m.d.comb += [take.eq(self.data.valid & self.data.ready), src_data.eq(self.data.payload)]
        dc = Signal(5)             # compressed head of the current word (decoder)
        decoding = Signal()
        dec_last = Signal()
        dec_word = Signal(W)
        dacc, dsum = [], []
        if cfg.decoder:
            # Q/K decoder: each Q/K word arrives (from the layer store) as hc beats, one per
            # compressed head; lane b accumulates w[c] * x_c[b] and is requantized to int8.
            m.d.comb += [decoding.eq(sec <= 1), dec_last.eq(dc == ld["hc"] - 1)]
            wsel = Mux(sec == 0, Array(ld["wq"][c] for c in range(cfg.decoder_heads))[dc],
                       Array(ld["wk"][c] for c in range(cfg.decoder_heads))[dc])
            dmult = Mux(sec == 0, ld["dq_mult"], ld["dk_mult"])
            dshift = Mux(sec == 0, ld["dq_shift"], ld["dk_shift"])
            dw = 16 + (cfg.decoder_heads - 1).bit_length() + 1
            lanes_dec = []
            for b in range(B):
                acc = Signal(signed(dw), name=f"dacc{b}")
                tot = Signal(signed(dw), name=f"dsum{b}")
                m.d.comb += tot.eq(Mux(dc == 0, 0, acc) + wsel * src_data[8 * b:8 * b + 8].as_signed())
                dacc.append(acc)
                dsum.append(tot)
                lanes_dec.append(_requant(m, tot, dmult, dshift, f"dlane{b}"))
            m.d.comb += dec_word.eq(Cat(*lanes_dec))

        def qk_beats(n, fields):
            return n * WPT * fields["hc"] if cfg.decoder else n * WPT
        lanes = [self.data.payload[INDEX_WIDTH * k:INDEX_WIDTH * (k + 1)] for k in range(IPW)]
        words = lambda n: n * WPT  # noqa: E731  (beats of n token rows)
        idx_beats = lambda n: (n + IPW - 1) >> lg_ipw  # noqa: E731  (beats of n uint16 indices)

        def head_stream_beats(p):
            """Data-stream beats of a head (what a refused head's drop consumes)."""
            qk = idx_beats(p.nk) if cfg.decoder else qk_beats(p.nq, p) + qk_beats(p.nk, p)
            return qk + words(p.nk) + ((p.nq + IPW) >> lg_ipw) + idx_beats(p.nnz)

        if cfg.decoder:
            # ------------------------------------------------------- layer store (decoder)
            # A layer command loads the compressed Q then K (model token order; per
            # beat-sized word, hc beats, one per compressed head) into the store; each head
            # then sends its key order (polarized position -> model token) and the loader
            # replays its Q rows, and its K rows through the key order, into the decoder.
            DH = cfg.decoder_heads
            st_aw = _log2(cfg.qk_store_words)
            m.submodules.qk_store = st_mem = Memory(shape=unsigned(W), depth=cfg.qk_store_words, init=[])
            st_w, st_r = st_mem.write_port(), st_mem.read_port()
            m.submodules.order_buf = od_mem = Memory(shape=unsigned(W), depth=cfg.order_words, init=[])
            od_w, od_r = od_mem.write_port(), od_mem.read_port()
            od_aw = _log2(cfg.order_words)
            st_ok = Signal()           # the store holds a layer of st_nq, st_nk, st_hc
            st_nq, st_nk, st_hc = Signal(INDEX_WIDTH), Signal(INDEX_WIDTH), Signal(5)

            def store_addr(region, row, w, c):
                a = Signal(max(st_aw, 1))
                m.d.comb += a.eq(((region * Nmax + row) * WPT + w) * DH + c)
                return a

            def counters(name):
                return (Signal(name=f"{name}_reg"), Signal(INDEX_WIDTH, name=f"{name}_row"),
                        Signal(range(max(WPT, 2)), name=f"{name}_w"), Signal(5, name=f"{name}_c"))

            def advance(ctr, hc, nq_, nk_):
                """Step (region, row, word, head) in stream order; returns 'this was the last beat'."""
                region, row, w, c = ctr
                last_c, last_w = c == hc - 1, w == WPT - 1
                last_row = row == Mux(region, nk_, nq_) - 1
                m.d.sync += c.eq(c + 1)
                with m.If(last_c):
                    m.d.sync += [c.eq(0), w.eq(w + 1)]
                    with m.If(last_w):
                        m.d.sync += [w.eq(0), row.eq(row + 1)]
                        with m.If(last_row):
                            m.d.sync += [row.eq(0), region.eq(1)]
                return last_c & last_w & last_row & region

            lay = counters("lay")      # layer load: where the next stream beat goes
            m.d.comb += [st_w.addr.eq(store_addr(*lay)), st_w.data.eq(self.data.payload)]
            # replay: issue (key order read) -> stage 1 (store read) -> src_data
            rs_run = Signal()
            rs = counters("rs")
            with m.If(rs_run):
                with m.If(advance(rs, ld["hc"], ld["nq"], ld["nk"])):
                    m.d.sync += rs_run.eq(0)
            m.d.comb += od_r.addr.eq((rs[1] >> lg_ipw)[:max(od_aw, 1)])
            r1_v = Signal()
            r1 = counters("r1")
            m.d.sync += [r1_v.eq(rs_run)] + [a.eq(b) for a, b in zip(r1, rs)]
            key = Signal(INDEX_WIDTH)
            m.d.comb += key.eq(od_r.data.word_select(r1[1][:lg_ipw], INDEX_WIDTH) if lg_ipw
                               else od_r.data[:INDEX_WIDTH])
            m.d.comb += st_r.addr.eq(store_addr(r1[0], Mux(r1[0], key, r1[1]), r1[2], r1[3]))
            m.d.sync += r_valid.eq(r1_v)
            m.d.comb += src_data.eq(Mux(replaying, st_r.data, self.data.payload))
            m.d.comb += [od_w.addr.eq(waddr[:max(od_aw, 1)]), od_w.data.eq(self.data.payload)]

        def commit():
            with m.If(head_err == 0):
                m.d.sync += [Array(full)[lb].eq(1), lb.eq(~lb)]
                for b in range(2):
                    with m.If(lb == b):
                        m.d.sync += [desc[b][f].eq(ld[f]) for f in desc_fields]
            with m.Else():
                m.d.sync += [err.eq(err | head_err), heads_failed.eq(heads_failed + 1)]

        # Rises at the first clock edge after reset. Besides holding commands off during
        # reset, it gives cmd.ready an event to evaluate on: Icarus does not run the
        # netlist's combinational processes at time 0 for inputs that never change.
        alive = Signal()
        m.d.sync += alive.eq(1)
        m.d.comb += [self.data.ready.eq(ld_taking & ~replaying if cfg.decoder else ld_taking),
                     self.cmd.ready.eq(alive & ~ld_busy & ~Mux(lb, full[1], full[0]))]
        word = Signal(W)           # the word to write: the payload, or the decoder's Q/K word
        m.d.comb += word.eq(Mux(decoding, dec_word, self.data.payload))
        word_take = take & ~(decoding & ~dec_last)   # a whole (decoded) word arrives
        with m.FSM(name="loader") as loader_fsm:
            with m.State("IDLE"):
                with m.If(self.cmd.valid & self.cmd.ready):
                    p = self.cmd.p
                    m.d.sync += [ld[f].eq(getattr(p, f)) for f in (*desc_fields, *dec_fields)]
                    # sizes a layer load and a head share (tokens, compressed heads), then the head's own
                    shape_bad = (p.nq == 0) | (p.nq > Nmax) | (p.nk == 0) | (p.nk > Nmax)
                    if cfg.decoder:
                        shape_bad = shape_bad | (p.hc == 0) | (p.hc > cfg.decoder_heads)
                    bad = shape_bad | (p.g > p.nk) | (p.nnz > cfg.max_nnz)
                    m.d.sync += [head_err.eq(0), waddr.eq(0), ent.eq(0), rp_prev.eq(0),
                                 ci_beats.eq(idx_beats(p.nnz)), ld_taking.eq(1), ld_busy.eq(1)]

                    def refuse(bits, beats):
                        m.d.sync += [err.eq(err | bits), heads_failed.eq(heads_failed + 1), cnt.eq(beats)]
                        m.next = "DROP"
                    if cfg.decoder:
                        not_loaded = ~st_ok | (p.nq != st_nq) | (p.nk != st_nk) | (p.hc != st_hc)
                        with m.If(p.layer):
                            m.d.sync += [st_ok.eq(0), st_nq.eq(p.nq), st_nk.eq(p.nk), st_hc.eq(p.hc)]
                            with m.If(shape_bad):
                                refuse(ERR_SIZE, qk_beats(p.nq, p) + qk_beats(p.nk, p))
                            with m.Else():
                                m.d.sync += [cnt.eq(qk_beats(p.nq, p) + qk_beats(p.nk, p))]
                                m.d.sync += [x.eq(0) for x in lay]
                                m.next = "LAYER"
                        with m.Elif(bad):
                            refuse(ERR_SIZE, head_stream_beats(p))
                        with m.Elif(not_loaded):
                            refuse(ERR_LAYER, head_stream_beats(p))
                        with m.Else():
                            # the key order first; Q and K follow from the layer store
                            m.d.sync += [sec.eq(5), cnt.eq(idx_beats(p.nk)), dc.eq(0)]
                            m.next = "LOAD"
                    else:
                        with m.If(bad):
                            refuse(ERR_SIZE, head_stream_beats(p))
                        with m.Else():
                            m.d.sync += [sec.eq(0), cnt.eq(qk_beats(p.nq, p))]
                            m.next = "LOAD"
            with m.State("DROP"):
                with m.If(take):
                    m.d.sync += cnt.eq(cnt - 1)
                    with m.If(cnt == 1):
                        m.d.sync += [ld_taking.eq(0), ld_busy.eq(0)]
                        m.next = "IDLE"
            if cfg.decoder:
                with m.State("LAYER"):
                    m.d.comb += st_w.en.eq(take)
                    with m.If(take):
                        m.d.sync += cnt.eq(cnt - 1)
                        advance(lay, ld["hc"], ld["nq"], ld["nk"])
                        with m.If(cnt == 1):
                            m.d.sync += [st_ok.eq(1), ld_taking.eq(0), ld_busy.eq(0)]
                            m.next = "IDLE"
            with m.State("LOAD"):
                for i, name in enumerate(("rp", "ci"), start=3):
                    lw = {"rp": rp_lw, "ci": ci_lw}[name]
                    wp = wports[name]
                    m.d.comb += [wp.addr.eq(Cat(waddr[:lw], lb)), wp.data.eq(word),
                                 wp.en.eq(word_take & (sec == i))]
                qkv = sec <= 2
                for i, name in enumerate(("q", "k", "v")):
                    wp = wports[name]
                    if QB > 1:
                        # the first QB - 1 beats of a word wait in q_hold (rows are whole words)
                        m.d.comb += [wp.addr.eq(Cat(waddr[lg_qb:][:qkv_lw], lb)), wp.data.eq(Cat(*q_hold, word)),
                                     wp.en.eq(word_take & (sec == i) & (waddr[:lg_qb] == QB - 1))]
                    else:
                        m.d.comb += [wp.addr.eq(Cat(waddr[:qkv_lw], lb)), wp.data.eq(word),
                                     wp.en.eq(word_take & (sec == i))]
                if cfg.decoder:
                    m.d.comb += od_w.en.eq(take & (sec == 5))
                if QB > 1:
                    with m.If(word_take & qkv):
                        for j in range(QB - 1):
                            with m.If(waddr[:lg_qb] == j):
                                m.d.sync += q_hold[j].eq(word)
                with m.If(take):
                    m.d.sync += [cnt.eq(cnt - 1), ent.eq(ent + IPW)]
                    with m.If(~decoding | dec_last):
                        m.d.sync += waddr.eq(waddr + 1)
                    if cfg.decoder:
                        with m.If(decoding):
                            m.d.sync += [dc.eq(Mux(dec_last, 0, dc + 1))]
                            m.d.sync += [a.eq(s_) for a, s_ in zip(dacc, dsum)]
                    # index checks
                    with m.If(sec == 3):
                        prev = rp_prev
                        for k in range(IPW):
                            idx = ent + k
                            val = lanes[k]
                            real = idx <= ld["nq"]
                            bad0 = (idx == 0) & (val != 0)
                            bad_step = (idx != 0) & ((val < prev) | (val - prev > ld["nk"] - ld["g"]))
                            bad_end = (idx == ld["nq"]) & (val != ld["nnz"])
                            with m.If(real & (bad0 | bad_step | bad_end)):
                                m.d.sync += head_err.eq(head_err | ERR_ROW_PTR)
                            prev = val
                        m.d.sync += rp_prev.eq(lanes[IPW - 1])
                    with m.If(sec == 4):
                        for k in range(IPW):
                            with m.If((ent + k < ld["nnz"]) & ((lanes[k] < ld["g"]) | (lanes[k] >= ld["nk"]))):
                                m.d.sync += head_err.eq(head_err | ERR_COL_IDX)
                    if cfg.decoder:
                        with m.If(sec == 5):
                            for k in range(IPW):
                                with m.If((ent + k < ld["nk"]) & (lanes[k] >= ld["nk"])):
                                    m.d.sync += head_err.eq(head_err | ERR_COL_IDX)
                    with m.If(cnt == 1):
                        m.d.sync += [sec.eq(sec + 1), waddr.eq(0), ent.eq(0)]
                        with m.Switch(sec):
                            with m.Case(0):
                                m.d.sync += cnt.eq(qk_beats(ld["nk"], ld))
                            with m.Case(1):
                                m.d.sync += cnt.eq(words(ld["nk"]))
                            with m.Case(2):
                                m.d.sync += cnt.eq((ld["nq"] + IPW) >> lg_ipw)
                            with m.Case(3):
                                m.d.sync += cnt.eq(ci_beats)
                                with m.If(ci_beats == 0):
                                    m.d.sync += ld_taking.eq(0)
                                    m.next = "COMMIT"
                            with m.Case(4):
                                m.d.sync += ld_taking.eq(0)
                                m.next = "COMMIT"
                            if cfg.decoder:
                                with m.Case(5):
                                    # key order in: replay Q and K from the layer store
                                    m.d.sync += [sec.eq(0), cnt.eq(qk_beats(ld["nq"], ld)), rs_run.eq(1)]
                                    m.d.sync += [x.eq(0) for x in rs]
            with m.State("COMMIT"):
                # one cycle so that the last beat's index checks have landed in head_err
                commit()
                m.d.sync += ld_busy.eq(0)
                m.next = "IDLE"
        if cfg.decoder:
            m.d.comb += replaying.eq(loader_fsm.ongoing("LOAD") & (sec <= 1))

        # ------------------------------------------------------- scheduler, softmax, output
        m.submodules.scheduler = scheduler = RowScheduler(cfg)
        m.submodules.softmax = softmax = SoftmaxStage(cfg)
        m.submodules.output = output = OutputStage(cfg)
        wiring.connect(m, scheduler.dense, dense.job)
        wiring.connect(m, scheduler.sparse, sparse.job)
        wiring.connect(m, scheduler.row_ptr[0], rp0)
        wiring.connect(m, scheduler.row_ptr[1], rp1)
        wiring.connect(m, scheduler.softmax_rows, softmax.rows)
        wiring.connect(m, softmax.recips, scheduler.recips)
        wiring.connect(m, softmax.dense_exp, dense.exp)
        wiring.connect(m, softmax.sparse_exp, sparse.exp)
        wiring.connect(m, scheduler.rows, output.row)
        wiring.connect(m, output.o, wiring.flipped(self.o))
        with m.If(output.head_done):
            m.d.sync += heads_done.eq(heads_done + 1)
        banks = scheduler.banks
        m.d.comb += [banks.full.eq(Cat(*full))]
        for b in range(2):
            m.d.comb += [banks.heads[b].eq(Cat(*(desc[b][f] for f in desc_fields)))]
        with m.If(banks.release):
            m.d.sync += Array(full)[banks.release_bank].eq(0)

        m.d.comb += self.busy.eq(ld_busy | full[0] | full[1] | scheduler.busy | output.busy)
        return m
