"""``attnforge board build|program|run``: the accelerators on an FPGA board over a UART (docs/board.md).

    attnforge board build --board icebreaker --design linear-decode --d 8 --macs 2 [--clock-mhz F]
    attnforge board build --board ulx3s --design vitcod [generator options] [--clock-mhz F]
    attnforge board program --board icebreaker [--bitstream FILE]
    attnforge board run --design vitcod --masks FILE [--tensors FILE] [--all-heads] (--port DEV | --sim)
    attnforge board run --design linear-decode --tokens 16 [--tensors FILE] (--port DEV | --sim)

``build`` writes the bitstream and ``report.json``/``report.txt`` (PLL clock,
nextpnr's Fmax, resources) under ``--out``; exit 1 when timing is not met.
``program`` calls iceprog / openFPGALoader, exit 2 naming the tool when none is
installed. ``run`` sends the heads or tokens through the host driver
(``attnforge.host``) to the board (``--port``) or to the board top in
simulation (``--sim``), compares with the golden model and prints JSON (exit
1 when an output differs). Generator options are those of ``attnforge vitcod
sim`` / ``linear sim``; ``--masks``' buffer sizes follow from the file.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from attnforge.hw.common import DSP_CUTS
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.linear.config import FAMILY_FIELDS, REGISTER_CHOICES

from . import (EXIT_DIFFERS, EXIT_INTERNAL, EXIT_OK, add_pnr_options, add_simulator_option, command_group, pnr_limits,
               print_report)
from .options import add_config_options, config_kwargs

__all__ = ["register"]

DESIGNS = ("vitcod", "linear-decode")
VITCOD_FIELDS = ("head_dim", "max_tokens", "max_nnz", "macs", "dense_lines", "sparse_lines", "data_width")
#: ``board build``'s linear s_axis width: a 32-bit beat (commands assembled in the wrapper) keeps the bridge's
#: beat register and the wrapper's input small on the UP5K; the UART is the bottleneck anyway.
BOARD_AXIS_WIDTH = 32
LINEAR_FIELDS = ("d", "macs", "conv_taps", "t_max", "heads", "max_tokens", "feature_map", "pipelining")


def _linear_config(kw: dict) -> LinearDecodeConfig:
    from attnforge.linear_format import random_data_requant

    base = LinearDecodeConfig(**kw)
    return LinearDecodeConfig(**kw, **random_data_requant(base.d, base.conv_taps, feature_map=base.feature_map))


def _design_options(p, *, build: bool) -> None:
    p.add_argument("--design", choices=DESIGNS, default="linear-decode" if build else None, required=not build,
                   help="accelerator" + (" [linear-decode]" if build else ""))
    g = p.add_argument_group("ViTCoD generator parameters (--design vitcod; defaults in brackets)")
    derived = ("max_tokens", "max_nnz")
    for f in dataclasses.fields(VitcodConfig):
        if f.name in VITCOD_FIELDS:
            g.add_argument(f"--vitcod-{f.name.replace('_', '-')}", dest=f"v_{f.name}", type=int, default=None,
                           help=f"[{'from --masks' if f.name in derived and not build else f.default}]")
    # build: the products are cut for the board's DSP blocks (run: the same results at every cut)
    names = add_config_options(p, LinearDecodeConfig, include=LINEAR_FIELDS + (("dsp_family",) if build else ()),
                               choices={**REGISTER_CHOICES, "dsp_family": tuple(DSP_CUTS)},
                               derived={name: "the board's: ice40 on icebreaker, ecp5 on ulx3s"
                                        for name in FAMILY_FIELDS if build or name == "dsp_family"},
                               title="linear decode generator parameters (--design linear-decode)")
    p.set_defaults(linear_fields=names)
    p.add_argument("--axis-width", type=int, default=None,
                   help="linear: s_axis bits [" + ("32" if build else "--port: 32 as board build; --sim: one beat per "
                                                   "command") + "]")


def _vitcod_kw(args) -> dict:
    return {f: getattr(args, f"v_{f}") for f in VITCOD_FIELDS if getattr(args, f"v_{f}") is not None}


def _accel(args, perf_width: int = 64):
    from attnforge.hw.linear.axi import LinearDecodeAxi
    from attnforge.hw.vitcod.axi import VitcodAxi

    if args.design == "vitcod":
        cfg = VitcodConfig(**_vitcod_kw(args))
        return cfg, VitcodAxi(cfg, perf_width=perf_width)
    cfg = _linear_config(config_kwargs(args, args.linear_fields))
    return cfg, LinearDecodeAxi(cfg, axis_width=args.axis_width, perf_width=perf_width)


def cmd_build(args) -> int:
    from attnforge.fpga.board import BoardTimingError, build_board, get_board
    from attnforge.fpga.synth import PnrStopped

    board = get_board(args.board)
    for name in FAMILY_FIELDS:
        if getattr(args, name) is None:
            setattr(args, name, board.family)
    if args.clock_mhz is not None:
        board.pll(args.clock_mhz)            # refuse a clock the PLL cannot make before building anything
    if args.design == "linear-decode" and args.axis_width is None:
        args.axis_width = BOARD_AXIS_WIDTH
    perf_width = args.perf_width or (33 if args.board == "icebreaker" else 64)
    limits = pnr_limits(args)
    cfg, accel = _accel(args, perf_width)
    out = args.out or f"build/board/{args.board}_{args.design}"
    try:
        report = build_board(args.board, args.design, cfg, accel, clock_mhz=args.clock_mhz, out_dir=out,
                             baud=args.baud, seed=args.seed, prepare_only=args.prepare_only,
                             placer=args.placer, lut_mapper=args.lut_mapper, router=args.router, **limits)
    except PnrStopped as exc:
        print(f"attnforge board build: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except BoardTimingError as exc:
        print((Path(out) / "report.txt").read_text(), end="")
        print(f"attnforge board build: {exc}", flush=True)
        return EXIT_DIFFERS
    if args.prepare_only:
        print(f"wrote the build files ({', '.join(report['prepared'])}) and report.json to {out}; "
              f"run `sh build_board_top.sh` there (with YoWASP's tools) or drop --prepare-only")
        return EXIT_OK
    print((Path(out) / "report.txt").read_text(), end="")
    print(f"wrote {report['bitstream']}, {Path(out) / 'report.json'}")
    return EXIT_OK


def cmd_program(args) -> int:
    from attnforge.fpga.board import program_board

    ext = "bin" if args.board == "icebreaker" else "bit"
    bitstream = args.bitstream or f"build/board/{args.board}_{args.design}/board_top.{ext}"
    cmd = program_board(args.board, bitstream, dry_run=args.dry_run)
    print(("would run: " if args.dry_run else "ran: ") + " ".join(cmd))
    return EXIT_OK


def _vitcod_job(args):
    import numpy as np

    from attnforge.algo.vitcod.golden import check_head_scales
    from attnforge.flows.vitcod import mask_heads
    from attnforge.formats.head_tensors import load_head_tensors
    from attnforge.formats.masks import head_csr, load_masks
    from attnforge.host import vitcod_board_job

    ms = load_masks(args.masks)
    tensors = load_head_tensors(args.tensors) if args.tensors else None
    if tensors is not None:
        check_head_scales(tensors, args.tensors)
    pairs = [(l, h) for l in range(ms.layers) for h in range(ms.heads)] if args.all_heads else \
        [(args.layer, args.head)]
    for l, h in pairs:
        if not (0 <= l < ms.layers and 0 <= h < ms.heads):
            raise ValueError(f"layer {l} head {h} out of range: {args.masks} has {ms.layers} layers and "
                             f"{ms.heads} heads")
    kw = _vitcod_kw(args)
    d = tensors.head_dim if tensors is not None else kw.get("head_dim", VitcodConfig.head_dim)
    kw.setdefault("head_dim", d)
    kw.setdefault("max_tokens", int(max(ms.keep.shape[2], ms.keep.shape[3])))
    kw.setdefault("max_nnz", max(1, max(head_csr(ms, l, h)[1].nnz for l, h in pairs)))
    kw.setdefault("data_width", min(256, 8 * d))
    cfg = VitcodConfig(**kw)
    heads = mask_heads(cfg, ms, pairs, seed=args.seed, tensors=tensors)
    job = vitcod_board_job(cfg, heads)
    job.info["sparsity"] = 1.0 - float(np.mean([ms.keep[l, h].mean() for l, h in pairs]))
    return cfg, job


def cmd_run(args) -> int:
    if args.design == "vitcod" and not args.masks:
        raise ValueError("--design vitcod needs --masks FILE (attnforge.masks/1)")
    from attnforge.host import board_run, linear_board_job
    from attnforge.hw.linear.axi import default_axis_width

    if args.design == "vitcod":
        cfg, job = _vitcod_job(args)
        axis_width = None
    else:
        cfg = _linear_config(config_kwargs(args, args.linear_fields))
        # a board runs what `board build` built: its s_axis is BOARD_AXIS_WIDTH unless --axis-width said otherwise
        axis_width = args.axis_width or (BOARD_AXIS_WIDTH if args.port else default_axis_width(cfg))
        job = linear_board_job(cfg, axis_width, tokens=args.tokens, seed=args.seed, tensors=args.tensors)
    report = board_run(args.design, cfg, job, port=args.port, baud=args.baud, sim=args.sim,
                       simulator=args.simulator, divisor=args.divisor, axis_width=axis_width,
                       build_root=args.build_root)
    report.update(seed=args.seed, masks=getattr(args, "masks", None), tensors=args.tensors)
    return print_report(report, args.json, ok=report["bit_exact"],
                        failure=f"board outputs differ from the golden model: {report['first_mismatch']}")


def register(sub) -> None:
    g = command_group(sub, "board", "FPGA boards: bitstreams, programming, jobs over the UART (docs/board.md)")
    from attnforge.fpga.board import BOARDS
    from attnforge.fpga.synth import LUT_MAPPERS, PLACERS, ROUTERS

    p = g.add_parser("build", help="bitstream + timing/resource report for a board (amaranth-boards + YoWASP)")
    p.add_argument("--board", required=True, choices=sorted(BOARDS))
    _design_options(p, build=True)
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="PLL clock [icebreaker 26 (the PLL makes 25.875), ulx3s 30]; checked against the PLL, then nextpnr's Fmax")
    p.add_argument("--baud", type=int, default=115200, help="UART baud rate [115200]")
    p.add_argument("--perf-width", type=int, default=None,
                   help="bits of each performance counter, 33..64 [icebreaker 33 (saves ~370 LC), ulx3s 64]")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed [1]")
    p.add_argument("--placer", choices=PLACERS, default=None,
                   help="nextpnr placer [heap]; static for the ViTCoD block on the ULX3S (docs/vitcod-hw.md)")
    p.add_argument("--router", choices=ROUTERS, default=None,
                   help="nextpnr router [the ULX3S: as attnforge synth, router1 for vitcod, router2 for linear-decode; "
                        "nextpnr's default on the iCEBreaker]")
    p.add_argument("--lut-mapper", choices=LUT_MAPPERS, default="abc9",
                   help="Yosys's LUT mapping [abc9]; abc (ULX3S): classic ABC, the only mapping the ViTCoD block has "
                        "routed with")
    add_pnr_options(p)
    p.add_argument("--out", default=None, help="build folder [build/board/<board>_<design>]")
    p.add_argument("--prepare-only", action="store_true",
                   help="elaborate and write the build files only (no Yosys/nextpnr run)")
    p.set_defaults(func=cmd_build)

    p = g.add_parser("program", help="load a bitstream with iceprog / openFPGALoader (says which is missing)")
    p.add_argument("--board", required=True, choices=sorted(BOARDS))
    p.add_argument("--design", choices=DESIGNS, default="linear-decode", help="which build's bitstream [linear-decode]")
    p.add_argument("--bitstream", default=None, help="bitstream file [build/board/<board>_<design>/board_top.bin|bit]")
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    p.set_defaults(func=cmd_program)

    p = g.add_parser("run", help="heads / tokens through the host driver and the UART, against the golden model")
    _design_options(p, build=False)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--port", help="serial port of the board (e.g. /dev/ttyUSB0)")
    how.add_argument("--sim", action="store_true", help="the board top in simulation (cocotb + cocotbext-uart)")
    p.add_argument("--baud", type=int, default=115200, help="--port: baud rate [115200]")
    p.add_argument("--divisor", type=int, default=8, help="--sim: clock cycles per UART bit [8]")
    add_simulator_option(p)
    p.add_argument("--masks", help="vitcod: masks file (attnforge.masks/1)")
    p.add_argument("--tensors", help="vitcod: int8 heads (attnforge.vitcod_head/1); linear: attnforge.linear_tensors/1")
    p.add_argument("--layer", type=int, default=0, help="vitcod: layer of the head [0]")
    p.add_argument("--head", type=int, default=0, help="vitcod: head [0]")
    p.add_argument("--all-heads", action="store_true", help="vitcod: every head of the masks file")
    p.add_argument("--tokens", type=int, default=16, help="linear: tokens of the random program [16]")
    p.add_argument("--seed", type=int, default=0, help="seed of the random data [0]")
    p.add_argument("--json", help="write the JSON report here (default: print it)")
    p.add_argument("--build-root", default="build/board_sim", help="--sim: build folder [build/board_sim]")
    p.set_defaults(func=cmd_run)


