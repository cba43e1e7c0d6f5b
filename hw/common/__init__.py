"""Building blocks shared by every attnforge accelerator.

One home per hardware idea: each block below is written once and used by the
MAC line, the ViTCoD accelerator and the linear decode datapath.

* ``component`` — ``ConfiguredComponent``, the constructor every generator shares
  (a typed configuration, a signature built from it);
* ``requant`` — int8 requantization (multiply, round half up, saturate) as
  expressions and as the ``RequantLine`` stream stage;
* ``divider`` — restoring division by a run-time divisor: the step, a serial
  divider (``SerialDivider``, a few quotient bits per cycle) and a pipelined
  one (``PipelinedDivider``, one result per cycle);
* ``trees`` — balanced adder trees, multiplexer trees, constant tables, products split
  over DSP blocks (``split_product``, two registered stages);
* ``dsp`` — the same products with registered operands (``registered_split_product``), portable
  or in ECP5 ``MULT18X18D`` primitives with their own registers (``mult18x18d``; its simulation
  model in ``models/``);
* ``stream`` — ``SkidBuffer`` and ``LockstepPipeline`` (registered stages
  that stall together on backpressure).

Parameter checks use ``attnforge.errors.check_int`` (the ground layer), so the
generators and the golden models reject a value with the same words.
"""

from .accel_regs import (
    ID_MAGIC, PARAM_BASE, PERF_COUNTERS, REGMAP_VERSION, AcceleratorRegisters, PerfCounters, accelerator_regmap,
    design_code,
)
from .component import ConfiguredComponent
from .divider import PipelinedDivider, SerialDivider, restoring_step
from .dsp import ECP5_MULT_WIDTH, MULT18X18D_MODEL, mult18x18d, primitive_models, registered_split_product
from .requant import (MAX_SHIFT, RequantLine, RequantLineConfig, requant_finish, requant_product, requant_round,
                      requant_shift, requant_shift_amount, requantize)
from .regbank import RegisterBank, register_signature
from .regmap import ACCESS_KINDS, AXI_LITE_PORTS, Field, Register, RegisterMap, c_header, markdown_table
from .stream import LockstepPipeline, SkidBuffer
from .trees import (
    DSP_CUTS, DSP_PIECE, DSP_PIECE_RANGE, dsp_cut, log2_ceil, mux_tree, product_pieces, replica_tree, rom, saturate,
    split_product, tree_sum,
)

__all__ = [
    "ConfiguredComponent",
    "restoring_step", "SerialDivider", "PipelinedDivider",
    "MAX_SHIFT", "requant_product", "requant_round", "requant_shift", "requant_shift_amount", "requant_finish",
    "requantize",
    "RequantLineConfig", "RequantLine",
    "SkidBuffer", "LockstepPipeline",
    "log2_ceil", "replica_tree", "tree_sum", "mux_tree", "rom", "saturate", "split_product", "DSP_PIECE",
    "DSP_CUTS", "DSP_PIECE_RANGE", "dsp_cut", "product_pieces",
    "ECP5_MULT_WIDTH", "MULT18X18D_MODEL", "mult18x18d", "primitive_models", "registered_split_product",
    "ACCESS_KINDS", "AXI_LITE_PORTS", "Field", "Register", "RegisterMap", "c_header", "markdown_table",
    "RegisterBank", "register_signature",
    "ID_MAGIC", "REGMAP_VERSION", "PERF_COUNTERS", "PARAM_BASE", "design_code", "accelerator_regmap",
    "PerfCounters", "AcceleratorRegisters",
]
