"""Test-session settings shared by tests/ and tests/rtl/.

* Verilator's C++ goes through one ccache folder per clone (``build/ccache``), so
  the design-independent runtime compiles once per clone and every figure of
  ``make test`` time is for a clean cache (a user's own runs use ccache's default).
* One thread per test worker (``OMP_NUM_THREADS=1``), Verilator's C++ unoptimized (``-O0``).
* ``--full`` (``make test-full``) also runs the tests marked ``full``: long
  sweeps, extra RTL configurations and deeper runs that CI leaves out.
* Hypothesis (the ``test_fuzz_*`` files) runs the ``ci`` profile: derandomized, so
  every run draws the same examples, a fixed example count that keeps all fuzz
  tests together under 20 s on one core, no example database in the clone.
  ``HYPOTHESIS_PROFILE=long`` (``make fuzz``) draws thousands per test, fresh each run.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("CCACHE_DIR", str(ROOT / "build" / "ccache"))
# Two test workers share two cores: one thread each, in torch here and in the simulators' Python.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Verilator builds of the tests unoptimized (sim/runner.py): their simulations are short, and the C++ of
# the bigger designs compiles about a quarter faster.
os.environ.setdefault("ATTNFORGE_VERILATOR_CFLAGS", "-O0")

# database=None: no .hypothesis/ folder in the clone; a failure prints its minimal example instead.
settings.register_profile("ci", derandomize=True, max_examples=40, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
# ATTNFORGE_FUZZ_EXAMPLES: the long profile's examples per test (the fuzz benchmark, attnforge bench fuzz, sets it).
settings.register_profile("long", max_examples=int(os.environ.get("ATTNFORGE_FUZZ_EXAMPLES", "3000")), deadline=None,
                          database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", help="also run the tests marked `full` (make test-full)")


# Files whose tests take tens of seconds (RTL builds, synthesis, training fixtures):
# run first, so that the parallel workers finish together on the many short tests.
HEAVY_FIRST = ("tests/rtl/", "tests/test_bench.py", "tests/test_synth.py", "tests/test_vitcod_flow.py",
               "tests/test_linear_speculative.py", "tests/test_tickets_attacks.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(HEAVY_FIRST))   # stable: order kept within
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="in make test-full only (long; not run by CI)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def full(request) -> bool:
    """Whether this is ``make test-full`` (tests may then use more cases)."""
    return request.config.getoption("--full")
