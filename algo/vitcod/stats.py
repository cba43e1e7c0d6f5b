"""Average attention maps per layer and head over a data set, streamed in constant memory.

ViTCoD derives fixed masks from the *average* attention of each head: a running
sum ``[L, H, Nq, Nk]`` (float64) and an image count are all that is kept, so the
data set can be any size.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from .data import loader

__all__ = ["AttentionStats", "attention_statistics"]


class AttentionStats:
    """Running mean of attention maps: ``update`` with a forward's maps, ``mean`` at any time."""

    def __init__(self):
        self.sum: torch.Tensor | None = None   # float64 [L, H, Nq, Nk]
        self.count = 0

    def update(self, maps) -> None:
        """``maps``: one ``[B, H, Nq, Nk]`` tensor per layer (as ``model(x, return_attn=True)`` returns)."""
        batch = torch.stack([m.detach().to(torch.float64).sum(0) for m in maps])
        if self.sum is None:
            self.sum = batch
        elif batch.shape != self.sum.shape:
            raise ValueError(f"attention maps of shape {tuple(batch.shape)} (without batch) do not match the "
                             f"running statistics {tuple(self.sum.shape)}")
        else:
            self.sum += batch
        self.count += maps[0].shape[0]

    def mean(self) -> torch.Tensor:
        if self.sum is None or self.count == 0:
            raise ValueError("no attention maps seen yet")
        return self.sum / self.count


@torch.no_grad()
def attention_statistics(model, dataset, *, batch_size: int = 128, max_images: int | None = None,
                         progress: bool = True) -> torch.Tensor:
    """Mean attention ``[L, H, Nq, Nk]`` (float64) of ``model`` over ``dataset`` (first ``max_images``)."""
    was_training = model.training
    model.eval()
    stats = AttentionStats()
    total = len(dataset) if max_images is None else min(max_images, len(dataset))
    with tqdm(total=total, desc="attention statistics", unit="img", disable=not progress, leave=False) as bar:
        for x, _ in loader(dataset, batch_size, shuffle=False):
            x = x[: total - stats.count]
            if len(x) == 0:
                break
            _, maps = model(x, return_attn=True)
            stats.update(maps)
            bar.update(len(x))
    model.train(was_training)
    return stats.mean()
