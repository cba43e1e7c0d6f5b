"""The model family of the robust-tickets study and the rules for which layers a ticket prunes.

* ``cnn``: a small CNN for 1x8x8 digits (three 3x3 convolutions, one hidden
  linear layer, a linear ``head``), ~30k weights, no BatchNorm (so a pruned
  channel is really gone: its weights and bias are masked, nothing re-adds a shift).
* ``vit``: the ViT of the ViTCoD algorithm (``attnforge.algo.vitcod.vit``), small, on digits,
  when that module is present: the digits preset's width and depth at the native 8x8 (17 tokens);
* ``vit65``: the digits preset itself (65 tokens), the model the ViTCoD accelerator runs
  (``attnforge.algo.tickets.vit_adapter``); about 4x the ``vit``'s compute.

Every model has its classifier as ``model.head`` (an ``nn.Linear``), so a
downstream task swaps the head. Prunable layers are all ``nn.Linear`` and
``nn.Conv2d`` modules except the head: their weight viewed as a matrix
``[out, in * kh * kw]`` is what the export turns into CSR.
"""

from __future__ import annotations

import torch
from torch import nn

from .names import MODEL_NAMES

__all__ = ["SmallCNN", "MODELS", "build_model", "prunable_layers", "replace_head", "available_models"]


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 5, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.fc = nn.Linear(4 * width * 2 * 2, 64)
        self.head = nn.Linear(64, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)      # 8x8 -> 4x4
        x = torch.max_pool2d(torch.relu(self.conv3(x)), 2)      # 4x4 -> 2x2
        return torch.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _build_cnn(num_classes: int) -> nn.Module:
    return SmallCNN(num_classes)


def _build_vit(num_classes: int) -> nn.Module:
    from attnforge.algo.tickets.vit_adapter import build_digits_vit

    return build_digits_vit(num_classes)


def _build_vit65(num_classes: int) -> nn.Module:
    from attnforge.algo.tickets.vit_adapter import build_digits_vit65

    return build_digits_vit65(num_classes)


MODELS = {"cnn": _build_cnn, "vit": _build_vit, "vit65": _build_vit65}
assert tuple(MODELS) == MODEL_NAMES


def available_models() -> list[str]:
    """Models whose code is present (the ViT needs ``attnforge.algo.vitcod.vit``)."""
    names = ["cnn"]
    try:
        import attnforge.algo.vitcod.vit  # noqa: F401
        names += ["vit", "vit65"]
    except ImportError:
        pass
    return names


def build_model(name: str, num_classes: int = 5) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model {name!r} is not one of {', '.join(MODELS)}")
    if name not in available_models():
        raise ValueError(f"model {name!r} needs attnforge.algo.vitcod.vit, which is not present in this tree")
    model = MODELS[name](num_classes)
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise TypeError(f"model {name!r} must have its classifier as an nn.Linear named 'head'")
    return model


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module of every Linear/Conv2d except the classifier head, in definition order."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and not (name == "head" or name.startswith("head."))}


def replace_head(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Give ``model`` a freshly initialized head for ``num_classes`` (seeded); returns the model."""
    old = model.head
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model.head = nn.Linear(old.in_features, num_classes)
    torch.random.set_rng_state(gen_state)
    return model
