"""Generator fuzzing: random legal configurations of the ViTCoD accelerator and the linear decode datapath,
each built and checked bit-exact on random heads or tokens (issue "Hardening", item 6).

The configurations are drawn from a seed that is part of each test's id, so a failure names the seed
that reproduces it. The seed is the UTC date (yyyymmdd, one new draw per day, the same on every xdist
worker) unless ``ATTNFORGE_FUZZ_SEED`` sets it. ``make test-full`` builds twenty of each; ``make test`` none
(a draw's build time varies with the draw, and make test must stay within its time). The ViTCoD runs also hold the cycle model to the cycle.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path

import numpy as np
import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.linear.decode import LinearDecodeConfig
from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
from attnforge.hw.vitcod.cycles import run_cycles
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.tb.linear_decode_tb import default_requant
from attnforge.tb.vitcod_jobs import bad_head, random_head, save_jobs, shapes_of

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
SEED = int(os.environ.get("ATTNFORGE_FUZZ_SEED") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d"))
CI_RUNS, FULL_RUNS = 1, 20


def _params(n_runs: int, ci_runs: int = CI_RUNS):
    return [pytest.param(SEED + i, id=f"seed{SEED + i}", marks=() if i < ci_runs else pytest.mark.full)
            for i in range(n_runs)]


def random_vitcod_config(rng) -> VitcodConfig:
    """A legal ``VitcodConfig``: d, M, lines of both engines, stream width and decoder drawn at random
    (buffers small, so that a build and a run take seconds)."""
    while True:
        head_dim = int(rng.choice([8, 16, 32, 64]))
        macs = int(rng.choice([m for m in (1, 2, 4, 8, 16) if head_dim % m == 0]))
        widths = [w for w in (16, 32, 64, 128, 256, 512)
                  if w % (8 * macs) == 0 and (8 * head_dim) % w == 0]
        if widths:
            break
    decoder = bool(rng.random() < 0.3)
    max_tokens = int(rng.integers(6, 20))
    return VitcodConfig(head_dim=head_dim, max_tokens=max_tokens, max_nnz=max_tokens * max_tokens, macs=macs,
                        dense_lines=int(rng.integers(1, 7)), sparse_lines=int(rng.integers(1, 7)),
                        data_width=int(rng.choice(widths)), decoder=decoder,
                        decoder_heads=int(rng.integers(1, 4)) if decoder else 2)


def random_tiles(cfg: VitcodConfig, rng) -> VitcodConfig:
    """``cfg`` with 1 to 3 tiles (row pipelines) where legal, half of the time more than one (four tiles
    took over the test's 300 s to compile on the shared machine), then a row merger of 1 to 3 rows per
    tile (``merge_depth``)."""
    legal = [t for t in (2, 3) if t <= cfg.max_tokens and cfg.data_width >= 32
             and (t >= cfg.data_width // 32 or (cfg.data_width // 32) % t == 0)]
    if not legal or rng.random() < 0.5:
        return cfg
    tiles = int(rng.choice(legal))
    return dataclasses.replace(cfg, tiles=tiles, merge_depth=int(rng.integers(1, 4)))


def random_softmax(cfg: VitcodConfig, rng) -> VitcodConfig:
    """``cfg`` with 2 to 16 row slots, a divider of 1 to 8 quotient bits per cycle and two or four
    buffer banks, half of the time (otherwise the defaults)."""
    if rng.random() < 0.5:
        return cfg
    return dataclasses.replace(cfg, row_slots=int(rng.choice([2, 4, 8, 16])), divider_bits=int(rng.integers(1, 9)),
                               banks=int(rng.choice([2, 4])))


def random_linear_config(rng) -> LinearDecodeConfig:
    """A legal ``LinearDecodeConfig``: d, M (a divisor), taps, heads, verify depth, feature map, snapshots, the
    readout in MULT18X18D primitives (simulated with attnforge's model) or portable, the ECP5's or the iCE40's
    pipelining."""
    d = int(rng.choice([8, 16, 32]))
    macs = int(rng.choice([m for m in range(1, d + 1) if d % m == 0 and m >= d // 8]))
    taps = int(rng.integers(1, 5))
    feature_map = str(rng.choice(["relu", "relu_norm"]))
    return LinearDecodeConfig(d=d, macs=macs, conv_taps=taps, t_max=int(rng.integers(1, 6)),
                              heads=int(rng.integers(1, 3)), snapshots=bool(rng.random() < 0.5),
                              feature_map=feature_map, **default_requant(d, taps, feature_map),
                              dsp_primitives=bool(rng.random() < 0.5), pipelining=str(rng.choice(["ecp5", "ice40"])))


# All ViTCoD draws in make test-full only: a day's draw (tiles, decoder, wide lines) took from 30 s to over
# the 300 s test timeout to build on 2 cores, so in make test it made CI's run time depend on the date.
@pytest.mark.parametrize("seed", _params(FULL_RUNS, ci_runs=0))
def test_random_vitcod_configuration(seed):
    rng = np.random.default_rng(seed)
    cfg = random_vitcod_config(rng)
    if seed - SEED >= CI_RUNS:      # make test-full: tiles too (their own generator: the same heads)
        cfg = random_tiles(cfg, np.random.default_rng(seed + 7919))
        cfg = random_softmax(cfg, np.random.default_rng(seed + 104729))
    heads = []
    for _ in range(3):
        nq, nk = (int(x) for x in rng.integers(1, cfg.max_tokens + 1, 2))
        extra = ({"compressed_heads": int(rng.integers(1, cfg.decoder_heads + 1))} if cfg.decoder
                 else {"balance": str(rng.choice(["balanced", "none"]))})
        heads.append(random_head(cfg, rng, nq=nq, nk=nk, g=int(rng.integers(0, nk + 1)),
                                 sparsity=float(rng.random()), **extra))
    heads.insert(1, bad_head(cfg, rng, "col_idx"))
    jobs = save_jobs(BUILD / "jobs" / f"fuzz_vitcod_{seed}.npz", heads)
    design = get_design("vitcod")
    result = run_cocotb(VitcodAccelerator(cfg), top=design.top, config_name=f"fuzz_{design.config_name(cfg)}",
                        test_module=design.testbench, simulator="verilator", build_root=BUILD, seed=seed,
                        params={"config": dataclasses.asdict(cfg), "jobs": str(jobs), "seed": seed,
                                "idle": 0.0, "stall": 0.0})
    assert result.passed, f"seed {seed}, {cfg}: see {result.log}"
    model = run_cycles(cfg, shapes_of(heads))
    assert [h["cycles"] for h in model["heads"]] == [h["cycles"] for h in result.report["heads"]], \
        f"seed {seed}, {cfg}: cycle model against the RTL"


@pytest.mark.parametrize("seed", _params(FULL_RUNS, ci_runs=0))    # make test time (see above)
def test_random_linear_configuration(seed):
    cfg = random_linear_config(np.random.default_rng(seed))
    result = simulate(get_design("linear-decode"), cfg, seed=seed, tb_params=dict(tokens=150),
                      simulator="verilator", build_root=BUILD)
    assert result.passed and result.tests == 1, f"seed {seed}, {cfg}: see {result.log}"
