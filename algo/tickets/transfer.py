"""Transfer a ticket to a downstream task: a new head, the ticket's mask held fixed.

A ticket is a dict (saved with ``torch.save``, format ``attnforge.tickets.ticket/1``):

* ``model``: the model family name (``cnn``, ``vit``), ``classes``: source classes;
* ``state``: dense weights the ticket starts from (the pretrained weights or the
  early checkpoint IMP rewound to), plain state-dict names;
* ``masks``: ``{"<layer>.weight" | "<layer>.bias": 0/1 float tensor}``;
* ``meta``: how it was drawn (eps, norm, pattern, level, scope, scheme, seed, sparsity).

Modes: ``finetune`` trains every parameter (pruned weights stay zero: the
masks are ``torch.nn.utils.prune`` reparametrizations); ``linear`` (linear
probing) freezes the ticket and trains only the new head.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .data import Split, Task
from .models import build_model, replace_head
from .names import MODES
from .pruning import apply_masks
from .train import evaluate, train

__all__ = ["TICKET_FORMAT", "MODES", "make_ticket", "ticket_model", "transfer", "TRANSFER_EPOCHS"]

TICKET_FORMAT = "attnforge.tickets.ticket/1"
#: epochs and learning rate per transfer mode (small downstream training sets: 20 images per class).
TRANSFER_EPOCHS = {"finetune": 40, "linear": 60}
TRANSFER_LR = {"finetune": 2e-3, "linear": 1e-2}
TRANSFER_BATCH = {"finetune": 50, "linear": 32}


def make_ticket(model_name: str, classes: int, state: dict, masks: dict, meta: dict) -> dict:
    return {"format": TICKET_FORMAT, "model": model_name, "classes": classes,
            "state": {k: v.detach().clone() for k, v in state.items()},
            "masks": {k: v.detach().clone() for k, v in masks.items()}, "meta": dict(meta)}


def ticket_model(ticket: dict) -> nn.Module:
    """The source model of a ticket: its weights with its masks applied (as prune reparametrizations)."""
    if not isinstance(ticket, dict) or ticket.get("format") != TICKET_FORMAT:
        raise ValueError(f"not a ticket (expected format {TICKET_FORMAT!r}, got "
                         f"{ticket.get('format') if isinstance(ticket, dict) else type(ticket).__name__!r})")
    model = build_model(ticket["model"], ticket["classes"])
    model.load_state_dict(ticket["state"])
    apply_masks(model, ticket["masks"])
    model.eval()
    return model


def transfer(ticket: dict, task: Task, mode: str = "finetune", *, seed: int = 0, epochs: int | None = None,
             lr: float | None = None, progress: bool = False, return_model: bool = False):
    """Train a new head (and, for ``finetune``, the masked body) on ``task``; accuracy on its val and test splits."""
    if mode not in MODES:
        raise ValueError(f"transfer mode {mode!r} is not one of {', '.join(MODES)}")
    model = replace_head(ticket_model(ticket), task.classes, seed)
    epochs = TRANSFER_EPOCHS[mode] if epochs is None else epochs
    lr = TRANSFER_LR[mode] if lr is None else lr
    batch = TRANSFER_BATCH[mode]
    if mode == "linear":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))
        # The frozen body is a fixed feature map: compute the features once and train the head on them
        # (the same updates as training through the frozen body, at a fraction of the cost).
        head = model.head
        model.head = nn.Identity()
        with torch.no_grad():
            feats = Split(model(task.train.x), task.train.y)
        model.head = head
        train(head, feats, epochs=epochs, lr=lr, batch_size=batch, seed=seed, progress=progress,
              desc="transfer linear")
    else:
        train(model, task.train, epochs=epochs, lr=lr, batch_size=batch, seed=seed, progress=progress,
              desc="transfer finetune")
    result = {"val": evaluate(model, task.val), "test": evaluate(model, task.test)}
    return (result, model) if return_model else result
