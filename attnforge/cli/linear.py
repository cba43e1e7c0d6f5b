"""``attnforge linear train|eval|generate|speculate|linearize|sim``: linearized LLMs from the command line.

    attnforge linear train --attention elu --augment --steps 300 -o build/linear/elu_aug.pt
    attnforge linear eval build/linear/elu_aug.pt
    attnforge linear generate build/linear/elu_aug.pt --prompt "def " --tokens 80
    attnforge linear generate build/flow/linear/lm.pt --rtl --tokens 128 --json build/cosim.json   # attention on RTL
    attnforge linear speculate build/linear/elu_aug.pt build/linear/draft.pt --k 4 --prompt "import "
    attnforge linear speculate build/linear/elu_aug.pt --draft ngram --k 8 --prompt "import "
    attnforge linear linearize path/to/gpt2 --steps 200 -o build/linear/gpt2_lin
    attnforge linear sim --tokens 500 [--verify T] [--tensors FILE]     # the decode datapath's RTL
    attnforge linear export build/linear/relu_aug.pt --layer 0 --head 0 -o head.npz   # a head for --tensors
    attnforge linear study --list | --part ID | --next | --all | --report     # issue 18's study, in parts
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from attnforge.errors import ConfigError
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.config import REGISTER_CHOICES

from . import add_cluster_option, add_simulator_option, command_group, print_json, print_report
from .options import add_config_options, config_kwargs

__all__ = ["register"]


def _threads(args):
    import torch

    torch.set_num_threads(args.threads)


def _corpus(args):
    from attnforge.algo.linear.data import load_corpus

    return load_corpus(args.train_bytes, args.val_bytes)


def cmd_train(args) -> int:
    from attnforge.algo.linear.model import LMConfig
    from attnforge.algo.linear.train import TrainConfig, evaluate, train_lm

    _threads(args)
    cfg = LMConfig(attention=args.attention, augment=args.augment, n_layer=args.layers, n_head=args.heads,
                   d_model=args.d_model, block_size=args.block, chunk=args.chunk, conv_kernel=args.conv_kernel,
                   seed=args.seed)
    tc = TrainConfig(steps=args.steps, batch_size=args.batch, block=args.block, lr=args.lr, seed=args.seed,
                     eval_windows=args.eval_windows)
    out = Path(args.output) if args.output else Path("build/linear") / f"{cfg.label}_s{args.seed}.pt"
    corpus = _corpus(args)
    model, log = train_lm(cfg, corpus, tc, checkpoint=out, resume=args.resume)
    ev = evaluate(model, corpus, tc.block, tc.eval_windows)
    print_json({"checkpoint": str(out), "model": cfg.to_dict(), "params": model.n_params(), "train": tc.__dict__,
               "final_train_loss": log[-1][1] if log else None, "held_out": ev}, args.json)
    return 0


def cmd_eval(args) -> int:
    from attnforge.algo.linear.train import evaluate, load_checkpoint

    _threads(args)
    model, ck = load_checkpoint(args.checkpoint)
    ev = evaluate(model, _corpus(args), args.block or model.cfg.block_size, args.eval_windows)
    print_json({"checkpoint": args.checkpoint, "model": ck["config"], "step": ck["step"], "held_out": ev}, args.json)
    return 0


def _prompt_bytes(text: str):
    data = list(text.encode("utf-8"))
    if not data:
        raise ValueError("--prompt must not be empty")
    return data


#: ``generate --rtl`` without ``--prompt``: three prompts from the kind of text the models learn.
RTL_PROMPTS = ("def ", "import os\n", "class ")


def cmd_generate(args) -> int:
    from attnforge.algo.linear.speculative import sample_decode
    from attnforge.algo.linear.train import load_checkpoint

    _threads(args)
    if args.rtl:
        return _generate_rtl(args)
    model, _ = load_checkpoint(args.checkpoint)
    prompt = _prompt_bytes((args.prompt or ["def "])[0])
    out = sample_decode(model, prompt, args.tokens, args.temperature, args.seed)
    sys.stdout.write(bytes(prompt + out).decode("utf-8", "replace") + "\n")
    return 0


def _generate_rtl(args) -> int:
    from attnforge.flows.linear_cosim import cosim_generate

    if args.temperature > 0:
        raise ConfigError(f"--temperature {args.temperature}: --rtl decodes greedily (temperature 0)")
    prompts = [bytes(_prompt_bytes(p)) for p in (args.prompt or RTL_PROMPTS)]
    summary = cosim_generate(args.checkpoint, prompts, args.tokens, _corpus(args), simulator=args.simulator,
                             calib_windows=args.calib_windows, eval_windows=args.eval_windows, seed=args.seed,
                             macs=args.macs, fmax_mhz=args.fmax_mhz,
                             fmax_source="--fmax-mhz" if args.fmax_mhz else None, build_root=args.build_root)
    ok = summary["tokens_identical"] and summary["bit_exact"]
    return print_report(summary, args.json, ok=ok,
                        failure=f"FAILED: tokens_identical={summary['tokens_identical']}, "
                                f"mismatches={summary['mismatches']}; log: {summary['log']}")


def cmd_speculate(args) -> int:
    from attnforge.algo.linear.speculative import SAMPLING, make_draft, race
    from attnforge.algo.linear.train import load_checkpoint
    from attnforge.errors import ConfigError, check_choice, check_int

    # Options first, before any checkpoint is read.
    check_int("--k", args.k, 1)
    check_int("--ngram", args.ngram, 1)
    check_int("--repeats", args.repeats, 1)
    check_int("--tokens", args.tokens, 1)
    check_choice("--sampling", args.sampling, SAMPLING)
    kind = args.draft_kind or ("model" if args.draft else "ngram")
    if kind == "model" and not args.draft:
        raise ConfigError("--draft model needs a draft checkpoint (the second positional argument)")
    if kind in ("ngram", "corpus") and args.draft:
        raise ConfigError(f"--draft {kind} takes no draft checkpoint, got {args.draft!r}")
    check_int("--order", args.order, 1, 6)
    if args.rtl and kind == "corpus":
        raise ConfigError("--rtl runs the ngram and model drafts; --draft corpus is not wired to the RTL run")
    _threads(args)
    if args.rtl:
        return _speculate_rtl(args, kind)
    if args.prompt and len(args.prompt) > 1:
        raise ConfigError(f"--prompt given {len(args.prompt)} times; without --rtl speculate takes one prompt")
    args.prompt = (args.prompt or ["def "])[0]
    target, _ = load_checkpoint(args.target)
    target.eval()
    model = None
    if kind == "model":
        model, _ = load_checkpoint(args.draft)
        model.eval()
    draft = make_draft(kind, model, ngram=args.ngram, order=args.order,
                       text=_corpus(args).train if kind == "corpus" else None)
    prompt = _prompt_bytes(args.prompt)
    r = race(target, draft, prompt, args.tokens, args.k, temperature=args.temperature, sampling=args.sampling,
             seed=args.seed, repeats=args.repeats)
    mode = "greedy" if args.temperature <= 0 else args.sampling
    report = {"draft": kind, "k": args.k, "mode": mode, "temperature": args.temperature, "seed": args.seed,
              "ngram": args.ngram if kind == "ngram" else None, "order": args.order if kind == "corpus" else None,
              "tokens": args.tokens, "repeats": args.repeats,
              "sequential_tokens_per_second": round(r["sequential_tokens_per_second"], 1),
              "speculative_tokens_per_second": round(r["speculative_tokens_per_second"], 1),
              "tokens_per_second": round(r["speculative_tokens_per_second"], 1),
              "speedup": round(r["speedup"], 3),
              "verifies": r["verifies"], "accepted_per_verify": r["accepted_per_verify"],
              "mean_accepted_per_verify": round(r["mean_accepted_per_verify"], 3),
              "identical": r["identical"],
              "text": bytes(prompt + r["tokens"]).decode("utf-8", "replace")}
    if mode == "greedy":
        report["identical_to_greedy"] = r["identical"]
    print_json(report, args.json)
    return 1 if report["identical"] is False else 0


def _speculate_rtl(args, kind) -> int:
    from attnforge.flows.linear_cosim import cosim_speculate

    if args.temperature > 0:
        raise ConfigError(f"--temperature {args.temperature}: --rtl decodes greedily (temperature 0)")
    prompts = [bytes(_prompt_bytes(p)) for p in (args.prompt or RTL_PROMPTS)]
    summary = cosim_speculate(args.target, prompts, args.tokens, _corpus(args), k=args.k, draft=kind,
                              ngram=args.ngram, draft_checkpoint=args.draft, simulator=args.simulator,
                              calib_windows=args.calib_windows, eval_windows=args.eval_windows, seed=args.seed,
                              macs=args.macs, fmax_mhz=args.fmax_mhz,
                              fmax_source="--fmax-mhz" if args.fmax_mhz else None, build_root=args.build_root)
    ok = summary["tokens_identical"] and summary["accepted_identical"] and summary["bit_exact"]
    return print_report(summary, args.json, ok=ok,
                        failure=f"FAILED: tokens_identical={summary['tokens_identical']}, accepted_identical="
                                f"{summary['accepted_identical']}, mismatches={summary['mismatches']}; "
                                f"log: {summary['log']}")


def cmd_export(args) -> int:
    from attnforge.algo.linear.export import check_hardware_variant, export_head, held_out_window
    from attnforge.algo.linear.train import load_checkpoint

    _threads(args)
    model, _ = load_checkpoint(args.checkpoint)
    check_hardware_variant(model.cfg, args.checkpoint)   # before the corpus is read
    summary = export_head(model, held_out_window(_corpus(args), args.tokens), args.layer, args.head, args.output,
                          max_tokens=args.max_tokens)
    summary = {k: v for k, v in summary.items() if k not in ("float_out", "golden_out")}
    summary["checkpoint"] = args.checkpoint
    print_json(summary, args.json)
    return 0


def cmd_int_eval(args) -> int:
    import torch

    from attnforge.algo.linear.export import check_hardware_variant
    from attnforge.algo.linear.int_attention import IntegerAttention
    from attnforge.algo.linear.train import evaluate, load_checkpoint

    _threads(args)
    model, _ = load_checkpoint(args.checkpoint)
    check_hardware_variant(model.cfg, args.checkpoint)   # before the corpus is read
    corpus = _corpus(args)
    block = args.block or model.cfg.block_size
    calib, _ = corpus.batch("train", args.calib_windows, block, torch.Generator().manual_seed(args.seed))
    ia = IntegerAttention.calibrate(model, calib)
    fl = evaluate(model, corpus, block, args.eval_windows)
    with ia.use():
        it = evaluate(model, corpus, block, args.eval_windows)
    heads = [{"layer": l, "head": h, "attn_multiplier": hq.fmt.attn_multiplier, "attn_shift": hq.fmt.attn_shift,
              "conv_multiplier": hq.fmt.conv_multiplier, "conv_shift": hq.fmt.conv_shift,
              "scales": {"q": hq.q, "k": hq.k, "v": hq.v, "out": hq.out}}
             for l, row in enumerate(ia.heads) for h, hq in enumerate(row)]
    print_json({"checkpoint": args.checkpoint, "float": fl, "integer": it, "ppl_ratio": it["ppl"] / fl["ppl"],
                "calib_windows": args.calib_windows, "block": block, "heads": heads}, args.json)
    return 0


def cmd_study(args) -> int:
    from attnforge.algo.linear import study

    parts_dir, report_dir = Path(args.parts_dir), Path(args.report_dir)
    if args.list:
        status = study.part_status(parts_dir)
        for pid, st in status.items():
            print(f"{pid:18s} {st}")
        done = sum(st == "done" for st in status.values())
        print(f"{done} of {len(status)} parts done in {parts_dir}")
        return 0
    if args.report:
        res = study.assemble_report(parts_dir, report_dir)
        print(f"wrote {res['report']} from {res['parts_present']} parts; missing: "
              f"{', '.join(res['parts_missing']) or 'none'}")
        return 0
    if args.part:
        study.parse_part(args.part)   # a bad id is refused before the corpus is read
        todo = [args.part]
    elif args.next:
        todo = [p for p in [study.next_missing(parts_dir)] if p]
    else:
        todo = [pid for pid, st in study.part_status(parts_dir).items() if st != "done"]
    if not todo:
        print(f"every part is done in {parts_dir}; `attnforge linear study --report` assembles the report")
        return 0
    where = f"the Dask scheduler at {args.cluster}" if args.cluster else f"{args.workers} process(es)"
    print(f"{len(todo)} part(s) on {where}: {', '.join(todo)}", file=sys.stderr)
    for pid, rec in zip(todo, study.run_parts(todo, parts_dir, threads=args.threads, workers=args.workers,
                                              cluster=args.cluster)):
        print(f"{pid}: held-out loss {rec['final']['loss']:.4f} (ppl {rec['final']['ppl']:.3f}), converged "
              f"{rec['converged']}, {rec['wall_seconds']:.0f} s -> {study.part_path(parts_dir, pid)}")
    return 0


def cmd_linearize(args) -> int:
    from attnforge.algo.linear.linearize import linearize_and_finetune

    _threads(args)
    out = Path(args.output)
    report = linearize_and_finetune(args.model_dir, _corpus(args), out, attention=args.attention,
                                    augment=not args.no_augment, conv_kernel=args.conv_kernel, chunk=args.chunk,
                                    steps=args.steps, block=args.block, batch_size=args.batch, lr=args.lr,
                                    eval_windows=args.eval_windows, seed=args.seed)
    print_json(report, out / "report.json")
    print(json.dumps(report["held_out_loss"], indent=2))
    return 0


def register(subparsers) -> None:
    from attnforge.algo.linear.names import VARIANT_NAMES

    g = command_group(subparsers, "linear", "Linearized LLMs: linear attention variants, training, "
                                            "speculative decoding, decode datapath")

    def common(p):
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
        p.add_argument("--train-bytes", type=int, default=4_000_000, help="training text cap in bytes [4000000]")
        p.add_argument("--val-bytes", type=int, default=400_000, help="held-out text cap in bytes [400000]")
        p.add_argument("--eval-windows", type=int, default=64, help="held-out windows evaluated [64]")
        p.add_argument("--seed", type=int, default=0, help="seed [0]")

    def rtl_args(p):
        """The options of a run on the decode RTL (``generate --rtl``, ``speculate --rtl``)."""
        p.add_argument("--macs", type=int, default=None, help="--rtl: MACs per datapath [the head dimension]")
        p.add_argument("--calib-windows", type=int, default=32, help="--rtl: training windows for the scales [32]")
        p.add_argument("--fmax-mhz", type=float, default=None,
                       help="--rtl: clock for tokens_per_second_at_fmax (e.g. a routed Fmax from docs/linear-hw.md)")
        p.add_argument("--build-root", default="build/cosim", help="--rtl: build folder [build/cosim]")
        add_simulator_option(p)

    def model_args(p, attention="elu"):
        p.add_argument("--attention", choices=list(VARIANT_NAMES), default=attention, help=f"attention variant [{attention}]")
        p.add_argument("--conv-kernel", type=int, default=4, help="augmentation: conv taps over V [4]")
        p.add_argument("--chunk", type=int, default=16, help="augmentation: local attention chunk [16]")

    p = g.add_parser("train", help="train a byte-level LM on the Python stdlib sources",
                     description="Train the small decoder-only LM with the chosen attention (optionally "
                                 "augmented); writes a checkpoint (every 100 steps and at the end) and prints "
                                 "held-out loss and perplexity.")
    model_args(p)
    p.add_argument("--augment", action="store_true", help="wrap the variant in the causal local augmentation")
    p.add_argument("--layers", type=int, default=2, help="layers [2]")
    p.add_argument("--heads", type=int, default=4, help="heads [4]")
    p.add_argument("--d-model", type=int, default=128, help="model width [128]")
    p.add_argument("--block", type=int, default=128, help="context length in bytes [128]")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps [300]")
    p.add_argument("--batch", type=int, default=16, help="batch size [16]")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate [3e-3]")
    p.add_argument("--resume", help="continue from this checkpoint")
    p.add_argument("-o", "--output", help="checkpoint path [build/linear/<model>_s<seed>.pt]")
    p.add_argument("--json", help="write the summary here instead of stdout")
    common(p)
    p.set_defaults(func=cmd_train)

    p = g.add_parser("eval", help="held-out loss and perplexity of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--block", type=int, default=None, help="window length [the model's block size]")
    p.add_argument("--json", help="write the result here instead of stdout")
    common(p)
    p.set_defaults(func=cmd_eval)

    p = g.add_parser("generate", help="generate bytes with the recurrent form (--rtl: every attention step on the RTL)",
                     description="Generate bytes after a prompt with the model's recurrent form. With --rtl (a "
                                 "checkpoint of the decode datapath's variant: --attention relu --augment --chunk 0) "
                                 "the model's attention is calibrated to int8 with one set of scales per layer, "
                                 "every layer's heads run on one decode datapath instance per layer (Verilator "
                                 "or Icarus), the rest of the model in PyTorch, greedily; every RTL output is "
                                 "compared with the golden model and the tokens with the integer-attention "
                                 "model's own greedy decoding. Exit 0 only if both are identical.")
    p.add_argument("checkpoint")
    p.add_argument("--prompt", action="append", default=None,
                   help='prompt text, repeatable ["def "; with --rtl three prompts: ' + ", ".join(map(repr, RTL_PROMPTS)) + "]")
    p.add_argument("--tokens", type=int, default=80, help="bytes to generate [80]")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy [0]")
    p.add_argument("--rtl", action="store_true", help="run every attention step on the decode datapath's RTL")
    rtl_args(p)
    p.add_argument("--json", help="--rtl: write the report here instead of stdout")
    common(p)
    p.set_defaults(func=cmd_generate)

    p = g.add_parser("speculate", help="speculative decoding: draft proposes k, target verifies in one pass",
                     description="Sequential and speculative decoding of TARGET, interleaved --repeats times "
                                 "(medians). Draft: prompt lookup over the context (--draft ngram, the default "
                                 "without DRAFT), the DRAFT checkpoint (--draft model) or a byte n-gram model of "
                                 "the training text (--draft corpus). Greedy (temperature 0) "
                                 "or sampling: gumbel (token-identical to `linear generate` with the same seed) "
                                 "or rejection (equal in distribution only). Reports tokens/s of both, accepted "
                                 "tokens per verify and whether the outputs are identical (exit status 1 if not).")
    p.add_argument("target")
    p.add_argument("draft", nargs="?", help="draft checkpoint (for --draft model)")
    p.add_argument("--draft", dest="draft_kind", choices=["ngram", "model", "corpus"], default=None,
                   help="draft kind: ngram (prompt lookup), model (the DRAFT checkpoint) or corpus (a byte n-gram "
                        "model counted from the training text, --train-bytes of it) [model if a DRAFT checkpoint "
                        "is given, else ngram]")
    p.add_argument("--ngram", type=int, default=3, help="n-gram draft: longest n-gram looked up [3]")
    p.add_argument("--order", type=int, default=2,
                   help="corpus draft: context bytes, 1..6 (the order that agrees best with the target wins, "
                        "not the best language model: 2 for a briefly trained target) [2]")
    p.add_argument("--sampling", default="gumbel", help="sampling rule when temperature > 0: gumbel|rejection "
                                                         "[gumbel]")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each, medians reported [3]")
    p.add_argument("--k", type=int, default=4, help="draft tokens per verify [4]")
    p.add_argument("--prompt", action="append", default=None,
                   help='prompt text ["def "; repeatable with --rtl, whose default is three prompts: '
                        + ", ".join(map(repr, RTL_PROMPTS)) + "]")
    p.add_argument("--tokens", type=int, default=64, help="bytes to generate [64]")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy [0]")
    p.add_argument("--rtl", action="store_true",
                   help="every verify block and commit of the target's attention on the decode datapath's RTL "
                        "(one instance per layer and head), greedy; compared with the same speculative run on the "
                        "golden model")
    rtl_args(p)
    p.add_argument("--json", help="write the report here instead of stdout")
    common(p)
    p.set_defaults(func=cmd_speculate)

    p = g.add_parser("export", help="one head's attention on a held-out window as int8 tensors for linear sim",
                     description="Run a checkpoint trained with the decode datapath's attention (--attention relu "
                                 "--augment --chunk 0) on the first TOKENS bytes of the held-out text, quantize one "
                                 "head's q, k, v and conv taps to int8 with the requantization scales, check the "
                                 "scales against the datapath's formats, and write an attnforge.linear_tensors/1 "
                                 "file for `attnforge linear sim --tensors`. Prints the integer golden model's "
                                 "error against the float head output.")
    p.add_argument("checkpoint")
    p.add_argument("--layer", type=int, default=0, help="layer [0]")
    p.add_argument("--head", type=int, default=0, help="head [0]")
    p.add_argument("--tokens", type=int, default=128, help="held-out bytes [128]")
    p.add_argument("--max-tokens", type=int, default=4096, help="the datapath's max_tokens [4096]")
    p.add_argument("-o", "--output", required=True, help="tensor file to write (.npz)")
    p.add_argument("--json", help="write the summary here instead of stdout")
    common(p)
    p.set_defaults(func=cmd_export)

    p = g.add_parser("int-eval", help="held-out perplexity with every attention head in the datapath's integers",
                     description="Calibrate int8 scales and requantizers per layer and head on training windows "
                                 "(seeded), replace every head's attention by the decode datapath's integer "
                                 "arithmetic (the golden model, in closed form), and report the held-out loss and "
                                 "perplexity of the float and the integer-attention model.")
    p.add_argument("checkpoint")
    p.add_argument("--calib-windows", type=int, default=32, help="training windows for the scales [32]")
    p.add_argument("--block", type=int, default=None, help="window length [the model's block size]")
    p.add_argument("--json", help="write the result here instead of stdout")
    common(p)
    p.set_defaults(func=cmd_int_eval)

    p = g.add_parser("linearize", help="swap a local GPT-2 checkpoint's attention for linear attention, fine-tune",
                     description="Load a Hugging Face GPT-2 from a local folder (needs attnforge[hf]), replace "
                                 "each attention by the chosen variant (augmented unless --no-augment) keeping "
                                 "the pretrained projections, fine-tune on the stdlib corpus, and report "
                                 "held-out loss before and after.")
    p.add_argument("model_dir")
    model_args(p)
    p.add_argument("--no-augment", action="store_true", help="plain variant, no conv/local attention")
    p.add_argument("--steps", type=int, default=200, help="fine-tuning steps [200]")
    p.add_argument("--block", type=int, default=128, help="sequence length [128]")
    p.add_argument("--batch", type=int, default=8, help="batch size [8]")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate [1e-4]")
    p.add_argument("-o", "--output", default="build/linear/linearized", help="output folder")
    common(p)
    p.set_defaults(func=cmd_linearize)

    p = g.add_parser("study", help="issue 18's study in parts: softmax vs plain linear vs augmented vs the "
                                   "datapath's variant, 3 seeds",
                     description="Each part trains one model with one seed for the study's token budget, logs the "
                                 "held-out loss curve and writes a JSON file under --parts-dir (atomically). "
                                 "--next/--all run missing parts (resumable: a finished part is never rerun), "
                                 "--report assembles README.md and curves.png from whatever parts exist.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--part", metavar="ID", help="run this part (see --list), e.g. softmax-s0")
    what.add_argument("--next", action="store_true", help="run the first part whose result file is missing")
    what.add_argument("--all", action="store_true", help="run every missing part, in --list order")
    what.add_argument("--list", action="store_true", help="list the parts and which exist")
    what.add_argument("--report", action="store_true", help="assemble the report from the parts present")
    p.add_argument("--parts-dir", default="docs/linear-study/parts", help="part files [docs/linear-study/parts]")
    p.add_argument("--report-dir", default="docs/linear-study", help="README.md and curves.png [docs/linear-study]")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per part [1]")
    p.add_argument("--workers", type=int, default=1, help="parts trained at once, a process each [1]")
    add_cluster_option(p)
    p.set_defaults(func=cmd_study)

    _register_sim(g)


# ---------------------------------------------------------------------------- sim

#: The fields ``linear sim`` takes; the requantizers follow from the data (or from the tensors file).
SIM_FIELDS = ("d", "macs", "conv_taps", "t_max", "heads", "max_tokens", "feature_map", "snapshots", "pipelining")


def cmd_sim(args) -> int:
    from attnforge.flows.linear import run_linear_sim

    summary = run_linear_sim(tokens=args.tokens, verify=args.verify, seed=args.seed, tensors=args.tensors,
                             config_kw=config_kwargs(args, args.config_fields), simulator=args.simulator,
                             build_root=args.build_root)
    if any(summary.get("overflow") or ()):
        heads = [h for h, up in enumerate(summary["overflow"]) if up]
        print(f"WARNING: overflow on head(s) {heads}: more than max_tokens={summary['config']['max_tokens']} "
              f"tokens committed, the state wrapped; the outputs match the golden model's wrapped arithmetic "
              f"but are not trustworthy attention (raise --max-tokens)", file=sys.stderr)
    return print_report(summary, args.json, ok=summary["bit_exact"],
                        failure=f"FAILED: {summary['failed']} of {summary['tests']} testbench tests; "
                                f"log: {Path(summary['run_dir']) / 'test.log'}")


def _register_sim(g) -> None:
    p = g.add_parser("sim", help="run tokens on the linear decode datapath RTL, bit for bit against the golden model",
                     description="Build the linear-attention decode datapath, run a seeded random program "
                                 "(decode steps, verify blocks with random commit(a), resets) of about N tokens "
                                 "and a steady-state run of N tokens (decode, or verify blocks of T all "
                                 "accepted) on the RTL, compare every output with the integer golden model, "
                                 "and write JSON with bit_exact, cycles_per_token, ideal_cycles_per_token, "
                                 "utilization. With --tensors the file's tokens are run instead.")
    p.add_argument("--tokens", type=int, default=256, help="tokens in each run [256]")
    p.add_argument("--verify", type=int, default=None, metavar="T", help="verify blocks of T draft tokens")
    p.add_argument("--seed", type=int, default=0, help="seed of the random program [0]")
    p.add_argument("--tensors", metavar="FILE", help="attnforge.linear_tensors/1 .npz to run instead of random data")
    p.add_argument("--json", metavar="OUT", help="write the JSON here instead of stdout")
    add_simulator_option(p)
    p.add_argument("--build-root", default="build/sim", help="per-configuration builds [build/sim]")
    names = add_config_options(p, LinearDecodeConfig, include=SIM_FIELDS, choices=REGISTER_CHOICES,
                               title="generator parameters (defaults in brackets)")
    p.set_defaults(func=cmd_sim, config_fields=names)
