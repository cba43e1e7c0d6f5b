"""A model and its data for one ViTCoD job: from an attnforge checkpoint, a timm/DeiT state dict or a
preset, the datasets of ``data``, and a masks file applied to the model.

The jobs behind ``attnforge vitcod train|masks|finetune|export|eval`` start here;
the command line only maps its options onto these arguments.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

__all__ = ["peek_config", "prepare", "apply_masks", "num_classes"]


def peek_config(checkpoint=None, *, preset: str = "digits", overrides: dict | None = None,
                num_heads: int | None = None, img_size: int | None = None):
    """``(ViTConfig, ours)``: the model config of ``checkpoint`` (or of ``preset`` with ``overrides``)
    before the model is built; ``ours`` is whether the checkpoint is attnforge's own."""
    from ..checkpoint import read_plain
    from .train import CKPT_FORMAT
    from .vit import PRESETS, ViTConfig, config_from_state_dict

    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint {path} does not exist")
        ck = read_plain(path, kind="--checkpoint file")
        if isinstance(ck, dict) and ck.get("format") == CKPT_FORMAT:
            return ViTConfig(**ck["config"]), True
        return config_from_state_dict(ck, num_heads=num_heads, img_size=img_size), False
    base = PRESETS[preset].to_dict()
    base.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ViTConfig(**base), False


def num_classes(dataset) -> int:
    if hasattr(dataset, "classes"):
        return len(dataset.classes)
    return int(dataset.tensors[1].max()) + 1


def prepare(checkpoint=None, *, data: str = "digits", preset: str = "digits", overrides: dict | None = None,
            img_size: int | None = None, num_heads: int | None = None, limit: int | None = None, seed: int = 0):
    """``(model, train_set, val_set)``: the model of ``checkpoint`` (or a new one of ``preset`` and
    ``overrides``, ViTConfig field names) and the datasets of ``data``, the training set cut to ``limit``."""
    import torch
    from torch.utils.data import Subset

    from .data import make_datasets
    from .train import load_model
    from .vit import VisionTransformer

    torch.manual_seed(seed)
    cfg, _ = peek_config(checkpoint, preset=preset, overrides=overrides, num_heads=num_heads, img_size=img_size)
    train_set, val_set = make_datasets(data, cfg.img_size, cfg.in_chans)
    classes = num_classes(train_set)
    if checkpoint:
        model = load_model(checkpoint, num_classes=classes, img_size=img_size, num_heads=num_heads)
        if model.cfg.num_classes != classes:
            raise ValueError(f"--checkpoint {checkpoint} classifies {model.cfg.num_classes} classes, "
                             f"--data {data} has {classes}")
    else:
        model = VisionTransformer(replace(cfg, num_classes=classes))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be a positive number of images, got {limit}")
        train_set = Subset(train_set, range(min(limit, len(train_set))))
    return model, train_set, val_set


def apply_masks(model, path):
    """Load the masks file at ``path``, check it fits ``model`` and fix it in every attention layer."""
    import torch

    from attnforge.formats.masks import load_masks

    ms = load_masks(path)
    want = (model.cfg.depth, model.cfg.num_heads, model.cfg.num_tokens, model.cfg.num_tokens)
    if ms.keep.shape != want:
        raise ValueError(f"--masks {path} has keep of shape {ms.keep.shape}, the model needs {want} "
                         f"(layers, heads, tokens, tokens)")
    model.set_masks(torch.from_numpy(ms.keep))
    return ms
