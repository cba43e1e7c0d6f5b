"""A linearized LM generating text with every attention step on the decode datapath's RTL
(``attnforge linear generate CHECKPOINT --rtl``; issue 18 item 3).

``cosim_generate`` calibrates the model's integer attention with **one set of scales per layer**
(``IntegerAttention.calibrate(share="layer")``): the datapath's requantizers are generator
parameters, so a layer's heads can share one instance (``heads`` = the model's heads,
time-multiplexed) only if they share the requantizers. One instance per layer
(``LinearDecodeStack``): the layers differ in their scales. It builds that stack, runs
``tb/linear_gen_tb.py`` (greedy decoding of each prompt, the float parts in PyTorch, every
attention step on the RTL and compared with the golden model), and decodes the same prompts with
the same decoder on the golden model here (``int_decode.greedy``): ``tokens_identical`` says
whether the RTL-driven model produced exactly the integer-attention model's tokens.

JSON keys: ``tokens_identical``, ``bit_exact`` (every RTL output equal to the golden model's),
``tokens`` (per prompt), ``text``, ``outputs``, ``mismatches``, ``attention_cycles_per_token``
(all layers' cycles per decoded position: a layer waits for the previous one, as decoding does),
``cycles_per_token_by_layer``, ``ideal_cycles_per_token`` (``heads * d * d / macs`` per layer),
``tokens_per_second_at_fmax`` (with ``fmax_mhz``, whose source is stated), the configurations and
the integer and float held-out perplexities when ``eval_windows`` > 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from attnforge.errors import ConfigError, check_int
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.stack import LinearDecodeStack, LinearStackConfig
from attnforge.sim.runner import run_cocotb

__all__ = ["cosim_generate", "cosim_speculate", "stack_configs"]


def stack_configs(ia, macs: int | None = None, per_head: bool = False) -> list[LinearDecodeConfig]:
    """One ``LinearDecodeConfig`` per layer whose format is the layer's shared integer format (the layer's
    heads time-multiplexed); ``per_head``: one ``heads=1`` configuration per layer and head instead."""
    from attnforge.algo.linear.int_decode import IntegerDecoder

    dec = IntegerDecoder(ia)
    configs = []
    for layer in range(len(ia.heads)):
        fmt = dec.layer_format(layer)
        m = macs or fmt.d
        if fmt.d % m:
            raise ConfigError(f"--macs {m} must divide the head dimension d={fmt.d}")
        cfg = LinearDecodeConfig(d=fmt.d, macs=m, conv_taps=fmt.conv_taps, max_tokens=fmt.max_tokens, t_max=fmt.t_max,
                                 heads=1 if per_head else len(ia.heads[layer]), feature_map=fmt.feature_map,
                                 attn_multiplier=fmt.attn_multiplier, attn_shift=fmt.attn_shift,
                                 conv_multiplier=fmt.conv_multiplier, conv_shift=fmt.conv_shift)
        if cfg.format != fmt:        # the RTL computes exactly the golden model's format
            raise AssertionError(f"layer {layer}: datapath format {cfg.format} != calibrated {fmt}")
        configs += [cfg] * (len(ia.heads[layer]) if per_head else 1)
    return configs


#: Contexts at which the whole model's attention is compared with a softmax KV-cache decoder.
KV_CONTEXTS = (256, 2048, 8192)


def _kv_baseline(configs, per_token):
    """The whole model's attention per token on a softmax KV-cache decoder with the same multipliers per
    layer (``hw/linear/cycles.softmax_kv_cycles`` per head, a model), at ``KV_CONTEXTS``, and the context
    from which the linear datapath (``per_token``, measured on the RTL) needs fewer cycles."""
    from attnforge.hw.linear.cycles import crossover_context, softmax_kv_cycles

    heads = sum(c.heads for c in configs)
    out = {"contexts": list(KV_CONTEXTS),
           "kv_cycles_per_token": [sum(c.heads * softmax_kv_cycles(n, c.d, c.macs) for c in configs)
                                   for n in KV_CONTEXTS],
           "model": "softmax_kv_cycles per head (hw/linear/cycles.py), same 2*macs multipliers per layer"}
    if per_token and len({(c.d, c.macs) for c in configs}) == 1:
        try:
            out["crossover_context"] = crossover_context(per_token / heads, configs[0].d, configs[0].macs)
        except ValueError:
            out["crossover_context"] = None
    return out


def cosim_generate(checkpoint, prompts: list[bytes], tokens: int, corpus, *, simulator: str | None = None,
                   calib_windows: int = 32, eval_windows: int = 0, seed: int = 0, macs: int | None = None,
                   fmax_mhz: float | None = None, fmax_source: str | None = None,
                   build_root: str | Path = "build/cosim", wrap=None) -> dict:
    """Generate ``tokens`` greedy bytes after each prompt on the RTL and on the golden model (module docstring).

    ``wrap``: a function applied to the stack component before it is built (tests: a mutant that
    must fail, e.g. ``tb.mutants.FlipOutputBit(stack, path=("l0", "o", "payload"))``)."""
    from attnforge.algo.linear.int_decode import GoldenHeads, IntegerDecoder, greedy

    model, ia, configs, calib_path, tag = _prepare(checkpoint, prompts, tokens, corpus, calib_windows, eval_windows,
                                                  seed, macs, build_root)
    t0 = time.perf_counter()
    stack = LinearDecodeStack(LinearStackConfig(tuple(configs)))
    result = run_cocotb(wrap(stack) if wrap else stack, top="linear_stack", testcase="generate",
                        config_name=f"linear_stack_{tag}" + (f"_{type(wrap(stack)).__name__}" if wrap else ""),
                        test_module="attnforge.tb.linear_gen_tb",
                        simulator=simulator, build_root=build_root,
                        params={"checkpoint": str(Path(checkpoint).resolve()), "calibration": str(calib_path),
                                "configs": [dataclasses.asdict(c) for c in configs],
                                "prompts": [list(p) for p in prompts], "tokens": tokens})
    sim_seconds = time.perf_counter() - t0
    report = result.report or {}

    decoder = IntegerDecoder(ia)
    reference = [greedy(decoder, list(p), tokens, GoldenHeads(ia).answer) for p in prompts]
    rtl_tokens = report.get("tokens", [])
    positions = report.get("positions", 0)
    by_layer = [c / positions if positions else None for c in report.get("cycles_by_layer", [])]
    per_token = sum(by_layer) if positions and by_layer else None
    ideal = sum(c.heads * c.d * c.d / c.macs for c in configs)
    kv = _kv_baseline(configs, per_token)
    out = {
        "format": "attnforge.linear_cosim/1",
        "tokens_identical": bool(rtl_tokens) and rtl_tokens == reference,
        "bit_exact": result.passed and report.get("mismatches", 1) == 0,
        "prompts": [p.decode("utf-8", "replace") for p in prompts],
        "tokens": rtl_tokens,
        "reference_tokens": reference,
        "text": [bytes(p + bytes(t)).decode("utf-8", "replace") for p, t in zip(prompts, rtl_tokens)],
        "outputs": report.get("outputs"),
        "mismatches": report.get("mismatches"),
        "first_mismatches": report.get("first_mismatches", []),
        "positions": positions,
        "attention_cycles_per_token": per_token,
        "cycles_per_token_by_layer": by_layer,
        "ideal_cycles_per_token": ideal,
        "kv_cache": kv,
        "instances": "one LinearDecode per layer (LinearDecodeStack), the layer's heads time-multiplexed",
    }
    return _finish(out, per_token, fmax_mhz, fmax_source, configs, result, sim_seconds, checkpoint,
                   (model, ia, corpus, eval_windows))


def _prepare(checkpoint, prompts, tokens, corpus, calib_windows, eval_windows, seed, macs, build_root,
             per_head=False):
    """Checks, the model, its layer-shared calibration (written to ``build_root`` as JSON for the testbench),
    the stack's configurations and their tag."""
    from attnforge.algo.linear.export import check_hardware_variant
    from attnforge.algo.linear.int_attention import IntegerAttention
    from attnforge.algo.linear.train import load_checkpoint

    check_int("--tokens", tokens, 1)
    check_int("--calib-windows", calib_windows, 1)
    check_int("--eval-windows", eval_windows, 0)
    check_int("--seed", seed, 0)
    if not prompts or any(not p for p in prompts):
        raise ConfigError("--prompt: give at least one non-empty prompt")
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    check_hardware_variant(model.cfg, str(checkpoint))
    room = model.cfg.block_size
    for p in prompts:
        if len(p) + tokens > room:
            raise ConfigError(f"--prompt {p[:20]!r}... ({len(p)} bytes) + --tokens {tokens} = {len(p) + tokens} "
                              f"positions exceed the model's block_size={room}")
    torch.manual_seed(seed)
    block = model.cfg.block_size
    calib, _ = corpus.batch("train", calib_windows, block, torch.Generator().manual_seed(seed))
    ia = IntegerAttention.calibrate(model, calib, max_tokens=block, share="layer")
    configs = stack_configs(ia, macs, per_head=per_head)

    build_root = Path(build_root)
    build_root.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(json.dumps([dataclasses.asdict(c) for c in configs], sort_keys=True).encode()).hexdigest()[:10]
    calib_path = (build_root / f"calibration_{tag}.json").resolve()
    tmp = calib_path.with_suffix(f".{time.time_ns()}.tmp")
    tmp.write_text(json.dumps(ia.to_dict()))
    tmp.replace(calib_path)
    return model, ia, configs, calib_path, tag


def _perplexities(model, ia, corpus, eval_windows) -> dict:
    from attnforge.algo.linear.train import evaluate

    block = model.cfg.block_size
    fl = evaluate(model, corpus, block, eval_windows)
    with ia.use():
        it = evaluate(model, corpus, block, eval_windows)
    return dict(float_ppl=fl["ppl"], integer_ppl=it["ppl"], ppl_ratio=it["ppl"] / fl["ppl"], eval_windows=eval_windows)


def cosim_speculate(checkpoint, prompts: list[bytes], tokens: int, corpus, *, k: int = 3, draft: str = "ngram",
                    ngram: int = 3, draft_checkpoint=None, simulator: str | None = None, calib_windows: int = 32,
                    eval_windows: int = 0, seed: int = 0, macs: int | None = None, fmax_mhz: float | None = None,
                    fmax_source: str | None = None, build_root: str | Path = "build/cosim", wrap=None) -> dict:
    """Greedy speculative decoding of ``tokens`` bytes after each prompt with every verify block and commit
    on the RTL (``tb/linear_gen_tb.py`` ``speculate``: one datapath instance per layer and head), and the
    same speculative run on the golden model here (``int_decode.run_speculative`` with ``GoldenHeads``).

    JSON keys (beyond ``cosim_generate``'s): ``tokens_identical`` (the RTL run's tokens are the golden
    speculative run's), ``accepted_identical`` (so are its accepted proposals per verify),
    ``matches_sequential`` (the tokens equal the integer model's sequential greedy decoding, which they do
    unless a verify block's floats round differently from single tokens'), ``accepted_per_verify``,
    ``mean_accepted_per_verify``, ``verifies``; ``attention_cycles_per_token``: the generation phase's
    verify windows (layer after layer, a layer's heads on their instances in parallel) and commits, per
    generated token; ``cycles_per_token_by_layer`` (verify windows only) and ``commit_cycles_per_token``;
    ``prefill_cycles`` (the prompts' positions, one token each)."""
    from attnforge.algo.linear.int_decode import GoldenHeads, IntegerDecoder, greedy, run_speculative, speculative
    from attnforge.algo.linear.speculative import make_draft

    check_int("--k", k, 1)
    check_int("--ngram", ngram, 1)
    draft_model = None
    if draft == "model":
        from attnforge.algo.linear.train import load_checkpoint

        if not draft_checkpoint:
            raise ConfigError("--draft model needs a draft checkpoint (the second positional argument)")
        draft_model, _ = load_checkpoint(draft_checkpoint)
        draft_model.eval()
    make_draft(draft, draft_model, ngram=ngram)          # checks the kind before anything is built
    model, ia, configs, calib_path, tag = _prepare(checkpoint, prompts, tokens, corpus, calib_windows, eval_windows,
                                                  seed, macs, build_root, per_head=True)
    decoder = IntegerDecoder(ia)
    t_max = configs[0].t_max
    if k + 1 > t_max:
        raise ConfigError(f"--k {k}: a verify block of {k + 1} tokens exceeds the datapath's t_max={t_max}")

    t0 = time.perf_counter()
    stack = LinearDecodeStack(LinearStackConfig(tuple(configs)))
    result = run_cocotb(wrap(stack) if wrap else stack, top="linear_stack", testcase="speculate",
                        config_name=f"linear_stack_{tag}" + (f"_{type(wrap(stack)).__name__}" if wrap else ""),
                        test_module="attnforge.tb.linear_gen_tb", simulator=simulator, build_root=build_root,
                        params={"checkpoint": str(Path(checkpoint).resolve()), "calibration": str(calib_path),
                                "configs": [dataclasses.asdict(c) for c in configs],
                                "prompts": [list(p) for p in prompts], "tokens": tokens, "k": k, "draft": draft,
                                "ngram": ngram, "draft_checkpoint": str(Path(draft_checkpoint).resolve())
                                if draft_checkpoint else None})
    sim_seconds = time.perf_counter() - t0
    report = result.report or {}

    reference = [run_speculative(speculative(decoder, list(p), tokens, k, make_draft(draft, draft_model, ngram=ngram)),
                                 GoldenHeads(ia)) for p in prompts]
    sequential = [greedy(decoder, list(p), tokens, GoldenHeads(ia).answer) for p in prompts]
    runs = report.get("runs", [])
    rtl_tokens = [r["tokens"] for r in runs]
    accepted = [r["accepted_per_verify"] for r in runs]
    generated = report.get("positions", 0)
    by_layer = [c / generated if generated else None for c in report.get("cycles_by_layer", [])]
    commit = report.get("commit_cycles", 0) / generated if generated else None
    per_token = sum(by_layer) + commit if generated and by_layer else None
    verifies = sum(len(a) for a in accepted)
    out = {
        "format": "attnforge.linear_cosim_speculate/1",
        "tokens_identical": bool(rtl_tokens) and rtl_tokens == [r.tokens for r in reference],
        "accepted_identical": bool(accepted) and accepted == [r.accepted for r in reference],
        "matches_sequential": bool(rtl_tokens) and rtl_tokens == sequential,
        "bit_exact": result.passed and report.get("mismatches", 1) == 0,
        "prompts": [p.decode("utf-8", "replace") for p in prompts],
        "k": k, "draft": draft, "ngram": ngram if draft == "ngram" else None,
        "tokens": rtl_tokens,
        "reference_tokens": [r.tokens for r in reference],
        "sequential_tokens": sequential,
        "accepted_per_verify": accepted,
        "proposed_per_verify": [r["proposed_per_verify"] for r in runs],
        "verifies": verifies,
        "mean_accepted_per_verify": sum(map(sum, accepted)) / verifies if verifies else None,
        "text": [bytes(p + bytes(t)).decode("utf-8", "replace") for p, t in zip(prompts, rtl_tokens)],
        "outputs": report.get("outputs"),
        "mismatches": report.get("mismatches"),
        "first_mismatches": report.get("first_mismatches", []),
        "generated_tokens": generated,
        "attention_cycles_per_token": per_token,
        "cycles_per_token_by_layer": by_layer,
        "commit_cycles_per_token": commit,
        "prefill_cycles": report.get("prefill_cycles"),
        "instances": "one LinearDecode (heads=1) per layer and head: the datapath holds one pending verify block, "
                     "and a speculative verify keeps every head's block pending until the target's acceptance",
    }
    return _finish(out, per_token, fmax_mhz, fmax_source, configs, result, sim_seconds, checkpoint,
                   (model, ia, corpus, eval_windows))


def _finish(out, per_token, fmax_mhz, fmax_source, configs, result, sim_seconds, checkpoint, evaluation) -> dict:
    """The keys both reports share: the clock, configurations, simulator, log; perplexities if asked for."""
    out.update({
        "fmax_mhz": fmax_mhz,
        "fmax_source": fmax_source,
        "tokens_per_second_at_fmax": (fmax_mhz * 1e6 / per_token) if fmax_mhz and per_token else None,
        "configs": [dataclasses.asdict(c) for c in configs],
        "simulator": result.simulator,
        "sim_seconds": round(sim_seconds, 1),
        "log": str(result.log),
        "checkpoint": str(checkpoint),
    })
    model, ia, corpus, eval_windows = evaluation
    if eval_windows:
        out.update(_perplexities(model, ia, corpus, eval_windows))
    return out
