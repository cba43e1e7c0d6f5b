"""Integer golden model of one head's linear-attention decode step, with
speculative verify/commit: the bit-exact specification of ``hw/linear``.

Arithmetic and widths come from ``attnforge.linear_format.LinearDecodeFormat``
(shared with the generator). Per token ``t`` (see that module for formats)::

    S  += phi(k_t) v_t^T                      (wrapped to state_format)
    z  += phi(k_t)                            (relu_norm only)
    A   = phi(q_t)^T S                        (numerator_format; S includes token t)
    A   = divide(A, phi(q_t)^T z)             (relu_norm only, fixed point)
    C   = sum_m w[m] * v_{t-m}                (causal depthwise conv, K taps)
    out = sat_int8(attn_requant(A) + conv_requant(C))

Speculative decoding: ``verify`` takes T draft tokens and returns their T
outputs computed causally from the committed state (token tau sees the
committed state plus draft tokens 0..tau); ``commit(a)`` folds exactly the
first ``a`` of them into the state, the normalizer and the convolution history
and drops the rest; ``reset`` starts a new sequence (taps are kept).

Past ``max_tokens`` committed tokens the widths are no longer proven: the
model wraps like the hardware registers do and raises the sticky ``overflow``
flag, exactly as the RTL does. Also here: ``linear_decode_float``, the float64
recurrent computation the integer model approximates.
"""

from __future__ import annotations

import numpy as np

from attnforge.linear_format import DIV_DEN_BITS, DIV_FRAC_BITS, LinearDecodeFormat
from attnforge.numfmt import INT8, IntFormat, saturate

__all__ = ["LinearDecodeGolden", "linear_decode_float", "divide_fixed", "quantize_int8"]


def _wrap(x: np.ndarray, fmt: IntFormat) -> np.ndarray:
    """Two's-complement wrap of an int64 array to ``fmt`` (what a register of that width holds)."""
    half = np.int64(1) << np.int64(fmt.width - 1)
    mask = (np.int64(1) << np.int64(fmt.width)) - np.int64(1)
    return ((x + half) & mask) - half


def divide_fixed(num: np.ndarray, den: int) -> np.ndarray:
    """``num / den`` with ``DIV_FRAC_BITS`` fraction bits, through a reduced reciprocal.

    ``den`` (>= 0) is shifted right by ``s`` so that it keeps at most
    ``DIV_DEN_BITS`` significant bits, ``num`` by the same ``s`` (arithmetic);
    ``recip = floor(2**(DIV_DEN_BITS + DIV_FRAC_BITS) / den')`` and the result is
    ``(num' * recip + 2**(DIV_DEN_BITS-1)) >> DIV_DEN_BITS``. ``den == 0`` gives 0.
    """
    den = int(den)
    if den < 0:
        raise ValueError(f"divide_fixed needs a denominator >= 0, not {den}")
    if den == 0:
        return np.zeros_like(num)
    s = max(0, den.bit_length() - DIV_DEN_BITS)
    den_r = den >> s
    recip = (1 << (DIV_DEN_BITS + DIV_FRAC_BITS)) // den_r
    num_r = num >> np.int64(s)
    return (num_r * np.int64(recip) + np.int64(1 << (DIV_DEN_BITS - 1))) >> np.int64(DIV_DEN_BITS)


def _as_int8_tokens(name: str, x, d: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not {a.dtype}")
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != d:
        raise ValueError(f"{name} must have shape [T, {d}] (or [{d}]), not {list(np.asarray(x).shape)}")
    if a.size:   # before the cast: uint64 2**64-1 would wrap to -1; min() of no tokens raised
        INT8.check_array(name, a)
    return a.astype(np.int64)


class LinearDecodeGolden:
    """One head's decode state and the operations the datapath implements.

    Parameters
    ----------
    fmt : LinearDecodeFormat
    taps : int array ``[K, d]`` or None
        Convolution taps ``w[m][j]`` (m = 0 is the current token); zeros if None.
    """

    def __init__(self, fmt: LinearDecodeFormat, taps=None):
        if not isinstance(fmt, LinearDecodeFormat):
            raise TypeError(f"LinearDecodeGolden needs a LinearDecodeFormat, not {fmt!r}")
        self.fmt = fmt
        self.taps = np.zeros((fmt.conv_taps, fmt.d), dtype=np.int64)
        if taps is not None:
            self.load_taps(taps)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """New sequence: zero state, normalizer and history; taps are kept."""
        d, k = self.fmt.d, self.fmt.conv_taps
        self.S = np.zeros((d, d), dtype=np.int64)
        self.z = np.zeros(d, dtype=np.int64)
        # Ring buffer of the last K-1 committed v: slot _head is the next to write.
        self._ring = np.zeros((max(k - 1, 1), d), dtype=np.int64)
        self._head = 0
        self.committed = 0
        self.overflow = False
        self._block = None

    def load_taps(self, taps) -> None:
        a = np.asarray(taps)
        shape = (self.fmt.conv_taps, self.fmt.d)
        if a.shape != shape or a.dtype.kind not in "iu":
            raise ValueError(f"conv taps must be an integer array of shape {list(shape)}, not {a.dtype} {list(a.shape)}")
        INT8.check_array("conv taps", a)   # before the cast: uint64 2**64-128 would wrap to -128
        self.taps = a.astype(np.int64)

    def history(self) -> np.ndarray:
        """The last K-1 committed v, newest first ``[K-1, d]`` (zeros before the sequence start)."""
        n = self.fmt.conv_taps - 1
        idx = [(self._head - 1 - m) % len(self._ring) for m in range(n)]
        return self._ring[idx].copy() if n else np.zeros((0, self.fmt.d), dtype=np.int64)

    def snapshot(self) -> dict:
        """Everything a later token depends on (for rollback checks)."""
        return {"S": self.S.copy(), "z": self.z.copy(), "history": self.history(),
                "committed": self.committed, "overflow": self.overflow}

    # ------------------------------------------------------------------ arithmetic

    def _phi(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)

    def _fold(self, S, z, k_row, v_row):
        phk = self._phi(k_row)
        S = _wrap(S + np.outer(phk, v_row), self.fmt.state_format)
        z = _wrap(z + phk, self.fmt.normalizer_format)
        return S, z

    def verify(self, q, k, v) -> np.ndarray:
        """Outputs (int8 ``[T, d]``) of T draft tokens, causally from the committed state.

        The block stays pending until ``commit``; a new ``verify`` drops a pending
        block (as ``commit(0)`` would).
        """
        d = self.fmt.d
        q = _as_int8_tokens("q", q, d)
        k = _as_int8_tokens("k", k, d)
        v = _as_int8_tokens("v", v, d)
        t = q.shape[0]
        if not (k.shape[0] == v.shape[0] == t):
            raise ValueError(f"q, k, v must hold the same number of tokens, not {q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
        if not 1 <= t <= self.fmt.t_max:
            raise ValueError(f"a verify block holds 1..t_max={self.fmt.t_max} tokens, not {t}")
        fmt = self.fmt
        ra, rc = fmt.attn_requant, fmt.conv_requant
        hist = self.history()
        S, z = self.S.copy(), self.z.copy()
        out = np.zeros((t, d), dtype=np.int64)
        for tau in range(t):
            S, z = self._fold(S, z, k[tau], v[tau])
            phq = self._phi(q[tau])
            a = _wrap(phq @ S, fmt.numerator_format)
            if fmt.feature_map == "relu_norm":
                den = int(_wrap(np.array([phq @ z]), fmt.denominator_format)[0])
                a = divide_fixed(a, den)
            window = [v[tau - m] if tau - m >= 0 else hist[m - tau - 1] for m in range(fmt.conv_taps)]
            c = sum(self.taps[m] * window[m] for m in range(fmt.conv_taps))
            out[tau] = saturate(ra(a) + rc(c), INT8)
        self._block = (k, v)
        return out

    def commit(self, a: int) -> None:
        """Fold exactly the first ``a`` tokens of the pending block; drop the rest."""
        if self._block is None:
            raise ValueError("commit needs a pending verify block (call verify first)")
        k, v = self._block
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not 0 <= a <= k.shape[0]:
            raise ValueError(f"commit(a) needs 0 <= a <= {k.shape[0]} (the block's size), not {a!r}")
        for u in range(int(a)):
            self.S, self.z = self._fold(self.S, self.z, k[u], v[u])
            if self.fmt.conv_taps > 1:
                self._ring[self._head] = v[u]
                self._head = (self._head + 1) % len(self._ring)
        self.committed += int(a)
        if self.committed > self.fmt.max_tokens:
            self.overflow = True
        self._block = None

    def decode(self, q, k, v) -> np.ndarray:
        """One ordinary decode step: verify one token and commit it. Returns int8 ``[d]``."""
        out = self.verify(q, k, v)
        self.commit(1)
        return out[0]

    def run(self, q, k, v) -> np.ndarray:
        """Decode a whole sequence ``[N, d]`` token by token; returns ``[N, d]``."""
        q, k, v = (_as_int8_tokens(name, x, self.fmt.d) for name, x in (("q", q), ("k", k), ("v", v)))
        if not q.shape[0] == k.shape[0] == v.shape[0]:   # k[t] of a shorter k raised IndexError
            raise ValueError(f"q, k, v must hold the same number of tokens, not "
                             f"{q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
        if not q.shape[0]:
            return np.zeros((0, self.fmt.d), dtype=np.int64)
        return np.stack([self.decode(q[t], k[t], v[t]) for t in range(q.shape[0])])


def quantize_int8(x: np.ndarray, scale: float) -> np.ndarray:
    """Symmetric int8: ``round(x / scale)`` saturated to [-128, 127]."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) / scale), -128, 127).astype(np.int64)


def linear_decode_float(q, k, v, taps, *, feature_map: str = "relu") -> np.ndarray:
    """Float64 recurrent form of the same step (no quantization), ``[N, d]`` in, ``[N, d]`` out.

    ``out_t = phi(q_t)^T S_t (/ phi(q_t)^T z_t) + sum_m taps[m] * v_{t-m}`` with
    ``S_t = sum_{u<=t} phi(k_u) v_u^T``, ``z_t = sum_{u<=t} phi(k_u)``, ReLU phi,
    v before the sequence start taken as zero.
    """
    q, k, v, taps = (np.asarray(a, dtype=np.float64) for a in (q, k, v, taps))
    n, d = q.shape
    S = np.zeros((d, d))
    z = np.zeros(d)
    out = np.zeros((n, d))
    for t in range(n):
        pk, pq = np.maximum(k[t], 0), np.maximum(q[t], 0)
        S += np.outer(pk, v[t])
        z += pk
        att = pq @ S
        if feature_map == "relu_norm":
            den = pq @ z
            att = att / den if den > 0 else np.zeros(d)
        elif feature_map != "relu":
            raise ValueError(f"feature_map must be 'relu' or 'relu_norm', not {feature_map!r}")
        conv = sum(taps[m] * v[t - m] for m in range(taps.shape[0]) if t - m >= 0)
        out[t] = att + conv
    return out
