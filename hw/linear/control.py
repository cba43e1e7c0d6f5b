"""Command and state control: takes the command stream, keeps every head's bookkeeping
and walks the passes.

* Commands (``CMD_*`` of ``attnforge.linear_format``), one per cycle while idle:
  TOKEN collects the draft block (one word of q, k, v per token in the block
  memory) and starts a pass at ``last`` or ``t_max`` tokens; COMMIT folds the
  first ``a`` tokens of the pending block (flip the bank pointer, a replay pass,
  or nothing), counts them and raises the head's overflow flag past
  ``max_tokens``; RESET marks the head's banks zero and clears count, flag and
  history; TAPS loads one row of taps.
* Per head: the committed bank (two banks, or a ring of ``t_max + 1`` snapshot
  banks), a zero flag per bank (so reset costs no memory clear), the committed
  token count and the sticky overflow flag.
* A pass walks ``for g, for column, for tau``; the fetch stage (``config.pipe.fetch_stages`` cycles) reads
  the token's q, k, v (the block memory read a cycle ahead, its word registered),
  issues the state word's address from a register and registers the element for
  the lanes.
* After a commit the committed v enter the convolution history, one per cycle.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import stream
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from attnforge.linear_format import CMD_COMMIT, CMD_RESET, CMD_TAPS, CMD_TOKEN, PHI_FORMAT
from attnforge.numfmt import INT8

from ..common import ConfiguredComponent, log2_ceil, mux_tree, replica_tree
from .config import SELECT_GROUP, STATE_WRITE_GAP, LinearDecodeConfig
from .interfaces import ConvControlSignature, FetchSignature, OutputHalfSignature

__all__ = ["CommandControl"]


def phi(x):
    """ReLU of an int8 value: 0..127 (``PHI_FORMAT``)."""
    x = x.as_signed()
    return Mux(x[-1], 0, x[:PHI_FORMAT.width])


class _Registers:
    """The control's registers, shared by the FSM states and the fetch stage."""

    def __init__(self, cfg: LinearDecodeConfig):
        heads, banks = cfg.heads, cfg.banks
        # committed bank per head: one bit (two banks) or a ring index (snapshot banks)
        self.bank = Signal(heads, name="committed_bank")
        self.ring = [Signal(range(banks), name=f"committed_bank{h}") for h in range(heads)] if cfg.snapshots else []
        # bank holds all zeros (after reset), per head and bank; the memory itself is never cleared
        self.zero = Signal(banks * heads, init=(1 << (banks * heads)) - 1, name="bank_zero")
        # tokens each head may still commit before its overflow flag rises (max_tokens - committed; once
        # the flag is up it stays until a reset and this no longer counts): a commit past max_tokens is
        # a compare of its count with this register, not an add then a compare (the count's add into
        # the flag's enable was the iCE40's routed critical path at d = 12, M = 3)
        self.room = [Signal(range(cfg.max_tokens + 1), init=cfg.max_tokens, name=f"room{h}") for h in range(heads)]
        self.overflow = Signal(heads, name="overflow_flags")
        self.collected = Signal(cfg.token_count_shape)     # tokens collected into the block
        self.pending = Signal(cfg.token_count_shape)       # size of the pending block (0: none)
        self.head = Signal(cfg.head_width, name="block_head")
        self.pass_tokens = Signal(cfg.token_count_shape)   # tokens of the pass in flight
        self.pass_emit = Signal()                          # the pass produces outputs
        self.pass_flip = Signal()                          # flip the bank when the pass ends (commit replay)
        self.shifts_left = Signal(cfg.token_count_shape)   # history shifts still to do
        self.shift_token = Signal(cfg.token_count_shape)   # token whose v enters the history next
        self.group = Signal(range(max(cfg.groups, 2)))      # never zero-width (Verilog [-1:0])
        self.column = Signal(range(cfg.columns))
        # group * columns + column, counted beside them: the state word's index in its bank, which the fetch's
        # addresses need without a multiply-add (``_fetch``)
        self.word = Signal(range(max(cfg.groups * cfg.columns, 2)), name="pass_word")
        self.token = Signal(cfg.token_index_shape)
        # where the pass is, registered beside the counters (the pass's start and end decisions read
        # flip-flops, not comparators on them: on the iCE40 the counters' compares into the FSM and the
        # fetch's enables were the routed critical paths at d = 9 .. 14)
        self.at_start = Signal(init=1, name="pass_at_start")                # token, column and group 0
        self.token_last = Signal(name="pass_token_last")                   # token == pass_tokens - 1
        self.column_last = Signal(init=cfg.columns == 1, name="pass_column_last")
        self.group_last = Signal(init=cfg.groups == 1, name="pass_group_last")
        self.half = Signal(name="out_half")                # output-buffer half of the next output pass
        self.issue = Signal()                              # an element enters the pipeline
        self.pass_end = Signal()                           # ... and it is the pass's last
        self.token_next = Signal.like(self.token)          # token's value in the next cycle
        self.block_addr = Signal.like(self.token)          # block memory read address (a cycle ahead)
        # cycles since the last issue, up to STATE_WRITE_GAP - 1 (short passes wait for their writes)
        self.quiet = Signal(range(STATE_WRITE_GAP), init=STATE_WRITE_GAP - 1, name="issue_quiet")


class CommandControl(ConfiguredComponent):
    """The command FSM (IDLE, PASS, HIST), per-head bookkeeping and the fetch stage.

    Parameters
    ----------
    config : LinearDecodeConfig

    Members
    -------
    i : ``In(stream.Signature(config.input_layout))``
        Commands; taken (``ready``) only while idle, one per cycle.
    overflow : ``Out(config.heads)``
        Sticky per head: more than ``max_tokens`` tokens committed since reset.
    block_write : ``In(WritePort.Signature(shape=config.block_word))``
        The draft block's write (``DraftBlock``, which registers it): token n of the block
        at address n, enabled in the cycle its beat is taken; address and data are driven
        in every cycle.
    block_read : ``In(ReadPort.Signature(shape=config.block_word))``
        Its read (``config.pipe.block_read_latency`` cycles, including ``block_write``'s writes up to the
        address's cycle), addressed a cycle ahead: the
        next pass token, or the next token whose v enters the history.
    fetch : ``Out(FetchSignature(config))``
        The element of each pass cycle, to the lanes and the convolution.
    conv : ``Out(ConvControlSignature(config))``
        Tap loads, history shifts and history clears.
    half : ``Out(OutputHalfSignature())``
        The output half of the next output pass: it starts only when ``free``.
    busy : ``Out(1)``
        Not idle: a pass or history shifts are running (no command is taken).
    issue : ``Out(1)``
        A pass issues a state element to the lanes this cycle (their multipliers work).
    block_open : ``Out(1)``
        Tokens of an unfinished block are collected: the block waits for its next token.
    """

    config_type = LinearDecodeConfig

    @classmethod
    def signature_of(cls, config: LinearDecodeConfig):
        block_addr = log2_ceil(config.block_depth)
        return {
            "i": In(stream.Signature(config.input_layout)),
            "overflow": Out(config.heads),
            "block_write": In(WritePort.Signature(addr_width=block_addr, shape=config.block_word)),
            "block_read": In(ReadPort.Signature(addr_width=block_addr, shape=config.block_word)),
            "fetch": Out(FetchSignature(config)),
            "conv": Out(ConvControlSignature(config)),
            "half": Out(OutputHalfSignature()),
            "busy": Out(1),
            "issue": Out(1),
            "block_open": Out(1),
        }

    def elaborate(self, platform):
        m = Module()
        r = self._r = _Registers(self._config)
        m.d.comb += [self.overflow.eq(r.overflow), self.half.half.eq(r.half),
                     r.token_next.eq(r.token), r.block_addr.eq(r.token_next), self.block_read.addr.eq(r.block_addr)]
        m.d.sync += r.token.eq(r.token_next)
        with m.If(r.issue):
            m.d.sync += r.quiet.eq(0)
        with m.Elif(r.quiet != STATE_WRITE_GAP - 1):
            m.d.sync += r.quiet.eq(r.quiet + 1)
        # The block's write address and data do not depend on the state or the command (only the
        # enable does, in _command): the draft block registers them, no multiplexer in front.
        p = self.i.p
        m.d.comb += [self.block_write.addr.eq(r.collected), self.block_write.data.eq(Cat(p.q, p.k, p.v))]
        # Likewise the tap row (the convolution registers it; only taps_load depends on the command).
        m.d.comb += self.conv.row.eq(p.v)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    self._command(m, r)
            with m.State("PASS"):
                self._pass(m, r)
            with m.State("HIST"):
                self._history(m, r)
        # A continuous assignment (not inside the FSM's case statement): Icarus does not
        # evaluate an `always @*` whose inputs never change after time 0.
        m.d.comb += [self.i.ready.eq(fsm.ongoing("IDLE")), self.busy.eq(~fsm.ongoing("IDLE")),
                     self.issue.eq(r.issue), self.block_open.eq(r.collected != 0)]
        self._fetch(m, r)
        return m

    def _command(self, m, r):
        """IDLE with a command: collect a token, commit, reset, load taps."""
        cfg = self._config
        p = self.i.p
        with m.Switch(p.cmd):
            with m.Case(CMD_TOKEN):
                m.d.comb += self.block_write.en.eq(1)
                m.d.sync += [r.head.eq(p.head), r.pending.eq(0)]
                with m.If(p.last | (r.collected == cfg.t_max - 1)):
                    m.d.sync += [r.pass_tokens.eq(r.collected + 1), r.pending.eq(r.collected + 1),
                                 r.token_last.eq(r.collected == 0),
                                 r.collected.eq(0), r.pass_emit.eq(1), r.pass_flip.eq(0)]
                    m.next = "PASS"
                with m.Else():
                    m.d.sync += r.collected.eq(r.collected + 1)
            with m.Case(CMD_COMMIT):
                with m.If((r.pending != 0) & (p.a <= r.pending)):
                    self._commit(m, r, p.a)
            with m.Case(CMD_RESET):
                for h in range(cfg.heads):
                    with m.If(p.head == h):
                        m.d.sync += [*[r.zero[cfg.banks * h + b].eq(1) for b in range(cfg.banks)],
                                     r.room[h].eq(cfg.max_tokens), r.overflow[h].eq(0)]
                m.d.comb += [self.conv.history_clear.eq(1), self.conv.head.eq(p.head)]
                m.d.sync += [r.pending.eq(0), r.collected.eq(0)]
            with m.Case(CMD_TAPS):
                m.d.comb += [self.conv.taps_load.eq(1), self.conv.head.eq(p.head), self.conv.taps_index.eq(p.a)]

    def _commit(self, m, r, accepted):
        """commit(a) of the pending block: count, then move the committed bank (or replay)."""
        cfg = self._config
        m.d.sync += r.pending.eq(0)
        for h in range(cfg.heads):
            with m.If(r.head == h):
                with m.If(accepted > r.room[h]):
                    m.d.sync += r.overflow[h].eq(1)
                with m.Else():
                    m.d.sync += r.room[h].eq(r.room[h] - accepted)
        shifts = [r.shifts_left.eq(accepted), r.shift_token.eq(0)]
        if cfg.snapshots:
            # The pass left the state after token a in bank cur + a.
            with m.If(accepted != 0):
                for h in range(cfg.heads):
                    with m.If(r.head == h):
                        moved = r.ring[h] + accepted
                        m.d.sync += r.ring[h].eq(Mux(moved >= cfg.banks, moved - cfg.banks, moved))
                m.d.sync += shifts
                if cfg.conv_taps > 1:
                    m.next = "HIST"
        else:
            with m.If(accepted == r.pending):
                m.d.sync += [r.bank.bit_select(r.head, 1).eq(~r.bank.bit_select(r.head, 1)), *shifts]
                if cfg.conv_taps > 1:
                    m.next = "HIST"
            with m.Elif(accepted != 0):
                m.d.sync += [r.pass_tokens.eq(accepted), r.token_last.eq(accepted == 1), r.pass_emit.eq(0),
                             r.pass_flip.eq(1), *shifts]
                m.next = "PASS"

    def _pass(self, m, r):
        """PASS: one element per cycle; an output pass starts only on a free output half."""
        cfg = self._config
        start = r.at_start
        ready = ~r.pass_emit | self.half.free
        if cfg.groups * cfg.columns < STATE_WRITE_GAP:
            # A short pass could read a state word before the previous pass's write of it lands.
            ready &= r.quiet == STATE_WRITE_GAP - 1
        with m.If(~start | ready):
            m.d.comb += r.issue.eq(1)
            with m.If(start):
                if not cfg.snapshots:
                    other = Cat(~r.bank.bit_select(r.head, 1), r.head)
                    m.d.sync += r.zero.bit_select(other, 1).eq(0)
                with m.If(r.pass_emit):
                    m.d.comb += self.half.claim.eq(1)
            last_token = r.token_last
            m.d.comb += r.token_next.eq(Mux(last_token, 0, r.token + 1))
            # the flags' next values (token_next == pass_tokens - 1, and so on)
            m.d.sync += [r.token_last.eq(Mux(last_token, r.pass_tokens == 1, r.token + 2 == r.pass_tokens)),
                         r.at_start.eq(r.pass_end)]
            with m.If(last_token):
                m.d.sync += [r.column.eq(Mux(r.column_last, 0, r.column + 1)),
                             r.column_last.eq(Mux(r.column_last, cfg.columns == 1, r.column == cfg.columns - 2))]
                words = cfg.groups * cfg.columns
                if words & (words - 1):      # (only read then: ``_fetch``)
                    m.d.sync += r.word.eq(Mux(r.word == words - 1, 0, r.word + 1))
                with m.If(r.column_last):
                    m.d.sync += [r.group.eq(Mux(r.group_last, 0, r.group + 1)),
                                 r.group_last.eq(Mux(r.group_last, cfg.groups == 1, r.group == cfg.groups - 2))]
            m.d.comb += r.pass_end.eq(last_token & r.column_last & r.group_last)
            with m.If(r.pass_end):
                with m.If(r.pass_emit):
                    m.d.sync += r.half.eq(~r.half)
                with m.If(r.pass_flip):
                    m.d.sync += r.bank.bit_select(r.head, 1).eq(~r.bank.bit_select(r.head, 1))
                    m.next = "HIST" if cfg.conv_taps > 1 else "IDLE"
                with m.Else():
                    m.next = "IDLE"

    def _history(self, m, r):
        """HIST: the committed tokens' v enter the head's history, one per cycle."""
        m.d.comb += [r.block_addr.eq(r.shift_token + 1), self.conv.history_shift.eq(1),
                     self.conv.head.eq(r.head)]      # the v: conv.history_row, a cycle later
        m.d.sync += [r.shift_token.eq(r.shift_token + 1), r.shifts_left.eq(r.shifts_left - 1)]
        with m.If(r.shifts_left == 1):
            m.next = "IDLE"

    def _fetch(self, m, r):
        """The fetch stage, ``config.pipe.fetch_stages`` cycles: (A) the element's context and its state word's read
        address registered (the address then reaches the memory from a flip-flop), the column's
        first-level copies; (A2 .. ) the context waits for the draft token's word (read
        ``block_read_latency`` cycles after its address, which was issued a cycle ahead), registered in
        the last of them beside the column's last-level copies; (B) phi(q), phi(k) and v taken
        from the registered word, and the element registered for the update stage."""
        cfg = self._config
        d, macs, banks, groups, columns = cfg.d, cfg.macs, cfg.banks, cfg.groups, cfg.columns
        if cfg.snapshots:
            committed = mux_tree(r.ring, r.head)
            read_bank = r.head * banks + committed                 # (head, bank) of the committed state
            after = committed + 1 + r.token                        # snapshot after draft token tau
            write_bank = r.head * banks + Mux(after >= banks, after - banks, after)
        else:
            committed = r.bank.bit_select(r.head, 1)
            read_bank = Cat(committed, r.head)
            write_bank = Cat(~committed, r.head)
        fetch, element = self.fetch, self.fetch.element
        words = groups * columns

        def address(bank):
            """The state word's address in ``bank``: its bits above the word's when a bank's words are a
            power of two, else the word counter plus the bank's base (at d = 14, M = 2 the multiply-add
            (bank * G + group) * columns + column was the iCE40's routed critical path: 11 logic levels)."""
            if words & (words - 1) == 0:
                return (bank * groups + r.group) * columns + r.column
            return bank * words + r.word

        # Stage A.
        ctx = Signal.like(element, name="fetch_element")
        group = Signal.like(r.group, name="fetch_group")
        state_addr = Signal.like(fetch.state_addr, name="fetch_state_addr")
        head = Signal.like(fetch.head, name="fetch_head")
        m.d.sync += [
            ctx.valid.eq(r.issue), ctx.first_token.eq(r.token == 0),
            ctx.last_token.eq(r.token_last),
            ctx.first_group.eq(r.group == 0), ctx.last_group.eq(r.group_last),
            ctx.bank_zero.eq(r.zero.bit_select(read_bank, 1)), ctx.emit.eq(r.pass_emit),
            ctx.pass_end.eq(r.pass_end), ctx.token.eq(r.token), ctx.column.eq(r.column),
            ctx.out_half.eq(r.half), ctx.state_addr.eq(address(write_bank)),
            ctx.tokens.eq(r.pass_tokens), group.eq(r.group),
            state_addr.eq(address(read_bank)), head.eq(r.head),
        ]
        if cfg.normalized:
            m.d.sync += ctx.is_z.eq(r.column == 0)
        if cfg.snapshots:
            m.d.sync += ctx.snapshot_bank.eq(write_bank)
        # Stages A2 .. : the context delayed until the draft token's word is there (the block's read
        # address went through block_read_levels register levels, its data block_read_register more).
        pipe = cfg.pipe
        for n in range(2, pipe.fetch_stages):
            ctx, head = (self._delay(m, x, f"{name}{n}") for x, name in ((ctx, "fetch_element"), (head, "fetch_head")))
        # the state read address: its last register level as config.state_addr_roots copies (block_read_levels
        # is at least 2: there are at least two levels)
        state_addrs = replica_tree(m, state_addr, "fetch_state_addr",
                                   [1] * (pipe.fetch_stages - 3) + [cfg.state_addr_roots])
        # The row group selects each lane's phi(q) and phi(k) from the word: a copy per lane_group lanes
        # (none with one group: a group register into the 2 M phi registers' resets was the routed
        # critical path, a 15.5 ns net, issue 15)
        lane_groups = -(-macs // pipe.lane_group)
        groups_of = replica_tree(m, group, "fetch_group", [1] * (pipe.fetch_stages - 3) + [lane_groups])
        word = Signal.like(self.block_read.data, name="fetch_token")   # token tau (address issued a cycle ahead)
        m.d.sync += word.eq(self.block_read.data)
        m.d.comb += [*(fetch.state_addr[k].eq(a) for k, a in enumerate(state_addrs)), fetch.head.eq(head)]
        self._column_copies(m)
        # Stage B.
        # In HIST the registered word is the v that history_shift moved block_read_latency cycles ago.
        m.d.comb += self.conv.history_row.eq(word.v)
        m.d.sync += [
            element.eq(ctx),
            *[fetch.phi_k[i].eq(phi(self._lane(word.k, groups_of, i))) for i in range(macs)],
            *[fetch.phi_q[i].eq(phi(self._lane(word.q, groups_of, i))) for i in range(macs)],
        ]
        # v's byte select in two steps, each with a copy of the column per bit of v (``replica``): the
        # word's register also takes, per bit of v, the column's group of SELECT_GROUP bytes (the block's
        # output through a d / SELECT_GROUP : 1 multiplexer, the group from a copy a level before), then
        # stage B picks the byte. One column register into every bit's multiplexer was the routed
        # critical path on seed 2 at 79.5 MHz, and the 64:1 select in one stage the longest path of the
        # estimate after the fan-out trees (issue 15)
        v_groups = self._v_groups(m)
        v = Cat(*(v_groups[k].bit_select(self._v_columns[k][:3], 1) for k in range(INT8.width))).as_signed()
        if cfg.normalized:
            # z is the column with v = 1: S[i][z] += phi(k)[i] * 1
            m.d.sync += fetch.v.eq(Mux(ctx.is_z, 1, v))
        else:
            m.d.sync += fetch.v.eq(v)
        if cfg.snapshots:
            # Every token's state goes to its snapshot bank, which then holds real data. Marked at the
            # issue (PASS), never in the fetch stages: a RESET taken in IDLE while the pass's last
            # elements are still in flight must leave the head's banks marked zero.
            with m.If(r.issue):
                m.d.sync += r.zero.bit_select(write_bank.as_unsigned(), 1).eq(0)

    def _v_groups(self, m):
        """Per bit k of v: bit k of the SELECT_GROUP bytes of the column's group (its column >> 3),
        registered with the draft token's word (the group from the column copy a level before)."""
        d, data = self._config.d, self.block_read.data
        groups = -(-d // SELECT_GROUP)
        out = []
        for k in range(INT8.width):
            reg = Signal(SELECT_GROUP, name=f"fetch_v_group{k}")
            for b in range(min(SELECT_GROUP, d)):
                lane = Cat(*(Value.cast(data.v[g * SELECT_GROUP + b])[k] for g in range(groups)
                             if g * SELECT_GROUP + b < d))
                m.d.sync += reg[b].eq(lane.bit_select(self._v_group_columns[k] >> 3, 1) if len(lane) > 1 else lane)
            out.append(reg)
        return out

    def _lane(self, row, groups_of, i):
        """Element i of the lane's row group of ``row`` (q or k of the word)."""
        cfg = self._config
        return row[i] if cfg.groups == 1 else row[groups_of[i // cfg.pipe.lane_group] * cfg.macs + i]

    @staticmethod
    def _delay(m, value, name):
        reg = Signal.like(value, name=name)
        m.d.sync += reg.eq(value)
        return reg

    def _column_copies(self, m):
        """The element's column of v (column 0 is z, S columns are 1..d, with relu_norm) as a registered
        fan-out tree of ``block_read_latency`` levels, the last one registered with the draft token's word:
        the first level one copy for v and one per history and tap row of the convolution, the last
        one copy per bit of v (its byte select) and per byte lane of each row's group multiplexer (a
        copy per row was the routed critical path at 61.7 MHz, 12.7 ns of net into the row's 64 group
        bits; one level of 65 copies of one combinational source, issue 15, before this tree)."""
        cfg, r, fetch = self._config, self._r, self.fetch
        d = cfg.d
        data_next = Mux(r.column == 0, 0, r.column - 1) if cfg.normalized else r.column
        column = Signal(range(d), name="data_column")
        m.d.comb += column.eq(data_next)
        upper = [1] * (cfg.pipe.block_read_latency - 1)
        # v: a copy per bit of v (and one for ``data_column``) a level before the last (their groups,
        # ``_v_groups``), each registered once more (the byte within the group)
        self._v_group_columns = replica_tree(m, column, "data_column_v", upper[:-1] + [INT8.width + 1])
        self._v_columns = [replica_tree(m, c, f"data_column_v{k}", [1])[0] for k, c in enumerate(self._v_group_columns)]
        m.d.comb += fetch.data_column.eq(self._v_columns.pop())
        for n in range(len(fetch.conv_column)):
            copies = replica_tree(m, column, f"data_column_rep{n}", upper + [len(fetch.conv_column[n])])
            m.d.comb += [fetch.conv_column[n][c].eq(copy) for c, copy in enumerate(copies)]
