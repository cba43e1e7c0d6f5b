"""Cached stages of a flow: each stage writes its outputs and then a small marker; a rerun skips it.

A ``Stage`` names the stages it depends on, the options it reads (``key``; the flow adds a digest
of the library code the stage runs, so an edited generator reruns its stages) and the
files it writes (``outputs``, relative to the flow's folder). Its **hash** is the
SHA-256 of its name, its options, the digest of the file that defines its job (an
edited flow reruns) and, per dependency, that stage's hash and the SHA-256 of each
of its output files. After the stage's job returns, its marker
``stages/<name>.json`` (format ``attnforge.flow_stage/1``) records the hash, the
outputs' digests, the job's result (a JSON dict) and the seconds it took.

A stage is **cached** when its marker exists, has the same hash, and every output
still exists with the recorded digest; it is then skipped and its result read
from the marker. So a changed option reruns the stage that reads it and, through
the changed output digests, every stage downstream of it; a deleted or edited
output file reruns its stage. ``from_stage`` forces that stage and every stage
downstream of it to run again. A ``background`` stage runs in a thread beside
the stages after it (synthesis beside training: its tools are subprocesses). A stage's marker is removed before its job
starts, so an interrupted run never leaves a marker that looks current.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from attnforge.errors import ArtifactError, check_choice
from attnforge.formats.atomic import write_json_atomic

__all__ = ["Stage", "StageRun", "run_stages", "downstream", "file_digest", "ticker", "MARKER_FORMAT", "code_digest",
           "stage_options", "torch_threads"]

MARKER_FORMAT = "attnforge.flow_stage/1"


@dataclass(frozen=True)
class Stage:
    """One step of a flow: ``job(ctx) -> dict`` writes ``outputs`` (paths relative to the flow folder)."""

    name: str
    job: Callable
    outputs: tuple = ()
    deps: tuple = ()
    key: Callable = field(default=lambda ctx: {})
    title: str = ""
    background: bool = False


@dataclass
class StageRun:
    """What happened to one stage in this run."""

    name: str
    cached: bool
    seconds: float          # this run's time (0 when cached)
    first_seconds: float    # the time it took when it last ran
    result: dict
    hash: str


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _marker_path(root: Path, name: str) -> Path:
    return root / "stages" / f"{name}.json"


def _read_marker(path: Path) -> dict | None:
    """The marker at ``path``, or None when it is missing or not a marker (then the stage reruns)."""
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        return None
    return marker


def _outputs_intact(root: Path, marker: dict) -> bool:
    for rel, digest in (marker.get("outputs") or {}).items():
        path = root / rel
        if not path.is_file() or file_digest(path) != digest:
            return False
    return True


class ticker:
    """A progress line for a job that reports nothing while it runs: elapsed seconds, updated twice a second.

    ``with ticker("simulate 8 heads", enabled):``; a no-op when not ``enabled`` or when stderr is not
    a terminal (a log file would get a line per tick).
    """

    def __init__(self, desc: str, enabled: bool = True):
        self.desc, self.enabled = desc, enabled and sys.stderr.isatty()

    def __enter__(self):
        if not self.enabled:
            return self
        from tqdm import tqdm

        self._bar = tqdm(desc=self.desc, total=None, bar_format="{desc}: {elapsed}", leave=False, file=sys.stderr)
        self._stop = threading.Event()

        def tick():
            while not self._stop.wait(0.5):
                self._bar.refresh()

        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self._bar.close()
        return False


def downstream(stages: list[Stage], name: str) -> list[str]:
    """``name`` and every stage that depends on it, directly or through others, in flow order."""
    out = {name}
    for stage in stages:
        if any(d in out for d in stage.deps):
            out.add(stage.name)
    return [s.name for s in stages if s.name in out]


class _Background:
    """A stage's job in a thread (its tools are subprocesses, so it overlaps the next stages)."""

    def __init__(self, job, ctx):
        self.result, self.error = None, None
        self.t0 = time.perf_counter()

        def run():
            try:
                self.result = job(ctx)
            except BaseException as exc:       # re-raised in the flow's thread by wait()
                self.error = exc
            self.seconds = time.perf_counter() - self.t0

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait(self, *, notice: Callable[[float], None] | None = None, every: float = 30.0):
        """Join the thread; while it runs, ``notice(elapsed seconds)`` at once and then every ``every`` s."""
        if notice is not None:
            while self.thread.is_alive():
                notice(time.perf_counter() - self.t0)
                self.thread.join(every)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result, self.seconds


def run_stages(root: Path, stages: list[Stage], ctx, *, from_stage: str | None = None,
               log: Callable[[str], None] = print, count: int | None = None,
               background_notice_s: float = 30.0) -> dict[str, StageRun]:
    """Run ``stages`` in order under ``root``, skipping the cached ones (module docstring); returns each one's run.

    ``from_stage`` forces that stage and every stage downstream of it (``downstream``) to run.
    A stage with ``background=True`` runs in a thread beside the stages after it; a stage that
    depends on it waits for it, and the flow waits for it at the end; while it waits, a line says so
    every ``background_notice_s`` seconds (the stage's own tools print nothing meanwhile).
    ``count`` is the number of steps shown in the progress lines ("[3/8]") [``len(stages)``].
    ``ctx`` is handed to every job and key function; ``ctx.results`` (a dict) is filled with each
    stage's result as the flow goes, so a later stage reads an earlier one's.
    """
    names = [s.name for s in stages]
    if from_stage is not None:
        check_choice("--from", from_stage, names)
    forced = set(downstream(stages, from_stage)) if from_stage else set()
    root = Path(root)
    runs: dict[str, StageRun] = {}
    pending: dict[str, tuple] = {}

    def finish(name):
        stage, bg, digest, key, head = pending.pop(name)
        result, seconds = bg.wait(notice=lambda t: log(f"{head}: waiting for it, running for {t:.0f} s"),
                                  every=background_notice_s)
        _complete(root, stage, ctx, runs, result, seconds, digest, key)
        log(f"{head}: done in {seconds:.1f} s")

    for i, stage in enumerate(stages, 1):
        missing = [d for d in stage.deps if d not in runs and d not in pending]
        if missing:
            raise ValueError(f"stage {stage.name} depends on {missing}, which do not run before it")
        for d in stage.deps:
            if d in pending:
                finish(d)
        key = {"stage": stage.name, "options": stage.key(ctx), "job": _job_digest(stage.job),
               "deps": {d: {"hash": runs[d].hash, "outputs": _marker_outputs(root, d)} for d in stage.deps}}
        digest = _hash(key)
        marker_path = _marker_path(root, stage.name)
        marker = _read_marker(marker_path)
        head = f"[{i}/{count or len(stages)}] {stage.name}"
        if (stage.name not in forced and marker is not None and marker.get("hash") == digest
                and _outputs_intact(root, marker)):
            ctx.results[stage.name] = marker["result"]
            runs[stage.name] = StageRun(stage.name, True, 0.0, marker.get("seconds", 0.0), marker["result"], digest)
            log(f"{head}: cached ({marker_path}; ran in {marker.get('seconds', 0.0):.1f} s)")
            continue
        why = ("--from" if stage.name in forced else "no marker" if marker is None
               else "options or inputs changed" if marker.get("hash") != digest else "outputs changed")
        marker_path.unlink(missing_ok=True)
        if stage.background:
            log(f"{head}: {stage.title or stage.name} ({why}), in the background")
            pending[stage.name] = (stage, _Background(stage.job, ctx), digest, key, head)
            continue
        log(f"{head}: {stage.title or stage.name} ({why})")
        t0 = time.perf_counter()
        result = stage.job(ctx)
        seconds = time.perf_counter() - t0
        _complete(root, stage, ctx, runs, result, seconds, digest, key)
        log(f"{head}: done in {seconds:.1f} s")
    for name in list(pending):
        finish(name)
    return {name: runs[name] for name in names}


def _complete(root, stage, ctx, runs, result, seconds, digest, key) -> None:
    """Check the stage's outputs, write its marker, record its result."""
    result = json.loads(json.dumps(result, default=str))   # exactly as a cached run reads it back
    outputs = {}
    for rel in stage.outputs:
        path = root / rel
        if not path.is_file():
            raise ArtifactError(f"stage {stage.name} did not write {path}")
        outputs[rel] = file_digest(path)
    write_json_atomic(_marker_path(root, stage.name),
                      {"format": MARKER_FORMAT, "stage": stage.name, "hash": digest, "key": key, "outputs": outputs,
                       "result": result, "seconds": round(seconds, 2),
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    ctx.results[stage.name] = result
    runs[stage.name] = StageRun(stage.name, False, seconds, seconds, result, digest)


def _job_digest(job) -> str | None:
    """SHA-256 of the source file that defines the job (an edited flow module reruns its stages; the library
    code a job calls is in the stage's ``key``); None when there is no such file."""
    import inspect

    try:
        return file_digest(Path(inspect.getsourcefile(inspect.unwrap(job))))
    except (OSError, TypeError):
        return None


def _marker_outputs(root: Path, name: str) -> dict:
    marker = _read_marker(_marker_path(root, name))
    return (marker or {}).get("outputs") or {}


def code_digest(*packages: str) -> str:
    """SHA-256 of the Python sources of ``packages`` (``attnforge.hw``, ...): a stage whose code changed reruns."""
    h = hashlib.sha256()
    for name in packages:
        for root in importlib.import_module(name).__path__:
            for path in sorted(Path(root).rglob("*.py")):
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def stage_options(*names, code=()):
    """A ``Stage.key``: the flow options ``names`` (attributes of ``ctx.opts``) and the digest of ``code``."""
    return lambda ctx: {**{n: getattr(ctx.opts, n) for n in names}, "code": code_digest(*code) if code else None}


def torch_threads(job):
    """Run stage ``job(ctx)`` with ``torch.set_num_threads(ctx.opts.threads)``, restored afterwards. One
    thread by default: on a busy 2-core machine two torch threads spin against each other and against
    Yosys in the background (an epoch of the ViTCoD flow's small preset took several times longer: 238 s
    for 12 epochs against 35 s for 10)."""
    @functools.wraps(job)
    def stage(ctx):
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(ctx.opts.threads)
        try:
            return job(ctx)
        finally:
            torch.set_num_threads(before)
    return stage
