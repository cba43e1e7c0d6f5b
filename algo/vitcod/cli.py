"""``attnforge vitcod train|masks|finetune|export|eval``: the ViTCoD algorithm flow from the command line.

    attnforge vitcod train -o build/vitcod/dense.pt                       # ViT on the bundled digits
    attnforge vitcod train --checkpoint build/vitcod/dense.pt --autoencoder -o build/vitcod/ae.pt
    attnforge vitcod masks --checkpoint build/vitcod/dense.pt --sparsity 0.9 -o build/vitcod/masks.npz
    attnforge vitcod finetune --checkpoint build/vitcod/dense.pt --masks build/vitcod/masks.npz -o build/vitcod/ft.pt
    attnforge vitcod export --checkpoint build/vitcod/ft.pt --masks build/vitcod/masks.npz -o build/vitcod/heads.npz

Real models: ``--checkpoint deit_tiny.pth --data /path/imagefolder`` (a timm/DeiT
state dict; the classifier is replaced when the folder has another class count).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

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
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from --output")


# ------------------------------------------------------------------------------------------ helpers

def _peek_config(args):
    """The model config of ``--checkpoint`` (or of the preset and overrides) before building the model."""
    import torch

    from .train import CKPT_FORMAT
    from .vit import PRESETS, ViTConfig, config_from_state_dict

    if args.checkpoint:
        path = Path(args.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint {path} does not exist")
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(ck, dict) and ck.get("format") == CKPT_FORMAT:
            return ViTConfig(**ck["config"]), True
        return config_from_state_dict(ck, num_heads=args.num_heads, img_size=args.img_size), False
    base = PRESETS[args.preset].to_dict()
    for key, arg in (("img_size", "img_size"), ("patch_size", "patch_size"), ("depth", "depth"),
                     ("num_heads", "num_heads"), ("embed_dim", "dim"), ("mlp_ratio", "mlp_ratio")):
        if getattr(args, arg, None) is not None:
            base[key] = getattr(args, arg)
    return ViTConfig(**base), False


def _num_classes(dataset) -> int:
    if hasattr(dataset, "classes"):
        return len(dataset.classes)
    return int(dataset.tensors[1].max()) + 1


def _setup(args):
    """``(model, train_set, val_set)`` from --checkpoint/--preset and --data."""
    import torch
    from torch.utils.data import Subset

    from .data import make_datasets
    from .train import load_model
    from dataclasses import replace

    from .vit import VisionTransformer

    torch.manual_seed(args.seed)
    cfg, ours = _peek_config(args)
    train_set, val_set = make_datasets(args.data, cfg.img_size, cfg.in_chans)
    classes = _num_classes(train_set)
    if args.checkpoint:
        model = load_model(args.checkpoint, num_classes=classes, img_size=args.img_size, num_heads=args.num_heads)
        if model.cfg.num_classes != classes:
            raise ValueError(f"--checkpoint {args.checkpoint} classifies {model.cfg.num_classes} classes, "
                             f"--data {args.data} has {classes}")
    else:
        model = VisionTransformer(replace(cfg, num_classes=classes))
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be a positive number of images, got {args.limit}")
        train_set = Subset(train_set, range(min(args.limit, len(train_set))))
    return model, train_set, val_set


def _train_config(args):
    from .train import TrainConfig

    shift = args.max_shift if args.max_shift is not None else (2 if args.data == "digits" else 0)
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       max_shift=shift, ae_weight=args.ae_weight, seed=args.seed, progress=args.progress)


def _load_masks_for(model, path):
    import torch

    from attnforge.masks import load_masks

    ms = load_masks(path)
    want = (model.cfg.depth, model.cfg.num_heads, model.cfg.num_tokens, model.cfg.num_tokens)
    if ms.keep.shape != want:
        raise ValueError(f"--masks {path} has keep of shape {ms.keep.shape}, the model needs {want} "
                         f"(layers, heads, tokens, tokens)")
    model.set_masks(torch.from_numpy(ms.keep))
    return ms


def _maybe_autoencoder(model, args):
    if args.autoencoder and model.blocks[0].attn.qk_ae is None:
        model.attach_qk_autoencoders(args.ae_hidden)


# ------------------------------------------------------------------------------------------ commands

def cmd_train(args) -> int:
    from .train import evaluate, train

    model, train_set, val_set = _setup(args)
    _maybe_autoencoder(model, args)
    cfg = _train_config(args)
    history = train(model, train_set, cfg, val_set, checkpoint=args.output, resume=args.resume,
                    desc="train+AE" if args.autoencoder else "train",
                    extra={"data": args.data, "source": args.checkpoint})
    if args.epochs == 0:
        from .train import save_checkpoint
        save_checkpoint(args.output, model, train=cfg, extra={"data": args.data, "source": args.checkpoint})
    acc = evaluate(model, val_set)["accuracy"] if not history else history[-1]["val_accuracy"]
    print(f"validation accuracy {acc:.2f} % ({len(val_set)} images); wrote {args.output}")
    return 0


def cmd_masks(args) -> int:
    import torch

    from attnforge.masks import save_masks

    from .pruning import build_masks
    from .polarize import CycleModel
    from .stats import attention_statistics
    from .train import evaluate

    if args.sparsity is None and args.threshold is None:
        args.sparsity = 0.9
    model, train_set, val_set = _setup(args)
    model.set_masks(None)    # statistics of the model's own (dense) attention
    maps = attention_statistics(model, train_set, batch_size=args.batch_size, max_images=args.max_images,
                                progress=args.progress)
    cm = CycleModel(args.dense_macs, args.sparse_macs, args.sparse_efficiency)
    ms, report = build_masks(maps, target_sparsity=args.sparsity, threshold=args.threshold,
                             polarize_mode=args.polarize, global_threshold=args.global_threshold,
                             cycle_model=cm, head_dim=model.cfg.head_dim,
                             meta={"model": model.cfg.to_dict(), "checkpoint": str(args.checkpoint),
                                   "data": args.data, "images": min(args.max_images or len(train_set),
                                                                    len(train_set))})
    out = save_masks(ms, args.output)
    if args.eval:
        dense = evaluate(model, val_set)["accuracy"]
        model.set_masks(torch.from_numpy(ms.keep))
        report["accuracy_dense"], report["accuracy_masked"] = dense, evaluate(model, val_set)["accuracy"]
    report_path = out.with_suffix(".report.json")
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    png = plot_mask_report(ms, report, out.with_suffix(".report.png"))
    print(f"threshold {report['threshold']:.5f}: sparsity {report['sparsity']:.4f} (criterion alone "
          f"{report['sparsity_criterion']:.4f}), mean G {report['mean_n_global']:.2f}; per layer "
          + ", ".join(f"{s:.3f}" for s in report["per_layer_sparsity"]))
    if args.eval:
        print(f"accuracy dense {report['accuracy_dense']:.2f} %, with these masks (no fine-tuning) "
              f"{report['accuracy_masked']:.2f} %")
    print(f"wrote {out}, {report_path}, {png}")
    return 0


def cmd_finetune(args) -> int:
    from .train import evaluate, train

    model, train_set, val_set = _setup(args)
    _maybe_autoencoder(model, args)
    ms = _load_masks_for(model, args.masks)
    before = evaluate(model, val_set)["accuracy"]
    history = train(model, train_set, _train_config(args), val_set, checkpoint=args.output, resume=args.resume,
                    desc="finetune", extra={"data": args.data, "source": args.checkpoint,
                                            "masks_file": str(args.masks), "masks_meta": ms.meta})
    after = history[-1]["val_accuracy"] if history else before
    print(f"masks {args.masks} (sparsity {ms.sparsity():.4f}): accuracy before fine-tuning {before:.2f} %, "
          f"after {after:.2f} %; wrote {args.output}")
    return 0


def cmd_export(args) -> int:
    from attnforge.head_tensors import load_head_tensors

    from .export import export_head_tensors, verify_head_tensors

    model, _, val_set = _setup(args)
    ms = _load_masks_for(model, args.masks)
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
        rows = verify_head_tensors(model, image, tensors, ms, use_decoder=tensors.has_decoder)
        summary = {"max_err_lsb_float_model": max(r["max_err_lsb_float_model"] for r in rows),
                   "max_err_lsb_same_inputs": max(r["max_err_lsb_same_inputs"] for r in rows),
                   "max_rel_rms_err_float_model": max(r["rel_rms_err_float_model"] for r in rows),
                   "heads": rows}
        vpath = Path(path).with_suffix(".verify.json")
        vpath.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"integer golden model vs float model on every head: max error "
              f"{summary['max_err_lsb_float_model']:.2f} output LSB (int8 inputs vs float activations), "
              f"{summary['max_err_lsb_same_inputs']:.2f} LSB vs float softmax on the same int8 inputs; "
              f"wrote {vpath}")
    return 0


def cmd_eval(args) -> int:
    from .train import evaluate

    model, _, val_set = _setup(args)
    if args.masks:
        ms = _load_masks_for(model, args.masks)
        print(f"masks {args.masks}: sparsity {ms.sparsity():.4f}")
    r = evaluate(model, val_set)
    print(f"accuracy {r['accuracy']:.2f} % on {r['n']} validation images (loss {r['loss']:.4f})")
    return 0


def plot_mask_report(ms, report: dict, path) -> Path:
    """PNG: per layer/head sparsity, G and dense share of work, and one head's polarized mask."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    L, H = ms.n_global.shape
    grid = {k: np.array([[r[k] for r in report["heads"] if r["layer"] == l] for l in range(L)])
            for k in ("sparsity", "n_global", "dense_work_share")}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    titles = {"sparsity": "achieved sparsity", "n_global": "G (global keys)",
              "dense_work_share": "dense share of work"}
    for ax, (k, title) in zip(axes, titles.items()):
        im = ax.imshow(grid[k], aspect="auto", cmap="viridis")
        ax.set(title=title, xlabel="head", ylabel="layer", xticks=range(H), yticks=range(L))
        for (l, h), v in np.ndenumerate(grid[k]):
            ax.text(h, l, f"{v:.2f}" if k != "n_global" else f"{int(v)}", ha="center", va="center",
                    color="w", fontsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)
    l, h = 0, 0
    axes[3].imshow(ms.keep[l, h][:, ms.order[l, h]], cmap="Greys", interpolation="nearest")
    axes[3].axvline(ms.n_global[l, h] - 0.5, color="r", lw=1)
    axes[3].set(title=f"layer {l} head {h}, polarized (G={ms.n_global[l, h]})", xlabel="key (polarized order)",
                ylabel="query")
    fig.suptitle(f"ViTCoD masks: sparsity {report['sparsity']:.3f}, threshold {report['threshold']:.4f}, "
                 f"polarize {report['polarize']['mode']}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ parser

def register(subparsers) -> None:
    from attnforge.cli import command_group

    from .polarize import POLARIZE_MODES
    from .vit import PRESETS

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
                        "'cycles' = per head the G minimizing the estimated two-engine cycles [fixed]")
    p.add_argument("--global-threshold", type=float, default=0.5,
                   help="fixed mode: fraction of queries a global key must be kept by [0.5]")
    p.add_argument("--dense-macs", type=int, default=64, help="cycle estimate: MACs of the Denser Engine [64]")
    p.add_argument("--sparse-macs", type=int, default=64, help="cycle estimate: MACs of the Sparser Engine [64]")
    p.add_argument("--sparse-efficiency", type=float, default=0.8,
                   help="cycle estimate: share of peak the Sparser Engine reaches [0.8]")
    p.add_argument("--max-images", type=int, default=None, help="images for the statistics [all training images]")
    p.add_argument("--eval", action="store_true", help="also report validation accuracy dense and with the masks")
    p.add_argument("-o", "--output", default="build/vitcod/masks.npz", help="masks file [build/vitcod/masks.npz]")
    p.set_defaults(func=cmd_masks)

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
                                 "to int8, write them (attnforge.head_tensors), reload them through the validating "
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
