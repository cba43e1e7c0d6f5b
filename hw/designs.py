"""Registry of the blocks the generator can build, by command-line name.

Each entry pairs a configuration dataclass with its component and the Verilog
top-module name. The CLI (whose options come from the dataclass's fields and
docstring, ``attnforge/cli/options.py``), the simulation runner, the lint step and
synthesis all look blocks up here, so adding a block means adding one entry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from .linear.axi import LinearDecodeAxi
from .linear.decode import LinearDecode, LinearDecodeConfig
from .mac_line import MacLine, MacLineConfig
from .common.requant import RequantLine, RequantLineConfig
from .vitcod import VitcodAccelerator, VitcodConfig
from .vitcod.axi import VitcodAxi
from .vit.eltwise import GeluUnit, GeluUnitConfig, ResidualAddUnit, ResidualAddUnitConfig
from .vit.layernorm import LayerNormUnit, LayerNormUnitConfig
from .vit.matmul import VitMatmul, VitMatmulConfig
from .vitmodel.accelerator import VitModelAccelerator
from .vitmodel.config import VitModelConfig

__all__ = ["Design", "DESIGNS", "get_design"]


@dataclass(frozen=True)
class Design:
    name: str            # command-line name, e.g. "mac-line"
    top: str             # Verilog top module
    config_cls: type
    build: Callable[[Any], Any]  # config -> elaboratable component
    summary: str
    testbench: str       # cocotb test module that checks it against its golden model
    # (config, **options) -> the block behind AXI4-Stream/AXI4-Lite (``hw/common/axi.py``), or None
    axi: Callable[..., Any] | None = None

    @property
    def axi_top(self) -> str:
        """Verilog top module of the AXI-wrapped block."""
        return f"{self.top}_axi"

    def make_config(self, **params):
        return self.config_cls(**params)

    def config_name(self, config) -> str:
        """Folder name of one configuration: the top name plus every parameter."""
        parts = [f"{f.name}{getattr(config, f.name)}" for f in dataclasses.fields(config)]
        return "_".join([self.top, *parts])


DESIGNS = {
    d.name: d
    for d in [
        Design("mac-line", "mac_line", MacLineConfig, MacLine,
               "M int8 multiply-accumulate units sharing one input vector",
               "attnforge.tb.mac_line_tb"),
        Design("requant-line", "requant_line", RequantLineConfig, RequantLine,
               "requantization of M wide values to int8: multiply, round-half-up shift, saturate",
               "attnforge.tb.requant_tb"),
        Design("vitcod", "vitcod", VitcodConfig, VitcodAccelerator,
               "ViTCoD attention head accelerator: Denser + Sparser Engines, integer softmax",
               "attnforge.tb.vitcod_tb", VitcodAxi),
        Design("linear-decode", "linear_decode", LinearDecodeConfig, LinearDecode,
               "linear-attention decode datapath: state in memory, conv, verify/commit",
               "attnforge.tb.linear_decode_tb", LinearDecodeAxi),
        Design("layernorm-unit", "layernorm_unit", LayerNormUnitConfig, LayerNormUnit,
               "integer LayerNorm of int16 rows to int8: row buffer, isqrt, reciprocal, gamma/beta, requantizer",
               "attnforge.tb.vit_eltwise_tb"),
        Design("gelu-unit", "gelu_unit", GeluUnitConfig, GeluUnit,
               "I-BERT's integer GELU on P int16 lanes to int8, fully pipelined",
               "attnforge.tb.vit_eltwise_tb"),
        Design("residual-add-unit", "residual_add_unit", ResidualAddUnitConfig, ResidualAddUnit,
               "residual add: int16 residual + int8 branch, each requantized, saturated to int16",
               "attnforge.tb.vit_eltwise_tb"),
        Design("vit-matmul", "vit_matmul", VitMatmulConfig, VitMatmul,
               "ViT linear layer: int8 activation tile on chip x streamed dense or CSR int8 weights, "
               "bias, per-channel requantization", "attnforge.tb.vit_matmul_tb"),
        Design("vit-model", "vit_model", VitModelConfig, VitModelAccelerator,
               "model-level ViT accelerator: instruction sequencer, skewed activation buffer, matmul, "
               "LayerNorm, GELU and residual-add units", "attnforge.tb.vitmodel_tb"),
    ]
}


def get_design(name: str) -> Design:
    try:
        return DESIGNS[name]
    except KeyError:
        raise ValueError(f"unknown design {name!r}; known designs: {', '.join(sorted(DESIGNS))}") from None
