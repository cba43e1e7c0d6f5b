"""The ViTCoD output stage: a finished row's beats in, int8 beats out.

A finished row (both engines' shares of ``P·V`` summed, ``d`` wide values) arrives one beat of
B = data_width / 8 lanes per cycle (``output_beat_layout``): with one tile the row scheduler picks
the beat's lanes of both engines' shares and adds them; with tiles the ``RowMerger`` picks them
from the row it holds. Nothing holds a whole row here any more (issue 15: the row register and
the 64 adders of a whole row were among the most congested nets of the routed benchmark block).
The beats go through the output requantizer (``attnforge.hw.common.requant``), four registered
stages (the beat's lanes; multiply; shift; rounding and saturation, ``OUT_STAGES`` in
``hw/vitcod/cycles.py``) in one ``LockstepPipeline``, so they stall together on backpressure and a
beat leaves four cycles after it is taken. Each beat carries its row's requantizer and whether it
is its row's last and its head's last row: the head may end (and the next one start) while its
last beats are still in the stages.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from attnforge.hw.common import (ConfiguredComponent, LockstepPipeline, mux_tree, requant_finish, requant_product,
                                 requant_shift_amount)

from attnforge.numfmt import INT8

from .config import MULTIPLIER_WIDTH, SHIFT_WIDTH, VitcodConfig

__all__ = ["OutputStage", "RowMerger", "output_row_layout", "output_beat_layout", "beat_lanes", "pick_beat",
           "row_beats"]


def output_row_layout(config: VitcodConfig) -> data.StructLayout:
    """A finished row with its output requantizer (``attnforge.numfmt.Requantizer``'s fields): what a
    tile hands to the ``RowMerger`` (``tiles > 1``)."""
    return data.StructLayout({
        "values": data.ArrayLayout(signed(config.row_width), config.head_dim),
        "multiplier": unsigned(MULTIPLIER_WIDTH),
        "shift": unsigned(SHIFT_WIDTH),
        "head_last": unsigned(1),
    })


def beat_lanes(config: VitcodConfig) -> int:
    """Channels of a row in one output beat: B = data_width / 8, or ``d`` when a beat is wider
    than a row (its upper lanes are zero)."""
    return min(config.data_bytes, config.head_dim)


def output_beat_layout(config: VitcodConfig) -> data.StructLayout:
    """One beat of a finished row: lane b of beat w is channel ``w * B + b``; ``row_last`` on the
    row's last beat (``words_per_token`` beats a row), ``head_last`` on every beat of a head's last
    row."""
    return data.StructLayout({
        "values": data.ArrayLayout(signed(config.row_width), beat_lanes(config)),
        "multiplier": unsigned(MULTIPLIER_WIDTH),
        "shift": unsigned(SHIFT_WIDTH),
        "row_last": unsigned(1),
        "head_last": unsigned(1),
    })


def pick_beat(row_values, beat, config: VitcodConfig) -> list:
    """Lane b of beat ``beat`` of a row's ``d`` values, for each of its ``beat_lanes``."""
    lanes = beat_lanes(config)
    return [mux_tree([row_values[w * lanes + b] for w in range(config.words_per_token)], beat)
            for b in range(lanes)]


def row_beats(m: Module, config: VitcodConfig, step, name: str):
    """The beat counter of a row sent one beat per transfer: ``(beat, row_last)``, both registers
    (``row_last`` kept beside the counter, so no compare sits ahead of what the row's last beat
    starts). Both move with ``step`` (a beat transferred); named ``{name}_beat`` and
    ``{name}_row_last``."""
    wpt = config.words_per_token
    beat = Signal(range(max(wpt, 2)), name=f"{name}_beat")
    row_last = Signal(name=f"{name}_row_last", init=wpt == 1)
    with m.If(step):
        m.d.sync += [beat.eq(Mux(row_last, 0, beat + 1)),
                     row_last.eq(Mux(row_last, wpt == 1, (beat == wpt - 2) if wpt > 1 else 0))]
    return beat, row_last


class OutputStage(ConfiguredComponent):
    """The four-stage output requantizer of a finished row's beats.

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    row : ``In(stream.Signature(output_beat_layout(config)))``
        One beat of a finished row per transfer (``words_per_token`` a row, in order); ``ready``
        whenever the requantizer's stages move.
    o : ``Out(stream.Signature(config.data_width))``
        The requantized int8 row, ``words_per_token`` beats, lane b of beat w is channel
        ``w * B + b`` (with a beat wider than a row, one beat, its lanes from ``d`` on zero).
    head_done : ``Out(1)``
        One-cycle pulse: the last beat of a head's last row is taken on ``o``.
    last : ``Out(1)``
        With ``o.valid``: the beat offered is its head's last (an AXI4-Stream ``tlast``).
    busy : ``Out(1)``
        Beats are in the requantizer stages.
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        return {
            "row": In(stream.Signature(output_beat_layout(config))),
            "o": Out(stream.Signature(config.data_width)),
            "head_done": Out(1),
            "last": Out(1),
            "busy": Out(1),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        lanes, used = cfg.data_bytes, beat_lanes(cfg)
        beat = self.row.payload

        # requantizer, four stages (OUT_STAGES): 0 registers the beat, 1 multiplies (registered
        # operands, registered product: nothing but the DSP between them), 2 shifts by shift - 1,
        # 3 rounds and saturates (``requant_shift``/``requant_finish``)
        pipe = LockstepPipeline(m, depth=4, ready=self.o.ready, name="requant")
        m.d.comb += self.row.ready.eq(pipe.advance)
        picked = [pipe.stage(0, beat.values[b], valid=self.row.valid, name=f"picked{b}") for b in range(used)]
        multiplier = pipe.stage(0, beat.multiplier, name="picked_multiplier")
        # the shifter's amount and whether it rounds, from the beat (not from the shifter's stage)
        amount = pipe.stage(0, requant_shift_amount(beat.shift), name="picked_amount")
        rounds = pipe.stage(0, beat.shift != 0, name="picked_rounds")
        last = pipe.stage(0, beat.row_last & beat.head_last, name="picked_head_last")
        products = [pipe.stage(1, requant_product(picked[b], multiplier), name=f"product{b}") for b in range(used)]
        amount = pipe.stage(1, amount, name="product_amount")
        rounds = pipe.stage(1, rounds, name="product_rounds")
        last = pipe.stage(1, last, name="product_head_last")
        # (``requant_shift``: the product shifted by requant_shift_amount(shift))
        shifted = [pipe.stage(2, products[b] >> amount, name=f"shifted{b}") for b in range(used)]
        rounds = pipe.stage(2, rounds, name="shifted_rounds")
        last = pipe.stage(2, last, name="shifted_head_last")
        out_lanes = [pipe.stage(3, requant_finish(shifted[b], rounds, INT8), name=f"lane{b}") for b in range(used)]
        out_lanes += [Const(0, INT8.width)] * (lanes - used)
        out_last = pipe.stage(3, last, name="lane_head_last")

        m.d.comb += [self.o.valid.eq(pipe.valid[-1]), self.o.payload.eq(Cat(*out_lanes)),
                     self.head_done.eq(self.o.valid & self.o.ready & out_last), self.last.eq(out_last),
                     self.busy.eq(Cat(*pipe.valid).any())]
        return m


class RowMerger(ConfiguredComponent):
    """(``tiles > 1``) The tiles' finished rows into one stream, in row order.

    Each tile hands its rows to a buffer of its own of ``merge_depth`` rows (a ring of
    registers; a row is taken in the cycle the buffer has room or is being read from, so the
    tile's engines go on with the next row's P·V, up to ``merge_depth`` rows ahead of the
    merger); rows leave in row order, one beat per transfer: the merger sends the beats of the
    oldest row of tile ``turn`` only, frees its slot with the row's last beat, then turns to the
    next tile, across heads too (a head's row i is on tile ``(i + off) mod T``, the rotation going
    on from the head before; ``head_layout``).

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    tiles : ``In(stream.Signature(output_row_layout(config))).array(config.tiles)``
        Each tile's finished rows, in its own row order.
    row : ``Out(stream.Signature(output_beat_layout(config)))``
        All rows' beats in row order, to the ``OutputStage``.
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        rows = stream.Signature(output_row_layout(config))
        return {"tiles": In(rows).array(config.tiles), "row": Out(stream.Signature(output_beat_layout(config)))}

    def elaborate(self, platform):
        cfg = self._config
        T, D = cfg.tiles, cfg.merge_depth
        m = Module()
        turn = Signal(range(max(T, 2)))
        # the beat of the row at the head of tile turn's ring; the row is taken with its last beat
        beat, row_last = row_beats(m, cfg, self.row.valid & self.row.ready, "merger")
        take = Signal()
        heads, nonempty = [], []
        for t, tile in enumerate(self.tiles):
            # tile t's ring of D rows: written at `wr`, read at `rd`, `count` rows in it
            slots = [Signal.like(tile.payload, name=f"row{t}_{k}") for k in range(D)]
            # (at least one bit: with D = 1 a zero-width pointer is a Verilog [-1:0] vector)
            wr = Signal(range(max(D, 2)), name=f"wr{t}")
            rd = Signal(range(max(D, 2)), name=f"rd{t}")
            count = Signal(range(D + 1), name=f"count{t}")
            heads.append(mux_tree([r.as_value() for r in slots], rd))
            nonempty.append(count != 0)
            taken = take & (turn == t)
            put = tile.valid & tile.ready
            m.d.comb += tile.ready.eq((count != D) | taken)
            with m.If(put):
                for k, slot in enumerate(slots):
                    with m.If(wr == k):
                        m.d.sync += slot.eq(tile.payload)
                m.d.sync += wr.eq(Mux(wr == D - 1, 0, wr + 1))
            with m.If(taken):
                m.d.sync += rd.eq(Mux(rd == D - 1, 0, rd + 1))
            with m.If(put & ~taken):
                m.d.sync += count.eq(count + 1)
            with m.Elif(taken & ~put):
                m.d.sync += count.eq(count - 1)
        head = Signal(output_row_layout(cfg), name="head_row")
        m.d.comb += head.eq(mux_tree(heads, turn))
        beat_values = pick_beat(head.values, beat, cfg)
        m.d.comb += [self.row.valid.eq(mux_tree(nonempty, turn)),
                     *(self.row.payload.values[b].eq(v) for b, v in enumerate(beat_values)),
                     self.row.payload.multiplier.eq(head.multiplier), self.row.payload.shift.eq(head.shift),
                     self.row.payload.head_last.eq(head.head_last), self.row.payload.row_last.eq(row_last),
                     take.eq(self.row.valid & self.row.ready & row_last)]
        with m.If(take):
            m.d.sync += turn.eq(Mux(turn == T - 1, 0, turn + 1))
        return m
