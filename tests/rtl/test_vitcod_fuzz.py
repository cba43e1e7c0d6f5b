"""Stream fuzzing of the ViTCoD accelerator (tb/vitcod_fuzz_tb.py): random good and malformed heads,
a third of the streams cut mid-head and the accelerator reset there; nothing hangs, every verdict and
every good head's output exact (issue "Hardening", item 3). 200 streams in make test (issue 21's floor), 1000 in
make test-full; the build is the d16 configuration's of tests/rtl/test_vitcod.py."""

import dataclasses
from pathlib import Path

import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
from attnforge.sim.runner import run_cocotb

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
DESIGN = get_design("vitcod")
CFG = VitcodConfig(head_dim=16, max_tokens=32, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=4, data_width=64)


@pytest.mark.parametrize("streams, seed", [(200, 1), pytest.param(1000, 2, marks=pytest.mark.full)])
def test_random_streams_with_resets(streams, seed):
    result = run_cocotb(VitcodAccelerator(CFG), top=DESIGN.top, config_name=DESIGN.config_name(CFG),
                        test_module="attnforge.tb.vitcod_fuzz_tb", simulator="verilator", build_root=BUILD,
                        seed=seed, params={"config": dataclasses.asdict(CFG), "streams": streams, "seed": seed})
    assert result.passed, f"see {result.log}"
    report = result.report
    assert report["streams"] == streams and report["cut"] > streams // 5 and report["whole"] > streams // 2


@pytest.mark.full     # two more Verilator builds
@pytest.mark.parametrize("mutant", ["FlipOutputBit", "ExtraBeat"])
def test_stream_fuzzing_catches_a_broken_accelerator(mutant):
    """The fuzz bench can fail: a flipped output bit, or one beat too many, fails it."""
    from attnforge.tb import mutants

    result = run_cocotb(getattr(mutants, mutant)(VitcodAccelerator(CFG)), top=DESIGN.top,
                        config_name=f"vitcod_fuzz_{mutant.lower()}", test_module="attnforge.tb.vitcod_fuzz_tb",
                        simulator="verilator", build_root=BUILD, seed=1,
                        params={"config": dataclasses.asdict(CFG), "streams": 50, "seed": 1, "keep_going": True})
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
    # keep_going (the fuzz benchmark): every stream ran, the broken ones counted, wrong outputs among them
    # (an extra beat may also leave the next stream waiting for an output it already had: a hang)
    report = result.report
    assert report["streams"] == 50 and report["failures"], report
    kinds = {f["kind"] for f in report["failures"]}
    assert "wrong_output" in kinds and kinds <= {"wrong_output", "hang"}, report["failures"][:3]
