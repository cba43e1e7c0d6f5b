"""``attnforge verilog|sim|synth DESIGN``: generate, simulate and synthesize one configuration of a block.

Each design is its own subcommand whose options are its configuration
dataclass's fields (``attnforge synth mac-line --macs 8``, ``attnforge synth
vitcod --head-dim 32``): ``--help`` lists only that design's parameters, and an
option of another design is refused. The ViTCoD accelerator and the linear
decode datapath are simulated by ``attnforge vitcod sim`` and ``attnforge linear
sim`` (with masks, tensors and cycle reports), so ``attnforge sim`` has only the
blocks without a command of their own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from attnforge.errors import check_int
from attnforge.hw.common import DSP_CUTS
from attnforge.hw.designs import DESIGNS
from attnforge.hw.linear.config import FAMILY_FIELDS, REGISTER_CHOICES

from . import EXIT_BAD_INPUT, EXIT_INTERNAL, add_pnr_options, add_simulator_option, pnr_limits, print_json
from .options import add_config_options, config_from_args

__all__ = ["register", "SIM_ELSEWHERE"]

#: Designs simulated by the command of their area (one command per job).
SIM_ELSEWHERE = {"vitcod": "attnforge vitcod sim --masks FILE", "linear-decode": "attnforge linear sim"}

#: Fields whose values are a fixed set (argparse refuses others before anything is built).
_CHOICES = {**REGISTER_CHOICES, "dsp_family": tuple(DSP_CUTS)}


def _config(args):
    design = DESIGNS[args.design]
    return design, config_from_args(design.config_cls, args, args.config_fields)


def _per_design(sub, command: str, help: str, description: str, designs, add_options, derived=None):
    p = sub.add_parser(command, help=help, description=description)
    designs_sub = p.add_subparsers(dest=f"{command}_command", required=True, metavar="DESIGN",
                                   help="; ".join(f"{d.name}: {d.summary}" for d in designs))
    for d in designs:
        dp = designs_sub.add_parser(d.name, help=d.summary, description=f"{description} Design: {d.summary}.")
        names = add_config_options(dp, d.config_cls, choices=_CHOICES, derived=derived,
                                   title=f"generator parameters of {d.name} (defaults in brackets)")
        dp.set_defaults(design=d.name, config_fields=names)
        add_options(dp)
    return designs_sub


# ---------------------------------------------------------------------------- verilog

def cmd_verilog(args) -> int:
    from attnforge.flows.build import generate_verilog
    from attnforge.sim.lint import WAIVERS

    design, config = _config(args)
    if args.axis_width is not None and design.name != "linear-decode":
        print(f"attnforge verilog {design.name}: --axis-width is the linear decode wrapper's (ViTCoD's s_axis "
              f"width is its --data-width)", file=sys.stderr)
        return 2
    options = {"axis_width": args.axis_width} if args.axis_width is not None else {}
    path, lint = generate_verilog(design, config, args.output, lint=args.lint, axi=args.axi, axi_options=options)
    print(f"wrote {path} (top module {design.axi_top if args.axi else design.top})")
    if lint is not None:
        if not lint.clean:
            print(f"verilator --lint-only -Wall found problems in {path}:", file=sys.stderr)
            for line in lint.messages:
                print("  " + line, file=sys.stderr)
            return 1
        print(f"lint clean: verilator --lint-only -Wall with waivers {WAIVERS.name}")
    return 0


def _verilog_options(p):
    p.add_argument("-o", "--output", help="Verilog file to write (or a folder) [build/verilog/<config>/<top>.v]")
    if DESIGNS[p.get_default("design")].axi is not None:
        p.add_argument("--axi", action="store_true",
                       help="emit the block behind its AXI4-Stream/AXI4-Lite wrapper (top <top>_axi, ports aclk, "
                            "aresetn, s_axis_*, m_axis_*, s_axil_*; docs/axi.md)")
        p.add_argument("--axis-width", type=int,
                       help="(linear-decode) s_axis_tdata bits, a multiple of 8 [the next power of two at or above "
                            "one command: one beat per command]")
    p.set_defaults(axi=False, axis_width=None)
    p.add_argument("--no-lint", dest="lint", action="store_false", help="skip the Verilator lint")
    p.set_defaults(func=cmd_verilog)


# ---------------------------------------------------------------------------- sim

def cmd_sim(args) -> int:
    from attnforge.sim.runner import simulate

    check_int("--seed", args.seed, 0)
    design, config = _config(args)
    result = simulate(design, config, seed=args.seed, simulator=args.simulator, waves=args.waves or None,
                      build_root=args.build_root)
    summary = {
        "design": design.name,
        "config": config.__dict__,
        "simulator": result.simulator,
        "bit_exact": result.passed,
        "output_digest": (result.report or {}).get("output_digest"),   # attnforge.formats.digest
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
        print(f"FAILED: {result.failed} of {result.tests} testbench tests; log: {result.log}", file=sys.stderr)
        return 1
    return 0


def _sim_options(p):
    add_simulator_option(p)
    p.add_argument("--waves", action="store_true",
                   help="record a waveform (VCD on Verilator, FST on Icarus); also ATTNFORGE_WAVES=1")
    p.add_argument("--seed", type=int, default=0, help="seed of the random stimulus [0]")
    p.add_argument("--build-root", default="build/sim", help="where per-configuration builds go [build/sim]")
    p.add_argument("--json", metavar="OUT", help="write the summary to this file instead of stdout")
    p.set_defaults(func=cmd_sim)


def _sim_elsewhere(args) -> int:
    print(f"attnforge sim {args.design}: not here: simulate it with `{SIM_ELSEWHERE[args.design]}` "
          f"(one command per job)", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------- synth

def _estimate(design, config, device: str) -> dict | None:
    """What the resource model knows for sure before Yosys (``synthesize``'s ``estimate``): ViTCoD on
    an ECP5, its DSP blocks and block RAMs (exact) and lower bounds of its LUTs and FFs (the fitted
    prediction less the model's 15 % held-out error). None where no model exists."""
    from attnforge.fpga.resources import DEVICE_CAPACITY, vitcod_resources

    if design.name != "vitcod" or device not in DEVICE_CAPACITY or config.tiles != 1:
        return None
    res = vitcod_resources(config, device)
    fitted = {k: (int(res[k] / 1.15), f"resource model: {res[k]} predicted, at least {int(res[k] / 1.15)} within "
                                      f"its 15 % held-out error") for k in ("lut", "ff")}
    return {"dsp": (res["dsp"], "resource model, exact"), "bram": (res["bram"], "resource model, exact"), **fitted}


#: ``synth``'s parameters whose default depends on the device (``_device_defaults``).
_SYNTH_DERIVED = {name: "the device's family" for name in FAMILY_FIELDS}


def _device_defaults(args) -> None:
    """Fill in the parameters ``--device`` decides when not given: ``dsp_family``, whose DSP
    blocks ``split_product`` cuts the products for (``DSP_CUTS``), and ``pipelining`` (the linear
    decode block's register levels, ``PIPELININGS``)."""
    from attnforge.fpga.synth import get_device

    for name in FAMILY_FIELDS:
        if name in args.config_fields and getattr(args, name) is None:
            setattr(args, name, get_device(args.device).family)


def cmd_synth(args) -> int:
    from attnforge.fpga.synth import FitError, PnrStopped, synthesize

    _device_defaults(args)
    limits = pnr_limits(args)
    design, config = _config(args)
    component, top = design.build(config), design.top
    if args.axi:
        from attnforge.hw.common.axi import OnParentClock

        options = {k: getattr(args, k) for k in ("axis_width", "perf_width") if getattr(args, k) is not None}
        component, top = OnParentClock(design.axi(config, **options)), design.axi_top
    elif args.axis_width is not None or args.perf_width is not None:
        print(f"attnforge synth {design.name}: --axis-width and --perf-width are the AXI wrapper's; add --axi",
              file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else \
        Path("build") / "synth" / design.config_name(config) / (args.device + ("_axi" if args.axi else ""))
    try:
        report = synthesize(component, top=top, device=args.device, out_dir=out, seed=args.seed,
                            router=args.router, target_mhz=args.target_mhz, pnr=args.pnr or args.pack_only,
                            pack_only=args.pack_only, estimate=_estimate(design, config, args.device),
                            dff=args.dff, placer=args.placer, lut_mapper=args.lut_mapper, **limits)
    except FitError as e:
        print(f"attnforge synth {design.name}: {e}; nothing placed (files so far: {out})", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PnrStopped as e:
        print(f"attnforge synth {design.name}: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    short = {k: report[k] for k in ("design", "device", "luts", "ffs", "dsp", "bram", "lut_multipliers", "fits",
                                    "fmax_mhz", "shell_ffs", "seed", "router", "placer", "lut_mapper",
                                    "critical_stage")}
    if args.pack_only:
        short["packed"] = {k: v["used"] for k, v in report["nextpnr_utilization"].items() if v["used"]}
    print(json.dumps(short, indent=2))
    print(f"full report: {out / 'report.json'}")
    if not report["fits"]:
        over = "; ".join(f"{r['resource']}: {r['count']} ({r['basis']}) of {r['capacity']}"
                         for r in report["fit"] if not r["fits"])
        print(f"attnforge synth {design.name}: does not fit {args.device}: {over}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _synth_options(p):
    from attnforge.fpga.synth import DEVICES, LUT_MAPPERS, PLACERS, ROUTERS

    p.add_argument("--device", choices=sorted(DEVICES), default="ecp5-85k", help="FPGA [ecp5-85k]")
    p.add_argument("-o", "--output", help="output folder [build/synth/<config>/<device>]")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed [1]")
    p.add_argument("--no-pnr", dest="pnr", action="store_false",
                   help="stop after Yosys: resource counts only (before nextpnr packs them), no Fmax")
    p.add_argument("--pack-only", action="store_true",
                   help="Yosys, then nextpnr's packer only: the device's packed cell counts (what must fit), "
                        "in seconds, no placement, no Fmax")
    p.add_argument("--router", choices=ROUTERS,
                   help="nextpnr router [ECP5: router1 for vitcod (router2 stalls on it), router2 otherwise]; try the "
                        "other if routing stalls")
    p.add_argument("--placer", choices=PLACERS,
                   help="nextpnr placer [the device's: heap]; static (electrostatic) placed the ViTCoD benchmark "
                        "configuration in a quarter of HeAP's time with less routing congestion (docs/vitcod-hw.md)")
    p.add_argument("--lut-mapper", choices=LUT_MAPPERS, default="abc9",
                   help="Yosys's LUT mapping [abc9]; abc (ECP5): classic ABC, around ABC9 failures of YoWASP's "
                        "Yosys on some large netlists")
    p.add_argument("--dff", action="store_true",
                   help="Yosys's -dff: ABC9 optimizes the flip-flops with the logic (sequential optimization; "
                        "the RTL and its cycles are unchanged); on the UP5K the worst of three seeds routed 4-10 %% faster")
    add_pnr_options(p)
    p.add_argument("--target-mhz", type=float,
                   help="nextpnr's clock target [the device's: 150 on ECP5, 48 on iCE40]; the report gives what "
                        "was reached")
    if DESIGNS[p.get_default("design")].axi is not None:
        p.add_argument("--axi", action="store_true",
                       help="the block behind its AXI4-Stream/AXI4-Lite wrapper (what `verilog --axi` writes and "
                            "the board tops hold; aclk from the shell's clock): the wrapper's cells and Fmax")
        if p.get_default("design") == "linear-decode":
            p.add_argument("--axis-width", type=int,
                           help="(--axi) s_axis_tdata bits [one beat per command; the board builds use 32]")
        p.add_argument("--perf-width", type=int,
                       help="(--axi) bits of each performance counter, 33..64 [64; the iCEBreaker build uses 33]")
    p.set_defaults(func=cmd_synth, axi=False, axis_width=None, perf_width=None)


# ---------------------------------------------------------------------------- regs

#: The accelerators that get the standard register map (hw/common/accel_regs.py).
REGS_DESIGNS = ("vitcod", "linear-decode")


def _register_params(config) -> dict:
    """The configuration's fields as register values (a choice becomes its index in its list): the
    same function the wrappers' register banks are built with."""
    from attnforge.hw.common.axi import register_params

    return register_params(config, _CHOICES)


def cmd_regs(args) -> int:
    from attnforge.formats.atomic import write_text_atomic
    from attnforge.hw.common import accelerator_regmap, c_header, markdown_table

    design, config = _config(args)
    regmap = accelerator_regmap(design.name, _register_params(config))
    out = Path(args.output or Path("build") / "regs" / design.name)
    out.mkdir(parents=True, exist_ok=True)
    header, table = out / f"{regmap.name}_regs.h", out / f"{regmap.name}_regs.md"
    write_text_atomic(header, c_header(regmap))
    write_text_atomic(table, markdown_table(regmap))
    print(f"wrote {header} and {table}: {len(regmap)} registers, {regmap.size} bytes of address space")
    return 0


def _regs_options(p):
    p.add_argument("-o", "--output", help="folder for the C header and the Markdown table [build/regs/<design>]")
    p.set_defaults(func=cmd_regs)


def register(sub) -> None:
    designs = list(DESIGNS.values())
    _per_design(sub, "verilog", "generate a block's Verilog (and lint it)",
                "Write the Verilog of one configuration of a block, then lint it with `verilator --lint-only "
                "-Wall` (Amaranth's style warnings waived, see sim/amaranth_waivers.vlt). Exit status 1 if lint "
                "finds anything.", designs, _verilog_options)
    sim_sub = _per_design(sub, "sim", "simulate a block's RTL against its golden model",
                          "Build one configuration for a simulator and run its cocotb testbench, which compares "
                          "the RTL bit for bit with the integer golden model under random data, idle cycles and "
                          "backpressure. Prints a JSON summary.",
                          [d for d in designs if d.name not in SIM_ELSEWHERE], _sim_options)
    for name, command in SIM_ELSEWHERE.items():
        p = sim_sub.add_parser(name, help=f"see `{command}`", add_help=False)
        p.set_defaults(func=_sim_elsewhere, design=name, ignores_options=True)
    _per_design(sub, "synth", "synthesize and place-and-route a block, report resources and Fmax",
                "Run Yosys and nextpnr (YoWASP builds) on one configuration wrapped in a two-pin shell "
                "(fpga/shell.py), and write a JSON report: LUTs, FFs, DSP blocks, block RAMs, Fmax.",
                designs, _synth_options, derived=_SYNTH_DERIVED)
    _per_design(sub, "regs", "write an accelerator's register map as a C header and a Markdown table",
                "Write the standard AXI4-Lite register map (identification, control, status, performance "
                "counters, the generator parameters read-only; hw/common/accel_regs.py) of one configuration "
                "as a C header and a Markdown table, from the same Python description the register bank's "
                "RTL is generated from.", [DESIGNS[name] for name in REGS_DESIGNS], _regs_options)
