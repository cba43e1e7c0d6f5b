"""The model-level ViT accelerator: one instruction stream drives the matmul, LayerNorm, GELU and
residual-add units around one on-chip activation buffer (docs/vit-model.md)."""

from .config import DEIT_TINY, DIGITS, VitModelConfig
from .isa import Add, Attention, Gelu, LayerNorm, Load, Matmul, Op, Region, Store
from .program import assemble, check_program, disassemble, instruction_cycles, program_cycles
from .reference import ReferenceMachine

__all__ = ["VitModelConfig", "DIGITS", "DEIT_TINY", "Op", "Region", "Load", "Store", "LayerNorm", "Gelu", "Add",
           "Matmul", "Attention", "assemble", "disassemble", "check_program", "instruction_cycles", "program_cycles",
           "ReferenceMachine"]
