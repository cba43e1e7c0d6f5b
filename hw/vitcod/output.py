"""The ViTCoD output stage: a finished row in, int8 beats out.

A row (both engines' shares of ``P·V`` summed, ``d`` wide values) is taken into
a row register; a serializer hands one beat of B = data_width / 8 lanes per
cycle to the output requantizer (``attnforge.hw.common.requant``), four
registered stages (the beat's lanes; multiply; shift; rounding and saturation,
``OUT_STAGES`` in ``hw/vitcod/cycles.py``) in one ``LockstepPipeline``, so
they stall together on backpressure and a beat leaves four cycles after it is
serialized. The row carries its requantizer and whether
it is its head's last row: the head may end (and the next one start) while its
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

__all__ = ["OutputStage", "RowMerger", "output_row_layout", "ROW_LOAD_GROUP"]

#: channels of the output row register per copy of its load enable
ROW_LOAD_GROUP = 8


def output_row_layout(config: VitcodConfig) -> data.StructLayout:
    """A finished row with its output requantizer (``attnforge.numfmt.Requantizer``'s fields)."""
    return data.StructLayout({
        "values": data.ArrayLayout(signed(config.row_width), config.head_dim),
        "multiplier": unsigned(MULTIPLIER_WIDTH),
        "shift": unsigned(SHIFT_WIDTH),
        "head_last": unsigned(1),
    })


class OutputStage(ConfiguredComponent):
    """Row register, serializer and the two-stage output requantizer.

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    row : ``In(stream.Signature(output_row_layout(config)))``
        One finished row per transfer; ``ready`` while the serializer is free (the row
        register is loaded by the transfer).
    o : ``Out(stream.Signature(config.data_width))``
        The requantized int8 row, ``words_per_token`` beats, lane b of beat w is channel
        ``w * B + b`` (with a beat wider than a row, one beat, its lanes from ``d`` on zero).
    head_done : ``Out(1)``
        One-cycle pulse: the last beat of a head's last row is taken on ``o``.
    last : ``Out(1)``
        With ``o.valid``: the beat offered is its head's last (an AXI4-Stream ``tlast``).
    busy : ``Out(1)``
        A row is being serialized or beats are in the requantizer stages.
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        return {
            "row": In(stream.Signature(output_row_layout(config))),
            "o": Out(stream.Signature(config.data_width)),
            "head_done": Out(1),
            "last": Out(1),
            "busy": Out(1),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        lanes, beats = cfg.data_bytes, cfg.words_per_token

        # row register and serializer. The row register follows the offered row while the serializer
        # is free, so it holds the row taken: its enable is ``~serializing`` (a copy of it per group of
        # ROW_LOAD_GROUP channels, ``replica``), not the scheduler's ``valid`` into ~2,000 flip-flops
        row = Signal.like(self.row.payload, name="row_reg")
        serializing = Signal()
        copies = [Signal(name=f"serializing_rep{k}", attrs={"replica": 1})
                  for k in range(-(-cfg.head_dim // ROW_LOAD_GROUP))]
        beat = Signal(range(max(beats, 2)))
        m.d.comb += self.row.ready.eq(~serializing)
        with m.If(self.row.valid & self.row.ready):
            m.d.sync += [serializing.eq(1), beat.eq(0), *(c.eq(1) for c in copies)]
        for k, copy in enumerate(copies):
            with m.If(~copy):
                m.d.sync += [row.values[i].eq(self.row.payload.values[i])
                             for i in range(k * ROW_LOAD_GROUP, min((k + 1) * ROW_LOAD_GROUP, cfg.head_dim))]
        with m.If(~serializing):
            m.d.sync += [row.multiplier.eq(self.row.payload.multiplier), row.shift.eq(self.row.payload.shift),
                         row.head_last.eq(self.row.payload.head_last)]

        # requantizer, four stages (OUT_STAGES): 0 selects the beat's lanes of the row register,
        # 1 multiplies (registered operands, registered product: nothing but the DSP between them),
        # 2 shifts by shift - 1, 3 rounds and saturates (``requant_shift``/``requant_finish``)
        pipe = LockstepPipeline(m, depth=4, ready=self.o.ready, name="requant")
        with m.If(pipe.advance & serializing):
            m.d.sync += beat.eq(beat + 1)
            with m.If(beat == beats - 1):
                m.d.sync += [serializing.eq(0), *(c.eq(0) for c in copies)]
        beat_last = serializing & row.head_last & (beat == beats - 1)
        # a beat wider than a row (two token rows per data beat) carries the row in its lower lanes
        used = min(lanes, cfg.head_dim)
        picked = [pipe.stage(0, mux_tree([row.values[w * lanes + b] for w in range(beats)], beat),
                             valid=serializing, name=f"picked{b}")
                  for b in range(used)]
        multiplier = pipe.stage(0, row.multiplier, name="picked_multiplier")
        # the shifter's amount and whether it rounds, from the row register (not from the shifter's stage)
        amount = pipe.stage(0, requant_shift_amount(row.shift), name="picked_amount")
        rounds = pipe.stage(0, row.shift != 0, name="picked_rounds")
        last = pipe.stage(0, beat_last, name="picked_head_last")
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
                     self.busy.eq(serializing | Cat(*pipe.valid).any())]
        return m


class RowMerger(ConfiguredComponent):
    """(``tiles > 1``) The tiles' finished rows into one stream, in row order.

    Each tile hands its rows to a buffer of its own of ``merge_depth`` rows (a ring of
    registers; a row is taken in the cycle the buffer has room or is being read from, so the
    tile's engines go on with the next row's P·V, up to ``merge_depth`` rows ahead of the
    merger); rows leave in row order: the merger takes a row from tile ``turn`` only, then turns
    to the next tile, across heads too (a head's row i is on tile ``(i + off) mod T``, the
    rotation going on from the head before; ``head_layout``).

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    tiles : ``In(stream.Signature(output_row_layout(config))).array(config.tiles)``
        Each tile's finished rows, in its own row order.
    row : ``Out(stream.Signature(output_row_layout(config)))``
        All rows in row order, to the ``OutputStage``.
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        rows = stream.Signature(output_row_layout(config))
        return {"tiles": In(rows).array(config.tiles), "row": Out(rows)}

    def elaborate(self, platform):
        T, D = self._config.tiles, self._config.merge_depth
        m = Module()
        turn = Signal(range(max(T, 2)))
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
        m.d.comb += [self.row.valid.eq(mux_tree(nonempty, turn)),
                     self.row.payload.eq(mux_tree(heads, turn)),
                     take.eq(self.row.valid & self.row.ready)]
        with m.If(take):
            m.d.sync += turn.eq(Mux(turn == T - 1, 0, turn + 1))
        return m
