"""Natural and adversarial training, evaluation and checkpoints.

Adversarial training (Madry et al.) trains on PGD/FGSM examples only, made
against the current model for every batch; ``attack=None`` (or eps 0) is
natural training. Minibatch order and the attack's random starts come from
one seeded generator, so a run is reproducible from its seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..checkpoint import load_checkpoint_file, save_checkpoint_file
from .attacks import Attack
from .data import Split

__all__ = ["train", "evaluate", "pretrain", "save_checkpoint", "load_checkpoint", "clean_state_dict", "PRETRAINED_FORMAT"]


def train(model: nn.Module, data: Split, *, epochs: int, lr: float = 2e-3, batch_size: int = 64,
          attack: Attack | None = None, seed: int = 0, weight_decay: float = 0.0,
          params=None, progress: bool = False, desc: str = "train") -> nn.Module:
    """Train ``model`` in place with Adam on ``data`` (all parameters, or ``params``); returns it."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, not {epochs!r}")
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    adversarial = attack is not None and attack.eps > 0
    n = len(data)
    model.train()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x, y = data.x[idx], data.y[idx]
            if adversarial:
                x = attack(model, x, y, generator=gen)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


def evaluate(model: nn.Module, data: Split, attack: Attack | None = None, seed: int = 0,
             batch_size: int = 512) -> float:
    """Accuracy on ``data`` (under ``attack`` when given)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for start in range(0, len(data), batch_size):
        x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
        if attack is not None and attack.eps > 0:
            x = attack(model, x, y, generator=gen)
        with torch.no_grad():
            correct += int((model(x).argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(1, len(data))


def clean_state_dict(model: nn.Module) -> dict:
    """The model's weights with any pruning folded in (``weight_orig * weight_mask`` -> ``weight``)."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            state[base] = value * model.state_dict()[base + "_mask"]
        else:
            state[key] = value
    return {k: v.detach().clone() for k, v in state.items()}


def save_checkpoint(path: Path, payload: dict) -> Path:
    """Write ``payload`` (plain data: tensors, numbers, str, lists, dicts) with torch.save atomically,
    so a killed run leaves no half file."""
    return save_checkpoint_file(path, payload)


def load_checkpoint(path: Path) -> dict:
    """The payload at ``path``, loaded with ``weights_only=True``: ``ArtifactError`` for anything else."""
    return load_checkpoint_file(path, kind="tickets checkpoint")


PRETRAINED_FORMAT = "attnforge.tickets.pretrained/1"


def pretrain(model_name: str, *, attack: Attack | None, epochs: int, lr: float, seed: int,
             early_epoch: int | None = None, robust_eval: Attack | None = None, progress: bool = False) -> dict:
    """Train a model of the family on the source task (adversarially when ``attack`` has eps > 0).

    Returns a checkpoint dict (format ``attnforge.tickets.pretrained/1``): the weights,
    the attack it was trained with, source val/test accuracy (and robust val accuracy
    under ``robust_eval``), and with ``early_epoch`` the weights after that many epochs
    (``early_state``, what IMP can rewind to).
    """
    from .data import source_task
    from .models import build_model

    if early_epoch is not None and not (isinstance(early_epoch, int) and 0 <= early_epoch <= epochs):
        raise ValueError(f"early_epoch must be an integer in [0, epochs={epochs}], not {early_epoch!r}")
    src = source_task()
    torch.manual_seed(seed)
    net = build_model(model_name, src.classes)
    early_state = None
    if early_epoch is not None:
        train(net, src.train, epochs=early_epoch, lr=lr, attack=attack, seed=seed, progress=progress, desc="pretrain")
        early_state = clean_state_dict(net)
        train(net, src.train, epochs=epochs - early_epoch, lr=lr, attack=attack, seed=seed + 7919,
              progress=progress, desc="pretrain")
    else:
        train(net, src.train, epochs=epochs, lr=lr, attack=attack, seed=seed, progress=progress, desc="pretrain")
    eps = attack.eps if attack is not None else 0.0
    ck = {"format": PRETRAINED_FORMAT, "model": model_name, "classes": src.classes, "state": clean_state_dict(net),
          "eps": eps, "attack": None if attack is None else vars(attack).copy(), "seed": seed,
          "epochs": epochs, "lr": lr, "source_val": evaluate(net, src.val), "source_test": evaluate(net, src.test)}
    if robust_eval is not None:
        ck["source_val_robust"] = evaluate(net, src.val, robust_eval, seed=seed)
        ck["robust_eval"] = vars(robust_eval).copy()
    if early_state is not None:
        ck["early_state"], ck["early_epoch"] = early_state, early_epoch
    return ck
