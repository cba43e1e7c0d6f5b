"""Speculative decoding: identical to sequential decoding; commit forgets rejected tokens exactly;
the batched verify equals the per-token recurrent path; the n-gram draft."""

import copy

import pytest
import torch

from attnforge.algo.linear.model import LinearLM, LMConfig
from attnforge.algo.linear.speculative import (ModelDraft, NGramDraft, accept_or_resample, greedy_decode,
                                               sample_decode, sequential_decode, speculative_decode)
from attnforge.algo.linear.variants import state_tensors
from attnforge.errors import ConfigError

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
    for i in range(10 if full else 2):     # 2 random prompts in make test, 10 in make test-full
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


def test_rejection_sampling_mode_runs_and_is_seeded():
    target = _lm("elu", True)
    for draft in (_noisy_copy(target, 0.3, 2), NGramDraft(2)):
        runs = [speculative_decode(target, draft, [5, 6, 5, 6], 30, 3, sample=True, sampling="rejection",
                                   generator=torch.Generator().manual_seed(4))[0] for _ in range(2)]
        assert runs[0] == runs[1] and len(runs[0]) == 30


def test_rejection_rule_with_a_one_hot_draft_reproduces_target_distribution():
    # The n-gram draft proposes one token for sure (q one-hot): accept it with probability p(x), else
    # draw from p without x. The emitted token must still be distributed as p.
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(5, dtype=torch.float64)
    n = 8000
    for _ in range(n):
        counts[accept_or_resample(p, torch.eye(5, dtype=torch.float64)[3], 3, g)[1]] += 1
    tv = 0.5 * (counts / n - p).abs().sum().item()
    assert tv < 0.025, f"total variation {tv:.4f}"  # the one-hot draft itself is at 0.9


# ---------------------------------------------------------------------------- batched verify

VERIFY_CASES = [("relu", True), ("elu", True), ("transnormer", True), ("relu", False)]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("attention,augment", VERIFY_CASES, ids=[a + ("+aug" if g else "") for a, g in VERIFY_CASES])
def test_batched_verify_equals_per_token_steps(attention, augment, dtype, tol):
    # One extend over T tokens (and one batched commit) against T recurrent steps, value for value up to
    # `tol` relative to the largest logit: 1e-10 in float64, 2e-5 in float32. The augmented models
    # (chunk 4, conv 3) cross chunk boundaries, so the chunk-local softmax, the fold of a finished chunk
    # into the global state and the conv history all take part.
    model = _lm(attention, augment).to(dtype)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n_prompt, t in ((3, 6), (7, 5), (8, 9), (1, 1)):
            state, _ = model.prefill(torch.randint(256, (1, n_prompt), generator=g))
            tokens = torch.randint(256, (1, t), generator=g)
            logits, cache = model.extend(state, tokens)
            seq, rows = state, []
            for i, tok in enumerate(tokens[0].tolist()):
                row, seq = model.step(seq, torch.tensor([tok]))
                rows.append(row[0])
                committed = state_tensors(model.commit(state, cache, i + 1))
                stepped = state_tensors(seq)
                assert committed.keys() == stepped.keys()
                for key in committed:
                    scale = max(1.0, stepped[key].abs().max().item())
                    err = (committed[key].to(torch.float64) - stepped[key].to(torch.float64)).abs().max().item()
                    assert err <= tol * scale, f"state {key} after {i + 1} tokens: error {err:.3g}"
            ref = torch.stack(rows)
            err = (logits[0] - ref).abs().max().item() / ref.abs().max().item()
            assert err <= tol, f"prompt {n_prompt}, T={t}: relative logit error {err:.3g}"


# ---------------------------------------------------------------------------- drafts and identity

def _prompts(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        unit = torch.randint(256, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
        out.append(unit * 3 + torch.randint(256, (2,), generator=g).tolist())  # something to look up
    return out


@pytest.mark.parametrize("attention,augment", [("relu", True), ("softmax", False)], ids=["relu+aug", "softmax"])
def test_greedy_identical_to_sequential_with_both_drafts(attention, augment):
    target = _lm(attention, augment)
    drafts = {"ngram": NGramDraft(3), "model": ModelDraft(_noisy_copy(target, 0.05, 1))}
    accepted = {name: [] for name in drafts}
    for prompt in _prompts(4):
        ref = sequential_decode(target, prompt, 40)
        assert ref == greedy_decode(target, prompt, 40)  # prefill vs stepped prompt: same tokens here
        for name, draft in drafts.items():
            for k in (1, 4):
                out, stats = speculative_decode(target, draft, prompt, 40, k)
                assert out == ref, f"{name} draft, k={k}: speculative output differs from sequential greedy"
                accepted[name] += stats.accepted_per_verify
    for name, acc in accepted.items():  # both accepting and rejecting verifies were exercised
        assert 0 in acc and max(acc) >= 2, f"{name}: accepted per verify {sorted(set(acc))}"


def test_gumbel_sampling_identical_to_sequential_sampling_with_both_drafts():
    target = _lm("elu", True)
    drafts = [NGramDraft(3), ModelDraft(_noisy_copy(target, 0.05, 1))]
    for seed, prompt in enumerate(_prompts(3, seed=5)):
        ref = sequential_decode(target, prompt, 36, temperature=0.9, seed=seed)
        assert ref == sample_decode(target, prompt, 36, 0.9, seed)
        assert ref != sequential_decode(target, prompt, 36), "sampling must differ from greedy here"
        for draft in drafts:
            out, _ = speculative_decode(target, draft, prompt, 36, 3, sample=True, temperature=0.9, seed=seed)
            assert out == ref, f"seed {seed}, {draft.name} draft: sampled output differs from sequential sampling"
    other = sequential_decode(target, _prompts(1, seed=5)[0], 36, temperature=0.9, seed=99)
    assert other != sequential_decode(target, _prompts(1, seed=5)[0], 36, temperature=0.9, seed=0)


def _ngram(ctx, k, **kw):
    d = NGramDraft(**kw)
    d.start(ctx)
    return d.propose(list(ctx), k)[0]


def test_ngram_draft_proposes_the_continuation_of_a_repeated_pattern():
    assert _ngram([1, 2, 3, 4, 5, 1, 2, 3], 4) == [4, 5, 1, 2]
    # A repeat of period 2 is continued beyond the end of the context (copied as it is produced).
    assert _ngram([7, 8, 7, 8, 7], 5) == [8, 7, 8, 7, 8]
    # The longest suffix that occurred before wins: (1, 2) was followed by 9, the later (2,) by 8.
    assert _ngram([1, 2, 9, 5, 2, 8, 1, 2], 2, max_n=2) == [9, 5]
    assert _ngram([1, 2, 9, 5, 2, 8, 1, 2], 2, max_n=1) == [8, 1]
    # Nothing seen before: no proposal.
    assert _ngram([1, 2, 3, 4], 3) == []
    # Incremental index: proposals track the context as it grows.
    d = NGramDraft(2)
    d.start([5, 6])
    assert d.propose([5, 6, 7], 2)[0] == []
    assert d.propose([5, 6, 7, 5, 6], 3)[0] == [7, 5, 6]


def test_bad_draft_options_are_refused():
    with pytest.raises(ConfigError, match=r"n-gram size \(max_n\) must be >= 1, not 0"):
        NGramDraft(0)
    with pytest.raises(ConfigError, match=r"min_n .* must be in \[1, 2\], not 3"):
        NGramDraft(2, min_n=3)
    target = _lm("elu", False)
    with pytest.raises(ConfigError, match="k .* must be a positive integer, not -1"):
        speculative_decode(target, NGramDraft(), [1, 2], 5, -1)
    with pytest.raises(ConfigError, match="sampling must be one of 'gumbel', 'rejection', not 'topk'"):
        speculative_decode(target, NGramDraft(), [1, 2], 5, 2, sample=True, sampling="topk")
    with pytest.raises(TypeError, match="draft must be a LinearLM, ModelDraft or NGramDraft, not str"):
        speculative_decode(target, "ngram", [1, 2], 5, 2)


def test_bad_k_and_lengths_are_refused():
    target = _lm("elu", False)
    with pytest.raises(ValueError, match="k .* must be a positive integer, not 0"):
        speculative_decode(target, target, [1], 5, 0)
    with pytest.raises(ValueError, match="exceed block_size=96"):
        speculative_decode(target, target, [1] * 90, 10, 2)


def _witten_bell(text: bytes, ctx: bytes, order: int):
    """The corpus draft's distribution, written out directly: per-context Counters and the recursion."""
    from collections import Counter

    p = [(text.count(bytes([w])) + 1.0) / (len(text) + 256.0) for w in range(256)]
    for h in range(1, min(order, len(ctx)) + 1):
        follow = Counter(text[i + h] for i in range(len(text) - h) if text[i:i + h] == ctx[-h:])
        if not follow:
            break
        total, types = sum(follow.values()), len(follow)
        p = [(follow.get(w, 0) + types * p[w]) / (total + types) for w in range(256)]
    return p


def test_corpus_draft_is_the_witten_bell_byte_model_of_its_text():
    from attnforge.algo.linear.speculative import CorpusDraft

    g = torch.Generator().manual_seed(0)
    words = [bytes(torch.randint(97, 101, (int(n),), generator=g).tolist()) for n in torch.randint(1, 5, (40,),
                                                                                                    generator=g)]
    text = b" ".join(words[int(i)] for i in torch.randint(40, (300,), generator=g))
    for order in (1, 3, 5):
        draft = CorpusDraft(text, order)
        for ctx in (b"", b"a", b" ab", b"zz", text[:7], text[100:109], b"abcd "):
            got = draft.distribution(list(ctx))
            assert got.sum() == pytest.approx(1.0, abs=1e-12)
            assert got.tolist() == pytest.approx(_witten_bell(text, ctx, order), rel=1e-12, abs=1e-15), (order, ctx)
    # the remembered log-probabilities are those of the distribution, also after the memo overflows
    draft = CorpusDraft(text, 3)
    draft.MEMO_SIZE = 2
    for ctx in (b"ab", b" ab", b"cab", b" ab", b"dd"):
        torch.testing.assert_close(draft.log_probs(list(ctx)), torch.log(torch.tensor(draft.distribution(list(ctx)))))
        assert len(draft._memo) <= 2
    with pytest.raises(ConfigError, match=r"corpus draft order \(context bytes\) must be in \[1, 6\], not 7"):
        CorpusDraft(text, 7)
    with pytest.raises(ConfigError, match="the text has 3 bytes, needs at least order \\+ 1 = 5"):
        CorpusDraft(b"abc", 4)


def test_corpus_draft_outputs_identical_to_sequential_greedy_and_gumbel():
    from attnforge.algo.linear.speculative import make_draft

    target = _lm("relu", True)
    prompts = _prompts(2, seed=7)
    # a text the target's own continuations are in, so that the draft is right often (and wrong sometimes)
    text = b"".join(bytes(p + sequential_decode(target, p, 40)) for p in _prompts(4, seed=8) + prompts[:1])
    draft = make_draft("corpus", text=text, order=3)
    accepted = []
    for seed, prompt in enumerate(prompts):
        ref = sequential_decode(target, prompt, 32)
        for k in (1, 4):
            out, stats = speculative_decode(target, draft, prompt, 32, k)
            assert out == ref, f"greedy, k={k}: speculative output differs from sequential"
            accepted += stats.accepted_per_verify
        ref = sequential_decode(target, prompt, 32, temperature=0.9, seed=seed)
        out, _ = speculative_decode(target, draft, prompt, 32, 4, sample=True, temperature=0.9, seed=seed)
        assert out == ref, "gumbel: speculative output differs from sequential sampling"
        out, _ = speculative_decode(target, draft, prompt, 20, 3, sample=True, temperature=0.9, sampling="rejection",
                                    generator=torch.Generator().manual_seed(seed))
        assert len(out) == 20
    assert 0 in accepted and max(accepted) >= 2, sorted(set(accepted))
    with pytest.raises(ConfigError, match="draft 'corpus' needs the training text"):
        make_draft("corpus")
    wide = LinearLM(LMConfig(attention="relu", n_layer=1, n_head=2, d_model=16, block_size=32, vocab_size=260))
    with pytest.raises(ValueError, match="proposes bytes \\(256 tokens\\); the target's vocabulary has 260"):
        speculative_decode(wide, draft, [1, 2], 4, 2)
