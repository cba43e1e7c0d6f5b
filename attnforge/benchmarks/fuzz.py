"""Fuzzing benchmark (issue 21, "more in the benchmark"): the RTL stream fuzzers and the hypothesis
fuzzers at sizes ``make test`` cannot afford, written to ``bench/results/fuzz.json``.

* **RTL**: the cocotb stream fuzzers of ``make test`` (``tb/vitcod_fuzz_tb.py`` on the ViTCoD d16
  build, ``tb/linear_fuzz_tb.py`` on the linear d16 build, the configurations of
  ``tests/rtl/test_vitcod_fuzz.py`` and ``tests/rtl/test_linear_fuzz.py``), each run as several
  seeds of ``streams`` streams on Verilator, with ``keep_going``: a failed stream is recorded as a
  hang, a wrong verdict, a wrong output or a protocol break (``tb.streams.failure``) and the next
  one runs from a reset, so the figures count every failure, not only the first.
* **hypothesis**: ``tests/test_fuzz_loaders.py`` and ``tests/test_fuzz_golden.py`` under the
  ``long`` profile (``conftest.py``: fresh random examples each run, ``examples`` per test), one
  pytest process on one core; the examples each test ran (passing, failing, invalid) from
  hypothesis's statistics, the failed tests from pytest's JUnit XML. The test files come with the
  source checkout (the wheel holds no tests): the benchmark runs in a clone.

The JSON holds the command, the date, the sizes, the seeds, the streams run per accelerator with
their failures by kind, the examples per test, and the wall time of each part.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run", "SIZES", "SIZE_VARIABLES", "sizes", "parse_hypothesis_statistics"]

ROOT = Path(__file__).resolve().parents[2]
FUZZ_FILES = ("tests/test_fuzz_loaders.py", "tests/test_fuzz_golden.py")
#: (streams per seed, seeds, hypothesis examples per test): the full run (1,000 streams per seed as
#: make test-full, 3,000 examples per test as make fuzz; about an hour on 2 cores) and ``--quick``
#: (a smoke test). ``ATTNFORGE_FUZZ_STREAMS``, ``ATTNFORGE_FUZZ_SEEDS`` and ``ATTNFORGE_FUZZ_EXAMPLES``
#: override them (the committed run, docs/architecture.md, is one that fits 15 minutes).
SIZES = {"full": (1000, 2, 3000), "quick": (10, 1, 20)}
SIZE_VARIABLES = ("ATTNFORGE_FUZZ_STREAMS", "ATTNFORGE_FUZZ_SEEDS", "ATTNFORGE_FUZZ_EXAMPLES")
FAILURE_KINDS = ("hang", "wrong_verdict", "wrong_output", "protocol")


def _designs():
    """name -> (component factory, design, config, testbench module): the make-test fuzzers' builds."""
    from attnforge.hw.designs import get_design
    from attnforge.hw.linear.decode import LinearDecodeConfig
    from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
    from attnforge.linear_format import random_data_requant

    vitcod = VitcodConfig(head_dim=16, max_tokens=32, max_nnz=1024, macs=8, dense_lines=1, sparse_lines=4,
                          data_width=64)
    linear = LinearDecodeConfig(d=16, macs=16, conv_taps=1, t_max=4, **random_data_requant(16, 1, feature_map="relu"))
    vd, ld = get_design("vitcod"), get_design("linear-decode")
    return {
        "vitcod": (lambda: VitcodAccelerator(vitcod), vd, vitcod, "attnforge.tb.vitcod_fuzz_tb"),
        "linear": (lambda: ld.build(linear), ld, linear, "attnforge.tb.linear_fuzz_tb"),
    }


def _rtl(name: str, streams: int, seeds: list[int], build_root: Path) -> dict:
    from attnforge.sim.runner import run_cocotb

    make, design, cfg, module = _designs()[name]
    component = make()        # converted once (the runner reuses its Verilog for the next seeds)
    runs, failures = [], []
    start = time.monotonic()
    for seed in seeds:
        t0 = time.monotonic()
        result = run_cocotb(component, top=design.top, config_name=design.config_name(cfg), test_module=module,
                            simulator="verilator", build_root=build_root, seed=seed,
                            params={"config": dataclasses.asdict(cfg), "streams": streams, "seed": seed,
                                    "keep_going": True})
        report = result.report or {}
        if "streams" not in report:      # the testbench itself crashed: nothing to count
            raise RuntimeError(f"{name} fuzz seed {seed}: the testbench wrote no report; see {result.log}")
        for f in report.get("failures", []):
            failures.append({"seed": seed, **f})
        runs.append({"seed": seed, "streams": report["streams"], "whole": report["whole"], "cut": report["cut"],
                     "failed": len(report.get("failures", [])), "build_seconds": round(result.build_seconds, 1),
                     "wall_seconds": round(time.monotonic() - t0, 1)})
    counts = {kind: sum(1 for f in failures if f["kind"] == kind) for kind in FAILURE_KINDS}
    return {"config": dataclasses.asdict(cfg), "testbench": module, "seeds": seeds,
            "streams_run": sum(r["streams"] for r in runs), "whole": sum(r["whole"] for r in runs),
            "cut": sum(r["cut"] for r in runs), "hangs": counts["hang"], "wrong_verdicts": counts["wrong_verdict"],
            "wrong_outputs": counts["wrong_output"], "protocol_breaks": counts["protocol"],
            "failures": failures[:50], "runs": runs, "wall_seconds": round(time.monotonic() - start, 1)}


_TEST = re.compile(r"^(tests/\S+::\S+):\s*$")
_COUNTS = re.compile(r"- (\d+) passing, (\d+) failing, and (\d+) invalid test cases")


def parse_hypothesis_statistics(text: str) -> dict[str, dict]:
    """Per test (``file::name``): the passing, failing and invalid examples of all its phases,
    from pytest's ``--hypothesis-show-statistics`` output."""
    found, test = {}, None
    for line in text.splitlines():
        match = _TEST.match(line.strip())
        if match:
            test = match.group(1)
            found.setdefault(test, {"passing": 0, "failing": 0, "invalid": 0})
            continue
        match = _COUNTS.search(line)
        if match and test:
            for key, value in zip(("passing", "failing", "invalid"), match.groups()):
                found[test][key] += int(value)
    return found


def _hypothesis(examples: int, seed: int, work_dir: Path) -> dict:
    work_dir.mkdir(parents=True, exist_ok=True)
    junit = work_dir / f"fuzz_hypothesis_{os.getpid()}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist", "-p", "no:cacheprovider",
           "--hypothesis-show-statistics", f"--hypothesis-seed={seed}", f"--junitxml={junit}", *FUZZ_FILES]
    env = dict(os.environ, HYPOTHESIS_PROFILE="long", ATTNFORGE_FUZZ_EXAMPLES=str(examples))
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    stats = parse_hypothesis_statistics(proc.stdout)
    failed = []
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
        junit.unlink()
    if proc.returncode not in (0, 1) or not stats:
        raise RuntimeError(f"hypothesis fuzzers did not run (pytest exit {proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"{proc.stderr[-2000:]}")
    return {"files": list(FUZZ_FILES), "profile": "long", "max_examples": examples, "seed": seed,
            "tests": len(stats), "tests_failed": failed, "examples": stats,
            "examples_total": sum(s["passing"] + s["failing"] + s["invalid"] for s in stats.values()),
            "pytest_exit": proc.returncode, "wall_seconds": round(wall, 1)}


def sizes(quick: bool = False) -> tuple[int, int, int]:
    """(streams per seed, seeds, examples per test): ``SIZES``, each overridden by its variable."""
    from attnforge.errors import ConfigError

    chosen = list(SIZES["quick" if quick else "full"])
    for n, name in enumerate(SIZE_VARIABLES):
        text = os.environ.get(name)
        if text is None:
            continue
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"{name}={text!r}: must be a whole number >= 1")
        chosen[n] = int(text)
    return tuple(chosen)


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench fuzz") -> Path:
    streams, n_seeds, examples = sizes(quick)
    seeds = list(range(101, 101 + n_seeds))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_root = Path("build") / "bench" / "fuzz"
    start = time.monotonic()
    rtl = {name: _rtl(name, streams, seeds, build_root) for name in ("vitcod", "linear")}
    hyp = _hypothesis(examples, seeds[0], build_root)
    result = {
        "format": "attnforge.bench/1",
        "benchmark": "fuzz",
        "command": " ".join([*(f"{v}={os.environ[v]}" for v in SIZE_VARIABLES if v in os.environ), command]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "quick": quick,
        "streams_per_seed": streams,
        "rtl": rtl,
        "hypothesis": hyp,
        "hangs": sum(r["hangs"] for r in rtl.values()),
        "wrong_verdicts": sum(r["wrong_verdicts"] for r in rtl.values()),
        "wrong_outputs": sum(r["wrong_outputs"] for r in rtl.values()),
        "wall_seconds": round(time.monotonic() - start, 1),
    }
    path = out_dir / ("fuzz_quick.json" if quick else "fuzz.json")
    write_json_atomic(path, result)
    return path
