"""The augmentation's convolution, the byte-level LM, its corpus, training and checkpoints."""

import pytest
import torch

from attnforge.algo.linear.augment import AugmentedAttention, CausalDepthwiseConv
from attnforge.algo.linear.data import load_corpus, stdlib_files
from attnforge.algo.linear.model import LinearLM, LMConfig
from attnforge.algo.linear.train import TrainConfig, evaluate, load_checkpoint, train_lm
from attnforge.algo.linear.variants import make_core

torch.set_num_threads(1)  # small tensors: threads only contend on the shared cores


@pytest.mark.parametrize("kernel", [1, 2, 5])
def test_conv_never_sees_the_future(kernel):
    conv = CausalDepthwiseConv(3, 4, kernel, seed=1).double()
    v = torch.randn(2, 3, 20, 4, dtype=torch.float64, requires_grad=True)
    y = conv(v)
    for t in range(20):
        (g,) = torch.autograd.grad(y[:, :, t].sum(), v, retain_graph=True)
        if t < 19:
            assert g[:, :, t + 1:].abs().max().item() == 0, f"output {t} sees a later value"
        # ...and exactly the taps it should: the current value and the kernel-1 before it.
        seen = (g.abs().sum((0, 1, 3)) > 0).nonzero().flatten().tolist()
        assert seen == list(range(max(0, t - kernel + 1), t + 1))


def test_conv_matches_its_definition_and_its_recurrent_form():
    conv = CausalDepthwiseConv(2, 3, 4, seed=2).double()
    v = torch.randn(1, 2, 9, 3, dtype=torch.float64)
    ref = torch.zeros_like(v)
    for t in range(9):
        for s in range(4):
            if t - s >= 0:
                ref[:, :, t] += conv.weight[:, :, s] * v[:, :, t - s]
    assert torch.allclose(conv(v), ref, atol=1e-12)
    hist = conv.init_history(1, 2, 3, torch.float64, None)
    for t in range(9):
        hist = conv.push(hist, v[:, :, t])
        assert torch.allclose(conv.read(hist), ref[:, :, t], atol=1e-12)


def test_augmentation_parameters_are_checked():
    base = make_core("elu", 2, 4)
    with pytest.raises(ValueError, match="conv_kernel must be >= 0, not -1"):
        AugmentedAttention(base, conv_kernel=-1)
    with pytest.raises(TypeError, match="base must be an AttentionCore, not int"):
        AugmentedAttention(3)
    with pytest.raises(ValueError, match="takes no mask"):
        AugmentedAttention(base).parallel(*(torch.zeros(1, 2, 3, 4),) * 3, mask=torch.ones(3, 3, dtype=bool))


def test_augmentation_without_chunks_is_plain_variant_plus_conv():
    base = make_core("elu", 2, 4).double()
    aug = AugmentedAttention(base, conv_kernel=2, chunk=0).double()
    q, k, v = (torch.randn(1, 2, 10, 4, dtype=torch.float64) for _ in range(3))
    assert torch.allclose(aug.parallel(q, k, v), base.parallel(q, k, v) + aug.conv(v), atol=1e-12)


@pytest.mark.parametrize("attention,augment", [("elu", True), ("linformer", False), ("cosformer", True)])
def test_lm_step_and_extend_match_forward(attention, augment):
    torch.manual_seed(0)
    model = LinearLM(LMConfig(attention=attention, augment=augment, n_layer=2, n_head=2, d_model=16,
                              block_size=32, chunk=4)).double().eval()
    idx = torch.randint(256, (2, 20))
    with torch.no_grad():
        full, _ = model(idx)
        state = model.init_state(2)
        steps = []
        for t in range(12):
            logits, state = model.step(state, idx[:, t])
            steps.append(logits)
        ext, _ = model.extend(state, idx[:, 12:])
    assert torch.allclose(torch.stack(steps, 1), full[:, :12], atol=1e-10)
    assert torch.allclose(ext, full[:, 12:], atol=1e-10)


def test_lm_refuses_positions_beyond_block():
    model = LinearLM(LMConfig(attention="elu", n_layer=1, n_head=2, d_model=8, block_size=8))
    with pytest.raises(ValueError, match="exceed block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="attention must be one of"):
        LMConfig(attention="nope")
    with pytest.raises(ValueError, match="d_model=10 must be a multiple of n_head=4"):
        LMConfig(d_model=10, n_head=4)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(max_train_bytes=200_000, max_val_bytes=20_000)


def test_corpus_split_is_deterministic_and_disjoint(corpus):
    again = load_corpus(max_train_bytes=200_000, max_val_bytes=20_000)
    assert torch.equal(corpus.train, again.train) and torch.equal(corpus.val, again.val)
    assert corpus.meta["bytes_val"] == 20_000 and corpus.meta["files_val"] >= 1
    assert stdlib_files() == stdlib_files() and len(stdlib_files()) > 100
    # The held-out text is not a substring of the training text.
    assert bytes(corpus.val[:4000].numpy()) not in bytes(corpus.train.numpy())


def test_training_lowers_loss_and_checkpoint_roundtrips(corpus, tmp_path):
    cfg = LMConfig(attention="elu", augment=True, n_layer=1, n_head=2, d_model=32, block_size=64, chunk=8)
    tc = TrainConfig(steps=40, batch_size=8, block=64, lr=3e-3, seed=1, eval_windows=8)
    before = evaluate(LinearLM(cfg), corpus, 64, 8)
    model, log = train_lm(cfg, corpus, tc, checkpoint=tmp_path / "m.pt", progress=False)
    after = evaluate(model, corpus, 64, 8)
    assert after["loss"] < before["loss"] - 1.0, (before, after)
    loaded, ck = load_checkpoint(tmp_path / "m.pt")
    assert ck["step"] == 40 and ck["config"]["attention"] == "elu"
    assert evaluate(loaded, corpus, 64, 8)["loss"] == pytest.approx(after["loss"], abs=1e-6)
    # Same seed, same run (the first 5 steps are in the warmup, where the schedules coincide).
    _, log2 = train_lm(cfg, corpus, TrainConfig(steps=5, batch_size=8, block=64, lr=3e-3, seed=1), progress=False)
    assert log2 == log[:5]


def test_bad_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something/1"}, bad)
    with pytest.raises(ValueError, match="bad.pt: not an attnforge linear LM checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
