"""The model-level accelerator's cycle model on an MLP half (hw/vitmodel/program.py), op by op.

Builds the random MLP-half program of ``tb/vitmodel_case.py`` (LOAD; LAYERNORM; fc1 dense; GELU; fc2
dense and fc2 CSR at ``--sparsity``; ADD; a STORE after each) at the digits ViT's or DeiT-Tiny's shapes
and prints, per instruction, the cycle model's cycles (header to next header), the unit's own share,
the ideal (MACs / P for a matmul, beats for the rest) and ideal / cycles. No RTL here: the model is
exact against the RTL (tests/rtl/test_vitmodel.py, tests/test_vitmodel_program.py assert it).

    .venv/bin/python scripts/vitmodel_cycles.py --preset digits --sparsity 0.9
    .venv/bin/python scripts/vitmodel_cycles.py --preset deit-tiny --sparsity 0.75
"""

from __future__ import annotations

import argparse

from attnforge.hw.vitmodel import DEIT_TINY, DIGITS, program_cycles
from attnforge.tb.vitmodel_case import mlp_case

PRESETS = {"digits": (DIGITS, dict(tokens=65, dim=64, hidden=128)),
           "deit-tiny": (DEIT_TINY, dict(tokens=197, dim=192, hidden=768))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="digits")
    ap.add_argument("--sparsity", type=float, default=0.9, help="fc2 CSR's pruned fraction [0.9]")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    config, shape = PRESETS[args.preset]
    case = mlp_case(config, args.seed, sparsity=args.sparsity, **shape)
    print(f"{args.preset}: {shape}, P = {config.lanes}, fc2 CSR at {args.sparsity:.0%} (one empty channel)\n")
    print("| # | op | cycles | unit | ideal | ideal / cycles |")
    print("|---|---|---|---|---|---|")
    rows = program_cycles(case.program, config)
    for k, c in enumerate(rows):
        print(f"| {k} | {c.op} | {c.total} | {c.unit} | {c.ideal:.0f} | {c.ideal / c.total:.3f} |")
    print(f"\ntotal {sum(c.total for c in rows)} cycles")


if __name__ == "__main__":
    main()
