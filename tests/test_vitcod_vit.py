"""The plain-PyTorch ViT: timm/DeiT state dicts load and compute what timm computes; masks and the Q/K auto-encoder."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnforge.algo.vitcod.vit import (PRESETS, QKAutoEncoder, ViTConfig, VisionTransformer, config_from_state_dict,
                                       load_timm_checkpoint, load_timm_state_dict)


def timm_deit_state_dict(dim=192, depth=12, patch=16, img=224, classes=1000, chans=3, seed=0):
    """Random weights under timm's VisionTransformer key names and shapes (DeiT-Tiny by default)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    n = (img // patch) ** 2 + 1
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, n, dim),
          "patch_embed.proj.weight": r(dim, chans, patch, patch), "patch_embed.proj.bias": r(dim)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim),
               p + "attn.qkv.weight": r(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
               p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
               p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
               p + "mlp.fc1.weight": r(4 * dim, dim), p + "mlp.fc1.bias": r(4 * dim),
               p + "mlp.fc2.weight": r(dim, 4 * dim), p + "mlp.fc2.bias": r(dim)}
    sd |= {"norm.weight": 1 + r(dim), "norm.bias": r(dim), "head.weight": r(classes, dim), "head.bias": r(classes)}
    return sd


def reference_forward(sd, x, heads, depth, patch):
    """timm's ViT forward written out from the state dict alone (functional, no model class)."""
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), t], 1) + sd["pos_embed"]
    B, N, D = t.shape
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).reshape(B, N, 3, heads, D // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        t = t + F.linear(a.transpose(1, 2).reshape(B, N, D), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(t, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        t = t + h
    t = F.layer_norm(t, (D,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return F.linear(t[:, 0], sd["head.weight"], sd["head.bias"])


def test_deit_tiny_timm_state_dict_loads_and_matches_reference(tmp_path):
    sd = timm_deit_state_dict()
    model = VisionTransformer(PRESETS["deit_tiny"])
    assert set(model.state_dict()) == set(sd)
    assert all(model.state_dict()[k].shape == v.shape for k, v in sd.items())
    # DeiT's released files wrap the weights: {"model": state_dict}.
    torch.save({"model": sd}, tmp_path / "deit_tiny.pth")
    model = load_timm_checkpoint(tmp_path / "deit_tiny.pth").eval()
    assert model.cfg == PRESETS["deit_tiny"]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(sd, x, heads=3, depth=12, patch=16),
                                   rtol=1e-4, atol=1e-4)


def test_config_inference_small_and_base_shapes():
    for name, dim in (("deit_small", 384), ("deit_base", 768)):
        sd = timm_deit_state_dict(dim=dim, depth=1)
        cfg = config_from_state_dict(sd)
        assert (cfg.embed_dim, cfg.num_heads, cfg.depth, cfg.num_tokens) == (dim, dim // 64, 1, 197)


def test_load_resizes_pos_embed_and_replaces_head(tmp_path):
    sd = timm_deit_state_dict(depth=2)
    torch.save(sd, tmp_path / "w.pth")
    model = load_timm_checkpoint(tmp_path / "w.pth", img_size=64, num_classes=10)
    assert model.cfg.num_tokens == 17 and model.head.weight.shape == (10, 192)
    assert torch.equal(model.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"])
    assert torch.equal(model.pos_embed[:, 0], sd["pos_embed"][:, 0])
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_load_errors_name_the_keys():
    sd = timm_deit_state_dict(depth=2)
    model = VisionTransformer(PRESETS["deit_tiny"], depth=2)
    bad = dict(sd)
    del bad["blocks.1.norm2.bias"]
    bad["blocks.1.attn.qkv.weight"] = torch.zeros(3, 3)
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.norm2.bias'\].*unexpected keys "
                                         r"\['extra.weight'\].*blocks.1.attn.qkv.weight: file \(3, 3\)"):
        load_timm_state_dict(model, bad, source="bad.pth")


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(img_size=30, patch_size=4), ValueError, "img_size=30 is not a multiple of patch_size=4"),
    (dict(embed_dim=10, num_heads=3), ValueError, "embed_dim=10 is not a multiple of num_heads=3"),
    (dict(depth=0), ValueError, "depth must be positive"),
    (dict(num_heads=2.0), TypeError, "num_heads must be an int"),
])
def test_config_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ViTConfig(**kwargs)


def _digits_model(seed=0):
    torch.manual_seed(seed)
    return VisionTransformer(PRESETS["digits"]).eval()


def test_attention_maps_and_masks():
    model = _digits_model()
    cfg = model.cfg
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        logits, maps = model(x, return_attn=True)
        assert len(maps) == cfg.depth and maps[0].shape == (3, cfg.num_heads, 65, 65)
        torch.testing.assert_close(maps[2].sum(-1), torch.ones(3, cfg.num_heads, 65))
        # An all-true mask changes nothing.
        model.set_masks(torch.ones(cfg.depth, cfg.num_heads, 65, 65, dtype=torch.bool))
        torch.testing.assert_close(model(x), logits)
        # A random mask (CLS column kept) zeroes exactly the masked entries and renormalizes the rest.
        keep = torch.rand(cfg.depth, cfg.num_heads, 65, 65, generator=torch.Generator().manual_seed(3)) < 0.2
        keep[..., 0] = True
        model.set_masks(keep)
        masked_logits, masked_maps = model(x, return_attn=True)
        for l in range(cfg.depth):
            assert (masked_maps[l][:, ~keep[l]] == 0).all()
            assert (masked_maps[l][:, keep[l]] > 0).all()
            torch.testing.assert_close(masked_maps[l].sum(-1), torch.ones(3, cfg.num_heads, 65))
        assert not torch.allclose(masked_logits, logits)
        model.set_masks(None)
        torch.testing.assert_close(model(x), logits)
    # State dict keys do not change with masks.
    assert set(model.state_dict()) == set(VisionTransformer(cfg).state_dict())


def test_masked_attention_equals_manual_softmax():
    model = _digits_model(1)
    attn = model.blocks[0].attn
    x = torch.randn(2, 65, 64)
    keep = torch.rand(4, 65, 65) < 0.3
    keep[..., 0] = True
    attn.set_mask(keep)
    with torch.no_grad():
        _, a = attn(x, return_attn=True)
        q, k, v = attn.project(x)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(16)
        e = torch.exp(s - s.max(-1, keepdim=True).values) * keep
        torch.testing.assert_close(a, e / e.sum(-1, keepdim=True))


def test_mask_errors():
    model = _digits_model()
    with pytest.raises(ValueError, match=r"bool \[H=4, N, N\]"):
        model.blocks[0].attn.set_mask(torch.ones(3, 65, 65, dtype=torch.bool))
    keep = torch.ones(4, 65, 65, dtype=torch.bool)
    keep[2, 7] = False
    with pytest.raises(ValueError, match="head 2 keeps nothing in query row 7"):
        model.blocks[0].attn.set_mask(keep)
    with pytest.raises(ValueError, match=r"masks must be bool \[L=4"):
        model.set_masks(torch.ones(2, 4, 65, 65, dtype=torch.bool))


def test_qk_autoencoder_hook():
    model = _digits_model()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model.attach_qk_autoencoders()
        ae = model.blocks[0].attn.qk_ae
        assert isinstance(ae, QKAutoEncoder) and (ae.heads, ae.hidden) == (4, 2)
        assert ae.q_dec.weight.shape == (4, 2) and ae.k_enc.weight.shape == (2, 4)
        out = model(x)
        assert model.qk_reconstruction_loss() > 0
        assert not torch.allclose(out, ref)
        # Full-rank auto-encoders set to identity reproduce the plain model exactly.
        for a in model.attentions:
            a.qk_ae = QKAutoEncoder(4, hidden=4)
            for lin in (a.qk_ae.q_enc, a.qk_ae.q_dec, a.qk_ae.k_enc, a.qk_ae.k_dec):
                lin.weight.copy_(torch.eye(4))
        torch.testing.assert_close(model(x), ref)
        assert float(model.qk_reconstruction_loss()) < 1e-12
    extra = set(model.state_dict()) - set(VisionTransformer(model.cfg).state_dict())
    assert extra and all(".attn.qk_ae." in k for k in extra)
    # The AE mixes heads only: per token and channel, q_hat[:, h] = sum_j D[h, j] E[j, i] q[:, i].
    ae = QKAutoEncoder(6)
    q = torch.randn(2, 6, 5, 8)
    q_hat, _ = ae(q, q)
    torch.testing.assert_close(q_hat, torch.einsum("hj,ji,bind->bhnd", ae.q_dec.weight, ae.q_enc.weight, q))


def test_qk_autoencoder_pca_start_is_the_best_rank_k_reconstruction():
    """The PCA start reaches the Eckart-Young bound: its reconstruction error of each layer's Q and K equals
    the sum of the dropped squared singular values of the [H, tokens x channels] matrix (an SVD, not the
    Gram eigendecomposition the code uses), and no random start does better."""
    from attnforge.algo.vitcod.vit import _ProjectHook

    torch.manual_seed(3)
    model = _digits_model()
    x = torch.randn(24, 1, 32, 32)
    model.attach_qk_autoencoders()
    random_loss = []
    with torch.no_grad():
        model(x)
        random_loss = [float(a.qk_ae.last_loss) for a in model.attentions]
    model.train()
    model.init_qk_autoencoders_pca(x, batch_size=10)     # fitted in eval mode (no dropout), mode restored
    assert model.training
    model.eval()
    seen = {}
    hooks = [_ProjectHook(a, lambda m, args, out, i=i: seen.__setitem__(i, out))
             for i, a in enumerate(model.attentions)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for i, a in enumerate(model.attentions):
        q, k, _ = seen[i]
        bounds = []
        for t in (q, k):
            mat = t.double().movedim(1, 0).reshape(t.shape[1], -1)          # [H, B N d]
            sv = torch.linalg.svdvals(mat)
            bounds.append(float((sv[a.qk_ae.hidden:] ** 2).sum()) / t.numel())
        expected = 0.5 * (bounds[0] + bounds[1])
        assert float(a.qk_ae.last_loss) == pytest.approx(expected, rel=1e-4, abs=1e-12)
        assert float(a.qk_ae.last_loss) <= random_loss[i] * (1 + 1e-6)
        # encoder and decoder are transposes with orthonormal columns
        torch.testing.assert_close(a.qk_ae.q_dec.weight.T @ a.qk_ae.q_dec.weight, torch.eye(2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no auto-encoder attached"):
        _digits_model().init_qk_autoencoders_pca(x)
    with pytest.raises(ValueError, match=r"non-empty \[B, C, H, W\]"):
        model.init_qk_autoencoders_pca(torch.randn(0, 1, 32, 32))
    with pytest.raises(ValueError, match="Gram matrix must be finite"):
        QKAutoEncoder(4).set_pca(torch.full((4, 4), float("nan")), torch.eye(4))
