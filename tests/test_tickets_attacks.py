"""PGD and FGSM: they raise the loss and never leave the eps-ball (or the data box)."""

import pytest
import torch
import torch.nn.functional as F

from attnforge.algo.tickets.attacks import Attack, fgsm, pgd, project
from attnforge.algo.tickets.data import source_task
from attnforge.algo.tickets.models import build_model
from attnforge.algo.tickets.train import evaluate, train

torch.set_num_threads(1)  # tests share two cores


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    task = source_task()
    model = train(build_model("cnn"), task.train, epochs=8, seed=0)
    return model, task.val.x[:128], task.val.y[:128]


def _dist(a, b, norm):
    d = (a - b).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.3), ("l2", 0.5), ("l2", 2.0)])
def test_pgd_raises_loss_and_stays_in_ball(trained, norm, eps):
    model, x, y = trained
    gen = torch.Generator().manual_seed(1)
    x_adv = pgd(model, x, y, eps=eps, norm=norm, steps=10, generator=gen)
    assert (_dist(x_adv, x, norm) <= eps + 1e-5).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y, reduction="none")
        adv = F.cross_entropy(model(x_adv), y, reduction="none")
        noise = project(torch.randn(x.shape, generator=gen), eps, norm)
        rand = F.cross_entropy(model((x + noise).clamp(0, 1)), y, reduction="none")
    assert adv.mean() > clean.mean() * 1.5
    assert adv.mean() > rand.mean()
    assert (adv >= clean - 1e-4).float().mean() > 0.9   # almost every example's loss goes up


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_in_ball_and_raises_loss(trained, norm):
    model, x, y = trained
    eps = 0.2 if norm == "linf" else 1.0
    x_adv = fgsm(model, x, y, eps=eps, norm=norm)
    assert (_dist(x_adv, x, norm) <= eps + 1e-5).all()
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_pgd_without_random_start_is_deterministic_and_eps0_is_identity(trained):
    model, x, y = trained
    a = pgd(model, x, y, eps=0.1, steps=3, random_start=False)
    b = pgd(model, x, y, eps=0.1, steps=3, random_start=False)
    assert torch.equal(a, b)
    assert torch.equal(pgd(model, x, y, eps=0.0), x)


def test_pgd_restores_train_mode(trained):
    model, x, y = trained
    model.train()
    pgd(model, x, y, eps=0.1, steps=2)
    assert model.training
    model.eval()


def test_adversarial_training_is_more_robust(trained):
    """A short PGD-trained model resists the attack better than the naturally trained one."""
    natural, _, _ = trained
    task = source_task()
    torch.manual_seed(0)
    atk = Attack(0.2, steps=3)
    robust = train(build_model("cnn"), task.train, epochs=6, seed=0, attack=atk)
    assert evaluate(robust, task.val, atk) > evaluate(natural, task.val, atk) + 0.1


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-0.1), "eps must be a number >= 0"),
    (dict(eps=0.1, norm="l1"), "norm 'l1' is not one of"),
    (dict(eps=0.1, steps=0), "steps must be an integer >= 1"),
    (dict(eps=0.1, step_size=0), "step_size must be a number > 0"),
])
def test_bad_attack_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Attack(**kwargs)
