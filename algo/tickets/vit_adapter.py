"""The ViTCoD ViT (``attnforge.algo.vitcod.vit``) as a member of the tickets model family.

Same class, same parameter names (timm's) and the same width, depth and heads
as ViTCoD's ``digits`` preset (dim 64, 4 blocks, 4 heads, MLP ratio 2), but on
the native 8x8 digits with 2x2 patches (16 patches + CLS = 17 tokens) instead
of the preset's 32x32 upscaled input (65 tokens): about 4x cheaper, which the
study's many adversarial trainings and transfers need to fit its one-hour
budget. Inputs are 1x8x8 in [0, 1] (attacks work in that pixel space) and are
normalized inside the model as the ViTCoD digits data is ((x - 0.3) / 0.4).
The classifier is ``head``; the prunable layers are ``patch_embed.proj`` and
every block's ``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``.
"""

from __future__ import annotations

from dataclasses import replace

from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer

__all__ = ["DigitsViT", "build_digits_vit", "TICKETS_VIT"]

#: ViTCoD's digits preset at the native 8x8 resolution.
TICKETS_VIT = replace(PRESETS["digits"], img_size=8, patch_size=2)


class DigitsViT(VisionTransformer):
    def forward(self, x, return_attn: bool = False):
        return super().forward((x - 0.3) / 0.4, return_attn=return_attn)


def build_digits_vit(num_classes: int) -> DigitsViT:
    return DigitsViT(replace(TICKETS_VIT, num_classes=num_classes))
