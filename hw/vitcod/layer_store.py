"""The Q/K decoder's layer store: a layer's compressed Q and K, loaded once, replayed per head.

A layer load writes the compressed Q then K (model token order; per
beat-sized word of a token row, ``hc`` beats, one per compressed head) into
the store. Each head of the layer then writes its key order (polarized
position -> model token) into the key-order buffer, and the store replays the
head's Q rows, and its K rows through the key order, one beat per cycle
after two cycles of latency (key-order read, store read).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from attnforge.hw.common import ConfiguredComponent, log2_ceil

from .config import INDEX_WIDTH, VitcodConfig

__all__ = ["LayerStore", "layer_shape_layout"]


def layer_shape_layout(config: VitcodConfig) -> data.StructLayout:
    """A layer's shape: query and key tokens, compressed heads (the command's fields)."""
    return data.StructLayout({name: config.cmd_layout.members[name] for name in ("nq", "nk", "hc")})


class LayerStore(ConfiguredComponent):
    """Compressed Q/K of one layer and the key order of the head being loaded.

    Parameters
    ----------
    config : VitcodConfig
        With ``decoder=True``.

    Members
    -------
    layer_start : ``In(1)``
        One-cycle pulse: a layer command; ``shape`` is sampled, the store is invalid until
        the layer's last beat has been written.
    shape : ``In(layer_shape_layout(config))``
    layer_beats : ``In(stream.Signature(data_width, always_ready=True))``
        The layer's compressed Q then K beats, in stream order.
    loaded : ``Out(1)``, loaded_shape : ``Out(layer_shape_layout(config))``
        The store holds a whole layer of that shape.
    key_order : ``Out(WritePort.Signature(order_addr_width, data_width))``
        The key-order buffer (uint16 entries, ``indices_per_word`` per word).
    replay_start : ``In(1)``
        One-cycle pulse: replay the loaded layer's Q rows, then its K rows in key order.
    replay : ``Out(stream.Signature(data_width, always_ready=True))``
        The replayed beats (``hc`` per word, as loaded).
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        config.require_decoder(cls.__name__)
        return {
            "layer_start": In(1),
            "shape": In(layer_shape_layout(config)),
            "layer_beats": In(stream.Signature(config.data_width, always_ready=True)),
            "loaded": Out(1),
            "loaded_shape": Out(layer_shape_layout(config)),
            "key_order": Out(WritePort.Signature(addr_width=log2_ceil(config.order_words),
                                                 shape=unsigned(config.data_width))),
            "replay_start": In(1),
            "replay": Out(stream.Signature(config.data_width, always_ready=True)),
        }

    def _counters(self, name):
        """Position of a beat in stream order: region (0 Q, 1 K), token row, word of the row, head."""
        return SimpleNamespace(region=Signal(name=f"{name}_region"), row=Signal(INDEX_WIDTH, name=f"{name}_row"),
                               word=Signal(range(max(self._config.words_per_token, 2)), name=f"{name}_word"),
                               head=Signal.like(self.shape.hc, name=f"{name}_head"))

    def _advance(self, m, ctr):
        """Step ``ctr`` to the next beat of the loaded shape; returns 'this is the layer's last beat'."""
        shape = self.loaded_shape
        last_head, last_word = ctr.head == shape.hc - 1, ctr.word == self._config.words_per_token - 1
        last_row = ctr.row == Mux(ctr.region, shape.nk, shape.nq) - 1
        m.d.sync += ctr.head.eq(ctr.head + 1)
        with m.If(last_head):
            m.d.sync += [ctr.head.eq(0), ctr.word.eq(ctr.word + 1)]
            with m.If(last_word):
                m.d.sync += [ctr.word.eq(0), ctr.row.eq(ctr.row + 1)]
                with m.If(last_row):
                    m.d.sync += [ctr.row.eq(0), ctr.region.eq(1)]
        return last_head & last_word & last_row & ctr.region

    def _reset(self, ctr):
        return [ctr.region.eq(0), ctr.row.eq(0), ctr.word.eq(0), ctr.head.eq(0)]

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        addr_width = max(log2_ceil(cfg.qk_store_words), 1)

        def store_addr(region, row, word, head):
            addr = Signal(addr_width)
            m.d.comb += addr.eq(((region * cfg.max_tokens + row) * cfg.words_per_token + word)
                                * cfg.decoder_heads + head)
            return addr

        m.submodules.store = store = Memory(shape=unsigned(cfg.data_width), depth=cfg.qk_store_words, init=[])
        m.submodules.order = order = Memory(shape=unsigned(cfg.data_width), depth=cfg.order_words, init=[])
        store_write, store_read = store.write_port(), store.read_port()
        order_read = order.read_port()
        wiring.connect(m, wiring.flipped(self.key_order), order.write_port())

        # layer load: where the next beat goes
        load = self._counters("load")
        with m.If(self.layer_start):
            m.d.sync += [self.loaded.eq(0), self.loaded_shape.eq(self.shape)] + self._reset(load)
        m.d.comb += [store_write.addr.eq(store_addr(load.region, load.row, load.word, load.head)),
                     store_write.data.eq(self.layer_beats.payload), store_write.en.eq(self.layer_beats.valid)]
        with m.If(self.layer_beats.valid):
            with m.If(self._advance(m, load)):
                m.d.sync += self.loaded.eq(1)

        # replay: issue (key-order read) -> key (store read) -> beat
        running = Signal()
        issue = self._counters("issue")
        with m.If(running):
            with m.If(self._advance(m, issue)):
                m.d.sync += running.eq(0)
        with m.If(self.replay_start):
            m.d.sync += [running.eq(1)] + self._reset(issue)
        lg_ipw = log2_ceil(cfg.indices_per_word)
        m.d.comb += order_read.addr.eq((issue.row >> lg_ipw)[:max(log2_ceil(cfg.order_words), 1)])
        key_valid = Signal()
        at_key = self._counters("key")
        m.d.sync += [key_valid.eq(running), at_key.region.eq(issue.region), at_key.row.eq(issue.row),
                     at_key.word.eq(issue.word), at_key.head.eq(issue.head)]
        key = Signal(INDEX_WIDTH)
        m.d.comb += key.eq(order_read.data.word_select(at_key.row[:lg_ipw], INDEX_WIDTH) if lg_ipw
                           else order_read.data[:INDEX_WIDTH])
        m.d.comb += store_read.addr.eq(store_addr(at_key.region, Mux(at_key.region, key, at_key.row),
                                                  at_key.word, at_key.head))
        m.d.sync += self.replay.valid.eq(key_valid)
        m.d.comb += self.replay.payload.eq(store_read.data)
        return m
