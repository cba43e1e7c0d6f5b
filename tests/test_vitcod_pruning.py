"""ViTCoD's criterion on hand-made maps, the sparsity solver, polarization and the masks.npz it writes."""

import numpy as np
import pytest
import torch

from attnforge.algo.vitcod.polarize import CycleModel, polarize
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
    # Every row's top key is one of three strong columns: once any threshold keeps it, the cycle model makes
    # the column global (whole), so the final mask jumps from 96.9 % to 94.2 % sparsity and 95 % is skipped.
    with pytest.raises(ValueError, match=r"solver reached sparsity 0.94\d+ for target 0.9500.*fixed mode"):
        build_masks(_maps(seed=1), target_sparsity=0.95, polarize_mode="cycles", head_dim=16)


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


def test_polarization_cycles_mode_is_the_brute_force_minimum():
    keep = cumulative_mass_keep(_maps(seed=3), 0.7)
    cm = CycleModel(dense_macs=32, sparse_macs=64, sparse_efficiency=0.5)
    _, order, n_global = polarize(keep, mode="cycles", cycle_model=cm, head_dim=16)
    nq = keep.shape[-2]
    for l in range(2):
        for h in range(3):
            counts = keep[l, h].sum(0)
            ranked = sorted(range(65), key=lambda j: (-int(counts[j]), j))
            total = int(counts.sum())
            best = min(range(66), key=lambda g: (cm.cycles(nq, g, total - sum(int(counts[j]) for j in ranked[:g]), 16), g))
            assert int(n_global[l, h]) == best
            assert order[l, h, :best].tolist() == ranked[:best]
    with pytest.raises(ValueError, match="polarization mode must be one of"):
        polarize(keep, mode="auto")


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
