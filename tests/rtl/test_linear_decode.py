"""Runs the linear decode datapath's cocotb testbench (tb/linear_decode_tb.py).

Verilator for d = 16/32/64, K = 1 and K > 1, one and two heads, G = 1 and G > 1
row groups, and the overflow limit, for both feature maps (relu and relu_norm,
whose random programs also reach den = 0); one small case per feature map on
Icarus; a corrupted DUT that the scoreboard must catch. Every run also has
random idle cycles on the input and backpressure on the output (second half of
the random program), and after every input beat compares the per-head overflow
flags with the golden model's. The testbench skips (visibly) the tests a case
does not ask for; each case asserts how many ran. Builds dominate the time: the
Verilator cases run in ``make test-full``; ``make test`` runs the Icarus cases and the token limit
through ``linear sim`` on Icarus.
"""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.linear.config import STATE_WRITE_GAP
from attnforge.hw.linear.decode import LinearDecodeConfig
from attnforge.hw.linear.cycles import LinearDecodeCycles, steady_cycles_per_token
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.tb.linear_decode_tb import default_requant
from attnforge.tb.mutants import FlipOutputBit

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
DESIGN = get_design("linear-decode")


def _config(**kw):
    return LinearDecodeConfig(**kw, **default_requant(kw["d"], kw.get("conv_taps", 4), kw.get("feature_map", "relu")))


CASES = {
    # name: (config, tb params)
    # G = 1, K = 1, verify modes incl. partial and zero acceptance in the rate run.
    "d16-M16-K1": (dict(d=16, macs=16, conv_taps=1, t_max=4),
                   dict(tokens=1600, rate_tokens=120, rate_modes=[[0, 1], [4, 4], [4, 1], [3, 0]])),
    # G = 4 row groups, K = 3, two time-multiplexed heads, and a max_tokens of 64 that the
    # extreme-value run reaches exactly (then passes: flag) and the random run passes too.
    "d32-M8-K3-H2-limit64": (dict(d=32, macs=8, conv_taps=3, t_max=8, heads=2, max_tokens=64),
                             dict(tokens=500, limit_test=True)),
    # d = 64 with G = 2 (M = 32 keeps the Verilator build short; the benchmark runs
    # M = 64 bit for bit too), with snapshot banks (commit(a) without replay).
    "d64-M32-K4-snap": (dict(d=64, macs=32, conv_taps=4, t_max=4, snapshots=True),
                   dict(tokens=500, rate_tokens=64, rate_modes=[[0, 1], [4, 4], [4, 2]])),
    # The normalized variant (z as one more state column, divider): the same shapes.
    "norm-d16-M16-K1": (dict(d=16, macs=16, conv_taps=1, t_max=4, feature_map="relu_norm"),
                        dict(tokens=2400, rate_tokens=120, rate_modes=[[0, 1], [4, 4], [4, 1], [3, 0]])),
    "norm-d32-M8-K3-H2-limit64": (dict(d=32, macs=8, conv_taps=3, t_max=8, heads=2, max_tokens=64,
                                       feature_map="relu_norm"),
                                  dict(tokens=500, limit_test=True, rate_tokens=48,
                                       rate_modes=[[0, 1], [8, 8], [8, 3]])),
    "norm-d64-M32-K4-snap": (dict(d=64, macs=32, conv_taps=4, t_max=4, snapshots=True, feature_map="relu_norm"),
                             dict(tokens=400, rate_tokens=64, rate_modes=[[0, 1], [4, 4], [4, 2]])),
}


# Every Verilator case runs in make test-full (the d = 32 limit case alone took 71 s of a 2-core CI run).
# make test covers the datapath on Icarus (test_linear_decode_icarus_small: relu and relu_norm, snapshot
# banks), in the model co-simulation (tests/rtl/test_linear_cosim.py), the fuzzer's random configurations
# on Verilator (tests/rtl/test_linear_fuzz.py) and the token limit through `linear sim` on Icarus
# (test_linear_sim_reports_overflow).
FULL_ONLY = {"d16-M16-K1", "d64-M32-K4-snap", "norm-d16-M16-K1", "norm-d32-M8-K3-H2-limit64", "norm-d64-M32-K4-snap",
             "d32-M8-K3-H2-limit64"}


def _tests_run(tb: dict) -> int:
    """The testbench's tests these parameters run: the random program, plus the token
    limit and the rate run when asked for (the others are skipped, not passed)."""
    return 1 + bool(tb.get("limit_test")) + bool(tb.get("rate_tokens"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.full) if n in FULL_ONLY else n for n in CASES])
def test_linear_decode_rtl_matches_golden_verilator(name):
    cfg_kw, tb = CASES[name]
    config = _config(**cfg_kw)
    result = simulate(DESIGN, config, seed=sum(map(ord, name)), tb_params=tb, simulator="verilator",
                      build_root=BUILD)
    assert (result.tests, result.skipped) == (_tests_run(tb), 3 - _tests_run(tb)), f"see {result.log}"
    assert result.passed, f"{result.failed} failed; see {result.log}"
    # Past max_tokens the flag rose (head 0 in the limit test; the monitor checked it after every beat).
    assert result.report["overflow"][0] == bool(tb.get("limit_test"))
    if tb.get("rate_tokens"):
        check_cycle_model(config, result.report)
        assert re.fullmatch("[0-9a-f]{64}", result.report["output_digest"])  # what `linear sim` reports


def test_linear_sim_reports_overflow(tmp_path, capsys):
    """``attnforge linear sim --tensors`` past ``--max-tokens``: still bit exact (exit 0: the RTL wraps as the
    golden model does, flag for flag after every beat), but the JSON says ``overflow`` and stderr warns.
    A small two-head configuration with max_tokens 8 on Icarus (the limit64 case's shape at a fraction of
    its cycles: it took 29 s of make test); the file's scales give exactly its requantizers."""
    import json

    from attnforge.cli import main
    from attnforge.formats.linear_tensors import save_linear_tensors

    cfg_kw = dict(d=8, macs=4, conv_taps=2, t_max=2, heads=2, max_tokens=8)
    config = _config(**cfg_kw)
    rng = np.random.default_rng(0)
    n = config.max_tokens + 6
    path = save_linear_tensors(tmp_path / "t.npz", q=rng.integers(-128, 128, (n, 8)),
                               k=rng.integers(-128, 128, (n, 8)), v=rng.integers(-128, 128, (n, 8)),
                               taps=rng.integers(-128, 128, (2, 8)),
                               attn_scale=config.attn_multiplier / 2 ** config.attn_shift,
                               conv_scale=config.conv_multiplier / 2 ** config.conv_shift)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in cfg_kw.items()]
    out = tmp_path / "sim.json"
    assert main(["linear", "sim", "--tensors", str(path), *args, "--build-root", str(BUILD),
                 "--simulator", "icarus", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["bit_exact"] and report["tests"] == 1 and report["tokens"] == n
    assert report["overflow"] == [True, False]
    assert report["config"]["attn_multiplier"] == config.attn_multiplier
    assert "WARNING: overflow on head(s) [0]" in capsys.readouterr().err


def check_cycle_model(config, report):
    """The cycle model predicts every output transfer's cycle exactly (so every mode's steady
    cycles per token too; the 5 % bounds below say what a looser model would still pass)."""
    model = LinearDecodeCycles.of(config)
    for row in report["modes"]:
        outs = model.run([tuple(op) for op in row["ops"]])
        rtl = [c - row["first_input_cycle"] for c in row["output_cycles"]]
        assert len(outs) == len(rtl)
        want = steady_cycles_per_token(outs, row["verify"] or None)
        got = row["steady_cycles_per_output"]
        assert abs(want - got) <= 0.05 * got, f"mode {row['verify']}/{row['accept']}: model {want} vs RTL {got}"
        assert max(abs(a - b) for a, b in zip(outs, rtl)) <= 0.05 * rtl[-1]
        assert outs == rtl, f"mode {row['verify']}/{row['accept']}: the cycle model is not exact"
        words = config.groups * config.columns
        if not row["verify"] and 2 * (words + 3) >= words + config.pipeline_depth + 2:
            # One decode token: the G*d-cycle pass plus token beat, commit and history shift; a pass
            # shorter than STATE_WRITE_GAP words waits for the previous one's writes instead. (When
            # two passes take less than one pass plus the pipeline, a pass waits for its output
            # half instead: relu_norm at d = 16, whose pipeline is 28 stages deep.)
            assert words <= got <= words + (3 if words >= STATE_WRITE_GAP else STATE_WRITE_GAP - 1)


# the iCE40's pipelining too: its draft block sees a write up to a cycle after a read's address
@pytest.mark.parametrize("feature_map, pipelining", [("relu", "ecp5"), ("relu_norm", "ecp5"), ("relu", "ice40")])
def test_linear_decode_icarus_small(feature_map, pipelining):
    config = _config(d=8, macs=4, conv_taps=2, t_max=3, heads=2, snapshots=True, feature_map=feature_map,
                     pipelining=pipelining)
    result = simulate(DESIGN, config, seed=3, tb_params=dict(tokens=60), simulator="icarus", build_root=BUILD)
    assert (result.tests, result.skipped) == (1, 2) and result.passed, f"see {result.log}"


def test_linear_decode_icarus_ice40_cut():
    """The products cut for the iCE40's SB_MAC16 and its pipelining (dsp_family and pipelining ice40, what
    `attnforge synth --device ice40-up5k` builds): a UP5K configuration of docs/board.md (d = 6, M = 3,
    K = 2, T = 1, max_tokens 64), its readout's 22-bit state as 16 + 6 bits and the requantizers'
    (random-data multipliers, not shifts) 32-bit numerator as 16 + 16 and 17-bit convolution as 15 + 2,
    bit exact against the golden model on Icarus, the row-group sums' RAM read registered (6 columns); the
    cycle model, with this pipelining's depth (21, 5 less than the ECP5's), exact against the RTL on the rate
    run."""
    config = _config(d=6, macs=3, conv_taps=2, t_max=1, max_tokens=64, dsp_family="ice40", pipelining="ice40")
    fmt = config.format
    assert (fmt.state_format.width, fmt.numerator_format.width, fmt.conv_format.width) == (22, 32, 17)
    assert config.attn_multiplier & (config.attn_multiplier - 1)      # a real product, not a shift
    assert config.pipe.group_sum_register and config.columns >= 3 and config.groups > 1
    assert config.pipeline_depth == 21 == dataclasses.replace(config, pipelining="ecp5").pipeline_depth - 5
    tb = dict(tokens=40, rate_tokens=24, rate_modes=[[0, 1], [1, 1]])
    result = simulate(DESIGN, config, seed=15, tb_params=tb, simulator="icarus", build_root=BUILD)
    assert (result.tests, result.skipped) == (2, 1) and result.passed, f"see {result.log}"
    check_cycle_model(config, result.report)


def test_snapshot_banks_stay_zero_after_a_reset_behind_a_pass():
    """K = 1 with snapshot banks: nothing (no history shift) spaces a RESET from the pass before it, so the
    pass's last elements are still in the fetch stages when the RESET marks the head's banks zero. The
    snapshot bank's flag used to be cleared there, after the RESET, and the next block read the stale
    state (the generator fuzz's draw of 2026-12-18, d = 32, found it; d = 8 shows it too)."""
    config = _config(d=8, macs=8, conv_taps=1, t_max=1, snapshots=True)
    result = simulate(DESIGN, config, seed=20261218, tb_params=dict(tokens=150), simulator="icarus", build_root=BUILD)
    assert (result.tests, result.skipped) == (1, 2) and result.passed, f"see {result.log}"


@pytest.mark.parametrize("feature_map", ["relu", "relu_norm"])
def test_linear_decode_short_passes_wait_for_their_writes(feature_map):
    """d = 2, M = 1: passes of 4 (relu) or 6 (relu_norm: the z column) state words, so with
    relu a pass starts no earlier than STATE_WRITE_GAP cycles after the previous one's last
    issue (its words are written back four cycles after their fetch). Random program and
    rate runs (decode, verify with all, some and no tokens accepted) bit exact, every output
    transfer on the cycle model's cycle (Icarus: no C++ build)."""
    config = _config(d=2, macs=1, conv_taps=1, t_max=3, feature_map=feature_map)
    tb = dict(tokens=80, rate_tokens=24, rate_modes=[[0, 1], [3, 3], [3, 1], [2, 0]])
    result = simulate(DESIGN, config, seed=7, tb_params=tb, simulator="icarus", build_root=BUILD)
    assert (result.tests, result.skipped) == (2, 1) and result.passed, f"see {result.log}"
    check_cycle_model(config, result.report)


@pytest.mark.parametrize("d", [4, 3, 2])
def test_linear_decode_ice40_group_sums_at_the_shortest_passes(d):
    """The iCE40 pipelining's registered row-group sum read (``group_sum_register``) where a sum is read back
    soonest: d = 3, M = 1, one token per pass, so the next row group reads a sum 3 cycles after its element,
    the least the registered read allows; at d = 4 the sum is written from the numerator's register a cycle
    later, read back 4 cycles after its element, the least that allows; at d = 2 (2 columns) the read stays
    unregistered. Decode and verify (some and no tokens accepted) bit exact, every output transfer on the
    cycle model's cycle."""
    config = _config(d=d, macs=1, conv_taps=1, t_max=1, pipelining="ice40", dsp_family="ice40")
    assert config.groups == d and config.columns == d and config.pipe.group_sum_register
    tb = dict(tokens=60, rate_tokens=24, rate_modes=[[0, 1], [1, 1], [1, 0]])
    result = simulate(DESIGN, config, seed=11 + d, tb_params=tb, simulator="icarus", build_root=BUILD)
    assert (result.tests, result.skipped) == (2, 1) and result.passed, f"see {result.log}"
    check_cycle_model(config, result.report)


def test_testbench_catches_a_wrong_result():
    import dataclasses

    config = _config(d=4, macs=4, conv_taps=1, t_max=1)
    result = run_cocotb(FlipOutputBit(DESIGN.build(config)), top="linear_decode", config_name="linear_decode_corrupted",
                        test_module=DESIGN.testbench,
                        params={"config": dataclasses.asdict(config), "tokens": 20},
                        simulator="icarus", build_root=BUILD)      # a mutant builds in seconds on Icarus
    assert (result.tests, result.skipped) == (1, 2) and result.failed == 1
