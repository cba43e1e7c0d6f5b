"""The ``attnforge`` command: one entry point, a subcommand per job.

    attnforge verilog mac-line -o build/mac_line.v      # generate (and lint) Verilog
    attnforge sim mac-line --simulator icarus --waves    # RTL vs golden model
    attnforge synth mac-line --device ecp5-85k           # Yosys + nextpnr report
    attnforge bench                                      # figures -> bench/results/
    attnforge demo                                       # all of the above, once

Every generator parameter of a design becomes an option (``--macs 16``); a value
the generator refuses is reported with what it accepts, and nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import typing
from pathlib import Path

__all__ = ["main", "build_parser", "command_group", "print_json"]

#: Modules that add commands; each defines ``register(subparsers)``. Several
#: modules may add to one group (``attnforge vitcod train`` from the algorithm,
#: ``attnforge vitcod sim`` from the accelerator) through ``command_group``.
_COMMAND_MODULES: list[str] = [
    "attnforge.algo.linear.cli",
    "attnforge.algo.vitcod.cli",
    "attnforge.algo.tickets.cli",
    "attnforge.sim.vitcod_cli",
    "attnforge.sim.linear_cli",
]


def command_group(subparsers, name: str, help: str):
    """The sub-subparsers of group ``name`` (``attnforge NAME ...``), created on first use."""
    groups = subparsers.__dict__.setdefault("_attnforge_groups", {})
    if name not in groups:
        parser = subparsers.add_parser(name, help=help, description=help)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    return groups[name]


def _designs():
    from attnforge.hw.designs import DESIGNS
    return DESIGNS


def _param_type(annotation):
    """int for ``int`` and ``int | None`` annotations, and likewise for float/str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    base = args[0]
    if base is bool:
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    return base if base in (int, float, str) else str


def _add_design_params(parser: argparse.ArgumentParser) -> None:
    """Add ``design`` and every design's generator parameters (``--macs`` ...) to ``parser``."""
    designs = _designs()
    parser.add_argument("design", choices=sorted(designs), help="block to build: " + "; ".join(
        f"{d.name}: {d.summary}" for d in designs.values()))
    seen = set()
    group = parser.add_argument_group("generator parameters (defaults in brackets)")
    for d in designs.values():
        hints = typing.get_type_hints(d.config_cls)
        for name, _, default in d.config_fields():
            if name in seen:
                continue
            seen.add(name)
            group.add_argument(f"--{name.replace('_', '-')}", dest=f"param_{name}", type=_param_type(hints[name]),
                               default=None, metavar="N",
                               help=f"{d.name}: {name} [{'auto' if default is None else default}]")


def _config_from_args(args):
    design = _designs()[args.design]
    params = {name: getattr(args, f"param_{name}") for name, _, _ in design.config_fields()
              if getattr(args, f"param_{name}", None) is not None}
    return design, design.make_config(**params)


def print_json(obj, path: str | None) -> None:
    """Write ``obj`` as JSON to ``path`` (creating folders), or print it when ``path`` is None."""
    text = json.dumps(obj, indent=2, default=str)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
        print(f"wrote {path}")
    else:
        print(text)


# ---------------------------------------------------------------------------- verilog

def cmd_verilog(args) -> int:
    from attnforge.hw.verilog import write_verilog

    design, config = _config_from_args(args)
    out = Path(args.output) if args.output else Path("build") / "verilog" / design.config_name(config) / f"{design.top}.v"
    if out.is_dir() or args.output and args.output.endswith("/"):
        out = out / f"{design.top}.v"
    path = write_verilog(design.build(config), design.top, out)
    print(f"wrote {path} (top module {design.top})")
    if args.lint:
        from attnforge.sim.lint import WAIVERS, lint_verilog

        result = lint_verilog(path, design.top)
        if not result.clean:
            print(f"verilator --lint-only -Wall found problems in {path}:", file=sys.stderr)
            for line in result.messages:
                print("  " + line, file=sys.stderr)
            return 1
        print(f"lint clean: verilator --lint-only -Wall with waivers {WAIVERS.name}")
    return 0


# ---------------------------------------------------------------------------- sim

def cmd_sim(args) -> int:
    from attnforge.sim.runner import simulate

    design, config = _config_from_args(args)
    result = simulate(design, config, seed=args.seed, simulator=args.simulator, waves=args.waves or None,
                      build_root=args.build_root)
    summary = {
        "design": design.name,
        "config": config.__dict__,
        "simulator": result.simulator,
        "bit_exact": result.passed,
        "tests": result.tests,
        "failed": result.failed,
        "build_dir": str(result.build_dir),
        "run_dir": str(result.run_dir),
        "waves": str(result.waves) if result.waves else None,
        **({"measured": result.report} if result.report else {}),
    }
    print_json(summary, args.json)
    if result.waves:
        print(f"waveform: {result.waves} (open with gtkwave or surfer)")
    if not result.passed:
        print(f"FAILED: {result.failed} of {result.tests} testbench tests; log: {result.log}",
              file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------- synth

def cmd_synth(args) -> int:
    from attnforge.fpga.synth import synthesize

    design, config = _config_from_args(args)
    out = Path(args.output) if args.output else Path("build") / "synth" / design.config_name(config) / args.device
    report = synthesize(design.build(config), top=design.top, device=args.device, out_dir=out, seed=args.seed,
                        router=args.router, target_mhz=args.target_mhz)
    short = {k: report[k] for k in ("design", "device", "luts", "ffs", "dsp", "bram", "fmax_mhz", "shell_ffs")}
    print(json.dumps(short, indent=2))
    print(f"full report: {out / 'report.json'}")
    return 0


# ---------------------------------------------------------------------------- bench, demo

def cmd_bench(args) -> int:
    from attnforge.benchmarks import run_benchmarks

    run_benchmarks(Path(args.output), args.names, quick=args.quick,
                   command=" ".join(["attnforge", *sys.argv[1:]]))
    return 0


def cmd_demo(args) -> int:
    from attnforge.demo import run_demo

    return run_demo(Path(args.output))


def build_parser() -> argparse.ArgumentParser:
    from attnforge.fpga.synth import DEVICES, ROUTERS
    from attnforge.sim.tools import SIMULATORS

    parser = argparse.ArgumentParser(
        prog="attnforge",
        description="Hardware generator for efficient attention: generate Verilog, check it bit for bit "
                    "against golden models in simulation, and synthesize it on the open FPGA toolchain.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("verilog", help="generate a block's Verilog (and lint it)",
                       description="Write the Verilog of one configuration of a block, then lint it with "
                                   "`verilator --lint-only -Wall` (Amaranth's style warnings waived, see "
                                   "sim/amaranth_waivers.vlt). Exit status 1 if lint finds anything.")
    _add_design_params(p)
    p.add_argument("-o", "--output", help="Verilog file to write (or a folder) "
                                          "[build/verilog/<config>/<top>.v]")
    p.add_argument("--no-lint", dest="lint", action="store_false", help="skip the Verilator lint")
    p.set_defaults(func=cmd_verilog)

    p = sub.add_parser("sim", help="simulate a block's RTL against its golden model",
                       description="Build one configuration for a simulator and run its cocotb testbench, "
                                   "which compares the RTL bit for bit with the integer golden model under "
                                   "random data, idle cycles and backpressure. Prints a JSON summary.")
    _add_design_params(p)
    p.add_argument("--simulator", choices=SIMULATORS, default=None,
                   help="RTL simulator [$ATTNFORGE_SIM or verilator]")
    p.add_argument("--waves", action="store_true",
                   help="record a waveform (VCD on Verilator, FST on Icarus); also ATTNFORGE_WAVES=1")
    p.add_argument("--seed", type=int, default=0, help="seed of the random stimulus [0]")
    p.add_argument("--build-root", default="build/sim", help="where per-configuration builds go [build/sim]")
    p.add_argument("--json", metavar="OUT", help="write the summary to this file instead of stdout")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("synth", help="synthesize and place-and-route a block, report resources and Fmax",
                       description="Run Yosys and nextpnr (YoWASP builds) on one configuration wrapped in a "
                                   "two-pin shell (fpga/shell.py), and write a JSON report: LUTs, FFs, DSP "
                                   "blocks, block RAMs, Fmax.")
    _add_design_params(p)
    p.add_argument("--device", choices=sorted(DEVICES), default="ecp5-85k", help="FPGA [ecp5-85k]")
    p.add_argument("-o", "--output", help="output folder [build/synth/<config>/<device>]")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed [1]")
    p.add_argument("--router", choices=ROUTERS,
                   help="nextpnr router [the device's: router2 on ECP5]; try the other if routing stalls")
    p.add_argument("--target-mhz", type=float,
                   help="nextpnr's clock target [the device's: 150 on ECP5, 48 on iCE40]; the report gives what "
                        "was reached")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("bench", help="measure cycles, generation time, simulator speed and synthesis",
                       description="Run the benchmarks and write JSON (with the command that made it) "
                                   "under bench/results/.")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run [all]")
    p.add_argument("-o", "--output", default="bench/results", help="results folder [bench/results]")
    p.add_argument("--quick", action="store_true", help="shorter runs (for smoke tests)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the walking skeleton end to end: generate, lint, simulate, synthesize",
                       description="Generate the MAC line, lint it, check it against the golden model on "
                                   "Verilator and Icarus, place and route it on ECP5-85k, print the report.")
    p.add_argument("-o", "--output", default="build/demo", help="output folder [build/demo]")
    p.set_defaults(func=cmd_demo)

    # Command groups of the algorithm and accelerator areas (`attnforge vitcod ...`):
    # each module has `register(subparsers)` adding its subcommand with `func` set.
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"attnforge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
