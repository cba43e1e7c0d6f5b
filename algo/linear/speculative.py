"""Speculative decoding with recurrent-state LMs (batch of one sequence).

A small draft LM proposes k tokens with its recurrent form; the target LM
checks all of them in **one** ``extend`` call (one forward pass over the k+1
tokens: the last generated token and the k proposals), then keeps its state for
the accepted tokens only (``LinearLM.commit``; rejected tokens leave no trace in
the recurrent state, the chunk buffer or the convolution's history).

* Greedy: accept the longest prefix of proposals that equal the target's
  argmax, then append the target's own next token. The output is identical to
  sequential greedy decoding of the target (``greedy_decode``).
* Sampling: the standard rule (Leviathan et al. 2023, Chen et al. 2023): accept
  proposal x with probability min(1, p(x)/q(x)); at the first rejection draw
  from norm(max(0, p - q)); if all k pass, draw one more token from p. The
  output is distributed as sampling from the target alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from attnforge.algo.linear.model import LinearLM

__all__ = ["greedy_decode", "sample_decode", "speculative_decode", "accept_or_resample", "SpecStats"]


def _prompt(prompt) -> torch.Tensor:
    p = torch.as_tensor(prompt, dtype=torch.long).flatten()
    if p.numel() < 1:
        raise ValueError("prompt must hold at least one token")
    return p


@torch.no_grad()
def greedy_decode(model: LinearLM, prompt, n_new: int) -> list[int]:
    """Sequential greedy decoding with the recurrent form: one ``step`` per token."""
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


@torch.no_grad()
def sample_decode(model: LinearLM, prompt, n_new: int, temperature: float, seed: int = 0) -> list[int]:
    """Sampling at ``temperature`` with the recurrent form (greedy when ``temperature <= 0``), seeded."""
    if temperature <= 0:
        return greedy_decode(model, prompt, n_new)
    gen = torch.Generator().manual_seed(seed)
    state, logits = model.prefill(_prompt(prompt)[None])
    out = []
    for _ in range(n_new):
        tok = int(torch.multinomial(torch.softmax(logits[0] / temperature, -1), 1, generator=gen))
        out.append(tok)
        logits, state = model.step(state, torch.tensor([tok]))
    return out


def accept_or_resample(p: torch.Tensor, q: torch.Tensor, token: int, generator: torch.Generator):
    """The rejection-sampling rule for one proposal: (accepted, token to emit if rejected)."""
    u = torch.rand((), generator=generator, dtype=p.dtype)
    if q[token] > 0 and u * q[token] <= p[token]:
        return True, token
    residual = (p - q).clamp(min=0)
    total = residual.sum()
    residual = residual / total if total > 0 else p
    return False, int(torch.multinomial(residual, 1, generator=generator))


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
def speculative_decode(target: LinearLM, draft: LinearLM, prompt, n_new: int, k: int, *, sample: bool = False,
                       temperature: float = 1.0, generator: torch.Generator | None = None):
    """Generate ``n_new`` tokens after ``prompt``; returns (tokens, SpecStats)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (draft tokens per verify) must be a positive integer, not {k!r}")
    if target.cfg.vocab_size != draft.cfg.vocab_size:
        raise ValueError(f"draft vocabulary {draft.cfg.vocab_size} differs from the target's {target.cfg.vocab_size}")
    p = _prompt(prompt)
    limit = min(target.cfg.block_size, draft.cfg.block_size)
    if p.numel() + n_new > limit:
        raise ValueError(f"prompt ({p.numel()}) + n_new ({n_new}) exceed block_size={limit}")
    gen = generator or torch.Generator().manual_seed(0)
    stats = SpecStats()
    t0 = time.perf_counter()

    def pick(logits):
        if not sample:
            return int(logits.argmax()), None
        probs = torch.softmax(logits / temperature, -1)
        return int(torch.multinomial(probs, 1, generator=gen)), probs

    t_state, t_logits = target.prefill(p[None])
    d_state, _ = draft.prefill(p[None])
    pending = pick(t_logits[0])[0]  # generated, not yet absorbed by either model
    out = [pending]
    while len(out) < n_new:
        kk = min(k, n_new - len(out) - 1, limit - t_state["n"] - 1)  # a verify adds a + 1 tokens
        # Draft: k proposals, keeping its state after each absorbed token for the rollback.
        d_states, proposals, qs = [], [], []
        tok, ds = pending, d_state
        for _ in range(kk):
            logits, ds = draft.step(ds, torch.tensor([tok]))
            d_states.append(ds)
            tok, q = pick(logits[0])
            proposals.append(tok)
            qs.append(q)
        # Target: all proposals in one pass.
        logits, cache = target.extend(t_state, torch.tensor([[pending, *proposals]]))
        logits = logits[0]
        a = 0
        if sample:
            nxt = None
            for i, d in enumerate(proposals):
                ok, tok = accept_or_resample(torch.softmax(logits[i] / temperature, -1), qs[i], d, gen)
                if not ok:
                    nxt = tok
                    break
                a += 1
            if nxt is None:
                nxt = pick(logits[kk])[0]
        else:
            while a < kk and int(logits[a].argmax()) == proposals[a]:
                a += 1
            nxt = int(logits[a].argmax())
        # Commit: the target keeps pending + the a accepted proposals; so does the draft.
        t_state = target.commit(t_state, cache, a + 1)
        if a < kk:
            d_state = d_states[a]
        else:  # everything accepted: the draft has yet to absorb its last proposal (or pending, if kk = 0)
            d_state = draft.step(d_states[-1] if kk else d_state, torch.tensor([proposals[-1] if kk else pending]))[1]
        out += proposals[:a] + [nxt]
        pending = nxt
        stats.verifies += 1
        stats.proposed += kk
        stats.accepted += a
        stats.accepted_per_verify.append(a)
    stats.seconds = time.perf_counter() - t0
    return out[:n_new], stats
