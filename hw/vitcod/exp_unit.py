"""The exponent unit of a ViTCoD engine: one softmax exponent per cycle.

For every score of a row (read from the engine's score buffers) against the
row maximum of both engines: ``z = sat_u16(((m - S) * exp_mult + round) >>
exp_shift)`` (the exponent requantizer, ``attnforge.hw.common.requant``), then
``E = EXP2_LUT[z & 63] >> (z >> 6)`` (``attnforge.softmax_int.exp2_neg``),
written to the exponent buffer and summed. Six registered stages: buffer
read, difference to the maximum, product, shift, z (rounded, saturated), E.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
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
        Start, row slot, key count, row maximum, exponent requantizer, sum tag; ``free``, ``done``
        and the two sums back.
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

        # issue: entry j of the row is word j div K of score buffer j mod K. A job of n entries
        # issues max(n, 1) (a job without scores issues one "ghost" entry that writes and adds
        # nothing, so its done pulse comes in order behind the jobs before it)
        running, last = Signal(name="running"), Signal(name="last")
        entry, left = Signal(INDEX_WIDTH, name="entry"), Signal(INDEX_WIDTH, name="left")
        word = Signal(word_bits + 1)
        group = Signal(range(max(K, 2)))
        # the job's parameters travel with its entries (the next job may start while they drain):
        # registered while the unit is free, i.e. they hold the job started
        par = SimpleNamespace(slot=Signal.like(job.slot, name="job_slot"), max=Signal.like(job.max, name="job_max"),
                              multiplier=Signal.like(job.multiplier, name="job_multiplier"),
                              amount=Signal.like(job.shift, name="job_amount"), rounds=Signal(name="job_rounds"),
                              tag=Signal(name="job_tag"), ghost=Signal(name="job_ghost"))
        m.d.comb += [last.eq(left == 1), job.free.eq(~running | last)]
        with m.If(job.free):
            m.d.sync += [par.slot.eq(job.slot), par.max.eq(job.max), par.multiplier.eq(job.multiplier),
                         par.amount.eq(requant_shift_amount(job.shift)), par.rounds.eq(job.shift != 0),
                         par.tag.eq(job.tag), par.ghost.eq(job.n == 0),
                         left.eq(Mux(job.n == 0, 1, job.n)), entry.eq(0), word.eq(0), group.eq(0)]
        with m.If(running):
            with m.If(~last):
                m.d.sync += [entry.eq(entry + 1), group.eq(group + 1), left.eq(left - 1)]
                with m.If(group == K - 1):
                    m.d.sync += [group.eq(0), word.eq(word + 1)]
            with m.Else():
                m.d.sync += running.eq(0)
        with m.If(job.start):      # (only when free) wins over the last entry's update above
            m.d.sync += running.eq(1)
        with m.If(job.start):
            with m.If(job.tag):
                m.d.sync += job.sum[1].eq(0)
            with m.Else():
                m.d.sync += job.sum[0].eq(0)
        for port in self.scores:
            m.d.comb += port.addr.eq(Cat(word[:word_bits], par.slot))

        def stage(name, prev, **values):
            """The next pipeline stage: its valid, the entry, the job's fields still needed, ``values``."""
            nxt = SimpleNamespace(valid=Signal(name=f"{name}_valid"), entry=Signal(INDEX_WIDTH, name=f"{name}_entry"))
            m.d.sync += [nxt.valid.eq(prev.valid), nxt.entry.eq(prev.entry)]
            for field in ("slot", "tag", "ghost", "last", "max", "multiplier", "amount", "rounds"):
                if hasattr(prev, field) and field in stage.keep[name]:
                    reg = Signal.like(getattr(prev, field), name=f"{name}_{field}")
                    m.d.sync += reg.eq(getattr(prev, field))
                    setattr(nxt, field, reg)
            for field, value in values.items():
                reg = Signal(Value.cast(value).shape(), name=f"{name}_{field}")
                m.d.sync += reg.eq(value)
                setattr(nxt, field, reg)
            return nxt

        # which job fields each stage still needs (the rest are dropped on the way)
        common = ("slot", "tag", "ghost", "last")
        stage.keep = {"read": common + ("max", "multiplier", "amount", "rounds"),
                      "diff": common + ("multiplier", "amount", "rounds"),
                      "prod": common + ("amount", "rounds"), "shifted": common + ("rounds",),
                      "z": common, "e": common}
        issue = SimpleNamespace(valid=running, entry=entry, last=last, **vars(par))
        read = stage("read", issue, group=group)
        score = mux_tree([port.data for port in self.scores], read.group)
        # difference to the row maximum (never negative)
        diff = stage("diff", read, diff=(read.max - score)[:cfg.score_width + 1])
        # product of the exponent requantizer
        prod = stage("prod", diff, prod=requant_product(diff.diff, diff.multiplier))
        # the rounding shift in two stages (``requant_shift``: by requant_shift_amount(shift), then
        # ``requant_finish``: rounding and saturation to uint16), the barrel shift and the adder apart
        shifted = stage("shifted", prod, shifted=prod.prod >> prod.amount)
        z = stage("z", shifted, z=requant_finish(shifted.shifted, shifted.rounds, Z_FORMAT))
        # E = 2**15 * 2**-(z / 64): table of the fraction, shifted by the integer part
        whole = z.z[EXP_FRAC_BITS:]
        exp_value = Signal(E_FORMAT.width)
        fraction = rom(EXP2_LUT, E_FORMAT.width, z.z[:EXP_FRAC_BITS])
        m.d.comb += exp_value.eq(Mux(whole > EXP_BITS, 0, fraction >> whole[:EXP_BITS.bit_length()]))
        e = stage("e", z, e=exp_value)
        real = e.valid & ~e.ghost
        m.d.comb += [self.e_write.addr.eq(Cat(e.entry[:entry_bits], e.slot)), self.e_write.data.eq(e.e),
                     self.e_write.en.eq(real)]
        for t in range(2):
            with m.If(real & (e.tag == t)):
                m.d.sync += job.sum[t].eq(job.sum[t] + e.e)
        # the job's sum is final in the cycle after its last entry's E is added
        m.d.sync += job.done.eq(e.valid & e.last)
        return m
