"""The fuzz benchmark (attnforge/benchmarks/fuzz.py): its sizes, hypothesis's statistics as it reads
them, and the kinds it counts failed fuzz streams as (tb/streams.py: failure)."""

import json

import pytest

from attnforge.benchmarks import run_benchmarks
from attnforge.benchmarks.fuzz import SIZES, parse_hypothesis_statistics, sizes
from attnforge.errors import ConfigError
from attnforge.tb.streams import failure

STATISTICS = """\
============================ Hypothesis Statistics =============================
tests/test_fuzz_loaders.py::test_arbitrary_fields[masks]:

  - during reuse phase (0.01 seconds):
    - Typical runtimes: ~ 3ms, of which < 1ms in data generation
    - 2 passing, 0 failing, and 0 invalid test cases

  - during generate phase (1.18 seconds):
    - Typical runtimes: ~ 3-39 ms, of which ~ 1-24 ms in data generation
    - 40 passing, 1 failing, and 2 invalid test cases
    - Events:
      * 2.38%, gave up because: reject() in downcast (line 544)

  - Stopped because settings.max_examples=40


tests/test_fuzz_golden.py::test_vitcod_head_checks:

  - during generate phase (0.34 seconds):
    - 7 passing, 0 failing, and 7 invalid test cases
"""


def test_hypothesis_statistics_summed_over_phases():
    stats = parse_hypothesis_statistics(STATISTICS)
    assert stats == {"tests/test_fuzz_loaders.py::test_arbitrary_fields[masks]": {"passing": 42, "failing": 1,
                                                                                  "invalid": 2},
                     "tests/test_fuzz_golden.py::test_vitcod_head_checks": {"passing": 7, "failing": 0, "invalid": 7}}
    assert parse_hypothesis_statistics("6 passed in 2.81s") == {}


def test_sizes_from_the_environment(monkeypatch):
    for name in ("ATTNFORGE_FUZZ_STREAMS", "ATTNFORGE_FUZZ_SEEDS", "ATTNFORGE_FUZZ_EXAMPLES"):
        monkeypatch.delenv(name, raising=False)
    assert sizes() == SIZES["full"] and sizes(quick=True) == SIZES["quick"]
    monkeypatch.setenv("ATTNFORGE_FUZZ_STREAMS", "120")
    monkeypatch.setenv("ATTNFORGE_FUZZ_EXAMPLES", "7")
    assert sizes() == (120, SIZES["full"][1], 7)
    monkeypatch.setenv("ATTNFORGE_FUZZ_SEEDS", "0")
    with pytest.raises(ConfigError, match=r"ATTNFORGE_FUZZ_SEEDS='0': must be a whole number >= 1"):
        sizes()


@pytest.mark.parametrize("message,kind", [
    ("stream 3 (['good'], cut at None): timed out after 2400 cycles (DUT hung or too slow); 0 of 4 output beats",
     "hang"),
    ("cycle 812: payload changed while valid and not ready", "protocol"),
    ("head 1 ({'nq': 3}): RTL output differs from the golden model", "wrong_output"),
    ("2 output beat(s) after the last expected one (within 16 cycles): [1, 2]", "wrong_output"),
    ("stream 4 (cut at beat 9): output 2: RTL [1, 2] != golden [1, 3]", "wrong_output"),
    ("output 5: RTL [0] != golden [1]", "wrong_output"),
    ("got 7 outputs, expected 6", "wrong_output"),
    ("stream 7 (['col_idx'], cut at None): error 0x2, expected 0x4", "wrong_verdict"),
    ("cycle 90: overflow flags RTL 1 != golden 0 after input beat 4", "wrong_verdict"),
])
def test_failure_kinds(message, kind):
    assert failure(5, AssertionError(message)) == {"stream": 5, "kind": kind, "message": message}


@pytest.mark.full     # two Verilator builds of the d16 accelerators (minutes) and the hypothesis fuzzers
@pytest.mark.timeout(1800)
def test_fuzz_bench_quick(tmp_path):
    [path] = run_benchmarks(tmp_path, ["fuzz"], quick=True, command="pytest")
    result = json.loads(path.read_text())
    streams, seeds, examples = SIZES["quick"]
    for name in ("vitcod", "linear"):
        rtl = result["rtl"][name]
        assert rtl["streams_run"] == streams * seeds == rtl["whole"] + rtl["cut"]
        assert rtl["hangs"] == rtl["wrong_verdicts"] == rtl["wrong_outputs"] == 0 and rtl["failures"] == []
    hyp = result["hypothesis"]
    assert hyp["tests"] > 20 and hyp["tests_failed"] == []
    assert all(s["passing"] >= 1 for s in hyp["examples"].values())
