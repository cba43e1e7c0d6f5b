"""``attnforge flow vitcod``: the main job in one command (``make demo`` runs it with ``--preset small``).

    attnforge flow vitcod                                  # build/flow/vitcod/report.md (preset small)
    attnforge flow vitcod --preset full --out build/flow/vitcod-full
    attnforge flow vitcod --dense-lines 4 --sparse-lines 4 # retrains nothing: verilog, sim, synth rerun
    attnforge flow vitcod --from sim                       # run the RTL again (and everything after it)

The stages and their caching are in ``attnforge.flows.vitcod_flow`` and ``attnforge.flows.stages``.
"""

from __future__ import annotations

import dataclasses
import shlex

from . import add_simulator_option, command_group

__all__ = ["register", "canonical_command"]

#: Options that override a preset's value (None: keep the preset's).
_OVERRIDES = ("depth", "epochs", "ft_epochs", "batch_size", "lr", "max_shift", "limit", "max_images", "dense_lines",
              "sparse_lines")


def canonical_command(out: str, opts, from_stage: str | None = None) -> str:
    """The shortest ``attnforge flow vitcod`` command line that gives ``opts``."""
    from attnforge.flows.vitcod_flow import FLOW_PRESETS, FlowOptions

    base = dataclasses.asdict(FlowOptions(preset=opts.preset, **FLOW_PRESETS[opts.preset]))
    parts = ["attnforge", "flow", "vitcod", "--out", out, "--preset", opts.preset]
    for name, value in dataclasses.asdict(opts).items():
        if name in ("preset", "progress") or value == base[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts += [flag, str(value)]
    if from_stage:
        parts += ["--from", from_stage]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_flow_vitcod(args) -> int:
    from attnforge.flows.vitcod_flow import flow_options, run_vitcod_flow

    opts = flow_options(args.preset, sparsity=args.sparsity, seed=args.seed, image_index=args.image_index,
                        macs=args.macs, data_width=args.data_width, simulator=args.simulator, device=args.device,
                        synth=args.synth, pnr=args.pnr, progress=args.progress, threads=args.threads,
                        **{k: getattr(args, k) for k in _OVERRIDES})
    return run_vitcod_flow(args.out, opts, from_stage=args.from_stage,
                           command=canonical_command(args.out, opts))


def register(sub) -> None:
    from attnforge.flows.vitcod_flow import FLOW_PRESETS, STAGE_NAMES

    g = command_group(sub, "flow", "the main jobs end to end, each stage cached, with a report a person reads")
    presets = "; ".join(f"{k}: {v['depth']} layer(s), {v['epochs']}+{v['ft_epochs']} epochs, "
                        f"{v['dense_lines']}+{v['sparse_lines']} lines" for k, v in FLOW_PRESETS.items())
    p = g.add_parser("vitcod", help="digits ViT -> pruned, polarized masks -> int8 heads -> Verilog -> every head "
                                    "on the RTL, bit exact -> cycles, speedup -> synthesis -> report.md",
                     description="Train the digits ViT, prune its attention to --sparsity with polarization "
                                 "(ViTCoD), fine-tune, export masks and int8 head tensors, generate and lint the "
                                 "accelerator's Verilog, run every head of every layer on the RTL bit for bit "
                                 "against the golden model, report cycles, utilization and speedup against the "
                                 "cycle model, synthesize (Yosys; place and route with --pnr), and write "
                                 "OUT/report.md with its plots. Each stage is cached (OUT/stages/*.json): a rerun "
                                 "skips what its options did not change; --from STAGE runs a stage and every later "
                                 f"one again. Presets: {presets}.",
                     epilog="Exit status: 0 every head bit exact and lint clean, 1 otherwise (the report is still "
                            "written), 2 bad option, 3 tool or internal failure.")
    p.add_argument("--out", default="build/flow/vitcod", help="folder of every output and the report "
                                                              "[build/flow/vitcod]")
    p.add_argument("--preset", default="small", choices=sorted(FLOW_PRESETS),
                   help="model, training and accelerator sizes: small (make demo, minutes), full (the documented "
                        "4-layer model, 40 + 5 epochs, 4 + 4 lines), tiny (tests) [small]")
    p.add_argument("--sparsity", type=float, default=0.9, help="target attention sparsity of the final masks [0.9]")
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the simulator [0]")
    p.add_argument("--from", dest="from_stage", default=None, metavar="STAGE",
                   help=f"run STAGE and every later one again, one of: {', '.join(STAGE_NAMES)}")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    m = p.add_argument_group("model and training (defaults: the preset's)")
    m.add_argument("--depth", type=int, help="transformer layers")
    m.add_argument("--epochs", type=int, help="dense training epochs")
    m.add_argument("--ft-epochs", type=int, help="fine-tuning epochs with the masks")
    m.add_argument("--batch-size", type=int, help="batch size of training, fine-tuning and statistics")
    m.add_argument("--lr", type=float, help="dense training's peak learning rate (fine-tuning: 5e-4)")
    m.add_argument("--max-shift", type=int, help="random translation augmentation in pixels")
    m.add_argument("--limit", type=int, help="training images (the first N) [all]")
    m.add_argument("--max-images", type=int, help="images for the attention statistics [all training images]")
    m.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (the other core synthesizes in the background) [1]")
    m.add_argument("--image-index", type=int, default=0, help="validation image whose Q/K/V are exported [0]")
    h = p.add_argument_group("accelerator (defaults: the preset's)")
    h.add_argument("--macs", type=int, default=8, help="MACs per line [8]")
    h.add_argument("--dense-lines", type=int, help="lines of the Denser Engine")
    h.add_argument("--sparse-lines", type=int, help="lines of the Sparser Engine")
    h.add_argument("--data-width", type=int, default=None, help="data stream width in bits [min(256, 8 * head dim)]")
    add_simulator_option(h)
    s = p.add_argument_group("synthesis")
    from attnforge.fpga.synth import DEVICES

    s.add_argument("--device", choices=sorted(DEVICES), default="ecp5-85k", help="FPGA [ecp5-85k]")
    s.add_argument("--no-synth", dest="synth", action="store_false", help="skip synthesis")
    s.add_argument("--pnr", action="store_true",
                   help="also place and route (nextpnr) for Fmax: minutes (small) to an hour (large configurations)")
    p.set_defaults(func=cmd_flow_vitcod)
