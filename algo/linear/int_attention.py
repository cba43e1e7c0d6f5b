"""The integer attention path: a linearized LM whose every attention head computes the decode datapath's
integer arithmetic (issue "A linearized LM ... on the decode RTL", item 2).

``golden_parallel(fmt, taps, q, k, v)`` is the golden model's per-token recurrence
(``golden.LinearDecodeGolden.run``) in closed form for a whole sequence: with the
state never wrapping (at most ``fmt.max_tokens`` tokens, the range the widths are
proven for) ``phi(q_t)^T S_t = sum_{u <= t} (phi(q_t) . phi(k_u)) v_u`` is one
causally masked int64 matrix product, the normalizer likewise, and the divider,
the convolution and the requantizers are applied element-wise exactly as the
golden model does. A test holds it equal to ``LinearDecodeGolden.run``, value for
value, on random int8 sequences of both feature maps.

``IntegerAttention`` calibrates per layer and head (on training windows, seeded)
the int8 scales of q, k, v and of the head output (``max|x| / 127``, as
``export.quantize_head``), the conv taps' scale, and the two requantizers
(``LinearDecodeFormat.checked_requant_params``). Its ``forward`` runs the model
with each head's attention replaced by quantize -> ``golden_parallel`` ->
dequantize; embeddings, MLP, norms and projections stay float. So the model's
attention is exactly what the datapath computes on these int8 inputs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

from attnforge.algo.linear.export import check_hardware_variant, feature_map_of
from attnforge.algo.linear.golden import quantize_int8
from attnforge.errors import ConfigError
from attnforge.linear_format import DIV_DEN_BITS, DIV_FRAC_BITS, LinearDecodeFormat
from attnforge.numfmt import INT8, saturate

__all__ = ["golden_parallel", "divide_fixed_rows", "HeadQuant", "IntegerAttention"]


def divide_fixed_rows(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``golden.divide_fixed`` row by row: ``num`` ``[T, d]`` over ``den`` ``[T]`` (>= 0), int64."""
    den = np.asarray(den, dtype=np.int64)
    if (den < 0).any():
        raise ValueError("divide_fixed_rows needs denominators >= 0")
    if (den >= 1 << 53).any():
        raise ValueError("divide_fixed_rows takes denominators below 2**53 (exact as float64)")
    nz = den > 0
    bits = np.frexp(den.astype(np.float64))[1].astype(np.int64)     # bit_length, exact below 2**53
    s = np.maximum(0, bits - DIV_DEN_BITS)
    den_r = np.where(nz, den >> s, 1)
    recip = np.int64(1 << (DIV_DEN_BITS + DIV_FRAC_BITS)) // den_r
    out = ((num >> s[:, None]) * recip[:, None] + np.int64(1 << (DIV_DEN_BITS - 1))) >> np.int64(DIV_DEN_BITS)
    return np.where(nz[:, None], out, 0)


def golden_parallel(fmt: LinearDecodeFormat, taps: np.ndarray, q: np.ndarray, k: np.ndarray,
                    v: np.ndarray) -> np.ndarray:
    """int8 outputs ``[T, d]`` of a sequence of int8 ``q, k, v`` ``[T, d]`` decoded from a reset state:
    ``LinearDecodeGolden(fmt, taps).run(q, k, v)`` in closed form (module docstring); T <= ``fmt.max_tokens``."""
    q, k, v, taps = (np.asarray(a, dtype=np.int64) for a in (q, k, v, taps))
    t = q.shape[0]
    if t > fmt.max_tokens:
        raise ConfigError(f"golden_parallel: {t} tokens exceed max_tokens={fmt.max_tokens}, past which the state "
                          "wraps (use LinearDecodeGolden)")
    for name, a in (("q", q), ("k", k), ("v", v), ("taps", taps)):
        INT8.check_array(name, a)
    phq, phk = np.maximum(q, 0), np.maximum(k, 0)
    w = np.tril(phq @ phk.T)                      # w[t, u] = phi(q_t) . phi(k_u), u <= t
    a = w @ v
    if fmt.feature_map == "relu_norm":
        a = divide_fixed_rows(a, w.sum(axis=1))
    c = np.zeros_like(v)
    for m in range(min(fmt.conv_taps, t)):       # taps[m] on v[t - m]; v before the start is 0
        c[m:] += taps[m] * v[: t - m]
    return saturate(fmt.attn_requant(a) + fmt.conv_requant(c), INT8)


@dataclass(frozen=True)
class HeadQuant:
    """One head's integer attention: int8 scales, the int8 taps and the datapath format with its requantizers."""

    q: float
    k: float
    v: float
    out: float
    taps: np.ndarray            # int8 [K, d]
    fmt: LinearDecodeFormat


class IntegerAttention:
    """A trained hardware-variant ``LinearLM`` whose attention runs the datapath's integer arithmetic.

    ``IntegerAttention.calibrate(model, windows)`` measures the scales on ``windows`` (LongTensor
    ``[N, T]``); ``forward(idx)`` gives the logits with every head integer; ``use()`` is a context in which
    ``model(...)`` itself does (so ``train.evaluate`` measures the integer model).
    """

    def __init__(self, model, heads: list[list[HeadQuant]]):
        self.model, self.heads = model, heads

    @classmethod
    @torch.no_grad()
    def calibrate(cls, model, windows, *, max_tokens: int = 4096, share: str = "head") -> "IntegerAttention":
        """``share="head"``: scales and requantizers per head; ``"layer"``: one set per layer (the
        largest peak of its heads), so that a layer's heads time-multiplex one datapath instance,
        whose requantizers are generator parameters (``attnforge linear generate --rtl``)."""
        if share not in ("head", "layer"):
            raise ConfigError(f"share={share!r}: expected 'head' or 'layer'")
        check_hardware_variant(model.cfg)
        fm = feature_map_of(model.cfg)
        peaks = _peaks(model, windows)
        if share == "layer":
            peaks = {name: np.repeat(p.max(axis=1, keepdims=True), p.shape[1], axis=1) for name, p in peaks.items()}
        heads = []
        for layer, blk in enumerate(model.blocks):
            conv = blk.attn.core.conv
            taps_all = conv.weight.detach().double().numpy()        # [H, hd, K]
            row = []
            for h in range(model.cfg.n_head):
                p = {name: peaks[name][layer][h] for name in ("q", "k", "v", "out")}
                s = {name: (m / 127.0 if m > 0 else 1.0) for name, m in p.items()}
                tap_f = conv.weight[h].T.double().numpy()          # [K, hd], taps[m] on v[t - m]
                tap_peak = float(np.abs(taps_all).max()) if share == "layer" else float(np.abs(tap_f).max())
                s_taps = tap_peak / 127.0 or 1.0
                d = tap_f.shape[1]
                base = LinearDecodeFormat(d=d, conv_taps=tap_f.shape[0], max_tokens=max_tokens, feature_map=fm)
                attn = (s["v"] / (1 << DIV_FRAC_BITS) if fm == "relu_norm" else s["q"] * s["k"] * s["v"]) / s["out"]
                try:
                    rq = base.checked_requant_params(attn, s_taps * s["v"] / s["out"])
                except ConfigError as exc:
                    raise ConfigError(f"layer {layer} head {h}: {exc}") from None
                fmt = LinearDecodeFormat(d=d, conv_taps=tap_f.shape[0], max_tokens=max_tokens, feature_map=fm, **rq)
                row.append(HeadQuant(s["q"], s["k"], s["v"], s["out"], quantize_int8(tap_f, s_taps), fmt))
            heads.append(row)
        return cls(model, heads)

    def to_dict(self) -> dict:
        """The calibration as plain JSON-able data (scales, int8 taps, format per layer and head)."""
        return {"heads": [[{"q": hq.q, "k": hq.k, "v": hq.v, "out": hq.out, "taps": hq.taps.astype(int).tolist(),
                            "fmt": asdict(hq.fmt)} for hq in row] for row in self.heads]}

    @classmethod
    def from_dict(cls, model, data: dict) -> "IntegerAttention":
        """``to_dict``'s data back, on ``model`` (the checkpoint it was calibrated on)."""
        try:
            heads = [[HeadQuant(float(h["q"]), float(h["k"]), float(h["v"]), float(h["out"]),
                                np.asarray(h["taps"], dtype=np.int64), LinearDecodeFormat(**h["fmt"]))
                      for h in row] for row in data["heads"]]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"integer attention calibration: malformed ({exc}); expected IntegerAttention.to_dict()"
                              " data") from None
        n_l, n_h = model.cfg.n_layer, model.cfg.n_head
        if len(heads) != n_l or any(len(row) != n_h for row in heads):
            raise ConfigError(f"integer attention calibration: {[len(r) for r in heads]} heads per layer; the model "
                              f"has {n_l} layers of {n_h} heads")
        return cls(model, heads)

    def attention(self, layer: int, q, k, v) -> torch.Tensor:
        """The integer heads of ``layer`` on float ``q, k, v`` ``[B, H, T, hd]``: dequantized outputs, float."""
        qn, kn, vn = (x.detach().double().numpy() for x in (q, k, v))
        out = np.zeros(qn.shape)
        for h, hq in enumerate(self.heads[layer]):
            for b in range(qn.shape[0]):
                o = golden_parallel(hq.fmt, hq.taps, quantize_int8(qn[b, h], hq.q), quantize_int8(kn[b, h], hq.k),
                                    quantize_int8(vn[b, h], hq.v))
                out[b, h] = o * hq.out
        return torch.from_numpy(out).to(q.dtype)

    @contextmanager
    def use(self):
        """Inside, ``self.model``'s attention cores compute the integer heads."""
        cores = [blk.attn.core for blk in self.model.blocks]
        saved = [core.parallel for core in cores]
        try:
            for layer, core in enumerate(cores):
                core.parallel = (lambda layer: lambda q, k, v, mask=None: self.attention(layer, q, k, v))(layer)
            yield self.model
        finally:
            for core, fn in zip(cores, saved):
                core.parallel = fn

    @torch.no_grad()
    def forward(self, idx, targets=None):
        with self.use():
            return self.model(idx, targets)


@torch.no_grad()
def _peaks(model, windows) -> dict:
    """max |x| of q, k, v and of the head outputs, per layer and head, over ``windows``."""
    n_l, n_h = model.cfg.n_layer, model.cfg.n_head
    peaks = {name: np.zeros((n_l, n_h)) for name in ("q", "k", "v", "out")}
    hooks = []
    for layer, blk in enumerate(model.blocks):
        def pre(mod, args, layer=layer):
            q, k, v = mod._qkv(args[0])
            out = mod.core.parallel(q, k, v)
            for name, x in (("q", q), ("k", k), ("v", v), ("out", out)):
                m = x.detach().abs().amax(dim=(0, 2, 3)).double().numpy()
                peaks[name][layer] = np.maximum(peaks[name][layer], m)
        hooks.append(blk.attn.register_forward_pre_hook(pre))
    was = model.training
    model.eval()
    try:
        for i in range(0, len(windows), 16):
            model(windows[i: i + 16])
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was)
    return peaks
