"""The ``attnforge`` command: one entry point, a subcommand per job, a module per command group.

    attnforge verilog mac-line -o build/mac_line.v       # generate (and lint) Verilog   (cli/hw.py)
    attnforge sim mac-line --simulator icarus --waves     # RTL vs golden model           (cli/hw.py)
    attnforge synth vitcod --head-dim 32                  # Yosys + nextpnr report         (cli/hw.py)
    attnforge vitcod train|masks|finetune|export|eval|sim                                 (cli/vitcod.py)
    attnforge linear train|eval|generate|speculate|linearize|sim                          (cli/linear.py)
    attnforge tickets pretrain|draw|transfer|study|export                                 (cli/tickets.py)
    attnforge bench | demo                                                                (cli/bench.py)

The CLI is the top layer: it parses arguments, calls a function of a lower
layer (``flows``, ``benchmarks``, ``algo``, ``hw``, ``sim``, ``fpga``) and
prints. Generator options come from the configuration dataclasses
(``cli/options.py``). Every attnforge error, ``ValueError``, ``TypeError`` and
missing file ends the command with exit status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attnforge.errors import AttnforgeError

__all__ = ["main", "build_parser", "command_group", "print_json", "print_report", "add_simulator_option"]

#: Modules that add commands; each defines ``register(subparsers)``.
_COMMAND_MODULES = ("hw", "bench", "vitcod", "linear", "tickets")


def command_group(subparsers, name: str, help: str):
    """The sub-subparsers of group ``name`` (``attnforge NAME ...``), created on first use."""
    groups = subparsers.__dict__.setdefault("_attnforge_groups", {})
    if name not in groups:
        parser = subparsers.add_parser(name, help=help, description=help)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    return groups[name]


def print_json(obj, path: str | None) -> None:
    """Write ``obj`` as JSON to ``path`` (creating folders), or print it when ``path`` is None."""
    text = json.dumps(obj, indent=2, default=str)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
        print(f"wrote {path}")
    else:
        print(text)


def print_report(report: dict, path: str | None, *, ok: bool, failure: str) -> int:
    """``print_json(report, path)``; exit status 0 if ``ok``, else 1 after ``failure`` on stderr."""
    print_json(report, path)
    if not ok:
        print(failure, file=sys.stderr)
        return 1
    return 0


def add_simulator_option(parser) -> None:
    """``--simulator``: the simulators ``sim/tools.py`` knows; unset means ``$ATTNFORGE_SIM``, else Verilator."""
    from attnforge.sim.tools import SIMULATORS

    parser.add_argument("--simulator", choices=SIMULATORS, default=None,
                        help="RTL simulator [$ATTNFORGE_SIM, else verilator]")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="attnforge",
        description="Hardware generator for efficient attention: generate Verilog, check it bit for bit "
                    "against golden models in simulation, and synthesize it on the open FPGA toolchain.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "ignores_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (AttnforgeError, ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        where = " ".join(x for x in (args.command, getattr(args, f"{args.command}_command", None)) if x)
        message = " ".join(str(exc).split("\n"))          # one line, whatever the exception held
        print(f"attnforge {where}: error: {message}", file=sys.stderr)
        return 2
