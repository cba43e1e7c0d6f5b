"""Measured cycles of the ViT matmul (hw/vit/matmul.py) on the digits ViT's MLP layers, on the RTL.

For fc1 (65 tokens, 64 -> 256) and fc2 (65 tokens, 256 -> 64), each dense, 75 % and 90 % unstructured
(random int8 weights, magnitude-pruned over the whole layer) and 2:4 (the two largest of every four),
runs the testbench's ``full_rate_cycles_match_the_model`` (no idle, no backpressure; outputs checked
bit for bit against the golden model) and prints a Markdown table: measured cycles (first activation
beat to last output beat), the cycle model's, the ideal (kept MACs / lanes), their ratio,
utilization, and the weight phase alone (first weight beat to last output beat).

    .venv/bin/python scripts/vit_matmul_cycles.py --lines 1 --macs 8
    .venv/bin/python scripts/vit_matmul_cycles.py --ticket ticket_csr.npz --layer 2   # a trained ticket's layer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnforge.hw.designs import get_design
from attnforge.hw.vit.matmul import VitMatmulConfig
from attnforge.sim.runner import simulate

LAYERS = {"fc1": dict(rows=65, in_features=64, out_features=256),
          "fc2": dict(rows=65, in_features=256, out_features=64)}
PATTERNS = {"dense": dict(mode="dense"), "75 % unstructured": dict(mode="csr", sparsity=0.75),
            "90 % unstructured": dict(mode="csr", sparsity=0.9), "2:4": dict(mode="2:4")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1)
    ap.add_argument("--macs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--simulator", default="verilator")
    ap.add_argument("--ticket", help="a ticket CSR file (attnforge tickets export): run its --layer instead")
    ap.add_argument("--layer", type=int, default=0, help="layer index in --ticket [0]")
    args = ap.parse_args()
    config = VitMatmulConfig(lines=args.lines, macs=args.macs, max_rows=65, max_in=256)
    design = get_design("vit-matmul")
    print(f"lines={config.lines} macs={config.macs} (P = {config.lanes} lanes, G = {config.groups} row groups "
          f"for 65 tokens), {args.simulator}, seed {args.seed}\n")
    print("| layer | weights | kept MACs | measured cycles | model | ideal | measured / ideal | utilization "
          "| weight phase / ideal | speedup over dense |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    layers, patterns = LAYERS, PATTERNS
    if args.ticket:
        layers = {f"{Path(args.ticket).name} layer {args.layer}": dict(rows=65)}
        patterns = {"ticket": dict(mode="ticket", ticket=str(Path(args.ticket).resolve()), layer=args.layer)}
    for layer, shape in layers.items():
        dense_cycles = None
        for name, pattern in patterns.items():
            result = simulate(design, config, seed=args.seed, tb_params={"measure": {**shape, **pattern}},
                              simulator=args.simulator, build_root=Path("build") / "vit_matmul_cycles",
                              testcase="full_rate_cycles_match_the_model")
            r = result.report
            if not result.passed or r is None:
                raise SystemExit(f"{layer} {name}: the run failed, see {result.log}")
            if name == "dense":
                dense_cycles = r["measured_cycles"]
            speedup = f"{dense_cycles / r['measured_cycles']:.2f}" if dense_cycles else "-"
            print(f"| {layer} | {name} | {r['nnz'] * shape['rows']} | {r['measured_cycles']} | {r['model_cycles']} "
                  f"| {r['ideal']:.0f} | {r['ratio']:.3f} | {r['utilization']:.3f} "
                  f"| {r['measured_weight_phase'] / r['ideal']:.3f} | {speedup} |",
                  flush=True)


if __name__ == "__main__":
    main()
