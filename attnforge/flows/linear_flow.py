"""``attnforge flow linear``: from a linearized LM to its attention on the decode datapath's RTL, with a report.

Stages (each cached, see ``attnforge.flows.stages``; folder ``out``):

========  ====================================================================  ==========================
stage     what                                                                  writes
========  ====================================================================  ==========================
train     the byte-level LM with the datapath's attention: ReLU feature map     ``lm.pt``
          (normalized) + causal depthwise conv, no chunk-local term
          (``linear train --attention relu --augment --chunk 0``)
export    every head's q, k, v, taps on a held-out window, quantized to int8;   ``head.npz``,
          the integer golden model against float per head; the chosen head's    ``export.json``
          tensors (``linear export``)
verilog   the decode datapath's Verilog for that head (its requantizers are     ``rtl/linear_decode.v``
          generator parameters), Verilator lint
synth     Yosys resource counts (and Fmax with ``pnr``), in the background      ``synth/report.json``
sim       the head's tokens on the RTL, bit for bit against the golden model;   ``sim.json``
          cycles per token against the cycle model (``linear sim --tensors``)
report    ``report.md`` and its PNGs (``attnforge.flows.linear_report``)       ``report.md``
========  ====================================================================  ==========================

``run_linear_flow`` returns 0 when the head is bit exact on the RTL, its output digest equals the golden
model's from the export stage, and lint is clean; 1 otherwise (the report is still written).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from attnforge.errors import ConfigError, check_choice, check_int
from attnforge.formats.atomic import write_json_atomic

from .stages import Stage, run_stages, stage_options, ticker, torch_threads

__all__ = ["LinearFlowOptions", "LINEAR_PRESETS", "LINEAR_STAGES", "LINEAR_STAGE_NAMES", "linear_flow_options",
           "run_linear_flow"]

#: Model, training and datapath sizes per preset. ``small``: minutes on 2 cores; ``full``: head dim 64 on
#: the 64-MAC datapath of docs/linear-hw.md; ``tiny``: tests and smoke runs (seconds).
LINEAR_PRESETS = {
    "tiny": dict(layers=1, heads=2, d_model=32, block=64, steps=20, batch_size=8, train_bytes=200_000,
                 val_bytes=20_000, tokens=48),
    "small": dict(layers=2, heads=4, d_model=64, block=128, steps=300, batch_size=16, train_bytes=2_000_000,
                  val_bytes=200_000, tokens=128),
    "full": dict(layers=2, heads=2, d_model=128, block=256, steps=1500, batch_size=16, train_bytes=4_000_000,
                 val_bytes=400_000, tokens=256),
}

LINEAR_STAGE_NAMES = ("train", "export", "verilog", "synth", "sim", "report")

@dataclass
class LinearFlowOptions:
    """Everything the linear flow reads; ``linear_flow_options`` fills it from a preset and overrides."""

    preset: str = "small"
    seed: int = 0
    layers: int = 2
    heads: int = 4
    d_model: int = 64
    block: int = 128                  # context length of training (and the model's block size)
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    conv_kernel: int = 4              # conv taps K of the model and the datapath
    train_bytes: int = 2_000_000
    val_bytes: int = 200_000
    layer: int = 0                    # the head that runs on the RTL
    head: int = 0
    tokens: int = 128                 # held-out bytes whose attention is exported (and run on the RTL)
    macs: int | None = None           # None: the head dimension (one pass group)
    t_max: int = 8
    threads: int = 1
    simulator: str | None = None
    device: str = "ecp5-85k"
    synth: bool = True
    pnr: bool = False
    progress: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


def linear_flow_options(preset: str = "small", **overrides) -> LinearFlowOptions:
    """``LinearFlowOptions`` of ``preset`` with ``overrides`` (None values keep the preset's); checks every value."""
    check_choice("--preset", preset, LINEAR_PRESETS)
    values = {**LINEAR_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - {f.name for f in dataclasses.fields(LinearFlowOptions)}
    if unknown:
        raise ConfigError(f"unknown flow option(s) {sorted(unknown)}")
    opts = LinearFlowOptions(preset=preset, **values)
    _check(opts)
    return opts


def _check(o: LinearFlowOptions) -> None:
    """Refuse impossible options before anything is trained (``ConfigError`` naming them)."""
    from attnforge.fpga.synth import DEVICES
    from attnforge.hw.linear import LinearDecodeConfig
    from attnforge.sim.tools import SIMULATORS

    check_int("--seed", o.seed, 0)
    check_int("--layers", o.layers, 1, 64)
    check_int("--heads", o.heads, 1, 64)
    check_int("--d-model", o.d_model, 2)
    if o.d_model % o.heads:
        raise ConfigError(f"--d-model {o.d_model} must be a multiple of --heads {o.heads}")
    check_int("--block", o.block, 2)
    check_int("--steps", o.steps, 1)
    check_int("--batch-size", o.batch_size, 1)
    check_int("--conv-kernel", o.conv_kernel, 1, 16)
    check_int("--train-bytes", o.train_bytes, 1000)
    check_int("--val-bytes", o.val_bytes, 1000)
    check_int("--layer", o.layer, 0, o.layers - 1)
    check_int("--head", o.head, 0, o.heads - 1)
    check_int("--tokens", o.tokens, 2, o.block)
    check_int("--threads", o.threads, 1, 256)
    if isinstance(o.lr, bool) or not isinstance(o.lr, (int, float)) or not 0.0 < o.lr < 1.0:
        raise ConfigError(f"--lr must be a learning rate in (0, 1), not {o.lr!r}")
    check_choice("--device", o.device, DEVICES)
    if o.simulator is not None:
        check_choice("--simulator", o.simulator, SIMULATORS)
    if o.pnr and not o.synth:
        raise ConfigError("--pnr needs the synth stage: drop --no-synth")
    # the datapath's own checks (head dim range, macs dividing it, t_max), before anything is trained
    LinearDecodeConfig(**_datapath_kw(o))


def _datapath_kw(o: LinearFlowOptions) -> dict:
    """The datapath's parameters other than the requantizers (which follow from the exported head)."""
    return dict(d=o.head_dim, macs=o.macs or o.head_dim, conv_taps=o.conv_kernel, t_max=o.t_max, heads=1,
                feature_map="relu_norm")


@dataclass
class _Ctx:
    out: Path
    opts: LinearFlowOptions
    results: dict = field(default_factory=dict)

    def p(self, rel: str) -> Path:
        return self.out / rel

    def rel(self, rel: str) -> str:
        return shlex.quote(str(self.out / rel))


def _corpus(o: LinearFlowOptions):
    from attnforge.algo.linear.data import load_corpus

    return load_corpus(o.train_bytes, o.val_bytes)


def _data_args(o: LinearFlowOptions) -> str:
    return f"--train-bytes {o.train_bytes} --val-bytes {o.val_bytes} --seed {o.seed}"


@torch_threads
def _train(ctx: _Ctx) -> dict:
    from attnforge.algo.linear.model import LMConfig
    from attnforge.algo.linear.speculative import greedy_decode
    from attnforge.algo.linear.train import TrainConfig, evaluate, train_lm

    o = ctx.opts
    cfg = LMConfig(attention="relu", augment=True, chunk=0, conv_kernel=o.conv_kernel, n_layer=o.layers,
                   n_head=o.heads, d_model=o.d_model, block_size=o.block, seed=o.seed)
    tc = TrainConfig(steps=o.steps, batch_size=o.batch_size, block=o.block, lr=o.lr, seed=o.seed,
                     warmup=min(20, max(1, o.steps // 10)))
    corpus = _corpus(o)
    model, log = train_lm(cfg, corpus, tc, checkpoint=ctx.p("lm.pt"), progress=o.progress, desc="train")
    ev = evaluate(model, corpus, o.block, tc.eval_windows)
    prompt = list(b"def ")
    sample = bytes(prompt + greedy_decode(model, prompt, min(80, o.block - len(prompt)))).decode("utf-8", "replace")
    return {"held_out": ev, "log": log, "params": model.n_params(), "sample": sample,
            "model": cfg.to_dict(), "corpus": corpus.meta,
            "command": f"OMP_NUM_THREADS={o.threads} attnforge linear train --attention relu --augment --chunk 0 "
                       f"--conv-kernel {o.conv_kernel} --layers {o.layers} --heads {o.heads} --d-model {o.d_model} "
                       f"--block {o.block} --steps {o.steps} --batch {o.batch_size} --lr {o.lr} {_data_args(o)} "
                       f"-o {ctx.rel('lm.pt')}"}


@torch_threads
def _export(ctx: _Ctx) -> dict:
    from attnforge.algo.linear.export import export_head, held_out_window
    from attnforge.algo.linear.train import load_checkpoint
    from attnforge.formats.digest import output_digest

    o = ctx.opts
    model, _ = load_checkpoint(ctx.p("lm.pt"))
    tokens = held_out_window(_corpus(o), o.tokens)
    heads, chosen = [], None
    for layer in range(o.layers):
        for head in range(o.heads):
            path = ctx.p("head.npz") if (layer, head) == (o.layer, o.head) else ctx.p("export.tmp.npz")
            s = export_head(model, tokens, layer, head, path)
            if (layer, head) == (o.layer, o.head):
                chosen = s
            heads.append({k: s[k] for k in ("layer", "head", "max_err_lsb", "rms_err_lsb", "rel_rms_err",
                                            "saturated", "attn_scale", "conv_scale")})
    ctx.p("export.tmp.npz").unlink(missing_ok=True)
    integer = _integer_perplexity(model, o)
    summary = {"heads": heads, "tokens": chosen["tokens"], "feature_map": chosen["feature_map"],
               "chosen": {k: chosen[k] for k in ("layer", "head", "max_err_lsb", "rms_err_lsb", "rel_rms_err",
                                                 "saturated", "attn_scale", "conv_scale", "scales", "overflow")},
               "golden_digest": output_digest([chosen["golden_out"]], "int8"),
               # a few channels of the chosen head over the window, float and golden (the report's plot)
               "trace": {"float": chosen["float_out"][:, :4].tolist(),
                         "golden": (chosen["golden_out"][:, :4] * chosen["scales"]["out"]).tolist()}}
    write_json_atomic(ctx.p("export.json"), summary)
    return {**{k: summary[k] for k in ("heads", "tokens", "feature_map", "chosen", "golden_digest", "trace")},
            "integer_attention": integer,
            "command": f"attnforge linear export {ctx.rel('lm.pt')} --layer {o.layer} --head {o.head} "
                       f"--tokens {o.tokens} {_data_args(o)} -o {ctx.rel('head.npz')}"}


def _integer_perplexity(model, o: LinearFlowOptions) -> dict:
    """Held-out perplexity with every head in the datapath's integers (``int_attention``) against float."""
    import torch

    from attnforge.algo.linear.int_attention import IntegerAttention
    from attnforge.algo.linear.train import evaluate

    corpus = _corpus(o)
    calib, _ = corpus.batch("train", 32, o.block, torch.Generator().manual_seed(o.seed))
    ia = IntegerAttention.calibrate(model, calib)
    fl = evaluate(model, corpus, o.block, 64)
    with ia.use():
        it = evaluate(model, corpus, o.block, 64)
    return {"float_ppl": fl["ppl"], "integer_ppl": it["ppl"], "ppl_ratio": it["ppl"] / fl["ppl"],
            "command": f"attnforge linear int-eval {{lm}} --calib-windows 32 --eval-windows 64 {_data_args(o)}"}


def _hw_config(ctx: _Ctx):
    """The datapath configuration that ``run_linear_sim`` builds for ``head.npz`` (same derivation)."""
    from attnforge.hw.linear import LinearDecodeConfig

    kw = _datapath_kw(ctx.opts)
    chosen = ctx.results["export"]["chosen"]
    requant = LinearDecodeConfig(**kw).format.checked_requant_params(chosen["attn_scale"], chosen["conv_scale"])
    return LinearDecodeConfig(**kw, **requant)


def _flags(cfg) -> str:
    """``cfg`` as ``attnforge verilog|synth linear-decode`` options (``cli/options.py``: a bool field is a switch
    that turns its default around)."""
    parts = []
    for f in dataclasses.fields(cfg):
        flag, value = "--" + f.name.replace("_", "-"), getattr(cfg, f.name)
        if isinstance(value, bool):
            if value != f.default:
                parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _verilog(ctx: _Ctx) -> dict:
    from attnforge.hw.designs import get_design

    from .build import generate_verilog

    cfg = _hw_config(ctx)
    design = get_design("linear-decode")
    with ticker("Verilog + verilator --lint-only -Wall", ctx.opts.progress):
        path, lint = generate_verilog(design, cfg, ctx.p(f"rtl/{design.top}.v"))
    return {"config": dataclasses.asdict(cfg), "verilog": str(path.relative_to(ctx.out)), "lint_clean": lint.clean,
            "lint_messages": lint.messages,
            "command": f"attnforge verilog linear-decode {_flags(cfg)} -o {ctx.rel(f'rtl/{design.top}.v')}"}


def _sim(ctx: _Ctx) -> dict:
    from .linear import run_linear_sim

    o = ctx.opts
    kw = _datapath_kw(o)
    with ticker(f"{ctx.results['export']['tokens']} tokens on the RTL ({o.simulator or 'verilator'})", o.progress):
        report = run_linear_sim(tokens=ctx.results["export"]["tokens"], verify=None, seed=o.seed,
                                tensors=str(ctx.p("head.npz")), config_kw=kw, simulator=o.simulator,
                                build_root=str(ctx.p("sim")))
    if report["config"] != ctx.results["verilog"]["config"]:
        raise RuntimeError(f"the simulated configuration {report['config']} is not the generated one "
                           f"{ctx.results['verilog']['config']}")
    write_json_atomic(ctx.p("sim.json"), report)
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in kw.items())
    sim_flag = f" --simulator {o.simulator}" if o.simulator else ""
    return {**{k: report[k] for k in ("bit_exact", "cycles_per_token", "ideal_cycles_per_token", "utilization",
                                      "model_cycles_per_token", "overflow", "output_digest", "simulator", "tokens")},
            "run_dir": report["run_dir"],
            "command": f"attnforge linear sim --tensors {ctx.rel('head.npz')} {flags} --seed {o.seed}{sim_flag} "
                       f"--build-root {ctx.rel('sim')} --json {ctx.rel('sim.json')}"}


def _synth(ctx: _Ctx) -> dict:
    from attnforge.fpga.synth import synthesize
    from attnforge.hw.designs import get_design
    from attnforge.hw.linear import LinearDecodeConfig

    o = ctx.opts
    cfg = LinearDecodeConfig(**ctx.results["verilog"]["config"])
    design = get_design("linear-decode")
    command = (f"attnforge synth linear-decode {_flags(cfg)} --device {o.device}{'' if o.pnr else ' --no-pnr'} "
               f"-o {ctx.rel('synth')}")
    if not o.synth:
        ctx.p("synth").mkdir(parents=True, exist_ok=True)
        write_json_atomic(ctx.p("synth/report.json"), {"skipped": True})
        return {"skipped": True, "command": command}
    r = synthesize(design.build(cfg), top=design.top, device=o.device, out_dir=ctx.p("synth"), pnr=o.pnr)
    return {"skipped": False, "pnr": o.pnr,
            **{k: r[k] for k in ("device", "luts", "ffs", "dsp", "bram", "fmax_mhz", "target_mhz", "shell_ffs",
                                 "yosys_seconds", "nextpnr_seconds")},
            "command": command}


_MODEL = ("seed", "layers", "heads", "d_model", "block", "steps", "batch_size", "lr", "conv_kernel", "train_bytes",
          "val_bytes", "threads")
_ALGO_CODE = ("attnforge.algo", "attnforge.formats")
_HW_CODE = ("attnforge.hw", "attnforge.formats")
LINEAR_STAGES = [
    Stage("train", _train, ("lm.pt",), (), stage_options(*_MODEL, code=_ALGO_CODE),
          "train the LM with the datapath's attention"),
    Stage("export", _export, ("head.npz", "export.json"), ("train",),
          stage_options("layer", "head", "tokens", "train_bytes", "val_bytes", code=_ALGO_CODE),
          "quantize every head, check the golden model against float"),
    Stage("verilog", _verilog, ("rtl/linear_decode.v",), ("export",),
          stage_options("macs", "t_max", "conv_kernel", code=_HW_CODE + ("attnforge.sim",)),
          "generate and lint the datapath's Verilog"),
    Stage("synth", _synth, ("synth/report.json",), ("verilog",),
          stage_options("synth", "pnr", "device", code=_HW_CODE + ("attnforge.fpga",)), "synthesize",
          background=True),
    Stage("sim", _sim, ("sim.json",), ("verilog", "export"),
          stage_options("simulator", "seed", code=_HW_CODE + ("attnforge.algo", "attnforge.tb", "attnforge.sim")),
          "the head's tokens on the RTL, bit for bit, with cycles"),
]
assert tuple(s.name for s in LINEAR_STAGES) + ("report",) == LINEAR_STAGE_NAMES


def run_linear_flow(out, opts: LinearFlowOptions, *, from_stage: str | None = None, command: str | None = None,
                    log=print) -> int:
    """Run the flow into folder ``out``; the exit status (0: bit exact, digest equal, lint clean; else 1)."""
    out = Path(out)
    if from_stage is not None:
        check_choice("--from", from_stage, LINEAR_STAGE_NAMES)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Ctx(out, opts)
    n = len(LINEAR_STAGE_NAMES)
    log(f"linear flow, preset {opts.preset}, into {out}/ (stages: {', '.join(LINEAR_STAGE_NAMES)})")
    runs = run_stages(out, LINEAR_STAGES, ctx, from_stage=None if from_stage == "report" else from_stage, log=log,
                      count=n)
    stage_runs = {k: {"cached": r.cached, "seconds": r.seconds, "first_seconds": r.first_seconds}
                  for k, r in runs.items()}
    from .linear_report import write_linear_report

    sim, verilog, export = ctx.results["sim"], ctx.results["verilog"], ctx.results["export"]
    digest_ok = sim["output_digest"] == export["golden_digest"]
    report_path = write_linear_report(out, opts, ctx.results, stage_runs, command or "attnforge flow linear",
                                      digest_ok=digest_ok)
    log(f"[{n}/{n}] report: wrote {report_path} and its plots")
    ok = bool(sim["bit_exact"]) and digest_ok and bool(verilog["lint_clean"])
    log(f"layer {opts.layer} head {opts.head}: {sim['tokens']} tokens "
        f"{'bit exact' if sim['bit_exact'] and digest_ok else 'NOT bit exact'} on the RTL; "
        f"{sim['cycles_per_token']} cycles per token (cycle model {sim['model_cycles_per_token']}, ideal "
        f"{sim['ideal_cycles_per_token']}); golden model vs float: {100 * export['chosen']['rel_rms_err']:.1f} % "
        f"RMS error")
    log(f"report: {report_path}")
    if not ok:
        print("the RTL differs from the golden model or lint found problems: see the report", file=sys.stderr)
    return 0 if ok else 1
