"""Integer-only ViT: the golden model of a whole ViTCoD vision transformer, calibrated from a float checkpoint.

In the spirit of I-ViT and I-BERT: after the input image is quantized to int8
(``quantize_image``: ``clip(round(x / s_img), -127, 127)``, ``s_img`` from
calibration), every op is integer arithmetic with integer constants — no float
inside ``int_forward``. What a datapath computes, op by op (formulas of the
element-wise ops in ``attnforge.int_ops``, of the softmax in
``attnforge.softmax_int``):

* **patch embedding**: int8 patches (im2col of the conv) x int8 weights + int32
  bias, int32 accumulator, per-column requantizer to the int16 stream, plus the
  int16 constant ``cls_token + pos_embed`` (``pos``), saturated to int16;
* per block: ``norm1`` (integer LayerNorm, int16 -> int8); ``qkv`` (int8 matmul,
  per-column requantizers to per-head int8 scales of q, k, v); every head
  through ``algo.vitcod.golden.vitcod_head_golden`` with the masks' polarized
  key order, G global keys and the CSR sparse part (masked entries take no part
  in the softmax, exactly as on the accelerator); ``proj`` (int8 matmul whose
  weights have the per-head output scales folded in; int8 out);
  ``add1`` (``int_ops.residual_add``, int16); ``norm2``; ``fc1`` (int8 matmul,
  int16 out); ``gelu`` (I-BERT's i-GELU + requantizer, int8 out); ``fc2`` (int8
  out); ``add2``;
* ``norm`` on the class token and the classifier ``head``: int8 matmul with one
  weight scale (so all classes share one accumulator scale) whose int32
  accumulator is the logits.

Weights are symmetric int8, per output channel by default (``per_channel``),
biases int32 in the accumulator's units. Activation scales come from the float
model's activations on calibration images: ``max|x| / qmax`` (or a percentile
of ``|x|``), int16 streams with a 2x headroom (``INT16_HEADROOM``) so that test
images beyond the calibration maximum do not saturate. Every scale becomes a
``numfmt.Requantizer`` (16-bit multiplier + shift).

``compile_int_vit`` builds an ``IntViT`` from a float model, its masks and
calibration images; ``int_forward`` runs it on int8 images; ``trace_image``
returns every intermediate integer tensor of one image (what the RTL of a whole
ViT is compared against); ``evaluate_int`` and ``op_errors`` measure it against
the float model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from attnforge.errors import ArtifactError, ConfigError
from attnforge.formats.masks import MaskSet, head_csr
from attnforge.int_ops import (INT16, INT32, ISQRT_INPUT_BITS, LN_FRAC_BITS, check_layernorm_width, gelu, gelu_constants, layernorm,
                               linear_acc, requantize_columns, residual_add)
from attnforge.numfmt import INT8, IntFormat, Requantizer, requantizer_for, saturate

from .golden import HeadParams, head_params, vitcod_head_float, vitcod_head_golden
from .vit import VisionTransformer

__all__ = ["IntLinear", "IntLayerNorm", "IntAdd", "IntGelu", "IntHead", "IntBlock", "IntViT", "INT16_HEADROOM",
           "compile_int_vit", "quantize_image", "int_forward", "trace_image", "float_trace", "dense_masks",
           "evaluate_int", "op_errors", "calibration_images"]

#: int16 tensors (residual stream, GELU input) get scales max|x| * INT16_HEADROOM / 32767.
INT16_HEADROOM = 2.0


# ------------------------------------------------------------------------------------------ the ops

@dataclass(frozen=True)
class IntLinear:
    """``y = requant_o(x @ weight.T + bias)`` per output column ``o`` (``requant`` None: the int32 accumulator)."""

    weight: np.ndarray          # int8 [out, in]
    bias: np.ndarray            # int32 [out]
    requant: tuple | None       # one numfmt.Requantizer per output column
    acc_scale: np.ndarray       # float64 [out]: real value of one accumulator unit (measurement only)

    def run(self, x):
        acc = linear_acc(x, self.weight, self.bias)
        return acc, (acc if self.requant is None else requantize_columns(acc, self.requant))


@dataclass(frozen=True)
class IntLayerNorm:
    gamma: np.ndarray           # int16 [D]: gamma * sqrt(D) / s_g
    beta: np.ndarray            # int32 [D]: beta * 2**LN_FRAC_BITS / s_g
    requant: Requantizer        # s_g * 2**-LN_FRAC_BITS / s_out, int8 out
    eps: int                    # round(eps * D**3 / s_in**2): LayerNorm's eps in units of sum c**2

    def run(self, x, internals: bool = False):
        return layernorm(x, self.gamma, self.beta, self.requant, self.eps, internals=internals)


@dataclass(frozen=True)
class IntAdd:
    """Residual add: ``sat(a_rq(a) + b_rq(b), out)``; the requantizers saturate only at ``out`` + 2 bits, so an
    operand beyond the output's range that the other one brings back (a branch cancelling the residual) is kept."""

    a_rq: Requantizer
    b_rq: Requantizer
    out: IntFormat

    def run(self, a, b):
        return residual_add(a, self.a_rq, b, self.b_rq, self.out)


@dataclass(frozen=True)
class IntGelu:
    """i-GELU constants ``T``, ``C`` and the requantizer of ``q (L + C)`` to int8."""

    t: int
    c: int
    requant: Requantizer

    def run(self, q):
        g = gelu(q, self.t, self.c)
        return g, self.requant(g)


@dataclass(frozen=True)
class IntHead:
    """One attention head: requantizers and the mask in the accelerator's form."""

    params: HeadParams
    n_global: int
    csr: object                 # attnforge.formats.csr.CSR, columns in polarized positions
    order: np.ndarray           # int [N]: polarized key order


@dataclass(frozen=True)
class IntBlock:
    norm1: IntLayerNorm
    qkv: IntLinear              # int8 out; columns [3, H, d] as timm
    heads: tuple                # IntHead per head
    proj: IntLinear             # int8 out
    add1: IntAdd
    norm2: IntLayerNorm
    fc1: IntLinear              # int16 out
    gelu: IntGelu
    fc2: IntLinear              # int8 out
    add2: IntAdd


@dataclass(frozen=True)
class IntViT:
    """The integer-only ViT: integer constants only, plus the real scales (for dequantization in measurements)."""

    config: dict                # ViTConfig.to_dict()
    img_scale: float            # the host's input quantization: x_q = clip(round(x / img_scale), -127, 127)
    patch: IntLinear            # stream format out (int16, or int8 with stream_bits=8)
    pos: np.ndarray             # [N, D] in the stream format: (cls_token at row 0) + pos_embed, in stream units
    blocks: tuple
    norm: IntLayerNorm
    head: IntLinear             # raw int32 logits
    scales: dict = field(default_factory=dict)   # tensor name -> real scale (float or per-head/column array)


# ------------------------------------------------------------------------------------------ quantizers

def _absmax(x: np.ndarray, axis, percentile: float | None) -> np.ndarray:
    a = np.abs(x)
    if percentile is None:
        return a.max(axis=axis)
    if axis is None:
        return np.percentile(a, percentile)
    keep = [i for i in range(a.ndim) if i not in axis]
    flat = np.moveaxis(a, keep, list(range(len(keep)))).reshape(*[a.shape[i] for i in keep], -1)
    return np.percentile(flat, percentile, axis=-1)


def _scale(absmax, fmt: IntFormat, headroom: float = 1.0):
    s = np.asarray(absmax, np.float64) * headroom / fmt.max
    return np.where(s > 0, s, 1.0 / fmt.max)


def _quantize_linear(name: str, w, b, in_scale, out_scale, *, per_channel: bool, out_fmt: IntFormat | None):
    """``IntLinear`` from float ``w [out, in]``, ``b [out]``; ``in_scale`` scalar or ``[in]`` (folded into ``w``)."""
    w = np.asarray(w, np.float64)
    b = np.zeros(w.shape[0]) if b is None else np.asarray(b, np.float64)
    w_eff = w * np.broadcast_to(np.asarray(in_scale, np.float64), (w.shape[1],))[None, :]
    peak = np.abs(w_eff).max(axis=1) if per_channel else np.full(w.shape[0], np.abs(w_eff).max())
    s_w = np.where(peak > 0, peak / INT8.max, 1.0)
    wq = np.clip(np.rint(w_eff / s_w[:, None]), -INT8.max, INT8.max).astype(np.int8)
    bq = np.rint(b / s_w)
    bound = np.abs(wq.astype(np.int64)).sum(1) * (-INT8.min) + np.abs(bq)
    if bound.max() > INT32.max:
        o = int(bound.argmax())
        raise ConfigError(f"{name}: output column {o} could reach {int(bound[o])} in its accumulator, beyond int32 "
                          f"(bias {b[o]:.4g} in accumulator units {s_w[o]:.4g} is {int(bq[o])})")
    rqs = None
    if out_fmt is not None:
        out_scale = np.broadcast_to(np.asarray(out_scale, np.float64), (w.shape[0],))
        rqs = tuple(requantizer_for(float(s_w[o] / out_scale[o]), (-int(max(bound[o], 1)), int(max(bound[o], 1))),
                                    out=out_fmt, what=f"{name} output column {o} requantizer")
                    for o in range(w.shape[0]))
    return IntLinear(wq, bq.astype(np.int32), rqs, s_w)


def _quantize_layernorm(name: str, ln: torch.nn.LayerNorm, in_scale: float, out_scale: float) -> IntLayerNorm:
    d = ln.normalized_shape[0]
    check_layernorm_width(d)
    g_real = ln.weight.detach().double().numpy() * math.sqrt(d)
    beta = ln.bias.detach().double().numpy()
    s_g = max(np.abs(g_real).max(), 1e-12) / INT16.max
    g = np.clip(np.rint(g_real / s_g), -INT16.max, INT16.max).astype(np.int16)
    b = np.rint(beta * (1 << LN_FRAC_BITS) / s_g)
    bound = (1 << LN_FRAC_BITS) * INT16.max + np.abs(b).max()
    if bound > INT32.max:
        raise ConfigError(f"{name}: beta up to {np.abs(beta).max():.4g} against gamma*sqrt(D) up to "
                          f"{np.abs(g_real).max():.4g} needs {int(bound)} in the int32 accumulator")
    rq = requantizer_for(s_g / (1 << LN_FRAC_BITS) / out_scale, (-int(bound), int(bound)), out=INT8,
                         what=f"{name} output requantizer")
    eps = round(ln.eps * d ** 3 / in_scale ** 2)
    if eps >= 1 << (ISQRT_INPUT_BITS - 1):
        raise ConfigError(f"{name}: eps {ln.eps:.3g} is {eps} in units of the variance sum at input scale "
                          f"{in_scale:.4g}, beyond 2**{ISQRT_INPUT_BITS - 1}")
    return IntLayerNorm(g, b.astype(np.int32), rq, eps)


def _quantize_add(name: str, a_scale: float, b_scale: float, b_fmt: IntFormat, out_scale: float,
                  stream: IntFormat) -> IntAdd:
    wide = IntFormat(stream.width + 2)
    return IntAdd(requantizer_for(a_scale / out_scale, stream, out=wide, what=f"{name} residual requantizer"),
                  requantizer_for(b_scale / out_scale, b_fmt, out=wide, what=f"{name} branch requantizer"), stream)


def _quantize_gelu(name: str, in_scale: float, out_scale: float) -> IntGelu:
    t, c, g_scale = gelu_constants(in_scale)
    bound = (-INT16.min) * 2 * c
    return IntGelu(t, c, requantizer_for(g_scale / out_scale, (-bound, bound), out=INT8,
                                         what=f"{name} output requantizer"))


# ------------------------------------------------------------------------------------------ float reference

def dense_masks(model: VisionTransformer) -> MaskSet:
    """Masks that keep everything (every key global): the integer model of an unmasked ViT."""
    cfg = model.cfg
    n = cfg.num_tokens
    return MaskSet(np.ones((cfg.depth, cfg.num_heads, n, n), bool),
                   np.tile(np.arange(n, dtype=np.int32), (cfg.depth, cfg.num_heads, 1)),
                   np.full((cfg.depth, cfg.num_heads), n, np.int32), {"dense": True})


def _check_masks(model: VisionTransformer, masks: MaskSet, source: str = "masks") -> None:
    if not isinstance(masks, MaskSet):
        raise TypeError(f"masks must be an attnforge.formats.masks.MaskSet, not {type(masks).__name__}")
    cfg = model.cfg
    want = (cfg.depth, cfg.num_heads, cfg.num_tokens, cfg.num_tokens)
    if masks.keep.shape != want:
        raise ArtifactError(f"{source}: keep has shape {masks.keep.shape}, the model needs {want} "
                            f"(layers, heads, tokens, tokens)")
    empty = ~masks.keep.any(-1)
    if empty.any():
        l, h, r = np.argwhere(empty)[0]
        raise ArtifactError(f"{source}: layer {l} head {h} keeps no key in query row {r}; every row needs one")


@torch.no_grad()
def float_trace(model: VisionTransformer, images: torch.Tensor, masks: MaskSet) -> dict:
    """The float model's tensors under ``masks``, named as ``trace_image``'s (float64 numpy)."""
    if any(a.qk_ae is not None for a in model.attentions):
        raise ConfigError("the integer ViT has no Q/K auto-encoder; use a checkpoint without one")
    _check_masks(model, masks)
    model.eval()
    keep = torch.from_numpy(masks.keep)
    t = {"input": images}
    x = model.embed(images)
    t["embed"] = x
    B, N, D = x.shape
    for l, blk in enumerate(model.blocks):
        p = f"blocks.{l}."
        a = blk.norm1(x)
        q, k, v = blk.attn.project(a)
        s = (q * blk.attn.scale) @ k.transpose(-2, -1)
        o = s.masked_fill(~keep[l], float("-inf")).softmax(-1) @ v
        pr = blk.attn.proj(o.transpose(1, 2).reshape(B, N, D))
        x = x + pr
        t.update({p + "norm1": a, p + "q": q, p + "k": k, p + "v": v, p + "attn": o, p + "proj": pr, p + "add1": x})
        a = blk.norm2(x)
        h = blk.mlp.fc1(a)
        g = blk.mlp.act(h)
        f = blk.mlp.fc2(g)
        x = x + f
        t.update({p + "norm2": a, p + "fc1": h, p + "gelu": g, p + "fc2": f, p + "add2": x})
    n = model.norm(x)[:, 0]
    t["norm"] = n
    t["logits"] = model.head(n)
    return {k: v.double().numpy() for k, v in t.items()}


# ------------------------------------------------------------------------------------------ compiling

def calibration_images(dataset, count: int, seed: int) -> torch.Tensor:
    """``count`` images of ``dataset`` drawn without replacement by ``seed`` (all of them if fewer)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"calibration image count must be a positive integer, not {count!r}")
    idx = np.random.default_rng(seed).permutation(len(dataset))[:count]
    return torch.stack([dataset[int(i)][0] for i in idx])


def compile_int_vit(model: VisionTransformer, masks: MaskSet, calib: torch.Tensor, *,
                    percentile: float | None = None, per_channel: bool = True, stream_bits: int = 16) -> IntViT:
    """The integer-only model of ``model`` under ``masks``, its scales calibrated on the images ``calib``.

    ``percentile`` (e.g. 99.99) takes that percentile of ``|x|`` instead of the maximum for the int8
    activations (int16 tensors always take the maximum); ``per_channel`` gives every output channel
    of a matmul its own weight scale (the classifier always has one); ``stream_bits`` is the width of
    the residual stream (and the patch embedding's output): 16 (scales with ``INT16_HEADROOM``) or 8
    (``max|x| / 127``, no headroom).
    """
    if stream_bits not in (8, 16):
        raise ConfigError(f"the residual stream must be 8 or 16 bits wide, not {stream_bits!r}")
    sfmt = IntFormat(stream_bits)
    if percentile is not None and not (isinstance(percentile, (int, float)) and 50 <= percentile <= 100):
        raise ConfigError(f"calibration percentile must be a number in [50, 100], not {percentile!r}")
    t = float_trace(model, calib, masks)
    cfg = model.cfg
    H, D = cfg.num_heads, cfg.embed_dim
    pc = per_channel
    s8 = lambda name, axis=None: _scale(_absmax(t[name], axis, percentile), INT8)   # noqa: E731
    s16 = lambda name: float(_scale(np.abs(t[name]).max(), INT16, INT16_HEADROOM))  # noqa: E731
    s_stream = s16 if stream_bits == 16 else (lambda name: float(s8(name)))      # noqa: E731
    sc = {"input": float(s8("input")), "embed": s_stream("embed")}

    conv = model.patch_embed.proj
    patch = _quantize_linear("patch_embed", conv.weight.detach().reshape(D, -1).numpy(), conv.bias.detach().numpy(),
                             sc["input"], sc["embed"], per_channel=pc, out_fmt=sfmt)
    pos = model.pos_embed.detach()[0].double().numpy().copy()
    pos[0] += model.cls_token.detach()[0, 0].double().numpy()
    pos_q = np.rint(pos / sc["embed"])
    if np.abs(pos_q).max() > sfmt.max:
        raise ConfigError(f"pos_embed + cls_token reach {np.abs(pos).max():.4g}, beyond the {sfmt} stream "
                          f"(scale {sc['embed']:.4g}) calibrated on these images")

    blocks, stream = [], sc["embed"]
    for l, blk in enumerate(model.blocks):
        p = f"blocks.{l}."
        for name in ("norm1", "proj", "norm2", "gelu", "fc2"):
            sc[p + name] = float(s8(p + name))
        for name in ("q", "k", "v", "attn"):
            sc[p + name] = np.asarray(s8(p + name, (0, 2, 3)), np.float64)          # per head
        sc[p + "add1"], sc[p + "add2"], sc[p + "fc1"] = s_stream(p + "add1"), s_stream(p + "add2"), s16(p + "fc1")
        d = cfg.head_dim
        qkv_out = np.concatenate([np.repeat(sc[p + n], d) for n in ("q", "k", "v")])
        attn = blk.attn
        heads = []
        for h in range(H):
            g, csr = head_csr(masks, l, h)
            try:
                params = head_params(float(sc[p + "q"][h]), float(sc[p + "k"][h]), float(sc[p + "v"][h]),
                                     float(sc[p + "attn"][h]), d)
            except ConfigError as exc:
                raise ConfigError(f"layer {l} head {h}: {exc}") from None
            heads.append(IntHead(params, g, csr, masks.order[l, h].astype(np.int64)))
        blocks.append(IntBlock(
            norm1=_quantize_layernorm(p + "norm1", blk.norm1, stream, sc[p + "norm1"]),
            qkv=_quantize_linear(p + "qkv", attn.qkv.weight.detach().numpy(),
                                 None if attn.qkv.bias is None else attn.qkv.bias.detach().numpy(),
                                 sc[p + "norm1"], qkv_out, per_channel=pc, out_fmt=INT8),
            heads=tuple(heads),
            proj=_quantize_linear(p + "proj", attn.proj.weight.detach().numpy(), attn.proj.bias.detach().numpy(),
                                  np.repeat(sc[p + "attn"], d), sc[p + "proj"], per_channel=pc, out_fmt=INT8),
            add1=_quantize_add(p + "add1", stream, sc[p + "proj"], INT8, sc[p + "add1"], sfmt),
            norm2=_quantize_layernorm(p + "norm2", blk.norm2, sc[p + "add1"], sc[p + "norm2"]),
            fc1=_quantize_linear(p + "fc1", blk.mlp.fc1.weight.detach().numpy(), blk.mlp.fc1.bias.detach().numpy(),
                                 sc[p + "norm2"], sc[p + "fc1"], per_channel=pc, out_fmt=INT16),
            gelu=_quantize_gelu(p + "gelu", sc[p + "fc1"], sc[p + "gelu"]),
            fc2=_quantize_linear(p + "fc2", blk.mlp.fc2.weight.detach().numpy(), blk.mlp.fc2.bias.detach().numpy(),
                                 sc[p + "gelu"], sc[p + "fc2"], per_channel=pc, out_fmt=INT8),
            add2=_quantize_add(p + "add2", sc[p + "add1"], sc[p + "fc2"], INT8, sc[p + "add2"], sfmt)))
        stream = sc[p + "add2"]
    sc["norm"] = float(s8("norm"))
    norm = _quantize_layernorm("norm", model.norm, stream, sc["norm"])
    head = _quantize_linear("head", model.head.weight.detach().numpy(), model.head.bias.detach().numpy(),
                            sc["norm"], None, per_channel=False, out_fmt=None)
    sc["logits"] = float(head.acc_scale[0])
    return IntViT(cfg.to_dict(), sc["input"], patch, pos_q.astype(np.int64), tuple(blocks), norm, head, sc)


# ------------------------------------------------------------------------------------------ running

def quantize_image(qm: IntViT, images) -> np.ndarray:
    """The host's input rule: int8 ``clip(round(x / img_scale), -127, 127)`` of float images ``[B, C, S, S]``."""
    x = images.double().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float64)
    c, s = qm.config["in_chans"], qm.config["img_size"]
    if x.ndim != 4 or x.shape[1:] != (c, s, s):
        raise ConfigError(f"images must be [B, {c}, {s}, {s}], got shape {x.shape}")
    return np.clip(np.rint(x / qm.img_scale), -INT8.max, INT8.max).astype(np.int8)


def _patches(xq: np.ndarray, patch: int) -> np.ndarray:
    """im2col of the patch convolution: ``[B, g*g, C*p*p]`` in the conv weight's (C, kh, kw) order."""
    B, C, S, _ = xq.shape
    g = S // patch
    return xq.reshape(B, C, g, patch, g, patch).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * patch * patch)


def _attention(blk: IntBlock, q, k, v, trace: dict | None, prefix: str) -> np.ndarray:
    """Every head of every image through the ViTCoD head golden model: int8 ``[B, H, N, d]``."""
    B, H = q.shape[:2]
    out = np.empty_like(q)
    for b in range(B):
        for h, head in enumerate(blk.heads):
            kk, vv = k[b, h][head.order], v[b, h][head.order]
            if trace is not None and b == 0:
                out[b, h], inner = vitcod_head_golden(q[b, h], kk, vv, head.n_global, head.csr, head.params,
                                                      internals=True)
                for key, val in inner.items():
                    trace[f"{prefix}head{h}.{key}"] = val
            else:
                out[b, h] = vitcod_head_golden(q[b, h], kk, vv, head.n_global, head.csr, head.params)
    return out


def _layernorm(ln: IntLayerNorm, x, trace: dict | None, name: str):
    """``ln`` on ``x``; with a trace also its statistics under ``name.{sum, c, var, sigma, recip, n, acc}``."""
    if trace is None:
        return ln.run(x)
    y, inner = ln.run(x, internals=True)
    for key, val in inner.items():
        trace[f"{name}.{key}"] = val
    return y


def int_forward(qm: IntViT, xq, trace: dict | None = None) -> np.ndarray:
    """int32 logits ``[B, classes]`` of int8 images ``xq [B, C, S, S]``; integer arithmetic only.

    With a dict ``trace``, every intermediate integer tensor is stored in it (the attention heads'
    softmax internals for the first image only).
    """
    xq = np.asarray(xq)
    if xq.dtype != np.int8 or xq.ndim != 4:
        raise ConfigError(f"int_forward takes int8 images [B, C, S, S], got {xq.dtype} shape {xq.shape}")
    rec = (lambda k, v: trace.__setitem__(k, v)) if trace is not None else (lambda k, v: None)
    cfg = qm.config
    H, D = cfg["num_heads"], cfg["embed_dim"]
    d = D // H
    rec("input", xq)
    acc, e = qm.patch.run(_patches(xq, cfg["patch_size"]))
    B = e.shape[0]
    x = saturate(np.concatenate([np.zeros((B, 1, D), np.int64), e], 1) + qm.pos.astype(np.int64),
                 qm.patch.requant[0].out)
    rec("patch.acc", acc), rec("patch", e), rec("embed", x)
    N = x.shape[1]
    for l, blk in enumerate(qm.blocks):
        p = f"blocks.{l}."
        a = _layernorm(blk.norm1, x, trace, p + "norm1")
        acc, qkv = blk.qkv.run(a)
        q, k, v = qkv.reshape(B, N, 3, H, d).transpose(2, 0, 3, 1, 4)
        o = _attention(blk, q, k, v, trace, p)
        acc_p, pr = blk.proj.run(o.transpose(0, 2, 1, 3).reshape(B, N, D))
        x = blk.add1.run(x, pr)
        for key, val in (("norm1", a), ("qkv.acc", acc), ("q", q), ("k", k), ("v", v), ("attn", o),
                         ("proj.acc", acc_p), ("proj", pr), ("add1", x)):
            rec(p + key, val)
        a = _layernorm(blk.norm2, x, trace, p + "norm2")
        acc1, h1 = blk.fc1.run(a)
        graw, g = blk.gelu.run(h1)
        acc2, f2 = blk.fc2.run(g)
        x = blk.add2.run(x, f2)
        for key, val in (("norm2", a), ("fc1.acc", acc1), ("fc1", h1), ("gelu.poly", graw), ("gelu", g),
                         ("fc2.acc", acc2), ("fc2", f2), ("add2", x)):
            rec(p + key, val)
    n = _layernorm(qm.norm, x[:, 0], trace, "norm")
    logits, _ = qm.head.run(n)
    rec("norm", n), rec("logits", logits)
    return logits


def trace_image(qm: IntViT, image) -> dict:
    """Every intermediate integer tensor of one float image ``[C, S, S]`` (batch axis 1), in forward order.

    Keys: ``input``, ``patch.acc``, ``patch``, ``embed``; per layer ``blocks.L.{norm1, qkv.acc, q, k, v,
    headH.{scores, keep, row_max, e, row_sum, recip, p, acc}, attn, proj.acc, proj, add1, norm2, fc1.acc,
    fc1, gelu.poly, gelu, fc2.acc, fc2, add2}``; ``norm``, ``logits``; and each LayerNorm's statistics
    ``<name>.{sum, c, var, sigma, recip, n, acc}`` (``int_ops.layernorm_stats``). Integer numpy arrays only.
    """
    image = torch.as_tensor(image)
    if image.dim() != 3:
        raise ConfigError(f"trace_image takes one image [C, S, S], got shape {tuple(image.shape)}")
    trace: dict = {}
    int_forward(qm, quantize_image(qm, image[None]), trace)
    return trace


# ------------------------------------------------------------------------------------------ measuring

@torch.no_grad()
def evaluate_int(qm: IntViT, model: VisionTransformer, dataset, batch_size: int = 128) -> dict:
    """Float and integer accuracy (%) on ``dataset`` and their prediction agreement (%). ``model`` has its masks set."""
    model.eval()
    fc = ic = agree = n = 0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([it[0] for it in items])
        y = np.array([int(it[1]) for it in items])
        fp = model(x).argmax(-1).numpy()
        ip = int_forward(qm, quantize_image(qm, x)).argmax(-1)
        fc += int((fp == y).sum())
        ic += int((ip == y).sum())
        agree += int((fp == ip).sum())
        n += len(y)
    return {"float_accuracy": 100.0 * fc / n, "int_accuracy": 100.0 * ic / n, "agreement": 100.0 * agree / n,
            "n": n}


def _err(ref: np.ndarray, got_int: np.ndarray, scale, fmt: IntFormat = INT8) -> np.ndarray:
    """|dequantized integer output - float reference| in int8 LSBs of the output's range: ``scale`` for
    an int8 output, ``scale * 32767 / 127`` (full scale / 127) for an int16 one. NaN where the reference
    lies beyond the output format (saturation, counted apart by ``op_errors``)."""
    scale = np.broadcast_to(np.asarray(scale, np.float64), ref.shape)
    lsb = scale * (fmt.max / INT8.max)
    err = np.abs(got_int.astype(np.float64) * scale - ref) / lsb
    return np.where(np.abs(ref / scale) <= fmt.max + 0.5, err, np.nan)


def _gelu_float(x: np.ndarray) -> np.ndarray:
    return F.gelu(torch.from_numpy(x)).numpy()


def _layernorm_float(x: np.ndarray, ln) -> np.ndarray:
    return F.layer_norm(torch.from_numpy(x), ln.normalized_shape, ln.weight.detach().double(),
                        ln.bias.detach().double(), ln.eps).numpy()


def op_errors(qm: IntViT, model: VisionTransformer, images: torch.Tensor, masks: MaskSet) -> dict:
    """Each integer op against its float op **on the same (dequantized) integer inputs**, in int8 LSBs of
    the op's output (for the int16 outputs, full scale / 127: see ``_err``).

    Returns ``{op: {"max": ..., "mean": ..., "saturated": ...}}`` over every layer for ``matmul`` (qkv, proj, fc1, fc2,
    patch embedding, in the LSBs of their requantized output; max and mean over the outputs whose float
    value lies inside the output format, ``saturated`` the share of those beyond it), ``layernorm``, ``gelu``, ``attention``
    (softmax attention of one head on its int8 q, k, v, masked), ``add``; and ``logits``: the whole
    model's int32 logits against the float model's (under ``masks``, the ones ``qm`` was compiled
    with), relative to the float logits' range; ``max_by_tensor``: the largest error of each op's output tensor.
    """
    tr: dict = {}
    logits = int_forward(qm, quantize_image(qm, images), tr)
    sc = qm.scales
    errs: dict = {k: [] for k in ("matmul", "layernorm", "gelu", "attention", "add")}
    by_tensor: dict = {}

    def add(op, name, e):
        errs[op].append(e)
        by_tensor[name] = max(by_tensor.get(name, 0.0), float(np.nanmax(e, initial=0.0)))

    def deq(name, scale):
        return tr[name].astype(np.float64) * np.asarray(scale, np.float64)

    def lin(mod, x, bias=True):
        w = mod.weight.detach().double().numpy()
        y = x @ w.reshape(w.shape[0], -1).T
        return y + mod.bias.detach().double().numpy() if bias and mod.bias is not None else y

    x_in = tr["input"].astype(np.float64) * sc["input"]
    patches = _patches(x_in, qm.config["patch_size"])
    sfmt = qm.patch.requant[0].out
    add("matmul", "patch", _err(lin(model.patch_embed.proj, patches), tr["patch"], sc["embed"], sfmt))
    cfg = model.cfg
    H, N, d = cfg.num_heads, cfg.num_tokens, cfg.head_dim
    stream = "embed"
    for l, blk in enumerate(model.blocks):
        p = f"blocks.{l}."
        ib = qm.blocks[l]
        add("layernorm", p + "norm1", _err(_layernorm_float(deq(stream, sc[stream]), blk.norm1), tr[p + "norm1"],
                                      sc[p + "norm1"]))
        qkv = lin(blk.attn.qkv, deq(p + "norm1", sc[p + "norm1"]))
        B = qkv.shape[0]
        ref = qkv.reshape(B, N, 3, H, d).transpose(2, 0, 3, 1, 4)
        for j, name in enumerate(("q", "k", "v")):
            add("matmul", p + name, _err(ref[j], tr[p + name], sc[p + name][None, :, None, None]))
        for b in range(B):
            for h, head in enumerate(ib.heads):
                keep = np.zeros((N, N), bool)
                keep[:, :head.n_global] = True
                rows = np.repeat(np.arange(N), np.diff(head.csr.row_ptr))
                keep[rows, head.csr.col_idx] = True
                o = vitcod_head_float(tr[p + "q"][b, h], tr[p + "k"][b, h][head.order], tr[p + "v"][b, h][head.order],
                                      keep, sc[p + "q"][h], sc[p + "k"][h], sc[p + "v"][h])
                add("attention", p + "attn", _err(o, tr[p + "attn"][b, h], sc[p + "attn"][h]))
        o_real = deq(p + "attn", sc[p + "attn"][None, :, None, None]).transpose(0, 2, 1, 3).reshape(B, N, -1)
        add("matmul", p + "proj", _err(lin(blk.attn.proj, o_real), tr[p + "proj"], sc[p + "proj"]))
        add("add", p + "add1", _err(deq(stream, sc[stream]) + deq(p + "proj", sc[p + "proj"]), tr[p + "add1"],
                                sc[p + "add1"], sfmt))
        add("layernorm", p + "norm2", _err(_layernorm_float(deq(p + "add1", sc[p + "add1"]), blk.norm2),
                                      tr[p + "norm2"], sc[p + "norm2"]))
        add("matmul", p + "fc1", _err(lin(blk.mlp.fc1, deq(p + "norm2", sc[p + "norm2"])), tr[p + "fc1"],
                                   sc[p + "fc1"], INT16))
        add("gelu", p + "gelu", _err(_gelu_float(deq(p + "fc1", sc[p + "fc1"])), tr[p + "gelu"], sc[p + "gelu"]))
        add("matmul", p + "fc2", _err(lin(blk.mlp.fc2, deq(p + "gelu", sc[p + "gelu"])), tr[p + "fc2"],
                                   sc[p + "fc2"]))
        add("add", p + "add2", _err(deq(p + "add1", sc[p + "add1"]) + deq(p + "fc2", sc[p + "fc2"]), tr[p + "add2"],
                                sc[p + "add2"], sfmt))
        stream = p + "add2"
    add("layernorm", "norm", _err(_layernorm_float(deq(stream, sc[stream])[:, 0], model.norm), tr["norm"],
                                  sc["norm"]))
    out = {}
    for k, v in errs.items():
        flat = np.concatenate([e.ravel() for e in v])
        ok = flat[~np.isnan(flat)]
        out[k] = {"max": float(ok.max(initial=0.0)), "mean": float(ok.mean()) if ok.size else 0.0,
                  "saturated": float(np.isnan(flat).mean())}
    ref = float_trace(model, images, masks)["logits"]
    span = max(float(ref.max() - ref.min()), 1e-12)
    out["logits"] = {"max_rel": float(np.abs(logits * sc["logits"] - ref).max() / span)}
    out["max_by_tensor"] = by_tensor
    return out



# ------------------------------------------------------------------------------------------ the job

def run_int_eval(checkpoint, masks_path, *, data: str = "digits", seed: int = 0, calib_count: int = 256,
                 percentile: float | None = None, per_channel: bool = True, op_images: int = 16,
                 val_images: int | None = None, stream_bits: int = 16) -> dict:
    """``attnforge vitcod int-eval``: compile the integer model of ``checkpoint`` under the masks file
    ``masks_path`` (calibrated on ``calib_count`` training images drawn by ``seed``), and report float
    accuracy, integer accuracy and agreement on the validation split, and ``op_errors`` on the first
    ``op_images`` validation images. ``val_images`` evaluates the first that many validation images only.
    """
    from pathlib import Path

    from attnforge.errors import MissingArtifactError, check_int
    from attnforge.formats.masks import load_masks

    from .prepare import prepare

    check_int("--seed", seed, 0)
    check_int("--calib-images", calib_count, 1)
    check_int("--op-images", op_images, 0)
    for flag, path in (("--checkpoint", checkpoint), ("--masks", masks_path)):
        if not Path(path).is_file():
            raise MissingArtifactError(f"{flag} {path} does not exist")
    masks = load_masks(masks_path)
    torch.manual_seed(seed)
    model, train_set, val_set = prepare(checkpoint, data=data, seed=seed)
    _check_masks(model, masks, f"--masks {masks_path}")
    model.set_masks(torch.from_numpy(masks.keep))
    if val_images is not None:
        if isinstance(val_images, bool) or not isinstance(val_images, int) or val_images < 1:
            raise ConfigError(f"--val-images must be a positive integer, not {val_images!r}")
        val_set = torch.utils.data.Subset(val_set, range(min(val_images, len(val_set))))
    qm = compile_int_vit(model, masks, calibration_images(train_set, calib_count, seed),
                         percentile=percentile, per_channel=per_channel, stream_bits=stream_bits)
    report = {"checkpoint": str(checkpoint), "masks": str(masks_path), "data": data, "seed": seed,
              "calibration_images": min(calib_count, len(train_set)), "percentile": percentile,
              "per_channel": per_channel, "stream_bits": stream_bits, "sparsity": masks.sparsity(), **evaluate_int(qm, model, val_set)}
    report["accuracy_drop"] = report["float_accuracy"] - report["int_accuracy"]
    if op_images:
        x = torch.stack([val_set[i][0] for i in range(min(op_images, len(val_set)))])
        report["op_errors"] = op_errors(qm, model, x, masks)
    return report
