"""Speculative decoding against sequential decoding of the same target, tokens/s, on this CPU.

``attnforge bench speculative`` (-> ``bench/results/speculative.json``):

* trains its own models (no network, no checkpoint needed; cached under
  ``build/bench/speculative/`` and reused when the configuration matches): the
  target is relu+aug (2 layers, d = 128, 4 heads, context 256, chunk 16, conv 4),
  the neural draft plain relu (1 layer, d = 64, 2 heads), both on the stdlib
  corpus with the same short budget;
* prompts: ``n_prompts`` windows of ``prompt_len`` bytes of the **held-out** text
  (evenly spaced offsets, each moved to the start of the next line), ``n_new``
  bytes generated after each;
* for each draft (``ngram``: prompt lookup; ``model``: the neural draft), each k
  and each mode (greedy; Gumbel sampling at T = 0.8, whose output is token-identical
  to sequential sampling with the same seed): ``race`` runs sequential and
  speculative decoding interleaved in this process, ``repeats`` times each (order
  alternating), per prompt; medians per prompt, and the aggregate tokens/s =
  all tokens / sum of per-prompt median seconds;
* ``call_costs``: median time of each call a decode is made of (target step,
  verify of T tokens, commit, draft step, n-gram proposal), round-robin.

One torch thread (the machine is shared; the figures are single-core figures).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from pathlib import Path

import torch
from tqdm import tqdm

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run", "held_out_prompts", "call_costs"]


def held_out_prompts(corpus, n: int, length: int) -> list[list[int]]:
    """``n`` windows of ``length`` bytes of the held-out text, evenly spaced, each starting a line."""
    val = corpus.val
    out = []
    for i in range(n):
        off = i * (len(val) - 4 * length) // n
        nl = (val[off:off + 2 * length] == ord("\n")).nonzero()
        off = off + int(nl[0]) + 1 if len(nl) else off
        out.append(val[off:off + length].tolist())
    return out


def _model(corpus, cache: Path, model_kw: dict, tc):
    from attnforge.algo.linear.model import LMConfig
    from attnforge.algo.linear.train import evaluate, load_checkpoint, train_lm

    cfg = LMConfig(**model_kw)
    model = None
    if cache is not None and cache.exists():
        model, ck = load_checkpoint(cache)
        if ck["config"] != cfg.to_dict() or ck.get("train_config") != tc.__dict__ or ck["step"] != tc.steps:
            model = None
    if model is None:
        model, _ = train_lm(cfg, corpus, tc, checkpoint=cache, progress=False)
    model.eval()
    ev = evaluate(model, corpus, tc.block, tc.eval_windows)
    return model, {"model": cfg.to_dict(), "params": model.n_params(), "checkpoint": cache and str(cache),
                   "held_out_ppl": round(ev["ppl"], 3)}


#: context bytes of the corpus draft (``CorpusDraft``) in the benchmark: 2, because the benchmark's target
#: (300 training steps, held-out ppl ~7) agrees with the byte-bigram model more often than with longer
#: contexts (docs/linear-algo.md, "A corpus draft")
CORPUS_ORDER = 2


def corpus_draft_ppl(draft, text, n: int) -> float:
    """Perplexity of the corpus draft's next-byte distribution on the first ``n`` bytes of ``text``."""
    import math

    data = text[:n].tolist()
    nll = -sum(math.log(draft.distribution(data[max(0, i - draft.order):i])[data[i]]) for i in range(1, len(data)))
    return math.exp(nll / max(1, len(data) - 1))


@torch.no_grad()
@torch.no_grad()
def corpus_agreement(target, text, orders=(1, 2, 3, 4), *, windows: int = 12, temperature: float = 0.8,
                     draws: int = 4, seed: int = 0) -> dict:
    """How often the corpus draft of each order chooses the target's byte on held-out text: the target's
    log-softmax at every position of ``windows`` windows of its block size against the draft's
    distribution after the same bytes; ``greedy``: equal argmax; ``gumbel``: equal Gumbel-max at
    ``temperature`` under the same noise (``draws`` draws), the acceptance rule of a Gumbel verify.
    ``text`` is the draft's training text."""
    import numpy as np

    from attnforge.algo.linear.speculative import CorpusDraft

    block = target.cfg.block_size
    val = text["val"][: windows * block].long()
    if val.numel() < block:
        raise ValueError(f"corpus_agreement: {val.numel()} held-out bytes, fewer than one window of {block}")
    lp = []
    for i in range(0, val.numel() - block + 1, block):
        out = target(val[i:i + block][None])
        lp.append(torch.log_softmax((out[0] if isinstance(out, tuple) else out)[0].double(), -1))
    lp = torch.cat(lp)
    data = val[: lp.shape[0]].tolist()
    gen = torch.Generator().manual_seed(seed)
    noise = [-torch.log(-torch.log(torch.rand(lp.shape, generator=gen, dtype=torch.float64).clamp(min=1e-300)))
             for _ in range(draws)]
    target_choice = [(lp / temperature + g).argmax(-1) for g in noise]
    out = {}
    for order in orders:
        draft = CorpusDraft(text["train"], order)
        lq = torch.tensor(np.log(np.stack([draft.distribution(data[max(0, i + 1 - order):i + 1])
                                           for i in range(len(data))])))
        out[str(order)] = {
            "greedy": round(float((lq.argmax(-1) == lp.argmax(-1)).double().mean()), 4),
            "gumbel": round(float(np.mean([((lq / temperature + g).argmax(-1) == t).double().mean()
                                           for g, t in zip(noise, target_choice)])), 4)}
    return {"bytes": lp.shape[0], "temperature": temperature, "draws": draws, "by_order": out}


def call_costs(target, draft, prompt: list[int], reps: int, corpus_draft=None) -> dict:
    """Median microseconds of the calls a decode is made of, measured round-robin (``reps`` rounds):
    the target's step, its verify (``extend``) of T = 1, 3, 5, 9 tokens, the commit of 5, the draft
    model's step, the n-gram draft's proposal of 8 and the corpus draft's proposal of 4 (greedy)."""
    import time

    from attnforge.algo.linear.speculative import NGramDraft

    t_state, _ = target.prefill(torch.tensor([prompt]))
    d_state, _ = draft.prefill(torch.tensor([prompt]))
    tok = torch.tensor([prompt[-1]])
    blocks = {t: torch.tensor([prompt[-t:]]) for t in (1, 3, 5, 9)}
    _, cache5 = target.extend(t_state, blocks[5])
    ngram = NGramDraft(3)
    ngram.start(prompt)
    calls = {"target_step": lambda: target.step(t_state, tok),
             **{f"target_verify_T{t}": (lambda b=b: target.extend(t_state, b)) for t, b in blocks.items()},
             "target_commit_5": lambda: target.commit(t_state, cache5, 5),
             "draft_model_step": lambda: draft.step(d_state, tok),
             "draft_ngram_propose_8": lambda: ngram.propose(prompt, 8)}
    if corpus_draft is not None:
        calls["draft_corpus_propose_4"] = lambda: corpus_draft.propose(prompt, 4, lambda lg, pos: (int(lg.argmax()),
                                                                                                    None))
    times = {name: [] for name in calls}
    for _ in range(reps):
        for name, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    us = {name: round(statistics.median(v) * 1e6, 1) for name, v in times.items()}
    return {"microseconds": us, "relative_to_target_step": {n: round(v / us["target_step"], 3) for n, v in us.items()},
            "reps": reps}


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench", drafts=None) -> Path:
    """Train (or reuse) the target and the draft model, then race sequential against speculative decoding
    for each (draft, k, temperature) row; ``drafts`` limits the rows to those draft kinds (the JSON then
    goes to ``speculative_<kinds>.json``, beside the full run's ``speculative.json``)."""
    from attnforge.algo.linear.data import load_corpus
    from attnforge.algo.linear.speculative import CorpusDraft, ModelDraft, NGramDraft, race
    from attnforge.algo.linear.train import TrainConfig

    unknown = sorted(set(drafts or ()) - {"ngram", "model", "corpus"})
    if unknown:
        raise ValueError(f"drafts {unknown}: the benchmark's drafts are ngram, model, corpus")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if quick:
            corpus = load_corpus(200_000, 20_000)
            tc = TrainConfig(steps=4, batch_size=4, block=64, warmup=2, eval_windows=4)
            target_kw = dict(attention="relu", augment=True, n_layer=1, n_head=2, d_model=32, block_size=64,
                             chunk=8, conv_kernel=3)
            draft_kw = dict(attention="relu", n_layer=1, n_head=2, d_model=16, block_size=64)
            n_prompts, prompt_len, n_new, repeats = 2, 24, 16, 1
            configs = [("ngram", 4, 0.0), ("model", 2, 0.0), ("ngram", 4, 0.8), ("corpus", 4, 0.8)]
        else:
            corpus = load_corpus()
            tc = TrainConfig(steps=300, batch_size=16, block=128, eval_windows=64)
            target_kw = dict(attention="relu", augment=True, n_layer=2, n_head=4, d_model=128, block_size=256,
                             chunk=16, conv_kernel=4)
            draft_kw = dict(attention="relu", n_layer=1, n_head=2, d_model=64, block_size=256)
            n_prompts, prompt_len, n_new, repeats = 6, 64, 128, 3
            configs = [(d, k, t) for t in (0.0, 0.8) for d, k in (("ngram", 4), ("ngram", 8), ("model", 2),
                                                                   ("model", 4), ("corpus", 3), ("corpus", 4))]
        if drafts:
            configs = [c for c in configs if c[0] in drafts]
        cache = None if quick else Path("build/bench/speculative")  # quick: seconds to train, nothing kept
        prompts = held_out_prompts(corpus, n_prompts, prompt_len)
        result = {
            "format": "attnforge.bench/1", "benchmark": "speculative", "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": 1,
                     "python": platform.python_version(), "torch": torch.__version__},
            "quick": quick, "corpus": corpus.meta, "train": tc.__dict__,
            "workload": {"prompts": "held-out windows, see held_out_prompts", "n_prompts": n_prompts,
                         "prompt_len": prompt_len, "n_new": n_new, "repeats": repeats, "seed": 0,
                         "prompt_text": [bytes(p).decode("utf-8", "replace") for p in prompts]},
            "rows": [],
        }
        out_dir = Path(out_dir)
        path = out_dir / ("speculative.json" if not drafts else f"speculative_{'_'.join(sorted(set(drafts)))}.json")
        with tqdm(total=2 + len(configs) * n_prompts, desc="speculative", unit="step") as bar:
            bar.set_postfix_str("train target")
            target, result["target"] = _model(corpus, cache and cache / "target.pt", target_kw, tc)
            bar.update()
            bar.set_postfix_str("train draft")
            draft, result["draft"] = _model(corpus, cache and cache / "draft.pt", draft_kw, tc)
            bar.update()
            # the corpus draft: a byte n-gram model (Witten-Bell, CORPUS_ORDER context bytes) of the training text
            corpus_draft = CorpusDraft(corpus.train, CORPUS_ORDER)
            result["corpus_draft"] = {"order": CORPUS_ORDER, "text_bytes": int(corpus.train.numel()),
                                      "held_out_ppl": round(corpus_draft_ppl(corpus_draft, corpus.val,
                                                                             2_000 if quick else 20_000), 3)}
            if any(c[0] == "corpus" for c in configs):
                result["corpus_draft"]["agreement"] = corpus_agreement(
                    target, {"train": corpus.train, "val": corpus.val}, windows=1 if quick else 12,
                    orders=(1, 2) if quick else (1, 2, 3, 4))
            result["call_costs"] = call_costs(target, draft, prompts[0], 20 if quick else 300, corpus_draft)
            for kind, k, temp in configs:
                runs = []
                for i, prompt in enumerate(prompts):
                    bar.set_postfix_str(f"{kind} k={k} T={temp} prompt {i}")
                    d = {"ngram": lambda: NGramDraft(3), "model": lambda: ModelDraft(draft),
                         "corpus": lambda: corpus_draft}[kind]()
                    r = race(target, d, prompt, n_new, k, temperature=temp, seed=i, repeats=repeats)
                    runs.append({key: r[key] for key in (
                        "identical", "sequential_seconds", "speculative_seconds", "sequential_tokens_per_second",
                        "speculative_tokens_per_second", "speedup", "verifies", "accepted_per_verify",
                        "mean_accepted_per_verify", "tokens_per_verify")}
                        | {"text": bytes(r["tokens"]).decode("utf-8", "replace")})
                    bar.update()
                seq = sum(statistics.median(r["sequential_seconds"]) for r in runs)
                spec = sum(statistics.median(r["speculative_seconds"]) for r in runs)
                tokens = n_new * len(runs)
                result["rows"].append({
                    "draft": kind, "k": k, "temperature": temp, "mode": "greedy" if temp <= 0 else "gumbel",
                    "sequential_tokens_per_second": round(tokens / seq, 1),
                    "speculative_tokens_per_second": round(tokens / spec, 1),
                    "speedup": round(seq / spec, 3),
                    "speedup_per_prompt": [round(r["speedup"], 3) for r in runs],
                    "median_speedup_over_prompts": round(statistics.median(r["speedup"] for r in runs), 3),
                    "mean_accepted_per_verify": round(sum(sum(r["accepted_per_verify"]) for r in runs)
                                                      / sum(r["verifies"] for r in runs), 3),
                    "identical": all(r["identical"] for r in runs), "runs": runs})
                out_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(path, result)  # partial results survive an interruption
        result["best_speedup"] = {kind: max((r["speedup"] for r in result["rows"] if r["draft"] == kind), default=None)
                                  for kind in ("ngram", "model", "corpus")}
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result)
    finally:
        torch.set_num_threads(threads)
    print(f"wrote {path}")
    print("  call costs, relative to a target step:", result["call_costs"]["relative_to_target_step"])
    for r in result["rows"]:
        print(f"  {r['draft']:5} k={r['k']} {r['mode']:6}: {r['sequential_tokens_per_second']} -> "
              f"{r['speculative_tokens_per_second']} tok/s ({r['speedup']}x; per prompt {r['speedup_per_prompt']}), "
              f"{r['mean_accepted_per_verify']} accepted/verify, identical {r['identical']}")
    return path


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="speculative benchmark (also: attnforge bench speculative)")
    ap.add_argument("-o", "--output", default="bench/results")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--drafts", nargs="+", default=None, help="only these draft kinds (ngram, model, corpus)")
    a = ap.parse_args()
    run(Path(a.output), quick=a.quick, drafts=a.drafts,
        command=" ".join(["python -m attnforge.benchmarks.speculative", *sys.argv[1:]]))
