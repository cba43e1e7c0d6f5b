"""Names and shapes shared by the ViTCoD modules and the CLI, in a module that imports nothing heavy.

``attnforge --help`` builds every command group's parser; keeping the model
presets and the polarization modes here means it does not import torch for the
``vitcod`` group (as ``algo/tickets/names.py`` does for ``tickets``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ViTConfig", "PRESETS", "POLARIZE_MODES"]

#: How ``polarize`` chooses each head's number of global columns G (see ``polarize.py``).
POLARIZE_MODES = ("fixed", "cycles")


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a ViT; DeiT's defaults (DeiT-Tiny: ``embed_dim=192, num_heads=3``)."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True

    def __post_init__(self):
        for name in ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ViTConfig.{name} must be an int, not {value!r}")
            if value <= 0:
                raise ValueError(f"ViTConfig.{name} must be positive, got {value}")
        if self.img_size % self.patch_size:
            raise ValueError(f"ViTConfig.img_size={self.img_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"ViTConfig.embed_dim={self.embed_dim} is not a multiple of "
                             f"num_heads={self.num_heads}")
        if not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise ValueError(f"ViTConfig.mlp_ratio must be a positive number, got {self.mlp_ratio!r}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens per image: the patches plus the class token (197 for DeiT at 224/16)."""
        return self.grid ** 2 + 1

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "deit_tiny": ViTConfig(embed_dim=192, depth=12, num_heads=3),
    "deit_small": ViTConfig(embed_dim=384, depth=12, num_heads=6),
    "deit_base": ViTConfig(embed_dim=768, depth=12, num_heads=12),
    # The bundled default: scikit-learn's 8x8 digits upscaled to 32x32, 4x4 patches -> 65 tokens.
    "digits": ViTConfig(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4,
                        num_heads=4, mlp_ratio=2.0),
}
