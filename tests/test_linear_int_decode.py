"""Token-by-token integer decoding (``algo/linear/int_decode.py``): its logits equal the closed-form integer
model's (``IntegerAttention``), per-layer shared scales give one format per layer, and greedy decoding
stops on bad input; greedy speculative decoding on the same integers gives the sequential tokens. The RTL side of the same decoder is tests/rtl/test_linear_cosim.py."""

import numpy as np
import pytest
import torch

from attnforge.algo.linear.int_attention import IntegerAttention
from attnforge.algo.linear.int_decode import GoldenHeads, IntegerDecoder, drive, greedy, run_speculative, speculative
from attnforge.algo.linear.speculative import NGramDraft
from attnforge.algo.linear.model import LinearLM, LMConfig
from attnforge.errors import ConfigError


def _model(**kw):
    torch.manual_seed(0)
    cfg = dict(attention="relu", augment=True, chunk=0, n_layer=2, n_head=2, d_model=32, block_size=48, conv_kernel=3)
    cfg.update(kw)
    return LinearLM(LMConfig(**cfg)).eval()


@pytest.mark.parametrize("normalize", [True, False], ids=["relu_norm", "relu"])
def test_token_by_token_equals_the_closed_form(normalize):
    model = _model(variant_kwargs={"normalize": normalize})
    gen = torch.Generator().manual_seed(3)
    calib = torch.randint(0, 256, (8, 48), generator=gen)
    ia = IntegerAttention.calibrate(model, calib, max_tokens=48, share="layer")
    seq = torch.randint(0, 256, (1, 40), generator=gen)
    want = ia.forward(seq)[0][0].double()                           # [T, V], closed form, one pass
    dec, golden = IntegerDecoder(ia), GoldenHeads(ia)
    got = torch.stack([drive(dec.block([int(seq[0, t])], t), golden.answer)[-1] for t in range(40)]).double()
    # Same integers in both (the attention is exact); the floats around them differ only by the order of
    # float32 sums (one position at a time vs the whole window), so the logits agree to float32 rounding.
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    # ... and a block of several tokens gives the same logits as those tokens one by one
    dec2, golden2 = IntegerDecoder(ia), GoldenHeads(ia)
    block = drive(dec2.block(seq[0, :5].tolist(), 0), golden2.answer).double()
    assert torch.allclose(block, got[:5], atol=1e-4, rtol=1e-4)


def test_layer_sharing_gives_one_format_per_layer_and_per_head_calibration_is_refused():
    model = _model()
    calib = torch.randint(0, 256, (8, 48), generator=torch.Generator().manual_seed(1))
    shared = IntegerAttention.calibrate(model, calib, share="layer")
    for layer, row in enumerate(shared.heads):
        assert len({hq.fmt for hq in row}) == 1 and len({(hq.q, hq.k, hq.v, hq.out) for hq in row}) == 1
        assert IntegerDecoder(shared).layer_format(layer) == row[0].fmt
    per_head = IntegerAttention.calibrate(model, calib)
    if len({hq.fmt for hq in per_head.heads[0]}) > 1:      # random heads differ in their peaks
        with pytest.raises(ConfigError, match="share='layer'"):
            IntegerDecoder(per_head).layer_format(0)
    with pytest.raises(ConfigError, match="share='row'"):
        IntegerAttention.calibrate(model, calib, share="row")


def test_greedy_decodes_n_tokens_and_refuses_what_does_not_fit():
    model = _model()
    ia = IntegerAttention.calibrate(model, torch.randint(0, 256, (4, 48), generator=torch.Generator().manual_seed(2)),
                                    share="layer")
    dec = IntegerDecoder(ia)
    out = greedy(dec, list(b"def "), 20, GoldenHeads(ia).answer)
    assert len(out) == 20 and all(0 <= t < 256 for t in out)
    # the same tokens again from fresh golden heads (the state lives in GoldenHeads, not the decoder)
    assert greedy(dec, list(b"def "), 20, GoldenHeads(ia).answer) == out
    with pytest.raises(ConfigError, match="block_size=48"):
        greedy(dec, list(b"def "), 45, GoldenHeads(ia).answer)
    with pytest.raises(ConfigError, match="prompt is empty"):
        greedy(dec, [], 5, GoldenHeads(ia).answer)


def test_a_wrong_attention_answer_changes_the_logits():
    """The decoder uses what it is given: an answer off by one LSB in one head moves the logits."""
    model = _model()
    ia = IntegerAttention.calibrate(model, torch.randint(0, 256, (4, 48), generator=torch.Generator().manual_seed(2)),
                                    share="layer")
    dec = IntegerDecoder(ia)
    right = drive(dec.block(list(b"import"), 0), GoldenHeads(ia).answer)
    golden = GoldenHeads(ia)

    def off_by_one(layer, q, k, v):
        out = golden.answer(layer, q, k, v)
        out[0, -1, 0] = out[0, -1, 0] + (1 if out[0, -1, 0] < 127 else -1)
        return out
    wrong = drive(dec.block(list(b"import"), 0), off_by_one)
    assert torch.equal(right[:-1], wrong[:-1]) and not torch.equal(right[-1], wrong[-1])
    with pytest.raises(ValueError, match="shape"):
        drive(dec.block([1], 0), lambda layer, q, k, v: np.zeros((1, 1)))


class _NoDraft:
    """Proposes nothing: every verify is a block of one, the sequential step itself."""

    def start(self, prompt):
        pass

    def propose(self, ctx, k, choose=None):
        return [], None

    def update(self, accepted):
        pass


def _layer_shared(model):
    calib = torch.randint(0, 256, (4, model.cfg.block_size), generator=torch.Generator().manual_seed(2))
    return IntegerAttention.calibrate(model, calib, share="layer")


def test_speculation_without_proposals_is_the_sequential_decoding_exactly():
    model = _model()
    ia = _layer_shared(model)
    dec = IntegerDecoder(ia)
    run = run_speculative(speculative(dec, list(b"def f"), 20, 3, _NoDraft()), GoldenHeads(ia))
    assert run.tokens == greedy(dec, list(b"def f"), 20, GoldenHeads(ia).answer)
    assert run.accepted == [0] * 20 and run.proposed == [0] * 20


def test_speculation_with_an_ngram_draft_accepts_proposals_and_keeps_the_greedy_tokens():
    """Every emitted token is the target's argmax on a verify block; it can differ from the sequential token
    only where the block's floats round differently from one token's, i.e. at a near-tie of the two best
    logits. A divergence must be such a tie (checked on the sequential logits there)."""
    model = _model()
    ia = _layer_shared(model)
    dec = IntegerDecoder(ia)
    prompt, n = list(b"abcabcabcabc"), 30
    run = run_speculative(speculative(dec, prompt, n, 3, NGramDraft(3)), GoldenHeads(ia))
    assert len(run.tokens) == n and sum(run.accepted) + run.verifies == n
    assert all(0 <= a <= p <= 3 for a, p in zip(run.accepted, run.proposed))
    assert sum(run.proposed) > 0, run.proposed           # a repetitive prompt: the draft proposed (text only)
    seq = greedy(dec, prompt, n, GoldenHeads(ia).answer)
    if run.tokens != seq:
        j = next(i for i, (a, b) in enumerate(zip(run.tokens, seq)) if a != b)
        heads, ctx = GoldenHeads(ia), prompt + seq[:j]
        for pos in range(len(ctx)):
            logits = drive(dec.block([ctx[pos]], pos), heads.answer)[-1]
        top = torch.topk(logits, 2).values
        assert float(top[0] - top[1]) < 1e-4, f"token {j} differs without a near-tie: {top}"


def test_speculation_refuses_what_the_datapath_cannot_verify():
    model = _model()
    dec = IntegerDecoder(_layer_shared(model))
    t_max = dec.ia.heads[0][0].fmt.t_max
    with pytest.raises(ConfigError, match=f"t_max={t_max}"):
        next(speculative(dec, [1, 2], 5, t_max, NGramDraft(3)))
    with pytest.raises(ConfigError, match="k=0"):
        next(speculative(dec, [1, 2], 5, 0, NGramDraft(3)))
    with pytest.raises(ConfigError, match="prompt is empty"):
        next(speculative(dec, [], 5, 3, NGramDraft(3)))
    with pytest.raises(ConfigError, match="block_size=48"):
        next(speculative(dec, [1, 2], 47, 3, NGramDraft(3)))
