"""The ViTCoD cycle model on its own (its agreement with the RTL is tested in tests/rtl/test_vitcod.py)."""

import numpy as np
import pytest

from attnforge.algo.vitcod.synthetic import polarized_mask_set
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import (DIV_CYCLES, HeadShape, dense_baseline_shape, head_beats, head_cycles,
                                         ideal_cycles, replay_cycles, run_cycles, sent_globals)
from attnforge.tb.vitcod_jobs import layer_heads, random_head, shapes_of

CFG = VitcodConfig(head_dim=64, max_tokens=197, max_nnz=20000, macs=8, dense_lines=4, sparse_lines=4,
                   data_width=256)


def test_head_beats_match_the_stream_layout():
    cfg = VitcodConfig(head_dim=16, max_tokens=32, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=2,
                       data_width=64)
    rng = np.random.default_rng(0)
    for nq, nk, g, s in ((9, 11, 2, 0.6), (5, 5, 0, 0.99), (32, 32, 32, 0.0)):
        h = random_head(cfg, rng, nq=nq, nk=nk, g=g, sparsity=s)
        assert head_beats(cfg, shapes_of([h])[0]) == len(h.beats)


def test_decoder_beats_match_the_stream_layout():
    """With the decoder a layer load carries the compressed Q/K, each head only its key order, V and the CSR."""
    cfg = VitcodConfig(head_dim=32, max_tokens=24, max_nnz=576, macs=8, dense_lines=2, sparse_lines=2,
                       data_width=64, decoder=True, decoder_heads=3)
    rng = np.random.default_rng(1)
    heads = layer_heads(cfg, rng, nq=13, nk=17, hc=3, specs=[(2, 0.5, 0), (0, 0.9, 1)])
    shapes = shapes_of(heads)
    assert [s.layer for s in shapes] == [True, False, False]
    assert head_beats(cfg, shapes[0]) == len(heads[0].layer_beats) == (13 + 17) * 4 * 3
    for s, h in zip(shapes[1:], heads):
        assert head_beats(cfg, s) == len(h.beats)
        # Q/K replayed from the layer store: one loader cycle a beat, plus two of latency
        assert replay_cycles(cfg, s) == 362      # (13 + 17) rows x 4 words x 3 beats + 2
    plain = random_head(cfg, rng, nq=5, nk=6, g=1, sparsity=0.3)   # a head with a layer of its own
    assert len(plain.layer_beats) == (5 + 6) * 4 and plain.layer_cmd["hc"] == 1


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95])
def test_cycles_bounded_by_ideal_and_sane(sparsity):
    ms = polarized_mask_set(1, 4, 197, sparsity, seed=1)
    shapes = []
    from attnforge.formats.masks import head_csr
    for h in range(4):
        g, csr = head_csr(ms, 0, h)
        shapes.append(HeadShape.from_csr(g, csr.row_ptr, 197))
    r = run_cycles(CFG, shapes)
    for h, s in zip(r["heads"], shapes):
        assert h["cycles"] >= ideal_cycles(CFG, s)
        assert 0 < h["utilization"] <= 1
    dense = head_cycles(CFG, dense_baseline_shape(CFG, 197, 197))
    assert dense > r["heads"][-1]["cycles"]


def test_row_floor_and_empty_heads():
    # a head with no kept key at all still costs the softmax hand-off and an output row per query
    empty = HeadShape(4, 4, 0, [0, 0, 0, 0])
    c = head_cycles(CFG, empty)
    assert c >= head_beats(CFG, empty) + 4 * CFG.words_per_token
    # every row pays at least the divider once the exponent units are done
    one = HeadShape(3, 8, 1, [0, 0, 0])
    assert head_cycles(CFG, one) > 3 * DIV_CYCLES


def test_refused_heads_only_cost_their_load():
    good = HeadShape(8, 8, 2, [1] * 8)
    bad = HeadShape(8, 8, 2, [1] * 8, good=False)
    one = run_cycles(CFG, [good])["total_cycles"]
    two = run_cycles(CFG, [bad, good])["total_cycles"]
    assert two == one + head_beats(CFG, bad) + 2


def test_utilization_goal_at_high_sparsity():
    # the benchmark's workload (algo/vitcod/synthetic.polarized_mask_set, 4 heads, steady state over heads 2-4):
    # the goal is utilization >= 0.8 at >= 90 % sparsity; the RTL follows this model exactly
    from attnforge.formats.masks import head_csr
    for sparsity in (0.9, 0.95):
        ms = polarized_mask_set(1, 4, 197, sparsity, 0.5, seed=int(sparsity * 100))
        shapes = []
        for h in range(4):
            g, csr = head_csr(ms, 0, h)
            shapes.append(HeadShape.from_csr(g, csr.row_ptr, 197))
        heads = run_cycles(CFG, shapes)["heads"][1:]
        util = sum(h["ideal_cycles"] for h in heads) / sum(h["cycles"] for h in heads)
        assert util >= 0.8, f"{sparsity:.0%} sparsity: utilization {util:.3f}"


def test_score_groups_round_a_short_row_to_its_keys():
    # one row, d = 64, 4 lines of 8 MACs: the fifth global key costs 2 score cycles (four lines per key;
    # one line per key would open a second group of 8 cycles), 1 exponent cycle and 2 pv cycles
    five = head_cycles(CFG, HeadShape(1, 8, 5, [0]))
    four = head_cycles(CFG, HeadShape(1, 8, 4, [0]))
    assert five - four == 2 + 1 + 2


def test_heads_overlap_and_sent_globals_replays_from_the_load():
    """Heads overlap: the second of two heads is adopted (its rows enter the stages) before the first
    head's last output beat, so its compute window is longer than its own share of the run; and
    ``sent_globals``' trials from a copy of the replay at each head's load give the choices that
    replaying the whole run for each candidate gives."""
    cfg = VitcodConfig(head_dim=16, max_tokens=32, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=1,
                       data_width=256, tiles=2)
    rng = np.random.default_rng(4)
    shapes = [HeadShape(29, 32, int(g), [int(n) for n in rng.binomial(32 - g, 0.15, size=29)])
              for g in (3, 0, 5, 2)]
    run = run_cycles(cfg, shapes)
    assert all(h["compute_cycles"] > h["cycles"] for h in run["heads"][1:])
    assert sum(h["cycles"] for h in run["heads"]) == run["total_cycles"]
    chosen = sent_globals(cfg, shapes)
    anew = []
    for k, s in enumerate(shapes):
        before = [x.with_sent_globals(g) for x, g in zip(shapes[:k], anew)]
        ends = {g: run_cycles(cfg, before + [s.with_sent_globals(g)])["total_cycles"] for g in range(s.g, -1, -1)}
        anew.append(min(ends, key=lambda g: (ends[g], -g)))
    assert chosen == anew
