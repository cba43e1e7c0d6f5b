"""Token-by-token decoding of a linearized LM whose attention is the decode datapath's integers, with
the attention computed by whoever is asked: the golden model here, the RTL in the co-simulation
(``tb/linear_gen_tb.py``, ``attnforge linear generate --rtl``).

``IntegerDecoder.block(tokens, start)`` is a generator: it runs a block of tokens at positions
``start ..`` through the model and, for each layer, *yields* the request ``(layer, q, k, v)`` (int8
``[H, T, hd]``, quantized with the layer's scales) and takes back the int8 head outputs ``[H, T, hd]``;
its return value is the logits ``[T, V]``. Embeddings, projections, MLPs and norms are the float
model's, position by position, so the golden run and the RTL run compute identical floats around
identical integers, and a greedy token can differ only if an attention output differs.

``GoldenHeads`` answers the requests with one ``LinearDecodeGolden`` per layer and head (verify, then
commit); ``greedy(decoder, prompt, n, answer)`` decodes a prompt token by token (a block of one,
committed) and then ``n`` greedy tokens.

``speculative(decoder, prompt, n, k, draft)`` is greedy speculative decoding on the same integers: a
generator of requests ``("verify", layer, q, k, v)`` (outputs of the block's T = 1 + proposals tokens,
causal from the committed state, nothing committed) and ``("commit", a)`` (every layer's and head's
state folds the first ``a`` tokens of its pending block: the last emitted token and the accepted
proposals). ``run_speculative(..., GoldenHeads(ia))`` answers them with the golden model, the
co-simulation with the RTL's ``verify T`` / ``commit a`` (``attnforge linear speculate --rtl``), so
both runs accept the same proposals exactly when the RTL's outputs are the golden model's. The recurrent integer model equals ``IntegerAttention``'s
closed form (``golden_parallel``) on the same int8 inputs; tests/test_linear_int_decode.py checks
their logits against each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from attnforge.algo.linear.golden import LinearDecodeGolden, quantize_int8
from attnforge.algo.linear.int_attention import IntegerAttention
from attnforge.errors import ConfigError

__all__ = ["IntegerDecoder", "GoldenHeads", "greedy", "drive", "speculative", "run_speculative", "SpecRun"]


class IntegerDecoder:
    """Block-wise decoding of ``ia.model`` with integer attention (module docstring)."""

    def __init__(self, ia: IntegerAttention):
        self.ia, self.model = ia, ia.model

    def layer_format(self, layer: int):
        """The datapath format shared by ``layer``'s heads; refuses per-head requantizers (calibrate with
        ``share="layer"`` for one instance per layer)."""
        fmts = {hq.fmt for hq in self.ia.heads[layer]}
        if len(fmts) != 1:
            raise ConfigError(f"layer {layer}: its heads have {len(fmts)} different requantizers; one datapath "
                              "instance per layer needs them shared (IntegerAttention.calibrate(share='layer'))")
        return fmts.pop()

    @torch.no_grad()
    def block(self, tokens, start: int):
        """Generator (module docstring): yields ``(layer, q, k, v)``, receives int8 ``[H, T, hd]``,
        returns float logits ``[T, V]``."""
        model = self.model
        idx = torch.as_tensor([list(tokens)], dtype=torch.long)
        x = model._embed(idx, start)                                   # [1, T, d]
        for layer, blk in enumerate(model.blocks):
            heads = self.ia.heads[layer]
            q, k, v = (y[0].double().numpy() for y in blk.attn._qkv(blk.ln1(x)))   # [H, T, hd]
            qi = np.stack([quantize_int8(q[h], hq.q) for h, hq in enumerate(heads)])
            ki = np.stack([quantize_int8(k[h], hq.k) for h, hq in enumerate(heads)])
            vi = np.stack([quantize_int8(v[h], hq.v) for h, hq in enumerate(heads)])
            out = yield layer, qi, ki, vi
            out = np.asarray(out, dtype=np.float64)
            if out.shape != qi.shape:
                raise ValueError(f"layer {layer}: attention outputs of shape {out.shape}, expected {qi.shape}")
            y = np.stack([out[h] * hq.out for h, hq in enumerate(heads)])
            x = x + blk.attn._out(torch.from_numpy(y).to(x.dtype)[None])
            x = x + blk.mlp(blk.ln2(x))
        return model.head(model.ln_f(x))[0]


class GoldenHeads:
    """Answers ``IntegerDecoder.block`` requests with the golden model: one ``LinearDecodeGolden`` per
    layer and head; ``answer`` verifies a block and commits ``commit`` of its tokens (all by default)."""

    def __init__(self, ia: IntegerAttention):
        self.heads = [[LinearDecodeGolden(hq.fmt, hq.taps) for hq in row] for row in ia.heads]

    def answer(self, layer, q, k, v, commit: int | None = None):
        outs = []
        for h, g in enumerate(self.heads[layer]):
            outs.append(g.verify(q[h], k[h], v[h]))
            g.commit(q.shape[1] if commit is None else commit)
        return np.stack(outs)

    def verify(self, layer, q, k, v):
        """Outputs of a block for every head of ``layer``; the block stays pending (``commit``)."""
        return np.stack([g.verify(q[h], k[h], v[h]) for h, g in enumerate(self.heads[layer])])

    def commit(self, a: int) -> None:
        """Every layer's and head's pending block: fold its first ``a`` tokens."""
        for row in self.heads:
            for g in row:
                g.commit(a)


def drive(gen, answer):
    """Run an ``IntegerDecoder.block`` generator to its end with ``answer(layer, q, k, v)``; its return value."""
    try:
        req = next(gen)
        while True:
            req = gen.send(answer(*req))
    except StopIteration as stop:
        return stop.value


def greedy(decoder: IntegerDecoder, prompt: list[int], n: int, answer) -> list[int]:
    """``n`` greedy tokens after ``prompt``, every position a block of one token (committed)."""
    if not prompt:
        raise ConfigError("greedy: the prompt is empty; give at least one byte")
    room = decoder.model.cfg.block_size
    if len(prompt) + n > room:
        raise ConfigError(f"greedy: prompt ({len(prompt)}) + tokens ({n}) = {len(prompt) + n} positions exceed the "
                          f"model's block_size={room}")
    seq = list(prompt)
    out = []
    for pos in range(len(prompt) + n - 1):
        logits = drive(decoder.block([seq[pos]], pos), answer)
        if pos >= len(prompt) - 1:
            nxt = int(torch.argmax(logits[-1]))
            seq.append(nxt)
            out.append(nxt)
    return out


@dataclass
class SpecRun:
    """What ``speculative`` produced: the ``tokens`` and, per verify, the proposals made and accepted."""

    tokens: list = field(default_factory=list)
    proposed: list = field(default_factory=list)
    accepted: list = field(default_factory=list)

    @property
    def verifies(self) -> int:
        return len(self.accepted)

    def to_dict(self) -> dict:
        return {"tokens": list(self.tokens), "proposed_per_verify": list(self.proposed),
                "accepted_per_verify": list(self.accepted)}


def speculative(decoder: IntegerDecoder, prompt: list[int], n: int, k: int, draft):
    """Greedy speculative decoding of ``n`` tokens after ``prompt`` (module docstring); a generator of
    requests whose return value is a ``SpecRun``.

    The prompt's positions but the last are blocks of one, committed. Then, from the last token
    emitted (pending, not yet in the state): ``draft.propose(ctx, kk)`` gives up to ``kk`` =
    min(k, tokens still to emit - 1) proposals; one verify block of the pending token and the
    proposals; the target's argmax at each position accepts the longest agreeing prefix of ``a``
    proposals and gives the next token; ``commit a + 1``. The tokens equal ``greedy``'s whenever the
    block's floats round as the single tokens' do (the same caveat as ``algo/linear/speculative.py``)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"speculative: k={k!r} draft tokens per verify; expected an integer >= 1")
    if not prompt:
        raise ConfigError("speculative: the prompt is empty; give at least one byte")
    room = decoder.model.cfg.block_size
    if len(prompt) + n > room:
        raise ConfigError(f"speculative: prompt ({len(prompt)}) + tokens ({n}) = {len(prompt) + n} positions exceed the "
                    f"model's block_size={room}")
    t_max = min(hq.fmt.t_max for row in decoder.ia.heads for hq in row)
    if k + 1 > t_max:
        raise ConfigError(f"speculative: k={k} needs verify blocks of {k + 1} tokens; the datapath takes at most "
                    f"t_max={t_max}")

    def block(tokens, start):
        logits = yield from _requests(decoder.block(tokens, start))
        return logits

    run = SpecRun()
    ctx = list(prompt)
    for pos in range(len(prompt) - 1):
        yield from block([ctx[pos]], pos)
        yield ("commit", 1)
    draft.start(list(ctx))
    end = len(prompt) + n

    def choose(logits, pos):                       # a model draft's own greedy choice
        return int(torch.argmax(logits)), None

    while len(ctx) < end:
        kk = min(k, end - len(ctx) - 1)
        proposals = list(draft.propose(ctx, kk, choose)[0])[:kk] if kk > 0 else []
        start = len(ctx) - 1                        # position of the pending token
        logits = yield from block([ctx[-1], *proposals], start)
        choice = [int(t) for t in torch.argmax(logits, dim=-1)]
        a = 0
        while a < len(proposals) and choice[a] == proposals[a]:
            a += 1
        yield ("commit", a + 1)
        draft.update(a)
        new = proposals[:a] + [choice[a]]
        ctx += new
        run.tokens += new
        run.proposed.append(len(proposals))
        run.accepted.append(a)
    return run


def _requests(gen):
    """``IntegerDecoder.block``'s requests as ``("verify", layer, q, k, v)``; its return value."""
    try:
        req = next(gen)
        while True:
            req = gen.send((yield ("verify", *req)))
    except StopIteration as stop:
        return stop.value


def run_speculative(gen, heads) -> SpecRun:
    """Run a ``speculative`` generator with ``heads`` (``verify(layer, q, k, v)``, ``commit(a)``, as
    ``GoldenHeads``); its ``SpecRun``."""
    try:
        req = next(gen)
        while True:
            if req[0] == "verify":
                req = gen.send(heads.verify(*req[1:]))
            else:
                heads.commit(req[1])
                req = gen.send(None)
    except StopIteration as stop:
        return stop.value
