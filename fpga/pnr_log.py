"""nextpnr's progress, read from its log line by line while it runs.

A large design spends most of an `attnforge synth` run in nextpnr (the ViTCoD benchmark block: minutes
of placement, then from twenty minutes to hours of routing, docs/vitcod-hw.md). ``PnrProgress`` follows
the log and knows at every line:

* the phase (packing, placing, routing, done) and the router (router1 or router2);
* the placement's Fmax estimate (nextpnr's timing analysis after placement, per clock);
* router2's overused wires after each iteration (it has converged at 0), router1's arcs left to route
  and its seconds so far (its table row every 1000 arcs);
* the router's own time (``Router1 time`` / ``Router2 time``) and whether routing completed.

``status()`` is one line for a terminal; ``summary()`` goes into the synthesis report (``pnr``);
``stop_reason(elapsed)`` is the reason to give up, or None:

* ``patience``: router2's overused wires reached no new minimum for this many iterations (router2 on a
  congested placement falls to a few hundred overused wires and then rises again for hours;
  docs/vitcod-hw.md has the runs);
* ``timeout_s``: nextpnr has run this many seconds (issue 15's "routing in <= 30 minutes" as a limit).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["PnrProgress", "follow", "PipeLines", "FileLines"]

_ROUTER2_ITER = re.compile(r"^Info:\s+iter=(\d+) wires=(\d+) overused=(\d+)")
# router1's table: IterCnt | w/ripup wo/ripup | w/r wo/r | remaining | batch total
_ROUTER1_ROW = re.compile(r"^Info:\s+(\d+) \|\s*\d+\s+\d+ \|\s*-?\d+\s+-?\d+ \|\s*(\d+)\|\s*[\d.]+\s+([\d.]+)\|")
_ROUTER1_ARCS = re.compile(r"^Info: Routing (\d+) arcs\.")
_FMAX = re.compile(r"^Info: Max frequency for clock\s+'([^']+)': ([\d.]+) MHz")
_ROUTER_TIME = re.compile(r"^Info: Router([12]) time ([\d.]+)s")
_PLACERS = (("Running Static placer", "static"), ("Creating initial analytic placement", "heap"),
            ("Running main analytical placer", "heap"), ("Creating initial placement", "sa"))
#: router1's table rows kept for the report (evenly thinned beyond this)
_MAX_ROWS = 200


class PnrProgress:
    """What nextpnr's log says so far; ``feed`` it every line (see the module docstring).

    ``patience`` (router2 iterations without a new fewest-overused-wires count) and ``timeout_s``
    (seconds of the whole nextpnr run) set when ``stop_reason`` answers; None: never.
    """

    def __init__(self, *, patience: int | None = None, timeout_s: float | None = None):
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ValueError(f"route patience {patience!r}: give a whole number of router2 iterations >= 1")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"nextpnr timeout {timeout_s!r}: give a number of seconds > 0")
        self.patience, self.timeout_s = patience, timeout_s
        self.phase = "packing"
        self.placer: str | None = None
        self.router: str | None = None
        self.placed_fmax: dict[str, float] = {}
        self.overused: list[int] = []            # router2, per iteration (index 0 = iteration 1)
        self.arcs: int | None = None             # router1: arcs to route at its start
        self.remaining: list[tuple[float, int]] = []   # router1: (seconds, arcs left) per table row
        self.route_seconds: float | None = None
        self.routed = False

    # -- reading ---------------------------------------------------------------------------------
    def feed(self, line: str) -> None:
        """One line of nextpnr's output."""
        line = line.rstrip("\n")
        if self.phase in ("packing", "placing"):
            for text, placer in _PLACERS:
                if text in line:
                    self.phase = "placing"
                    self.placer = self.placer or placer
            found = _FMAX.match(line)
            if found and self.phase == "placing":
                self.placed_fmax[found.group(1)] = float(found.group(2))
            # (ECP5 routes its globals first; on the iCE40 router1's "Routing.." is the first word of routing)
            if line.startswith(("Info: Routing globals", "Info: Running router2", "Info: Routing..")):
                self.phase = "routing"
        if line.startswith("Info: Running router2"):
            self.phase, self.router = "routing", "router2"
            return
        if self.phase == "routing" and self.router is None and _ROUTER1_ARCS.match(line):
            self.router, self.arcs = "router1", int(_ROUTER1_ARCS.match(line).group(1))
            return
        found = _ROUTER2_ITER.match(line)
        if found and self.router == "router2":
            self.overused.append(int(found.group(3)))
            return
        found = _ROUTER1_ROW.match(line)
        if found and self.router == "router1" and self.route_seconds is None:
            self.remaining.append((float(found.group(3)), int(found.group(2))))
            return
        found = _ROUTER_TIME.match(line)
        if found and f"router{found.group(1)}" == self.router:
            self.route_seconds = float(found.group(2))
            return
        if line.startswith("Info: Routing complete"):
            self.routed = True
        if line.startswith("Info: Program finished normally"):
            self.phase = "done"

    # -- deciding --------------------------------------------------------------------------------
    def fewest_overused(self) -> tuple[int, int] | None:
        """router2's fewest overused wires so far and the (first) iteration that reached it."""
        if not self.overused:
            return None
        best = min(self.overused)
        return best, self.overused.index(best) + 1

    def stop_reason(self, elapsed_s: float) -> str | None:
        """Why to stop nextpnr now (``elapsed_s`` since it started), or None to let it run."""
        if self.phase == "done":
            return None
        if self.timeout_s is not None and elapsed_s >= self.timeout_s:
            return f"nextpnr ran {elapsed_s:.0f} s, the limit given ({self.timeout_s:g} s): {self.status()}"
        if self.patience is not None and self.router == "router2" and self.overused and self.overused[-1] > 0:
            best, at = self.fewest_overused()
            if len(self.overused) - at >= self.patience:
                return (f"router2 did not converge: fewest overused wires {best:,} at iteration {at}, "
                        f"{self.overused[-1]:,} at iteration {len(self.overused)}: no new minimum for "
                        f"{len(self.overused) - at} iterations (the patience given: {self.patience})")
        return None

    # -- telling ---------------------------------------------------------------------------------
    def status(self) -> str:
        """One line: the phase and how far the router is."""
        parts = []
        if self.placed_fmax:
            parts.append(f"placement estimate {min(self.placed_fmax.values()):.2f} MHz")
        if self.router == "router2" and self.overused:
            best, at = self.fewest_overused()
            parts.append(f"router2 iteration {len(self.overused)}: {self.overused[-1]:,} overused wires "
                         f"(fewest {best:,} at {at})")
        elif self.router == "router1" and self.remaining:
            seconds, left = self.remaining[-1]
            parts.append(f"router1: {left:,} of {self.arcs:,} arcs left after {seconds:.0f} s")
        elif self.phase == "routing":
            parts.append(f"routing ({self.router or 'globals'})")
        else:
            parts.append(self.phase + (f" ({self.placer})" if self.placer and self.phase == "placing" else ""))
        if self.routed:
            parts.append("routed")
        return "; ".join(parts)

    def summary(self) -> dict:
        """For the synthesis report: the placement estimate and the router's progress."""
        rows = self.remaining
        if len(rows) > _MAX_ROWS:
            step = len(rows) / _MAX_ROWS
            rows = [rows[int(i * step)] for i in range(_MAX_ROWS - 1)] + [rows[-1]]
        best = self.fewest_overused()
        return {
            "placer": self.placer,
            "placement_fmax_mhz": self.placed_fmax or None,
            "router": self.router,
            "routed": self.routed,
            "route_seconds": self.route_seconds,
            "router2_iterations": len(self.overused) if self.router == "router2" else None,
            "router2_overused": self.overused if self.router == "router2" else None,
            "router2_fewest_overused": list(best) if best else None,
            "router1_arcs": self.arcs,
            "router1_remaining": [[s, left] for s, left in rows] if self.router == "router1" else None,
        }


class PipeLines:
    """The lines a process writes to a pipe, read by a thread (``take`` waits at most ``timeout``)."""

    def __init__(self, stream):
        self._lines: list[str] = []
        self._done = False
        self._ready = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for text in stream:
            with self._ready:
                self._lines.append(text)
                self._ready.notify()
        with self._ready:
            self._done = True
            self._ready.notify()

    def take(self, timeout: float) -> tuple[list[str], bool]:
        """The lines since the last call, and whether the stream has ended (all its lines taken)."""
        with self._ready:
            self._ready.wait_for(lambda: self._lines or self._done, timeout=timeout)
            lines, self._lines = self._lines, []
            return lines, self._done


class FileLines:
    """The lines a process appends to a log file (``nextpnr --log``), read as they come; ended when the
    process has exited and the file is read to its end."""

    def __init__(self, path: Path, proc: subprocess.Popen):
        self._path, self._proc, self._pos, self._partial = Path(path), proc, 0, ""

    def take(self, timeout: float) -> tuple[list[str], bool]:
        exited = self._proc.poll() is not None
        if not exited:
            time.sleep(timeout)
        text = ""
        if self._path.exists():
            with open(self._path, errors="replace") as f:
                f.seek(self._pos)
                text = f.read()
                self._pos = f.tell()
        text, self._partial = self._partial + text, ""
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n") and not exited:
            self._partial = lines.pop()
        return lines, exited


def follow(proc: subprocess.Popen, source, progress: PnrProgress, *, show: bool, write=None) -> str | None:
    """Feed ``progress`` the lines of ``source`` (``PipeLines`` or ``FileLines``; each also to ``write``)
    until they end (the time counted from the first line), showing its status on stderr when ``show``
    (one line kept up to date on a terminal; else a line per change of phase or router2 iteration, and
    one a minute). When
    ``progress.stop_reason`` answers, ``proc`` and its process group (start it with
    ``start_new_session=True``) are stopped and the reason returned; None once the lines end. An
    exception while following (Ctrl-C) stops them too before it goes on."""
    try:
        return _follow(proc, source, progress, show, write)
    except BaseException:
        _stop(proc)     # Ctrl-C (or any error here): its own session does not get the terminal's signal
        raise


def _follow(proc, source, progress, show, write):
    start, shown, shown_key, shown_at = None, None, None, 0.0
    tty, reason, ended = sys.stderr.isatty(), None, False
    while not ended and reason is None:
        lines, ended = source.take(1.0)
        if start is None:
            if not lines:
                continue    # nextpnr has not started (a board build's Yosys runs first): no time counted
            start = time.monotonic()
        for text in lines:
            if write is not None:
                write(text)
            progress.feed(text)
            reason = progress.stop_reason(time.monotonic() - start)   # at the line that reaches a limit
            if reason:
                break
        now = time.monotonic()
        reason = reason or progress.stop_reason(now - start)
        if show:
            status, key = progress.status(), (progress.phase, progress.router, len(progress.overused))
            if tty and status != shown and (now - shown_at >= 1.0 or ended or reason):
                print(f"\r\033[Knextpnr {now - start:6.0f} s: {status}", end="", file=sys.stderr, flush=True)
                shown, shown_at = status, now
            elif not tty and (key != shown_key or status != shown and now - shown_at >= 60):
                print(f"nextpnr {now - start:.0f} s: {status}", file=sys.stderr, flush=True)
                shown, shown_key, shown_at = status, key, now
    if show and tty and shown is not None:
        print(file=sys.stderr)
    if reason is not None:
        _stop(proc)
    return reason


def _stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc`` (its process group when it leads one), then kill it after 10 s."""
    try:
        group = os.name == "posix" and proc.poll() is None and os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:      # it exited in between
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
