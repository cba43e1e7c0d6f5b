"""Many independent jobs, one code path: a local process pool, or a Dask cluster with ``--cluster``.

The design-space sweep (``attnforge explore vitcod``), the tickets study and the
linear study are made of jobs that share nothing while they run: a function of
the project and its arguments, whose result is all that comes back.
``run_jobs`` runs a list of them

* on a local process pool (``workers`` processes, the CPU count by default;
  one worker runs them in this process), or
* on an existing Dask ``distributed`` scheduler at ``cluster``
  (``tcp://HOST:8786``; its workers must have this version of attnforge
  installed, and for the studies, which write their cells themselves, see the
  same file system), through the scheduler's ``concurrent.futures`` executor
  (``Client.get_executor()``): the same submit and ``as_completed`` loop as
  the local pool. Dask reschedules the job of a worker that is lost.

With ``cache_dir`` each finished job's result is written at once (JSON, one
file per job key, ``formats.atomic``), so an interrupted run or a lost worker
costs only the jobs that were running, and a rerun reuses every cached job. A
job that raises ends the run, once the other jobs have ended (and are cached),
with ``JobError`` naming the job.

The ground of the project's layers below ``algo`` (``pyproject.toml``): every
caller, the studies included, may import it; it imports only ``formats`` and
``errors``.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from attnforge.errors import ConfigError, check_int
from attnforge.formats.atomic import write_json_atomic

__all__ = ["Job", "JobError", "run_jobs", "job_path", "CACHE_FORMAT", "DISTRIBUTED_VERSION"]

#: Format of a cached job's file.
CACHE_FORMAT = "attnforge.job/1"
#: The ``distributed`` release pinned in pyproject.toml (``--cluster``).
DISTRIBUTED_VERSION = "2026.8.0"
#: Seconds to wait for a ``--cluster`` scheduler to answer.
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class Job:
    """One job: ``fn(*args)``, known by ``key``.

    ``key`` names the job in progress and errors and keys its cache file: it must
    say everything the result depends on (inputs' digests, parameters, the format
    of the result). ``fn`` must be a module-level function of an importable
    module (the workers import it by name), ``args`` picklable, and the result
    JSON-serializable when the run has a ``cache_dir``.
    """

    key: str
    fn: Callable
    args: tuple = field(default=())
    #: how errors and progress name the job, when the key is long [the key]
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.key


class JobError(RuntimeError):
    """A job raised: ``key`` and ``name`` (its label) name it, ``cause`` is what it raised (also ``__cause__``)."""

    def __init__(self, job: Job, cause: BaseException, more: str = ""):
        self.key, self.name, self.cause = job.key, job.name, cause
        super().__init__(f"job {job.name!r} failed{more}: {type(cause).__name__}: {cause}")


def job_path(cache_dir, key: str) -> Path:
    """The cache file of the job ``key`` under ``cache_dir``."""
    return Path(cache_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


_MISSING = object()


def _read_cached(cache_dir, key: str):
    path = job_path(cache_dir, key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return _MISSING         # absent or damaged (a write cut short cannot be: writes are atomic)
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key:
        return _MISSING
    return data.get("result")


class _InlineExecutor(cf.Executor):
    """``workers=1``: each job runs in this process when submitted (no pool to start); ``_finished``
    submits the next only when the last one's result is handled (cached), as a pool's finish."""

    def submit(self, fn, /, *args, **kwargs):
        future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:    # reported by run_jobs as the job's failure
            future.set_exception(exc)
        return future


@contextmanager
def _cluster_executor(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(f"--cluster {address!r} needs the Dask 'distributed' package "
                          f"(pip install distributed=={DISTRIBUTED_VERSION})") from None
    hint = "give the address of a running Dask scheduler, such as tcp://HOST:8786 from `dask scheduler`"
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--cluster {address!r} is not a scheduler address ({exc}); {hint}") from None
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--cluster {address!r}: no Dask scheduler answered there within {CONNECT_TIMEOUT} s "
                          f"({type(exc).__name__}: {exc}); {hint}") from None
    try:
        with client.get_executor(pure=False) as executor:
            yield executor
    finally:
        client.close()


@contextmanager
def _executor(workers: int | None, cluster: str | None, jobs: int, start_method: str):
    if cluster:
        with _cluster_executor(cluster) as executor:
            yield executor
        return
    workers = min(workers or os.cpu_count() or 1, jobs)
    if workers <= 1:
        yield _InlineExecutor()
        return
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method)) as pool:
        yield pool


def _finished(executor, jobs: list, todo: list):
    """(index, finished future) of each job of ``todo`` as it finishes; the rest are cancelled when
    the caller stops early."""
    if isinstance(executor, _InlineExecutor):
        for i in todo:
            yield i, executor.submit(jobs[i].fn, *jobs[i].args)
        return
    futures = {executor.submit(jobs[i].fn, *jobs[i].args): i for i in todo}
    try:
        for future in cf.as_completed(futures):
            yield futures[future], future
    finally:
        for future in futures:
            future.cancel()


def run_jobs(jobs, *, workers: int | None = None, cluster: str | None = None, cache_dir=None, progress=None,
             start_method: str = "spawn") -> list:
    """The results of ``jobs`` (``Job``), in their order.

    ``workers``: local processes (default the CPU count; 1 runs the jobs in this process);
    ``cluster``: a Dask scheduler's address instead (``workers`` is then the cluster's);
    ``cache_dir``: a folder of one result file per job key, read before and written as each
    job finishes; ``progress(done, total)`` after the cache is read and as jobs finish;
    ``start_method`` of the local processes (``spawn``: a worker imports what it runs, as a
    cluster's worker does, so what runs here runs there; a script that calls this must guard
    its top level with ``if __name__ == "__main__":``, as ``multiprocessing`` asks).

    A job that raises does not stop the others: when all have ended, ``JobError`` names the
    first (in ``jobs`` order) that raised, the others' results being cached. ``ConfigError``
    for a bad ``workers`` or a ``cluster`` that does not answer.
    """
    jobs = list(jobs)
    if workers is not None:
        check_int("--workers", workers, 1, 1024)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("run_jobs: job keys must be unique (a key names one result)")
    results = [_MISSING] * len(jobs)
    if cache_dir is not None:
        for i, job in enumerate(jobs):
            results[i] = _read_cached(cache_dir, job.key)
    todo = [i for i, r in enumerate(results) if r is _MISSING]
    done = len(jobs) - len(todo)
    if progress:
        progress(done, len(jobs))
    if not todo:
        return results
    failed = []
    with _executor(workers, cluster, len(todo), start_method) as executor:
        for i, future in _finished(executor, jobs, todo):
            try:
                result = future.result()
            except Exception as exc:    # the others go on: what they finish is cached for the rerun
                failed.append((i, exc))
                continue
            if cache_dir is not None:
                # as a rerun will read it back (tuples become lists): the same either way
                result = json.loads(json.dumps(result))
                write_json_atomic(job_path(cache_dir, jobs[i].key),
                                  {"format": CACHE_FORMAT, "key": jobs[i].key, "result": result}, indent=None)
            results[i] = result
            done += 1
            if progress:
                progress(done, len(jobs))
    if failed:
        i, exc = min(failed, key=lambda f: f[0])
        more = f" (and {len(failed) - 1} other job(s))" if len(failed) > 1 else ""
        raise JobError(jobs[i], exc, more) from exc
    return results
