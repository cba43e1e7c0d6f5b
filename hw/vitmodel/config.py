"""Parameters of the model-level ViT accelerator and the unit configurations they imply."""

from __future__ import annotations

from dataclasses import dataclass

from attnforge.errors import ConfigError, check_int
from attnforge.int_ops import GELU_T_BITS, check_layernorm_width

from ..vit.eltwise import GeluUnitConfig, ResidualAddUnitConfig
from ..vit.layernorm import LayerNormUnitConfig
from ..vit.matmul import VitMatmulConfig
from .isa import BETA_WIDTH, ELEMENT_WIDTH, GAMMA_WIDTH, HEADER_WIDTH, WEIGHT_WIDTH

__all__ = ["VitModelConfig", "DIGITS", "DEIT_TINY"]

MAX_TILES = 1 << 16


@dataclass(frozen=True)
class VitModelConfig:
    """Generator parameters of the model-level accelerator (``hw/vitmodel/accelerator.py``).

    Parameters
    ----------
    lines : int
        MAC lines of the matmul, 1..64.
    macs : int
        MACs per line; ``P = lines * macs`` is also the lane count of every other unit and the
        activation buffer's bank count (a tile is ``P x P``).
    max_tokens : int
        Most rows (tokens) of a tensor, 1..65535; at most 64 row groups of P (the matmul's accumulators).
    max_cols : int
        Most channels of a tensor (the MLP's hidden width; the matmul's ``max_in``), 1..65535.
    ln_channels : int
        Most LayerNorm channels D (a multiple of P, at most max_cols).
    buffer_tiles : int
        Activation buffer size in ``P x P`` tiles of int16, 1..65536 (each of the P banks holds
        ``buffer_tiles * P`` elements).
    isqrt_steps : int
        LayerNorm square-root iterations per cycle, 1..31.
    div_bits : int
        LayerNorm reciprocal quotient bits per cycle, 1..48.
    multiplier_width : int
        Requantizer multipliers' width, 1..32 (16 as the integer ViT's).
    att_head_dim : int
        Head dim d of the ATTENTION unit (a ViTCoD accelerator, hw/vitcod), a multiple of P; 0: no attention
        unit (ATTENTION refused). Needs P a power of two >= 2 (the unit's stream: P int8 a beat).
    att_max_nnz : int
        Most CSR entries of a head's sparse part, 1..65535 [0: max_tokens ** 2, at most 65535].
    att_macs : int
        The attention unit's MACs per line (a power of two dividing its head dim).
    att_dense_lines, att_sparse_lines : int
        The attention unit's Denser and Sparser Engine lines, 1..64.
    """

    lines: int = 1
    macs: int = 8
    max_tokens: int = 65
    max_cols: int = 256
    ln_channels: int = 64
    buffer_tiles: int = 1024
    isqrt_steps: int = 1
    div_bits: int = 1
    multiplier_width: int = 16
    att_head_dim: int = 0
    att_max_nnz: int = 0
    att_macs: int = 8
    att_dense_lines: int = 1
    att_sparse_lines: int = 1

    def __post_init__(self):
        check_int("ViT model max_tokens", self.max_tokens, 1, (1 << 16) - 1)
        check_int("ViT model max_cols", self.max_cols, 1, (1 << 16) - 1)
        check_int("ViT model buffer_tiles", self.buffer_tiles, 1, MAX_TILES)
        check_int("ViT model ln_channels", self.ln_channels, 1, self.max_cols)
        check_layernorm_width(self.ln_channels)
        _ = self.matmul, self.layernorm, self.gelu, self.add, self.attention   # the units' own checks, named
        need = -(-self.max_tokens // self.lanes) * -(-self.max_cols // self.lanes)
        if self.buffer_tiles < need:
            raise ConfigError(f"ViT model buffer_tiles={self.buffer_tiles} cannot hold one {self.max_tokens} x "
                              f"{self.max_cols} tensor ({need} tiles of {self.lanes} x {self.lanes}); use at least {need}")

    @property
    def lanes(self) -> int:
        return self.lines * self.macs

    @property
    def matmul(self) -> VitMatmulConfig:
        """The matmul: int16 output (an int8 instruction saturates it again, ``out8``), or the raw int32
        sums (a raw instruction: the classifier)."""
        return VitMatmulConfig(lines=self.lines, macs=self.macs, max_rows=self.max_tokens, max_in=self.max_cols,
                               out_width=16, multiplier_width=self.multiplier_width, raw_port=True)

    @property
    def layernorm(self) -> LayerNormUnitConfig:
        if self.ln_channels % self.lanes:
            raise ConfigError(f"ViT model ln_channels={self.ln_channels} must be a multiple of the lanes "
                              f"P = lines * macs = {self.lanes}")
        return LayerNormUnitConfig(lanes=self.lanes, max_channels=self.ln_channels, isqrt_steps=self.isqrt_steps,
                                   div_bits=self.div_bits, multiplier_width=self.multiplier_width)

    @property
    def gelu(self) -> GeluUnitConfig:
        return GeluUnitConfig(lanes=self.lanes, t_width=GELU_T_BITS, multiplier_width=self.multiplier_width)

    @property
    def add(self) -> ResidualAddUnitConfig:
        """Both operands int16 in the buffer (the branch holds int8 values; 16 bits make any region legal)."""
        return ResidualAddUnitConfig(lanes=self.lanes, a_width=ELEMENT_WIDTH, b_width=ELEMENT_WIDTH,
                                     out_width=ELEMENT_WIDTH, multiplier_width=self.multiplier_width)

    @property
    def attention(self):
        """The ATTENTION unit's ``VitcodConfig`` (``data_width`` 8 P: one int8 row vector a beat), or None."""
        check_int("ViT model att_head_dim", self.att_head_dim, 0, 1024)
        if not self.att_head_dim:
            return None
        P = self.lanes
        if P < 2 or P & (P - 1):
            raise ConfigError(f"ViT model with an attention unit (att_head_dim={self.att_head_dim}) needs the lanes "
                              f"P = lines * macs = {P} to be a power of two >= 2")
        if self.att_head_dim % P:
            raise ConfigError(f"ViT model att_head_dim={self.att_head_dim} must be a multiple of the lanes P = {P}")
        nnz = self.att_max_nnz or min(self.max_tokens ** 2, (1 << 16) - 1)
        from ..vitcod.config import VitcodConfig

        return VitcodConfig(head_dim=self.att_head_dim, max_tokens=self.max_tokens, max_nnz=nnz, macs=self.att_macs,
                            dense_lines=self.att_dense_lines, sparse_lines=self.att_sparse_lines, data_width=8 * P)

    @property
    def bank_depth(self) -> int:
        return self.buffer_tiles * self.lanes

    @property
    def tensor_beat_width(self) -> int:
        return self.lanes * ELEMENT_WIDTH

    @property
    def param_beat_width(self) -> int:
        return self.lanes * (GAMMA_WIDTH + BETA_WIDTH)

    @property
    def beat_width(self) -> int:
        """Width of the host stream: the widest of a header, a weight beat, a tensor beat, a gamma/beta beat."""
        return max(HEADER_WIDTH, WEIGHT_WIDTH, self.tensor_beat_width, self.param_beat_width)


#: The digits ViT (65 tokens, D = 64, MLP 256, heads of d = 16), P = 8; the ATTENTION unit 1 + 1 lines x 8 MACs.
DIGITS = VitModelConfig(att_head_dim=16)
#: DeiT-Tiny's shapes (197 tokens, D = 192, MLP 768), P = 8; 3 x 768-channel tensors of 197 rows fit.
DEIT_TINY = VitModelConfig(lines=1, macs=8, max_tokens=197, max_cols=768, ln_channels=192, buffer_tiles=8192)
