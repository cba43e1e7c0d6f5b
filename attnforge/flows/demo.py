"""``make demo``: the walking skeleton end to end on the default MAC line.

Generate Verilog, lint it, check the RTL bit for bit against the golden model
on Verilator and Icarus, place and route it on an ECP5-85k, print a report.
"""

from __future__ import annotations

import json
from pathlib import Path

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run_demo"]


def run_demo(out: Path) -> int:
    from attnforge.fpga.synth import synthesize
    from attnforge.hw.designs import get_design
    from attnforge.sim.runner import simulate

    from .build import generate_verilog

    design = get_design("mac-line")
    config = design.make_config()
    print(f"[1/4] generate: {design.name} {config}")
    verilog, lint = generate_verilog(design, config, out / f"{design.top}.v")
    print(f"      {verilog}: lint {'clean' if lint.clean else 'FAILED'}")
    for line in lint.messages:
        print("      " + line)

    sims = {}
    for i, simulator in enumerate(("verilator", "icarus")):
        print(f"[{2 + i}/4] simulate on {simulator}: RTL vs integer golden model (random data, idle, backpressure)")
        result = simulate(design, config, simulator=simulator, build_root=out / "sim")
        sims[simulator] = {"bit_exact": result.passed, "tests": result.tests, "failed": result.failed,
                           **(result.report or {})}
        print(f"      {result.tests - result.failed}/{result.tests} tests bit exact; "
              f"utilization {result.report['utilization']:.3f} on {result.report['length']}-element vectors")

    print("[4/4] synthesize and place-and-route on ecp5-85k (Yosys + nextpnr via YoWASP)")
    synth = synthesize(design.build(config), top=design.top, device="ecp5-85k", out_dir=out / "synth")
    print(f"      {synth['luts']} LUT4, {synth['ffs']} FF ({synth['shell_ffs']} of them the pin shell), "
          f"{synth['dsp']} DSP, {synth['bram']} BRAM, Fmax {synth['fmax_mhz']:.1f} MHz")

    report = {"design": design.name, "config": config.__dict__, "verilog": str(verilog),
              "lint_clean": lint.clean, "simulation": sims,
              "synthesis": {k: synth[k] for k in ("device", "luts", "ffs", "dsp", "bram", "fmax_mhz")}}
    write_json_atomic(out / "report.json", report)
    print(json.dumps(report, indent=2))
    ok = lint.clean and all(s["bit_exact"] for s in sims.values()) and synth["dsp"] >= config.macs
    print(f"report: {out / 'report.json'} -- {'all stages passed' if ok else 'SOME STAGES FAILED'}")
    return 0 if ok else 1
