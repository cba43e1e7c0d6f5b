"""``attnforge bench`` (the benchmarks) and ``attnforge demo`` (the walking skeleton)."""

from __future__ import annotations

import sys
from pathlib import Path

from . import add_cluster_option

__all__ = ["register"]


def cmd_bench(args) -> int:
    from attnforge.benchmarks import run_benchmarks

    run_benchmarks(Path(args.output), args.names, quick=args.quick, command=" ".join(["attnforge", *sys.argv[1:]]),
                   workers=args.workers, cluster=args.cluster, synth_report=args.synth_report)
    return 0


def cmd_demo(args) -> int:
    from attnforge.flows.demo import run_demo

    return run_demo(Path(args.output))


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure cycles, generation time, simulator speed and synthesis",
                       description="Run the benchmarks and write JSON (with the command that made it) "
                                   "under bench/results/.")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run [all]")
    p.add_argument("-o", "--output", default="bench/results", help="results folder [bench/results]")
    p.add_argument("--quick", action="store_true", help="shorter runs (for smoke tests)")
    p.add_argument("--workers", type=int, help="local processes for the sweeps of the benchmarks made of independent "
                                               "runs (vitcod_hw, mac_line, linear_hw) [1]")
    p.add_argument("--synth-report", metavar="FILE",
                   help="vitcod_hw: the routed `attnforge synth vitcod` report (4+4 lines x 8 MACs) whose Fmax gives "
                        "the effective throughput [build/synth_vitcod/ecp5-85k/report.json when it exists]")
    add_cluster_option(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the MAC-line walking skeleton end to end: generate, lint, simulate, synthesize "
                                    "(make demo-mac-line; the main job is `attnforge flow vitcod`)",
                       description="Generate the MAC line, lint it, check it against the golden model on "
                                   "Verilator and Icarus, place and route it on ECP5-85k, print the report.")
    p.add_argument("-o", "--output", default="build/demo", help="output folder [build/demo]")
    p.set_defaults(func=cmd_demo)
