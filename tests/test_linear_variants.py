"""Linear attention variants: parallel and recurrent forms agree; causal ones are causal.

The causality check is a function of its own (``first_noncausal_position``)
so that it can be seen to fail: Linformer's original form is not causal.
"""

import pytest
import torch

from attnforge.algo.linear.augment import AugmentedAttention
from attnforge.algo.linear.variants import LINEAR_VARIANTS, VARIANTS, causal_mask, make_core, state_tensors

H, D, T = 2, 8, 40

torch.set_num_threads(1)  # small tensors: threads only contend on the shared cores


def _core(name, augmented=False, **kw):
    torch.manual_seed(0)
    core = make_core(name, H, D, max_len=64, seed=3, **({"chunk": 6} if name == "flash" else {}))
    if augmented:
        core = AugmentedAttention(core, conv_kernel=3, chunk=8)
        with torch.no_grad():
            core.conv.weight.normal_()
    return core.double()


def _qkv(seed, t=T, b=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, H, t, D, generator=g, dtype=torch.float64) for _ in range(3)]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def first_noncausal_position(fn, q, k, v):
    """Smallest t whose output changes when the token at t+1 changes (None if there is none)."""
    base = fn(q, k, v)
    for t in range(q.shape[-2] - 1):
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, :, t + 1:] += torch.randn_like(x[:, :, t + 1:])
        if not torch.allclose(fn(q2, k2, v2)[:, :, : t + 1], base[:, :, : t + 1], rtol=0, atol=1e-12):
            return t
    return None


ALL = [(n, False) for n in VARIANTS] + [(n, True) for n in VARIANTS]
IDS = [n + ("+aug" if a else "") for n, a in ALL]


@pytest.mark.parametrize("name,augmented", ALL, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_parallel_matches_recurrent_float64(name, augmented, seed):
    core = _core(name, augmented)
    q, k, v = _qkv(seed)
    with torch.no_grad():
        # Linformer's own parallel form is not causal; its recurrent form is the causally masked one.
        mask = causal_mask(T) if name == "linformer" and not augmented else None
        par = core.parallel(q, k, v, mask)
        rec, state = core.recurrent(q, k, v)
    assert par.shape == rec.shape == (2, H, T, D)
    assert _rel(rec, par) <= 1e-6, f"{core.name}: relative difference {_rel(rec, par):.3g}"
    assert state["n"] == T


@pytest.mark.parametrize("name,augmented", ALL, ids=IDS)
def test_extend_then_advance_matches_recurrent(name, augmented):
    # The verify pass of speculative decoding: outputs of new tokens after a state, and the commit.
    core = _core(name, augmented)
    q, k, v = _qkv(5)
    with torch.no_grad():
        rec, _ = core.recurrent(q, k, v)
        _, s = core.recurrent(q[:, :, :17], k[:, :, :17], v[:, :, :17])
        ext = core.extend(s, q[:, :, 17:29], k[:, :, 17:29], v[:, :, 17:29])
        s2 = core.advance(s, k[:, :, 17:29], v[:, :, 17:29])
        rest, _ = core.recurrent(q[:, :, 29:], k[:, :, 29:], v[:, :, 29:], s2)
    assert _rel(ext, rec[:, :, 17:29]) <= 1e-6
    assert _rel(rest, rec[:, :, 29:]) <= 1e-6


@pytest.mark.parametrize("name,augmented", ALL, ids=IDS)
def test_causality(name, augmented):
    core = _core(name, augmented)
    q, k, v = _qkv(7, t=24, b=1)
    with torch.no_grad():
        where = first_noncausal_position(lambda a, b, c: core.parallel(a, b, c), q, k, v)
    if name == "linformer" and not augmented:
        # The check exposes it: the very first output already depends on the future.
        assert where == 0
    else:
        assert where is None, f"{core.name} output {where} depends on token {where + 1}"


def test_causality_check_detects_a_leak_of_one_step():
    # The check itself can fail: a form that looks one token ahead is caught at that token.
    core = _core("elu")
    q, k, v = _qkv(8, t=12, b=1)
    leaky = lambda a, b, c: core.parallel(a, b, c, causal_mask(12, offset=1))  # noqa: E731
    assert first_noncausal_position(leaky, q, k, v) == 0


def test_linformer_masked_form_is_causal_and_original_agrees_at_last_token():
    core = _core("linformer")
    q, k, v = _qkv(9)
    with torch.no_grad():
        full = core.parallel(q, k, v)
        rec, _ = core.recurrent(q, k, v)
        masked = lambda a, b, c: core.parallel(a, b, c, causal_mask(a.shape[-2]))  # noqa: E731
        assert first_noncausal_position(masked, q[:1, :, :16], k[:1, :, :16], v[:1, :, :16]) is None
    # The last token sees everything in both, so there the two forms coincide.
    assert _rel(rec[:, :, -1], full[:, :, -1]) <= 1e-6
    assert _rel(rec[:, :, 0], full[:, :, 0]) > 1e-3


@pytest.mark.parametrize("name", LINEAR_VARIANTS)
def test_linear_state_size_is_constant(name):
    # Chunk buffers fill and empty (at most one chunk); compare at whole chunks (24 = lcm of 6 and 8).
    core = _core(name, augmented=True)
    q, k, v = _qkv(2, t=48)
    with torch.no_grad():
        _, s1 = core.recurrent(q[:, :, :24], k[:, :, :24], v[:, :, :24])
        _, s2 = core.recurrent(q, k, v)
    n1 = sum(x.numel() for x in state_tensors(s1).values())
    n2 = sum(x.numel() for x in state_tensors(s2).values())
    assert n1 == n2


def test_softmax_state_grows():
    core = _core("softmax")
    q, k, v = _qkv(2)
    with torch.no_grad():
        _, s1 = core.recurrent(q[:, :, :30], k[:, :, :30], v[:, :, :30])
        _, s2 = core.recurrent(q, k, v)
    assert state_tensors(s2)["k"].shape[2] == T and state_tensors(s1)["k"].shape[2] == 30


def test_cosformer_refuses_positions_beyond_max_len():
    core = _core("cosformer")
    q, k, v = _qkv(1, t=2)
    s = core.init_state(2, torch.float64)
    s["n"] = 64
    with pytest.raises(ValueError, match="position 64 is beyond max_len=64"):
        core.absorb(s, k[:, :, 0], v[:, :, 0])


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown attention variant 'lin'"):
        make_core("lin", 2, 8)
    with pytest.raises(ValueError, match="n_heads must be >= 1, not 0"):
        make_core("elu", 0, 8)


@pytest.mark.parametrize("name", ["elu", "performer", "transnormer", "softmax"])
@pytest.mark.parametrize("augmented", [False, True])
def test_extend_is_one_parallel_pass(name, augmented, monkeypatch):
    # For the kernel family and softmax (alone or augmented) the verify pass never steps through
    # the tokens: absorb() is not called, and it still matches the recurrent form.
    core = _core(name, augmented)
    q, k, v = _qkv(4)
    with torch.no_grad():
        rec, _ = core.recurrent(q, k, v)
        _, s = core.recurrent(q[:, :, :13], k[:, :, :13], v[:, :, :13])
        inner = core.base if augmented else core

        def no_absorb(*args):
            raise AssertionError("extend stepped through tokens")
        monkeypatch.setattr(inner, "absorb", no_absorb)
        monkeypatch.setattr(core, "absorb", no_absorb)
        ext = core.extend(s, q[:, :, 13:24], k[:, :, 13:24], v[:, :, 13:24])
    assert _rel(ext, rec[:, :, 13:24]) <= 1e-6
