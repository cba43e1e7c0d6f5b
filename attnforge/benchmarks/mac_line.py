"""Benchmarks of the walking skeleton, written as JSON under ``bench/results/``.

Figures (each with the command, the configuration and the date):

* MAC line cycles per dot product on long vectors against the ideal (one beat
  per cycle), i.e. utilization, measured in RTL simulation on Verilator;
* Verilog generation time per configuration;
* simulation speed (cycles per second of wall time) on each simulator;
* synthesis results (LUTs, FFs, DSP, BRAM, Fmax) on ECP5-85k and iCE40UP5K, and
  effective GOPS = 2 * MACs * Fmax * utilization.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tqdm import tqdm

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run"]

CLOCK_NS = 10  # the testbenches' clock period


def _testcase_speed(results_xml: Path, name: str) -> dict:
    """Simulated cycles and wall seconds of one cocotb test, from cocotb's results file."""
    for case in ET.parse(results_xml).iter("testcase"):
        if case.get("name") == name:
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            if props.get("sim_time_unit") != "ns":
                raise ValueError(f"{results_xml}: expected sim time in ns, got {props.get('sim_time_unit')!r}")
            sim_ns = float(props["sim_time_duration"])
            wall = float(case.get("time"))
            return {"cycles": sim_ns / CLOCK_NS, "wall_seconds": wall,
                    "cycles_per_second": sim_ns / CLOCK_NS / wall if wall > 0 else None}
    raise ValueError(f"test {name!r} not found in {results_xml}")


def _synthesize(config, device: str, out_dir: str) -> dict:
    """The MAC line of ``config`` placed and routed on ``device`` (a job): the report's counts and Fmax."""
    from attnforge.fpga.synth import synthesize
    from attnforge.hw.designs import get_design

    design = get_design("mac-line")
    rep = synthesize(design.build(config), top=design.top, device=device, out_dir=out_dir)
    return {k: rep[k] for k in ("device", "luts", "ffs", "dsp", "bram", "fmax_mhz", "shell_ffs")}


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench", workers: int | None = 1,
        cluster: str | None = None) -> Path:
    """``workers`` / ``cluster``: where the syntheses (one job per device) run; the simulations,
    whose speed is a figure here, run one after the other in this process."""
    from attnforge.hw.designs import get_design
    from attnforge.jobs import Job, run_jobs
    from attnforge.hw.verilog import to_verilog
    from attnforge.sim.runner import simulate

    design = get_design("mac-line")
    length, vectors = (128, 4) if quick else (1024, 16)
    macs_sweep = [8] if quick else [1, 8, 16]
    # quick: the small device only (seconds); ECP5 place and route of the MAC line is
    # tested on its own in tests/test_synth.py and measured by the full benchmark.
    devices = ["ice40-up5k"] if quick else ["ecp5-85k", "ice40-up5k"]
    build_root = Path("build") / "bench"
    rows = []
    steps = len(macs_sweep) * 2 + len(devices)
    with tqdm(total=steps, desc="bench", unit="step") as bar:
        for macs in macs_sweep:
            config = design.make_config(macs=macs)
            t0 = time.perf_counter()
            to_verilog(design.build(config), design.top)
            gen_seconds = time.perf_counter() - t0
            row = {"config": config.__dict__, "verilog_seconds": round(gen_seconds, 3), "simulators": {}}
            reports = []
            for simulator in ("verilator", "icarus"):
                bar.set_postfix_str(f"M={macs} {simulator}")
                result = simulate(design, config, simulator=simulator, build_root=build_root,
                                  testcase="full_rate_without_stalls",
                                  tb_params={"rate_length": length, "rate_vectors": vectors})
                if not result.passed:
                    raise RuntimeError(f"benchmark simulation failed: see {result.log}")
                speed = _testcase_speed(result.results_xml, "full_rate_without_stalls")
                row["simulators"][simulator] = {**speed, "build_seconds": round(result.build_seconds, 2)}
                reports.append(result.report)
                bar.update()
            if any(r != reports[0] for r in reports):
                raise RuntimeError(f"simulators disagree on cycle counts: {reports}")
            row["rtl"] = reports[0]
            rows.append(row)
        synth = []
        config = design.make_config()
        util = next(r["rtl"]["utilization"] for r in rows if r["config"]["macs"] == config.macs)
        bar.set_postfix_str(f"synth {', '.join(devices)}")
        done = [0]

        def progress(n, total):
            bar.update(n - done[0])
            done[0] = n
        # the devices' syntheses are independent: jobs (after the simulations, whose speed is measured)
        jobs = [Job(f"synth mac_line {device}", _synthesize, (config, device, str(build_root / "synth" / device)))
                for device in devices]
        for rep in run_jobs(jobs, workers=workers, cluster=cluster, progress=progress):
            fmax = rep["fmax_mhz"]
            synth.append(rep | {"config": config.__dict__, "utilization": util,
                                "effective_gops": 2 * config.macs * fmax * 1e6 * util / 1e9 if fmax else None})

    result = {
        "format": "attnforge.bench/1",
        "benchmark": "mac_line",
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "workload": {"vector_length": length, "vectors": vectors, "clock_ns": CLOCK_NS},
        "mac_line": rows,
        "synthesis": synth,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "mac_line.json"
    write_json_atomic(path, result)
    print(f"wrote {path}")
    for row in rows:
        sims = ", ".join(f"{s} {v['cycles_per_second']:.0f} cyc/s" for s, v in row["simulators"].items())
        r = row["rtl"]
        print(f"  M={row['config']['macs']:>2}: {r['cycles_per_dot_product']:.2f} cycles/dot product "
              f"(ideal {r['length']}), utilization {r['utilization']:.4f}; verilog {row['verilog_seconds']} s; {sims}")
    for s in synth:
        print(f"  {s['device']}: {s['luts']} LUT, {s['ffs']} FF, {s['dsp']} DSP, {s['bram']} BRAM, "
              f"Fmax {s['fmax_mhz']:.1f} MHz, {s['effective_gops']:.2f} GOPS")
    return path
