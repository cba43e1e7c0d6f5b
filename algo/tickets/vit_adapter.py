"""The ViTCoD ViT (``attnforge.algo.vitcod.vit``) as a member of the tickets model family.

The tickets tasks feed 1x8x8 images in [0, 1] (attacks work in that pixel
space); this subclass upscales them bilinearly to the ViT's ``img_size`` and
normalizes them as the ViTCoD digits data does ((x - 0.3) / 0.4), then runs the
unchanged ViT. Parameter names stay timm's, the classifier is ``head``, so the
prunable layers are ``patch_embed.proj`` and every block's ``attn.qkv``,
``attn.proj``, ``mlp.fc1``, ``mlp.fc2``.
"""

from __future__ import annotations

from dataclasses import replace

import torch.nn.functional as F

from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer

__all__ = ["DigitsViT", "build_digits_vit", "VIT_PRESET"]

#: The ViTCoD digits preset (32x32 input, 4x4 patches -> 65 tokens, dim 64, 4 blocks, 4 heads).
VIT_PRESET = "digits"


class DigitsViT(VisionTransformer):
    def forward(self, x, return_attn: bool = False):
        size = self.cfg.img_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return super().forward((x - 0.3) / 0.4, return_attn=return_attn)


def build_digits_vit(num_classes: int) -> DigitsViT:
    return DigitsViT(replace(PRESETS[VIT_PRESET], num_classes=num_classes))
