"""Linear attention variants, each with a parallel form and a recurrent form.

The parallel form (training, prefill) computes all outputs of a sequence at
once; the recurrent form (decode) keeps a state and handles one token at a
time. Both compute the same function: ``tests/test_linear_variants.py`` checks
that they agree in float64, and that every variant except Linformer is causal.

Shapes everywhere: ``q, k`` are ``[B, H, T, D]``, ``v`` is ``[B, H, T, Dv]``,
outputs ``[B, H, T, Dv]``. A recurrent step takes ``[B, H, D]`` tensors.

The recurrent API is functional, so that speculative decoding can keep the
committed state and throw away what a rejected draft token did:

* ``init_state(batch, dtype, device)`` -> state (a dict; ``state["n"]`` is the
  number of tokens absorbed so far);
* ``absorb(state, k, v)`` -> new state with one more token (depends on k and v
  only, never on q, so a commit needs only the accepted tokens' k and v);
* ``query(state, q, pos)`` -> output of a query at position ``pos`` given the
  tokens absorbed so far;
* ``step`` = absorb, then query at the new token's position;
* ``extend(state, q, k, v)`` -> outputs of T new tokens after the state, in one
  call, without changing the state (the verify pass of speculative decoding);
* ``advance(state, k, v)`` -> state after absorbing T tokens (the commit).

``parallel(q, k, v, mask)`` takes an optional boolean ``[Tq, Tk]`` mask of the
pairs (query i, key j) that may interact; ``None`` means the variant's own
default (causal for all but Linformer). The augmentation wrapper
(``augment.py``) uses the mask to restrict a variant to earlier chunks.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnforge.errors import check_int

__all__ = [
    "AttentionCore", "KernelAttention", "SoftmaxAttention", "ReLUAttention", "EluAttention",
    "PerformerAttention", "CosFormerAttention", "TransNormerAttention", "FlashAttention",
    "YosoAttention", "LinformerAttention", "VARIANTS", "LINEAR_VARIANTS", "make_core",
    "causal_mask", "state_tensors",
]

EPS = 1e-6  # added to every normalizer: a query that matches nothing gets output 0


def causal_mask(tq: int, tk: int | None = None, device=None, offset: int = 0) -> torch.Tensor:
    """Boolean ``[tq, tk]``: query i (at position offset + i) may see key j iff j <= offset + i."""
    tk = tq if tk is None else tk
    i = torch.arange(tq, device=device)[:, None] + offset
    j = torch.arange(tk, device=device)[None, :]
    return j <= i


class AttentionCore(nn.Module):
    """Common interface of every attention variant (see the module docstring)."""

    name = "?"
    causal = True  # whether parallel(mask=None) is causal
    bounded = False  # whether positions must stay below max_len (position-dependent variants)

    def __init__(self, n_heads: int, head_dim: int, max_len: int = 1024, seed: int = 0):
        super().__init__()
        self.n_heads = check_int("n_heads", n_heads, 1)
        self.head_dim = check_int("head_dim", head_dim, 1)
        self.max_len = check_int("max_len", max_len, 1)
        self.seed = seed

    def _generator(self, salt: int) -> torch.Generator:
        # Fixed random projections (Performer, YOSO, Linformer) come from the seed alone.
        return torch.Generator().manual_seed(1_000_003 * int(self.seed) + salt)

    def default_mask(self, t: int, device=None) -> torch.Tensor | None:
        return causal_mask(t, device=device)

    def forward(self, q, k, v, mask=None):
        return self.parallel(q, k, v, mask)

    # -- recurrent form
    def step(self, state, q, k, v):
        state = self.absorb(state, k, v)
        return self.query(state, q, state["n"] - 1), state

    def recurrent(self, q, k, v, state=None):
        """All outputs of a sequence computed token by token with the recurrent form."""
        if state is None:
            state = self.init_state(q.shape[0], q.dtype, q.device)
        outs = []
        for t in range(q.shape[-2]):
            o, state = self.step(state, q[:, :, t], k[:, :, t], v[:, :, t])
            outs.append(o)
        return torch.stack(outs, dim=2), state

    def extend(self, state, q, k, v):
        """Outputs of T new tokens after ``state``, each seeing the state and the new tokens up to itself.

        The state is left as it was (the verify pass of speculative decoding).
        """
        n, t = state["n"], q.shape[-2]
        return self.extend_keys(state, q, torch.arange(n, n + t, device=q.device), k, v,
                                causal_mask(t, device=q.device))

    def extend_keys(self, state, q, qpos, k, v, mask):
        """Outputs of queries ``q`` ``[B, H, Tq, D]`` at positions ``qpos`` given the state plus
        the extra tokens ``k, v`` ``[B, H, Tk, *]`` that follow it (positions n, n+1, ...);
        query i sees the extra tokens where ``mask[i]`` ``[Tq, Tk]`` is True (a prefix).

        Generic form: a query per row against the state advanced by its prefix (state-sized
        work per token). The kernel family and softmax override it with a parallel form.
        """
        lengths = mask.sum(-1).tolist()
        for i, length in enumerate(lengths):
            if not bool(mask[i, :length].all()):
                raise ValueError(f"{self.name}: extend_keys needs prefix masks; row {i} is not one")
        states = [state]
        outs = []
        for i, length in enumerate(lengths):
            while len(states) <= length:
                j = len(states) - 1
                states.append(self.absorb(states[-1], k[:, :, j], v[:, :, j]))
            outs.append(self.query(states[length], q[:, :, i], int(qpos[i])))
        return torch.stack(outs, dim=2)

    def advance(self, state, k, v):
        """State after absorbing the T tokens ``k, v`` ``[B, H, T, *]`` one after the other."""
        for t in range(k.shape[-2]):
            state = self.absorb(state, k[:, :, t], v[:, :, t])
        return state

    def _check_pos(self, pos: int):
        if self.bounded and pos >= self.max_len:
            raise ValueError(f"{self.name}: position {pos} is beyond max_len={self.max_len}")

    def extra_repr(self):
        return f"{self.name}, heads={self.n_heads}, head_dim={self.head_dim}, max_len={self.max_len}"


def state_tensors(state) -> dict:
    """The tensors that define a state, flattened with path names (for exact comparisons)."""
    out = {}

    def walk(prefix, obj):
        if isinstance(obj, dict):
            if "kcache" in obj:  # softmax KV cache: only the first n rows are state
                n = obj["n"]
                out[prefix + "k"] = obj["kcache"][:, :, :n]
                out[prefix + "v"] = obj["vcache"][:, :, :n]
                out[prefix + "n"] = torch.tensor(n)
                return
            for key, val in obj.items():
                walk(f"{prefix}{key}.", val)
        elif isinstance(obj, (list, tuple)):
            for i, val in enumerate(obj):
                walk(f"{prefix}{i}.", val)
        elif isinstance(obj, torch.Tensor):
            out[prefix[:-1]] = obj
        else:
            out[prefix[:-1]] = torch.tensor(obj)
    walk("", state)
    return out


# ============================================================================ softmax (the baseline)

class SoftmaxAttention(AttentionCore):
    """Causal softmax attention; its "state" is the KV cache, which grows with the context."""

    name = "softmax"

    def parallel(self, q, k, v, mask=None):
        t = q.shape[-2]
        mask = self.default_mask(t, q.device) if mask is None else mask
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        s = s.masked_fill(~mask, float("-inf"))
        p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # a query that may see nothing gets 0
        return p @ v

    def init_state(self, batch, dtype=torch.float32, device=None, capacity: int = 64):
        h, d = self.n_heads, self.head_dim
        return {"kcache": torch.zeros(batch, h, capacity, d, dtype=dtype, device=device),
                "vcache": torch.zeros(batch, h, capacity, d, dtype=dtype, device=device), "n": 0}

    def absorb(self, state, k, v):
        # Preallocated cache written in place (a real KV cache). Rows at index >= n are not
        # part of the state, so an older state (a rollback) stays valid: it ignores them.
        n, cap = state["n"], state["kcache"].shape[2]
        kc, vc = state["kcache"], state["vcache"]
        if n >= cap:
            kc = torch.cat([kc, torch.zeros_like(kc)], dim=2)
            vc = torch.cat([vc, torch.zeros_like(vc)], dim=2)
        kc[:, :, n] = k
        vc[:, :, n] = v
        return {"kcache": kc, "vcache": vc, "n": n + 1}

    def query(self, state, q, pos):
        n = state["n"]
        if n == 0:
            return torch.zeros(*q.shape[:-1], self.head_dim, dtype=q.dtype, device=q.device)
        s = torch.einsum("bhd,bhnd->bhn", q, state["kcache"][:, :, :n]) / math.sqrt(self.head_dim)
        return torch.einsum("bhn,bhnd->bhd", torch.softmax(s, -1), state["vcache"][:, :, :n])

    def extend_keys(self, state, q, qpos, k, v, mask):
        n = state["n"]
        keys = torch.cat([state["kcache"][:, :, :n], k], dim=2)
        vals = torch.cat([state["vcache"][:, :, :n], v], dim=2)
        full = torch.cat([torch.ones(mask.shape[0], n, dtype=torch.bool, device=mask.device), mask], dim=1)
        return self.parallel(q, keys, vals, full)


# ============================================================================ kernel (feature map) family

class KernelAttention(AttentionCore):
    """out_i = sum_{j<=i} w_ij v_j with w_ij = phi_q(q_i, i) . phi_k(k_j, j) * lambda^(i-j).

    Normalized variants divide by sum_j w_ij (+ EPS); TransNormer instead applies
    an RMS norm to the output. State: S = sum lambda^(n-1-j) phi_k(k_j) v_j^T
    ``[B, H, F, Dv]`` and z = sum lambda^(n-1-j) phi_k(k_j) ``[B, H, F]``.
    """

    normalize = True
    post_norm = False

    def feat_q(self, q, pos):  # q [..., T, D], pos LongTensor [T] -> [..., T, F]
        raise NotImplementedError

    def feat_k(self, k, pos):
        return self.feat_q(k, pos)

    def decay(self):  # per-head decay lambda [H] or None
        return None

    def _finish(self, num, den):
        if self.normalize:
            num = num / (den.unsqueeze(-1) + EPS)
        if self.post_norm:
            num = num * torch.rsqrt(num.pow(2).mean(-1, keepdim=True) + EPS)
        return num

    def _weights(self, fq, fk, qpos, kpos, mask):
        a = fq @ fk.transpose(-1, -2)
        lam = self.decay()
        if lam is not None:
            dist = (qpos[:, None] - kpos[None, :]).clamp(min=0).to(a.dtype)
            a = a * lam.to(a.dtype)[:, None, None] ** dist
        return a * mask.to(a.dtype)

    def parallel(self, q, k, v, mask=None):
        t = q.shape[-2]
        mask = self.default_mask(t, q.device) if mask is None else mask
        pos = torch.arange(t, device=q.device)
        a = self._weights(self.feat_q(q, pos), self.feat_k(k, pos), pos, pos, mask)
        return self._finish(a @ v, a.sum(-1))

    def init_state(self, batch, dtype=torch.float32, device=None):
        f = self.feat_q(torch.zeros(1, self.n_heads, 1, self.head_dim, dtype=dtype, device=device),
                        torch.zeros(1, dtype=torch.long, device=device)).shape[-1]
        h, dv = self.n_heads, self.head_dim
        return {"S": torch.zeros(batch, h, f, dv, dtype=dtype, device=device),
                "z": torch.zeros(batch, h, f, dtype=dtype, device=device), "n": 0}

    def absorb(self, state, k, v):
        n = state["n"]
        self._check_pos(n)
        fk = self.feat_k(k.unsqueeze(-2), torch.tensor([n], device=k.device)).squeeze(-2)
        s, z = state["S"], state["z"]
        lam = self.decay()
        if lam is not None and n > 0:
            lam = lam.to(s.dtype)
            s, z = s * lam[:, None, None], z * lam[:, None]
        return {"S": s + fk.unsqueeze(-1) * v.unsqueeze(-2), "z": z + fk, "n": n + 1}

    def _query_state(self, state, fq, qpos):
        """Numerator and normalizer of queries with features fq [B,H,T,F] at positions qpos [T]."""
        num = fq @ state["S"]
        den = (fq * state["z"].unsqueeze(-2)).sum(-1)
        lam = self.decay()
        if lam is not None and state["n"] > 0:
            factor = lam.to(num.dtype)[:, None] ** (qpos - (state["n"] - 1)).to(num.dtype)[None, :]
            num, den = num * factor.unsqueeze(-1), den * factor
        return num, den

    def advance(self, state, k, v):
        # Batched commit: S <- lam^T S + sum_j lam^(T-1-j) phi(k_j) v_j^T (z likewise), one call for T tokens.
        n, t = state["n"], k.shape[-2]
        if t == 0:
            return state
        self._check_pos(n + t - 1)
        fk = self.feat_k(k, torch.arange(n, n + t, device=k.device))
        s, z = state["S"], state["z"]
        lam = self.decay()
        if lam is not None:
            lam = lam.to(s.dtype)
            w = lam[:, None] ** torch.arange(t - 1, -1, -1, device=k.device, dtype=s.dtype)  # [H, T]
            s, z = s * (lam ** t)[:, None, None], z * (lam ** t)[:, None]  # (S = 0 when n = 0)
            fkw = fk * w[None, :, :, None]
        else:
            fkw = fk
        return {"S": s + fkw.transpose(-1, -2) @ v, "z": z + fkw.sum(-2), "n": n + t}

    def query(self, state, q, pos):
        self._check_pos(pos)
        p = torch.tensor([pos], device=q.device)
        num, den = self._query_state(state, self.feat_q(q.unsqueeze(-2), p), p)
        return self._finish(num, den).squeeze(-2)

    def extend_keys(self, state, q, qpos, k, v, mask):
        # Chunk-parallel form: what the state contributes plus masked attention to the extra tokens.
        n, tk = state["n"], k.shape[-2]
        self._check_pos(max(int(qpos.max()), n + tk - 1))
        kpos = torch.arange(n, n + tk, device=q.device)
        fq, fk = self.feat_q(q, qpos), self.feat_k(k, kpos)
        a = self._weights(fq, fk, qpos, kpos, mask)
        num, den = self._query_state(state, fq, qpos)
        return self._finish(num + a @ v, den + a.sum(-1))


class ReLUAttention(KernelAttention):
    """phi(x) = relu(x), normalized: the simplest kernel, the one the decode datapath implements."""

    name = "relu"

    def __init__(self, *args, normalize: bool = True, **kw):
        super().__init__(*args, **kw)
        self.normalize = normalize

    def feat_q(self, q, pos):
        return F.relu(q)


class EluAttention(KernelAttention):
    """phi(x) = elu(x) + 1 (Katharopoulos et al. 2020), normalized."""

    name = "elu"

    def feat_q(self, q, pos):
        return F.elu(q) + 1


class PerformerAttention(KernelAttention):
    """FAVOR+ positive orthogonal random features (Choromanski et al. 2021), normalized.

    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m) with x' = x / D^(1/4), so that
    E[phi(q) . phi(k)] = exp(q . k / sqrt(D)). The query features are divided by
    their own per-row maximum (a constant per query cancels in the normalization,
    and it is causal, unlike the original's maximum over all keys).
    """

    name = "performer"

    def __init__(self, *args, n_features: int = 64, **kw):
        super().__init__(*args, **kw)
        m = check_int("n_features", n_features, 1)
        d = self.head_dim
        g = self._generator(11)
        blocks = []
        for _ in range(math.ceil(m / d)):
            qmat, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            blocks.append(qmat.T)
        w = torch.cat(blocks)[:m]
        norms = torch.randn(m, d, generator=g, dtype=torch.float64).norm(dim=1)
        self.register_buffer("proj", (w * norms[:, None]).float())

    def _feat(self, x, stabilize):
        x = x * self.head_dim ** -0.25
        wx = x @ self.proj.to(x.dtype).T
        logits = wx - x.pow(2).sum(-1, keepdim=True) / 2
        if stabilize:
            logits = logits - logits.amax(-1, keepdim=True).detach()
        return torch.exp(logits) / math.sqrt(self.proj.shape[0])

    def feat_q(self, q, pos):
        return self._feat(q, True)

    def feat_k(self, k, pos):
        return self._feat(k, False)


class CosFormerAttention(KernelAttention):
    """cosFormer (Qin et al. 2022): relu features re-weighted by cos(pi/2 * (i - j) / M).

    cos(a - b) = cos a cos b + sin a sin b makes it a kernel of width 2D. M is
    ``max_len`` (the causal form needs a fixed M); positions must stay below it.
    """

    name = "cosformer"
    bounded = True

    def feat_q(self, q, pos):
        ang = (math.pi / 2 / self.max_len) * pos.to(q.dtype)[:, None]
        r = F.relu(q)
        return torch.cat([r * torch.cos(ang), r * torch.sin(ang)], dim=-1)


class TransNormerAttention(KernelAttention):
    """TransNormer(LLM)-style NormAttention: elu+1 features, per-head decay, RMS-normed output, no division."""

    name = "transnormer"
    normalize = False
    post_norm = True

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        h = self.n_heads
        # Decays from short (0.75) to long memory, as TransNormerLLM spreads them over heads.
        self.register_buffer("lam", 1 - 2.0 ** -(2 + 6 * torch.arange(h, dtype=torch.float64) / h))

    def decay(self):
        return self.lam

    def feat_q(self, q, pos):
        return F.elu(q) + 1


class YosoAttention(KernelAttention):
    """YOSO (Zeng et al. 2021): attention weight = number of LSH bucket collisions.

    m hashes, each of tau random hyperplanes on the unit-normalized vector; phi is
    the concatenation of the m one-hot bucket indicators (width m * 2^tau), so
    phi(q) . phi(k) counts collisions, whose expectation is m (1 - arccos(q.k)/pi)^tau.
    Normalized by the collision count. Hashing passes no gradient to q and k (YOSO
    trains them with a surrogate gradient, which is not implemented here).
    """

    name = "yoso"

    def __init__(self, *args, n_hashes: int = 8, hash_bits: int = 4, **kw):
        super().__init__(*args, **kw)
        self.n_hashes = check_int("n_hashes", n_hashes, 1)
        self.hash_bits = check_int("hash_bits", hash_bits, 1)
        g = self._generator(13)
        self.register_buffer("planes", torch.randn(n_hashes, hash_bits, self.head_dim, generator=g))
        self.register_buffer("powers", 2 ** torch.arange(hash_bits))

    def feat_q(self, q, pos):
        bits = torch.einsum("...d,mbd->...mb", q, self.planes.to(q.dtype)) > 0
        code = (bits.long() * self.powers).sum(-1)  # [..., m]
        onehot = F.one_hot(code, 2 ** self.hash_bits).to(q.dtype)
        return onehot.flatten(-2)


# ============================================================================ FLASH

class FlashAttention(AttentionCore):
    """FLASH (Hua et al. 2022), mixed-chunk attention in its causal form.

    Within a chunk of C tokens: quadratic relu(q.k / sqrt D)^2 / C attention
    (causal); across chunks: an unnormalized linear term (q.k / sqrt D) v / max_len
    over all tokens of earlier chunks. State: the sum over completed chunks
    S = sum k v^T ``[B, H, D, Dv]`` plus the keys and values of the current
    chunk (at most C), a constant size.
    """

    name = "flash"

    def __init__(self, *args, chunk: int = 16, **kw):
        super().__init__(*args, **kw)
        self.chunk = check_int("chunk", chunk, 1)

    def _weights(self, q, k, qpos, kpos, mask):
        s = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        same = (qpos[:, None] // self.chunk) == (kpos[None, :] // self.chunk)
        w = torch.where(same, F.relu(s).pow(2) / self.chunk, s / self.max_len)
        return w * mask.to(w.dtype)

    def parallel(self, q, k, v, mask=None):
        t = q.shape[-2]
        mask = self.default_mask(t, q.device) if mask is None else mask
        pos = torch.arange(t, device=q.device)
        return self._weights(q, k, pos, pos, mask) @ v

    def init_state(self, batch, dtype=torch.float32, device=None):
        h, d, c = self.n_heads, self.head_dim, self.chunk
        return {"S": torch.zeros(batch, h, d, d, dtype=dtype, device=device),
                "kb": torch.zeros(batch, h, 0, d, dtype=dtype, device=device),
                "vb": torch.zeros(batch, h, 0, d, dtype=dtype, device=device), "n": 0}

    def absorb(self, state, k, v):
        n, s, kb, vb = state["n"], state["S"], state["kb"], state["vb"]
        if kb.shape[2] == self.chunk:
            # The buffered chunk is complete and a new one starts: fold it into the global sum.
            # (Folding lazily keeps the last chunk local for queries inside it.)
            s = s + kb.transpose(-1, -2) @ vb
            kb, vb = kb[:, :, :0], vb[:, :, :0]
        return {"S": s, "kb": torch.cat([kb, k.unsqueeze(2)], 2), "vb": torch.cat([vb, v.unsqueeze(2)], 2),
                "n": n + 1}

    def query(self, state, q, pos):
        n, s, kb, vb = state["n"], state["S"], state["kb"], state["vb"]
        scale = 1 / math.sqrt(self.head_dim)
        out = torch.einsum("bhd,bhde->bhe", q, s) * scale / self.max_len
        if kb.shape[2]:
            sc = torch.einsum("bhd,bhcd->bhc", q, kb) * scale
            if pos // self.chunk == (n - 1) // self.chunk:  # buffer is the query's own chunk
                out = out + torch.einsum("bhc,bhcd->bhd", F.relu(sc).pow(2) / self.chunk, vb)
            else:
                out = out + torch.einsum("bhc,bhcd->bhd", sc / self.max_len, vb)
        return out


# ============================================================================ Linformer

class LinformerAttention(AttentionCore):
    """Linformer (Wang et al. 2020): softmax attention over k_proj keys E K and values E V.

    E ``[k_proj, max_len]`` mixes all positions of the sequence, so the original
    (``parallel(mask=None)``) is **not causal**: output t depends on tokens after t.
    Given a mask, query i uses E restricted to the keys it may see,
    sum_j mask_ij E[:, j] k_j; the recurrent form keeps that sum as its state
    (``[B, H, k_proj, D]`` for keys and values) and equals the causally masked
    parallel form, not the original.
    """

    name = "linformer"
    causal = False
    bounded = True

    def __init__(self, *args, k_proj: int = 32, **kw):
        super().__init__(*args, **kw)
        self.k_proj = check_int("k_proj", k_proj, 1)
        g = self._generator(17)
        self.E = nn.Parameter(torch.randn(k_proj, self.max_len, generator=g) / math.sqrt(k_proj))

    def default_mask(self, t, device=None):
        return None  # all pairs: the original, non-causal Linformer

    def _attend(self, q, kp, vp):
        s = (q.unsqueeze(-2) @ kp.transpose(-1, -2)).squeeze(-2) / math.sqrt(self.head_dim)
        return (torch.softmax(s, -1).unsqueeze(-2) @ vp).squeeze(-2)

    def parallel(self, q, k, v, mask=None):
        t = q.shape[-2]
        if t > self.max_len:
            raise ValueError(f"linformer: sequence length {t} is beyond max_len={self.max_len}")
        e = self.E[:, :t].to(q.dtype)
        if mask is None:
            kp = torch.einsum("pj,bhjd->bhpd", e, k)
            vp = torch.einsum("pj,bhjd->bhpd", e, v)
            s = q @ kp.transpose(-1, -2) / math.sqrt(self.head_dim)
            return torch.softmax(s, -1) @ vp
        # Query i attends to its own projected keys Kp_i = sum_j mask_ij E[:, j] k_j^T, so its score on
        # slot p is sum_j mask_ij E[p, j] (q_i . k_j); both steps are T x T matmuls, for any mask.
        m = mask.to(q.dtype)
        scores = ((q @ k.transpose(-1, -2)) * m) @ e.T / math.sqrt(self.head_dim)  # [B, H, T, P]
        return ((torch.softmax(scores, -1) @ e) * m) @ v

    def init_state(self, batch, dtype=torch.float32, device=None):
        h, d, p = self.n_heads, self.head_dim, self.k_proj
        return {"kp": torch.zeros(batch, h, p, d, dtype=dtype, device=device),
                "vp": torch.zeros(batch, h, p, d, dtype=dtype, device=device), "n": 0}

    def absorb(self, state, k, v):
        n = state["n"]
        self._check_pos(n)
        e = self.E[:, n].to(k.dtype)
        return {"kp": state["kp"] + e[:, None] * k.unsqueeze(-2),
                "vp": state["vp"] + e[:, None] * v.unsqueeze(-2), "n": n + 1}

    def query(self, state, q, pos):
        return self._attend(q.unsqueeze(-2), state["kp"].unsqueeze(-3), state["vp"].unsqueeze(-3)).squeeze(-2)


VARIANTS = {
    "softmax": SoftmaxAttention,
    "relu": ReLUAttention,
    "elu": EluAttention,
    "performer": PerformerAttention,
    "cosformer": CosFormerAttention,
    "transnormer": TransNormerAttention,
    "flash": FlashAttention,
    "yoso": YosoAttention,
    "linformer": LinformerAttention,
}
LINEAR_VARIANTS = [name for name in VARIANTS if name != "softmax"]


def make_core(name: str, n_heads: int, head_dim: int, max_len: int = 1024, seed: int = 0, **kw) -> AttentionCore:
    """The attention variant ``name`` (one of ``VARIANTS``), with its own keyword parameters."""
    if name not in VARIANTS:
        raise ValueError(f"unknown attention variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name](n_heads, head_dim, max_len=max_len, seed=seed, **kw)
