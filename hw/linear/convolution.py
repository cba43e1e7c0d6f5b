"""The causal depthwise convolution ``C[j] = sum_m w[m][j] * v_{t-m}[j]`` beside the state lanes.

Per head: K rows of taps and the K-1 last committed v (history), registers read
through multiplexers at the fetched element's column. The window of a pass
starts from the history at its first token and shifts in each draft token's v,
so draft token tau sees the committed history and the drafts before it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib.wiring import In, Out

from attnforge.numfmt import INT8

from ..common import ConfiguredComponent, mux_tree, tree_sum
from .config import LANES_LATENCY, LinearDecodeConfig, shape_of
from .interfaces import ConvControlSignature, FetchSignature

__all__ = ["Convolution", "CONV_LATENCY"]

#: Cycles from the update stage (where the window is formed) to ``sum``: the lanes' latency,
#: so the sum arrives with its element's numerator (products, their sum, then a delay line).
CONV_LATENCY = LANES_LATENCY


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
        The fetched element's ``head`` and ``data_column`` (a cycle ahead: taps and
        history are read then) and, in the update stage, ``element`` (``valid``,
        ``first_token``) and ``v``.
    sum : ``Out(signed(conv_format.width))``
        The element's convolution sum, CONV_LATENCY cycles after its update stage.
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

        # Fetch: the element's column of every history row and tap, registered for the update stage.
        fetch = self.fetch
        history_rows = [Signal(shape_of(INT8), name=f"conv_history{n}") for n in range(taps_k - 1)]
        tap_values = [Signal(shape_of(INT8), name=f"conv_tap{n}") for n in range(taps_k)]
        if taps_k > 1:
            head_history = mux_tree([Cat(*history[h]) for h in range(heads)], fetch.head)
            m.d.sync += [history_rows[n].eq(head_history.word_select(n * d + fetch.data_column, byte))
                         for n in range(taps_k - 1)]
        head_taps = mux_tree([Cat(*taps[h]) for h in range(heads)], fetch.head)   # not Array: Icarus
        m.d.sync += [tap_values[n].eq(head_taps.word_select(n * d + fetch.data_column, byte)) for n in range(taps_k)]

        # Update stage: the window (v of this token, then the older ones) and its sum.
        element = fetch.element
        window = [Signal(shape_of(INT8), name=f"conv_window{n}") for n in range(taps_k)]
        current = [fetch.v] + [Mux(element.first_token, history_rows[n], window[n]) for n in range(taps_k - 1)]
        with m.If(element.valid):
            m.d.sync += [window[n].eq(current[n]) for n in range(taps_k)]
        products = [Signal(signed(2 * INT8.width), name=f"conv_product{n}") for n in range(taps_k)]
        m.d.sync += [products[n].eq(tap_values[n] * current[n]) for n in range(taps_k)]
        total = tree_sum(products)
        for k in range(CONV_LATENCY - 2):
            delayed = Signal.like(self.sum, name=f"conv_sum{k}")
            m.d.sync += delayed.eq(total)
            total = delayed
        m.d.sync += self.sum.eq(total)
        return m

    def _registers(self, m, history, taps):
        """Tap loads, history shifts (committed v, newest first) and clears."""
        cfg = self._config
        control = self.control
        row = control.row.as_value()
        with m.If(control.taps_load):
            for h in range(cfg.heads):
                for n in range(cfg.conv_taps):
                    with m.If((control.head == h) & (control.taps_index == n)):
                        m.d.sync += taps[h][n].eq(row)
        with m.If(control.history_clear):
            for h in range(cfg.heads):
                with m.If(control.head == h):
                    m.d.sync += [x.eq(0) for x in history[h]]
        with m.If(control.history_shift):
            for h in range(cfg.heads if cfg.conv_taps > 1 else 0):
                with m.If(control.head == h):
                    m.d.sync += [history[h][0].eq(row),
                                 *[history[h][n].eq(history[h][n - 1]) for n in range(1, cfg.conv_taps - 1)]]
