"""The causal local augmentation of linear attention, as a wrapper around any variant.

Following "When Linear Attention Meets Autoregressive Decoding" (You et al.,
ICML 2024), the output of a token is the sum of three terms:

* a **masked depthwise convolution over V**: per channel, taps on the current
  value and the K-1 previous ones (the taps that would reach future tokens are
  absent), ``conv_t = sum_{s<K} w_s * v_{t-s}``;
* **chunk-local softmax attention** among the tokens of the token's own chunk of
  C tokens (causal inside the chunk);
* a **grouped global linear term**: the wrapped variant over all tokens of the
  *earlier* chunks. Its state is updated a group (chunk) at a time, so every
  past token is counted exactly once, either locally or globally.

The decode state is constant in size: the wrapped variant's state, the keys and
values of the current chunk (at most C) and the last K values (the conv's
history). Speculative decoding commits it through ``advance`` like any variant.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnforge.algo.linear.variants import AttentionCore, causal_mask
from attnforge.errors import check_int

__all__ = ["CausalDepthwiseConv", "AugmentedAttention", "chunk_local_mask", "earlier_chunks_mask"]


def chunk_local_mask(t: int, chunk: int, device=None) -> torch.Tensor:
    """Query i may see key j iff j <= i and both are in the same chunk of ``chunk`` tokens."""
    i = torch.arange(t, device=device)
    return causal_mask(t, device=device) & ((i[:, None] // chunk) == (i[None, :] // chunk))


def earlier_chunks_mask(t: int, chunk: int, device=None) -> torch.Tensor:
    """Query i may see key j iff j is in an earlier chunk than i (implies j < i)."""
    i = torch.arange(t, device=device)
    return (i[None, :] // chunk) < (i[:, None] // chunk)


class CausalDepthwiseConv(nn.Module):
    """Depthwise 1-D convolution over time that sees only the current and past tokens.

    ``weight[h, c, s]`` multiplies ``v[t - s]`` for lag s = 0..K-1; the input is
    padded on the left only, so no tap reaches t+1 or later.
    """

    def __init__(self, n_heads: int, dim: int, kernel_size: int, seed: int = 0):
        super().__init__()
        self.kernel_size = check_int("conv_kernel", kernel_size, 1)
        g = torch.Generator().manual_seed(seed + 23)
        w = torch.randn(n_heads, dim, kernel_size, generator=g) * (0.5 / math.sqrt(kernel_size))
        self.weight = nn.Parameter(w)

    def forward(self, v, past=None):  # v [B, H, T, D] -> [B, H, T, D]
        """Outputs for ``v``; ``past`` ``[B, H, K-1, D]`` are the values before it (zeros if None)."""
        b, h, t, d = v.shape
        if past is not None:
            # A few new tokens after a history (the verify pass): K multiply-adds per output as one
            # windowed product; cheaper than conv1d's setup for T of a few tokens.
            win = torch.cat([past, v], dim=2).unfold(2, self.kernel_size, 1)  # [B, H, T, D, K], oldest first
            return (win * self.weight.flip(-1).to(v.dtype)[:, None]).sum(-1)
        x = v.permute(0, 1, 3, 2).reshape(b, h * d, v.shape[2])
        if past is None:
            x = F.pad(x, (self.kernel_size - 1, 0))  # past only
        # conv1d correlates: out[t] = sum_i w[i] x[t + i - (K-1)], so lag s sits at index K-1-s.
        y = F.conv1d(x, self.weight.flip(-1).reshape(h * d, 1, self.kernel_size).to(v.dtype), groups=h * d)
        return y.reshape(b, h, d, t).permute(0, 1, 3, 2)

    def init_history(self, batch, h, d, dtype, device):
        return torch.zeros(batch, h, self.kernel_size, d, dtype=dtype, device=device)

    def push(self, hist, v):  # hist [B, H, K, D], oldest first; v [B, H, D]
        return torch.cat([hist[:, :, 1:], v.unsqueeze(2)], dim=2)

    def read(self, hist):  # output for the newest value in hist
        return torch.einsum("hds,bhsd->bhd", self.weight.flip(-1).to(hist.dtype), hist)


class AugmentedAttention(AttentionCore):
    """Any ``AttentionCore`` plus the causal local augmentation (see the module docstring).

    Parameters
    ----------
    base : AttentionCore
        The linear variant that provides the global term over earlier chunks.
    conv_kernel : int
        Taps of the depthwise convolution over V (0 turns the convolution off).
    chunk : int
        Tokens per chunk of the local attention and per group of the global term
        (0 turns the local attention off: then the global term covers all tokens
        up to and including the current one, as the plain variant does).
    """

    def __init__(self, base: AttentionCore, conv_kernel: int = 4, chunk: int = 16):
        if not isinstance(base, AttentionCore):
            raise TypeError(f"base must be an AttentionCore, not {type(base).__name__}")
        super().__init__(base.n_heads, base.head_dim, base.max_len, base.seed)
        self.base = base
        self.name = f"{base.name}+aug"
        self.conv_kernel = check_int("conv_kernel", conv_kernel, 0)
        self.chunk = check_int("chunk", chunk, 0)
        self.conv = CausalDepthwiseConv(base.n_heads, base.head_dim, conv_kernel, base.seed) if conv_kernel else None

    def parallel(self, q, k, v, mask=None):
        if mask is not None:
            raise ValueError(f"{self.name}: the augmented attention is causal by construction and takes no mask")
        t = q.shape[-2]
        if self.chunk:
            out = self.base.parallel(q, k, v, earlier_chunks_mask(t, self.chunk, q.device))
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            s = s.masked_fill(~chunk_local_mask(t, self.chunk, q.device), float("-inf"))
            out = out + torch.softmax(s, -1) @ v
        else:
            out = self.base.parallel(q, k, v, causal_mask(t, device=q.device))
        if self.conv is not None:
            out = out + self.conv(v)
        return out

    def extend(self, state, q, k, v):
        # The verify pass in parallel form: conv over history + new values, local softmax over the
        # current chunk's buffer + new tokens, global term through the base's extend_keys.
        n, t = state["n"], q.shape[-2]
        qpos = torch.arange(n, n + t, device=q.device)
        if self.chunk:
            ek, ev = torch.cat([state["kb"], k], 2), torch.cat([state["vb"], v], 2)
            epos = torch.arange(n - state["kb"].shape[2], n + t, device=q.device)
            start = (qpos // self.chunk) * self.chunk
            out = self.base.extend_keys(state["base"], q, qpos, ek, ev, epos[None, :] < start[:, None])
            local = ((epos[None, :] // self.chunk) == (qpos[:, None] // self.chunk)) & (epos[None, :] <= qpos[:, None])
            s = (q @ ek.transpose(-1, -2)) / math.sqrt(self.head_dim)
            out = out + torch.softmax(s.masked_fill(~local, float("-inf")), -1) @ ev
        else:
            out = self.base.extend(state["base"], q, k, v)
        if self.conv is not None:
            out = out + self.conv(v, past=state["hist"][:, :, 1:])
        return out

    def init_state(self, batch, dtype=torch.float32, device=None):
        h, d = self.n_heads, self.head_dim
        state = {"base": self.base.init_state(batch, dtype, device), "n": 0}
        if self.chunk:
            state["kb"] = torch.zeros(batch, h, 0, d, dtype=dtype, device=device)
            state["vb"] = torch.zeros(batch, h, 0, d, dtype=dtype, device=device)
        if self.conv is not None:
            state["hist"] = self.conv.init_history(batch, h, d, dtype, device)
        return state

    def absorb(self, state, k, v):
        new = {"n": state["n"] + 1}
        base = state["base"]
        if self.chunk:
            kb, vb = state["kb"], state["vb"]
            if kb.shape[2] == self.chunk:  # a new chunk starts: the finished one joins the global state
                base = self.base.advance(base, kb, vb)
                kb, vb = kb[:, :, :0], vb[:, :, :0]
            new["kb"] = torch.cat([kb, k.unsqueeze(2)], 2)
            new["vb"] = torch.cat([vb, v.unsqueeze(2)], 2)
        else:
            base = self.base.absorb(base, k, v)
        new["base"] = base
        if self.conv is not None:
            new["hist"] = self.conv.push(state["hist"], v)
        return new

    def advance(self, state, k, v):
        # Batched commit of T tokens: the same state as T absorbs. Of the buffered chunk plus the new
        # tokens, all complete chunks but the newest token's own join the global state in one call.
        t = k.shape[-2]
        if t == 0:
            return state
        new = {"n": state["n"] + t}
        base = state["base"]
        if self.chunk:
            kb, vb = torch.cat([state["kb"], k], 2), torch.cat([state["vb"], v], 2)
            total = kb.shape[2]
            fold = self.chunk * ((total - 1) // self.chunk)  # the buffer keeps 1..chunk tokens, as absorb does
            if fold:
                base = self.base.advance(base, kb[:, :, :fold], vb[:, :, :fold])
            new["kb"], new["vb"] = kb[:, :, fold:], vb[:, :, fold:]
        else:
            base = self.base.advance(base, k, v)
        new["base"] = base
        if self.conv is not None:
            new["hist"] = torch.cat([state["hist"], v], 2)[:, :, -self.conv.kernel_size:]
        return new

    def query(self, state, q, pos):
        if pos != state["n"] - 1:
            raise ValueError(f"{self.name}: queries must be at the newest token ({state['n'] - 1}), not {pos}")
        out = self.base.query(state["base"], q, pos)
        if self.chunk:
            s = torch.einsum("bhd,bhcd->bhc", q, state["kb"]) / math.sqrt(self.head_dim)
            out = out + torch.einsum("bhc,bhcd->bhd", torch.softmax(s, -1), state["vb"])
        if self.conv is not None:
            out = out + self.conv.read(state["hist"])
        return out

    def extra_repr(self):
        return f"conv_kernel={self.conv_kernel}, chunk={self.chunk}"
