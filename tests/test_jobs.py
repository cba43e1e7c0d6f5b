"""The job runner (``attnforge/jobs.py``): a local process pool or a Dask cluster, one code path.

The jobs are standard-library functions (``math.sqrt``, ``operator.mul``): a pool's or a
cluster's worker imports a job's function by name, and a test module is not importable
there. One test starts a ``distributed.LocalCluster`` of two worker processes (a few
seconds); the others run on local processes or in this one.
"""

import json
import math
import operator
import os

import pytest

from attnforge import jobs
from attnforge.cli import main
from attnforge.errors import ConfigError
from attnforge.jobs import Job, JobError, job_path, run_jobs



@pytest.fixture(scope="module")
def masks_file(tmp_path_factory):
    from attnforge.algo.vitcod.synthetic import real_shaped_mask_set
    from attnforge.formats.masks import save_masks

    return save_masks(real_shaped_mask_set(2, 2, 65, 0.9, seed=3), tmp_path_factory.mktemp("jobs") / "masks.npz")

SQUARES = [Job(f"square {i}", operator.mul, (i, i)) for i in range(5)]


def test_local_pool_and_cache_hit_on_rerun(tmp_path):
    seen = []
    assert run_jobs(SQUARES, workers=2, cache_dir=tmp_path, progress=lambda d, t: seen.append((d, t))) == \
        [0, 1, 4, 9, 16]
    assert seen[0] == (0, 5) and seen[-1] == (5, 5) and len(seen) == 6
    saved = json.loads(job_path(tmp_path, "square 3").read_text())
    assert saved["key"] == "square 3" and saved["result"] == 9
    # A rerun answers from the files: these jobs would raise if they ran.
    seen.clear()
    rerun = [Job(j.key, math.sqrt, (-1,)) for j in SQUARES]
    assert run_jobs(rerun, workers=2, cache_dir=tmp_path, progress=lambda d, t: seen.append((d, t))) == \
        [0, 1, 4, 9, 16]
    assert seen == [(5, 5)]


def test_a_damaged_or_foreign_cache_file_is_recomputed(tmp_path):
    job_path(tmp_path, "square 2").write_text("{not json")
    path = job_path(tmp_path, "square 4")
    path.write_text(json.dumps({"format": jobs.CACHE_FORMAT, "key": "another job", "result": -1}))
    assert run_jobs(SQUARES, workers=1, cache_dir=tmp_path) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.full)])
def test_a_job_that_raises_is_named_and_the_finished_ones_stay_cached(tmp_path, workers):
    bad = [SQUARES[0], Job("sqrt of -1", math.sqrt, (-1,)), SQUARES[1], Job("sqrt of -2", math.sqrt, (-2,))]
    with pytest.raises(JobError, match=r"job 'sqrt of -1' failed \(and 1 other job\(s\)\): ValueError: math "
                                       r"domain error") as err:
        run_jobs(bad, workers=workers, cache_dir=tmp_path)
    assert err.value.key == "sqrt of -1" and isinstance(err.value.cause, ValueError)
    # the other jobs ran to their end and are cached
    assert all(job_path(tmp_path, j.key).is_file() for j in SQUARES[:2])


def test_keys_must_be_unique_and_workers_positive():
    with pytest.raises(ValueError, match="unique"):
        run_jobs([SQUARES[0], SQUARES[0]])
    with pytest.raises(ConfigError, match="--workers must be in"):
        run_jobs(SQUARES, workers=0)


def test_a_cluster_that_does_not_answer_is_a_config_error(monkeypatch):
    monkeypatch.setattr(jobs, "CONNECT_TIMEOUT", 1)
    with pytest.raises(ConfigError, match=r"--cluster 'tcp://127.0.0.1:1': no Dask scheduler answered"):
        run_jobs(SQUARES, cluster="tcp://127.0.0.1:1")


def test_cli_bad_cluster_address_exits_2(masks_file, tmp_path, capsys):
    args = ["explore", "vitcod", "--masks", str(masks_file), "--head-dim", "16", "--lines", "1+1", "--macs", "8",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--cluster", "no-port-here"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--cluster 'no-port-here' is not a scheduler address" in err and "tcp://HOST:8786" in err


def test_explore_on_a_local_dask_cluster_gives_the_local_pools_answer(masks_file, tmp_path):
    """The acceptance check of issue 20 item 4: the same sweep through ``--cluster`` (a LocalCluster of two
    worker processes) and through the local pool; the same rows, and each job's file cached."""
    import distributed   # a dependency (pyproject.toml): its absence is a failure, not a skip
    common = ["explore", "vitcod", "--masks", str(masks_file), "--head-dim", "16", "--lines", "1+1", "2+2",
              "--macs", "8", "--no-progress"]
    assert main([*common, "--workers", "1", "--out", str(tmp_path / "local"),
                 "--cache-dir", str(tmp_path / "cache_local")]) == 0
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        assert main([*common, "--cluster", cluster.scheduler_address, "--out", str(tmp_path / "dask"),
                     "--cache-dir", str(tmp_path / "cache_dask")]) == 0
    local, dask = (json.loads((tmp_path / d / "explore.json").read_text()) for d in ("local", "dask"))
    assert dask["rows"] == local["rows"] and dask["pareto"] == local["pareto"]
    # one file per job: 2 line splits x 1 MAC count, and the dense baselines of the chosen rows
    chosen = sum(r["speedup"] is not None for r in local["rows"])
    assert len(list((tmp_path / "cache_dask").rglob("*.json"))) == 2 + chosen


@pytest.fixture(scope="module")
def cluster_address():
    import distributed
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.mark.full
def test_cluster_runs_jobs_caches_them_and_names_a_failing_one(cluster_address, tmp_path):
    assert run_jobs(SQUARES, cluster=cluster_address, cache_dir=tmp_path) == [0, 1, 4, 9, 16]
    assert run_jobs([Job(j.key, math.sqrt, (-1,)) for j in SQUARES], cluster=cluster_address,
                    cache_dir=tmp_path) == [0, 1, 4, 9, 16]
    with pytest.raises(JobError, match=r"job 'sqrt of -1' failed: ValueError"):
        run_jobs([*SQUARES, Job("sqrt of -1", math.sqrt, (-1,))], cluster=cluster_address)


@pytest.mark.full
def test_a_job_that_kills_its_workers_is_named(tmp_path):
    """A job whose worker dies (here: every time) is rescheduled by Dask on another worker until it gives
    up (KilledWorker); the error names the job, and the jobs that finished are cached."""
    import distributed
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        assert run_jobs(SQUARES, cluster=cluster.scheduler_address, cache_dir=tmp_path) == [0, 1, 4, 9, 16]
        with pytest.raises(JobError, match=r"job 'exit' failed: .*KilledWorker"):
            run_jobs([*SQUARES, Job("exit", os._exit, (3,))], cluster=cluster.scheduler_address,
                     cache_dir=tmp_path)
        # let the nannies finish restarting the killed workers: closing the cluster while one is half
        # started fails inside distributed ("can only join a started process")
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)


@pytest.mark.full
def test_a_lost_worker_costs_only_a_rerun_of_its_job(tmp_path):
    """Issue 20's "a lost worker costs only its job": a job kills its worker the first time it runs (it
    leaves a marker first); Dask runs it again on a worker that is up, it returns, and the run's result is
    complete and cached. The job is ``eval`` of an expression (a builtin: importable on every worker,
    unlike a function of this module), which notes each run in a log file."""
    import distributed
    marker, log = str(tmp_path / "died"), str(tmp_path / "runs.log")
    die_once = (f"open({log!r}, 'a').write('run\\n') and (__import__('os')._exit(3) if not "
                f"__import__('os').path.exists({marker!r}) and open({marker!r}, 'x') else 7)")
    jobs_ = [*SQUARES, Job("die once", eval, (die_once, {}))]
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        assert run_jobs(jobs_, cluster=cluster.scheduler_address, cache_dir=tmp_path / "cache") == \
            [0, 1, 4, 9, 16, 7]
        with distributed.Client(cluster) as client:    # let the nanny finish restarting the killed worker
            client.wait_for_workers(2, timeout=60)
    assert os.path.exists(marker) and open(log).read() == "run\nrun\n"     # it died once, then ran again
    assert len(list((tmp_path / "cache").iterdir())) == 6
    assert run_jobs(jobs_, workers=1, cache_dir=tmp_path / "cache") == [0, 1, 4, 9, 16, 7]   # all from the cache
    assert open(log).read() == "run\nrun\n"


def test_an_interrupted_run_keeps_the_jobs_it_finished(tmp_path):
    """Stopped after its second job (here by the progress callback; Ctrl-C alike), a run in this process
    has run and cached only those two (each job makes a folder: what ran shows), and the rerun runs only
    the other three."""
    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    made = tmp_path / "made"
    made.mkdir()
    mkdirs = [Job(f"mkdir {i}", os.mkdir, (str(made / str(i)),)) for i in range(5)]
    with pytest.raises(Stop):
        run_jobs(mkdirs, workers=1, cache_dir=tmp_path / "cache", progress=stop_after_two)
    assert sorted(p.name for p in made.iterdir()) == ["0", "1"]
    assert len(list((tmp_path / "cache").iterdir())) == 2
    seen = []
    assert run_jobs(mkdirs, workers=1, cache_dir=tmp_path / "cache", progress=lambda d, t: seen.append(d)) == \
        [None] * 5                                  # os.mkdir's result; a rerun of "0" would raise
    assert seen == [2, 3, 4, 5] and sorted(p.name for p in made.iterdir()) == ["0", "1", "2", "3", "4"]
