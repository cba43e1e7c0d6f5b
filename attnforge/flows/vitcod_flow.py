"""``attnforge flow vitcod``: from a ViT to a verified, sized ViTCoD accelerator, with a report a person reads.

Stages (each cached, see ``attnforge.flows.stages``; folder ``out``):

========  ====================================================================  ==========================
stage     what                                                                  writes
========  ====================================================================  ==========================
train     the digits ViT from scratch (``vitcod train``)                        ``dense.pt``
masks     attention statistics, pruning to ``sparsity``, polarization, the      ``masks.npz``,
          accuracy dense and with the masks (``vitcod masks --eval``)           ``masks.report.json/.png``
verilog   the accelerator's Verilog for these masks, Verilator lint             ``rtl/vitcod.v``
synth     Yosys resource counts (and Fmax with ``pnr``) (``synth vitcod``),     ``synth/report.json``
          in the background beside the next three stages
finetune  training with the masks fixed (``vitcod finetune``)                   ``finetuned.pt``
export    one validation image's int8 Q/K/V per head, checked by the golden     ``heads.npz``,
          model (``vitcod export``)                                             ``heads.verify.json``
sim       every head of every layer on the RTL, bit for bit against the         ``sim.json``
          golden model; cycles against the cycle model (``vitcod sim``)
report    ``report.md`` and its PNGs (``attnforge.flows.vitcod_report``)       ``report.md``
========  ====================================================================  ==========================

Each stage calls the library function its command calls, with the same
arguments, so the command the report prints next to a number reproduces it.
``run_vitcod_flow`` returns the exit status of the contract in ``attnforge/cli``:
0 when every head is bit exact and lint is clean, 1 otherwise (the report is
still written); bad options raise ``ConfigError`` before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from attnforge.errors import ConfigError, check_choice, check_int
from attnforge.formats.atomic import write_json_atomic

from .stages import Stage, run_stages, stage_options, ticker, torch_threads

__all__ = ["FlowOptions", "FLOW_PRESETS", "STAGES", "flow_options", "run_vitcod_flow", "hw_config"]

#: Model, training and accelerator sizes per preset. ``small`` is ``make demo``'s (minutes on
#: 2 cores); ``full`` is the documented digits model (docs/vitcod-algo.md, 40 + 5 epochs) on
#: 4 + 4 lines; ``tiny`` is for tests and smoke runs (seconds of training, one layer).
FLOW_PRESETS = {
    "tiny": dict(depth=1, epochs=1, ft_epochs=1, batch_size=64, lr=2e-3, max_shift=0, limit=128, max_images=128,
                 dense_lines=1, sparse_lines=2),
    # Without the +-2 pixel shifts and with batches of 32 the 2-layer model reaches 95.8 % in 15 epochs
    # (seed 0); with the documented recipe (shifts, batches of 64) it was at 62 % after 12.
    "small": dict(depth=2, epochs=15, ft_epochs=3, batch_size=32, lr=3e-3, max_shift=0, limit=None, max_images=None,
                  dense_lines=2, sparse_lines=2),
    "full": dict(depth=4, epochs=40, ft_epochs=5, batch_size=64, lr=2e-3, max_shift=2, limit=None, max_images=None,
                 dense_lines=4, sparse_lines=4),
}

#: Fine-tuning's peak learning rate (`vitcod finetune`'s default).
FT_LR = 5e-4

STAGE_NAMES = ("train", "masks", "verilog", "synth", "finetune", "export", "sim", "report")


@dataclass
class FlowOptions:
    """Everything the flow reads; ``flow_options`` fills it from a preset and overrides."""

    preset: str = "small"
    sparsity: float = 0.9
    seed: int = 0
    depth: int = 2
    epochs: int = 15
    ft_epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-3                  # dense training's peak learning rate (fine-tuning: 5e-4, as `vitcod finetune`)
    max_shift: int = 0                # random translation augmentation in pixels
    limit: int | None = None          # training images (None: all 1,438)
    max_images: int | None = None     # images for the attention statistics (None: all training images)
    image_index: int = 0              # validation image whose Q/K/V are exported
    macs: int = 8
    dense_lines: int = 2
    sparse_lines: int = 2
    data_width: int | None = None     # None: min(256, 8 * head_dim), as `vitcod sim`
    threads: int = 1                  # torch threads of the training stages (the other core runs Yosys)
    simulator: str | None = None
    device: str = "ecp5-85k"
    synth: bool = True
    pnr: bool = False
    progress: bool = True

    def model_overrides(self) -> dict:
        return {"img_size": None, "patch_size": None, "depth": self.depth, "num_heads": None, "embed_dim": None,
                "mlp_ratio": None}


def flow_options(preset: str = "small", **overrides) -> FlowOptions:
    """``FlowOptions`` of ``preset`` with ``overrides`` (None values keep the preset's); checks every value."""
    check_choice("--preset", preset, FLOW_PRESETS)
    values = {**FLOW_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - {f.name for f in dataclasses.fields(FlowOptions)}
    if unknown:
        raise ConfigError(f"unknown flow option(s) {sorted(unknown)}")
    opts = FlowOptions(preset=preset, **values)
    _check(opts)
    return opts


def _check(o: FlowOptions) -> None:
    """Refuse impossible options before anything is trained (``ConfigError`` / ``TypeError`` naming them)."""
    from attnforge.algo.vitcod.prepare import peek_config
    from attnforge.fpga.synth import DEVICES
    from attnforge.hw.vitcod import VitcodConfig
    from attnforge.sim.tools import SIMULATORS

    if isinstance(o.sparsity, bool) or not isinstance(o.sparsity, (int, float)) or not 0.0 < o.sparsity < 1.0:
        raise ConfigError(f"--sparsity must be a fraction in (0, 1), e.g. 0.9, not {o.sparsity!r}")
    check_int("--seed", o.seed, 0)
    check_int("--depth", o.depth, 1, 64)
    check_int("--epochs", o.epochs, 0)
    check_int("--ft-epochs", o.ft_epochs, 0)
    check_int("--batch-size", o.batch_size, 1)
    check_int("--threads", o.threads, 1, 256)
    check_int("--max-shift", o.max_shift, 0, 16)
    if isinstance(o.lr, bool) or not isinstance(o.lr, (int, float)) or not 0.0 < o.lr < 1.0:
        raise ConfigError(f"--lr must be a learning rate in (0, 1), not {o.lr!r}")
    check_int("--image-index", o.image_index, 0)
    for name in ("limit", "max_images"):
        if getattr(o, name) is not None:
            check_int("--" + name.replace("_", "-"), getattr(o, name), 1)
    check_choice("--device", o.device, DEVICES)
    if o.simulator is not None:
        check_choice("--simulator", o.simulator, SIMULATORS)
    if o.pnr and not o.synth:
        raise ConfigError("--pnr needs the synth stage: drop --no-synth")
    cfg, _ = peek_config(None, preset="digits", overrides=o.model_overrides())
    # The accelerator's parameters against this model (buffer sizes follow from the masks later;
    # the smallest here, so only the parameters themselves are judged).
    d = cfg.head_dim
    VitcodConfig(head_dim=d, max_tokens=cfg.num_tokens, max_nnz=1, macs=o.macs, dense_lines=o.dense_lines,
                 sparse_lines=o.sparse_lines, data_width=min(256, 8 * d) if o.data_width is None else o.data_width)


# ------------------------------------------------------------------------------------------ context

@dataclass
class _Ctx:
    out: Path
    opts: FlowOptions
    results: dict = field(default_factory=dict)

    def p(self, rel: str) -> Path:
        return self.out / rel

    def rel(self, rel: str) -> str:
        """A path for a printed command: as given under the output folder."""
        return shlex.quote(str(self.out / rel))


def _env(o: FlowOptions) -> str:
    """The environment prefix of the printed commands: the same torch thread count (sums in another order
    round differently, so the digits would differ in the last places)."""
    return f"OMP_NUM_THREADS={o.threads} "


def _common_args(o: FlowOptions) -> list[str]:
    return (["--batch-size", str(o.batch_size)] + ([] if o.limit is None else ["--limit", str(o.limit)])
            + ["--seed", str(o.seed)])


def _train_args(o: FlowOptions, epochs: int, lr: float) -> str:
    return f"--epochs {epochs} --lr {lr} --max-shift {o.max_shift} " + " ".join(_common_args(o))


def _setup(ctx: _Ctx, checkpoint=None):
    from attnforge.algo.vitcod.prepare import prepare

    o = ctx.opts
    return prepare(checkpoint, data="digits", preset="digits", overrides=o.model_overrides(), img_size=None,
                   num_heads=None, limit=o.limit, seed=o.seed)


def _train_config(o: FlowOptions, epochs: int, lr: float):
    from attnforge.algo.vitcod.train import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=o.batch_size, lr=lr, weight_decay=0.05, max_shift=o.max_shift,
                       ae_weight=1.0,
                       seed=o.seed, progress=o.progress)


# ------------------------------------------------------------------------------------------ algorithm stages

@torch_threads
def _train(ctx: _Ctx) -> dict:
    from attnforge.algo.vitcod.train import evaluate, save_checkpoint, train

    o = ctx.opts
    model, train_set, val_set = _setup(ctx)
    cfg = _train_config(o, o.epochs, o.lr)
    ckpt = ctx.p("dense.pt")
    history = train(model, train_set, cfg, val_set, checkpoint=ckpt, desc="train",
                    extra={"data": "digits", "source": None})
    if o.epochs == 0:
        save_checkpoint(ckpt, model, train=cfg, extra={"data": "digits", "source": None})
    acc = history[-1]["val_accuracy"] if history else evaluate(model, val_set)["accuracy"]
    c = model.cfg
    return {"accuracy": acc, "history": history, "train_images": len(train_set), "val_images": len(val_set),
            "model": {"depth": c.depth, "heads": c.num_heads, "embed_dim": c.embed_dim, "head_dim": c.head_dim,
                      "tokens": c.num_tokens, "img_size": c.img_size, "patch_size": c.patch_size},
            "command": _env(o) + f"attnforge vitcod train --depth {o.depth} {_train_args(o, o.epochs, o.lr)} "
                       f"-o {ctx.rel('dense.pt')}"}


@torch_threads
def _masks(ctx: _Ctx) -> dict:
    from attnforge.algo.vitcod.pruning import model_masks
    from attnforge.algo.vitcod.report import plot_mask_report
    from attnforge.formats.masks import save_masks

    o = ctx.opts
    ckpt = ctx.p("dense.pt")
    model, train_set, val_set = _setup(ctx, ckpt)
    # fixed polarization (the masks do not depend on the accelerator options, so changing those reruns only
    # the hardware stages); the sim stage measures the cycles on the chosen accelerator
    ms, report = model_masks(model, train_set, target_sparsity=o.sparsity, threshold=None, polarize_mode="fixed",
                             global_threshold=0.5, predict_cycles=False, batch_size=o.batch_size,
                             max_images=o.max_images, progress=o.progress,
                             meta={"checkpoint": str(ckpt), "data": "digits"}, eval_set=val_set)
    out = save_masks(ms, ctx.p("masks.npz"))
    write_json_atomic(out.with_suffix(".report.json"), report)
    plot_mask_report(ms, report, out.with_suffix(".report.png"))
    images = [] if o.max_images is None else ["--max-images", str(o.max_images)]
    return {"sparsity": report["sparsity"], "threshold": report["threshold"],
            "mean_n_global": report["mean_n_global"], "per_layer_sparsity": report["per_layer_sparsity"],
            "accuracy_dense": report["accuracy_dense"], "accuracy_masked": report["accuracy_masked"],
            "command": _env(o) + f"attnforge vitcod masks --checkpoint {ctx.rel('dense.pt')} "
                                 f"--sparsity {o.sparsity} --eval "
                       + " ".join(images + _common_args(o)) + f" -o {ctx.rel('masks.npz')}"}


@torch_threads
def _finetune(ctx: _Ctx) -> dict:
    from attnforge.algo.vitcod.prepare import apply_masks
    from attnforge.algo.vitcod.train import evaluate, save_checkpoint, train

    o = ctx.opts
    model, train_set, val_set = _setup(ctx, ctx.p("dense.pt"))
    ms = apply_masks(model, ctx.p("masks.npz"))
    before = evaluate(model, val_set)["accuracy"]
    cfg = _train_config(o, o.ft_epochs, FT_LR)
    ckpt = ctx.p("finetuned.pt")
    history = train(model, train_set, cfg, val_set, checkpoint=ckpt, desc="finetune",
                    extra={"data": "digits", "source": str(ctx.p("dense.pt")),
                           "masks_file": str(ctx.p("masks.npz")), "masks_meta": ms.meta})
    if o.ft_epochs == 0:
        save_checkpoint(ckpt, model, train=cfg, extra={"data": "digits", "source": str(ctx.p("dense.pt"))})
    return {"accuracy_before": before, "accuracy_after": history[-1]["val_accuracy"] if history else before,
            "history": history,
            "command": _env(o) + f"attnforge vitcod finetune --checkpoint {ctx.rel('dense.pt')} "
                                 f"--masks {ctx.rel('masks.npz')} "
                       f"{_train_args(o, o.ft_epochs, FT_LR)} -o {ctx.rel('finetuned.pt')}"}


@torch_threads
def _export(ctx: _Ctx) -> dict:
    from attnforge.algo.vitcod.export import export_head_tensors, write_verification
    from attnforge.algo.vitcod.prepare import apply_masks
    from attnforge.formats.head_tensors import load_head_tensors

    o = ctx.opts
    model, _, val_set = _setup(ctx, ctx.p("finetuned.pt"))
    ms = apply_masks(model, ctx.p("masks.npz"))
    if not o.image_index < len(val_set):
        raise ConfigError(f"--image-index {o.image_index} is out of range: the validation set has "
                          f"{len(val_set)} images")
    image = val_set[o.image_index][0]
    path, _ = export_head_tensors(model, image, ctx.p("heads.npz"),
                                  meta={"checkpoint": str(ctx.p("finetuned.pt")), "masks": str(ctx.p("masks.npz")),
                                        "data": "digits", "image_index": o.image_index, "split": "val"})
    tensors = load_head_tensors(path)
    summary = write_verification(model, image, tensors, ms, ctx.p("heads.verify.json"))
    return {"max_err_lsb_float_model": summary["max_err_lsb_float_model"],
            "max_err_lsb_same_inputs": summary["max_err_lsb_same_inputs"],
            "image_index": o.image_index, "label": int(val_set[o.image_index][1]),
            "command": _env(o) + f"attnforge vitcod export --checkpoint {ctx.rel('finetuned.pt')} "
                                 f"--masks {ctx.rel('masks.npz')} "
                       f"--image-index {o.image_index} " + " ".join(_common_args(o)) + f" -o {ctx.rel('heads.npz')}"}


# ------------------------------------------------------------------------------------------ hardware stages

def hw_config(masks_path, head_dim: int, opts: FlowOptions):
    """The ``VitcodConfig`` that ``simulate_masks`` builds for every head of ``masks_path`` (same derivation:
    buffers from the masks, ``head_dim`` the model's, the rest from ``opts``)."""
    from attnforge.formats.masks import head_csr, load_masks
    from attnforge.hw.vitcod import VitcodConfig

    ms = load_masks(masks_path)
    d = head_dim
    max_nnz = max(1, max(head_csr(ms, l, h)[1].nnz for l in range(ms.layers) for h in range(ms.heads)))
    return VitcodConfig(head_dim=d, max_tokens=max(ms.keep.shape[2], ms.keep.shape[3]), max_nnz=max_nnz,
                        macs=opts.macs, dense_lines=opts.dense_lines, sparse_lines=opts.sparse_lines,
                        data_width=min(256, 8 * d) if opts.data_width is None else opts.data_width,
                        decoder=False, decoder_heads=VitcodConfig.decoder_heads)


def _hw_flags(cfg) -> str:
    return (f"--head-dim {cfg.head_dim} --max-tokens {cfg.max_tokens} --max-nnz {cfg.max_nnz} --macs {cfg.macs} "
            f"--dense-lines {cfg.dense_lines} --sparse-lines {cfg.sparse_lines} --data-width {cfg.data_width}")


def _verilog(ctx: _Ctx) -> dict:
    from attnforge.hw.designs import get_design

    from .build import generate_verilog

    cfg = hw_config(ctx.p("masks.npz"), ctx.results["train"]["model"]["head_dim"], ctx.opts)
    design = get_design("vitcod")
    with ticker("Verilog + verilator --lint-only -Wall", ctx.opts.progress):
        path, lint = generate_verilog(design, cfg, ctx.p(f"rtl/{design.top}.v"))
    return {"config": dataclasses.asdict(cfg), "verilog": str(path.relative_to(ctx.out)), "lint_clean": lint.clean,
            "lint_messages": lint.messages, "total_macs": cfg.total_macs,
            "command": f"attnforge verilog vitcod {_hw_flags(cfg)} -o {ctx.rel(f'rtl/{design.top}.v')}"}


def _sim(ctx: _Ctx) -> dict:
    from attnforge.formats.masks import load_masks

    from .vitcod import simulate_masks

    o = ctx.opts
    cfg = ctx.results["verilog"]["config"]
    ms = load_masks(ctx.p("masks.npz"))
    heads = ms.layers * ms.heads
    with ticker(f"{heads} heads on the RTL ({o.simulator or 'verilator'}: build, then run)", o.progress):
        report = simulate_masks(ctx.p("masks.npz"), all_heads=True, seed=o.seed, simulator=o.simulator,
                                tensors_path=ctx.p("heads.npz"), macs=o.macs, dense_lines=o.dense_lines,
                                sparse_lines=o.sparse_lines, data_width=o.data_width,
                                build_root=str(ctx.p("sim")))
    if report["config"] != cfg:
        raise RuntimeError(f"the simulated configuration {report['config']} is not the generated one {cfg}")
    write_json_atomic(ctx.p("sim.json"), report)
    sim_flag = f" --simulator {o.simulator}" if o.simulator else ""
    hw = {k: cfg[k] for k in ("macs", "dense_lines", "sparse_lines", "data_width")}
    return {**{k: report[k] for k in ("bit_exact", "cycles", "ideal_cycles", "utilization", "dense_baseline_cycles",
                                      "speedup", "model_cycles", "sparsity", "simulator", "output_digest")},
            "heads": report.get("heads", []), "n_heads": heads, "run_dir": report["run_dir"],
            "command": f"attnforge vitcod sim --masks {ctx.rel('masks.npz')} --tensors {ctx.rel('heads.npz')} "
                       f"--all-heads --seed {o.seed}{sim_flag} " + " ".join(f"--{k.replace('_', '-')} {v}"
                                                                             for k, v in hw.items())
                       + f" --build-root {ctx.rel('sim')} --json {ctx.rel('sim.json')}"}


def _synth(ctx: _Ctx) -> dict:
    from attnforge.fpga.synth import synthesize
    from attnforge.hw.designs import get_design
    from attnforge.hw.vitcod import VitcodConfig

    o = ctx.opts
    cfg = VitcodConfig(**ctx.results["verilog"]["config"])
    design = get_design("vitcod")
    command = (f"attnforge synth vitcod {_hw_flags(cfg)} --device {o.device}{'' if o.pnr else ' --no-pnr'} "
               f"-o {ctx.rel('synth')}")
    if not o.synth:
        ctx.p("synth").mkdir(parents=True, exist_ok=True)
        write_json_atomic(ctx.p("synth/report.json"), {"skipped": True})
        return {"skipped": True, "command": command}
    # In the background (beside fine-tuning and the RTL run): no progress bar of its own.
    r = synthesize(design.build(cfg), top=design.top, device=o.device, out_dir=ctx.p("synth"), pnr=o.pnr)
    return {"skipped": False, "pnr": o.pnr,
            **{k: r[k] for k in ("device", "luts", "ffs", "dsp", "bram", "fmax_mhz", "target_mhz", "shell_ffs",
                                 "yosys_seconds", "nextpnr_seconds")},
            "command": command}


_ALGO = ("depth", "limit", "seed", "batch_size", "threads")
_ALGO_CODE = ("attnforge.algo", "attnforge.formats")
_HW_CODE = ("attnforge.hw", "attnforge.formats")
STAGES = [
    Stage("train", _train, ("dense.pt",), (), stage_options(*_ALGO, "epochs", "lr", "max_shift", code=_ALGO_CODE),
          "train the digits ViT"),
    Stage("masks", _masks, ("masks.npz", "masks.report.json"), ("train",),
          stage_options(*_ALGO, "sparsity", "max_images", code=_ALGO_CODE), "prune to the target sparsity and polarize"),
    Stage("verilog", _verilog, ("rtl/vitcod.v",), ("train", "masks"),
          stage_options("macs", "dense_lines", "sparse_lines", "data_width", code=_HW_CODE + ("attnforge.sim",)),
          "generate and lint the accelerator's Verilog"),
    # Synthesis needs only the Verilog's configuration: it runs beside fine-tuning, export and the RTL run.
    Stage("synth", _synth, ("synth/report.json",), ("verilog",),
          stage_options("synth", "pnr", "device", code=_HW_CODE + ("attnforge.fpga",)), "synthesize", background=True),
    Stage("finetune", _finetune, ("finetuned.pt",), ("train", "masks"),
          stage_options(*_ALGO, "ft_epochs", "max_shift", code=_ALGO_CODE), "fine-tune with the masks fixed"),
    Stage("export", _export, ("heads.npz", "heads.verify.json"), ("finetune", "masks"),
          stage_options(*_ALGO, "image_index", code=_ALGO_CODE), "export int8 head tensors, check the golden model"),
    Stage("sim", _sim, ("sim.json",), ("verilog", "masks", "export"),
          stage_options("simulator", "seed", code=_HW_CODE + ("attnforge.algo", "attnforge.tb", "attnforge.sim")),
          "every head on the RTL, bit for bit, with cycles"),
]
#: The cached stages, then ``report``: written on every run (it says which stages ran and which were
#: cached, and takes a second), so ``--from report`` only rewrites it.
assert tuple(s.name for s in STAGES) + ("report",) == STAGE_NAMES


def run_vitcod_flow(out, opts: FlowOptions, *, from_stage: str | None = None, command: str | None = None,
                    log=print) -> int:
    """Run the flow into folder ``out``; the exit status (0: every head bit exact, lint clean; else 1)."""
    out = Path(out)
    if from_stage is not None:
        check_choice("--from", from_stage, STAGE_NAMES)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Ctx(out, opts)
    log(f"ViTCoD flow, preset {opts.preset}, into {out}/ (stages: {', '.join(STAGE_NAMES)})")
    runs = run_stages(out, STAGES, ctx, from_stage=None if from_stage == "report" else from_stage, log=log,
                      count=len(STAGE_NAMES))
    stage_runs = {k: {"cached": r.cached, "seconds": r.seconds, "first_seconds": r.first_seconds}
                  for k, r in runs.items()}
    from .vitcod_report import write_report

    report_path = write_report(out, opts, ctx.results, stage_runs, command or "attnforge flow vitcod")
    log(f"[{len(STAGE_NAMES)}/{len(STAGE_NAMES)}] report: wrote {report_path} and its plots")
    sim, verilog = ctx.results["sim"], ctx.results["verilog"]
    ok = bool(sim["bit_exact"]) and bool(verilog["lint_clean"])
    util = "—" if sim["utilization"] is None else f"{sim['utilization']:.3f}"
    speedup = "—" if sim["speedup"] is None else f"{sim['speedup']:.2f}x"
    log(f"{sim['n_heads']} heads {'bit exact' if sim['bit_exact'] else 'NOT bit exact'} on the RTL; "
        f"{sim['cycles']} cycles (cycle model {sim['model_cycles']}), utilization {util}, "
        f"speedup {speedup} vs dense with the same MACs")
    log(f"report: {report_path}")
    if not ok:
        print("the RTL differs from the golden model or lint found problems: see the report", file=sys.stderr)
    return 0 if ok else 1
