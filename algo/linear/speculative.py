"""Speculative decoding with recurrent-state LMs (batch of one sequence).

A draft proposes up to k tokens; the target checks all of them in **one**
``extend`` call (one batched forward pass over the k+1 tokens: the last
generated token and the k proposals, from the recurrent state, no per-token
loop), then keeps its state for the accepted tokens only (``LinearLM.commit``,
one batched ``advance`` per layer; rejected tokens leave no trace in the
recurrent state, the chunk buffer or the convolution's history).

Drafts (anything with ``start``, ``propose`` and ``update``, see ``NGramDraft``):

* ``ModelDraft``: a smaller ``LinearLM`` stepping its recurrent form (a bare
  ``LinearLM`` passed as the draft is wrapped in one);
* ``NGramDraft``: model-free prompt lookup: the longest suffix of the context
  (``max_n`` down to ``min_n`` tokens) that occurred before proposes what followed
  its most recent earlier occurrence. Costs a dictionary lookup per verify.

Which tokens are emitted (the draft only changes the speed, never the output):

* Greedy (``sample=False``): accept the longest prefix of proposals equal to
  the target's argmax, then append the target's own next token. Identical to
  sequential greedy decoding of the target (``sequential_decode``), up to the
  float rounding of the batched verify against the one-token step (an argmax
  flips only on a near-tie of two logits).
* Sampling, ``sampling="gumbel"`` (default): the token at position i is
  ``argmax(logits / T + G[i])`` with Gumbel noise ``G`` ``[block_size, V]`` drawn
  once from ``seed`` (the Gumbel-max trick: a sample from softmax(logits / T)).
  The token at a position is then a function of the target's logits there and of
  (seed, position), so verification is exactly the greedy rule on that choice and
  the output is **identical** to ``sequential_decode(..., temperature, seed)``
  (same rounding caveat). A model draft proposes with the same noise (coupled),
  so it agrees with the target wherever its distribution is close.
* Sampling, ``sampling="rejection"``: the standard rule (Leviathan et al. 2023,
  Chen et al. 2023): accept proposal x with probability min(1, p(x)/q(x)); at the
  first rejection draw from norm(max(0, p - q)); if all pass, draw one more token
  from p (``generator`` seeds it). The output is **distributed** as sampling from
  the target alone (an n-gram draft has q = one-hot); it is not token-identical to
  a sequential run with the same seed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from attnforge.algo.linear.model import LinearLM
from attnforge.errors import ConfigError, check_choice, check_int

__all__ = ["greedy_decode", "sample_decode", "sequential_decode", "speculative_decode", "accept_or_resample",
           "gumbel_noise", "SpecStats", "NGramDraft", "ModelDraft", "CorpusDraft", "make_draft", "race", "SAMPLING"]

SAMPLING = ("gumbel", "rejection")


def _prompt(prompt) -> torch.Tensor:
    p = torch.as_tensor(prompt, dtype=torch.long).flatten()
    if p.numel() < 1:
        raise ValueError("prompt must hold at least one token")
    return p


def _check_length(p: torch.Tensor, n_new: int, limit: int):
    check_int("n_new (tokens to generate)", n_new, 1)
    if p.numel() + n_new > limit:
        raise ValueError(f"prompt ({p.numel()}) + n_new ({n_new}) exceed block_size={limit}")


@torch.no_grad()
def greedy_decode(model: LinearLM, prompt, n_new: int) -> list[int]:
    """Sequential greedy decoding with the recurrent form: one ``step`` per token, the prompt's too."""
    p = _prompt(prompt)
    if p.numel() + n_new > model.cfg.block_size:
        raise ValueError(f"prompt ({p.numel()}) + n_new ({n_new}) exceed block_size={model.cfg.block_size}")
    state = model.init_state(1)
    for tok in p.tolist():
        logits, state = model.step(state, torch.tensor([tok]))
    out = []
    for _ in range(n_new):
        tok = int(logits[0].argmax())
        out.append(tok)
        if len(out) < n_new:
            logits, state = model.step(state, torch.tensor([tok]))
    return out


def gumbel_noise(seed: int, length: int, vocab: int) -> torch.Tensor:
    """Gumbel(0, 1) noise ``[length, vocab]`` (float64) from ``seed``: row i decides the token at position i."""
    u = torch.rand(length, vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp(min=1e-300)))


class _Chooser:
    """The token at an absolute position from logits: argmax (greedy) or Gumbel-max at temperature T."""

    def __init__(self, temperature: float, seed: int, length: int, vocab: int):
        self.temperature = temperature
        self.noise = gumbel_noise(seed, length, vocab) if temperature > 0 else None

    def rows(self, logits: torch.Tensor, pos: int) -> list[int]:
        """Tokens for logits ``[T, V]`` at positions pos, pos+1, ..."""
        if self.noise is None:
            return logits.argmax(-1).tolist()
        t = logits.shape[0]
        return (logits.double() / self.temperature + self.noise[pos:pos + t]).argmax(-1).tolist()

    def one(self, logits: torch.Tensor, pos: int) -> int:
        return self.rows(logits[None], pos)[0]


@torch.no_grad()
def sequential_decode(model: LinearLM, prompt, n_new: int, temperature: float = 0.0, seed: int = 0) -> list[int]:
    """The reference of ``speculative_decode``: the prompt in one ``prefill``, then one ``step`` per token.

    Greedy when ``temperature <= 0``, else Gumbel-max sampling keyed by (seed, position).
    """
    p = _prompt(prompt)
    _check_length(p, n_new, model.cfg.block_size)
    choose = _Chooser(temperature, seed, model.cfg.block_size, model.cfg.vocab_size)
    state, logits = model.prefill(p[None])
    out = []
    pos = p.numel()
    while True:
        tok = choose.one(logits[0], pos)
        out.append(tok)
        pos += 1
        if len(out) == n_new:
            return out
        logits, state = model.step(state, torch.tensor([tok]))


def sample_decode(model: LinearLM, prompt, n_new: int, temperature: float, seed: int = 0) -> list[int]:
    """Sampling at ``temperature`` with the recurrent form (greedy when ``temperature <= 0``), seeded.

    Sampling is ``sequential_decode``'s Gumbel-max keyed by (seed, position), so that
    ``speculative_decode(..., sample=True, seed=seed)`` emits the same tokens.
    """
    if temperature <= 0:
        return greedy_decode(model, prompt, n_new)
    return sequential_decode(model, prompt, n_new, temperature, seed)


def accept_or_resample(p: torch.Tensor, q: torch.Tensor, token: int, generator: torch.Generator):
    """The rejection-sampling rule for one proposal: (accepted, token to emit if rejected)."""
    u = torch.rand((), generator=generator, dtype=p.dtype)
    if q[token] > 0 and u * q[token] <= p[token]:
        return True, token
    residual = (p - q).clamp(min=0)
    total = residual.sum()
    residual = residual / total if total > 0 else p
    return False, int(torch.multinomial(residual, 1, generator=generator))


# ---------------------------------------------------------------------------- drafts

class NGramDraft:
    """Model-free draft (prompt lookup): continue the context as it continued after the same n-gram.

    For n from ``max_n`` down to ``min_n``: if the last n tokens of the context occurred
    before, propose the (up to) k tokens that followed their most recent earlier
    occurrence, copied as LZ77 does (a repeat of period p < k is continued). No match:
    no proposal (the verify is then a plain decode step). An index of every n-gram's
    latest position is kept up to date incrementally, so a proposal costs O(max_n + k).
    """

    name = "ngram"

    def __init__(self, max_n: int = 3, min_n: int = 1):
        self.max_n = check_int("n-gram size (max_n)", max_n, 1)
        self.min_n = check_int("min_n (shortest n-gram)", min_n, 1, self.max_n)

    def start(self, prompt: list[int]):
        self._index = {n: {} for n in range(self.min_n, self.max_n + 1)}
        self._indexed = 0

    def propose(self, ctx: list[int], k: int, choose=None):
        for j in range(max(self._indexed, 1), len(ctx)):  # n-gram ending before j was followed by ctx[j]
            for n in range(self.min_n, min(self.max_n, j) + 1):
                self._index[n][tuple(ctx[j - n:j])] = j
        self._indexed = len(ctx)
        if k < 1:
            return [], None
        for n in range(min(self.max_n, len(ctx)), self.min_n - 1, -1):
            j = self._index[n].get(tuple(ctx[len(ctx) - n:]))
            if j is not None:
                out = []
                for i in range(k):
                    idx = j + i
                    out.append(ctx[idx] if idx < len(ctx) else out[idx - len(ctx)])
                return out, None
        return [], None

    def update(self, accepted: int):
        pass


class ModelDraft:
    """A (smaller) ``LinearLM`` as the draft: k recurrent steps, its state rolled back to the accepted ones."""

    name = "model"

    def __init__(self, model: LinearLM):
        if not isinstance(model, LinearLM):
            raise TypeError(f"ModelDraft takes a LinearLM, not {type(model).__name__}")
        self.model = model

    def start(self, prompt: list[int]):
        self._state, _ = self.model.prefill(torch.tensor([prompt]))
        self._absorbed = len(prompt)
        self._states = []

    def propose(self, ctx: list[int], k: int, choose):
        m = self.model
        for tok in ctx[self._absorbed:-1]:  # tokens the draft has not seen yet (accepted beyond its proposals)
            _, self._state = m.step(self._state, torch.tensor([tok]))
        self._absorbed = len(ctx) - 1
        self._states, out, qs = [], [], []
        tok, s = ctx[-1], self._state
        for i in range(k):
            logits, s = m.step(s, torch.tensor([tok]))
            self._states.append(s)
            tok, q = choose(logits[0], len(ctx) + i)
            out.append(tok)
            qs.append(q)
        return out, qs

    def update(self, accepted: int):
        if self._states:  # _states[i] has absorbed the context and the first i proposals
            i = min(accepted, len(self._states) - 1)
            self._state, self._absorbed = self._states[i], self._absorbed + 1 + i
        self._states = []


class CorpusDraft:
    """A count-based byte n-gram language model of a training text as the draft (no neural network).

    For every context length h = 1 .. ``order`` (bytes before the next one) it keeps the sorted
    (context, next byte) keys of the text and their counts; the next byte's distribution is the
    Witten-Bell interpolation of the orders, from the unigram (add-one) up to the longest context seen:
    ``P_h(w) = (c(ctx_h, w) + t(ctx_h) P_{h-1}(w)) / (c(ctx_h) + t(ctx_h))`` with ``t`` the number of
    distinct bytes that followed ``ctx_h``. A step costs two binary searches per order and a few
    256-wide vector operations (tens of microseconds), against milliseconds for a model step.

    ``propose`` hands ``log P`` to the decoder's chooser as the draft's logits, so the draft follows the
    same rule as the target: argmax when greedy, the same Gumbel noise when sampling ``gumbel`` (the
    draft's token is the target's wherever their tempered distributions agree), ``softmax(log P / T)``
    as q for the ``rejection`` rule. Like every draft it changes only the speed, never the output.
    """

    name = "corpus"
    #: longest context in bytes: a key is ``order + 1`` bytes in a signed 64-bit integer
    MAX_ORDER = 6

    def __init__(self, text, order: int = 2):
        import numpy as np

        self.order = check_int("corpus draft order (context bytes)", order, 1, self.MAX_ORDER)
        data = np.frombuffer(bytes(text), dtype=np.uint8) if not isinstance(text, torch.Tensor) \
            else text.to(torch.uint8).numpy()
        if data.size < self.order + 1:
            raise ConfigError(f"corpus draft: the text has {data.size} bytes, needs at least order + 1 = "
                              f"{self.order + 1}")
        self._np = np
        self._memo = {}
        self.unigram = (np.bincount(data, minlength=256) + 1.0) / (data.size + 256.0)
        d = data.astype(np.int64)
        self.keys, self.counts = [], []
        ctx = np.zeros(d.size, dtype=np.int64)   # ctx[i]: bytes i-h .. i-1 in base 256, byte i-1 the lowest
        for h in range(1, self.order + 1):
            ctx[h:] |= d[:d.size - h] << (8 * (h - 1))
            key = (ctx[h:] << 8) | d[h:]                 # (context of h bytes, next byte), for i >= h
            k, c = np.unique(key, return_counts=True)
            self.keys.append(k)
            self.counts.append(c.astype(np.float64))

    def distribution(self, ctx: list[int]):
        """``P(next byte | ctx)``, float64 ``[256]``.

        Unrolled: ``P_h = a_h c_h + b_h P_{h-1}`` with ``a_h = 1 / (c(ctx_h) + t)``, ``b_h = t / (c(ctx_h) + t)``,
        so ``P_H = (prod b) P_0 + sum_h (prod_{j > h} b_j) a_h c_h``: one dense vector and a sparse add per order."""
        found = []
        value = 0
        for h in range(1, min(self.order, len(ctx)) + 1):
            value |= int(ctx[-h]) << (8 * (h - 1))               # the last h bytes, oldest most significant
            keys = self.keys[h - 1]
            lo = int(keys.searchsorted(value << 8))
            hi = int(keys.searchsorted((value << 8) | 255, side="right"))
            if hi == lo:
                break                                            # a longer context was never seen either
            counts = self.counts[h - 1][lo:hi]
            types = hi - lo
            total = float(counts.sum()) + types
            found.append((keys[lo:hi] & 255, counts, 1.0 / total, types / total))
        weight = 1.0
        for _, _, _, b in found:
            weight *= b
        p = self.unigram * weight
        weight = 1.0
        for idx, counts, a, b in reversed(found):                # the longest context first
            p[idx] += (weight * a) * counts
            weight *= b
        return p

    #: contexts whose log-probabilities are remembered (2 KiB each); the memo is emptied when full
    MEMO_SIZE = 16384

    def log_probs(self, ctx: list[int]) -> torch.Tensor:
        """``log P(next byte | ctx)`` as a float64 tensor, remembered per context (a decode revisits the
        same short contexts often)."""
        key = tuple(ctx[-self.order:])
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= self.MEMO_SIZE:
                self._memo.clear()
            hit = self._memo[key] = torch.from_numpy(self._np.log(self.distribution(list(key))))
        return hit

    def start(self, prompt: list[int]):
        pass

    def propose(self, ctx: list[int], k: int, choose):
        out, qs = [], []
        seq = list(ctx[-self.order:])
        for i in range(k):
            logits = self.log_probs(seq)
            tok, q = choose(logits, len(ctx) + i)
            out.append(tok)
            qs.append(q)
            seq = (seq + [tok])[-self.order:]
        return out, qs

    def update(self, accepted: int):
        pass


def make_draft(kind: str, model: LinearLM | None = None, ngram: int = 3, min_n: int = 1, text=None, order: int = 2):
    """``"ngram"`` (``NGramDraft(ngram, min_n)``), ``"model"`` (``ModelDraft(model)``) or ``"corpus"``
    (``CorpusDraft(text, order)``: a byte n-gram model of ``text``, the target's training text)."""
    check_choice("draft", kind, ("ngram", "model", "corpus"))
    if kind == "ngram":
        return NGramDraft(ngram, min_n)
    if kind == "corpus":
        if text is None:
            raise ConfigError("draft 'corpus' needs the training text")
        return CorpusDraft(text, order)
    if model is None:
        raise ConfigError("draft 'model' needs a draft checkpoint")
    return ModelDraft(model)


# ---------------------------------------------------------------------------- decoding

@dataclass
class SpecStats:
    verifies: int = 0
    proposed: int = 0
    accepted: int = 0
    accepted_per_verify: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mean_accepted(self) -> float:
        return self.accepted / max(1, self.verifies)


@torch.no_grad()
def speculative_decode(target: LinearLM, draft, prompt, n_new: int, k: int, *, sample: bool = False,
                       temperature: float = 1.0, sampling: str = "gumbel", seed: int = 0,
                       generator: torch.Generator | None = None):
    """Generate ``n_new`` tokens after ``prompt``; returns (tokens, SpecStats).

    ``draft``: a ``NGramDraft``, a ``ModelDraft`` or a ``LinearLM`` (wrapped in a
    ``ModelDraft``). ``sample``: sample at ``temperature`` with ``sampling`` (see the
    module docstring: ``seed`` keys the Gumbel noise, ``generator`` the rejection rule).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k (draft tokens per verify) must be a positive integer, not {k!r}")
    if isinstance(draft, LinearLM):
        draft = ModelDraft(draft)
    if not all(hasattr(draft, a) for a in ("start", "propose", "update")):
        raise TypeError(f"draft must be a LinearLM, ModelDraft or NGramDraft, not {type(draft).__name__}")
    limit = target.cfg.block_size
    if isinstance(draft, ModelDraft):
        if target.cfg.vocab_size != draft.model.cfg.vocab_size:
            raise ValueError(f"draft vocabulary {draft.model.cfg.vocab_size} differs from the target's "
                             f"{target.cfg.vocab_size}")
        limit = min(limit, draft.model.cfg.block_size)
    if isinstance(draft, CorpusDraft) and target.cfg.vocab_size != 256:
        raise ValueError(f"the corpus draft proposes bytes (256 tokens); the target's vocabulary has "
                         f"{target.cfg.vocab_size}")
    if sample:
        check_choice("sampling", sampling, SAMPLING)
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0 when sampling, not {temperature!r}")
    p = _prompt(prompt)
    _check_length(p, n_new, limit)
    rejection = sample and sampling == "rejection"
    gen = generator or torch.Generator().manual_seed(seed)
    chooser = _Chooser(temperature if sample and not rejection else 0.0, seed, limit, target.cfg.vocab_size)
    stats = SpecStats()
    t0 = time.perf_counter()

    def pick(logits, pos):  # the draft's choice (and its distribution q, for the rejection rule)
        if rejection:
            q = torch.softmax(logits / temperature, -1)
            return int(torch.multinomial(q, 1, generator=gen)), q
        return chooser.one(logits, pos), None

    ctx = p.tolist()
    t_state, t_logits = target.prefill(p[None])
    draft.start(list(ctx))
    ctx.append(pick(t_logits[0], len(ctx))[0])  # generated, not yet absorbed by the target
    end = p.numel() + n_new
    while len(ctx) < end:
        kk = min(k, end - len(ctx) - 1)  # a verify adds a + 1 tokens
        proposals, qs = draft.propose(ctx, kk, pick)
        proposals = proposals[:kk]
        pos = len(ctx)  # absolute position of the first proposal
        if not proposals:  # nothing to verify: a plain decode step, exactly the sequential one
            logits, t_state = target.step(t_state, torch.tensor([ctx[-1]]))
            a, nxt = 0, pick(logits[0], pos)[0]
        else:
            logits, cache = target.extend(t_state, torch.tensor([[ctx[-1], *proposals]]))
            logits = logits[0]
            a = 0
            if rejection:
                nxt = None
                for i, d in enumerate(proposals):
                    q = qs[i] if qs and qs[i] is not None else torch.nn.functional.one_hot(
                        torch.tensor(d), logits.shape[-1]).to(logits.dtype)
                    ok, tok = accept_or_resample(torch.softmax(logits[i] / temperature, -1), q, d, gen)
                    if not ok:
                        nxt = tok
                        break
                    a += 1
                if nxt is None:
                    nxt = pick(logits[len(proposals)], pos + len(proposals))[0]
            else:
                choice = chooser.rows(logits, pos)
                while a < len(proposals) and choice[a] == proposals[a]:
                    a += 1
                nxt = choice[a]
            # Commit: the target keeps the pending token and the a accepted proposals.
            t_state = target.commit(t_state, cache, a + 1)
        draft.update(a)
        ctx += proposals[:a] + [nxt]
        stats.verifies += 1
        stats.proposed += len(proposals)
        stats.accepted += a
        stats.accepted_per_verify.append(a)
    stats.seconds = time.perf_counter() - t0
    return ctx[p.numel():end], stats


def race(target: LinearLM, draft, prompt, n_new: int, k: int, *, temperature: float = 0.0,
         sampling: str = "gumbel", seed: int = 0, repeats: int = 3) -> dict:
    """Sequential and speculative decoding of the same target, interleaved (the order alternates per
    repeat, so that a load change on a shared machine hits both alike); medians of ``repeats`` runs.

    ``identical``: the speculative tokens equal ``sequential_decode``'s in every repeat (greedy and
    Gumbel sampling; ``None`` for the rejection rule, whose output is only equal in distribution).
    """
    check_int("repeats", repeats, 1)
    sample = temperature > 0
    seq_s, spec_s, identical, stats = [], [], True, None
    for r in range(repeats):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            if which == 0:
                t0 = time.perf_counter()
                ref = sequential_decode(target, prompt, n_new, temperature, seed)
                seq_s.append(time.perf_counter() - t0)
            else:
                t0 = time.perf_counter()
                out, stats = speculative_decode(target, draft, prompt, n_new, k, sample=sample,
                                                temperature=temperature if sample else 1.0, sampling=sampling,
                                                seed=seed, generator=torch.Generator().manual_seed(seed))
                spec_s.append(time.perf_counter() - t0)
        identical = identical and out == ref
    seq, spec = statistics.median(seq_s), statistics.median(spec_s)
    return {"tokens": out, "sequential_tokens": ref,
            "identical": None if sample and sampling == "rejection" else identical,
            "sequential_seconds": seq_s, "speculative_seconds": spec_s,
            "sequential_tokens_per_second": n_new / seq, "speculative_tokens_per_second": n_new / spec,
            "speedup": seq / spec, "verifies": stats.verifies, "proposed": stats.proposed,
            "accepted_per_verify": stats.accepted_per_verify,
            "mean_accepted_per_verify": stats.mean_accepted, "tokens_per_verify": n_new / stats.verifies}
