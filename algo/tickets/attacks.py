"""Adversarial examples: PGD in the L-inf and L2 balls (random start) and FGSM.

Inputs live in a box ``[lo, hi]`` (the digits are in [0, 1]); every iterate is
projected onto the eps-ball around the clean input and then clipped to the
box. Clipping moves each coordinate towards the clean input (which lies in
the box), so it never leaves the ball: the result is always within eps in the
chosen norm and within the box.

The model's train/eval mode is restored after the attack; the attack itself runs in eval
mode so dropout does not make the gradient noisy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["Attack", "pgd", "fgsm", "project"]

NORMS = ("linf", "l2")


def _check(eps, norm, steps=1, step_size=None):
    if norm not in NORMS:
        raise ValueError(f"attack norm {norm!r} is not one of {', '.join(NORMS)}")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"attack eps must be a number >= 0, not {eps!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"attack steps must be an integer >= 1, not {steps!r}")
    if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ValueError(f"attack step_size must be a number > 0, not {step_size!r}")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The nearest perturbation to ``delta`` in the eps-ball (per example)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _flat_norm(delta)).clamp(max=1.0)


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        return (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    # Uniform in the L2 ball: direction uniform on the sphere, radius eps * u^(1/d).
    d = x[0].numel()
    direction = torch.randn(x.shape, generator=gen)
    direction = direction / _flat_norm(direction)
    radius = eps * torch.rand(x.shape[0], generator=gen).pow(1.0 / d).view(-1, *([1] * (x.dim() - 1)))
    return direction * radius


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
        steps: int = 7, step_size: float | None = None, random_start: bool = True,
        box: tuple[float, float] = (0.0, 1.0), generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy within the eps-ball around ``x``.

    ``step_size`` defaults to ``2.5 * eps / steps`` (Madry et al.). Returns
    ``x_adv`` (detached) with ``||x_adv - x|| <= eps`` in ``norm`` and every value in ``box``.
    """
    _check(eps, norm, steps, step_size)
    if eps == 0:
        return x.detach().clone()
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    lo, hi = box
    was_training = model.training
    model.eval()
    try:
        x = x.detach()
        delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
        delta = (x + delta).clamp(lo, hi) - x
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                step = grad.sign() if norm == "linf" else grad / _flat_norm(grad)
                delta = project(delta + alpha * step, eps, norm)
                delta = (x + delta).clamp(lo, hi) - x
        return (x + delta).detach()
    finally:
        model.train(was_training)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         box: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """One full step of size eps from ``x`` along the gradient's sign (L-inf) or direction (L2)."""
    return pgd(model, x, y, eps=eps, norm=norm, steps=1, step_size=eps, random_start=False, box=box)


@dataclass(frozen=True)
class Attack:
    """An attack configuration, used for adversarial training and robust evaluation."""

    eps: float
    norm: str = "linf"
    steps: int = 5
    step_size: float | None = None
    random_start: bool = True
    kind: str = "pgd"   # or "fgsm"

    def __post_init__(self):
        if self.kind not in ("pgd", "fgsm"):
            raise ValueError(f"attack kind {self.kind!r} is not one of pgd, fgsm")
        _check(self.eps, self.norm, self.steps, self.step_size)

    def __call__(self, model, x, y, generator=None):
        if self.kind == "fgsm":
            return fgsm(model, x, y, eps=self.eps, norm=self.norm)
        return pgd(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps, step_size=self.step_size,
                   random_start=self.random_start, generator=generator)
