"""Linearized-LLM algorithm study, written to ``bench/results/linear_algo.json`` (+ ``.png``).

Three measurements, all on the CPU with one thread:

1. **Perplexity**: the byte-level LM (``algo/linear/model.py``) trained with
   softmax attention, each linear variant, and each variant with the causal
   local augmentation -- same size, same steps, same data, seeds 0, 1, 2 --
   evaluated on the fixed held-out windows of the stdlib corpus. Then: does the
   augmentation close at least half of the gap between the best plain linear
   variant and softmax?
2. **Speculative decoding**: a trained augmented target and a smaller draft;
   mean accepted draft tokens per verify pass and tokens/s against sequential
   greedy decoding with the target's recurrent form, for k = 2, 4, 8 (and a
   check that the output is identical to greedy decoding).
3. **Decode cost** per token of one attention layer against the context length
   (128 .. 8192): softmax with a KV cache against linear attention's constant
   state -- wall time and state bytes.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run"]


def _write(path: Path, result: dict):
    write_json_atomic(path, result)


def _perplexity_study(corpus, variants, seeds, model_kw, train_cfg, result, path, bar):
    """Train and evaluate every model; fills result["perplexity"]."""
    from attnforge.algo.linear.model import LMConfig
    from attnforge.algo.linear.train import evaluate, train_lm

    rows = result["perplexity"]["runs"]
    for name, augment in [("softmax", False)] + [(v, a) for a in (False, True) for v in variants]:
        for seed in seeds:
            cfg = LMConfig(attention=name, augment=augment, seed=seed, **model_kw)
            tc = train_cfg.__class__(**{**train_cfg.__dict__, "seed": seed})
            bar.set_postfix_str(f"{cfg.label} seed {seed}")
            model, log = train_lm(cfg, corpus, tc, progress=False)
            ev = evaluate(model, corpus, tc.block, tc.eval_windows)
            rows.append({"model": cfg.label, "attention": name, "augment": augment, "seed": seed,
                         "held_out_loss": round(ev["loss"], 5), "held_out_ppl": round(ev["ppl"], 4),
                         "final_train_loss": log[-1][1], "train_seconds": round(model.train_seconds, 2),
                         "params": model.n_params()})
            _write(path, result)
            bar.update()
    # Summary: mean and spread over seeds, and the gap closed by the augmentation.
    summary = {}
    for label in dict.fromkeys(r["model"] for r in rows):
        ppl = [r["held_out_ppl"] for r in rows if r["model"] == label]
        summary[label] = {"mean_ppl": round(statistics.mean(ppl), 4),
                          "std_ppl": round(statistics.stdev(ppl), 4) if len(ppl) > 1 else 0.0, "seeds": len(ppl)}
    result["perplexity"]["summary"] = summary
    soft = summary["softmax"]["mean_ppl"]
    best = min(variants, key=lambda v: summary[v]["mean_ppl"])
    gap = summary[best]["mean_ppl"] - soft
    per_variant = {}
    for v in variants:
        g = summary[v]["mean_ppl"] - soft
        per_variant[v] = {"plain": summary[v]["mean_ppl"], "augmented": summary[v + "+aug"]["mean_ppl"],
                          "gap_to_softmax": round(g, 4),
                          "fraction_closed": round((summary[v]["mean_ppl"] - summary[v + "+aug"]["mean_ppl"]) / g, 3)
                          if g > 0 else None}
    closed = (summary[best]["mean_ppl"] - summary[best + "+aug"]["mean_ppl"]) / gap if gap > 0 else None
    result["perplexity"]["gap"] = {
        "softmax_ppl": soft, "best_plain_linear": best, "best_plain_linear_ppl": summary[best]["mean_ppl"],
        "best_plain_linear_augmented_ppl": summary[best + "+aug"]["mean_ppl"],
        "gap": round(gap, 4), "fraction_closed": None if closed is None else round(closed, 3),
        "goal_closes_at_least_half": None if closed is None else bool(closed >= 0.5),
        "note": "fraction_closed = (ppl(best plain) - ppl(best plain + aug)) / (ppl(best plain) - ppl(softmax)); "
                "above 1 means the augmented variant beats softmax",
        "per_variant": per_variant}


def _speculative_study(corpus, target, draft, ks, n_prompts, prompt_len, n_new, result, path, bar):
    from attnforge.algo.linear.speculative import greedy_decode, speculative_decode

    x, _ = corpus.eval_windows(prompt_len, 10_000)
    stride = max(1, len(x) // n_prompts)
    prompts = [x[i * stride] for i in range(n_prompts)]
    t0 = time.perf_counter()
    refs = [greedy_decode(target, p, n_new) for p in prompts]
    seq_s = time.perf_counter() - t0
    seq_tps = n_prompts * n_new / seq_s
    t0 = time.perf_counter()
    for p in prompts:
        greedy_decode(draft, p, n_new)
    draft_tps = n_prompts * n_new / (time.perf_counter() - t0)
    rows = []
    for k in ks:
        accepted, verifies, seconds, identical = 0, 0, 0.0, True
        for p, ref in zip(prompts, refs):
            out, st = speculative_decode(target, draft, p, n_new, k)
            identical &= out == ref
            accepted += st.accepted
            verifies += st.verifies
            seconds += st.seconds
        tps = n_prompts * n_new / seconds
        rows.append({"k": k, "mean_accepted_per_verify": round(accepted / verifies, 3),
                     "tokens_per_verify": round(n_prompts * n_new / verifies, 3),
                     "tokens_per_second": round(tps, 1), "speedup_vs_sequential": round(tps / seq_tps, 3),
                     "identical_to_greedy": identical})
        bar.update()
    result["speculative"] = {
        "target": target.cfg.to_dict() | {"params": target.n_params()},
        "draft": draft.cfg.to_dict() | {"params": draft.n_params()},
        "prompts": n_prompts, "prompt_bytes": prompt_len, "new_tokens": n_new,
        "sequential_tokens_per_second": round(seq_tps, 1), "draft_alone_tokens_per_second": round(draft_tps, 1),
        "by_k": rows}
    _write(path, result)


@torch.no_grad()
def _decode_cost(contexts, heads, head_dim, reps, result, path, bar):
    from attnforge.algo.linear.augment import AugmentedAttention
    from attnforge.algo.linear.variants import make_core, state_tensors

    cores = {"softmax (KV cache)": make_core("softmax", heads, head_dim),
             "elu (linear state)": make_core("elu", heads, head_dim),
             "relu (linear state)": make_core("relu", heads, head_dim),
             "elu+aug (state + chunk 16 + conv 4)": AugmentedAttention(make_core("elu", heads, head_dim), 4, 16)}
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in contexts:
        row = {"context": n}
        for label, core in cores.items():
            if label.startswith("softmax"):
                state = core.init_state(1, capacity=n + reps + 1)
                state["kcache"][:, :, :n] = torch.randn(1, heads, n, head_dim, generator=g)
                state["vcache"][:, :, :n] = torch.randn(1, heads, n, head_dim, generator=g)
                state["n"] = n
            else:
                # A linear state does not grow: start from a state at a whole chunk, as after n tokens.
                state = core.init_state(1)
                for _ in range(16):
                    state = core.absorb(state, *torch.randn(2, 1, heads, head_dim, generator=g))
            qkv = torch.randn(reps, 3, 1, heads, head_dim, generator=g)
            for i in range(3):  # warm-up
                core.step(state, *qkv[i])
            t0 = time.perf_counter()
            s = state
            for i in range(reps):
                _, s = core.step(s, *qkv[i])
            dt = (time.perf_counter() - t0) / reps
            # The state at this context (the timed steps appended `reps` more tokens to the KV cache).
            nbytes = sum(t.numel() * t.element_size() for t in state_tensors(state).values() if t.dim() > 0)
            row[label] = {"microseconds_per_token": round(dt * 1e6, 2), "state_bytes": nbytes}
        rows.append(row)
        bar.update()
    soft = "softmax (KV cache)"
    cross = next((r["context"] for r in rows if r[soft]["microseconds_per_token"] > r["elu (linear state)"]
                  ["microseconds_per_token"]), None)
    result["decode_cost"] = {"heads": heads, "head_dim": head_dim, "batch": 1, "dtype": "float32",
                             "what": "one attention layer's decode step (core only, no projections); "
                                     "state_bytes: KV cache or recurrent state of that layer",
                             "rows": rows, "first_context_where_softmax_is_slower_than_elu": cross}
    _write(path, result)


def _plot(result, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    summ = result["perplexity"]["summary"]
    variants = [v for v in result["perplexity"]["variants"]]
    xs = range(len(variants))
    ax.axhline(summ["softmax"]["mean_ppl"], color="k", ls="--", label="softmax")
    ax.bar([x - 0.2 for x in xs], [summ[v]["mean_ppl"] for v in variants], 0.4,
           yerr=[summ[v]["std_ppl"] for v in variants], label="plain linear")
    ax.bar([x + 0.2 for x in xs], [summ[v + "+aug"]["mean_ppl"] for v in variants], 0.4,
           yerr=[summ[v + "+aug"]["std_ppl"] for v in variants], label="+ augmentation")
    ax.set_xticks(list(xs), variants, rotation=30)
    ax.set_ylabel("held-out perplexity (bytes), mean of seeds")
    lo = min(summ[k]["mean_ppl"] for k in summ)
    ax.set_ylim(lo * 0.9, max(summ[k]["mean_ppl"] for k in summ) * 1.05)
    ax.set_title("perplexity")
    ax.legend()
    ax = axes[1]
    if "speculative" in result:
        sp = result["speculative"]["by_k"]
        ks = [r["k"] for r in sp]
        ax.plot(ks, [r["mean_accepted_per_verify"] for r in sp], "o-", label="accepted per verify")
        ax.plot(ks, [r["speedup_vs_sequential"] for r in sp], "s-", label="tokens/s vs sequential")
        ax.axhline(1, color="gray", lw=0.5)
        ax.set_xlabel("k (draft tokens per verify)")
        ax.set_title("speculative decoding")
        ax.legend()
    ax = axes[2]
    if "decode_cost" in result:
        rows = result["decode_cost"]["rows"]
        ctx = [r["context"] for r in rows]
        for label in [k for k in rows[0] if k != "context"]:
            ax.plot(ctx, [r[label]["microseconds_per_token"] for r in rows], "o-", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("µs per token (one layer)")
        ax2 = ax.twinx()
        ax2.plot(ctx, [r["softmax (KV cache)"]["state_bytes"] / 1024 for r in rows], "k:", label="KV cache KiB")
        ax2.plot(ctx, [r["elu (linear state)"]["state_bytes"] / 1024 for r in rows], "k-.", label="linear state KiB")
        ax2.set_yscale("log")
        ax2.set_ylabel("state KiB (dotted: KV cache, dash-dot: linear)")
        ax.set_title("decode cost per token")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench linear_algo",
        reuse_perplexity: Path | None = None) -> Path:
    """Run the study; ``reuse_perplexity``: take part 1 from an earlier result file, redo parts 2 and 3."""
    from attnforge.algo.linear.data import load_corpus
    from attnforge.algo.linear.model import LMConfig
    from attnforge.algo.linear.train import TrainConfig, train_lm
    from attnforge.algo.linear.variants import LINEAR_VARIANTS, VARIANTS, AttentionCore

    reuse = json.loads(Path(reuse_perplexity).read_text()) if reuse_perplexity else None

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; figures are single-core figures
    try:
        out_dir = Path(out_dir)
        path = out_dir / "linear_algo.json"
        if quick:
            variants, seeds = ["elu", "relu"], [0, 1]
            model_kw = dict(n_layer=1, n_head=2, d_model=32, block_size=64, chunk=8, conv_kernel=3)
            tc = TrainConfig(steps=4, batch_size=4, block=64, lr=3e-3, warmup=2, eval_windows=4)
            corpus = load_corpus(200_000, 20_000)
            ks, n_prompts, prompt_len, n_new = [2], 2, 16, 12
            contexts, reps, dims = [128, 256], 5, (2, 16)
            draft_kw = dict(n_layer=1, n_head=2, d_model=16, block_size=64, chunk=8, conv_kernel=3)
        else:
            variants, seeds = list(LINEAR_VARIANTS), [0, 1, 2]
            # Sized for ~20 CPU minutes in all on one thread: 51 trainings of ~10 s each.
            model_kw = dict(n_layer=2, n_head=4, d_model=128, block_size=64, chunk=16, conv_kernel=4)
            tc = TrainConfig(steps=200, batch_size=16, block=64, lr=3e-3, warmup=20, eval_windows=128)
            corpus = load_corpus()
            ks, n_prompts, prompt_len, n_new = [2, 4, 8], 8, 16, 44
            contexts, reps, dims = [128, 256, 512, 1024, 2048, 4096, 8192], 200, (4, 64)
            draft_kw = dict(n_layer=1, n_head=2, d_model=64, block_size=64, chunk=16, conv_kernel=4)
        result = {
            "format": "attnforge.bench/1", "benchmark": "linear_algo", "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": 1,
                     "python": platform.python_version(), "torch": torch.__version__},
            "quick": quick, "corpus": corpus.meta,
            "perplexity": {"model": model_kw, "train": tc.__dict__, "seeds": seeds, "variants": variants,
                           "runs": []},
        }
        total = (1 + 2 * len(variants)) * len(seeds) + 1 + len(ks) + len(contexts)
        with tqdm(total=total, desc="linear_algo", unit="step") as bar:
            if reuse is None:
                _perplexity_study(corpus, variants, seeds, model_kw, tc, result, path, bar)
            else:
                result["perplexity"] = reuse["perplexity"]
                result["perplexity_from"] = {"command": reuse["command"], "date": reuse["date"]}
                bar.update((1 + 2 * len(variants)) * len(seeds))
            # Speculative decoding: target = the best augmented variant whose verify pass is fully
            # parallel (kernel family), retrained with seed 0 (the same run as in the study); a small draft.
            summ = result["perplexity"]["summary"]
            best_aug = min((v + "+aug" for v in variants if VARIANTS[v].extend_keys is not AttentionCore.extend_keys),
                           key=lambda m: summ[m]["mean_ppl"])
            bar.set_postfix_str("target and draft")
            target, _ = train_lm(LMConfig(attention=best_aug[:-4], augment=True, seed=0, **model_kw), corpus, tc,
                                 progress=False)
            draft, _ = train_lm(LMConfig(attention=target.cfg.attention, augment=True, seed=0, **draft_kw), corpus,
                                tc, progress=False)
            bar.update()
            _speculative_study(corpus, target, draft, ks, n_prompts, prompt_len, n_new, result, path, bar)
            _decode_cost(contexts, *dims, reps, result, path, bar)
        png = out_dir / "linear_algo.png"
        _plot(result, png)
        result["plot"] = str(png)
        _write(path, result)
    finally:
        torch.set_num_threads(threads)
    print(f"wrote {path} and {png}")
    gap = result["perplexity"]["gap"]
    print(f"  softmax ppl {gap['softmax_ppl']}, best plain linear {gap['best_plain_linear']} "
          f"{gap['best_plain_linear_ppl']} -> +aug {gap['best_plain_linear_augmented_ppl']}; "
          f"fraction of the gap closed: {gap['fraction_closed']}")
    for r in result["speculative"]["by_k"]:
        print(f"  k={r['k']}: {r['mean_accepted_per_verify']} accepted/verify, {r['tokens_per_second']} tok/s "
              f"({r['speedup_vs_sequential']}x sequential), identical to greedy: {r['identical_to_greedy']}")
    return path


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="linear_algo benchmark (also: attnforge bench linear_algo)")
    ap.add_argument("-o", "--output", default="bench/results")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reuse-perplexity", metavar="JSON", help="take the perplexity study from this result file "
                                                                "and measure only speculative decoding and decode cost")
    a = ap.parse_args()
    run(Path(a.output), quick=a.quick, reuse_perplexity=a.reuse_perplexity,
        command=" ".join(["python -m attnforge.benchmarks.linear_algo", *sys.argv[1:]]))
