"""The causal depthwise convolution ``C[j] = sum_m w[m][j] * v_{t-m}[j]`` beside the state lanes.

Per head: K rows of taps and the K-1 last committed v (history), registers read
through multiplexers at the fetched element's column. The window of a pass
starts from the history at its first token and shifts in each draft token's v,
so draft token tau sees the committed history and the drafts before it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib.wiring import In, Out

from attnforge.numfmt import INT8

from ..common import ConfiguredComponent, mux_tree, registered_split_product, replica_tree, tree_sum
from .config import SELECT_GROUP, LinearDecodeConfig, shape_of
from .interfaces import ConvControlSignature, FetchSignature

__all__ = ["Convolution", "CONV_CHUNK", "CONV_CONTROL_FANOUT", "conv_chunks"]

#: Columns (int8 each) per registered copy of the tap-load and history controls: at d = 64,
#: eight copies, each enabling 64 flip-flops of a row instead of one net enabling all 512. A
#: chunk's columns are those of one byte lane of the rows' group multiplexers (``conv_chunks``),
#: so its flip-flops all feed the same multiplexers and sit together.
CONV_CHUNK = 8
#: Chunks per first-level copy of the controls (the copies per chunk are the second level).
CONV_CONTROL_FANOUT = 4


def conv_chunks(d: int) -> list[list[int]]:
    """The columns of each chunk of CONV_CHUNK columns: at d > SELECT_GROUP those of one byte lane
    (columns b, b + SELECT_GROUP, ...; at d = 64, lane b's eight columns), one chunk at d <= SELECT_GROUP."""
    if d <= SELECT_GROUP:
        return [list(range(d))]
    chunks: dict[tuple[int, int], list[int]] = {}
    for j in range(d):
        chunks.setdefault((j % SELECT_GROUP, j // SELECT_GROUP // CONV_CHUNK), []).append(j)
    return list(chunks.values())


#: Cycles from a TAPS command to its row in the tap registers with ``Pipelining.conv_taps_early``: the
#: least that keeps a pass in flight reading the old taps (its last element reads them
#: ``block_read_latency`` cycles after its issue, and a TAPS command comes a cycle after that issue at
#: the earliest; a write and a read at the same edge give the read the old value).
TAP_LOAD_LATENCY = 2

#: Registered stages of a tap's product (``registered_split_product``: operands, product, a copy).
PRODUCT_STAGES = 3


class Convolution(ConfiguredComponent):
    """Taps, history and the K-tap window; one convolution sum per pass element.

    Parameters
    ----------
    config : LinearDecodeConfig

    Members
    -------
    control : ``In(ConvControlSignature(config))``
        Loads of a head's taps, shifts of a committed v into its history, clearing it.
    fetch : ``In(FetchSignature(config))``
        The fetched element's ``head`` and ``conv_column`` (its column, one copy per history
        and tap row; a cycle ahead: taps and history are read then) and, in the update stage, ``element`` (``valid``,
        ``first_token``) and ``v``.
    sum : ``Out(signed(conv_format.width))``
        The element's convolution sum, ``config.pipe.lanes_latency`` cycles after its update stage
        (the lanes' latency, so the sum arrives with its element's numerator: products, their sum,
        then a delay line).
    """

    config_type = LinearDecodeConfig

    @classmethod
    def signature_of(cls, config: LinearDecodeConfig):
        return {
            "control": In(ConvControlSignature(config)),
            "fetch": In(FetchSignature(config)),
            "sum": Out(signed(config.format.conv_format.width)),
        }

    def elaborate(self, platform):
        cfg = self._config
        d, taps_k, heads = cfg.d, cfg.conv_taps, cfg.heads
        m = Module()
        byte = INT8.width
        history = [[Signal(byte * d, name=f"history{h}_{n}") for n in range(taps_k - 1)] for h in range(heads)]
        taps = [[Signal(byte * d, name=f"taps{h}_{n}") for n in range(taps_k)] for h in range(heads)]
        self._registers(m, history, taps)

        # Fetch: the element's column of every history row and tap, in two registered steps (the
        # 64:1 byte multiplexer at d = 64 with its column copy across the die was the routed critical
        # path, issue 15): the fetch cycle reads the row and keeps the column's group of SELECT_GROUP
        # bytes and the column's low bits; the next cycle picks the byte. The update stage follows a
        # cycle later than the fetch's registers (``element`` and ``v`` delayed to it) and the sum's
        # delay line is a cycle shorter, so ``sum`` comes the lanes' latency after the fetch's update stage.
        fetch = self.fetch
        history_rows = [self._pick(m, [Cat(*history[h])[n * byte * d:(n + 1) * byte * d] for h in range(heads)],
                                   fetch.conv_column[n], f"conv_history{n}") for n in range(taps_k - 1)]
        tap_values = [self._pick(m, [Cat(*taps[h])[n * byte * d:(n + 1) * byte * d] for h in range(heads)],
                                 fetch.conv_column[taps_k - 1 + n], f"conv_tap{n}") for n in range(taps_k)]

        # Update stage: the window (v of this token, then the older ones) and its sum.
        # (``replica``: the synthesis flow keeps them apart; without it Yosys merged conv_v with a lane
        # group's copy of the same v, one register for both far-apart users: an 11 ns net, seed 1, 73 MHz)
        element = Signal.like(fetch.element, name="conv_element", attrs={"replica": 1})
        v = Signal.like(fetch.v, name="conv_v", attrs={"replica": 1})
        m.d.sync += [element.eq(fetch.element), v.eq(fetch.v)]
        window = [Signal(shape_of(INT8), name=f"conv_window{n}") for n in range(taps_k)]
        current = [v] + [Mux(element.first_token, history_rows[n], window[n]) for n in range(taps_k - 1)]
        with m.If(element.valid):
            m.d.sync += [window[n].eq(current[n]) for n in range(taps_k)]
        # each tap's product in three registered stages (operands, DSP product, a copy: ``registered_split_product``;
        # with dsp_primitives the first two in a MULT18X18D's own registers): the window's multiplexer into an
        # unregistered multiplier was a routed critical path (issue 15, linear-fanout seed 2: 4.7 + 8.1 ns)
        products = [registered_split_product(m, tap_values[n], current[n], f"conv_product{n}", *cfg.dsp_cut,
                                             dsp_primitive=cfg.dsp_primitives) for n in range(taps_k)]
        total = tree_sum(products)
        for k in range(cfg.pipe.lanes_latency - 3 - (PRODUCT_STAGES - 1)):
            delayed = Signal.like(self.sum, name=f"conv_sum{k}")
            m.d.sync += delayed.eq(total)
            total = delayed
        m.d.sync += self.sum.eq(total)
        return m

    def _pick(self, m, rows, columns, name):
        """Byte ``column`` of the head's row (``rows`` per head, ``fetch.head`` picks): the column's group
        of SELECT_GROUP bytes (byte lane b from ``columns[b]``, its own copy of the column) and its low
        bits registered, then the byte registered (two cycles); without ``conv_group_select`` the byte
        registered, then again."""
        cfg, byte = self._config, INT8.width
        value = Signal(shape_of(INT8), name=name)
        if not cfg.pipe.conv_group_select:
            # in one step (the iCE40's short nets): the byte registered, then delayed a cycle
            picked = Signal(shape_of(INT8), name=f"{name}_byte")
            m.d.sync += [picked.eq(mux_tree(rows, self.fetch.head).word_select(columns[0], byte)), value.eq(picked)]
            return value
        groups = -(-cfg.d // SELECT_GROUP)
        row = mux_tree([Cat(r, Const(0, (groups * SELECT_GROUP - cfg.d) * byte)) for r in rows],
                       self.fetch.head)         # not Array: Icarus
        group, low = Signal(SELECT_GROUP * byte, name=f"{name}_group"), Signal(3, name=f"{name}_low")
        if groups > 1:
            for b in range(SELECT_GROUP):
                lane = Cat(*(row.word_select(g * SELECT_GROUP + b, byte) for g in range(groups)))
                m.d.sync += group.word_select(b, byte).eq(lane.word_select(columns[b] >> 3, byte))
        else:
            m.d.sync += group.eq(row)
        m.d.sync += low.eq(columns[0][:3])
        m.d.sync += value.eq(group.word_select(low, byte))
        return value

    def _registers(self, m, history, taps):
        """Tap loads, history shifts (committed v, newest first) and clears, ``block_read_latency`` cycles
        after the command, when the shift's v is the fetch stage's registered draft-block word
        (``history_row``). The controls reach the registers through a registered fan-out tree:
        a copy per CONV_CONTROL_FANOUT chunks (``replica``), then per chunk (``conv_chunks``: the
        columns of one byte lane) the decoded enables, registered, so each row's clock enable is a
        flip-flop beside its 64 flip-flops (one level, a copy's decode into a row's enables, was a
        routed critical path: a 9.8 ns net, issue 15). The tap row is registered once, then per chunk.
        With ``Pipelining.conv_taps_early`` (the iCE40's) tap loads land TAP_LOAD_LATENCY cycles after
        the command instead, through fewer copies of the row (each level a row of flip-flops).
        A pass reads taps and history at least ``block_read_latency`` + 2 cycles after the command that
        writes them (a TAPS, RESET or the last history shift is followed by a beat, then the pass's
        issue, then the column's copies, ``block_read_latency`` registers later), so the later write is
        never seen late."""
        cfg = self._config
        d, byte, heads = cfg.d, INT8.width, cfg.heads
        control = self.control
        chunks = conv_chunks(d)
        upper = -(-len(chunks) // CONV_CONTROL_FANOUT)
        levels = cfg.pipe.block_read_latency - 1
        tap_levels = TAP_LOAD_LATENCY - 1 if cfg.pipe.conv_taps_early else levels
        copies = {name: replica_tree(m, getattr(control, name), f"conv_{name}",
                                     [upper] * (tap_levels if name in ("taps_load", "taps_index") else levels))
                  for name in ("taps_load", "taps_index", "head", "history_shift", "history_clear")}
        early = tap_levels != levels        # the tap loads' own copies of the head
        if early:
            copies["taps_head"] = replica_tree(m, control.head, "conv_taps_head", [upper] * tap_levels)
        row = replica_tree(m, control.row.as_value(), "conv_taps_row", [1] * tap_levels)[0]
        history_row = control.history_row.as_value()      # registered by the fetch stage already
        for c, columns in enumerate(chunks):
            up = {name: value[c * len(value) // len(chunks)] for name, value in copies.items()}
            tap_en = [[Signal(name=f"conv_tap_en{h}_{n}_rep{c}", attrs={"replica": 1}) for n in range(cfg.conv_taps)]
                      for h in range(heads)]
            history_en = [Signal(name=f"conv_history_en{h}_rep{c}", attrs={"replica": 1}) for h in range(heads)]
            clear = Signal(name=f"conv_history_zero_rep{c}", attrs={"replica": 1})
            chunk_row = Signal(byte * len(columns), name=f"conv_taps_row_rep{c}")
            for h in range(heads):
                here = up["head"] == h
                tap_here = (up["taps_head"] == h) if early else here
                m.d.sync += [*[tap_en[h][n].eq(up["taps_load"] & tap_here & (up["taps_index"] == n))
                               for n in range(cfg.conv_taps)],
                             history_en[h].eq((up["history_shift"] | up["history_clear"]) & here)]
            m.d.sync += [clear.eq(up["history_clear"]),
                         chunk_row.eq(Cat(*(row[j * byte:(j + 1) * byte] for j in columns)))]
            for k, j in enumerate(columns):
                bits = slice(j * byte, (j + 1) * byte)
                for h in range(heads):
                    for n in range(cfg.conv_taps):
                        with m.If(tap_en[h][n]):
                            m.d.sync += taps[h][n][bits].eq(chunk_row[k * byte:(k + 1) * byte])
                    if cfg.conv_taps > 1:
                        with m.If(history_en[h]):
                            m.d.sync += [history[h][0][bits].eq(Mux(clear, 0, history_row[bits])),
                                         *[history[h][n][bits].eq(Mux(clear, 0, history[h][n - 1][bits]))
                                           for n in range(1, cfg.conv_taps - 1)]]
