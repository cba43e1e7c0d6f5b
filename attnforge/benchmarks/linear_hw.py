"""Benchmark of the linear-attention decode datapath (``hw/linear``), written as
``bench/results/linear_hw.json`` and ``linear_hw.png``.

Figures, for d = 64 with M = 64 lanes (each lane one update and one readout
multiplier, so 128 state multipliers), K = 4, t_max = 8:

* RTL (Verilator) cycles per token against context length in one long decode
  run, bit for bit against the golden model: flat;
* steady-state utilization = ideal (d^2/M) / measured cycles per token (goal >= 0.85);
* verify mode: cycles per accepted token for T = 2, 4, 8 (all accepted), measured,
  and from the cycle model for partial acceptance;
* the cycle model's error against every RTL figure;
* the softmax KV-cache decode baseline (model, same 128 multipliers) and the
  context length at which the linear datapath overtakes it; also with the cache
  off chip at 16 bytes/cycle;
* ECP5-85k synthesis (LUT/FF/DSP/BRAM/Fmax and the critical path) of the same
  configuration (not in quick mode).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

from tqdm import tqdm

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run", "CONFIG", "critical_path"]

CONFIG = dict(d=64, macs=64, conv_taps=4, t_max=8)
OFFCHIP_BYTES_PER_CYCLE = 16


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    ctx = [r["context"] for r in result["context_curve"]]
    ax.plot(ctx, [r["rtl_cycles_per_token"] for r in result["context_curve"]], "o-", label="linear datapath (RTL)")
    base = result["baseline"]
    ax.plot([b["context"] for b in base], [b["softmax_kv_cycles_per_token"] for b in base], "s--",
            label="softmax KV cache, same MACs (model)")
    ax.plot([b["context"] for b in base], [b["linear_model_cycles_per_token"] for b in base], ":",
            label="linear datapath (cycle model)")
    ax.axvline(result["crossover_context"], color="gray", lw=0.8)
    ax.text(result["crossover_context"] * 1.1, result["decode"]["cycles_per_token"] * 1.3,
            f"crossover at context {result['crossover_context']}", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("cycles per token")
    ax.set_title(f"d={CONFIG['d']}, M={CONFIG['macs']}: decode cost vs context")
    ax.legend(fontsize=8)
    ver = result["verify"]
    bx.bar([str(v["T"]) for v in ver], [v["rtl_cycles_per_accepted"] for v in ver], label="all accepted (RTL)")
    bx.axhline(result["decode"]["cycles_per_token"], color="k", lw=0.8, label="plain decode (RTL)")
    for v in ver:
        bx.plot(str(v["T"]), v["model_half_accepted"], "rv")
        bx.plot(str(v["T"]), v["model_half_accepted_snapshots"], "g^")
    bx.plot([], [], "rv", label="half accepted (model)")
    bx.plot([], [], "g^", label="half accepted, snapshots=True (model)")
    bx.set_xlabel("verify block T")
    bx.set_ylabel("cycles per accepted token")
    bx.set_title("speculative verify")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def critical_path(nextpnr_report: Path) -> dict | None:
    """The longest register-to-register path in nextpnr's JSON report file (``--report``):
    ``attnforge.fpga.synth.critical_path`` of it (ends, delay, logic vs routing, stage),
    or None without a readable report."""
    from attnforge.fpga.synth import critical_path as path_of

    try:
        report = json.loads(Path(nextpnr_report).read_text())
    except (OSError, ValueError):
        return None
    return path_of(report)


def _rtl(config, build_root: str, tb_params: dict) -> dict:
    """The decode and verify runs on Verilator (a job): passed, the testbench's report, the log."""
    from attnforge.hw.designs import get_design
    from attnforge.sim.runner import simulate

    result = simulate(get_design("linear-decode"), config, seed=1, simulator="verilator", build_root=build_root,
                      tb_params=tb_params)
    return {"passed": result.passed, "report": result.report, "log": str(result.log)}


def _synthesis() -> dict:
    """ECP5-85k report of ``CONFIG`` with the generator's default requantizer constants (a job), built
    as docs/timing.md's rows are: the readout in MULT18X18D primitives, classic ABC, the static
    placer, seed 1, a 100 MHz target (`attnforge synth linear-decode --d 64 --macs 64 --conv-taps 4
    --t-max 8 --dsp-primitives --lut-mapper abc --placer static --target-mhz 100`, about 13 minutes;
    ABC9 and HeAP took about 2 hours), in the folder that command uses without ``-o``; a report there
    is reused when its Verilog is unchanged."""
    from attnforge.fpga.shell import SynthShell
    from attnforge.fpga.synth import synthesize
    from attnforge.hw.designs import get_design
    from attnforge.hw.verilog import to_verilog

    design = get_design("linear-decode")
    config = design.make_config(**CONFIG, dsp_primitives=True)
    folder = Path("build") / "synth" / design.config_name(config) / "ecp5-85k"
    shell_v = folder / f"{design.top}_shell.v"
    report = folder / "report.json"
    keys = ("device", "luts", "ffs", "dsp", "bram", "fmax_mhz", "shell_ffs", "yosys_seconds", "nextpnr_seconds",
            "seed", "router", "placer", "lut_mapper", "tools", "utilization", "critical_stage")
    if report.exists() and shell_v.exists():
        text = to_verilog(SynthShell(design.build(config)), f"{design.top}_shell")
        if shell_v.read_text() == text:
            rep = json.loads(report.read_text())
            return {k: rep.get(k) for k in keys} | {"config": dataclasses.asdict(config), "reused": str(report),
                                                "critical_path": critical_path(folder / "nextpnr.json")}
    rep = synthesize(design.build(config), top=design.top, device="ecp5-85k", out_dir=folder, lut_mapper="abc",
                     placer="static", seed=1, target_mhz=100)
    return {k: rep.get(k) for k in keys} | {"config": dataclasses.asdict(config), "reused": None,
                                        "critical_path": critical_path(folder / "nextpnr.json")}


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench", synth: bool = True,
        workers: int | None = 1, cluster: str | None = None) -> Path:
    """``workers`` / ``cluster``: where the RTL run and the synthesis go (two jobs; one process by default)."""
    from attnforge.hw.linear import LinearDecodeConfig
    from attnforge.jobs import Job, run_jobs
    from attnforge.linear_format import random_data_requant
    from attnforge.hw.linear.cycles import (LinearDecodeCycles, crossover_context, softmax_kv_cycles,
                                             steady_cycles_per_token)

    config = LinearDecodeConfig(**CONFIG, **random_data_requant(CONFIG["d"], CONFIG["conv_taps"]))
    model = LinearDecodeCycles.of(config)
    # The same datapath generated with snapshots=True (t_max+1 state banks; RTL-tested
    # in tests/rtl/test_linear_decode.py): commit(a) never replays.
    snap = LinearDecodeCycles.of(dataclasses.replace(config, snapshots=True))
    decode_tokens = 256 if quick else 2048
    verify_tokens = 64 if quick else 256
    modes = [[0, 1, decode_tokens], [2, 2, verify_tokens], [4, 4, verify_tokens], [8, 8, verify_tokens]]
    build_root = Path("build") / "bench"
    synth = synth and not quick
    steps = 2 if synth else 1
    with tqdm(total=steps, desc="linear_hw", unit="step") as bar:
        bar.set_postfix_str("RTL" + (" and synth ecp5-85k" if synth else ""))
        # the RTL run and the synthesis are independent: jobs (``workers`` / ``cluster``)
        jobs = [Job("linear_hw rtl", _rtl, (config, str(build_root), {"tokens": 64 if quick else 400,
                                                                      "rate_tokens": decode_tokens,
                                                                      "rate_modes": modes}))]
        if synth:
            jobs.append(Job("linear_hw synth ecp5-85k", _synthesis, ()))
        done = [0]

        def progress(n, total):
            bar.update(n - done[0])
            done[0] = n
        rtl, *synthesized = run_jobs(jobs, workers=workers, cluster=cluster, progress=progress)
        if not rtl["passed"]:
            raise RuntimeError(f"linear_hw benchmark: RTL differs from the golden model; see "
                               f"{rtl['log']}")
        rows = rtl["report"]["modes"]

        # --- decode: cycles per token against context (flat), utilization
        dec = rows[0]
        outs = dec["output_cycles"]
        deltas = [b - a for a, b in zip(outs, outs[1:])]   # delta i: cost of token i+1 at context i+1
        curve = []
        p = 1
        while p <= len(deltas):   # tokens p+1 .. 2p, i.e. contexts in (p, 2p]
            seg = deltas[p - 1:min(2 * p - 1, len(deltas))]
            curve.append({"context": p + len(seg), "rtl_cycles_per_token": sum(seg) / len(seg),
                          "tokens_averaged": len(seg)})
            p *= 2
        cpt = steady_cycles_per_token(outs, None)
        ideal = model.ideal_cycles_per_token
        model_ops = [tuple(op) for op in dec["ops"]]
        model_cpt = steady_cycles_per_token(model.run(model_ops), None)
        decode = {"cycles_per_token": cpt, "ideal_cycles_per_token": ideal, "utilization": ideal / cpt,
                  "model_cycles_per_token": model_cpt, "tokens": len(outs),
                  "goal_utilization": 0.85, "meets_goal": ideal / cpt >= 0.85}

        # --- verify
        verify = []
        for row in rows[1:]:
            t = row["verify"]
            model_cpa = steady_cycles_per_token(model.run([tuple(op) for op in row["ops"]]), t)
            verify.append({"T": t, "rtl_cycles_per_accepted": row["steady_cycles_per_accepted"],
                           "model_cycles_per_accepted": model_cpa,
                           "model_half_accepted": model.cycles_per_token(verify=t, accept=max(1, t // 2)),
                           "model_one_accepted": model.cycles_per_token(verify=t, accept=1),
                           "model_half_accepted_snapshots": snap.cycles_per_token(verify=t, accept=max(1, t // 2)),
                           "model_one_accepted_snapshots": snap.cycles_per_token(verify=t, accept=1),
                           "tokens": row["tokens"]})
        errors = [abs(model_cpt - cpt) / cpt] + [abs(v["model_cycles_per_accepted"] - v["rtl_cycles_per_accepted"])
                                                / v["rtl_cycles_per_accepted"] for v in verify]

        # --- baseline and crossover
        contexts = sorted({2 ** i for i in range(4, 14)} | {crossover_context(cpt, config.d, config.macs)})
        baseline = [{"context": c, "softmax_kv_cycles_per_token": softmax_kv_cycles(c, config.d, config.macs),
                     "softmax_kv_offchip_cycles_per_token": softmax_kv_cycles(
                         c, config.d, config.macs, bytes_per_cycle=OFFCHIP_BYTES_PER_CYCLE),
                     "linear_model_cycles_per_token": model.cycles_per_token()} for c in contexts]
        crossover = crossover_context(cpt, config.d, config.macs)
        crossover_off = crossover_context(cpt, config.d, config.macs, bytes_per_cycle=OFFCHIP_BYTES_PER_CYCLE)

        if synth:
            synth = synthesized[0]
            if synth.get("fmax_mhz"):
                synth["effective_gops"] = (2 * 2 * config.macs * synth["fmax_mhz"] * 1e6
                                           * decode["utilization"] / 1e9)

    out = {
        "format": "attnforge.bench/1",
        "benchmark": "linear_hw",
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": dataclasses.asdict(config),
        "multipliers": {"state_lanes": config.macs, "state_multipliers": 2 * config.macs,
                        "conv": config.conv_taps, "requant": 2},
        "bit_exact": rtl["passed"],
        "decode": decode,
        "context_curve": curve,
        "verify": verify,
        "model_max_relative_error": max(errors),
        "baseline": baseline,
        "baseline_assumptions": {
            "multipliers": 2 * config.macs, "fixed_latency_cycles": 24,
            "offchip_bytes_per_cycle": OFFCHIP_BYTES_PER_CYCLE,
            "note": "model only: q.K^T and P.V each L*d MACs on the same multipliers, plus a fixed softmax latency"},
        "crossover_context": crossover,
        "crossover_context_offchip": crossover_off,
        "synthesis": synth or None,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "linear_hw.json"
    write_json_atomic(path, out)
    _plot(out, out_dir / "linear_hw.png")
    print(f"wrote {path} and linear_hw.png")
    print(f"  decode: {cpt:.2f} cycles/token (ideal {ideal:.0f}), utilization {ideal / cpt:.3f}; "
          f"model {model_cpt:.2f}")
    for v in verify:
        print(f"  verify T={v['T']}: {v['rtl_cycles_per_accepted']:.2f} cycles/accepted token "
              f"(model {v['model_cycles_per_accepted']:.2f}; half accepted {v['model_half_accepted']:.1f})")
    print(f"  crossover vs softmax KV cache (same MACs): context {crossover}; off-chip cache: {crossover_off}")
    if synth:
        print(f"  {synth['device']}: {synth['luts']} LUT, {synth['ffs']} FF, {synth['dsp']} DSP, "
              f"{synth['bram']} BRAM, Fmax {synth['fmax_mhz']} MHz, effective {synth.get('effective_gops')} GOPS")
        cp = synth.get("critical_path")
        if cp:
            print(f"  critical path {cp['from']['cell']} -> {cp['to']['cell']} (stage {cp['stage']}): "
                  f"{cp['delay_ns']} ns ({cp['logic_steps']} logic steps, {cp['logic_ns']} ns logic, "
                  f"{cp['routing_ns']} ns routing)")
    return path
