"""ViTCoD's criterion on hand-made maps, the sparsity solver, polarization and the masks.npz it writes."""

import numpy as np
import pytest
import torch

from attnforge.algo.vitcod.polarize import (_chooser, cycles_g, default_accelerator, fit_accelerator, head_cost, polarize,
                                           steady_cycles)
from attnforge.algo.vitcod.synthetic import polarized_mask_set, real_shaped_mask_set
from attnforge.errors import ConfigError
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import HeadShape, run_cycles
from attnforge.algo.vitcod.pruning import (SPARSITY_TOLERANCE, build_masks, cumulative_mass_keep, entry_thresholds,
                                           solve_threshold)
from attnforge.algo.vitcod.stats import AttentionStats
from attnforge.formats.masks import head_csr, load_masks, save_masks

HAND = torch.tensor([
    [0.40, 0.30, 0.20, 0.10],   # CLS row: always kept whole
    [0.10, 0.50, 0.30, 0.10],   # 0.5 (mass above 0), 0.3 (above 0.5 < 0.6, crosses); CLS column forced
    [0.05, 0.05, 0.05, 0.85],   # 0.85 alone reaches 0.6
    [0.25, 0.25, 0.25, 0.25],   # ties rank by index: keys 0, 1, 2 (mass above 0.5 < 0.6), not 3 (0.75)
], dtype=torch.float64)


def test_criterion_on_hand_made_map():
    keep = cumulative_mass_keep(HAND, 0.6)
    assert keep.tolist() == [[True, True, True, True],
                             [True, True, True, False],
                             [True, False, False, True],
                             [True, True, True, False]]
    # Without the CLS rule, row 1 drops key 0 and row 2 keeps only key 3.
    plain = cumulative_mass_keep(HAND, 0.6, always_keep_cls=False)
    assert plain.tolist() == [[True, True, False, False],
                              [False, True, True, False],
                              [False, False, False, True],
                              [True, True, True, False]]
    # Threshold 0 keeps only the CLS row and column. In row 2, key 0 ranks first of the 0.05 ties (mass above
    # it 0.85): at 0.86 it is kept on its own merit, so key 1 (mass above 0.90) needs a threshold above 0.90.
    assert cumulative_mass_keep(HAND, 0.0).sum() == 4 + 3
    assert cumulative_mass_keep(HAND, 0.86, always_keep_cls=False)[2].tolist() == [True, False, False, True]
    assert cumulative_mass_keep(HAND, 0.90)[2].tolist() == [True, False, False, True]
    assert cumulative_mass_keep(HAND, 0.91)[2].tolist() == [True, True, False, True]


def _brute_force_keep(maps, p):
    keep = np.zeros(maps.shape, dtype=bool)
    for idx in np.ndindex(*maps.shape[:-1]):
        row = maps[idx]
        mass = 0.0
        for j in sorted(range(len(row)), key=lambda j: (-row[j], j)):
            if mass >= p:
                break
            keep[idx + (j,)] = True
            mass += row[j]
    keep[..., 0, :] = True
    keep[..., :, 0] = True
    return keep


def _maps(shape=(2, 3, 65, 65), seed=0, global_cols=3):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(*shape, generator=g, dtype=torch.float64) * 2.0
    # A few key columns that many queries like: what polarization should find.
    cols = torch.randint(1, shape[-1], (global_cols,), generator=g)
    scores[..., cols] += 2.5
    return scores.softmax(-1)


def test_criterion_matches_brute_force():
    maps = _maps((1, 2, 17, 17), seed=4)
    for p in (0.3, 0.7, 0.95):
        assert np.array_equal(cumulative_mass_keep(maps, p).numpy(), _brute_force_keep(maps.numpy(), p))


@pytest.mark.parametrize("target", [0.5, 0.7, 0.8, 0.9, 0.95])
def test_solver_hits_target_without_polarization(target):
    maps = _maps()
    p, keep = solve_threshold(maps, target)
    achieved = 1 - keep.double().mean().item()
    assert abs(achieved - target) <= SPARSITY_TOLERANCE
    assert torch.equal(keep, cumulative_mass_keep(maps, p))


@pytest.mark.parametrize("mode, target", [("fixed", 0.5), ("fixed", 0.8), ("fixed", 0.9), ("fixed", 0.95),
                                          ("cycles", 0.5), ("cycles", 0.8), ("cycles", 0.9)])
def test_build_masks_final_sparsity_hits_target(mode, target):
    maps = _maps(seed=1)
    ms, report = build_masks(maps, target_sparsity=target, polarize_mode=mode, global_threshold=0.5, head_dim=16)
    assert abs(ms.sparsity() - target) <= SPARSITY_TOLERANCE
    assert abs(report["sparsity"] - ms.sparsity()) < 1e-12
    assert len(report["heads"]) == 6 and all(0 <= r["dense_share_of_kept"] <= 1 for r in report["heads"])


def test_cycles_mode_names_an_unreachable_final_target():
    # On a 16-bit data stream the accelerator is load-bound (one column index per beat): whole columns cost
    # no cycles and save index beats, so even at threshold 0 the cycle model makes 7 columns whole and the
    # final masks are at most 89.4 % sparse.
    load_bound = VitcodConfig(head_dim=16, data_width=16, macs=2)
    with pytest.raises(ValueError, match=r"target sparsity 0.9500 is out of reach.*to 0.89\d+ \(threshold 0"):
        build_masks(_maps(seed=1), target_sparsity=0.95, polarize_mode="cycles", head_dim=16,
                    accelerator=load_bound)
    ms, _ = build_masks(_maps(seed=1), target_sparsity=0.8, polarize_mode="cycles", head_dim=16,
                        accelerator=load_bound)
    assert abs(ms.sparsity() - 0.8) <= SPARSITY_TOLERANCE and (ms.n_global > 0).all()


def test_solver_refuses_unreachable_target():
    with pytest.raises(ValueError, match=r"target sparsity 0.9990 is out of reach.*threshold 0"):
        solve_threshold(_maps(), 0.999)
    with pytest.raises(ValueError, match=r"target sparsity must be in \[0, 1\)"):
        solve_threshold(_maps(), 1.5)


def test_polarization_fixed_threshold():
    keep = cumulative_mass_keep(_maps(seed=2), 0.5)
    nq = keep.shape[-2]
    kp, order, n_global = polarize(keep, mode="fixed", global_threshold=0.4)
    counts = keep.sum(-2)
    for l in range(2):
        for h in range(3):
            o = order[l, h]
            assert sorted(o.tolist()) == list(range(65))                     # a true permutation
            g = int(n_global[l, h])
            assert set(o[:g].tolist()) == set(torch.nonzero(counts[l, h] > 0.4 * nq).flatten().tolist())
            assert counts[l, h][o[:g]].tolist() == sorted(counts[l, h][o[:g]].tolist(), reverse=True)
            assert o[g:].tolist() == sorted(o[g:].tolist())                  # the rest in index order
            assert kp[l, h][:, o[:g]].all()                                  # global columns whole
            assert torch.equal(kp[l, h][:, o[g:]], keep[l, h][:, o[g:]])     # the rest unchanged
    assert 0 in order[0, 0, :n_global[0, 0]].tolist()                        # CLS column is always global
    # Threshold 1: no column has more than all queries -> no global tokens.
    assert (polarize(keep, mode="fixed", global_threshold=1.0)[2] == 0).all()


def _csr_rows(keep, g):
    """Each row's kept entries outside the first ``g`` columns by decreasing count (ties by index)."""
    counts = keep.sum(0)
    ranked = sorted(range(keep.shape[1]), key=lambda j: (-int(counts[j]), j))
    return [int(keep[i, ranked[g:]].sum()) for i in range(keep.shape[0])]


def _steady(cfg, keep, g):
    nq, nk = keep.shape
    return steady_cycles(cfg, HeadShape(nq, nk, g, _csr_rows(keep, g)))


ACC16 = VitcodConfig(head_dim=16, data_width=128, macs=4)


def test_polarization_cycles_mode_is_the_brute_force_minimum(full):
    """On 65 tokens the candidates (0..16, the fixed G, x1.5 up to Nk, refined) and the bound's pruning
    find the minimum of the exact cycle model over every G (make test: two of the six heads; make
    test-full: all)."""
    keep = cumulative_mass_keep(_maps(seed=3), 0.7)
    _, order, n_global = polarize(keep, mode="cycles", accelerator=ACC16)
    cfg = fit_accelerator(ACC16, 65, 65, 65 * 65)
    heads = [(l, h) for l in range(2) for h in range(3)] if full else [(0, 0), (1, 2)]
    for l, h in heads:
        k = keep[l, h].numpy()
        best = min(range(66), key=lambda g: (_steady(cfg, k, g), g))
        assert int(n_global[l, h]) == best
        counts = k.sum(0)
        assert order[l, h, :best].tolist() == sorted(range(65), key=lambda j: (-int(counts[j]), j))[:best]
    with pytest.raises(ValueError, match="polarization mode must be one of"):
        polarize(keep, mode="auto")
    with pytest.raises(ConfigError, match="needs the accelerator"):
        polarize(keep, mode="cycles")


def _mask_sets():
    """(name, bool keep [L, H, N, N]) of a few kinds: real-shaped (N = 197 and 65), uniform polarized,
    and ViTCoD's criterion on random maps."""
    yield "real197", real_shaped_mask_set(2, 3, 197, [0.9, 0.6], seed=1).keep
    yield "real65", real_shaped_mask_set(2, 2, 65, 0.8, seed=2, p_no_global=0.3).keep
    yield "uniform", polarized_mask_set(1, 3, 65, 0.85, dense_share=0.3, seed=3).keep
    yield "criterion", cumulative_mass_keep(_maps(seed=7), 0.6).numpy()


@pytest.mark.full     # long (each candidate G a replay of three heads); make test: the brute-force test above
@pytest.mark.parametrize("cfg", [VitcodConfig(head_dim=64, data_width=256),
                                 VitcodConfig(head_dim=64, dense_lines=1, sparse_lines=7, macs=8, data_width=128)],
                         ids=["4+4", "1+7"])
def test_cycles_mode_never_worse_than_fixed_rule_or_no_global_columns(cfg):
    for name, keep in _mask_sets():
        keep = torch.as_tensor(keep)
        nq, nk = keep.shape[-2:]
        for threshold in (0.5, 0.2):
            g, cycles = cycles_g(keep, cfg, global_threshold=threshold)
            fixed = polarize(keep, mode="fixed", global_threshold=threshold)[2]
            fit = fit_accelerator(cfg, nq, nk, nq * nk)
            for idx in np.ndindex(*g.shape):
                k = keep[idx].numpy()
                assert int(cycles[idx]) == _steady(fit, k, int(g[idx])), (name, idx)
                assert int(cycles[idx]) <= _steady(fit, k, int(fixed[idx])), (name, idx, threshold)
                assert int(cycles[idx]) <= _steady(fit, k, 0), (name, idx)


def test_configurations_choose_different_g():
    """1 + 7 lines and 7 + 1 lines choose different G for the same heads (here 2 and 0), and each
    configuration's choice is at least as fast on it as the other's (on 1 + 7 lines strictly: G = 0 ties
    with G = 2 on 7 + 1 lines, and ties go to the smaller G)."""
    keep = torch.as_tensor(real_shaped_mask_set(1, 4, 65, 0.7, seed=0, global_range=(4, 12)).keep)
    configs = [VitcodConfig(head_dim=64, dense_lines=7, sparse_lines=1, data_width=128),
               VitcodConfig(head_dim=64, dense_lines=1, sparse_lines=7, data_width=128)]
    chosen = [polarize(keep, mode="cycles", accelerator=cfg)[2] for cfg in configs]
    assert not torch.equal(*chosen)
    strict = []
    for cfg, own, other in ((configs[0], *chosen), (configs[1], *chosen[::-1])):
        fit = fit_accelerator(cfg, 65, 65, 65 * 65)
        mine = [_steady(fit, keep[0, h].numpy(), int(own[0, h])) for h in range(4)]
        theirs = [_steady(fit, keep[0, h].numpy(), int(other[0, h])) for h in range(4)]
        assert all(a <= b for a, b in zip(mine, theirs))
        strict.append(sum(mine) < sum(theirs))
    assert any(strict)


def test_steady_state_cost_is_the_run_of_the_head_back_to_back():
    """head_cost's steady cycles are defined as the second head's of run_cycles of the head three times in a
    row: what this checks is that the memoized chooser, which replays on the configuration with its buffer
    sizes raised to the largest (timing does not depend on them), gives the replay on the configuration
    itself, compute-bound and load-bound, with and without the decoder; and that the search's lower bound
    (load, the Denser Engine's issue cycles, half of both engines' least issue cycles) never exceeds them."""
    rng = np.random.default_rng(0)
    for cfg in (VitcodConfig(head_dim=64, data_width=256), VitcodConfig(head_dim=64, data_width=64),
                VitcodConfig(head_dim=32, dense_lines=1, sparse_lines=7, macs=4, data_width=32),
                VitcodConfig(head_dim=64, data_width=128, decoder=True)):
        for nnz_max, g in ((3, 0), (40, 2), (41, 9), (0, 20)):
            s = HeadShape(50, 50, g, rng.integers(0, nnz_max + 1, 50).tolist())
            steady, alone = head_cost(cfg, s)
            run = run_cycles(cfg, [s, s, s])
            assert alone == run_cycles(cfg, [s])["total_cycles"]
            assert run["heads"][1]["cycles"] == steady, (cfg, nnz_max, g)
            # the search's lower bound (per-engine issue cycles, load) never exceeds it
            assert _chooser(cfg).bound(50, 50, g, np.asarray(s.row_nnz)) <= steady


def test_accelerator_is_fitted_to_the_masks_or_refused():
    cfg = fit_accelerator(VitcodConfig(max_tokens=16, max_nnz=100), 197, 197, 197 * 197)
    assert cfg.max_tokens == 197 and cfg.max_nnz == 197 * 197
    assert fit_accelerator(VitcodConfig(), 300, 300, 300 * 300).max_nnz == 65535
    with pytest.raises(ConfigError, match="Nq=5000, Nk=5000 tokens do not fit"):
        fit_accelerator(VitcodConfig(), 5000, 5000)
    with pytest.raises(ConfigError, match="head_dim=64 differs from the model's head dim 16"):
        build_masks(_maps(seed=1), threshold=0.5, polarize_mode="cycles", head_dim=16, accelerator=VitcodConfig())
    # A small accelerator's buffers are raised to the masks; the report records what was used.
    ms, report = build_masks(_maps(seed=1), threshold=0.5, polarize_mode="cycles", head_dim=16,
                             accelerator=VitcodConfig(head_dim=16, data_width=128, max_tokens=8, max_nnz=10))
    assert report["accelerator"]["max_tokens"] == 65 and report["accelerator"]["max_nnz"] == 65 * 65
    assert default_accelerator(16).data_width == 128


def _masked_attention(q, k, v, keep):
    s = (q @ k.T).masked_fill(~keep, float("-inf"))
    p = s.softmax(-1)
    return p, p @ v


def test_attention_in_polarized_order_equals_original(tmp_path):
    """Compute a head as the accelerator does (dense part on K[order[:G]], sparse part from CSR) and un-permute."""
    ms, _ = build_masks(_maps(seed=5), target_sparsity=0.9, polarize_mode="fixed", global_threshold=0.3, head_dim=8)
    ms = load_masks(save_masks(ms, tmp_path / "masks.npz"))
    g_ = torch.Generator().manual_seed(0)
    for l, h in [(0, 0), (1, 2)]:
        q, k, v = (torch.randn(65, 8, generator=g_, dtype=torch.float64) for _ in range(3))
        keep = torch.from_numpy(ms.keep[l, h])
        p_ref, out_ref = _masked_attention(q, k, v, keep)
        G, csr = head_csr(ms, l, h)
        order = torch.from_numpy(ms.order[l, h]).long()
        kp, vp = k[order], v[order]
        scores = torch.full((65, 65), float("-inf"), dtype=torch.float64)
        scores[:, :G] = q @ kp[:G].T                                             # Denser Engine
        for r in range(65):                                                      # Sparser Engine
            cols = torch.from_numpy(csr.col_idx[csr.row_ptr[r]:csr.row_ptr[r + 1]]).long()
            assert (cols >= G).all()
            scores[r, cols] = q[r] @ kp[cols].T
        p_pol = scores.softmax(-1)
        torch.testing.assert_close(p_pol @ vp, out_ref)
        un = torch.empty_like(p_pol)
        un[:, order] = p_pol
        torch.testing.assert_close(un, p_ref)


def test_masks_export_round_trip(tmp_path):
    ms, report = build_masks(_maps(seed=6), target_sparsity=0.8, polarize_mode="cycles", head_dim=16,
                             meta={"model": "test", "data": "random"})
    back = load_masks(save_masks(ms, tmp_path / "m.npz"))
    assert np.array_equal(back.keep, ms.keep) and np.array_equal(back.order, ms.order)
    assert np.array_equal(back.n_global, ms.n_global)
    assert back.meta["model"] == "test" and back.meta["threshold"] == report["threshold"]
    assert back.meta["target_sparsity"] == 0.8 and abs(back.meta["sparsity"] - back.sparsity()) < 1e-12


def test_streamed_statistics_equal_the_full_mean():
    maps = [torch.rand(10, 2, 5, 5) for _ in range(3)]
    st = AttentionStats()
    for i in range(0, 10, 3):
        st.update([m[i:i + 3] for m in maps])
    torch.testing.assert_close(st.mean(), torch.stack([m.mean(0) for m in maps]).double())
    with pytest.raises(ValueError, match="do not match"):
        st.update([torch.rand(1, 2, 4, 4)] * 3)


def test_entry_thresholds_forced_entries():
    c = entry_thresholds(HAND)
    assert torch.isinf(c[0]).all() and torch.isinf(c[:, 0]).all()
    assert c[1, 1] == 0 and abs(c[1, 2] - 0.5) < 1e-12


def test_cli_masks_polarize_cycles(tmp_path, capsys):
    """`vitcod masks --polarize cycles` chooses G for the accelerator of its options and reports it."""
    import json

    from attnforge.cli import main

    common = ["--limit", "64", "--no-progress", "--batch-size", "64"]
    ckpt = tmp_path / "dense.pt"
    assert main(["vitcod", "train", "--depth", "1", "--dim", "32", "--epochs", "0", *common, "-o", str(ckpt)]) == 0
    out = tmp_path / "masks.npz"
    assert main(["vitcod", "masks", "--checkpoint", str(ckpt), "--sparsity", "0.8", "--max-images", "32",
                 "--polarize", "cycles", "--dense-lines", "1", "--sparse-lines", "7", "--macs", "4", *common,
                 "-o", str(out)]) == 0
    assert "predicted" in capsys.readouterr().out
    ms = load_masks(out)
    report = json.loads(out.with_suffix(".report.json").read_text())
    acc = report["accelerator"]
    assert (acc["head_dim"], acc["dense_lines"], acc["sparse_lines"], acc["macs"], acc["data_width"]) == (8, 1, 7, 4, 64)
    assert acc["max_tokens"] >= 65 and ms.meta["accelerator"] == acc
    assert report["polarize"]["mode"] == "cycles" and abs(ms.sparsity() - 0.8) <= SPARSITY_TOLERANCE
    cfg = VitcodConfig(**acc)
    for r in report["heads"]:
        l, h = r["layer"], r["head"]
        assert r["n_global"] == ms.n_global[l, h]
        keep = ms.keep[l, h]
        assert r["cycles"] == head_cost(cfg, HeadShape(65, 65, r["n_global"],
                                                       (keep.sum(1) - r["n_global"]).tolist()))[0]
    assert report["cycles"] == sum(r["cycles"] for r in report["heads"])
    # An accelerator the model's heads cannot use is refused with the reason (exit 2), nothing written.
    assert main(["vitcod", "masks", "--checkpoint", str(ckpt), "--polarize", "cycles", "--macs", "16", *common,
                 "-o", str(tmp_path / "bad.npz")]) == 2
    assert "no ViTCoD accelerator for the model's head dim 8" in capsys.readouterr().err
    assert main(["vitcod", "masks", "--checkpoint", str(ckpt), "--polarize", "fixed", "--data-width", "1024",
                 *common, "-o", str(tmp_path / "bad.npz")]) == 2
    assert "data_width=1024 must divide 8 * head_dim = 64" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()
