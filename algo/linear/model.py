"""A small decoder-only byte-level LM (nanoGPT-shaped) with pluggable attention.

``LMConfig.attention`` names a variant of ``variants.py``; ``augment=True`` wraps
it in the causal local augmentation (``augment.py``). Besides the usual parallel
``forward`` (training, evaluation), the model decodes with the attention's
recurrent form:

* ``init_state(batch)``, ``step(state, tokens)`` -> next-token logits, new state;
* ``extend(state, tokens)`` -> logits after each of T new tokens in **one** forward
  pass (the verify pass of speculative decoding), plus the per-layer keys and
  values of those tokens; the state is not changed;
* ``commit(state, cache, a)`` -> state after the first ``a`` of those tokens only.

Linformer is trained and decoded in its causally masked form (its original form
would let the LM read the bytes it is asked to predict).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnforge.algo.linear.augment import AugmentedAttention
from attnforge.algo.linear.variants import VARIANTS, causal_mask, make_core

__all__ = ["LMConfig", "LinearLM"]


@dataclass
class LMConfig:
    attention: str = "softmax"
    augment: bool = False
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    block_size: int = 256
    vocab_size: int = 256
    conv_kernel: int = 4
    chunk: int = 16
    seed: int = 0  # seeds the fixed random projections (Performer, YOSO, Linformer)
    variant_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.attention not in VARIANTS:
            raise ValueError(f"attention must be one of {', '.join(VARIANTS)}, not {self.attention!r}")
        for name in ("n_layer", "n_head", "d_model", "block_size", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_head={self.n_head}")

    @property
    def label(self) -> str:
        return self.attention + ("+aug" if self.augment else "")

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig, layer: int):
        super().__init__()
        d, h = cfg.d_model, cfg.n_head
        self.n_head, self.head_dim = h, d // h
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        core = make_core(cfg.attention, h, d // h, max_len=cfg.block_size, seed=cfg.seed * 100 + layer,
                         **cfg.variant_kwargs)
        self.core = AugmentedAttention(core, cfg.conv_kernel, cfg.chunk) if cfg.augment else core

    def _qkv(self, x):  # x [B, T, d] -> 3 x [B, H, T, hd]
        b, t, _ = x.shape
        return [y.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for y in self.qkv(x).chunk(3, dim=-1)]

    def _out(self, y):  # [B, H, T, hd] -> [B, T, d]
        b, h, t, hd = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, h * hd))

    def forward(self, x):
        q, k, v = self._qkv(x)
        mask = None if self.core.causal else causal_mask(x.shape[1], device=x.device)
        return self._out(self.core.parallel(q, k, v, mask))

    def step(self, state, x):  # x [B, d]
        q, k, v = (y[:, :, 0] for y in self._qkv(x.unsqueeze(1)))
        y, state = self.core.step(state, q, k, v)
        return self._out(y.unsqueeze(2))[:, 0], state

    def extend(self, state, x):  # x [B, T, d]
        q, k, v = self._qkv(x)
        return self._out(self.core.extend(state, q, k, v)), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig, layer: int):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(cfg, layer)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class LinearLM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied, as in nanoGPT
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, idx, start: int):
        t = idx.shape[1]
        if start + t > self.cfg.block_size:
            raise ValueError(f"positions {start}..{start + t - 1} exceed block_size={self.cfg.block_size}")
        return self.wte(idx) + self.wpe(torch.arange(start, start + t, device=idx.device))

    def forward(self, idx, targets=None):
        x = self._embed(idx, 0)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    # -- recurrent decoding
    def init_state(self, batch: int = 1):
        p = self.wte.weight
        return {"layers": [blk.attn.core.init_state(batch, p.dtype, p.device) for blk in self.blocks], "n": 0}

    def step(self, state, tokens):
        """Logits ``[B, V]`` for the token after ``tokens`` ``[B]``, and the state that includes them."""
        x = self._embed(tokens[:, None], state["n"])[:, 0]
        layers = []
        for blk, ls in zip(self.blocks, state["layers"]):
            y, ls = blk.attn.step(ls, blk.ln1(x))
            layers.append(ls)
            x = x + y
            x = x + blk.mlp(blk.ln2(x))
        return self.head(self.ln_f(x)), {"layers": layers, "n": state["n"] + 1}

    def extend(self, state, tokens):
        """Logits ``[B, T, V]`` after each of ``tokens`` ``[B, T]`` in one pass; the state is unchanged."""
        x = self._embed(tokens, state["n"])
        cache = []
        for blk, ls in zip(self.blocks, state["layers"]):
            y, kv = blk.attn.extend(ls, blk.ln1(x))
            cache.append(kv)
            x = x + y
            x = x + blk.mlp(blk.ln2(x))
        return self.head(self.ln_f(x)), cache

    def commit(self, state, cache, accepted: int):
        """State after the first ``accepted`` tokens of an ``extend``; the rest leave no trace."""
        t = cache[0][0].shape[2]
        if not 0 <= accepted <= t:
            raise ValueError(f"accepted must be in [0, {t}], not {accepted}")
        layers = [blk.attn.core.advance(ls, k[:, :, :accepted], v[:, :, :accepted])
                  for blk, ls, (k, v) in zip(self.blocks, state["layers"], cache)]
        return {"layers": layers, "n": state["n"] + accepted}

    def prefill(self, tokens):
        """State after ``tokens`` ``[B, T]`` and the logits for the token that follows."""
        state = self.init_state(tokens.shape[0])
        logits, cache = self.extend(state, tokens)
        return self.commit(state, cache, tokens.shape[1]), logits[:, -1]
