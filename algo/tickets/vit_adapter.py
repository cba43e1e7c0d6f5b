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

``vit65`` (``DigitsViT65``) is the digits preset itself, the model the ViTCoD
accelerator runs: the same 8x8 inputs in [0, 1], upscaled inside the model to
32x32 (bilinear, as ``attnforge.algo.vitcod.data.digits_datasets`` does) and cut
into 4x4 patches (64 patches + CLS = 65 tokens). Its parameters are the ViTCoD
model's, name for name, so a ticket's weights load into
``attnforge.algo.vitcod.vit.VisionTransformer(PRESETS["digits"])``.
"""

from __future__ import annotations

from dataclasses import replace

from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer

import torch.nn.functional as F

__all__ = ["DigitsViT", "DigitsViT65", "build_digits_vit", "build_digits_vit65", "TICKETS_VIT", "TICKETS_VIT65"]

#: ViTCoD's digits preset at the native 8x8 resolution.
TICKETS_VIT = replace(PRESETS["digits"], img_size=8, patch_size=2)
#: ViTCoD's digits preset as it is (32x32 input, 65 tokens).
TICKETS_VIT65 = PRESETS["digits"]


class DigitsViT(VisionTransformer):
    def forward(self, x, return_attn: bool = False):
        return super().forward((x - 0.3) / 0.4, return_attn=return_attn)


def build_digits_vit(num_classes: int) -> DigitsViT:
    return DigitsViT(replace(TICKETS_VIT, num_classes=num_classes))


class DigitsViT65(VisionTransformer):
    def forward(self, x, return_attn: bool = False):
        x = F.interpolate(x, size=(self.cfg.img_size, self.cfg.img_size), mode="bilinear", align_corners=False)
        return super().forward((x - 0.3) / 0.4, return_attn=return_attn)


def build_digits_vit65(num_classes: int) -> DigitsViT65:
    return DigitsViT65(replace(TICKETS_VIT65, num_classes=num_classes))
