"""Speculative decoding: identical to sequential greedy; commit forgets rejected tokens exactly."""

import copy

import pytest
import torch

from attnforge.algo.linear.model import LinearLM, LMConfig
from attnforge.algo.linear.speculative import accept_or_resample, greedy_decode, speculative_decode
from attnforge.algo.linear.variants import state_tensors

torch.set_num_threads(1)  # small tensors: threads only contend on the shared cores


def _lm(attention, augment, seed=0, d=32, layers=2, **kw):
    torch.manual_seed(seed)
    cfg = LMConfig(attention=attention, augment=augment, n_layer=layers, n_head=2, d_model=d, block_size=96,
                   chunk=4, conv_kernel=3, seed=seed, **kw)
    model = LinearLM(cfg).double().eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so that outputs depend on the context
        for p in model.parameters():
            p.mul_(4.0)
    return model


def _noisy_copy(model, scale, seed):
    g = torch.Generator().manual_seed(seed)
    draft = copy.deepcopy(model)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return draft


CASES = [("elu", True), ("relu", False), ("softmax", False), ("transnormer", True), ("flash", False)]


@pytest.mark.parametrize("attention,augment", CASES, ids=[a + ("+aug" if g else "") for a, g in CASES])
def test_speculative_greedy_identical_to_sequential(attention, augment, full):
    target = _lm(attention, augment)
    drafts = [_noisy_copy(target, 0.05, 1), _lm("elu", False, seed=5, d=16, layers=1)]
    g = torch.Generator().manual_seed(3)
    accepted = []
    for i in range(10 if full else 4):     # 4 random prompts in make test, 10 in make test-full
        prompt = torch.randint(256, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g)
        ref = greedy_decode(target, prompt, 40)
        for draft in drafts:
            for k in (1, 3, 6):
                out, stats = speculative_decode(target, draft, prompt, 40, k)
                assert out == ref, f"prompt {i}, k={k}: speculative output differs from greedy"
                accepted += stats.accepted_per_verify
    # Both full acceptances and rollbacks happened, so the commit path was exercised both ways.
    assert 0 in accepted and max(accepted) >= 3


def test_draft_equal_to_target_accepts_everything():
    target = _lm("elu", True)
    out, stats = speculative_decode(target, target, [1, 2, 3], 33, 4)
    assert out == greedy_decode(target, [1, 2, 3], 33)
    assert stats.accepted_per_verify == [4] * 6 + [1]  # 1 + 6 * 5 + 2 tokens


@pytest.mark.parametrize("attention,augment", CASES, ids=[a + ("+aug" if g else "") for a, g in CASES])
def test_rollback_leaves_state_as_if_rejected_tokens_never_seen(attention, augment):
    model = _lm(attention, augment)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        state, _ = model.prefill(torch.randint(256, (1, 7), generator=g))
        verify = torch.randint(256, (1, 6), generator=g)
        for a in (1, 3, 6):
            _, cache = model.extend(state, verify)
            committed = {k: v.clone() for k, v in state_tensors(model.commit(state, cache, a)).items()}
            # Same accepted tokens, different rejected ones: bit for bit the same committed state.
            other = verify.clone()
            other[:, a:] = (other[:, a:] + 17) % 256
            _, cache2 = model.extend(state, other)
            committed2 = state_tensors(model.commit(state, cache2, a))
            assert committed.keys() == committed2.keys()
            for key in committed:
                assert torch.equal(committed[key], committed2[key]), f"a={a}: {key} remembers a rejected token"
            # And the same state as stepping through the accepted tokens alone.
            seq = state
            for t in verify[0, :a].tolist():
                _, seq = model.step(seq, torch.tensor([t]))
            seq = state_tensors(seq)
            for key in committed:
                assert torch.allclose(committed[key], seq[key], rtol=1e-12, atol=1e-12), key


def test_commit_refuses_more_tokens_than_verified():
    model = _lm("elu", False)
    state = model.init_state(1)
    _, cache = model.extend(state, torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"accepted must be in \[0, 3\], not 4"):
        model.commit(state, cache, 4)


def test_rejection_rule_reproduces_target_distribution():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    q = torch.tensor([0.1, 0.1, 0.3, 0.4, 0.1], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    n = 20000
    drafts = torch.multinomial(q, n, replacement=True, generator=g).tolist()
    counts = torch.zeros(5, dtype=torch.float64)
    for d in drafts:
        counts[accept_or_resample(p, q, d, g)[1]] += 1
    tv = 0.5 * (counts / n - p).abs().sum().item()
    assert tv < 0.015, f"total variation {tv:.4f} between emitted tokens and the target distribution"
    # The draft distribution itself would be far off: the check can fail.
    assert 0.5 * (q - p).abs().sum().item() > 0.3


def test_sampling_mode_runs_and_is_seeded():
    target = _lm("elu", True)
    draft = _noisy_copy(target, 0.3, 2)
    a, _ = speculative_decode(target, draft, [5, 6], 30, 3, sample=True, generator=torch.Generator().manual_seed(4))
    b, _ = speculative_decode(target, draft, [5, 6], 30, 3, sample=True, generator=torch.Generator().manual_seed(4))
    assert a == b and len(a) == 30


def test_bad_k_and_lengths_are_refused():
    target = _lm("elu", False)
    with pytest.raises(ValueError, match="k .* must be a positive integer, not 0"):
        speculative_decode(target, target, [1], 5, 0)
    with pytest.raises(ValueError, match="exceed block_size=96"):
        speculative_decode(target, target, [1] * 90, 10, 2)
