"""``attnforge vitcod train|masks|polarize|finetune|ticket|export|eval|int-eval|sim|run``: ViTCoD from the command line.

    attnforge vitcod train -o build/vitcod/dense.pt                       # ViT on the bundled digits
    attnforge vitcod train --checkpoint build/vitcod/dense.pt --autoencoder -o build/vitcod/ae.pt
    attnforge vitcod masks --checkpoint build/vitcod/dense.pt --sparsity 0.9 -o build/vitcod/masks.npz
    attnforge vitcod finetune --checkpoint build/vitcod/dense.pt --masks build/vitcod/masks.npz -o build/vitcod/ft.pt
    attnforge vitcod export --checkpoint build/vitcod/ft.pt --masks build/vitcod/masks.npz -o build/vitcod/heads.npz
    attnforge vitcod int-eval --checkpoint build/vitcod/ft.pt --masks build/vitcod/masks.npz --json int.json
    attnforge vitcod ticket --checkpoint build/vitcod/ft.pt --masks build/vitcod/masks.npz -o build/vitcod/ticket.pt

    attnforge vitcod sim --masks build/vitcod/masks.npz --tensors build/vitcod/heads.npz --all-heads
    attnforge vitcod run --checkpoint build/vitcod/ft.pt --masks build/vitcod/masks.npz --images 4 --json run.json

    attnforge vitcod polarize --raw deit_masks.npy --pruned -o build/vitcod/masks.npz --json report.json

Real models: ``--checkpoint deit_tiny.pth --data /path/imagefolder`` (a timm/DeiT
state dict; the classifier is replaced when the folder has another class count).
``sim`` runs mask-file heads on the accelerator's RTL (``attnforge.flows.vitcod``);
``polarize`` turns masks pruned elsewhere (a boolean ``.npy``) into a polarized
``masks.npz`` (``attnforge.algo.vitcod.raw_masks``).
"""

from __future__ import annotations

from pathlib import Path

from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.balance import GLOBAL_COLUMNS
from attnforge.formats.atomic import write_json_atomic

from . import add_simulator_option, command_group, print_report
from .options import add_config_options, config_kwargs

__all__ = ["register"]

DATA_HELP = ("'digits' (scikit-learn's bundled 8x8 digits, upscaled to the model's image size) or an image "
             "folder ROOT/<class>/<image> (with ROOT/train and ROOT/val if present, else split 80/20) [digits]")


def _common(p, *, checkpoint_required: bool):
    p.add_argument("--checkpoint", required=checkpoint_required, metavar="PTH",
                   help="attnforge checkpoint (from `vitcod train`/`finetune`) or a timm/DeiT .pth state dict"
                        + ("" if checkpoint_required else " to start from [train from scratch]"))
    p.add_argument("--data", default="digits", help=DATA_HELP)
    p.add_argument("--img-size", type=int, default=None,
                   help="image size; with a timm checkpoint its position embeddings are resized [checkpoint's]")
    p.add_argument("--num-heads", type=int, default=None,
                   help="heads of a timm checkpoint (not in its keys) [embed_dim / 64, as DeiT]")
    p.add_argument("--batch-size", type=int, default=64, help="batch size [64]")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N training images (quick runs) [all]")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization, shuffling and augmentation [0]")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _train_options(p, epochs: int, lr: float):
    p.add_argument("--epochs", type=int, default=epochs, help=f"epochs [{epochs}]")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (AdamW, warmup + cosine) [{lr}]")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay [0.05]")
    p.add_argument("--max-shift", type=int, default=None,
                   help="random translation augmentation in pixels [2 on digits, 0 on image folders]")
    p.add_argument("--autoencoder", action="store_true",
                   help="attach the Q/K auto-encoder (H -> ceil(H/2) -> H across heads) if the model has none, "
                        "and add its reconstruction loss")
    p.add_argument("--ae-hidden", type=int, default=None, help="compressed heads of the auto-encoder [ceil(H/2)]")
    p.add_argument("--ae-weight", type=float, default=1.0, help="weight of the reconstruction loss [1.0]")
    p.add_argument("--ae-init", choices=("random", "pca"), default="random",
                   help="start of a newly attached auto-encoder: a random orthonormal projection, or the PCA of "
                        "the model's Q and K across heads on (up to 512) training images [random]")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from --output")


# ------------------------------------------------------------------------------------------ helpers

def _setup(args):
    """``(model, train_set, val_set)`` from --checkpoint/--preset and --data."""
    from attnforge.algo.vitcod.prepare import prepare

    overrides = {key: getattr(args, arg, None) for key, arg in (
        ("img_size", "img_size"), ("patch_size", "patch_size"), ("depth", "depth"), ("num_heads", "num_heads"),
        ("embed_dim", "dim"), ("mlp_ratio", "mlp_ratio"))}
    return prepare(args.checkpoint, data=args.data, preset=getattr(args, "preset", "digits"), overrides=overrides,
                   img_size=args.img_size, num_heads=args.num_heads, limit=args.limit, seed=args.seed)


def _train_config(args):
    from attnforge.algo.vitcod.train import TrainConfig

    shift = args.max_shift if args.max_shift is not None else (2 if args.data == "digits" else 0)
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       max_shift=shift, ae_weight=args.ae_weight, seed=args.seed, progress=args.progress)


def _maybe_autoencoder(model, args, train_set=None):
    if getattr(args, "ae_init", "random") == "pca" and model.blocks[0].attn.qk_ae is not None:
        from attnforge.errors import ConfigError

        raise ConfigError(f"--ae-init pca: the checkpoint {args.checkpoint} already has a Q/K auto-encoder, "
                          f"whose trained weights would be used; --ae-init applies to a newly attached one")
    if args.autoencoder and model.blocks[0].attn.qk_ae is None:
        model.attach_qk_autoencoders(args.ae_hidden)
        if getattr(args, "ae_init", "random") == "pca" and train_set is not None:
            from attnforge.algo.vitcod.data import first_images

            model.init_qk_autoencoders_pca(first_images(train_set))


# ------------------------------------------------------------------------------------------ commands

def cmd_train(args) -> int:
    from attnforge.algo.vitcod.train import evaluate, train

    model, train_set, val_set = _setup(args)
    _maybe_autoencoder(model, args, None if args.resume else train_set)
    cfg = _train_config(args)
    history = train(model, train_set, cfg, val_set, checkpoint=args.output, resume=args.resume,
                    desc="train+AE" if args.autoencoder else "train",
                    extra={"data": args.data, "source": args.checkpoint})
    if args.epochs == 0:
        from attnforge.algo.vitcod.train import save_checkpoint
        save_checkpoint(args.output, model, train=cfg, extra={"data": args.data, "source": args.checkpoint})
    acc = evaluate(model, val_set)["accuracy"] if not history else history[-1]["val_accuracy"]
    print(f"validation accuracy {acc:.2f} % ({len(val_set)} images); wrote {args.output}")
    return 0


def _masks_accelerator(args, head_dim: int):
    """The accelerator of `vitcod masks` (--dense-lines ... with the model's head_dim). ConfigError when
    these options cannot build one for head_dim, except in fixed mode with every option at its default
    (then None: the report has no cycles)."""
    from attnforge.errors import ConfigError

    kw = config_kwargs(args, args.config_fields)
    given = kw["data_width"] is not None or any(kw[n] != getattr(VitcodConfig, n) for n in kw if n != "data_width")
    if kw["data_width"] is None:
        kw["data_width"] = min(256, 8 * head_dim)
    try:
        return VitcodConfig(head_dim=head_dim, **kw)
    except ConfigError as e:
        if args.polarize == "cycles" or given:
            raise ConfigError(f"no ViTCoD accelerator for the model's head dim {head_dim} with these options "
                              f"(--polarize {args.polarize}): {e}") from e
        print(f"note: the default ViTCoD accelerator cannot take the model's head dim {head_dim} ({e}); the "
              f"report has no predicted cycles")
        return None


def cmd_masks(args) -> int:
    from attnforge.algo.vitcod.pruning import model_masks
    from attnforge.algo.vitcod.report import plot_mask_report
    from attnforge.formats.masks import save_masks

    if args.sparsity is None and args.threshold is None:
        args.sparsity = 0.9
    model, train_set, val_set = _setup(args)
    accelerator = _masks_accelerator(args, model.cfg.head_dim)
    ms, report = model_masks(model, train_set, target_sparsity=args.sparsity, threshold=args.threshold,
                             polarize_mode=args.polarize, global_threshold=args.global_threshold,
                             accelerator=accelerator, predict_cycles=accelerator is not None,
                             batch_size=args.batch_size, max_images=args.max_images, progress=args.progress,
                             meta={"checkpoint": str(args.checkpoint), "data": args.data},
                             eval_set=val_set if args.eval else None)
    out = save_masks(ms, args.output)
    report_path = out.with_suffix(".report.json")
    write_json_atomic(report_path, report)
    png = plot_mask_report(ms, report, out.with_suffix(".report.png"))
    print(f"threshold {report['threshold']:.5f}: sparsity {report['sparsity']:.4f} (criterion alone "
          f"{report['sparsity_criterion']:.4f}), mean G {report['mean_n_global']:.2f}; per layer "
          + ", ".join(f"{s:.3f}" for s in report["per_layer_sparsity"]))
    if report.get("accelerator") is not None:
        acc = report["accelerator"]
        print(f"G per layer and head {ms.n_global.tolist()}; predicted {report['cycles']} cycles (heads back to "
              f"back) on the accelerator with {acc['dense_lines']} + {acc['sparse_lines']} lines of {acc['macs']} "
              f"MACs, data width {acc['data_width']}")
    if args.eval:
        print(f"accuracy dense {report['accuracy_dense']:.2f} %, with these masks (no fine-tuning) "
              f"{report['accuracy_masked']:.2f} %")
    print(f"wrote {out}, {report_path}, {png}")
    return 0


def cmd_finetune(args) -> int:
    from attnforge.algo.vitcod.prepare import apply_masks
    from attnforge.algo.vitcod.train import evaluate, train

    model, train_set, val_set = _setup(args)
    _maybe_autoencoder(model, args, None if getattr(args, "resume", False) else train_set)
    ms = apply_masks(model, args.masks)
    before = evaluate(model, val_set)["accuracy"]
    history = train(model, train_set, _train_config(args), val_set, checkpoint=args.output, resume=args.resume,
                    desc="finetune", extra={"data": args.data, "source": args.checkpoint,
                                            "masks_file": str(args.masks), "masks_meta": ms.meta})
    after = history[-1]["val_accuracy"] if history else before
    print(f"masks {args.masks} (sparsity {ms.sparsity():.4f}): accuracy before fine-tuning {before:.2f} %, "
          f"after {after:.2f} %; wrote {args.output}")
    return 0


def cmd_export(args) -> int:
    from attnforge.algo.vitcod.export import export_head_tensors, write_verification
    from attnforge.algo.vitcod.prepare import apply_masks
    from attnforge.formats.head_tensors import load_head_tensors

    model, _, val_set = _setup(args)
    ms = apply_masks(model, args.masks)
    if not 0 <= args.image_index < len(val_set):
        raise ValueError(f"--image-index {args.image_index} is out of range: the validation set has "
                         f"{len(val_set)} images")
    image = val_set[args.image_index][0]
    path, _ = export_head_tensors(model, image, args.output,
                                  meta={"checkpoint": str(args.checkpoint), "masks": str(args.masks),
                                        "data": args.data, "image_index": args.image_index, "split": "val"})
    tensors = load_head_tensors(path)
    print(f"wrote {path}: {tensors.layers} layers x {tensors.heads} heads, {tensors.q.shape[2]} tokens, "
          f"head dim {tensors.head_dim}{', with Q/K decoder' if tensors.has_decoder else ''}")
    if args.verify:
        vpath = Path(path).with_suffix(".verify.json")
        summary = write_verification(model, image, tensors, ms, vpath)
        print(f"integer golden model vs float model on every head: max error "
              f"{summary['max_err_lsb_float_model']:.2f} output LSB (int8 inputs vs float activations), "
              f"{summary['max_err_lsb_same_inputs']:.2f} LSB vs float softmax on the same int8 inputs; "
              f"wrote {vpath}")
    return 0


def cmd_eval(args) -> int:
    from attnforge.algo.vitcod.prepare import apply_masks
    from attnforge.algo.vitcod.train import evaluate

    model, _, val_set = _setup(args)
    if args.masks:
        ms = apply_masks(model, args.masks)
        print(f"masks {args.masks}: sparsity {ms.sparsity():.4f}")
    r = evaluate(model, val_set)
    print(f"accuracy {r['accuracy']:.2f} % on {r['n']} validation images (loss {r['loss']:.4f})")
    return 0


def cmd_int_eval(args) -> int:
    from attnforge.algo.vitcod.intvit import run_int_eval

    r = run_int_eval(args.checkpoint, args.masks, data=args.data, seed=args.seed, calib_count=args.calib_images,
                     percentile=args.percentile, per_channel=not args.per_tensor, op_images=args.op_images,
                     val_images=args.val_images, stream_bits=args.stream_bits)
    print(f"masks {args.masks} (sparsity {r['sparsity']:.4f}), {r['calibration_images']} calibration images "
          f"(seed {r['seed']}): float accuracy {r['float_accuracy']:.2f} %, integer accuracy "
          f"{r['int_accuracy']:.2f} %, agreement {r['agreement']:.2f} % on {r['n']} validation images")
    for op, e in r.get("op_errors", {}).items():
        if op != "max_by_tensor":     # in the JSON
            print(f"  {op} error vs float (int8 LSBs of its output): " + ", ".join(f"{k} {v:.4g}" for k, v in e.items()))
    if args.json:
        write_json_atomic(args.json, r)
        print(f"wrote {args.json}")
    return 0


def cmd_ticket(args) -> int:
    from attnforge.algo.tickets.vitcod_ticket import TicketConfig, draw_vitcod_ticket

    cfg = TicketConfig(pattern=args.pattern, level=args.level, eps=args.eps, steps=args.steps,
                       robust_epochs=args.robust_epochs, epochs=args.epochs, lr=args.lr, seed=args.seed)
    r = draw_vitcod_ticket(args.checkpoint, args.masks, args.output, cfg, progress=not args.no_progress)
    kind = "robust (PGD eps %g)" % cfg.eps if cfg.eps > 0 else "natural"
    print(f"{kind} ticket, {r['config']['pattern']} {r['config']['level']}: weight sparsity {r['sparsity']:.4f}")
    for step, acc in r["accuracy"].items():
        print(f"  {step:>12}: " + ", ".join(f"{k} {v:.2f} %" for k, v in acc.items()))
    print(f"wrote {args.output}")
    if args.json:
        write_json_atomic(args.json, r)
        print(f"wrote {args.json}")
    return 0


def _register_ticket(g) -> None:
    from attnforge.algo.tickets.names import PATTERNS

    p = g.add_parser("ticket", help="a robust or natural ticket of a ViTCoD checkpoint (its linear layers pruned)",
                     description="Draw a ticket of the model the accelerator runs: with --eps > 0 fine-tune it "
                                 "adversarially (PGD, pixel units) for --robust-epochs, prune every prunable layer "
                                 "(patch embedding, qkv, proj, fc1, fc2; not the classifier) one-shot by magnitude "
                                 "to --level, fine-tune the ticket --epochs with its weight masks and the attention "
                                 "masks of --masks fixed, and write a ViTCoD checkpoint (pruned weights exactly 0) "
                                 "that `vitcod int-eval` and the other commands read. Digits only.")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="attnforge checkpoint (`vitcod finetune`)")
    p.add_argument("--masks", required=True, help="masks.npz the checkpoint was fine-tuned with")
    p.add_argument("--pattern", choices=PATTERNS, default="unstructured", help="sparsity pattern [unstructured]")
    p.add_argument("--level", default="0.75", help="sparsity in [0, 1), or N:M such as 2:4 for --pattern nm [0.75]")
    p.add_argument("--eps", type=float, default=0.05, help="PGD L-inf radius in pixels ([0, 1]); 0: natural ticket [0.05]")
    p.add_argument("--steps", type=int, default=3, help="PGD steps [3]")
    p.add_argument("--robust-epochs", type=int, default=10, help="adversarial fine-tuning epochs before pruning [10]")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs of the ticket [10]")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate [0.0002]")
    p.add_argument("--seed", type=int, default=0, help="seed of data order and attacks [0]")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", help="also write the report (accuracies at each step, sparsity per layer) here")
    p.add_argument("-o", "--output", required=True, help="ticket checkpoint to write")
    p.set_defaults(func=cmd_ticket)


def cmd_run(args) -> int:
    import sys

    from tqdm import tqdm

    from attnforge.flows.vitcod_run import run_images

    where = "in the cycle model" if args.cycle_model else "on the RTL"
    bar = tqdm(total=args.images, desc=f"images {where}", unit="image", file=sys.stderr, disable=args.no_progress)

    def progress(i, n, entry):
        bar.total = n
        bar.update(1)
        tqdm.write(f"image {entry['image']}: label {entry['label']}, predicted {entry['predicted']} (integer "
                   f"model {entry['golden_predicted']}), {entry['cycles']:,} cycles, "
                   + ("reference executor " + ("equal" if entry["reference_equal_trace"] else "DIFFERS")
                      if entry["bit_exact"] is None else
                      "bit exact" if entry["bit_exact"] else "DIFFERS (see " + entry["log"] + ")"), file=sys.stderr)

    r = run_images(args.checkpoint, args.masks, ticket=args.ticket, images=args.images, seed=args.seed,
                   simulator=args.simulator, build_root=args.build_root, calib_count=args.calib_images,
                   data=args.data, progress=progress, stepped=args.stepped, macs=args.macs,
                   rtl=not args.cycle_model)
    bar.close()
    if args.cycle_model:        # no RTL: the reference executor's tensors against the integer model's
        ok = r["reference_equal_trace"]
        check = ("reference executor " + ("equal to the integer model on every tensor" if ok
                                          else "DIFFERS from the integer model"))
    else:
        ok = r["bit_exact"]
        check = "bit exact on every tensor" if ok else "NOT bit exact"
    print(f"{r['images']} image(s) {where} ({check}), {r['correct']} correct; {r['cycles_per_image']:,} cycles per "
          f"image (utilization {r['utilization']:.3f}); dense baseline {r['dense_baseline_cycles']:,}: speedup "
          f"{r['speedup']:.2f}x (Amdahl bound {r['amdahl_bound']:.2f}x: {r['speedup_over_bound']:.2f} of it)")
    print("cycles by op: " + ", ".join(f"{k} {v:,}" for k, v in r["cycles_by_op"].items() if v))
    if not r["classes_equal_golden"]:
        print("the predicted classes differ from the integer golden model's", file=sys.stderr)
    if args.json:
        write_json_atomic(args.json, r)
        print(f"wrote {args.json}")
    return 0 if ok and r["classes_equal_golden"] else 1


def _register_run(g) -> None:
    p = g.add_parser("run", help="images through the model-level accelerator's RTL, every tensor bit for bit",
                     description="Calibrate the integer-only ViT of --checkpoint under --masks (as int-eval), size "
                                 "the model-level accelerator for it (an attention unit for its heads), compile "
                                 "each of the first --images validation images into one program (patch embedding, "
                                 "every block with its heads as ATTENTION instructions, the final LayerNorm) and "
                                 "run it on the RTL: every STOREd tensor compared with the integer model's trace, "
                                 "every instruction's cycles with the cycle model. The classifier runs on the host "
                                 "from the final norm. With --ticket (a `vitcod ticket` checkpoint) its pruned "
                                 "linear layers go as CSR. Exit 1 if any image is not bit exact or its class is not the integer model's.")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="attnforge checkpoint (`vitcod finetune`)")
    p.add_argument("--masks", required=True, help="masks.npz the checkpoint was fine-tuned with")
    p.add_argument("--ticket", metavar="PTH", help="a robust ticket of the checkpoint (`vitcod ticket`)")
    p.add_argument("--images", type=int, default=4, help="validation images, the first N [4]")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration images [0]")
    p.add_argument("--calib-images", type=int, default=256, help="training images for calibration [256]")
    p.add_argument("--data", default="digits", help=DATA_HELP)
    add_simulator_option(p)
    p.add_argument("--build-root", default="build/vitcod_run", help="simulation builds and cases [build/vitcod_run]")
    p.add_argument("--json", help="also write the report as JSON here")
    p.add_argument("--macs", type=int, default=8,
                   help="lanes P of the linear layers, LayerNorm, GELU and add (MACs of the one line) [8]")
    p.add_argument("--cycle-model", action="store_true",
                   help="no RTL: each image's program on the ISA's reference executor (every tensor against the "
                        "integer model), the cycles from the cycle model (exact against the RTL)")
    p.add_argument("--stepped", action="store_true",
                   help="run each image in the testbench's cycle-by-cycle test (cocotb drives every beat; the same "
                        "checks, some 50 times slower) instead of its player (the beats from a memory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)


def _register_int_eval(g) -> None:
    p = g.add_parser("int-eval", help="the integer-only ViT of a checkpoint: float vs integer accuracy, agreement",
                     description="Calibrate the integer-only ViT (int8 activations, int32 accumulators, int16 "
                                 "residual stream, integer softmax/GELU/LayerNorm; attnforge.algo.vitcod.intvit) "
                                 "from the float checkpoint on --calib-images training images drawn by --seed, run "
                                 "it with the masks of --masks, and print the float and the integer model's "
                                 "validation accuracy, their prediction agreement and each op's error against "
                                 "float (in int8 LSBs of the op's output).")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="attnforge checkpoint (`vitcod finetune`)")
    p.add_argument("--masks", required=True, help="masks.npz the checkpoint was fine-tuned with")
    p.add_argument("--data", default="digits", help=DATA_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration images [0]")
    p.add_argument("--calib-images", type=int, default=256, help="training images for calibration [256]")
    p.add_argument("--percentile", type=float, default=None,
                   help="calibrate int8 activations to this percentile of |x| instead of the maximum [max]")
    p.add_argument("--stream-bits", type=int, choices=(8, 16), default=16,
                   help="width of the residual stream (int8: max|x|/127, no headroom) [16]")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per matmul [one per output channel]")
    p.add_argument("--val-images", type=int, default=None, help="evaluate the first N validation images [all]")
    p.add_argument("--op-images", type=int, default=16, help="validation images for the per-op errors (0: skip) [16]")
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(func=cmd_int_eval)


def cmd_polarize(args) -> int:
    from attnforge.algo.vitcod.raw_masks import load_raw_masks, polarize_raw
    from attnforge.formats.masks import save_masks

    accelerator = None
    if args.polarize == "cycles":        # every check before anything is written
        kw = config_kwargs(args, args.config_fields)
        if kw["data_width"] is None:
            kw["data_width"] = min(256, 8 * kw["head_dim"])
        accelerator = VitcodConfig(**kw)
    keep = load_raw_masks(args.raw, pruned=args.pruned)
    ms, report = polarize_raw(keep, args.global_threshold, meta={"raw": str(args.raw), "pruned": args.pruned},
                              accelerator=accelerator)
    out = save_masks(ms, args.output)
    report = {"raw": str(args.raw), "pruned": args.pruned, "output": str(out), **report}
    _print_polarize_summary(report)
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")
    return 0


def _print_polarize_summary(report: dict) -> None:
    L, H, nq, nk = report["shape"]
    print(f"{report['raw']}: {L} layers x {H} heads, {nq} x {nk}; global threshold {report['global_threshold']} "
          f"rows; sparsity raw {report['sparsity_raw']:.4f}, final {report['sparsity']:.4f}, "
          f"mean G {report['mean_n_global']:.2f}, rows without a key {report['empty_rows']}")
    if "total_cycles" in report:
        acc = report["accelerator"]
        print(f"G per head chosen for {acc['dense_lines']} + {acc['sparse_lines']} lines x {acc['macs']} MACs, "
              f"d = {acc['head_dim']}, {acc['data_width']}-bit stream: {report['total_cycles']} cycles for every "
              f"head back to back (cycle model)")
    for l, (raw, final, g) in enumerate(zip(report["per_layer_sparsity_raw"], report["per_layer_sparsity"],
                                            report["n_global"])):
        print(f"  layer {l}: sparsity {raw:.4f} -> {final:.4f}, G per head {' '.join(map(str, g))}")
    print(f"wrote {report['output']}")


# ------------------------------------------------------------------------------------------ parser

def cmd_sim(args) -> int:
    from attnforge.flows.vitcod import simulate_masks

    report = simulate_masks(args.masks, layer=args.layer, head=args.head, all_heads=args.all_heads, seed=args.seed,
                            simulator=args.simulator, tensors_path=args.tensors, decoder=args.decoder,
                            build_root=args.build_root, global_columns=args.global_columns,
                            **config_kwargs(args, args.config_fields))
    return print_report(report, args.json, ok=report["bit_exact"],
                        failure=f"RTL and golden model differ; log: {report['run_dir']}/test.log")


def _register_sim(g) -> None:
    p = g.add_parser("sim", help="run mask-file heads on the accelerator RTL against the golden model",
                     description="Run heads of a masks file (attnforge.masks/1) on the ViTCoD accelerator's RTL "
                                 "with seeded random int8 Q/K/V (or the real ones of --tensors), bit for bit "
                                 "against the golden model, and report cycles, ideal cycles, utilization, the "
                                 "dense baseline and the speedup as JSON (attnforge.flows.vitcod).")
    p.add_argument("--masks", required=True, help="masks file (attnforge.masks/1)")
    p.add_argument("--layer", type=int, default=0, help="layer of the head [0]")
    p.add_argument("--head", type=int, default=0, help="head [0]")
    p.add_argument("--all-heads", action="store_true", help="every head of the file, back to back")
    p.add_argument("--seed", type=int, default=0, help="seed of the random Q/K/V and scales [0]")
    add_simulator_option(p)
    p.add_argument("--tensors", help="real int8 Q/K/V (attnforge.vitcod_head/1) instead of random ones")
    p.add_argument("--decoder", action="store_true",
                   help="decode Q and K on chip: each layer's compressed Q/K are loaded once into the layer store, "
                        "each head sends its key order (needs --tensors with compressed heads)")
    p.add_argument("--global-columns", choices=GLOBAL_COLUMNS, default="mask",
                   help="mask: send every head's G global columns as global columns (the Denser Engine's); "
                        "cycles: send G' <= G of them per head, the others as CSR entries of every row that "
                        "either engine may take, G' chosen with the cycle model (same output, other cycles) [mask]")
    p.add_argument("--json", help="write the JSON report here (default: print it)")
    p.add_argument("--build-root", default="build/sim", help="RTL build folder [build/sim]")
    # Buffer sizes (max_tokens, max_nnz) and the decoder's heads follow from the files.
    names = add_config_options(p, VitcodConfig, include=("head_dim", "macs", "dense_lines", "sparse_lines", "tiles",
                                                         "merge_depth", "row_slots", "divider_bits", "banks", "data_width"),
                               derived={"head_dim": f"the tensors' d, else {VitcodConfig.head_dim}",
                                        "data_width": "min(256, 8 * head_dim)"},
                               title="generator parameters (defaults in brackets)")
    p.set_defaults(func=cmd_sim, config_fields=names)


def _register_polarize(g) -> None:
    p = g.add_parser("polarize", help="raw boolean masks (.npy, pruned elsewhere) -> polarized masks.npz",
                     description="Read a boolean array [L, H, Nq, Nk] or [H, Nq, Nk] (True = kept; with --pruned "
                                 "True = pruned, as ViTCoD's released masks) from a .npy file, polarize it "
                                 "(columns kept by at least --global-threshold rows become global: made whole "
                                 "and put first in the key order) and write masks.npz (attnforge.masks/1). Prints "
                                 "the raw and final sparsity per layer and G per head; --json writes them.")
    p.add_argument("--raw", required=True, metavar="FILE.npy", help="raw masks: bool (or 0/1) .npy array")
    p.add_argument("--pruned", action="store_true", help="True marks pruned entries (ViTCoD's files) [kept]")
    p.add_argument("--global-threshold", type=int, default=None, metavar="N",
                   help="fixed mode: a column kept by at least N query rows becomes global, N in [1, Nq]; "
                        "cycles mode: that rule's G is one of the candidates "
                        "[Nq // 2 + 1: more than half of the rows, as `vitcod masks --global-threshold 0.5`]")
    p.add_argument("--polarize", choices=("fixed", "cycles"), default="fixed",
                   help="fixed: the threshold rule; cycles: per head the G with the fewest cycles on the "
                        "accelerator below (its exact cycle model) [fixed]")
    p.add_argument("-o", "--output", required=True, help="masks file to write (attnforge.masks/1)")
    p.add_argument("--json", help="also write the report (sparsity per layer, G per head) as JSON here")
    names = add_config_options(p, VitcodConfig, include=("head_dim", "macs", "dense_lines", "sparse_lines", "tiles",
                                                         "merge_depth", "row_slots", "divider_bits", "banks", "data_width"),
                               derived={"data_width": "min(256, 8 * head_dim)"},
                               title="ViTCoD accelerator that --polarize cycles chooses G for (defaults in "
                                     "brackets; head_dim: the model's channels per head)")
    p.set_defaults(func=cmd_polarize, config_fields=names)


def register(subparsers) -> None:
    from attnforge.algo.vitcod.names import POLARIZE_MODES, PRESETS

    g = command_group(subparsers, "vitcod", "ViTCoD: polarized sparse attention masks, Q/K auto-encoder, "
                                            "accelerator")

    p = g.add_parser("train", help="train a ViT (from scratch, a DeiT .pth or a checkpoint); --autoencoder adds "
                                   "the Q/K auto-encoder",
                     description="Train a ViT on --data and write an attnforge checkpoint after every epoch. "
                                 "From scratch by default (--preset digits: 32x32 images, 4x4 patches, 65 tokens); "
                                 "--checkpoint continues from a checkpoint or fine-tunes a timm/DeiT .pth. With "
                                 "--autoencoder the loss is task + ae-weight * Q/K reconstruction (ViTCoD step 2).")
    _common(p, checkpoint_required=False)
    p.add_argument("--preset", choices=sorted(PRESETS), default="digits", help="model shape from scratch [digits]")
    p.add_argument("--patch-size", type=int, default=None, help="patch size (from scratch) [preset's]")
    p.add_argument("--depth", type=int, default=None, help="layers (from scratch) [preset's]")
    p.add_argument("--dim", type=int, default=None, help="embedding width (from scratch) [preset's]")
    p.add_argument("--mlp-ratio", type=float, default=None, help="MLP width / embedding width [preset's]")
    _train_options(p, epochs=40, lr=2e-3)
    p.add_argument("-o", "--output", default="build/vitcod/dense.pt", help="checkpoint [build/vitcod/dense.pt]")
    p.set_defaults(func=cmd_train)

    p = g.add_parser("masks", help="attention statistics -> pruned, polarized masks.npz (+ report JSON/PNG)",
                     description="Average the model's attention maps over the training images, keep per query row "
                                 "the top keys up to a cumulative mass (ViTCoD; CLS row/column always kept) with the "
                                 "threshold solved for --sparsity, polarize each head (global keys first, their "
                                 "columns kept whole), and write masks.npz (attnforge.masks/1) plus a per-layer/head "
                                 "report (<output>.report.json/.png).")
    _common(p, checkpoint_required=True)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sparsity", type=float, default=None,
                       help="target average sparsity of the final masks, e.g. 0.9 [0.9]")
    which.add_argument("--threshold", type=float, default=None,
                       help="ViTCoD's cumulative-mass threshold in [0, 1], used as is instead of --sparsity")
    p.add_argument("--polarize", choices=POLARIZE_MODES, default="fixed",
                   help="global keys: 'fixed' = kept by more than --global-threshold of the queries (ViTCoD); "
                        "'cycles' = per head the G with the fewest cycles on the accelerator below, by its exact "
                        "cycle model [fixed]")
    p.add_argument("--global-threshold", type=float, default=0.5,
                   help="fixed mode: fraction of queries a global key must be kept by (cycles mode: one of the "
                        "candidates) [0.5]")
    p.add_argument("--max-images", type=int, default=None, help="images for the statistics [all training images]")
    p.add_argument("--eval", action="store_true", help="also report validation accuracy dense and with the masks")
    p.add_argument("-o", "--output", default="build/vitcod/masks.npz", help="masks file [build/vitcod/masks.npz]")
    # head_dim is the model's; buffer sizes follow from the masks.
    names = add_config_options(p, VitcodConfig, include=("macs", "dense_lines", "sparse_lines", "data_width", "tiles",
                                                         "merge_depth", "row_slots", "divider_bits", "banks"),
                               derived={"data_width": "min(256, 8 * head_dim)"},
                               title="ViTCoD accelerator that --polarize cycles chooses G for and whose cycles the "
                                     "report predicts (head_dim: the model's; defaults in brackets)")
    p.set_defaults(func=cmd_masks, config_fields=names)

    p = g.add_parser("finetune", help="fine-tune with fixed masks (masked scores -inf before softmax)",
                     description="Train with the masks of --masks fixed in every attention layer (with the Q/K "
                                 "auto-encoder if the checkpoint has one or --autoencoder is given; its "
                                 "reconstruction loss is added). Prints accuracy before and after.")
    _common(p, checkpoint_required=True)
    p.add_argument("--masks", required=True, help="masks.npz from `attnforge vitcod masks`")
    _train_options(p, epochs=5, lr=5e-4)
    p.add_argument("-o", "--output", default="build/vitcod/finetuned.pt",
                   help="checkpoint [build/vitcod/finetuned.pt]")
    p.set_defaults(func=cmd_finetune)

    p = g.add_parser("export", help="per-head int8 tensors (attnforge.vitcod_head/1) of one real image, "
                                    "checked by the integer golden model",
                     description="Run one validation image through the model with its masks, quantize every "
                                 "layer's and head's Q, K, V (and the auto-encoder's compressed Q/K and decoder) "
                                 "to int8, write them (attnforge.formats.head_tensors), reload them through the validating "
                                 "loader and compare the integer golden model with the float model on every head "
                                 "(<output>.verify.json).")
    _common(p, checkpoint_required=True)
    p.add_argument("--masks", required=True, help="masks.npz the model was fine-tuned with")
    p.add_argument("--image-index", type=int, default=0, help="validation image to export [0]")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the golden-model check")
    p.add_argument("-o", "--output", default="build/vitcod/heads.npz", help="tensors file [build/vitcod/heads.npz]")
    p.set_defaults(func=cmd_export)

    p = g.add_parser("eval", help="validation accuracy of a checkpoint, optionally with masks",
                     description="Top-1 accuracy on the validation split of --data.")
    _common(p, checkpoint_required=True)
    p.add_argument("--masks", default=None, help="masks.npz to apply [the checkpoint's own, if any]")
    p.set_defaults(func=cmd_eval)

    _register_int_eval(g)
    _register_run(g)
    _register_ticket(g)
    _register_polarize(g)
    _register_sim(g)
