"""Draw one ticket from a pretrained checkpoint: one-shot magnitude pruning (``omp``) or IMP with
rewinding (``imp``, retraining on the source task between rounds). The job behind
``attnforge tickets draw``."""

from __future__ import annotations

from .attacks import Attack
from .data import source_task
from .models import build_model
from .pruning import Level, imp, one_shot, sparsity_of
from .train import train
from .transfer import make_ticket

__all__ = ["draw_ticket"]


def draw_ticket(ck: dict, pattern: str, level: str, *, scheme: str = "omp", scope: str = "layer",
                rewind: str = "pretrained", rounds: int = 3, retrain_epochs: int = 8, seed: int = 0,
                source: str = "") -> dict:
    """The ticket (``make_ticket``) of pretrained checkpoint ``ck`` at ``pattern``/``level``; its
    ``meta`` records how it was drawn (``source`` names the checkpoint)."""
    lv = Level.parse(pattern, level)
    if rewind == "early" and "early_state" not in ck:
        raise ValueError(f"{source or 'the checkpoint'} has no early checkpoint; pretrain with --early-epoch to "
                         f"rewind to one")
    rewind_state = ck["early_state"] if rewind == "early" else ck["state"]
    net = build_model(ck["model"], ck["classes"])
    net.load_state_dict(ck["state"])
    if scheme == "omp":
        masks = one_shot(net, lv, scope)
    else:
        src = source_task()
        attack = Attack(**ck["attack"]) if ck.get("attack") else None

        def retrain(m, r):
            train(m, src.train, epochs=retrain_epochs, lr=ck.get("lr", 2e-3), attack=attack,
                  seed=seed * 1000 + r, progress=True, desc=f"IMP round {r + 1}")

        masks = imp(net, [lv], retrain=retrain, rewind_state=rewind_state, scope=scope,
                    rounds_per_level=rounds, progress=True)[lv.label]
    meta = {"scheme": scheme, "pattern": lv.pattern, "level": lv.label, "scope": scope,
            "sparsity": sparsity_of(masks), "eps": ck["eps"], "seed": seed, "rewind": rewind,
            "pretrained": source}
    return make_ticket(ck["model"], ck["classes"], rewind_state, masks, meta)
