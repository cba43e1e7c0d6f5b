"""Test-session settings shared by tests/ and tests/rtl/.

* Verilator's C++ goes through one ccache folder per clone (``build/ccache``), so
  the design-independent runtime compiles once per clone and every figure of
  ``make test`` time is for a clean cache (a user's own runs use ccache's default).
* ``--full`` (``make test-full``) also runs the tests marked ``full``: long
  sweeps, extra RTL configurations and deeper runs that CI leaves out.
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("CCACHE_DIR", str(ROOT / "build" / "ccache"))


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
