"""Runs the ViTCoD accelerator's testbench (tb/vitcod_tb.py): RTL bit for bit against the golden model.

Each configuration builds once (Verilator by default, one small case on Icarus)
and runs a list of heads back to back: random masks from 0 % to 99 % sparsity,
G = 0, G = N, rows without sparse entries, N not a multiple of any line count,
Nq != Nk, the host's split of each row between the engines on and off, global columns sent as CSR
entries (G' < G), heads the accelerator must refuse (oversize N, a decreasing row
pointer, a column index outside [G, Nk)) between good ones, the Q/K decoder on
and off, random idle cycles on the inputs and backpressure on the output. Runs
without idle/stall also hold the cycle model (hw/vitcod/cycles.py) to the cycle.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
from attnforge.sim.runner import run_cocotb
from attnforge.hw.vitcod.cycles import run_cycles
from attnforge.tb.mutants import FlipOutputBit
from attnforge.algo.vitcod.golden import head_params
from attnforge.formats.csr import CSR, dense_to_csr
from attnforge.tb.vitcod_jobs import bad_head, head_for, layer_heads, random_head, save_jobs, shapes_of

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
DESIGN = get_design("vitcod")

CONFIGS = {
    # d=16, one Denser line, four Sparser lines (two keys per score step, two lines per key),
    # one chunk per beat (the loader assembles two beats per Q word)
    "d16": VitcodConfig(head_dim=16, max_tokens=32, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=4,
                        data_width=64),
    # d=32, M=4, 2 + 3 lines (3 does not divide the 8 chunks: one line per key), four chunks per beat
    "d32": VitcodConfig(head_dim=32, max_tokens=40, max_nnz=1600, macs=4, dense_lines=2, sparse_lines=3,
                        data_width=128),
    # d=64 with the Q/K decoder; four Denser lines share each key (two decoded beats per Q/K word)
    "d64-decoder": VitcodConfig(head_dim=64, max_tokens=24, max_nnz=576, macs=8, dense_lines=4, sparse_lines=3,
                                data_width=128, decoder=True, decoder_heads=2),
    # the decoder at d=16 (make test: a quarter of d64-decoder's build): two Denser lines share each key
    "d16-decoder": VitcodConfig(head_dim=16, max_tokens=20, max_nnz=400, macs=8, dense_lines=2, sparse_lines=2,
                                data_width=64, decoder=True, decoder_heads=2),
    # two token rows per data beat (Q/K/V words of two tokens), one output row per beat; 1 + 1 lines
    "d16-w256": VitcodConfig(head_dim=16, max_tokens=33, max_nnz=1200, macs=8, dense_lines=1, sparse_lines=1,
                             data_width=256),
    # eight row slots and a divider of four quotient bits per cycle (7 cycles for the reciprocal)
    "d16-s8": VitcodConfig(head_dim=16, max_tokens=32, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=2,
                           data_width=128, row_slots=8, divider_bits=4),
}


#: several row pipelines ("tiles"; the rows of all heads dealt to them in one rotation): two tiles with two
#: pointer rows per tile and beat (128-bit stream, W = 2), three tiles on a 64-bit stream (two rows per
#: beat, one per tile)
TILED = {
    "d16-t2": VitcodConfig(head_dim=16, max_tokens=32, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=4,
                           data_width=128, tiles=2),
    "d32-t3": VitcodConfig(head_dim=32, max_tokens=40, max_nnz=1600, macs=4, dense_lines=2, sparse_lines=3,
                           data_width=64, tiles=3),
    # a row merger buffer of two rows per tile (merge_depth)
    "d32-t3-m2": VitcodConfig(head_dim=32, max_tokens=40, max_nnz=1600, macs=4, dense_lines=2, sparse_lines=3,
                              data_width=64, tiles=3, merge_depth=2),
    # the digits ViT's configuration (issue 14): four tiles of 1 + 1 lines, two token rows per beat, four
    # banks (three heads loaded ahead), 32 row slots, a 4-bit divider, a two-row merger
    "d16-t4-b4": VitcodConfig(head_dim=16, max_tokens=33, max_nnz=1200, macs=8, dense_lines=1, sparse_lines=1,
                              data_width=256, tiles=4, banks=4, row_slots=32, divider_bits=4, merge_depth=2),
}


def tiled_heads(cfg: VitcodConfig, rng, errors: bool) -> list:
    """Irregular heads for the tiled configurations: Nq below, at and above T, G = 0, G = N,
    Nq != Nk, rows of 0 to Nk keys, the host's split off."""
    n, T = cfg.max_tokens, cfg.tiles
    heads = [random_head(cfg, rng, nq=n - 1, nk=n, g=2, sparsity=0.9, empty_rows=3),
             random_head(cfg, rng, nq=1, nk=5, g=1, sparsity=0.5),                       # fewer rows than tiles
             random_head(cfg, rng, nq=T + 1, nk=9, g=0, sparsity=0.6),                   # G = 0
             random_head(cfg, rng, nq=7, nk=7, g=7, sparsity=0.0),                       # G = N
             random_head(cfg, rng, nq=n, nk=n // 2 + 3, g=1, sparsity=0.3),              # Nq > Nk, long rows
             random_head(cfg, rng, nq=T * 3, nk=n, g=3, sparsity=0.97, empty_rows=4),    # Nq < Nk, short rows
             random_head(cfg, rng, nq=n - 2, nk=n, g=2, sparsity=0.6, balance="none")]
    if cfg.merge_depth > 1:
        heads += [phased_head(cfg, rng, g=0), phased_head(cfg, rng, g=2)]
    if errors:
        for pos, kind in ((1, "size"), (4, "row_ptr"), (6, "col_idx")):
            heads.insert(pos, bad_head(cfg, rng, kind))
    return heads


def phased_head(cfg: VitcodConfig, rng, g: int):
    """A head whose tiles take turns at long rows (tile t's long rows in its t-th block of local
    rows, short ones elsewhere): a tile on short rows runs ahead of the row merger while another
    is on long ones, so the merger's buffer depth (``merge_depth``) sets the cycles."""
    n, T = cfg.max_tokens, cfg.tiles
    block = max(1, n // T // T)
    lengths = [n - g if (i // T // block) % T == i % T and (i // T) % 4 != 3 else i % 3 for i in range(n)]
    keep = np.zeros((n, n - g), bool)
    for i, length in enumerate(lengths):
        keep[i, rng.choice(n - g, length, replace=False)] = True
    d = cfg.head_dim
    q, k, v = (rng.integers(-128, 128, (n, d)).astype(np.int8) for _ in range(3))
    s = dense_to_csr(keep)
    csr = CSR(s.row_ptr, s.col_idx + np.int32(g), (n, n))
    return head_for(cfg, q, k, v, g, csr, head_params(0.03, 0.02, 0.04, 0.02, d),
                    sparsity=1.0 - (n * g + keep.sum()) / (n * n))


@pytest.mark.full     # make test: tests/test_vitcod_components.py runs two tiles in the Amaranth simulator
def test_vitcod_tiles_bit_exact_and_cycle_model():
    """Two tiles (rows i mod 2, narrow per-tile row pointer memories, rows merged in order): every
    irregular head bit exact at full rate, and the cycle model equal to the RTL per head."""
    cfg = TILED["d16-t2"]
    heads = tiled_heads(cfg, np.random.default_rng(21), errors=False)
    result = run("d16-t2", cfg, heads, seed=21)
    assert result.passed, f"see {result.log}"
    check_cycle_model(cfg, heads, result.report)


@pytest.mark.full
@pytest.mark.parametrize("name", list(TILED))
def test_vitcod_tiles_sweep(name):
    """Tiled configurations: refused heads between good ones with idle cycles and backpressure, then
    at full rate the cycle model to the cycle (with ``merge_depth`` > 1 on heads that need it)."""
    cfg = TILED[name]
    heads = tiled_heads(cfg, np.random.default_rng(22), errors=True)
    result = run(name, cfg, heads, idle=0.3, stall=0.3, seed=22)
    assert result.passed, f"see {result.log}"
    heads = tiled_heads(cfg, np.random.default_rng(23), errors=True)
    result = run(name, cfg, heads, seed=23)
    assert result.passed, f"see {result.log}"
    check_cycle_model(cfg, heads, result.report)
    if cfg.merge_depth > 1:     # the heads need the deeper merger: with one row per tile they take longer
        one_row = run_cycles(dataclasses.replace(cfg, merge_depth=1), shapes_of(heads))
        assert one_row["total_cycles"] > result.report["total_cycles"]


def heads_for(name: str, cfg: VitcodConfig, seed: int, errors: bool):
    rng = np.random.default_rng(seed)
    n = cfg.max_tokens
    heads = []
    for sparsity in (0.0, 0.5, 0.9, 0.99):
        g = int(rng.integers(0, 4))
        heads.append(random_head(cfg, rng, nq=n - 1, nk=n, g=g, sparsity=sparsity, empty_rows=2))
    heads.append(random_head(cfg, rng, nq=n // 2 + 1, nk=n // 2 + 1, g=0, sparsity=0.7))      # G = 0
    heads.append(random_head(cfg, rng, nq=7, nk=7, g=7, sparsity=0.0))                         # G = N
    heads.append(random_head(cfg, rng, nq=n, nk=n // 2 + 3, g=2, sparsity=0.8))                # Nq > Nk
    heads.append(random_head(cfg, rng, nq=5, nk=n, g=1, sparsity=0.95, empty_rows=4))           # Nq < Nk
    # every CSR entry on the Sparser Engine (the host's split off): the same output, other cycles
    heads.append(random_head(cfg, rng, nq=n - 2, nk=n, g=2, sparsity=0.6, balance="none"))
    # two of the three global columns sent as CSR entries of every row (balance.globals_as_csr): the
    # same output, other cycles
    heads.append(random_head(cfg, rng, nq=n - 1, nk=n, g=3, sparsity=0.8, g_sent=1))
    if cfg.decoder:
        # layers of 1..Hc compressed heads, each loaded once and decoded by three heads
        for hc in range(1, cfg.decoder_heads + 1):
            heads += layer_heads(cfg, rng, nq=n - 3, nk=n, hc=hc, specs=[(2, 0.8, 0), (0, 0.5, 1), (n, 0.0, 0)])
    if errors:
        for pos, kind in ((1, "size"), (4, "row_ptr"), (7, "col_idx")):
            heads.insert(pos, bad_head(cfg, rng, kind))
        if cfg.decoder:
            # a refused head between two heads of a shared layer leaves the layer store alone
            heads.insert(len(heads) - 2, bad_head(cfg, rng, "size"))
            for kind in ("order", "layer_size", "layer"):   # these bring layer loads of their own
                heads.insert(9, bad_head(cfg, rng, kind))
    return heads


def run(name, cfg, heads, *, simulator="verilator", idle=0.0, stall=0.0, seed=0):
    jobs = save_jobs(BUILD / "jobs" / f"vitcod_{name}_{simulator}_{idle}_{seed}.npz", heads)
    return run_cocotb(VitcodAccelerator(cfg), top=DESIGN.top, config_name=DESIGN.config_name(cfg),
                      test_module=DESIGN.testbench, simulator=simulator, build_root=BUILD, seed=seed,
                      params={"config": dataclasses.asdict(cfg), "jobs": str(jobs), "seed": seed,
                              "idle": idle, "stall": stall})


def check_cycle_model(cfg, heads, report):
    model = run_cycles(cfg, shapes_of(heads))
    rtl = [h["cycles"] for h in report["heads"]]
    pred = [h["cycles"] for h in model["heads"]]
    assert len(rtl) == len(pred)
    assert pred == rtl, f"cycles per head: model {pred}, RTL {rtl}"
    assert model["total_cycles"] == report["total_cycles"]


# make test runs the decoder at d=16 (errors, idle/backpressure, full-rate cycle model); d16, d32 and
# d64-decoder run in make test-full (d16's build also runs the stream fuzzer in make test)
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.full) if n in ("d16", "d32", "d64-decoder",
                                                                                   "d16-w256", "d16-s8")
                                  else n for n in CONFIGS])
def test_vitcod_rtl_bit_exact_and_cycle_model(name, full):
    cfg = CONFIGS[name]
    # 1) errors between good heads, random idle and backpressure
    heads = heads_for(name, cfg, seed=1, errors=True)
    result = run(name, cfg, heads, idle=0.3, stall=0.3, seed=1)
    assert result.passed, f"see {result.log}"
    if name == "d32" and not full:
        return      # its full-rate cycle-model phase runs in make test-full
    # 2) full rate (no idle, no stall): the same RTL holds the cycle model within 5 %
    heads = heads_for(name, cfg, seed=2, errors=name == "d16")
    result = run(name, cfg, heads, seed=2)
    assert result.passed, f"see {result.log}"
    check_cycle_model(cfg, heads, result.report)


def test_vitcod_icarus_small():
    cfg = CONFIGS["d16"]
    rng = np.random.default_rng(3)
    heads = [random_head(cfg, rng, nq=9, nk=11, g=2, sparsity=0.6, empty_rows=1), bad_head(cfg, rng, "col_idx"),
             random_head(cfg, rng, nq=6, nk=6, g=0, sparsity=0.5)]
    result = run("d16", cfg, heads, simulator="icarus", idle=0.2, stall=0.2, seed=3)
    assert result.passed, f"see {result.log}"


@pytest.mark.full     # the decoder runs on Verilator in make test; Icarus runs test_vitcod_icarus_small
def test_vitcod_icarus_decoder():
    """The decoder's layer store on Icarus: a shared layer, a refused head between, a head without its layer."""
    cfg = CONFIGS["d64-decoder"]
    rng = np.random.default_rng(5)
    heads = layer_heads(cfg, rng, nq=9, nk=11, hc=2, specs=[(2, 0.5, 0), (0, 0.8, 1)])
    heads.insert(1, bad_head(cfg, rng, "size"))
    heads.append(bad_head(cfg, rng, "layer"))
    result = run("d64-decoder", cfg, heads, simulator="icarus", idle=0.2, stall=0.2, seed=3)
    assert result.passed, f"see {result.log}"


@pytest.mark.parametrize("name", ["d16", pytest.param("d16-t2", marks=pytest.mark.full)])
def test_testbench_catches_a_wrong_result(name):
    """The scoreboard can fail: the accelerator with one output bit flipped (tb/mutants.py) fails (on Icarus:
    the scoreboard is the simulator's no matter; Icarus builds in seconds what Verilator compiles in a minute)."""
    cfg = {**CONFIGS, **TILED}[name]
    rng = np.random.default_rng(4)
    heads = [random_head(cfg, rng, nq=6, nk=7, g=1, sparsity=0.5)]
    jobs = save_jobs(BUILD / "jobs" / "vitcod_corrupted.npz", heads)
    result = run_cocotb(FlipOutputBit(VitcodAccelerator(cfg)), top=DESIGN.top, config_name=f"vitcod_corrupted_{name}",
                        test_module=DESIGN.testbench, simulator="icarus", build_root=BUILD,
                        params={"config": dataclasses.asdict(cfg), "jobs": str(jobs), "seed": 0,
                                "idle": 0.0, "stall": 0.0})
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
