"""The softmax stage of the ViTCoD accelerator: exponents of a row, then its reciprocal.

A row whose scores are all in (both engines' score jobs done) starts an
exponent job on each engine (``ExpUnit``, one entry per cycle), against the
row maximum of both engines, as soon as both units issue their last entry of
the row before (its exponents still in the units' pipelines: each unit keeps
two sums, one per row in flight). When both sums of a row are final and the
divider is free, the divider (``attnforge.hw.common.SerialDivider``: restoring division,
``VitcodConfig.divider_bits`` quotient bits per cycle) computes
``r = floor(2**RECIP_BITS / sum)`` (``attnforge.softmax_int.reciprocal``; 0 for
a row without keys) while the next row's exponents run.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from attnforge.hw.common import ConfiguredComponent, SerialDivider, log2_ceil
from attnforge.softmax_int import RECIP_BITS

from .config import DIVIDER_BITS, INDEX_WIDTH, MULTIPLIER_WIDTH, SHIFT_WIDTH, VitcodConfig
from .signatures import ExpJobSignature

__all__ = ["SoftmaxStage", "softmax_row_layout", "recip_layout", "RECIP_BITS_PER_CYCLE"]

#: Quotient bits the divider computes per cycle by default (``VitcodConfig.divider_bits``).
RECIP_BITS_PER_CYCLE = DIVIDER_BITS


def softmax_row_layout(config: VitcodConfig) -> data.StructLayout:
    """A row ready for its softmax: its slot, maximum, key counts and the exponent requantizer."""
    return data.StructLayout({
        "slot": unsigned(log2_ceil(config.row_slots)),
        "max": signed(config.score_width),
        "dense_n": unsigned(INDEX_WIDTH), "sparse_n": unsigned(INDEX_WIDTH),
        "multiplier": unsigned(MULTIPLIER_WIDTH), "shift": unsigned(SHIFT_WIDTH),
    })


def recip_layout(config: VitcodConfig) -> data.StructLayout:
    """A row's reciprocal of its exponent sum, for its slot."""
    return data.StructLayout({"slot": unsigned(log2_ceil(config.row_slots)), "recip": unsigned(config.recip_width)})


class SoftmaxStage(ConfiguredComponent):
    """Exponent jobs of both engines, then the row sum's reciprocal.

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    rows : ``In(stream.Signature(softmax_row_layout(config)))``
        A row whose scores are in; taken when the exponent units can start it (they
        run while the divider works on the previous row).
    dense_exp, sparse_exp : ``Out(ExpJobSignature(config))``
        The exponent jobs of the Denser and the Sparser Engine.
    recips : ``Out(stream.Signature(recip_layout(config), always_ready=True))``
        One transfer per row, in row order: ``floor(2**RECIP_BITS / sum)`` of the
        row's E values (0 for a row without keys).
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        return {
            "rows": In(stream.Signature(softmax_row_layout(config))),
            "dense_exp": Out(ExpJobSignature(config)),
            "sparse_exp": Out(ExpJobSignature(config)),
            "recips": Out(stream.Signature(recip_layout(config), always_ready=True)),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        row = self.rows.payload
        # Rows in the exponent units: up to two (the units' two sums), in order. A row starts when both
        # units are free (the previous row's last entries may still be on their way) and fewer than
        # two rows wait for the divider; it goes to the divider when both units' sums of it are final
        # (their ``done`` pulses, counted) and the divider is free.
        pending = Signal(range(3), name="exp_rows")            # started, not yet at the divider
        start_tag, hand_tag = Signal(name="start_tag"), Signal(name="hand_tag")
        slots = [Signal.like(row.slot, name=f"exp_slot{t}") for t in range(2)]   # each tag's row slot
        take = Signal()
        m.d.comb += [self.rows.ready.eq(self.dense_exp.free & self.sparse_exp.free & (pending != 2)),
                     take.eq(self.rows.valid & self.rows.ready)]
        for exp, n in ((self.dense_exp, row.dense_n), (self.sparse_exp, row.sparse_n)):
            # the row's fields always (the units sample them when they start), ``start`` on a transfer
            m.d.comb += [exp.multiplier.eq(row.multiplier), exp.shift.eq(row.shift), exp.slot.eq(row.slot),
                         exp.n.eq(n), exp.max.eq(row.max), exp.tag.eq(start_tag), exp.start.eq(take)]
        with m.If(take):
            m.d.sync += start_tag.eq(~start_tag)
            for t in range(2):
                with m.If(start_tag == t):
                    m.d.sync += slots[t].eq(row.slot)

        m.submodules.divider = divider = SerialDivider(
            dividend=1 << RECIP_BITS, divisor_width=cfg.sum_width + 1, quotient_bits=cfg.recip_width,
            bits_per_cycle=cfg.divider_bits)
        divider_slot = Signal.like(row.slot)   # the row in the divider
        # per unit, rows whose sum is final and not yet at the divider (its done pulse counts at once)
        finished = []
        for name, exp in (("dense", self.dense_exp), ("sparse", self.sparse_exp)):
            count = Signal(range(3), name=f"{name}_finished")
            finished.append((count, exp.done))
        hand = Signal()
        m.d.comb += hand.eq(((finished[0][0] != 0) | finished[0][1]) & ((finished[1][0] != 0) | finished[1][1])
                            & ~divider.busy)
        for count, done in finished:
            m.d.sync += count.eq(count + done - hand)
        m.d.sync += pending.eq(pending + take - hand)
        with m.If(hand):
            m.d.comb += [divider.start.eq(1),
                         divider.divisor.eq(self.dense_exp.sum[hand_tag] + self.sparse_exp.sum[hand_tag])]
            m.d.sync += [divider_slot.eq(Mux(hand_tag, slots[1], slots[0])), hand_tag.eq(~hand_tag)]
        m.d.comb += [self.recips.valid.eq(divider.done), self.recips.payload.slot.eq(divider_slot),
                     self.recips.payload.recip.eq(divider.quotient)]
        return m
