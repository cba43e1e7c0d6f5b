"""``attnforge tickets ...``: pretrain, draw, transfer, study, export.

    attnforge tickets pretrain --model cnn --eps 0.1 -o build/tickets/cnn_eps0.1.pt
    attnforge tickets draw build/tickets/cnn_eps0.1.pt --pattern nm --level 2:4 --scheme imp -o build/tickets/t.pt
    attnforge tickets transfer build/tickets/t.pt --gap rotated --mode finetune
    attnforge tickets study                      # the whole study (resumable), report in bench/results/
    attnforge tickets export build/tickets/t.pt -o build/tickets/t_csr.npz
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import add_cluster_option, command_group

__all__ = ["register"]


def _torch_threads(n: int = 1):
    import torch
    torch.set_num_threads(n)


def _attack_from_args(args):
    from attnforge.algo.tickets.attacks import Attack
    if args.eps == 0:
        return None
    return Attack(args.eps, norm=args.norm, steps=args.steps, step_size=args.step_size, kind=args.attack,
                  random_start=not args.no_random_start)


def cmd_pretrain(args) -> int:
    from attnforge.algo.tickets.train import pretrain, save_checkpoint

    _torch_threads()
    attack = _attack_from_args(args)
    ck = pretrain(args.model, attack=attack, epochs=args.epochs, lr=args.lr, seed=args.seed,
                  early_epoch=args.early_epoch, progress=True, robust_eval=attack)
    out = Path(args.output or f"build/tickets/{args.model}_eps{args.eps:g}_seed{args.seed}.pt")
    save_checkpoint(out, ck)
    summary = {k: ck[k] for k in ("model", "eps", "seed", "source_val", "source_test") if k in ck}
    if "source_val_robust" in ck:
        summary["source_val_robust"] = ck["source_val_robust"]
    print(json.dumps(summary))
    print(f"wrote {out}")
    return 0


def cmd_draw(args) -> int:
    from attnforge.algo.tickets.draw import draw_ticket
    from attnforge.algo.tickets.train import load_checkpoint, save_checkpoint

    _torch_threads()
    ticket = draw_ticket(load_checkpoint(args.pretrained), args.pattern, args.level, scheme=args.scheme,
                         scope=args.scope, rewind=args.rewind, rounds=args.rounds,
                         retrain_epochs=args.retrain_epochs, seed=args.seed, source=str(args.pretrained))
    meta = ticket["meta"]
    out = Path(args.output or Path(args.pretrained).with_name(
        f"{Path(args.pretrained).stem}_{args.scheme}_{meta['pattern']}_{meta['level'].replace(':', 'of')}.pt"))
    save_checkpoint(out, ticket)
    print(json.dumps(meta))
    print(f"wrote {out}")
    return 0


def cmd_transfer(args) -> int:
    from attnforge.algo.tickets.data import downstream_task
    from attnforge.algo.tickets.train import clean_state_dict, load_checkpoint, save_checkpoint
    from attnforge.algo.tickets.pruning import current_masks
    from attnforge.algo.tickets.transfer import make_ticket, transfer

    _torch_threads()
    ticket = load_checkpoint(args.ticket)
    result, model = transfer(ticket, downstream_task(args.gap), args.mode, seed=args.seed, epochs=args.epochs,
                             progress=True, return_model=True)
    summary = {"ticket": str(args.ticket), "gap": args.gap, "mode": args.mode, "seed": args.seed, **result,
               "ticket_meta": ticket["meta"]}
    print(json.dumps(summary))
    if args.output:
        tuned = make_ticket(ticket["model"], model.head.out_features, clean_state_dict(model), current_masks(model),
                            {**ticket["meta"], "transferred_to": args.gap, "mode": args.mode, **result})
        save_checkpoint(Path(args.output), tuned)
        print(f"wrote {args.output}")
    return 0


def study_config_from_args(args):
    from attnforge.algo.tickets.study import study_config

    return study_config(quick=args.quick, models=args.models.split(",") if args.models else None,
                        seeds=args.seeds, eps=[float(e) for e in args.eps.split(",")] if args.eps else None,
                        patterns=args.patterns.split(",") if args.patterns else None,
                        gaps=args.gaps.split(",") if args.gaps else None, levels=_parse_levels(args.levels))


def _parse_levels(specs) -> dict | None:
    """``["unstructured=0.75,0.9", "nm=2:4"]`` -> ``{"unstructured": ("0.75", "0.9"), "nm": ("2:4",)}``."""
    if not specs:
        return None
    out = {}
    for spec in specs:
        pattern, sep, texts = spec.partition("=")
        if not sep or not pattern or not texts:
            raise ValueError(f"--levels {spec!r}: expected PATTERN=LEVEL[,LEVEL...], e.g. unstructured=0.75,0.9 "
                             "or nm=2:4")
        if pattern in out:
            raise ValueError(f"--levels names pattern {pattern!r} twice")
        out[pattern] = tuple(t.strip() for t in texts.split(","))
    return out


def _study_name(args) -> str:
    parts = ["tickets_study"]
    if args.quick:
        parts.append("quick")
    for flag in ("models", "patterns", "gaps", "eps"):
        v = getattr(args, flag)
        if v:
            parts.append(v.replace(",", "-"))
    for spec in args.levels or ():
        parts.append(spec.replace("=", "-").replace(",", "-").replace(":", "of"))
    if args.seeds is not None:
        parts.append(f"{args.seeds}seeds")
    return "_".join(parts)


def cmd_study(args) -> int:
    from attnforge.algo.tickets.study import run_study

    _torch_threads()
    cfg = study_config_from_args(args)
    name = _study_name(args)
    cache = Path(args.cache or f"build/tickets/{name}")
    path = run_study(cache, cfg, workers=args.workers, cluster=args.cluster, report_dir=Path(args.output), name=name,
                     command=" ".join(["attnforge", *sys.argv[1:]]))
    report = json.loads(path.read_text())
    print(json.dumps({"eps_selection": {m: s["chosen"] for m, s in report["eps_selection"].items()},
                      "claims": report["claims"]}, indent=1))
    print(f"wrote {path} and {', '.join(report['plots'])} (cells cached in {cache})")
    return 0


def cmd_export(args) -> int:
    from attnforge.algo.tickets.export import export_model, save_ticket_csr
    from attnforge.algo.tickets.train import load_checkpoint
    from attnforge.algo.tickets.transfer import ticket_model

    ticket = load_checkpoint(args.ticket)
    model = ticket_model(ticket)
    layers = export_model(model)
    out = Path(args.output or Path(args.ticket).with_suffix(".csr.npz"))
    save_ticket_csr(out, layers, {"model": ticket["model"], "ticket": ticket["meta"], "source": str(args.ticket)})
    for layer in layers:
        rows, cols = layer.csr.shape
        print(f"  {layer.name:24s} {rows:4d}x{cols:<4d} nnz {layer.csr.nnz:6d} "
              f"({100 * (1 - layer.csr.nnz / (rows * cols)):.1f} % sparse) scale {layer.scale:.3g}")
    print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    from attnforge.algo.tickets.names import GAPS, MODEL_NAMES, MODES, PATTERNS, SCOPES

    g = command_group(subparsers, "tickets", "Robust tickets: adversarial pretraining, lottery tickets in three "
                                             "sparsity patterns, transfer, the robust-vs-natural study, CSR export")

    p = g.add_parser("pretrain", help="train a model on the source task (digits 0-4), naturally or adversarially")
    p.add_argument("--model", choices=MODEL_NAMES, default="cnn", help="model family member [cnn]")
    p.add_argument("--eps", type=float, default=0.0, help="attack radius; 0 = natural training [0]")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf", help="attack norm [linf]")
    p.add_argument("--attack", choices=("pgd", "fgsm"), default="pgd", help="attack for adversarial training [pgd]")
    p.add_argument("--steps", type=int, default=5, help="PGD steps [5]")
    p.add_argument("--step-size", type=float, default=None, help="PGD step size [2.5 * eps / steps]")
    p.add_argument("--no-random-start", action="store_true", help="start PGD at the clean input")
    p.add_argument("--epochs", type=int, default=30, help="training epochs [30]")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate [0.002]")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order and attacks [0]")
    p.add_argument("--early-epoch", type=int, default=None, help="also keep the weights after this epoch (to rewind to)")
    p.add_argument("-o", "--output", help="checkpoint [build/tickets/<model>_eps<eps>_seed<seed>.pt]")
    p.set_defaults(func=cmd_pretrain)

    p = g.add_parser("draw", help="draw a ticket (mask + weights to start from) from a pretrained checkpoint")
    p.add_argument("pretrained", help="checkpoint written by `tickets pretrain`")
    p.add_argument("--pattern", choices=PATTERNS, default="unstructured", help="sparsity pattern [unstructured]")
    p.add_argument("--level", default="0.9", help="sparsity in [0, 1), or N:M such as 2:4 for --pattern nm [0.9]")
    p.add_argument("--scheme", choices=("omp", "imp"), default="omp",
                   help="one-shot magnitude pruning, or iterative magnitude pruning with rewinding [omp]")
    p.add_argument("--scope", choices=SCOPES, default="layer", help="rank weights per layer or globally [layer]")
    p.add_argument("--rewind", choices=("pretrained", "early"), default="pretrained",
                   help="IMP rewinds to the pretrained weights or the early checkpoint [pretrained]")
    p.add_argument("--rounds", type=int, default=3, help="IMP pruning rounds [3]")
    p.add_argument("--retrain-epochs", type=int, default=8, help="IMP retraining epochs per round [8]")
    p.add_argument("--seed", type=int, default=0, help="seed of IMP retraining [0]")
    p.add_argument("-o", "--output", help="ticket file [next to the checkpoint]")
    p.set_defaults(func=cmd_draw)

    p = g.add_parser("transfer", help="new head on a downstream task, the ticket's mask fixed; prints val/test accuracy")
    p.add_argument("ticket", help="ticket file written by `tickets draw`")
    p.add_argument("--gap", choices=GAPS, default="plain", help="downstream domain gap [plain]")
    p.add_argument("--mode", choices=MODES, default="finetune", help="full fine-tuning or linear probing [finetune]")
    p.add_argument("--epochs", type=int, default=None, help="epochs [40 finetune, 60 linear]")
    p.add_argument("--seed", type=int, default=0, help="seed of the head and data order [0]")
    p.add_argument("-o", "--output", help="also save the transferred model (a ticket file, exportable)")
    p.set_defaults(func=cmd_transfer)

    p = g.add_parser("study", help="the robust-vs-natural ticket transfer study (resumable; JSON + PNG)",
                     description="Pretrain natural and robust models, choose eps on validation, draw tickets in "
                                 "every pattern, level and scheme, transfer them to every domain gap in both "
                                 "modes, over several seeds. Every cell is cached: rerun the same command to resume.")
    p.add_argument("-o", "--output", default="bench/results", help="report folder [bench/results]")
    p.add_argument("--cache", help="cell cache folder [build/tickets/<report name>]")
    p.add_argument("--workers", type=int, default=2, help="parallel processes, one thread each [2]")
    add_cluster_option(p)
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke-test configuration")
    p.add_argument("--models", help="comma-separated subset of cnn,vit,vit65 [cnn,vit]")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds [5]")
    p.add_argument("--eps", help="comma-separated robust eps candidates [0.05,0.1,0.2]")
    p.add_argument("--patterns", help="comma-separated subset of unstructured,channel,nm [all]")
    p.add_argument("--gaps", help=f"comma-separated subset of {','.join(GAPS)} [all]")
    p.add_argument("--levels", action="append", metavar="PATTERN=L1[,L2...]",
                   help="replace one pattern's levels, e.g. --levels unstructured=0.75,0.9 --levels nm=2:4 "
                        "[unstructured 0.5-0.95, channel 0.25-0.9, nm 2:4-1:16]")
    p.set_defaults(func=cmd_study)

    p = g.add_parser("export", help="write a ticket's sparse weights as int8 CSR (.npz) for a hardware SpMM")
    p.add_argument("ticket", help="ticket file (from `draw`, or a transferred model from `transfer -o`)")
    p.add_argument("-o", "--output", help="output .npz [<ticket>.csr.npz]")
    p.set_defaults(func=cmd_export)
