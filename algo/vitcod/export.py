"""Export what the accelerator consumes: per-head quantized tensors from real inputs, checked by the golden model.

For one input image, every layer's Q, K, V (after the Q/K auto-encoder when the
model has one), each head's float attention output under the model's masks,
and (with the auto-encoder) the compressed Q/K heads and decoder weights, are
quantized symmetric int8 and written in ``attnforge.vitcod_head/1``
(``attnforge.formats.head_tensors``: one writer, one validated loader):

* ``q``, ``k``, ``v``: per-head scales ``max|x| / 127``;
* ``o_scale``: per head ``max|O| / 127`` of the float head output ``O = P.V``;
* ``qc``, ``kc`` (compressed heads) and ``dec_wq``, ``dec_wk`` (decoder
  matrices ``[H, Hc]``): per-layer scales.

:func:`verify_head_tensors` runs the integer golden model
(``attnforge.algo.vitcod.golden``) on every head, in the masks' polarized
order, and reports its error against the float model's own head output (in
output LSBs, ``o_scale``). The float model here is the PyTorch ViT on the
unquantized activations, so the error includes int8 quantization of Q/K/V.
"""

from __future__ import annotations

import numpy as np
import torch

from attnforge.formats.atomic import write_json_atomic
from attnforge.formats.head_tensors import HeadTensors, decoder_heads, save_head_tensors
from attnforge.formats.masks import MaskSet, head_csr

from .golden import check_head_scales, head_inputs, vitcod_head_float, vitcod_head_golden
from .vit import VisionTransformer

__all__ = ["capture_heads", "quantize_heads", "export_head_tensors", "verify_head_tensors", "write_verification",
           "symmetric_int8"]


def symmetric_int8(x: torch.Tensor, dims) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and float32 scales ``max|x| / 127`` taken over ``dims`` (one scale per remaining index)."""
    dims = tuple(d % x.dim() for d in ((dims,) if isinstance(dims, int) else dims))
    scale = (x.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / 127.0).to(torch.float32)
    q = torch.clamp(torch.round(x / scale), -127, 127).to(torch.int8)
    return q.numpy(), scale.squeeze(dims).numpy()


@torch.no_grad()
def capture_heads(model: VisionTransformer, image: torch.Tensor) -> dict:
    """Float tensors of every layer for one image ``[C, S, S]``: q, k, v, out ``[L, H, N, d]`` (+ qc, kc).

    q and k are what the scores use (the auto-encoder's reconstruction when
    the model has one); ``out`` is ``P.V`` per head with the model's masks.
    """
    model.eval()
    if image.dim() != 3:
        raise ValueError(f"capture_heads takes one image [C, S, S], got shape {tuple(image.shape)}")
    x = model.embed(image.unsqueeze(0))
    qs, ks, vs, outs, qcs, kcs = [], [], [], [], [], []
    for block in model.blocks:
        attn = block.attn
        q, k, v = attn.project(block.norm1(x))
        if attn.qk_ae is not None:
            qc, kc = attn.qk_ae.encode(q, k)
            q, k = attn.qk_ae.decode(qc, kc)
            qcs.append(qc[0])
            kcs.append(kc[0])
        _, p = attn(block.norm1(x), return_attn=True)
        qs.append(q[0]), ks.append(k[0]), vs.append(v[0]), outs.append((p @ v)[0])
        x = block(x)
    out = {"q": torch.stack(qs), "k": torch.stack(ks), "v": torch.stack(vs), "out": torch.stack(outs)}
    if qcs:
        out |= {"qc": torch.stack(qcs), "kc": torch.stack(kcs)}
    return out


def quantize_heads(model: VisionTransformer, image: torch.Tensor, meta: dict | None = None) -> HeadTensors:
    """The ``attnforge.vitcod_head/1`` tensors of ``model`` on ``image`` (all layers and heads)."""
    t = capture_heads(model, image)
    q, q_scale = symmetric_int8(t["q"], (2, 3))
    k, k_scale = symmetric_int8(t["k"], (2, 3))
    v, v_scale = symmetric_int8(t["v"], (2, 3))
    _, o_scale = symmetric_int8(t["out"], (2, 3))
    fields = dict(q=q, k=k, v=v, q_scale=q_scale, k_scale=k_scale, v_scale=v_scale, o_scale=o_scale)
    if "qc" in t:
        L, H = q.shape[:2]
        hc = decoder_heads(H)
        ae0 = model.blocks[0].attn.qk_ae
        if ae0.hidden != hc:
            raise ValueError(f"the head-tensor format's decoder has ceil(H/2) = {hc} compressed heads, the "
                             f"model's auto-encoder has {ae0.hidden}")
        wq = torch.stack([b.attn.qk_ae.q_dec.weight for b in model.blocks])     # [L, H, Hc]
        wk = torch.stack([b.attn.qk_ae.k_dec.weight for b in model.blocks])
        qc, qc_scale = symmetric_int8(t["qc"], (1, 2, 3))
        kc, kc_scale = symmetric_int8(t["kc"], (1, 2, 3))
        dq, dq_scale = symmetric_int8(wq.detach(), (1, 2))
        dk, dk_scale = symmetric_int8(wk.detach(), (1, 2))
        fields |= dict(qc=qc, kc=kc, qc_scale=qc_scale, kc_scale=kc_scale, dec_wq=dq, dec_wk=dk,
                       dec_wq_scale=dq_scale, dec_wk_scale=dk_scale)
    return HeadTensors(**fields, meta={"quantization": "symmetric int8, per-head scales max|x|/127 "
                                                       "(compressed Q/K and decoder: per layer)",
                                       "model": model.cfg.to_dict(), **(meta or {})})


def export_head_tensors(model: VisionTransformer, image: torch.Tensor, path, meta: dict | None = None):
    """Quantize and write; returns ``(path, HeadTensors)``.

    Scales whose requantizers would lose their whole input are refused before
    anything is written (``check_head_scales``): the simulator would refuse the file.
    """
    t = quantize_heads(model, image, meta)
    check_head_scales(t, path)
    return save_head_tensors(t, path), t


def verify_head_tensors(model: VisionTransformer, image: torch.Tensor, tensors: HeadTensors, masks: MaskSet,
                        *, use_decoder: bool = False) -> list[dict]:
    """Golden model vs float on every head: max and mean |error| in output LSBs.

    ``err_float_model``: integer output against the PyTorch model's own head
    output (unquantized activations); ``err_same_inputs``: against float
    softmax attention on the same int8 inputs (the golden model's own
    approximation error only).
    """
    ref = capture_heads(model, image)["out"].double().numpy()
    L, H = tensors.layers, tensors.heads
    if masks.keep.shape[:2] != (L, H) or masks.keep.shape[2] != tensors.q.shape[2]:
        raise ValueError(f"masks of shape {masks.keep.shape} do not fit head tensors with {L} layers, {H} heads "
                         f"and {tensors.q.shape[2]} tokens")
    rows = []
    for l in range(L):
        for h in range(H):
            g, csr = head_csr(masks, l, h)
            inp = head_inputs(tensors, l, h, masks.order[l, h], use_decoder=use_decoder)
            out = vitcod_head_golden(inp["q"], inp["k"], inp["v"], g, csr, inp["params"]).astype(np.float64)
            o_scale = float(tensors.o_scale[l, h])
            keep_pol = masks.keep[l, h][:, masks.order[l, h]]
            same = vitcod_head_float(inp["q"], inp["k"], inp["v"], keep_pol, float(tensors.q_scale[l, h]),
                                     float(tensors.k_scale[l, h]), float(tensors.v_scale[l, h]))
            err_model = np.abs(out * o_scale - ref[l, h]) / o_scale
            err_same = np.abs(out * o_scale - same) / o_scale
            rows.append({"layer": l, "head": h, "n_global": g, "nnz_sparse": int(csr.col_idx.size),
                         "max_err_lsb_float_model": float(err_model.max()),
                         "mean_err_lsb_float_model": float(err_model.mean()),
                         "max_err_lsb_same_inputs": float(err_same.max()),
                         "rel_rms_err_float_model": float(np.sqrt(((out * o_scale - ref[l, h]) ** 2).mean())
                                                          / max(np.sqrt((ref[l, h] ** 2).mean()), 1e-12))})
    return rows


def write_verification(model: VisionTransformer, image: torch.Tensor, tensors: HeadTensors, masks: MaskSet,
                       path) -> dict:
    """``verify_head_tensors`` on every head, summarized (worst head first) and written as JSON to ``path``."""
    rows = verify_head_tensors(model, image, tensors, masks, use_decoder=tensors.has_decoder)
    summary = {"max_err_lsb_float_model": max(r["max_err_lsb_float_model"] for r in rows),
               "max_err_lsb_same_inputs": max(r["max_err_lsb_same_inputs"] for r in rows),
               "max_rel_rms_err_float_model": max(r["rel_rms_err_float_model"] for r in rows),
               "heads": rows}
    write_json_atomic(path, summary)
    return summary
