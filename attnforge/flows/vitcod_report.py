"""The report of ``attnforge flow vitcod``: ``report.md`` and the PNGs beside it, readable without any JSON.

``write_report(out, opts, results, stage_runs, command)`` takes the stages' results
(``attnforge.flows.vitcod_flow``) and writes, in ``out``:

* ``report.md``: summary, accuracy, masks (a picture per head), cycles per layer
  and head against the cycle model and the dense baseline, resources, and per
  number the command that reproduces it;
* ``accuracy.png`` (accuracy per stage and the training curves), ``cycles.png``
  (cycles, utilization and speedup per head), ``masks/l<L>_h<H>.png`` (one
  polarized mask per head) and ``masks.png`` (all heads in one picture).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnforge.formats.atomic import write_text_atomic

__all__ = ["write_report"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _head_picture(plt, ax, ms, l, h):
    keep = ms.keep[l, h][:, ms.order[l, h]]
    g = int(ms.n_global[l, h])
    ax.imshow(keep, cmap="Greys", interpolation="nearest")
    if g:
        ax.axvline(g - 0.5, color="r", lw=0.8)
    ax.set_title(f"L{l} H{h}: G={g}, {100 * (1 - keep.mean()):.1f} % sparse", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_masks(ms, out: Path) -> list[list[str]]:
    """One PNG per head (``masks/l<L>_h<H>.png``) and ``masks.png``; the per-head paths, [layer][head]."""
    plt = _plt()
    (out / "masks").mkdir(parents=True, exist_ok=True)
    paths = []
    for l in range(ms.layers):
        row = []
        for h in range(ms.heads):
            fig, ax = plt.subplots(figsize=(2.4, 2.5))
            _head_picture(plt, ax, ms, l, h)
            fig.tight_layout()
            rel = f"masks/l{l}_h{h}.png"
            fig.savefig(out / rel, dpi=80)
            plt.close(fig)
            row.append(rel)
        paths.append(row)
    fig, axes = plt.subplots(ms.layers, ms.heads, figsize=(2.2 * ms.heads, 2.3 * ms.layers), squeeze=False)
    for l in range(ms.layers):
        for h in range(ms.heads):
            _head_picture(plt, axes[l][h], ms, l, h)
    fig.suptitle("polarized masks: rows = queries, columns = keys, global keys left of the red line", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "masks.png", dpi=80)
    plt.close(fig)
    return paths


def plot_accuracy(results: dict, out: Path) -> str:
    plt = _plt()
    m, ft, tr = results["masks"], results["finetune"], results["train"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    names = ["dense", "masks, before\nfine-tuning", "masks, after\nfine-tuning"]
    values = [m["accuracy_dense"], m["accuracy_masked"], ft["accuracy_after"]]
    bars = a.bar(names, values, color=["#4c72b0", "#dd8452", "#55a868"])
    for bar, v in zip(bars, values):
        a.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.1f} %", ha="center", va="bottom", fontsize=8)
    a.set(ylabel="validation accuracy (%)", ylim=(0, 105),
          title=f"accuracy at {100 * m['sparsity']:.1f} % attention sparsity")
    hist = [(r["epoch"], r["val_accuracy"]) for r in tr["history"]]
    n = len(hist)
    if hist:
        b.plot(*zip(*hist), "o-", ms=3, label="dense training")
    ft_hist = [(n + r["epoch"], r["val_accuracy"]) for r in ft["history"]]
    if ft_hist:
        b.plot(*zip(*([(n, ft["accuracy_before"])] + ft_hist)), "o-", ms=3, label="fine-tuning with masks")
    b.set(xlabel="epoch", ylabel="validation accuracy (%)", title="training")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=90)
    plt.close(fig)
    return "accuracy.png"


def plot_cycles(sim: dict, out: Path) -> str:
    plt = _plt()
    heads = sim["heads"]
    labels = [f"L{r['layer']}H{r['head']}" for r in heads]
    x = np.arange(len(heads))
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(8, 0.6 * len(heads) + 4), 3.6))
    a.bar(x - 0.27, [r["dense_baseline_cycles"] for r in heads], 0.27, label="dense baseline (same MACs)",
          color="#bbbbbb")
    a.bar(x, [r["cycles"] or 0 for r in heads], 0.27, label="RTL", color="#4c72b0")
    a.bar(x + 0.27, [r["ideal_cycles"] for r in heads], 0.27, label="ideal (kept MACs / MACs)", color="#55a868")
    a.plot(x, [r["model_cycles"] for r in heads], "k_", ms=12, label="cycle model")
    top = max(max(r["dense_baseline_cycles"], r["cycles"] or 0) for r in heads)
    a.set(xticks=x, ylabel="cycles per head", title="cycles per head (heads back to back)", ylim=(0, 1.75 * top))
    a.set_xticklabels(labels, rotation=90, fontsize=7)
    a.legend(fontsize=7, loc="upper right")
    b.bar(x, [r["speedup"] or 0 for r in heads], color="#dd8452")
    b.set(xticks=x, ylabel="speedup vs dense", title="speedup (bars) and utilization (line)")
    b.set_xticklabels(labels, rotation=90, fontsize=7)
    c = b.twinx()
    c.plot(x, [r["utilization"] or 0 for r in heads], "o-", color="#4c72b0", ms=3)
    c.set(ylabel="utilization", ylim=(0, 1.05))
    fig.tight_layout()
    fig.savefig(out / "cycles.png", dpi=90)
    plt.close(fig)
    return "cycles.png"


def _f(v, fmt="{:,}"):
    return "—" if v is None else fmt.format(v)


def _table(header, rows) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _layer_rows(sim):
    by_layer = {}
    for r in sim["heads"]:
        by_layer.setdefault(r["layer"], []).append(r)
    rows = []
    for l, hs in sorted(by_layer.items()):
        cyc = sum(r["cycles"] or 0 for r in hs)
        ideal = sum(r["ideal_cycles"] for r in hs)
        dense = sum(r["dense_baseline_cycles"] for r in hs)
        model = sum(r["model_cycles"] for r in hs)
        rows.append([l, len(hs), _f(cyc), _f(model), _f(ideal, "{:,.0f}"), f"{ideal / cyc:.3f}" if cyc else "—",
                     _f(dense),
                     f"{dense / cyc:.2f}x" if cyc else "—"])
    return rows


def _sections(opts, results, stage_runs, command, mask_paths) -> list[str]:
    tr, m, ft, ex = results["train"], results["masks"], results["finetune"], results["export"]
    vl, sim, sy = results["verilog"], results["sim"], results["synth"]
    mdl, cfg = tr["model"], vl["config"]
    exact_model = all(r["cycles"] == r["model_cycles"] for r in sim["heads"])
    res = ("skipped (--no-synth)" if sy.get("skipped") else
           f"{sy['luts']:,} LUT4, {sy['ffs']:,} FF, {sy['dsp']} DSP, {sy['bram']} block RAM ({sy['device']}, "
           "Yosys)")
    fmax = ("not run (add `--pnr`: nextpnr place and route, minutes to an hour)" if not sy.get("pnr")
            else _f(sy.get("fmax_mhz"), "{:.1f} MHz") + f" (target {sy.get('target_mhz')} MHz)")
    L = [f"# ViTCoD flow report (preset `{opts.preset}`)", "",
         f"A ViT trained on scikit-learn's digits ({mdl['depth']} layer(s) x {mdl['heads']} heads, "
         f"{mdl['tokens']} tokens, head dim {mdl['head_dim']}), its attention pruned to "
         f"{100 * opts.sparsity:.0f} % sparsity and polarized (ViTCoD), fine-tuned, exported to int8, and every "
         f"head run on the generated accelerator ({cfg['dense_lines']} Denser + {cfg['sparse_lines']} Sparser "
         f"lines x {cfg['macs']} MACs = {vl['total_macs']} MACs, {cfg['data_width']}-bit stream).", "",
         f"Made by `{command}`; every number below has the command that reproduces it under "
         "[Reproduce](#reproduce).", "", "## Summary", ""]
    L += _table(["", ""], [
        ["accuracy, dense", f"{m['accuracy_dense']:.2f} %"],
        [f"accuracy with the {100 * m['sparsity']:.1f} % masks, before fine-tuning", f"{m['accuracy_masked']:.2f} %"],
        ["accuracy after fine-tuning with the masks", f"**{ft['accuracy_after']:.2f} %**"],
        ["heads on the RTL, bit exact against the golden model",
         (f"**{sim['n_heads']} of {sim['n_heads']}** ({sim['simulator']})" if sim["bit_exact"] else
          f"**NO: the RTL differs from the golden model** ({sim['n_heads']} heads, {sim['simulator']}; "
          f"log: {sim['run_dir']}/test.log)")],
        ["Verilog lint (verilator -Wall)", "clean" if vl["lint_clean"] else "**PROBLEMS**"],
        ["cycles, all heads back to back (RTL)", f"{_f(sim['cycles'])} (cycle model {_f(sim['model_cycles'])}"
                                                 f"{', exact' if sim['cycles'] == sim['model_cycles'] else ''})"],
        ["utilization (ideal / RTL cycles)", _f(sim["utilization"], "{:.3f}")],
        ["speedup vs dense with the same MACs", f"**{_f(sim['speedup'], '{:.2f}')}x** (dense: "
                                                f"{_f(sim['dense_baseline_cycles'])} cycles)"],
        ["resources", res],
        ["Fmax", fmax],
    ])
    L += ["", "## Accuracy", "", "![accuracy](accuracy.png)", ""]
    L += _table(["model", "validation accuracy", "command"], [
        [f"dense, {opts.epochs} epoch(s) ({tr['train_images']} training, {tr['val_images']} validation images)",
         f"{m['accuracy_dense']:.2f} %", "train + masks (`--eval`)"],
        [f"masks at {100 * m['sparsity']:.2f} % (threshold {m['threshold']:.4f}, mean G {m['mean_n_global']:.2f}),"
         " no fine-tuning", f"{m['accuracy_masked']:.2f} %", "masks (`--eval`)"],
        [f"masks, fine-tuned {opts.ft_epochs} epoch(s)", f"{ft['accuracy_after']:.2f} %", "finetune"],
    ])
    L += ["", "Sparsity per layer: " + ", ".join(f"{100 * s:.1f} %" for s in m["per_layer_sparsity"]) + ".", "",
          f"The int8 head tensors (validation image {ex['image_index']}, digit {ex['label']}) through the integer "
          f"golden model differ from the float model by at most {ex['max_err_lsb_float_model']:.2f} output LSB "
          f"({ex['max_err_lsb_same_inputs']:.2f} LSB against float softmax on the same int8 inputs).", ""]
    L += ["## Masks", "",
          "Each head's mask in the polarized key order: a black dot is a kept (query, key) entry; the global "
          "keys, left of the red line, run on the Denser Engine for every query, the rest on the Sparser Engine "
          "as CSR.", ""]
    heads = len(mask_paths[0])
    L += _table(["layer"] + [f"head {h}" for h in range(heads)],
                [[l] + [f"![L{l}H{h}]({p})" for h, p in enumerate(row)] for l, row in enumerate(mask_paths)])
    L += ["", "All heads in one picture: [masks.png](masks.png); per-head statistics: "
          "[masks.report.png](masks.report.png).", ""]
    L += ["## Cycles", "", "![cycles](cycles.png)", "",
          "RTL cycles per head with all heads back to back (a head's load overlaps the previous head's compute; "
          "the first head's load is counted), the cycle model (`hw/vitcod/cycles.py`), the ideal cycles (the kept "
          "entries' MACs / the configuration's MACs), utilization = ideal / RTL, and the dense baseline: the same "
          f"accelerator computing the full {mdl['tokens']} x {mdl['tokens']} attention (cycle model, lines "
          "balanced); speedup = dense / RTL.", ""]
    L += _table(["layer", "head", "G", "sparse nnz", "RTL cycles", "cycle model", "ideal", "utilization",
                 "dense baseline", "speedup"],
                [[r["layer"], r["head"], r["g"], _f(r["nnz"]), _f(r["cycles"]), _f(r["model_cycles"]),
                  _f(r["ideal_cycles"], "{:,.0f}"), _f(r["utilization"], "{:.3f}"), _f(r["dense_baseline_cycles"]),
                  _f(r["speedup"], "{:.2f}x")] for r in sim["heads"]])
    L += ["", "Per layer:", ""]
    L += _table(["layer", "heads", "RTL cycles", "cycle model", "ideal", "utilization", "dense baseline",
                 "speedup"], _layer_rows(sim))
    L += ["", f"The cycle model is {'exact on every head' if exact_model else 'NOT exact on every head'}. "
          f"Every output beat of every head was compared with the golden model by the testbench: "
          f"{'all equal' if sim['bit_exact'] else 'MISMATCHES, see ' + sim['run_dir'] + '/test.log'} "
          f"(output digest `{(sim.get('output_digest') or '')[:16]}`).", ""]
    L += ["## Resources", ""]
    if sy.get("skipped"):
        L += ["Synthesis was skipped (`--no-synth`).", ""]
    else:
        L += _table(["device", "LUT4", "FF (of them the pin shell's)", "DSP", "block RAM", "Fmax"],
                    [[sy["device"], _f(sy["luts"]), f"{sy['ffs']:,} ({sy['shell_ffs']})", sy["dsp"], sy["bram"],
                      fmax]])
        L += ["", "Yosys's counts before nextpnr packs them (inside a two-pin shell, `fpga/shell.py`)"
              + ("; Fmax from nextpnr." if sy.get("pnr") else "; `--pnr` adds place and route and Fmax."), ""]
    L += ["## Reproduce", "",
          "The flow calls the library functions these commands call, with the same arguments; from the "
          "repository root with `.venv/bin/` first on `PATH` (training is deterministic for one machine and "
          "thread count):", "", "```sh", f"{command}   # everything, into {opts_out(results)}"]
    for name, what in (("train", "dense accuracy (with masks: `--eval`)"),
                       ("masks", "masks, sparsity, accuracy dense and before fine-tuning"),
                       ("finetune", "accuracy after fine-tuning"), ("export", "int8 head tensors, golden check"),
                       ("verilog", "Verilog + lint"), ("sim", "bit exactness, cycles, utilization, speedup"),
                       ("synth", "resources" + (", Fmax" if sy.get("pnr") else ""))):
        L += [f"# {what}", results[name]["command"]]
    L += ["```", ""]
    if opts.preset != "full":
        L += ["The full-size run (the 4-layer model of docs/vitcod-algo.md, 40 + 5 epochs, 4 + 4 lines): "
              "`attnforge flow vitcod --preset full --out build/flow/vitcod-full` (add `--pnr` for Fmax).", ""]
    L += ["## Stages", ""]
    L += _table(["stage", "this run", "time when it ran"],
                [[k, "cached" if v["cached"] else "ran", f"{v['first_seconds']:.1f} s"]
                 for k, v in stage_runs.items()])
    L += ["", "A rerun skips the cached stages (`stages/<stage>.json` holds each one's inputs hash); "
          "`--from STAGE` runs that stage and every stage that depends on it again.", ""]
    return L


def opts_out(results) -> str:
    return results.get("_out", "this folder")


def write_report(out, opts, results: dict, stage_runs: dict, command: str) -> Path:
    """Write ``report.md`` and its PNGs into ``out``; the report's path."""
    from attnforge.formats.masks import load_masks

    out = Path(out)
    ms = load_masks(out / "masks.npz")
    mask_paths = plot_masks(ms, out)
    plot_accuracy(results, out)
    if results["sim"]["heads"]:
        plot_cycles(results["sim"], out)
    text = "\n".join(_sections(opts, {**results, "_out": f"{out}/"}, stage_runs, command, mask_paths))
    return write_text_atomic(out / "report.md", text)
