"""Stream fuzzing of the linear decode datapath (tb/linear_fuzz_tb.py): random programs, a third cut
at a random beat and the datapath reset there; every output and flag exact, nothing hangs (issue
"Hardening", item 3). 200 programs in make test (issue 21's floor) (1 000 in make test-full), on a d16 build."""

from pathlib import Path

import pytest

from attnforge.hw.designs import get_design
from attnforge.hw.linear.decode import LinearDecodeConfig
from attnforge.sim.runner import run_cocotb
from attnforge.tb.linear_decode_tb import default_requant

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"
DESIGN = get_design("linear-decode")
CFG = LinearDecodeConfig(d=16, macs=16, conv_taps=1, t_max=4, **default_requant(16, 1, "relu"))


@pytest.mark.parametrize("streams, seed", [(200, 1), pytest.param(1000, 2, marks=pytest.mark.full)])
def test_random_programs_with_resets(streams, seed):
    import dataclasses

    result = run_cocotb(DESIGN.build(CFG), top=DESIGN.top, config_name=DESIGN.config_name(CFG),
                        test_module="attnforge.tb.linear_fuzz_tb", simulator="verilator", build_root=BUILD,
                        seed=seed, params={"config": dataclasses.asdict(CFG), "streams": streams, "seed": seed})
    assert result.passed, f"see {result.log}"
    assert result.report["streams"] == streams and result.report["cut"] > streams // 5


@pytest.mark.full     # two more Verilator builds
@pytest.mark.parametrize("mutant", ["FlipOutputBit", "ExtraBeat"])
def test_program_fuzzing_catches_a_broken_datapath(mutant):
    """The fuzz bench can fail: a flipped output bit, or one output too many, fails it."""
    import dataclasses

    from attnforge.tb import mutants

    result = run_cocotb(getattr(mutants, mutant)(DESIGN.build(CFG)), top=DESIGN.top,
                        config_name=f"linear_fuzz_{mutant.lower()}", test_module="attnforge.tb.linear_fuzz_tb",
                        simulator="verilator", build_root=BUILD, seed=1,
                        params={"config": dataclasses.asdict(CFG), "streams": 50, "seed": 1, "keep_going": True})
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
    # keep_going (the fuzz benchmark): every stream ran, the broken ones counted, wrong outputs among them
    # (an extra beat may also leave the next stream waiting for an output it already had: a hang)
    report = result.report
    assert report["streams"] == 50 and report["failures"], report
    kinds = {f["kind"] for f in report["failures"]}
    assert "wrong_output" in kinds and kinds <= {"wrong_output", "hang"}, report["failures"][:3]
