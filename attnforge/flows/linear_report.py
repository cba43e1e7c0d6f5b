"""The report of ``attnforge flow linear``: ``report.md`` and the PNGs beside it.

``write_linear_report(out, opts, results, stage_runs, command, digest_ok=...)`` writes, in ``out``:

* ``report.md``: summary, training, the integer golden model against float per head, the head on the RTL
  (bit exactness, cycles per token against the cycle model), cycles and memory per token against a softmax
  KV-cache decoder with the same multipliers, resources, and per number the command that reproduces it;
* ``training.png`` (training loss), ``head.png`` (a few output channels of the RTL head over the window,
  float and integer), ``kv_cache.png`` (cycles per token against the context length).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from attnforge.formats.atomic import write_text_atomic

from .vitcod_report import _f, _plt, _table

__all__ = ["write_linear_report", "kv_comparison", "CONTEXTS"]

#: Contexts at which the report compares the datapath with a softmax KV-cache decoder of the same multipliers.
CONTEXTS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def kv_comparison(cycles_per_token: float, config: dict, contexts) -> dict:
    """Cycles per token of a softmax KV-cache decoder (``softmax_kv_cycles``, a model) at ``contexts``, the
    context from which the datapath is faster, and the sizes in bytes of one head's state (``S``, and ``z``
    when normalized) and of a KV cache."""
    from attnforge.hw.linear.cycles import crossover_context, softmax_kv_cycles
    from attnforge.linear_format import LinearDecodeFormat

    d, macs = config["d"], config["macs"]
    fmt = LinearDecodeFormat(d=d, max_tokens=config["max_tokens"], t_max=config["t_max"],
                             feature_map=config["feature_map"])
    state_bits = d * d * fmt.state_format.width
    if fmt.feature_map == "relu_norm":
        state_bits += d * fmt.normalizer_format.width
    try:
        cross = crossover_context(cycles_per_token, d, macs)
    except ValueError:
        cross = None
    return {"contexts": list(contexts), "kv_cycles": [softmax_kv_cycles(L, d, macs) for L in contexts],
            "crossover_context": cross, "state_bytes": -(-state_bits // 8),
            "kv_bytes": [2 * L * d for L in contexts]}


def _plot_training(tr: dict, out: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    steps, loss = zip(*tr["log"]) if tr["log"] else ((), ())
    ax.plot(steps, loss, lw=0.8, label="training loss (batch)")
    ax.axhline(tr["held_out"]["loss"], color="r", ls="--", lw=0.8, label=f"held-out {tr['held_out']['loss']:.3f}")
    ax.set(xlabel="step", ylabel="cross-entropy (nats per byte)", title="training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=90)
    plt.close(fig)
    return "training.png"


def _plot_head(ex: dict, out: Path) -> str:
    import numpy as np

    plt = _plt()
    fl, gd = np.asarray(ex["trace"]["float"]), np.asarray(ex["trace"]["golden"])
    fig, axes = plt.subplots(1, fl.shape[1], figsize=(3 * fl.shape[1], 2.6), squeeze=False)
    for c, ax in enumerate(axes[0]):
        ax.plot(fl[:, c], lw=1.2, label="float model")
        ax.plot(gd[:, c], lw=0.8, ls="--", label="integer (= RTL)")
        ax.set(title=f"channel {c}", xlabel="token")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "head.png", dpi=90)
    plt.close(fig)
    return "head.png"


def _plot_kv(kv: dict, cycles: float, out: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.loglog(kv["contexts"], kv["kv_cycles"], "o-", ms=3, label="softmax over a KV cache (model)")
    ax.axhline(cycles, color="g", label=f"linear decode datapath (RTL): {cycles:g}")
    if kv["crossover_context"]:
        ax.axvline(kv["crossover_context"], color="grey", ls=":", lw=0.8)
    ax.set(xlabel="context length (tokens)", ylabel="cycles per token", title="decode cost per token, same MACs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "kv_cache.png", dpi=90)
    plt.close(fig)
    return "kv_cache.png"


def write_linear_report(out, opts, results: dict, stage_runs: dict, command: str, *, digest_ok: bool) -> Path:
    """Write ``report.md`` and its PNGs into ``out``; the report's path."""
    out = Path(out)
    tr, ex, vl, sim, sy = (results[k] for k in ("train", "export", "verilog", "sim", "synth"))
    cfg = vl["config"]
    kv = kv_comparison(sim["cycles_per_token"], cfg, CONTEXTS)
    _plot_training(tr, out)
    _plot_head(ex, out)
    _plot_kv(kv, sim["cycles_per_token"], out)
    ch = ex["chosen"]
    exact = bool(sim["bit_exact"]) and digest_ok
    res = ("skipped (--no-synth)" if sy.get("skipped") else
           f"{sy['luts']:,} LUT4, {sy['ffs']:,} FF, {sy['dsp']} DSP, {sy['bram']} block RAM ({sy['device']}, Yosys)")
    fmax = ("not run (add `--pnr`)" if not sy.get("pnr")
            else _f(sy.get("fmax_mhz"), "{:.1f} MHz") + f" (target {sy.get('target_mhz')} MHz)")
    L = [f"# Linear decode flow report (preset `{opts.preset}`)", "",
         f"A byte-level LM ({opts.layers} layer(s), {opts.heads} heads, width {opts.d_model}, context "
         f"{opts.block}) trained on the Python standard library's sources with the attention the decode datapath "
         f"computes: ReLU feature map, normalized (`{ex['feature_map']}`), over all earlier tokens, plus a causal "
         f"depthwise convolution of {opts.conv_kernel} taps over v; no chunk-local softmax term. Every head's "
         f"attention on a held-out window of {ex['tokens']} bytes was quantized to int8 and run through the "
         f"integer golden model; layer {opts.layer} head {opts.head} also ran on the generated datapath "
         f"(d = {cfg['d']}, {cfg['macs']} MACs).", "",
         f"Made by `{command}`; the commands that reproduce each number are under [Reproduce](#reproduce).", "",
         "## Summary", ""]
    L += _table(["", ""], [
        ["held-out loss / perplexity (float)", f"{tr['held_out']['loss']:.3f} nats / {tr['held_out']['ppl']:.2f}"],
        ["held-out perplexity with every head in the datapath's integers",
         f"{ex['integer_attention']['integer_ppl']:.3f} (float {ex['integer_attention']['float_ppl']:.3f}: "
         f"{100 * (ex['integer_attention']['ppl_ratio'] - 1):+.2f} %)"],
        ["integer golden model vs float, this head", f"{100 * ch['rel_rms_err']:.2f} % RMS of the output "
                                                     f"({ch['rms_err_lsb']:.2f} LSB RMS, {ch['max_err_lsb']:.2f} "
                                                     f"LSB max)"],
        ["tokens on the RTL, bit exact against the golden model",
         f"**{sim['tokens']} of {sim['tokens']}** ({sim['simulator']})" if exact else
         f"**NO** (testbench: {'pass' if sim['bit_exact'] else 'FAIL'}, digest against the export stage's golden "
         f"output: {'equal' if digest_ok else 'DIFFERENT'}; log: {sim['run_dir']}/test.log)"],
        ["Verilog lint (verilator -Wall)", "clean" if vl["lint_clean"] else "**PROBLEMS**"],
        ["cycles per token (RTL, steady state)",
         f"{_f(sim['cycles_per_token'], '{:g}')} (cycle model {_f(sim['model_cycles_per_token'], '{:g}')}, "
         f"ideal {sim['ideal_cycles_per_token']:g}; utilization {_f(sim['utilization'], '{:.3f}')})"],
        ["faster than a softmax KV-cache decoder with the same MACs (a model)",
         "at every context length" if kv["crossover_context"] == 1 else
         f"from a context of {kv['crossover_context']} tokens" if kv["crossover_context"] else "not up to 2^20"],
        ["state per head", f"{kv['state_bytes']:,} bytes at any context (KV cache: {2 * cfg['d']} bytes per token)"],
        ["resources", res], ["Fmax", fmax],
    ])
    L += ["", "Sample (greedy, prompt `def `):", "", "```", tr["sample"], "```", ""]
    L += ["## Training", "", "![training](training.png)", "",
          f"{opts.steps} steps of {opts.batch_size} x {opts.block} bytes, {tr['params']:,} parameters.", ""]
    L += ["## Integer golden model against float", "",
          "Per head: q, k, v and the conv taps quantized to int8 (`max|x| / 127` per tensor), the output to int8 "
          "(`max|float output| / 127`), the two requantizers from those scales (`algo/linear/export.py`); error "
          "of the integer output (dequantized) against the float head output on the same window.", ""]
    L += _table(["layer", "head", "RMS error (% of output RMS)", "RMS error (LSB)", "max error (LSB)",
                 "saturated outputs"],
                [[h["layer"], h["head"], f"{100 * h['rel_rms_err']:.2f}", f"{h['rms_err_lsb']:.2f}",
                  f"{h['max_err_lsb']:.2f}", h["saturated"]] for h in ex["heads"]])
    L += ["", f"Layer {opts.layer} head {opts.head}, the first four channels over the window:", "",
          "![head](head.png)", ""]
    L += ["## Cycles against a KV cache", "", "![kv](kv_cache.png)", "",
          f"The datapath needs {sim['cycles_per_token']:g} cycles per token at any context (measured on the RTL); "
          "a softmax decoder with the same multipliers over a KV cache on chip needs `2 ceil(L d / 2M)` + a fixed "
          "latency (`hw/linear/cycles.py`, a model, not RTL) and `2 L d` bytes of cache.", ""]
    L += _table(["context L", "KV-cache cycles per token (model)", "KV cache bytes", "linear: cycles", "state bytes"],
                [[c, f"{k:g}", f"{b:,}", f"{sim['cycles_per_token']:g}", f"{kv['state_bytes']:,}"]
                 for c, k, b in zip(kv["contexts"], kv["kv_cycles"], kv["kv_bytes"])])
    L += ["", "## Reproduce", "", "From the repository root with `.venv/bin/` first on `PATH`:", "", "```sh",
          f"{command}"]
    L += ["# perplexity with integer attention (every head)",
          ex["integer_attention"]["command"].format(lm=shlex.quote(str(out / "lm.pt")))]
    for name, what in (("train", "the model, held-out loss"), ("export", "int8 tensors of the RTL head"),
                       ("verilog", "Verilog + lint"), ("sim", "bit exactness, cycles per token"),
                       ("synth", "resources" + (", Fmax" if sy.get("pnr") else ""))):
        L += [f"# {what}", results[name]["command"]]
    L += ["```", "", "## Stages", ""]
    L += _table(["stage", "this run", "time when it ran"],
                [[k, "cached" if v["cached"] else "ran", f"{v['first_seconds']:.1f} s"] for k, v in stage_runs.items()])
    L += [""]
    return write_text_atomic(out / "report.md", "\n".join(L))
