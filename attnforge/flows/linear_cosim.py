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

__all__ = ["cosim_generate", "stack_configs"]


def stack_configs(ia, macs: int | None = None) -> list[LinearDecodeConfig]:
    """One ``LinearDecodeConfig`` per layer whose format is the layer's shared integer format."""
    from attnforge.algo.linear.int_decode import IntegerDecoder

    dec = IntegerDecoder(ia)
    configs = []
    for layer in range(len(ia.heads)):
        fmt = dec.layer_format(layer)
        m = macs or fmt.d
        if fmt.d % m:
            raise ConfigError(f"--macs {m} must divide the head dimension d={fmt.d}")
        cfg = LinearDecodeConfig(d=fmt.d, macs=m, conv_taps=fmt.conv_taps, max_tokens=fmt.max_tokens, t_max=fmt.t_max,
                                 heads=len(ia.heads[layer]), feature_map=fmt.feature_map,
                                 attn_multiplier=fmt.attn_multiplier, attn_shift=fmt.attn_shift,
                                 conv_multiplier=fmt.conv_multiplier, conv_shift=fmt.conv_shift)
        if cfg.format != fmt:        # the RTL computes exactly the golden model's format
            raise AssertionError(f"layer {layer}: datapath format {cfg.format} != calibrated {fmt}")
        configs.append(cfg)
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
    from attnforge.algo.linear.export import check_hardware_variant
    from attnforge.algo.linear.int_attention import IntegerAttention
    from attnforge.algo.linear.int_decode import GoldenHeads, IntegerDecoder, greedy
    from attnforge.algo.linear.train import evaluate, load_checkpoint

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
    configs = stack_configs(ia, macs)

    build_root = Path(build_root)
    build_root.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(json.dumps([dataclasses.asdict(c) for c in configs], sort_keys=True).encode()).hexdigest()[:10]
    calib_path = (build_root / f"calibration_{tag}.json").resolve()
    tmp = calib_path.with_suffix(f".{time.time_ns()}.tmp")
    tmp.write_text(json.dumps(ia.to_dict()))
    tmp.replace(calib_path)

    t0 = time.perf_counter()
    stack = LinearDecodeStack(LinearStackConfig(tuple(configs)))
    result = run_cocotb(wrap(stack) if wrap else stack, top="linear_stack",
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
        "fmax_mhz": fmax_mhz,
        "fmax_source": fmax_source,
        "tokens_per_second_at_fmax": (fmax_mhz * 1e6 / per_token) if fmax_mhz and per_token else None,
        "instances": "one LinearDecode per layer (LinearDecodeStack), the layer's heads time-multiplexed",
        "configs": [dataclasses.asdict(c) for c in configs],
        "simulator": result.simulator,
        "sim_seconds": round(sim_seconds, 1),
        "log": str(result.log),
        "checkpoint": str(checkpoint),
    }
    if eval_windows:
        fl = evaluate(model, corpus, block, eval_windows)
        with ia.use():
            it = evaluate(model, corpus, block, eval_windows)
        out.update(float_ppl=fl["ppl"], integer_ppl=it["ppl"], ppl_ratio=it["ppl"] / fl["ppl"], eval_windows=eval_windows)
    return out
