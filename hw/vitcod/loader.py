"""The ViTCoD loader: commands and data beats into the buffer banks, every index checked.

One command per head (or, with the decoder, per layer load). A head's data
(layout in ``hw/vitcod/accelerator.py``) goes section by section into the
free bank: Q, K, V (``qkv_beats_per_word`` beats joined per buffer word, or
with ``data_width = 2 * 8 * head_dim`` a beat of two token rows as one word), row
pointers, column indices. Sizes are checked when the command arrives, the
row pointers and column indices as they stream in; a refused command's data
is consumed and dropped (nothing hangs), and the error bits stay set. A head
without an error fills its bank and hands it to the row scheduler.

With the decoder, a layer command goes to the ``LayerStore``, and a head
sends its key order first; its Q and K sections are then replayed from the
store through the ``QkDecoder`` instead of coming from the stream.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from attnforge.hw.common import ConfiguredComponent, log2_ceil, mux_tree

from .config import (ERR_COL_IDX, ERR_LAYER, ERR_ROW_PTR, ERR_SIZE, ERROR_BITS, INDEX_WIDTH, STATUS_COUNT_WIDTH,
                     VitcodConfig)
from .decoder import QkDecoder
from .layer_store import LayerStore
from .signatures import HEAD_COMMAND_FIELDS, HeadBanksSignature

__all__ = ["Loader", "token_beats", "qk_beats", "index_beats", "head_data_beats", "command_data_beats"]

# sections of a head's data, in stream order (the key order first with the decoder)
SECTION_Q, SECTION_K, SECTION_V, SECTION_ROW_PTR, SECTION_COL_IDX, SECTION_KEY_ORDER = range(6)


def token_beats(cfg: VitcodConfig, n):
    """Stream beats of n token rows of Q, K or V (``VitcodConfig.token_beats`` as an expression)."""
    tpb = cfg.tokens_per_beat
    return (n + tpb - 1) >> log2_ceil(tpb) if tpb > 1 else n * cfg.words_per_token


def qk_beats(cfg: VitcodConfig, n, fields):
    """Stream beats of n token rows of Q or K (with the decoder: of the layer's ``hc`` heads)."""
    if cfg.decoder:      # one token row per beat at most (VitcodConfig refuses more with the decoder)
        return n * cfg.words_per_token * fields.hc
    return token_beats(cfg, n)


def index_beats(cfg: VitcodConfig, n):
    """Stream beats of n uint16 indices."""
    ipw = cfg.indices_per_word
    return (n + ipw - 1) >> log2_ceil(ipw)


def head_data_beats(cfg: VitcodConfig, p):
    """Data-stream beats of a head command ``p`` (what a refused head's drop consumes)."""
    qk = index_beats(cfg, p.nk) if cfg.decoder else qk_beats(cfg, p.nq, p) + qk_beats(cfg, p.nk, p)
    return qk + token_beats(cfg, p.nk) + index_beats(cfg, 2 * p.nq + 1) + index_beats(cfg, p.nnz)


def command_data_beats(cfg: VitcodConfig, p):
    """Data-stream beats that follow command ``p`` (a head, or with the decoder a layer load),
    whatever the loader then does with them (load or drop): the AXI wrapper's framing."""
    if not cfg.decoder:
        return head_data_beats(cfg, p)
    return Mux(p.layer, qk_beats(cfg, p.nq, p) + qk_beats(cfg, p.nk, p), head_data_beats(cfg, p))


class Loader(ConfiguredComponent):
    """Commands and their data into the two buffer banks, with the size and index checks.

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    cmd : ``In(stream.Signature(config.cmd_layout))``
        One transfer per head or layer load; taken when a bank is free and the loader idle.
    data : ``In(stream.Signature(config.data_width))``
        The commands' data, in order.
    q_write, k_write, v_write : ``In(WritePort.Signature(qkv_addr_width, qkv_word_width))``
        The Q, K and V buffers (bank bit on top).
    rp_write : ``In(WritePort.Signature(rp_addr_width, data_width))``
    ci_write : ``In(WritePort.Signature(ci_addr_width, data_width))``
        The row pointer and column index buffers (``rp_write`` only with ``tiles == 1``).
    rp_tile_writes : ``In(WritePort.Signature(tile_rp_addr_width, tile_rp_width)).array(2 * tiles)``
        (``tiles > 1``) Tile t's row pointer memories: ``2 t`` its rows' starts ``ptr[2i]``
        (and ``ptr[2 Nq]`` as row Nq's start), ``2 t + 1`` their split points ``ptr[2i + 1]``,
        at local row ``i // tiles``, ``tile_rp_words_per_entry`` local rows per word.
    banks : ``Out(HeadBanksSignature(config))``
        Full banks and their heads, to the row scheduler (which releases them).
    busy : ``Out(1)``
        A command is being loaded or dropped, or a bank is full.
    error : ``Out(ERROR_BITS)``
        Sticky since reset: the error bits of every refused command.
    heads_failed : ``Out(STATUS_COUNT_WIDTH)``
        Refused commands since reset.
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        qkv = WritePort.Signature(addr_width=config.qkv_addr_width, shape=unsigned(config.qkv_word_width))
        return {
            "cmd": In(stream.Signature(config.cmd_layout)),
            "data": In(stream.Signature(config.data_width)),
            "q_write": In(qkv), "k_write": In(qkv), "v_write": In(qkv),
            **({"rp_write": In(WritePort.Signature(addr_width=config.rp_addr_width, shape=unsigned(config.data_width)))}
               if config.tiles == 1 else
               {"rp_tile_writes": In(WritePort.Signature(addr_width=config.tile_rp_addr_width,
                                                         shape=unsigned(config.tile_rp_width))).array(2 * config.tiles)}),
            "ci_write": In(WritePort.Signature(addr_width=config.ci_addr_width, shape=unsigned(config.data_width))),
            "banks": Out(HeadBanksSignature(config)),
            "busy": Out(1),
            "error": Out(ERROR_BITS),
            "heads_failed": Out(STATUS_COUNT_WIDTH),
        }

    # -- sizes of a command's data (Amaranth expressions of the command's fields) --------------
    def _qk_beats(self, n, fields):
        return qk_beats(self._config, n, fields)

    def _index_beats(self, n):
        return index_beats(self._config, n)

    def _head_beats(self, p):
        return head_data_beats(self._config, p)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        st = self._state()
        self._sources(m, st)
        with m.FSM(name="loader") as fsm:
            with m.State("IDLE"):
                with m.If(self.cmd.valid & self.cmd.ready):
                    self._accept(m, st)
            with m.State("DROP"):
                with m.If(st.take):
                    m.d.sync += st.beats_left.eq(st.beats_left - 1)
                    with m.If(st.beats_left == 1):
                        m.d.sync += [st.taking.eq(0), st.busy.eq(0)]
                        m.next = "IDLE"
            if cfg.decoder:
                with m.State("LAYER"):
                    m.d.comb += st.store.layer_beats.valid.eq(st.take)
                    with m.If(st.take):
                        m.d.sync += st.beats_left.eq(st.beats_left - 1)
                        with m.If(st.beats_left == 1):
                            m.d.sync += [st.taking.eq(0), st.busy.eq(0)]
                            m.next = "IDLE"
            with m.State("LOAD"):
                self._load(m, st)
            with m.State("COMMIT"):
                # one cycle so that the last beat's index checks have landed in head_error
                self._commit(m, st)
                m.d.sync += st.busy.eq(0)
                m.next = "IDLE"
        if cfg.decoder:
            m.d.comb += st.replaying.eq(fsm.ongoing("LOAD") & (st.section <= SECTION_K))
        with m.If(self.banks.release):
            for b in range(cfg.banks):
                with m.If(self.banks.release_bank == b):
                    m.d.sync += st.full[b].eq(0)
        m.d.comb += [self.banks.full.eq(Cat(*st.full)), self.busy.eq(st.busy | Cat(*st.full).any())]
        return m

    def _state(self):
        cfg = self._config
        word_bits = max(log2_ceil(cfg.qkv_bank_words) + log2_ceil(cfg.qkv_beats_per_word),
                        log2_ceil(cfg.rp_bank_words), log2_ceil(cfg.ci_bank_words)) + 1
        return SimpleNamespace(
            bank=Signal(cfg.bank_bits),                 # bank being loaded
            full=[Signal(name=f"full{b}") for b in range(cfg.banks)],
            command=Signal(cfg.cmd_layout),             # the command being loaded
            section=Signal(range(SECTION_KEY_ORDER + 1)),
            beats_left=Signal(cfg.command_beats_width),  # in this section (or in the dropped command)
            word=Signal(word_bits),                     # beats (decoded words) of the section so far
            entry=Signal(INDEX_WIDTH + 1),              # index of lane 0's entry in index sections
            prev_pointer=Signal(INDEX_WIDTH),           # the previous beat's last row pointer
            row_start_pointer=Signal(INDEX_WIDTH),      # the previous beats' last even pointer (a row's start)
            # the index section's entries from lane 0's on (its entry count less ``entry``), and the
            # command's Nk - G: registers, so the checks compare lanes with them, not with sums
            room=Signal(signed(INDEX_WIDTH + 3)),
            row_limit=Signal(signed(INDEX_WIDTH + 1)),
            head_error=Signal(ERROR_BITS),
            ci_beats=Signal(INDEX_WIDTH),
            held=[Signal(cfg.data_width, name=f"held{j}") for j in range(cfg.qkv_beats_per_word - 1)],
            # registers, so that the outputs come through plain assignments (no FSM-conditional
            # combinational processes: Icarus does not evaluate those at time 0)
            taking=Signal(),                            # LOAD or DROP: data.ready
            busy=Signal(),                              # LOAD, DROP or COMMIT
            replaying=Signal(),                         # (decoder) Q/K come from the layer store
            take=Signal(),                              # a beat arrives (from the stream or the store)
            source=Signal(cfg.data_width),              # its data
            decoding=Signal(), word_last=Signal(),      # (decoder) a Q/K beat; the last of its word
            word_data=Signal(cfg.data_width),           # the word to write: the beat, or the decoded Q/K word
            # (tiles > 1) the first query row of the row pointer beat, mod and div T
            row0_mod=Signal(range(cfg.tiles)), row0_div=Signal(INDEX_WIDTH),
            # (tiles > 1) the tile of the next head's query row 0: the rows of the heads so far mod T
            off=Signal(range(max(cfg.tiles, 2))),
        )

    def _sources(self, m, st):
        """Where beats come from (the stream, or the layer store through the decoder), and the
        stream handshakes."""
        cfg = self._config
        data = self.data
        if cfg.decoder:
            m.submodules.layer_store = st.store = store = LayerStore(cfg)
            m.submodules.qk_decoder = decoder = QkDecoder(cfg)
            m.d.comb += [st.take.eq(Mux(st.replaying, store.replay.valid, data.valid & data.ready)),
                         st.source.eq(Mux(st.replaying, store.replay.payload, data.payload)),
                         store.layer_beats.payload.eq(data.payload),
                         store.key_order.addr.eq(st.word), store.key_order.data.eq(data.payload),
                         st.decoding.eq(st.section <= SECTION_K), st.word_last.eq(decoder.last)]
            c, q_section = st.command, st.section == SECTION_Q
            m.d.comb += [decoder.beats.payload.eq(st.source), decoder.hc.eq(c.hc),
                         decoder.weights.eq(Mux(q_section, c.wq, c.wk)),
                         decoder.multiplier.eq(Mux(q_section, c.dq_mult, c.dk_mult)),
                         decoder.shift.eq(Mux(q_section, c.dq_shift, c.dk_shift))]
            st.decoder = decoder
            m.d.comb += st.word_data.eq(Mux(st.decoding, decoder.word, data.payload))
        else:
            m.d.comb += [st.take.eq(data.valid & data.ready), st.source.eq(data.payload),
                         st.word_data.eq(data.payload)]
        # Rises at the first clock edge after reset. Besides holding commands off during
        # reset, it gives cmd.ready an event to evaluate on: Icarus does not run the
        # netlist's combinational processes at time 0 for inputs that never change.
        alive = Signal()
        m.d.sync += alive.eq(1)
        m.d.comb += [data.ready.eq(st.taking & ~st.replaying if cfg.decoder else st.taking),
                     self.cmd.ready.eq(alive & ~st.busy & ~mux_tree(st.full, st.bank))]

    def _accept(self, m, st):
        """A command arrives: check its sizes, then load it, drop it, or (decoder) load a layer."""
        cfg, p = self._config, self.cmd.payload
        m.d.sync += st.command.eq(p)
        # sizes a layer load and a head share (tokens, compressed heads), then the head's own
        shape_bad = (p.nq == 0) | (p.nq > cfg.max_tokens) | (p.nk == 0) | (p.nk > cfg.max_tokens)
        if cfg.decoder:
            shape_bad = shape_bad | (p.hc == 0) | (p.hc > cfg.decoder_heads)
        bad = shape_bad | (p.g > p.nk) | (p.nnz > cfg.max_nnz)
        m.d.sync += [st.head_error.eq(0), st.word.eq(0), st.entry.eq(0), st.prev_pointer.eq(0),
                     st.row_start_pointer.eq(0), st.row_limit.eq(p.nk - p.g),
                     st.ci_beats.eq(self._index_beats(p.nnz)), st.taking.eq(1), st.busy.eq(1)]

        def refuse(bits, beats):
            m.d.sync += [self.error.eq(self.error | bits), self.heads_failed.eq(self.heads_failed + 1),
                         st.beats_left.eq(beats)]
            m.next = "DROP"
        if cfg.decoder:
            store = st.store
            m.d.comb += [store.shape.nq.eq(p.nq), store.shape.nk.eq(p.nk), store.shape.hc.eq(p.hc)]
            loaded = store.loaded_shape
            not_loaded = ~store.loaded | (p.nq != loaded.nq) | (p.nk != loaded.nk) | (p.hc != loaded.hc)
            layer_beats = self._qk_beats(p.nq, p) + self._qk_beats(p.nk, p)
            with m.If(p.layer):
                m.d.comb += store.layer_start.eq(1)
                with m.If(shape_bad):
                    refuse(ERR_SIZE, layer_beats)
                with m.Else():
                    m.d.sync += st.beats_left.eq(layer_beats)
                    m.next = "LAYER"
            with m.Elif(bad):
                refuse(ERR_SIZE, self._head_beats(p))
            with m.Elif(not_loaded):
                refuse(ERR_LAYER, self._head_beats(p))
            with m.Else():
                # the key order first; Q and K follow from the layer store
                m.d.sync += [st.section.eq(SECTION_KEY_ORDER), st.beats_left.eq(self._index_beats(p.nk)),
                             st.room.eq(p.nk)]
                m.next = "LOAD"
        else:
            with m.If(bad):
                refuse(ERR_SIZE, self._head_beats(p))
            with m.Else():
                m.d.sync += [st.section.eq(SECTION_Q), st.beats_left.eq(self._qk_beats(p.nq, p))]
                m.next = "LOAD"

    def _load(self, m, st):
        """A head's sections into the bank being loaded."""
        cfg = self._config
        beats_per_word = cfg.qkv_beats_per_word
        lg_bpw = log2_ceil(beats_per_word)
        # a whole (decoded) word arrives
        word_take = st.take & ~(st.decoding & ~st.word_last)
        index_writes = [(SECTION_COL_IDX, self.ci_write, cfg.ci_addr_width)]
        if cfg.tiles == 1:
            index_writes.insert(0, (SECTION_ROW_PTR, self.rp_write, cfg.rp_addr_width))
        else:
            self._tile_pointer_writes(m, st, word_take & (st.section == SECTION_ROW_PTR))
        for section, port, addr_width in index_writes:
            m.d.comb += [port.addr.eq(Cat(st.word[:addr_width - cfg.bank_bits], st.bank)), port.data.eq(st.word_data),
                         port.en.eq(word_take & (st.section == section))]
        local_bits = cfg.qkv_addr_width - cfg.bank_bits
        for section, port in ((SECTION_Q, self.q_write), (SECTION_K, self.k_write), (SECTION_V, self.v_write)):
            # the first beats of a word wait in ``held`` (rows are whole words)
            m.d.comb += [port.addr.eq(Cat(st.word[lg_bpw:][:local_bits], st.bank)),
                         port.data.eq(Cat(*st.held, st.word_data)),
                         port.en.eq(word_take & (st.section == section)
                                    & (st.word[:lg_bpw] == beats_per_word - 1 if lg_bpw else 1))]
        if cfg.decoder:
            m.d.comb += [st.store.key_order.en.eq(st.take & (st.section == SECTION_KEY_ORDER)),
                         st.decoder.beats.valid.eq(st.take & st.decoding)]
        if beats_per_word > 1:
            with m.If(word_take & (st.section <= SECTION_V)):
                for j in range(beats_per_word - 1):
                    with m.If(st.word[:lg_bpw] == j):
                        m.d.sync += st.held[j].eq(st.word_data)
        with m.If(st.take):
            m.d.sync += [st.beats_left.eq(st.beats_left - 1), st.entry.eq(st.entry + cfg.indices_per_word),
                         st.room.eq(st.room - cfg.indices_per_word)]
            with m.If(~st.decoding | st.word_last):
                m.d.sync += st.word.eq(st.word + 1)
            self._index_checks(m, st)
            with m.If(st.beats_left == 1):
                self._next_section(m, st)

    def _tile_pointer_writes(self, m, st, take):
        """(tiles > 1) A row pointer beat into the tiles' row pointer memories: row i's ``ptr[2i]``
        and ``ptr[2i + 1]`` (one beat holds both) to tile ``(i + off) mod T`` at local row
        ``(i - first) // T``, where ``first = (t - off) mod T`` is the tile's first row of the head
        (``off``: the rows of the heads before it mod T, so the tiles take rows in one rotation
        across heads and none gets the extra row of every head)."""
        cfg = self._config
        T, R, W = cfg.tiles, cfg.pointer_rows_per_beat, cfg.tile_rp_words_per_entry
        lanes = [st.word_data.word_select(k, INDEX_WIDTH) for k in range(cfg.indices_per_word)]
        ports = self.rp_tile_writes
        aw = cfg.tile_rp_addr_width - cfg.bank_bits
        if W > 1:
            # T divides R: tile t's rows of beat b are the local rows b * W .. b * W + W - 1, the
            # beat's rows first + T j (first = (t - off) mod T)
            for t in range(T):
                for half in range(2):
                    data = Signal(W * INDEX_WIDTH, name=f"ptr_tile_data{t}_{half}")
                    for first in range(T):
                        with m.If(st.off == (t - first) % T):
                            m.d.comb += data.eq(Cat(*(lanes[2 * (first + T * j) + half] for j in range(W))))
                    m.d.comb += [ports[2 * t + half].addr.eq(Cat(st.word[:aw], st.bank)),
                                 ports[2 * t + half].data.eq(data), ports[2 * t + half].en.eq(take)]
            return
        # T >= R: at most one row per tile and beat; the beat's first row is row0, and
        # row0 + off = T * row0_div + row0_mod
        row0 = st.entry >> 1
        with m.If(take):
            carry = st.row0_mod + (R % T) >= T
            m.d.sync += [st.row0_mod.eq(Mux(carry, st.row0_mod + (R % T) - T, st.row0_mod + (R % T))),
                         st.row0_div.eq(st.row0_div + (R // T) + carry)]
        for t in range(T):
            j = Signal(range(T), name=f"ptr_tile_row{t}")      # the beat's row of tile t: row0 + j
            local = Signal(aw, name=f"ptr_tile_local{t}")
            # the tiles before off (t < off) took their first row of the head in the second
            # rotation: their local rows count from there
            if t == T - 1:      # row0_mod <= T - 1 always (no constant comparison: lint-clean)
                m.d.comb += [j.eq(t - st.row0_mod), local.eq(st.row0_div)]
            else:
                m.d.comb += [j.eq(Mux(st.row0_mod <= t, t - st.row0_mod, t + T - st.row0_mod)),
                             local.eq(st.row0_div + (st.row0_mod > t) - (st.off > t))]
            ok = (j < R) & (row0 + j <= st.command.nq)
            for half in range(2):
                data = Signal(INDEX_WIDTH, name=f"ptr_tile_data{t}_{half}")
                for r in range(min(R, T)):
                    with m.If(j == r):
                        m.d.comb += data.eq(lanes[2 * r + half])
                m.d.comb += [ports[2 * t + half].addr.eq(Cat(local, st.bank)), ports[2 * t + half].data.eq(data),
                             ports[2 * t + half].en.eq(take & ok)]

    def _index_checks(self, m, st):
        """Row pointers (``2 Nq + 1``: two half-rows per query row), column indices and (decoder) key
        order entries of the beat on ``data``."""
        cfg, c = self._config, st.command
        lanes = [self.data.payload.word_select(k, INDEX_WIDTH) for k in range(cfg.indices_per_word)]
        # (issue 15) No adder or chain across the lanes in front of head_error: lane k's entry is
        # ``entry + k`` with ``entry`` a multiple of the lanes per word (it starts at 0 and counts
        # by them), so with an even count the even lanes are fixed, and a lane's pointer is compared
        # with the lanes before it in the word or with the previous beat's registers; the section's
        # end is ``room`` (its entries left from lane 0), a register, against the lane number.
        fixed_parity = cfg.indices_per_word % 2 == 0
        at_zero = st.entry == 0
        with m.If(st.section == SECTION_ROW_PTR):
            # pointers never decrease, and a whole row (its two half-rows, from the even pointer
            # 2i to 2i + 2) keeps at most Nk - G entries
            prev, row_start = st.prev_pointer, st.row_start_pointer
            for k, value in enumerate(lanes):
                even = (k % 2 == 0) if fixed_parity else ~(st.entry + k)[0]
                first = (at_zero & (value != 0)) if k == 0 else 0
                later = ~at_zero if k == 0 else 1          # index != 0
                step = later & ((value < prev) | (even & (value - row_start > st.row_limit)))
                end = (st.room == k + 1) & (value != c.nnz)     # index == 2 Nq
                with m.If((st.room > k) & (first | step | end)):     # index <= 2 Nq
                    m.d.sync += st.head_error.eq(st.head_error | ERR_ROW_PTR)
                if fixed_parity:
                    prev, row_start = value, (value if k % 2 == 0 else row_start)
                else:
                    prev, row_start = value, Mux(even, value, row_start)
            m.d.sync += [st.prev_pointer.eq(lanes[-1]), st.row_start_pointer.eq(row_start)]
        with m.If(st.section == SECTION_COL_IDX):
            for k, value in enumerate(lanes):
                with m.If((st.room > k) & ((value < c.g) | (value >= c.nk))):      # entry + k < nnz
                    m.d.sync += st.head_error.eq(st.head_error | ERR_COL_IDX)
        if cfg.decoder:
            with m.If(st.section == SECTION_KEY_ORDER):
                for k, value in enumerate(lanes):
                    with m.If((st.room > k) & (value >= c.nk)):                    # entry + k < nk
                        m.d.sync += st.head_error.eq(st.head_error | ERR_COL_IDX)

    def _next_section(self, m, st):
        """The section's last beat: set up the next section, or commit the head."""
        cfg, c = self._config, st.command
        m.d.sync += [st.section.eq(st.section + 1), st.word.eq(0), st.entry.eq(0)]
        with m.Switch(st.section):
            with m.Case(SECTION_Q):
                m.d.sync += st.beats_left.eq(self._qk_beats(c.nk, c))
            with m.Case(SECTION_K):
                m.d.sync += st.beats_left.eq(token_beats(cfg, c.nk))
            with m.Case(SECTION_V):
                m.d.sync += [st.beats_left.eq(self._index_beats(2 * c.nq + 1)), st.room.eq(2 * c.nq + 1)]
                if cfg.tiles > 1:
                    m.d.sync += [st.row0_mod.eq(st.off), st.row0_div.eq(0)]
            with m.Case(SECTION_ROW_PTR):
                m.d.sync += [st.beats_left.eq(st.ci_beats), st.room.eq(c.nnz)]
                with m.If(st.ci_beats == 0):
                    m.d.sync += st.taking.eq(0)
                    m.next = "COMMIT"
            with m.Case(SECTION_COL_IDX):
                m.d.sync += st.taking.eq(0)
                m.next = "COMMIT"
            if cfg.decoder:
                with m.Case(SECTION_KEY_ORDER):
                    # key order in: replay Q and K from the layer store
                    m.d.sync += [st.section.eq(SECTION_Q), st.beats_left.eq(self._qk_beats(c.nq, c))]
                    m.d.comb += st.store.replay_start.eq(1)

    def _commit(self, m, st):
        """A loaded head fills its bank, or its errors are recorded."""
        with m.If(st.head_error == 0):
            m.d.sync += st.bank.eq(st.bank + 1)     # banks in a ring (their count a power of two)
            for b in range(self._config.banks):
                with m.If(st.bank == b):
                    m.d.sync += st.full[b].eq(1)
                    m.d.sync += [self.banks.heads[b][name].eq(st.command[name]) for name in HEAD_COMMAND_FIELDS]
                    m.d.sync += self.banks.heads[b].off.eq(st.off)
            T = self._config.tiles
            if T > 1:
                m.d.sync += st.off.eq((st.off + st.command.nq) % T)
        with m.Else():
            m.d.sync += [self.error.eq(self.error | st.head_error), self.heads_failed.eq(self.heads_failed + 1)]
