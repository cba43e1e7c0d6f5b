"""ViTCoD accelerator benchmark: RTL cycles, utilization and sparse speedup on DeiT-Tiny-sized heads.

Figures (JSON + PNG under ``bench/results/``):

* N = 197, d = 64 (DeiT-Tiny heads), 8 lines of 8 MACs (4 Denser + 4 Sparser),
  synthetic polarized masks of 50/80/90/95 % sparsity (about half of the kept
  entries in global columns): RTL cycles per head in steady state (several heads
  back to back, loads overlapping compute), ideal cycles, utilization, the dense
  baseline (the same accelerator computing the full 197 x 197 attention, lines
  balanced, also measured on the RTL) and the speedup; plus the cycle model's
  prediction and its error;
* the configuration of ViTCoD's published simulator (64 lines x 8 MACs), from
  the cycle model only (held within 5 % of the RTL by the tests);
* the Q/K decoder: one DeiT-Tiny layer (H = 3 heads decoded from Hc = 2
  compressed heads, 90 % masks) on the same 8 x 8 configuration built with the
  decoder: data-stream bytes per layer against plain Q/K, and the RTL cycles;
* optionally (not with ``quick``) the ECP5-85k synthesis of a 64-MAC configuration.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run", "measure_rtl"]

N, D = 197, 64
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
DENSE_SHARE = 0.5


def _config(lines: int, dense_lines: int, max_nnz: int, data_width: int = 256):
    from attnforge.hw.vitcod import VitcodConfig

    return VitcodConfig(head_dim=D, max_tokens=N, max_nnz=max_nnz, macs=8, dense_lines=dense_lines,
                        sparse_lines=lines - dense_lines, data_width=data_width)


def _heads(cfg, ms, seed):
    from attnforge.flows.vitcod import mask_heads

    return mask_heads(cfg, ms, [(0, h) for h in range(ms.heads)], seed=seed)


def measure_rtl(cfg, heads, name, build_root) -> dict:
    """Run ``heads`` back to back on Verilator (bit-exact check included); the report's per-head cycles."""
    from attnforge.flows.vitcod import run_heads

    result = run_heads(cfg, heads, name=name, build_root=build_root,
                       build_args=["-CFLAGS", "-O0"])
    if not result.passed:
        raise RuntimeError(f"RTL run {name} failed (not bit-exact or hung); see {result.log}")
    return result.report


def _decoder_run(cfg8, ms, build_root) -> dict:
    """One layer of H = 3 heads from Hc = 2 compressed heads through the decoder's layer store."""
    from attnforge.formats.masks import head_csr
    from attnforge.hw.vitcod.cycles import head_beats, ideal_cycles, run_cycles
    from attnforge.flows.vitcod import layer_heads, shapes_of

    H, HC = 3, 2
    cfg = dataclasses.replace(cfg8, decoder=True, decoder_heads=HC)
    hmasks = []
    for h in range(H):
        g, csr = head_csr(ms, 0, h)
        hmasks.append((g, csr, ms.order[0, h]))
    heads = layer_heads(cfg, np.random.default_rng(11), nq=N, nk=N, hc=HC, masks=hmasks)
    report = measure_rtl(cfg, heads, "vitcod_decoder", build_root)
    shapes = shapes_of(heads)                     # the layer load, then the heads
    model = run_cycles(cfg, shapes)["heads"]
    plain_shapes = [dataclasses.replace(sh, hc=1) for sh in shapes[1:]]   # the same heads, Q/K on the stream
    plain_model = run_cycles(cfg8, plain_shapes)["heads"]
    B = cfg.data_bytes
    stream_decoder = sum(head_beats(cfg, sh) for sh in shapes) * B
    stream_plain = sum(head_beats(cfg8, sh) for sh in plain_shapes) * B
    rtl_c = _steady(report["heads"])
    ideal = float(np.mean([ideal_cycles(cfg, sh) for sh in shapes[2:]]))
    return {"heads": H, "compressed_heads": HC, "config": dataclasses.asdict(cfg),
            "stream_bytes_per_layer": stream_decoder, "stream_bytes_per_layer_plain_qk": stream_plain,
            "qk_bytes_per_layer": (2 * HC * N * D), "qk_bytes_per_layer_plain": 2 * H * N * D,
            "stream_saving": 1.0 - stream_decoder / stream_plain,
            "cycles": rtl_c, "ideal_cycles": ideal, "utilization": ideal / rtl_c,
            "model_cycles": _steady(model),
            "per_head_cycles": [h["cycles"] for h in report["heads"]],
            "per_head_model_cycles": [h["cycles"] for h in model],
            "plain_qk_model_cycles": _steady(plain_model),
            "per_head_plain_qk_model_cycles": [h["cycles"] for h in plain_model],
            "note": "cycles: steady state over heads 2..3 (RTL); the first head's include the layer load. "
                    "plain_qk: the same heads without the decoder, from the cycle model (exact on the RTL runs)"}


def _steady(per_head, key="cycles"):
    """Mean over the heads after the first (whose load is not overlapped)."""
    vals = [h[key] for h in per_head[1:]] or [h[key] for h in per_head]
    return float(np.mean(vals))


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench") -> Path:
    from attnforge.hw.vitcod.cycles import HeadShape, dense_baseline_shape, ideal_cycles, run_cycles
    from attnforge.algo.vitcod.synthetic import polarized_mask_set
    from attnforge.flows.vitcod import shapes_of

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_root = Path("build") / "bench"
    n_heads = 3 if quick else 4
    sparsities = (0.9,) if quick else SPARSITIES
    masks = {s: polarized_mask_set(1, n_heads, N, s, DENSE_SHARE, seed=int(s * 100)) for s in sparsities}
    max_nnz = max(int(ms.keep[0, :, :, :].sum(axis=(1, 2)).max()) for ms in masks.values())
    # one build for the sparse masks and the dense baseline (whose sparse part is N - G per row)
    cfg8 = _config(8, 4, max(max_nnz, N * (N - round(N * 4 / 8))))
    rows = []
    steps = len(sparsities) + 2
    with tqdm(total=steps, desc="vitcod bench", unit="run") as bar:
        # dense baseline on the RTL: the full 197 x 197 attention, lines balanced
        dense_shapes = [dense_baseline_shape(cfg8, N, N) for _ in range(2)]  # steady state = the second
        dense_rtl = None
        if not quick:
            from attnforge.algo.vitcod.golden import head_params
            from attnforge.formats.csr import CSR
            from attnforge.flows.vitcod import head_for

            rng = np.random.default_rng(7)
            dense_heads = []
            for sh in dense_shapes:
                rp = np.arange(N + 1, dtype=np.int32) * (N - sh.g)
                ci = np.tile(np.arange(sh.g, N, dtype=np.int32), N)
                q, k, v = (rng.integers(-128, 128, (N, D)).astype(np.int8) for _ in range(3))
                dense_heads.append(head_for(cfg8, q, k, v, sh.g, CSR(rp, ci, (N, N)),
                                            head_params(0.02, 0.02, 0.02, 0.02, D)))
            dense_rtl = _steady(measure_rtl(cfg8, dense_heads, "vitcod_dense", build_root)["heads"])
        dense_model = _steady(run_cycles(cfg8, dense_shapes)["heads"])
        bar.update()
        for s in sparsities:
            ms = masks[s]
            heads = _heads(cfg8, ms, seed=int(s * 1000))
            report = measure_rtl(cfg8, heads, f"vitcod_s{int(s * 100)}", build_root)
            shapes = shapes_of(heads)
            model = run_cycles(cfg8, shapes)
            rtl_c = _steady(report["heads"])
            model_c = _steady(model["heads"])
            ideal = float(np.mean([ideal_cycles(cfg8, sh) for sh in shapes[1:]]))
            dense_c = dense_rtl if dense_rtl is not None else dense_model
            rows.append({"config": "8 lines x 8 MACs (4 Denser + 4 Sparser)", "source": "rtl",
                         "sparsity": 1.0 - float(ms.keep.mean()), "target_sparsity": s,
                         "global_tokens": [int(x) for x in ms.n_global[0]],
                         "cycles": rtl_c, "ideal_cycles": ideal, "utilization": ideal / rtl_c,
                         "dense_baseline_cycles": dense_c, "speedup": dense_c / rtl_c,
                         "model_cycles": model_c, "model_error": (model_c - rtl_c) / rtl_c,
                         "first_head_cycles_with_load": report["heads"][0]["cycles"]})
            bar.update()
        decoder = _decoder_run(cfg8, masks[0.9], build_root)
        bar.update()
    # ViTCoD's published simulator configuration: 64 lines x 8 MACs, from the cycle model
    cfg64 = _config(64, 32, max(max_nnz, 1))
    dense64 = _steady(run_cycles(cfg64, [dense_baseline_shape(cfg64, N, N) for _ in range(n_heads)])["heads"])
    for s in sparsities:
        from attnforge.formats.masks import head_csr

        shapes = []
        for h in range(masks[s].heads):
            g, csr = head_csr(masks[s], 0, h)
            shapes.append(HeadShape.from_csr(g, csr.row_ptr, N))
        model = run_cycles(cfg64, shapes)
        c = _steady(model["heads"])
        ideal = float(np.mean([ideal_cycles(cfg64, sh) for sh in shapes[1:]]))
        rows.append({"config": "64 lines x 8 MACs (32 Denser + 32 Sparser)", "source": "cycle model",
                     "sparsity": 1.0 - float(masks[s].keep.mean()), "target_sparsity": s,
                     "cycles": c, "ideal_cycles": ideal, "utilization": ideal / c,
                     "dense_baseline_cycles": dense64, "speedup": dense64 / c})

    result = {
        "benchmark": "vitcod_hw", "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "workload": {"tokens": N, "head_dim": D, "heads_back_to_back": n_heads, "dense_share": DENSE_SHARE,
                     "masks": "synthetic polarized (algo/vitcod/synthetic.polarized_mask_set)",
                     "steady_state": "mean cycles per head over heads 2..H (loads overlap compute)"},
        "config_8x8": dataclasses.asdict(cfg8), "config_64x8": dataclasses.asdict(cfg64),
        "dense_baseline": {"rtl_cycles": dense_rtl, "model_cycles": dense_model,
                           "ideal_cycles": 2 * N * N * D / cfg8.total_macs},
        "rows": rows,
        "decoder": decoder,
        "goals": {"utilization_at_90": next((r["utilization"] for r in rows if r["source"] == "rtl"
                                             and r["target_sparsity"] == 0.9), None),
                  "speedup_at_90": next((r["speedup"] for r in rows if r["source"] == "rtl"
                                         and r["target_sparsity"] == 0.9), None)},
    }
    synth_report = Path("build") / "synth_vitcod" / "ecp5-85k" / "report.json"   # attnforge synth vitcod ... -o
    if synth_report.exists():
        result["synthesis_ecp5_85k"] = json.loads(synth_report.read_text())
    path = out_dir / "vitcod_hw.json"
    write_json_atomic(path, result, default=str)
    _plot(rows, out_dir / "vitcod_hw.png")
    return path


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for config in sorted({r["config"] for r in rows}):
        rs = [r for r in rows if r["config"] == config]
        xs = [100 * r["target_sparsity"] for r in rs]
        label = f"{config} ({rs[0]['source']})"
        axes[0].plot(xs, [r["utilization"] for r in rs], "o-", label=label)
        axes[1].plot(xs, [r["speedup"] for r in rs], "o-", label=label)
    lim = np.linspace(50, 95, 46)
    axes[1].plot(lim, 1 / (1 - lim / 100), ":", color="gray", label="limit 1/(1 - sparsity)")
    axes[0].axhline(0.8, color="gray", ls="--", lw=0.8)
    axes[0].set(xlabel="attention sparsity (%)", ylabel="MAC utilization", ylim=(0, 1.05),
                title="N=197, d=64, steady state")
    axes[1].set(xlabel="attention sparsity (%)", ylabel="speedup over same-MAC dense", title="sparse speedup")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
