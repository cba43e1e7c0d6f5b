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
committed) and then ``n`` greedy tokens. The recurrent integer model equals ``IntegerAttention``'s
closed form (``golden_parallel``) on the same int8 inputs; tests/test_linear_int_decode.py checks
their logits against each other.
"""

from __future__ import annotations

import numpy as np
import torch

from attnforge.algo.linear.golden import LinearDecodeGolden, quantize_int8
from attnforge.algo.linear.int_attention import IntegerAttention
from attnforge.errors import ConfigError

__all__ = ["IntegerDecoder", "GoldenHeads", "greedy", "drive"]


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
