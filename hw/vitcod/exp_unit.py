"""The exponent unit of a ViTCoD engine: one softmax exponent per cycle.

For every score of a row (read from the engine's score buffers) against the
row maximum of both engines: ``z = sat_u16(((m - S) * exp_mult + round) >>
exp_shift)`` (the exponent requantizer, ``attnforge.hw.common.requant``), then
``E = EXP2_LUT[z & 63] >> (z >> 6)`` (``attnforge.softmax_int.exp2_neg``),
written to the exponent buffer and summed. Six registered stages: buffer
read, difference to the maximum, product, shift, z (rounded, saturated), E.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In

from attnforge.errors import check_int
from attnforge.hw.common import log2_ceil, mux_tree, requant_finish, requant_product, requant_shift_amount, rom
from attnforge.softmax_int import E_FORMAT, EXP2_LUT, EXP_BITS, EXP_FRAC_BITS, Z_FORMAT

from .config import INDEX_WIDTH, VitcodConfig
from .signatures import ExpJobSignature

__all__ = ["ExpUnit"]


class ExpUnit(wiring.Component):
    """Exponents of one engine's share of a row, one per cycle.

    Parameters
    ----------
    config : VitcodConfig
    groups : int
        Score groups K of the engine: key ``j`` of the row is in score buffer ``j mod K``,
        word ``j div K`` of the row's slot.

    Members
    -------
    job : ``In(ExpJobSignature(config))``
        Start, row slot, key count, row maximum, exponent requantizer; ``busy`` and ``sum`` back.
    scores : ``In(ReadPort.Signature(score_addr_width, signed(score_width))).array(groups)``
        The score buffers (address: slot, then the key's word).
    e_write : ``In(WritePort.Signature(e_addr_width, unsigned(16)))``
        The exponent buffer (address: slot, then the key).
    """

    def __init__(self, config: VitcodConfig, *, groups: int):
        if not isinstance(config, VitcodConfig):
            raise TypeError(f"ExpUnit needs a VitcodConfig, not {config!r}")
        self._config = config
        self._groups = check_int("ExpUnit groups", groups, 1, 64)
        super().__init__({
            "job": In(ExpJobSignature(config)),
            "scores": In(ReadPort.Signature(addr_width=self.score_addr_width(config, groups),
                                            shape=signed(config.score_width))).array(groups),
            "e_write": In(WritePort.Signature(addr_width=self.e_addr_width(config), shape=unsigned(E_FORMAT.width))),
        })

    @staticmethod
    def score_addr_width(config: VitcodConfig, groups: int) -> int:
        """Score buffer address: row slot, then ``ceil(max_tokens / groups)`` words."""
        return log2_ceil(config.row_slots) + log2_ceil(-(-config.max_tokens // groups))

    @staticmethod
    def e_addr_width(config: VitcodConfig) -> int:
        """Exponent buffer address: row slot, then ``max_tokens`` entries."""
        return log2_ceil(config.row_slots) + log2_ceil(config.max_tokens)

    def elaborate(self, platform):
        cfg, K, job = self._config, self._groups, self.job
        word_bits = log2_ceil(-(-cfg.max_tokens // K))
        entry_bits = log2_ceil(cfg.max_tokens)
        m = Module()

        # issue: entry j of the row is word j div K of score buffer j mod K
        running = Signal()
        entry, n = Signal(INDEX_WIDTH), Signal(INDEX_WIDTH)
        word = Signal(word_bits + 1)
        group = Signal(range(max(K, 2)))
        slot = Signal.like(job.slot)
        row_max = Signal.like(job.max)
        multiplier = Signal.like(job.multiplier)
        # the rounding shift's amount (shift - 1, or 0) and whether it rounds (shift != 0), registered
        amount, rounds = Signal.like(job.shift, name="shift_amount"), Signal(name="shift_rounds")
        # the job's parameters follow the inputs while the unit is idle (so they hold those of the
        # job started), and the counters are at 0 then: only ``running`` and the sum hang on ``start``
        with m.If(~job.busy):
            m.d.sync += [n.eq(job.n), slot.eq(job.slot), row_max.eq(job.max), multiplier.eq(job.multiplier),
                         amount.eq(requant_shift_amount(job.shift)), rounds.eq(job.shift != 0)]
        with m.If(~running):
            m.d.sync += [entry.eq(0), word.eq(0), group.eq(0)]
        with m.If(job.start):
            m.d.sync += [running.eq(job.n != 0), job.sum.eq(0)]
        with m.If(running):
            m.d.sync += [entry.eq(entry + 1), group.eq(group + 1)]
            with m.If(group == K - 1):
                m.d.sync += [group.eq(0), word.eq(word + 1)]
            with m.If(entry == n - 1):
                m.d.sync += running.eq(0)
        for port in self.scores:
            m.d.comb += port.addr.eq(Cat(word[:word_bits], slot))

        # read: the score arrives from its buffer
        read_valid, read_group, read_entry = Signal(), Signal.like(group), Signal(INDEX_WIDTH)
        m.d.sync += [read_valid.eq(running), read_group.eq(group), read_entry.eq(entry)]
        score = mux_tree([port.data for port in self.scores], read_group)
        # difference to the row maximum (never negative)
        diff_valid, diff_entry = Signal(), Signal(INDEX_WIDTH)
        diff = Signal(cfg.score_width + 1)
        m.d.sync += [diff_valid.eq(read_valid), diff_entry.eq(read_entry), diff.eq(row_max - score)]
        # product of the exponent requantizer
        prod_valid, prod_entry = Signal(), Signal(INDEX_WIDTH)
        product = requant_product(diff, multiplier)
        prod = Signal(product.shape())
        m.d.sync += [prod_valid.eq(diff_valid), prod_entry.eq(diff_entry), prod.eq(product)]
        # the rounding shift in two stages (``requant_shift``: by requant_shift_amount(shift), then
        # ``requant_finish``: rounding and saturation to uint16), the barrel shift and the adder apart
        shifted_valid, shifted_entry = Signal(), Signal(INDEX_WIDTH)
        shifted = Signal(prod.shape())
        m.d.sync += [shifted_valid.eq(prod_valid), shifted_entry.eq(prod_entry), shifted.eq(prod >> amount)]
        z_valid, z_entry = Signal(), Signal(INDEX_WIDTH)
        z = Signal(Z_FORMAT.width)
        m.d.sync += [z_valid.eq(shifted_valid), z_entry.eq(shifted_entry),
                     z.eq(requant_finish(shifted, rounds, Z_FORMAT))]
        # E = 2**15 * 2**-(z / 64): table of the fraction, shifted by the integer part
        whole = z[EXP_FRAC_BITS:]
        exp_value = Signal(E_FORMAT.width)
        m.d.comb += exp_value.eq(Mux(whole > EXP_BITS, 0,
                                     rom(EXP2_LUT, E_FORMAT.width, z[:EXP_FRAC_BITS]) >> whole[:EXP_BITS.bit_length()]))
        e_valid, e_entry = Signal(), Signal(INDEX_WIDTH)
        e = Signal(E_FORMAT.width)
        m.d.sync += [e_valid.eq(z_valid), e_entry.eq(z_entry), e.eq(exp_value)]
        m.d.comb += [self.e_write.addr.eq(Cat(e_entry[:entry_bits], slot)), self.e_write.data.eq(e),
                     self.e_write.en.eq(e_valid)]
        with m.If(e_valid & ~job.start):
            m.d.sync += job.sum.eq(job.sum + e)
        m.d.comb += job.busy.eq(running | read_valid | diff_valid | prod_valid | shifted_valid | z_valid | e_valid)
        return m
