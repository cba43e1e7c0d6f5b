"""Several decode datapaths side by side: one ``LinearDecode`` per layer of a model.

A layer's heads time-multiplex its instance (``heads``); the layers differ in their
requantizers (generator parameters), so each layer has its own instance. Used by
the co-simulation of a whole model's attention (``attnforge linear generate --rtl``):
the ports of layer n are those of ``LinearDecode`` prefixed ``l<n>__`` in Verilog
(``l0__i__valid``, ``l1__o__payload``, ``l0__overflow``, ...), one clock and reset.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from attnforge.errors import ConfigError

from ..common import ConfiguredComponent
from .config import LinearDecodeConfig
from .decode import LinearDecode

__all__ = ["LinearStackConfig", "LinearDecodeStack", "MAX_STACK_LAYERS"]

#: More instances than this is a mistake, not a model (each is a whole datapath).
MAX_STACK_LAYERS = 64


@dataclass(frozen=True)
class LinearStackConfig:
    """One ``LinearDecodeConfig`` per layer, in layer order."""

    layers: tuple

    def __post_init__(self):
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not 1 <= len(layers) <= MAX_STACK_LAYERS:
            raise ConfigError(f"LinearStackConfig: layers={len(layers)} configurations; expected 1 to "
                              f"{MAX_STACK_LAYERS}")
        for n, c in enumerate(layers):
            if not isinstance(c, LinearDecodeConfig):
                raise ConfigError(f"LinearStackConfig: layers[{n}] is {type(c).__name__}; expected a "
                                  "LinearDecodeConfig")


class LinearDecodeStack(ConfiguredComponent):
    """``LinearDecode`` instances, one per layer, one clock and reset.

    Parameters
    ----------
    config : LinearStackConfig

    Members
    -------
    l<n> : ``Out(wiring.Signature(LinearDecode.signature_of(config.layers[n])))``
        Layer n's instance: its ``i`` and ``o`` streams, ``overflow``, ``o_last``, ``busy``,
        ``mac_active`` and ``block_open``, as ``LinearDecode`` documents them.
    """

    config_type = LinearStackConfig

    @classmethod
    def signature_of(cls, config: LinearStackConfig):
        return {f"l{n}": Out(wiring.Signature(LinearDecode.signature_of(c))) for n, c in enumerate(config.layers)}

    def elaborate(self, platform):
        m = Module()
        for n, c in enumerate(self._config.layers):
            m.submodules[f"layer{n}"] = dec = LinearDecode(c)
            wiring.connect(m, wiring.flipped(getattr(self, f"l{n}")), dec)
        return m
