"""The ViTCoD Q/K decoder: a head's Q or K word from the layer's compressed heads.

ViTCoD compresses the Q and K of a layer's H heads into Hc = ceil(H/2) heads;
head h's Q is ``requant(sum_c W[h, c] * q_c)`` per token and channel
(``attnforge.algo.vitcod.golden.decode_qk``). The layer store replays a word
as ``hc`` beats, one per compressed head; each lane accumulates ``w[c] *
x_c`` over them and the word's last beat is requantized to int8
(``attnforge.hw.common.requantize``) on its way to the buffer.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from attnforge.hw.common import ConfiguredComponent, mux_tree, requantize
from attnforge.numfmt import INT8

from .config import MULTIPLIER_WIDTH, SHIFT_WIDTH, VitcodConfig

__all__ = ["QkDecoder"]


class QkDecoder(ConfiguredComponent):
    """Weighted sum of ``hc`` compressed-head beats per lane, requantized to int8.

    Parameters
    ----------
    config : VitcodConfig
        With ``decoder=True``.

    Members
    -------
    beats : ``In(stream.Signature(data_width, always_ready=True))``
        Compressed-head beats, ``hc`` per word (head 0 first).
    hc : ``In(unsigned(5))``
        Compressed heads of the layer, 1..``decoder_heads``.
    weights : ``In(ArrayLayout(signed(8), decoder_heads))``
        The head's decoder weights (of Q or of K), held while a word is decoded.
    multiplier, shift : ``In(MULTIPLIER_WIDTH)``, ``In(SHIFT_WIDTH)``
        The decoder requantizer (of Q or of K).
    last : ``Out(1)``
        The beat on ``beats`` is its word's last (combinational).
    word : ``Out(data_width)``
        The decoded int8 word, valid with a ``last`` beat (combinational).
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        config.require_decoder(cls.__name__)
        return {
            "beats": In(stream.Signature(config.data_width, always_ready=True)),
            "hc": In(config.cmd_layout.members["hc"]),
            "weights": In(data.ArrayLayout(signed(INT8.width), config.decoder_heads)),
            "multiplier": In(unsigned(MULTIPLIER_WIDTH)),
            "shift": In(unsigned(SHIFT_WIDTH)),
            "last": Out(1),
            "word": Out(config.data_width),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        head = Signal.like(self.hc)        # compressed head of the beat
        weight = mux_tree([self.weights[c] for c in range(cfg.decoder_heads)], head)
        m.d.comb += self.last.eq(head == self.hc - 1)
        lanes = []
        sums = []
        for b in range(cfg.data_bytes):
            acc = Signal(signed(cfg.decoder_sum_width), name=f"acc{b}")
            total = Signal(signed(cfg.decoder_sum_width), name=f"sum{b}")
            m.d.comb += total.eq(Mux(head == 0, 0, acc) + weight * self.beats.payload.word_select(b, INT8.width).as_signed())
            sums.append((acc, total))
            lanes.append(requantize(total, self.multiplier, self.shift, INT8))
        m.d.comb += self.word.eq(Cat(*lanes))
        with m.If(self.beats.valid):
            m.d.sync += head.eq(Mux(self.last, 0, head + 1))
            m.d.sync += [acc.eq(total) for acc, total in sums]
        return m
