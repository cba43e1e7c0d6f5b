"""relu_norm's divider: ``A / den`` in fixed point between the lanes and the requantizer.

Bit for bit ``divide_fixed`` of the golden model (``algo/linear/golden.py``): den is
shifted right by ``s`` until it has at most DIV_DEN_BITS significant bits,
``recip = floor(2**(DIV_DEN_BITS + DIV_FRAC_BITS) / den')`` (0 for den = 0),
``A' = A >> s`` and the quotient is ``(A' * recip + 2**(DIV_DEN_BITS-1)) >> DIV_DEN_BITS``.

The z column (first of each pass) delivers every draft token's den before the
token's numerators; its reciprocal goes through leading-one detection, the
reduction shift and ``PipelinedDivider`` into a register set indexed by
(output half, token), so a following pass (the other half) cannot overwrite a
reciprocal still in use. The numerators wait NORM_DELAY stages, then take
three more (shift, product, rounding): NORM_EXTRA_DEPTH in all.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from attnforge.linear_format import DIV_DEN_BITS

from ..common import ConfiguredComponent, PipelinedDivider, mux_tree
from .config import DIV_STAGES, NORM_DELAY, RECIP_BITS, LinearDecodeConfig, shape_of
from .interfaces import ResultSignature, result_layout

__all__ = ["Normalizer"]


class Normalizer(ConfiguredComponent):
    """The relu_norm divider, NORM_EXTRA_DEPTH cycles from ``numerator`` to ``quotient``.

    Parameters
    ----------
    config : LinearDecodeConfig
        With ``feature_map="relu_norm"``.

    Members
    -------
    numerator : ``In(ResultSignature(config, numerator_format.width))``
        Every element from the lanes. A valid, emitting element of the last row group
        on the z column (``is_z``) carries den (wrapped to ``denominator_format``; a
        negative den, only past ``max_tokens``, is taken as 0) of its token.
    quotient : ``Out(ResultSignature(config, quotient_format.width))``
        The same elements NORM_EXTRA_DEPTH cycles later, the attention value divided
        by its token's den (``divide_fixed``); the conv sum and context unchanged.
    """

    config_type = LinearDecodeConfig

    @classmethod
    def signature_of(cls, config: LinearDecodeConfig):
        if not config.normalized:
            raise ValueError(f"Normalizer needs feature_map='relu_norm', not {config.feature_map!r}")
        fmt = config.format
        return {
            "numerator": In(ResultSignature(config, fmt.numerator_format.width)),
            "quotient": Out(ResultSignature(config, fmt.quotient_format.width)),
        }

    @property
    def shift_shape(self):
        """The reduction shift s, 0 .. den width - 1 - DIV_DEN_BITS."""
        return range(max(self._config.format.denominator_format.width - DIV_DEN_BITS, 1))

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        halves = 2 * cfg.t_max
        tag = data.StructLayout({"index": range(halves), "shift": self.shift_shape})
        m.submodules.divider = divider = PipelinedDivider(
            dividend=1 << (RECIP_BITS - 1), divisor_width=DIV_DEN_BITS, quotient_bits=RECIP_BITS,
            stages=DIV_STAGES, tag_shape=tag)
        self._reduce(m, divider)
        # The divider's last stage writes the reciprocal set (den == 0: reciprocal 0, quotient 0).
        shifts = [Signal(self.shift_shape, name=f"recip{n}_shift") for n in range(halves)]
        recips = [Signal(RECIP_BITS, name=f"recip{n}") for n in range(halves)]
        out_tag = divider.o_tag
        with m.If(divider.o_valid):
            for n in range(halves):
                with m.If(out_tag.index == n):
                    m.d.sync += [shifts[n].eq(out_tag.shift), recips[n].eq(divider.o_quotient)]
        self._divide(m, shifts, recips)
        return m

    def _reduce(self, m, divider):
        """Two stages before the divider: den's bit length, then ``s`` and ``den >> s``."""
        cfg = self._config
        dw = cfg.format.denominator_format.width
        element = self.numerator.element
        den = self.numerator.attn[:dw].as_signed()
        is_den = element.valid & element.emit & element.last_group & element.is_z
        # Stage 1: den (negative only past max_tokens: taken as 0) and its bit length.
        length = Signal(range(dw + 1))
        for b in range(dw - 1):
            with m.If(den[b]):
                m.d.comb += length.eq(b + 1)
        len_valid, len_index = Signal(name="den_len_valid"), Signal(range(2 * cfg.t_max), name="den_len_index")
        len_den, len_bits = Signal(dw - 1, name="den_len_den"), Signal(range(dw + 1), name="den_len_bits")
        m.d.sync += [len_valid.eq(is_den), len_index.eq(element.out_half * cfg.t_max + element.token),
                     len_den.eq(Mux(den < 0, 0, den[:dw - 1])), len_bits.eq(Mux(den < 0, 0, length))]
        # Stage 2: s = max(0, len - DIV_DEN_BITS), den' = den >> s (den' == 0 only for den == 0).
        shift = Signal(self.shift_shape)
        m.d.comb += shift.eq(Mux(len_bits > DIV_DEN_BITS, len_bits - DIV_DEN_BITS, 0))
        red_valid, red_den = Signal(name="den_red_valid"), Signal(DIV_DEN_BITS, name="den_red_den")
        red_tag = Signal.like(divider.i_tag, name="den_red_tag")
        m.d.sync += [red_valid.eq(len_valid), red_tag.index.eq(len_index), red_tag.shift.eq(shift),
                     red_den.eq(len_den >> shift)]
        m.d.comb += [divider.i_valid.eq(red_valid), divider.i_divisor.eq(red_den), divider.i_tag.eq(red_tag)]

    def _divide(self, m, shifts, recips):
        """The numerator path: NORM_DELAY stages of delay, then ``A >> s``, ``* recip``, rounding."""
        cfg = self._config
        fmt = cfg.format
        numerator = self.numerator
        stage = Signal(result_layout(cfg, fmt.numerator_format.width), name="norm_delay0")
        m.d.sync += [stage.element.eq(numerator.element), stage.attn.eq(numerator.attn), stage.conv.eq(numerator.conv)]
        for n in range(1, NORM_DELAY):
            delayed = Signal.like(stage, name=f"norm_delay{n}")
            m.d.sync += delayed.eq(stage)
            stage = delayed
        index = stage.element.out_half * cfg.t_max + stage.element.token
        snf, qf = fmt.scaled_numerator_format, fmt.quotient_format
        scaled = Signal(data.StructLayout({"element": cfg.element_layout, "attn": shape_of(snf), "recip": RECIP_BITS,
                                           "conv": stage.conv.shape()}), name="norm_scaled")
        m.d.sync += [scaled.element.eq(stage.element), scaled.conv.eq(stage.conv),
                     scaled.attn.eq((stage.attn >> mux_tree(shifts, index))[:snf.width].as_signed()),
                     scaled.recip.eq(mux_tree(recips, index))]
        product = Signal(data.StructLayout({"element": cfg.element_layout, "attn": signed(snf.width + RECIP_BITS + 1),
                                            "conv": stage.conv.shape()}), name="norm_product")
        m.d.sync += [product.element.eq(scaled.element), product.conv.eq(scaled.conv),
                     product.attn.eq(scaled.attn * scaled.recip)]
        rounded = ((product.attn + (1 << (DIV_DEN_BITS - 1))) >> DIV_DEN_BITS)[:qf.width]
        m.d.sync += [self.quotient.element.eq(product.element), self.quotient.conv.eq(product.conv),
                     self.quotient.attn.eq(rounded)]
