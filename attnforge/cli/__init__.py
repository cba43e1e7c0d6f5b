"""The ``attnforge`` command: one entry point, a subcommand per job, a module per command group.

    attnforge flow vitcod [--preset small|full]           # the main job, report.md        (cli/flow.py)
    attnforge verilog mac-line -o build/mac_line.v       # generate (and lint) Verilog   (cli/hw.py)
    attnforge sim mac-line --simulator icarus --waves     # RTL vs golden model           (cli/hw.py)
    attnforge synth vitcod --head-dim 32                  # Yosys + nextpnr report         (cli/hw.py)
    attnforge vitcod train|masks|polarize|finetune|export|eval|int-eval|sim               (cli/vitcod.py)
    attnforge linear train|eval|generate|speculate|linearize|sim                          (cli/linear.py)
    attnforge tickets pretrain|draw|transfer|study|export                                 (cli/tickets.py)
    attnforge bench | demo                                                                (cli/bench.py)

The CLI is the top layer: it parses arguments, calls a function of a lower
layer (``flows``, ``benchmarks``, ``algo``, ``hw``, ``sim``, ``fpga``) and
prints. Generator options come from the configuration dataclasses
(``cli/options.py``).

Exit status, decided in one place (``main``):

* 0 -- done; for a simulation, the RTL matched the golden model bit for bit;
* 1 -- the RTL differs from the golden model (or lint found problems): the
  command returns it after writing its report;
* 2 -- bad input or configuration: an attnforge error (``ConfigError``,
  ``ArtifactError``), ``ValueError``, ``TypeError``, a missing file, a path that
  is a folder, not a folder or not permitted, or an argparse error; one line
  on stderr names the input;
* 3 -- a tool or internal failure (any other exception: a simulator that did
  not build, a bug): one line with the exception type and "internal error";
  ``--traceback`` (or ``ATTNFORGE_TRACEBACK=1``) prints the traceback as well.

(Ctrl-C ends a command with the shell's usual 130.)

Results files (``--json``) are written whole or not at all
(``attnforge.formats.atomic``), and a run removes the ``--json`` file it was
given before it starts: after a run that failed (exit 1 writes its own failure
report; 2 and 3 write none) no earlier ``"bit_exact": true`` is left looking
current.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from attnforge.errors import AttnforgeError
from attnforge.formats.atomic import write_text_atomic

__all__ = ["main", "build_parser", "command_group", "print_json", "print_report", "add_simulator_option",
           "add_cluster_option", "add_pnr_options", "pnr_limits",
           "EXIT_OK", "EXIT_DIFFERS", "EXIT_BAD_INPUT", "EXIT_INTERNAL"]

#: The exit statuses of every command (see the module docstring).
EXIT_OK, EXIT_DIFFERS, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3

#: Exceptions that mean the user gave something wrong: exit status 2, one line.
_BAD_INPUT = (AttnforgeError, ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
              PermissionError)

#: Modules that add commands; each defines ``register(subparsers)``.
_COMMAND_MODULES = ("flow", "explore", "hw", "bench", "vitcod", "linear", "tickets", "board")


def command_group(subparsers, name: str, help: str):
    """The sub-subparsers of group ``name`` (``attnforge NAME ...``), created on first use."""
    groups = subparsers.__dict__.setdefault("_attnforge_groups", {})
    if name not in groups:
        parser = subparsers.add_parser(name, help=help, description=help)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    return groups[name]


def print_json(obj, path: str | None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (creating folders), or print it when ``path`` is None."""
    text = json.dumps(obj, indent=2, default=str)
    if path:
        write_text_atomic(path, text + "\n")
        print(f"wrote {path}")
    else:
        print(text)


def print_report(report: dict, path: str | None, *, ok: bool, failure: str) -> int:
    """``print_json(report, path)``; exit status 0 if ``ok``, else 1 after ``failure`` on stderr."""
    print_json(report, path)
    if not ok:
        print(failure, file=sys.stderr)
        return EXIT_DIFFERS
    return EXIT_OK


def add_simulator_option(parser) -> None:
    """``--simulator``: the simulators ``sim/tools.py`` knows; unset means ``$ATTNFORGE_SIM``, else Verilator."""
    from attnforge.sim.tools import SIMULATORS

    parser.add_argument("--simulator", choices=SIMULATORS, default=None,
                        help="RTL simulator [$ATTNFORGE_SIM, else verilator]")


def add_cluster_option(parser) -> None:
    """``--cluster``: run the command's jobs on a Dask scheduler instead of local processes (``attnforge.jobs``)."""
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="run the jobs on this running Dask scheduler (tcp://HOST:8786; its workers need "
                             "attnforge installed) instead of local processes")


def add_pnr_options(parser) -> None:
    """nextpnr's progress line and limits (``fpga/pnr_log.py``): ``--route-patience``, ``--pnr-timeout``, ``-q``."""
    parser.add_argument("--route-patience", type=int, metavar="N",
                        help="stop when router2's overused wires reach no new minimum for N iterations (a congested "
                             "placement falls to a few hundred, then rises for hours); the error says how far it got")
    parser.add_argument("--pnr-timeout", type=float, metavar="MINUTES",
                        help="stop nextpnr after this many minutes of place and route (e.g. 30, issue 15's budget)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line while nextpnr runs (the placement estimate, the router's progress)")


def pnr_limits(args) -> dict:
    """``route_patience``, ``pnr_timeout_s`` and ``progress`` for ``synthesize`` / ``build_board`` from
    ``add_pnr_options``' options; a bad value raises ``ConfigError`` naming the option."""
    from attnforge.errors import ConfigError

    if args.pnr_timeout is not None and not args.pnr_timeout > 0:
        raise ConfigError(f"--pnr-timeout {args.pnr_timeout:g}: give the minutes of place and route allowed, > 0")
    if args.route_patience is not None and args.route_patience < 1:
        raise ConfigError(f"--route-patience {args.route_patience}: give router2 iterations, >= 1")
    return {"route_patience": args.route_patience, "progress": not args.quiet,
            "pnr_timeout_s": None if args.pnr_timeout is None else args.pnr_timeout * 60.0}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="attnforge",
        description="Hardware generator for efficient attention: generate Verilog, check it bit for bit "
                    "against golden models in simulation, and synthesize it on the open FPGA toolchain.",
        epilog="Exit status: 0 done (RTL matches the golden model), 1 RTL differs from the golden model, "
               "2 bad input or configuration, 3 tool or internal failure.")
    parser.add_argument("--traceback", action="store_true",
                        help="on a tool or internal failure, print the traceback [$ATTNFORGE_TRACEBACK=1]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _prepare_json_output(value) -> None:
    """Refuse a ``--json`` path that cannot be written (a folder), and remove a stale file there."""
    path = Path(value)
    if path.is_dir():
        raise IsADirectoryError(f"--json {path} is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"--json {path}: {parent} is not a folder")
            break
    path.unlink(missing_ok=True)   # an earlier result must not outlive a failed run


def _fail(args, code: int, message: str) -> int:
    where = " ".join(x for x in (getattr(args, "command", None),
                                 getattr(args, f"{getattr(args, 'command', '')}_command", None)) if x)
    line = " ".join(message.split())          # one line, whatever the exception held
    print(f"attnforge {where}: error: {line}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    """Run one command; the exit status follows the contract of the module docstring."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)          # argparse errors exit with status 2
    if "--traceback" in extra:                           # also accepted after the command
        extra = [x for x in extra if x != "--traceback"]
        args.traceback = True
    if extra and not getattr(args, "ignores_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if getattr(args, "json", None):
            _prepare_json_output(args.json)
        return args.func(args)
    except _BAD_INPUT as exc:
        return _fail(args, EXIT_BAD_INPUT, str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        return _fail(args, 130, "interrupted")
    except Exception as exc:
        if args.traceback or os.environ.get("ATTNFORGE_TRACEBACK") == "1":
            traceback.print_exc()
        return _fail(args, EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {exc} "
                                          f"(--traceback or ATTNFORGE_TRACEBACK=1 shows where)")
