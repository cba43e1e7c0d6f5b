"""A Vision Transformer in plain PyTorch whose state-dict keys are timm's.

The model is the one ViTCoD prunes. Its parameter names and shapes are those of
timm's ``VisionTransformer`` (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``,
``head``), so a DeiT-Tiny/Small/Base checkpoint saved as a local ``.pth`` loads
with :func:`load_timm_checkpoint` (no timm needed at run time).

On top of timm, each :class:`Attention` can

* return its attention maps (``model(x, return_attn=True)``),
* apply a fixed per-head mask: masked scores are set to ``-inf`` before the
  softmax (``model.set_masks(keep)``, ``keep`` bool ``[L, H, N, N]``),
* run a Q/K auto-encoder across heads (``model.attach_qk_autoencoders()``),
  a :class:`QKAutoEncoder` whose reconstruction loss the training loop adds.

Masks are buffers that are *not* saved in the state dict, and the auto-encoder
lives under ``blocks.N.attn.qk_ae.*``, so a plain model's keys stay timm's.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .names import PRESETS, ViTConfig

__all__ = ["ViTConfig", "PRESETS", "VisionTransformer", "Attention", "Block", "Mlp", "PatchEmbed",
           "QKAutoEncoder", "load_timm_checkpoint", "load_timm_state_dict", "config_from_state_dict",
           "resample_pos_embed"]


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.img_size = cfg.img_size
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x):
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"input images are {tuple(x.shape[-2:])}, the model takes "
                             f"{self.img_size}x{self.img_size}")
        return self.proj(x).flatten(2).transpose(1, 2)   # [B, N-1, D]


class QKAutoEncoder(nn.Module):
    """ViTCoD's Q/K auto-encoder: a linear map across heads, per token and channel.

    For Q and for K separately, ``encode`` maps the H heads to ``hidden``
    (default ``ceil(H/2)``) heads and ``decode`` maps them back: with ``q`` of
    shape ``[B, H, N, d]``, ``q_hat[b, h, n, c] = sum_j dec[h, j] * sum_i enc[j, i] * q[b, i, n, c]``.
    The accelerator stores/moves the compressed ``[B, hidden, N, d]`` tensors and
    decodes on chip with the ``[H, hidden]`` decoder matrices (``q_dec.weight``,
    ``k_dec.weight``). No biases: the hardware decoder is a pure matrix product.
    """

    def __init__(self, heads: int, hidden: int | None = None):
        super().__init__()
        hidden = math.ceil(heads / 2) if hidden is None else hidden
        if not isinstance(hidden, int) or not 1 <= hidden <= heads:
            raise ValueError(f"QKAutoEncoder hidden heads must be an int in [1, {heads}], got {hidden!r}")
        self.heads, self.hidden = heads, hidden
        self.q_enc = nn.Linear(heads, hidden, bias=False)
        self.q_dec = nn.Linear(hidden, heads, bias=False)
        self.k_enc = nn.Linear(heads, hidden, bias=False)
        self.k_dec = nn.Linear(hidden, heads, bias=False)
        self.reset_to_pca_like()
        self.last_loss = None   # mean squared reconstruction error of the last forward

    @torch.no_grad()
    def reset_to_pca_like(self):
        """Start near an orthogonal projection (dec = enc^T) so training starts from a sane map."""
        for enc, dec in ((self.q_enc, self.q_dec), (self.k_enc, self.k_dec)):
            w = torch.linalg.qr(torch.randn(self.heads, self.hidden))[0]   # [H, hidden], orthonormal cols
            enc.weight.copy_(w.T)
            dec.weight.copy_(w)

    @torch.no_grad()
    def set_pca(self, gram_q: torch.Tensor, gram_k: torch.Tensor):
        """Set encoder and decoder to the best rank-``hidden`` reconstruction of the data behind the
        ``[H, H]`` head Gram matrices (``gram[i, j]`` = sum over tokens and channels of head i x head j):
        the top ``hidden`` eigenvectors V, ``enc = V^T``, ``dec = V`` (no biases, so uncentred, as the
        hardware decoder is a pure matrix product). Eigenvector signs are made deterministic."""
        for gram, enc, dec, name in ((gram_q, self.q_enc, self.q_dec, "Q"), (gram_k, self.k_enc, self.k_dec, "K")):
            gram = torch.as_tensor(gram, dtype=torch.float64)
            if gram.shape != (self.heads, self.heads) or not torch.isfinite(gram).all():
                raise ValueError(f"{name} Gram matrix must be finite [{self.heads}, {self.heads}], got "
                                 f"{tuple(gram.shape)}")
            _, vecs = torch.linalg.eigh(0.5 * (gram + gram.T))         # ascending eigenvalues
            v = vecs[:, -self.hidden:].flip(-1)                          # [H, hidden], largest first
            v = v * torch.where(v.sum(0) < 0, -1.0, 1.0).to(v.dtype)     # sign: positive column sums
            enc.weight.copy_(v.T.to(enc.weight.dtype))
            dec.weight.copy_(v.to(dec.weight.dtype))

    @staticmethod
    def _mix(linear: nn.Linear, t: torch.Tensor) -> torch.Tensor:
        # t [B, H, N, d] -> heads last -> linear -> back
        return linear(t.movedim(1, -1)).movedim(-1, 1)

    def encode(self, q, k):
        return self._mix(self.q_enc, q), self._mix(self.k_enc, k)

    def decode(self, q_c, k_c):
        return self._mix(self.q_dec, q_c), self._mix(self.k_dec, k_c)

    def forward(self, q, k):
        q_hat, k_hat = self.decode(*self.encode(q, k))
        self.last_loss = 0.5 * (F.mse_loss(q_hat, q) + F.mse_loss(k_hat, k))
        return q_hat, k_hat


class _ProjectHook:
    """Calls ``hook(attention, (x,), (q, k, v))`` whenever ``attention.project`` runs, until ``remove()``."""

    def __init__(self, attention: "Attention", hook):
        self.attention = attention
        original = attention.project

        def project(x):
            out = original(x)
            hook(attention, (x,), out)
            return out

        attention.project = project

    def remove(self):
        del self.attention.project      # the instance attribute goes; the class's method is back


class Attention(nn.Module):
    """Multi-head self-attention (timm's names: ``qkv``, ``proj``), with mask and Q/K auto-encoder."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.qk_ae: QKAutoEncoder | None = None
        self.register_buffer("keep", None, persistent=False)   # bool [H, Nq, Nk] or None

    def set_mask(self, keep: torch.Tensor | None):
        """Fix this layer's mask (bool ``[H, N, N]``, True = kept), or remove it with None."""
        if keep is None:
            self.keep = None
            return
        keep = torch.as_tensor(keep)
        if keep.dtype != torch.bool or keep.dim() != 3 or keep.shape[0] != self.num_heads:
            raise ValueError(f"attention mask must be bool [H={self.num_heads}, N, N], got "
                             f"{keep.dtype} {tuple(keep.shape)}")
        if not keep.any(-1).all():
            h, r = torch.nonzero(~keep.any(-1))[0].tolist()
            raise ValueError(f"attention mask of head {h} keeps nothing in query row {r}; "
                             f"every row needs at least one key (ViTCoD keeps the CLS column)")
        self.keep = keep.to(self.qkv.weight.device)

    def project(self, x):
        """Q, K, V of every head, ``[B, H, N, d]`` each (before the auto-encoder)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def forward(self, x, return_attn: bool = False):
        B, N, C = x.shape
        q, k, v = self.project(x)
        if self.qk_ae is not None:
            q, k = self.qk_ae(q, k)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if self.keep is not None:
            if self.keep.shape[-2:] != (N, N):
                raise ValueError(f"attention mask is for {tuple(self.keep.shape[-2:])} tokens, input has {N}")
            scores = scores.masked_fill(~self.keep, float("-inf"))
        attn = scores.softmax(dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
        return (out, attn) if return_attn else out


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.mlp = Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x, return_attn: bool = False):
        if return_attn:
            a, attn = self.attn(self.norm1(x), return_attn=True)
        else:
            a, attn = self.attn(self.norm1(x)), None
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return (x, attn) if return_attn else x


class VisionTransformer(nn.Module):
    """ViT/DeiT with class-token pooling; ``forward(x, return_attn=True)`` also returns ``[L]`` maps ``[B, H, N, N]``."""

    def __init__(self, cfg: ViTConfig | None = None, **overrides):
        super().__init__()
        cfg = replace(cfg or ViTConfig(), **overrides) if overrides else (cfg or ViTConfig())
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.embed_dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):   # timm's init; auto-encoders are attached later
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def attentions(self) -> list[Attention]:
        return [b.attn for b in self.blocks]

    def embed(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed

    def forward(self, x, return_attn: bool = False):
        x = self.embed(x)
        maps = []
        for block in self.blocks:
            if return_attn:
                x, a = block(x, return_attn=True)
                maps.append(a)
            else:
                x = block(x)
        logits = self.head(self.norm(x)[:, 0])
        return (logits, maps) if return_attn else logits

    # -- masks -------------------------------------------------------------------------------

    def set_masks(self, keep):
        """Fix every layer's masks: bool ``[L, H, N, N]`` (numpy or torch), or None to remove them."""
        if keep is None:
            for a in self.attentions:
                a.set_mask(None)
            return
        keep = torch.as_tensor(keep)
        if keep.dim() != 4 or keep.shape[0] != self.cfg.depth:
            raise ValueError(f"masks must be bool [L={self.cfg.depth}, H, N, N], got {tuple(keep.shape)}")
        for a, k in zip(self.attentions, keep):
            a.set_mask(k)

    # -- Q/K auto-encoder ----------------------------------------------------------------------

    def attach_qk_autoencoders(self, hidden: int | None = None):
        """Give every attention layer a :class:`QKAutoEncoder` (H -> ``hidden`` -> H), if it has none."""
        for a in self.attentions:
            if a.qk_ae is None:
                a.qk_ae = QKAutoEncoder(a.num_heads, hidden).to(a.qkv.weight.device)
        return self

    @torch.no_grad()
    def init_qk_autoencoders_pca(self, images, batch_size: int = 128) -> "VisionTransformer":
        """Start every attached auto-encoder at the PCA of its layer's Q and K across heads
        (:meth:`QKAutoEncoder.set_pca`), from the heads' Q/K on ``images`` (a ``[B, C, H, W]`` tensor)
        with this model's weights, in eval mode; the layers are fitted in order, each on the inputs that
        the already-fitted layers before it give."""
        attns = [a for a in self.attentions if a.qk_ae is not None]
        if not attns:
            raise ValueError("init_qk_autoencoders_pca: no auto-encoder attached (attach_qk_autoencoders first)")
        images = torch.as_tensor(images)
        if images.dim() != 4 or len(images) == 0:
            raise ValueError(f"init_qk_autoencoders_pca: images must be a non-empty [B, C, H, W] tensor, got "
                             f"{tuple(images.shape)}")
        was_training = self.training
        self.eval()
        try:
            for target in attns:
                grams = []

                def hook(module, args, out, grams=grams):
                    q, k, _ = out
                    grams.append((torch.einsum("bind,bjnd->ij", q.double(), q.double()),
                                  torch.einsum("bind,bjnd->ij", k.double(), k.double())))

                handle = _ProjectHook(target, hook)
                try:
                    for i in range(0, len(images), batch_size):
                        self(images[i:i + batch_size])
                finally:
                    handle.remove()
                target.qk_ae.set_pca(sum(g[0] for g in grams), sum(g[1] for g in grams))
        finally:
            self.train(was_training)
        return self

    def qk_reconstruction_loss(self) -> torch.Tensor:
        """Mean reconstruction loss of the auto-encoders over layers, from the last forward (0 if none)."""
        losses = [a.qk_ae.last_loss for a in self.attentions if a.qk_ae is not None and a.qk_ae.last_loss is not None]
        return torch.stack(losses).mean() if losses else torch.zeros(())


# -- loading timm / DeiT checkpoints ----------------------------------------------------------

def _unwrap(state) -> dict:
    """The state dict inside a checkpoint: DeiT's ``{'model': sd}``, ``{'state_dict': sd}`` or the dict itself."""
    if isinstance(state, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in state and isinstance(state[key], dict):
                return state[key]
        return state
    raise ValueError(f"checkpoint is a {type(state).__name__}, expected a state dict")


def config_from_state_dict(state: dict, num_heads: int | None = None, img_size: int | None = None) -> ViTConfig:
    """Infer a :class:`ViTConfig` from timm key shapes (heads: 64 channels each, as in DeiT, unless given)."""
    sd = _unwrap(state)
    for key in ("patch_embed.proj.weight", "pos_embed", "head.weight", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            raise ValueError(f"state dict has no {key!r}: not a timm VisionTransformer")
    dim, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    return ViTConfig(
        img_size=img_size or grid * patch, patch_size=patch, in_chans=in_chans,
        num_classes=sd["head.weight"].shape[0], embed_dim=dim, depth=depth,
        num_heads=num_heads or max(1, dim // 64),
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd)


def resample_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubic resize of ``[1, 1 + g*g, D]`` position embeddings to ``grid x grid`` (class token kept)."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise ValueError(f"pos_embed has {patches.shape[1]} patch positions, not a square grid")
    if old == grid:
        return pos_embed
    p = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    p = F.interpolate(p.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, p.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos_embed.dtype)], dim=1)


def load_timm_state_dict(model: VisionTransformer, state, *, source: str = "state dict",
                         allow_new_head: bool = False) -> VisionTransformer:
    """Load timm-named weights into ``model``; position embeddings are resized to the model's grid.

    With ``allow_new_head`` a classifier of another class count (ImageNet's 1000) is
    skipped and the model keeps its own freshly initialized head (fine-tuning).
    Every missing, unexpected or misshapen key is listed in the error.
    """
    sd = {k: v for k, v in _unwrap(state).items()}
    # Distilled DeiT's extra token/head and timm's no-parameter norms are not part of this model.
    for extra in ("dist_token", "head_dist.weight", "head_dist.bias"):
        sd.pop(extra, None)
    if "pos_embed" in sd and sd["pos_embed"].shape != model.pos_embed.shape:
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], model.cfg.grid)
    own = model.state_dict()
    if not any(".qk_ae." in k for k in sd):   # a plain timm file: the auto-encoders keep their weights
        own = {k: v for k, v in own.items() if ".qk_ae." not in k}
    if allow_new_head and "head.weight" in sd and sd["head.weight"].shape != own["head.weight"].shape:
        sd.pop("head.weight"), sd.pop("head.bias", None)
        sd["head.weight"], sd["head.bias"] = own["head.weight"], own["head.bias"]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:8]}")
        raise ValueError(f"{source} does not fit the ViT {model.cfg.to_dict()}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=False)
    return model


def load_timm_checkpoint(path: str | Path, cfg: ViTConfig | None = None, *, num_heads: int | None = None,
                         img_size: int | None = None, num_classes: int | None = None) -> VisionTransformer:
    """Build a ViT from a local timm/DeiT ``.pth`` (config inferred from the keys unless given).

    ``img_size`` resizes the position embeddings; ``num_classes`` different from
    the checkpoint's replaces the classifier with a fresh one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    sd = _unwrap(state)
    cfg = cfg or config_from_state_dict(sd, num_heads=num_heads, img_size=img_size)
    if num_classes is not None and num_classes != cfg.num_classes:
        cfg = replace(cfg, num_classes=num_classes)
    model = VisionTransformer(cfg)
    return load_timm_state_dict(model, sd, source=str(path), allow_new_head=num_classes is not None)
