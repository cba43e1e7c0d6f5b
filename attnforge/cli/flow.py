"""``attnforge flow vitcod``: the main job in one command (``make demo`` runs it with ``--preset small``).

    attnforge flow vitcod                                  # build/flow/vitcod/report.md (preset small)
    attnforge flow vitcod --preset full --out build/flow/vitcod-full
    attnforge flow vitcod --dense-lines 4 --sparse-lines 4 # retrains nothing: verilog, sim, synth rerun
    attnforge flow vitcod --from sim                       # run the RTL again (and everything after it)
    attnforge flow linear                                  # build/flow/linear/report.md (preset small)

The stages and their caching are in ``attnforge.flows.vitcod_flow``, ``attnforge.flows.linear_flow`` and
``attnforge.flows.stages``.
"""

from __future__ import annotations

import dataclasses
import shlex

from . import add_simulator_option, command_group

__all__ = ["register", "canonical_command"]

#: Options that override a preset's value (None: keep the preset's).
_OVERRIDES = ("depth", "epochs", "ft_epochs", "batch_size", "lr", "max_shift", "limit", "max_images", "dense_lines",
              "sparse_lines")


def canonical_command(out: str, opts, from_stage: str | None = None, flow: str = "vitcod") -> str:
    """The shortest ``attnforge flow vitcod|linear`` command line that gives ``opts``."""
    if flow == "vitcod":
        from attnforge.flows.vitcod_flow import FLOW_PRESETS as presets, FlowOptions as options
    else:
        from attnforge.flows.linear_flow import LINEAR_PRESETS as presets, LinearFlowOptions as options

    base = dataclasses.asdict(options(preset=opts.preset, **presets[opts.preset]))
    parts = ["attnforge", "flow", flow, "--out", out, "--preset", opts.preset]
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
    _register_linear(g)
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


# ---------------------------------------------------------------------------- flow linear

_LINEAR_OVERRIDES = ("layers", "heads", "d_model", "block", "steps", "batch_size", "lr", "conv_kernel", "train_bytes",
                     "val_bytes", "tokens", "macs")


def cmd_flow_linear(args) -> int:
    from attnforge.flows.linear_flow import linear_flow_options, run_linear_flow

    opts = linear_flow_options(args.preset, seed=args.seed, layer=args.layer, head=args.head, t_max=args.t_max,
                               simulator=args.simulator, device=args.device, synth=args.synth, pnr=args.pnr,
                               progress=args.progress, threads=args.threads,
                               **{k: getattr(args, k) for k in _LINEAR_OVERRIDES})
    return run_linear_flow(args.out, opts, from_stage=args.from_stage,
                           command=canonical_command(args.out, opts, flow="linear"))


def _register_linear(g) -> None:
    from attnforge.flows.linear_flow import LINEAR_PRESETS, LINEAR_STAGE_NAMES

    presets = "; ".join(f"{k}: {v['layers']} layer(s) x {v['heads']} heads, width {v['d_model']}, {v['steps']} steps"
                        for k, v in LINEAR_PRESETS.items())
    p = g.add_parser("linear", help="byte-level LM with the datapath's linear attention -> int8 heads -> Verilog "
                                    "-> one head's tokens on the decode RTL, bit exact -> cycles per token vs a "
                                    "KV cache -> synthesis -> report.md",
                     description="Train a byte-level LM whose attention is what the decode datapath computes (ReLU "
                                 "feature map, normalized, + causal depthwise conv; no chunk-local term), quantize "
                                 "every head's attention on a held-out window to int8 and check the integer golden "
                                 "model against float, generate and lint the datapath's Verilog for one head, run "
                                 "its tokens on the RTL bit for bit, report cycles per token against the cycle "
                                 "model and a softmax KV-cache decoder, synthesize (Yosys; --pnr for Fmax), and "
                                 "write OUT/report.md with its plots. Each stage is cached (OUT/stages/*.json); "
                                 f"--from STAGE runs a stage and every later one again. Presets: {presets}.",
                     epilog="Exit status: 0 bit exact and lint clean, 1 otherwise (the report is still written), "
                            "2 bad option, 3 tool or internal failure.")
    p.add_argument("--out", default="build/flow/linear", help="folder of every output and the report "
                                                              "[build/flow/linear]")
    p.add_argument("--preset", default="small", choices=sorted(LINEAR_PRESETS),
                   help="model, training and datapath sizes: small (minutes), full (head dim 64 on 64 MACs), "
                        "tiny (tests) [small]")
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the simulator [0]")
    p.add_argument("--from", dest="from_stage", default=None, metavar="STAGE",
                   help=f"run STAGE and every later one again, one of: {', '.join(LINEAR_STAGE_NAMES)}")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    m = p.add_argument_group("model and training (defaults: the preset's)")
    m.add_argument("--layers", type=int, help="transformer layers")
    m.add_argument("--heads", type=int, help="attention heads")
    m.add_argument("--d-model", type=int, help="model width (head dim = width / heads)")
    m.add_argument("--block", type=int, help="context length in bytes")
    m.add_argument("--steps", type=int, help="optimizer steps")
    m.add_argument("--batch-size", type=int, help="batch size")
    m.add_argument("--lr", type=float, help="peak learning rate [3e-3]")
    m.add_argument("--conv-kernel", type=int, help="conv taps K (model and datapath) [4]")
    m.add_argument("--train-bytes", type=int, help="training text cap in bytes")
    m.add_argument("--val-bytes", type=int, help="held-out text cap in bytes")
    m.add_argument("--threads", type=int, default=1, help="torch threads for training [1]")
    h = p.add_argument_group("the head on the RTL and the datapath")
    h.add_argument("--layer", type=int, default=0, help="layer of the head run on the RTL [0]")
    h.add_argument("--head", type=int, default=0, help="head run on the RTL [0]")
    h.add_argument("--tokens", type=int, help="held-out bytes exported and run on the RTL (<= --block)")
    h.add_argument("--macs", type=int, help="MACs of the datapath [the head dim]")
    h.add_argument("--t-max", type=int, default=8, help="largest verify block of the datapath [8]")
    add_simulator_option(h)
    s = p.add_argument_group("synthesis")
    from attnforge.fpga.synth import DEVICES

    s.add_argument("--device", choices=sorted(DEVICES), default="ecp5-85k", help="FPGA [ecp5-85k]")
    s.add_argument("--no-synth", dest="synth", action="store_false", help="skip synthesis")
    s.add_argument("--pnr", action="store_true", help="also place and route (nextpnr) for Fmax")
    p.set_defaults(func=cmd_flow_linear)
