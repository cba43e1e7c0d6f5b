"""One head of a trained linearized LM, as the decode datapath takes it: int8 q, k, v, taps and two scales.

The decode datapath (``hw/linear``) computes the **hardware variant** of the
augmented linear attention: the ReLU feature map over *all* tokens so far
(``relu_norm``: normalized, as ``ReLUAttention`` trains by default; ``relu``:
unnormalized, ``variant_kwargs={"normalize": False}``) plus the causal depthwise
convolution over v. A checkpoint trained with ``attention="relu"``, ``augment=True``
and ``chunk=0`` (no chunk-local softmax term) computes exactly that in float;
``check_hardware_variant`` refuses any other, naming what differs.

``capture_head`` runs the model on a token window and takes one head's q, k, v
(after the QKV projection), its conv taps and the float output of that head's
attention (the model's own core, with its ``EPS`` in the normalizer).
``quantize_head`` maps them to the datapath's integers:

* q, k, v, taps: symmetric int8 per tensor, ``scale = max|x| / 127``
  (``golden.quantize_int8``);
* the output: int8 with ``out_scale = max|float output| / 127``;
* ``attn_scale`` (accumulator unit -> output unit): ``relu_norm``: the quotient
  is a weighted mean of v with ``DIV_FRAC_BITS`` fraction bits, so
  ``s_v / 2**DIV_FRAC_BITS / out_scale`` (the q and k scales cancel);
  ``relu``: the numerator is in ``s_q s_k s_v`` units, so ``s_q s_k s_v / out_scale``;
* ``conv_scale``: ``s_taps s_v / out_scale``.

The integer golden model (``golden.LinearDecodeGolden``) then runs the int8
tokens; ``error`` compares its dequantized output with the float output
(max and RMS error in output LSBs and relative to the float output's RMS).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attnforge.algo.linear.golden import LinearDecodeGolden, quantize_int8
from attnforge.errors import ConfigError, check_int
from attnforge.linear_format import DIV_FRAC_BITS, LinearDecodeFormat

__all__ = ["check_hardware_variant", "feature_map_of", "capture_head", "quantize_head", "golden_error",
           "export_head", "held_out_window"]


def feature_map_of(cfg) -> str:
    """``relu_norm`` or ``relu``: the datapath's feature map that the model's ReLU attention computes."""
    return "relu" if (cfg.variant_kwargs or {}).get("normalize", True) is False else "relu_norm"


def check_hardware_variant(cfg, source: str = "checkpoint") -> None:
    """Refuse a model whose attention the decode datapath does not compute (``ConfigError`` naming the field)."""
    problems = []
    if cfg.attention != "relu":
        problems.append(f"attention={cfg.attention!r} (the datapath's feature map is ReLU: 'relu')")
    if not cfg.augment:
        problems.append("augment=False (the datapath adds the causal depthwise conv: train with --augment)")
    elif cfg.chunk != 0:
        problems.append(f"chunk={cfg.chunk} (the datapath has no chunk-local softmax term: chunk=0)")
    extra = set(cfg.variant_kwargs or {}) - {"normalize"}
    if extra:
        problems.append(f"variant_kwargs {sorted(extra)} (only 'normalize' is known to the datapath)")
    if problems:
        raise ConfigError(f"{source}: not the decode datapath's variant (relu feature map + causal conv, "
                          f"chunk 0): " + "; ".join(problems))


@torch.no_grad()
def capture_head(model, tokens, layer: int, head: int) -> dict:
    """Float64 ``q, k, v`` ``[T, hd]``, ``taps`` ``[K, hd]`` (``taps[m]`` on ``v[t - m]``; one zero tap when
    the model has no conv) and ``out`` ``[T, hd]`` (the head's attention output) of ``tokens`` ``[T]``."""
    cfg = model.cfg
    check_int("layer", layer, 0, cfg.n_layer - 1)
    check_int("head", head, 0, cfg.n_head - 1)
    idx = torch.as_tensor(tokens, dtype=torch.long).reshape(1, -1)
    if not 1 <= idx.shape[1] <= cfg.block_size:
        raise ConfigError(f"tokens: {idx.shape[1]} tokens; the model takes 1..{cfg.block_size} (its block size)")
    seen = {}
    attn = model.blocks[layer].attn
    hook = attn.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    was = model.training
    model.eval()
    try:
        model(idx)
    finally:
        hook.remove()
        model.train(was)
    q, k, v = attn._qkv(seen["x"])
    out = attn.core.parallel(q, k, v) if attn.core.causal else None
    if out is None:
        raise ConfigError(f"layer {layer}: the attention core is not causal by construction")
    conv = getattr(attn.core, "conv", None)
    taps = (conv.weight[head].T if conv is not None else torch.zeros(1, attn.head_dim))   # [K, hd]
    as64 = lambda t: t.detach().double().numpy()  # noqa: E731
    return {"q": as64(q[0, head]), "k": as64(k[0, head]), "v": as64(v[0, head]), "taps": as64(taps),
            "out": as64(out[0, head])}


def _scale(name: str, x: np.ndarray) -> float:
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if not np.isfinite(m):
        raise ConfigError(f"{name}: the float values are not finite (max |x| = {m})")
    return m / 127.0 if m > 0 else 1.0


def quantize_head(cap: dict, feature_map: str) -> dict:
    """The int8 tensors and the two scales of ``cap`` (module docstring), plus every scale used."""
    if feature_map not in ("relu", "relu_norm"):
        raise ConfigError(f"feature_map must be 'relu' or 'relu_norm', not {feature_map!r}")
    scales = {name: _scale(name, cap[name]) for name in ("q", "k", "v", "taps", "out")}
    ints = {name: quantize_int8(cap[name], scales[name]) for name in ("q", "k", "v", "taps")}
    if feature_map == "relu_norm":
        attn_scale = scales["v"] / (1 << DIV_FRAC_BITS) / scales["out"]
    else:
        attn_scale = scales["q"] * scales["k"] * scales["v"] / scales["out"]
    return {**ints, "attn_scale": attn_scale, "conv_scale": scales["taps"] * scales["v"] / scales["out"],
            "scales": scales}


def golden_error(cap: dict, quant: dict, fmt: LinearDecodeFormat) -> dict:
    """Run the integer golden model on ``quant``; its dequantized output against ``cap['out']``."""
    golden = LinearDecodeGolden(fmt, quant["taps"])
    out_int = golden.run(quant["q"], quant["k"], quant["v"])
    s_out = quant["scales"]["out"]
    diff = out_int * s_out - cap["out"]
    rms_float = float(np.sqrt(np.mean(cap["out"] ** 2)))
    return {"out_int": out_int, "overflow": bool(golden.overflow),
            "max_err_lsb": float(np.max(np.abs(diff)) / s_out),
            "rms_err_lsb": float(np.sqrt(np.mean(diff ** 2)) / s_out),
            "rel_rms_err": float(np.sqrt(np.mean(diff ** 2)) / rms_float) if rms_float > 0 else 0.0,
            "saturated": int(np.count_nonzero(np.abs(out_int) == 127) + np.count_nonzero(out_int == -128))}


def export_head(model, tokens, layer: int, head: int, path, *, max_tokens: int = 4096) -> dict:
    """Capture, quantize and save one head (``attnforge.linear_tensors/1``); the summary with the golden
    model's error against float. The requantizers are checked against the datapath's formats first
    (``checked_requant_params``): a scale that would zero or saturate a term is refused, nothing written."""
    from attnforge.formats.linear_tensors import save_linear_tensors

    check_hardware_variant(model.cfg)
    fm = feature_map_of(model.cfg)
    cap = capture_head(model, tokens, layer, head)
    quant = quantize_head(cap, fm)
    d, k = cap["q"].shape[1], quant["taps"].shape[0]
    base = LinearDecodeFormat(d=d, conv_taps=k, max_tokens=max_tokens, feature_map=fm)
    fmt = LinearDecodeFormat(d=d, conv_taps=k, max_tokens=max_tokens, feature_map=fm,
                             **base.checked_requant_params(quant["attn_scale"], quant["conv_scale"]))
    err = golden_error(cap, quant, fmt)
    save_linear_tensors(Path(path), q=quant["q"], k=quant["k"], v=quant["v"], taps=quant["taps"],
                        attn_scale=quant["attn_scale"], conv_scale=quant["conv_scale"])
    return {"path": str(path), "layer": layer, "head": head, "tokens": int(cap["q"].shape[0]), "d": d,
            "conv_taps": k, "feature_map": fm, "attn_scale": quant["attn_scale"],
            "conv_scale": quant["conv_scale"], "scales": quant["scales"],
            **{key: err[key] for key in ("max_err_lsb", "rms_err_lsb", "rel_rms_err", "saturated", "overflow")},
            "float_out": cap["out"], "golden_out": err["out_int"]}


def held_out_window(corpus, tokens: int):
    """The first ``tokens`` bytes of the held-out split (the same window for every model), LongTensor ``[T]``."""
    check_int("tokens", tokens, 1)
    return corpus.eval_windows(tokens, 1)[0][0]
