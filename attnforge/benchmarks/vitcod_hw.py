"""ViTCoD accelerator benchmark: RTL cycles, utilization and sparse speedup on DeiT-Tiny-sized heads.

Figures (JSON + PNG under ``bench/results/``), N = 197, d = 64 (DeiT-Tiny heads), M = 8:

* two kinds of mask sets at 90 and 95 % sparsity (and 50/80 % for the synthetic ones):
  ``synthetic`` (``polarized_mask_set``: about half of the kept entries in G global
  columns, the rest spread evenly) and ``real-shaped`` (``real_shaped_mask_set``: G of
  1-10, heavy-tailed sparse rows, as real pruned DeiT masks; docs/vitcod-hw.md);
* on the RTL (Verilator, bit-exact on every head): 4+4 lines at a 256-bit stream and
  (not with ``quick``) 8+8 lines at 512 bits; 12 heads back to back per mask set (loads
  overlapping compute, heads overlapping), cycles per head over the whole run (first command
  to last output beat, so the first head's load counts), ideal cycles, utilization, the
  dense baseline (the same accelerator computing the full 197 x 197 attention, lines
  balanced; measured on the RTL for 4+4) and the speedup, plus the cycle model's
  prediction (exact on every run so far);
* from the cycle model: 4+4 (256-bit) and 8+8, 16+16, 32+32 lines (512-bit; 32+32 is
  the 512-MAC configuration of ViTCoD's published simulator), and the same MACs as
  tiles (``VitcodConfig.tiles``, independent row pipelines), all at 512 bits: 2 x (4+4),
  4 x (4+4), 8 x (4+4), 2 x (8+8), 4 x (8+8), and with a deeper row merger (``merge_depth``, "mD")
  8 x (4+4) m2, 4 x (8+8) m2 and m3; 2 x (4+4) also on the RTL (not with ``quick``);
* ``goals``: issue 14's utilization goals (``GOALS``) per configuration and mask kind (RTL
  rows where there are, else the cycle model's), the best configuration of each, met or not;
* for every row the bandwidth side: the head's stream beats (load cycles) against its
  ideal compute, which of the two bounds the head, and the stream width that would
  carry a head in its ideal compute time;
* the Q/K decoder: one DeiT-Tiny layer (H = 3 heads decoded from Hc = 2 compressed
  heads, 90 % masks) on the 4+4 configuration built with the decoder: data-stream
  bytes per layer against plain Q/K, and the RTL cycles.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run", "measure_rtl", "goals"]

N, D = 197, 64
#: Heads back to back per mask set (one run each): heads overlap, so the benchmark measures runs, and
#: the first head's load (not overlapped) is a twelfth of it.
HEADS = 12
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
REAL_SPARSITIES = (0.9, 0.95)
DENSE_SHARE = 0.5
#: (name, Denser lines, Sparser lines, stream bits, tiles, merge_depth): lines per tile; T tiles of
#: L + L lines have the MACs of one (T L) + (T L) pair; "mD": a row merger of D rows per tile
MODEL_CONFIGS = (("4+4 x 8", 4, 4, 256, 1, 1), ("8+8 x 8", 8, 8, 512, 1, 1), ("16+16 x 8", 16, 16, 512, 1, 1),
                 ("32+32 x 8", 32, 32, 512, 1, 1), ("2x(4+4) x 8", 4, 4, 512, 2, 1), ("4x(4+4) x 8", 4, 4, 512, 4, 1),
                 ("8x(4+4) x 8", 4, 4, 512, 8, 1), ("2x(8+8) x 8", 8, 8, 512, 2, 1), ("4x(8+8) x 8", 8, 8, 512, 4, 1),
                 ("8x(4+4) x 8 m2", 4, 4, 512, 8, 2), ("4x(8+8) x 8 m2", 8, 8, 512, 4, 2),
                 ("4x(8+8) x 8 m3", 8, 8, 512, 4, 3))
RTL_CONFIGS = (("4+4 x 8", 4, 4, 256, 1, 1), ("8+8 x 8", 8, 8, 512, 1, 1), ("2x(4+4) x 8", 4, 4, 512, 2, 1))
#: issue 14's goals at N = 197, d = 64: (key, text, configurations with those MACs and that stream
#: (one pipeline or tiles), sparsity, row field, "min" (value >= limit) or "max" (value <= limit), limit)
GOALS = (("4+4_util_90", "4+4 x 8, 256 b: utilization >= 0.9 at 90 %", ("4+4 x 8",), 0.9, "utilization", "min", 0.9),
         ("8+8_util_90", "8+8 x 8, 512 b: utilization >= 0.85 at 90 %", ("8+8 x 8", "2x(4+4) x 8"), 0.9,
          "utilization", "min", 0.85),
         ("16+16_util_90", "16+16 x 8, 512 b: utilization >= 0.85 at 90 %",
          ("16+16 x 8", "4x(4+4) x 8", "2x(8+8) x 8"), 0.9, "utilization", "min", 0.85),
         ("32+32_util_90", "32+32 x 8, 512 b: utilization >= 0.8 at 90 %",
          ("32+32 x 8", "8x(4+4) x 8", "4x(8+8) x 8", "8x(4+4) x 8 m2", "4x(8+8) x 8 m2", "4x(8+8) x 8 m3"), 0.9,
          "utilization", "min", 0.8),
         ("32+32_bound_95", "32+32 x 8, 512 b: cycles <= 1.3 x max(ideal, load) at 95 %",
          ("32+32 x 8", "8x(4+4) x 8", "4x(8+8) x 8", "8x(4+4) x 8 m2", "4x(8+8) x 8 m2", "4x(8+8) x 8 m3"), 0.95,
          "cycles_over_bound", "max", 1.3))


#: where ``run`` looks for the routed report of the 4+4 x 8 configuration (``attnforge synth vitcod ... -o``)
SYNTH_REPORT = Path("build") / "synth_vitcod" / "ecp5-85k" / "report.json"


def _config(lines: int, dense_lines: int, max_nnz: int, data_width: int = 256, tiles: int = 1, merge_depth: int = 1):
    from attnforge.hw.vitcod import VitcodConfig

    return VitcodConfig(head_dim=D, max_tokens=N, max_nnz=max_nnz, macs=8, dense_lines=dense_lines,
                        sparse_lines=lines - dense_lines, data_width=data_width, tiles=tiles,
                        merge_depth=merge_depth)


def _mask_sets(n_heads: int, quick: bool) -> dict:
    """``{(kind, sparsity): MaskSet}`` of one layer of ``n_heads`` heads each."""
    from attnforge.algo.vitcod.synthetic import polarized_mask_set, real_shaped_mask_set

    synthetic = (0.9,) if quick else SPARSITIES
    real = (0.9,) if quick else REAL_SPARSITIES
    sets = {("synthetic", s): polarized_mask_set(1, n_heads, N, s, DENSE_SHARE, seed=int(s * 100)) for s in synthetic}
    sets.update({("real-shaped", s): real_shaped_mask_set(1, n_heads, N, s, seed=int(s * 100) + 1) for s in real})
    return sets


def _stream_width_needed(cfg, shapes) -> int | None:
    """The narrowest stream (bits, a power of two the configuration allows) whose beats per head
    fit in the heads' ideal compute cycles; None if even 4096 bits do not."""
    from attnforge.errors import ConfigError
    from attnforge.hw.vitcod.cycles import head_beats, ideal_cycles

    ideal = sum(ideal_cycles(cfg, sh) for sh in shapes)
    width = 16
    while width <= 4096:
        try:
            wcfg = dataclasses.replace(cfg, data_width=width)
        except ConfigError:
            width *= 2
            continue
        if sum(head_beats(wcfg, sh) for sh in shapes) <= ideal:
            return width
        width *= 2
    return None


def _bandwidth(cfg, shapes, model_heads) -> dict:
    """Load against compute, means over the run's heads."""
    load = float(np.mean([h["load_cycles"] for h in model_heads]))
    ideal = float(np.mean([h["ideal_cycles"] for h in model_heads]))
    return {"load_cycles": load, "compute_cycles": float(np.mean([h["compute_cycles"] for h in model_heads])),
            "bound_cycles": max(load, ideal), "limited_by": "stream" if load > ideal else "macs",
            "stream_bits": cfg.data_width, "stream_width_needed": _stream_width_needed(cfg, shapes)}


def _slug(name: str) -> str:
    """A configuration's name as part of a build directory name (``2x(4+4) x 8`` -> ``2x4+4``)."""
    return name.split()[0].replace("(", "").replace(")", "")


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
    rtl_c = _per_head(report["heads"])
    ideal = float(np.mean([ideal_cycles(cfg, sh) for sh in shapes[1:]]))
    return {"heads": H, "compressed_heads": HC, "config": dataclasses.asdict(cfg),
            "stream_bytes_per_layer": stream_decoder, "stream_bytes_per_layer_plain_qk": stream_plain,
            "qk_bytes_per_layer": (2 * HC * N * D), "qk_bytes_per_layer_plain": 2 * H * N * D,
            "stream_saving": 1.0 - stream_decoder / stream_plain,
            "cycles": rtl_c, "ideal_cycles": ideal, "utilization": ideal / rtl_c,
            "model_cycles": _per_head(model),
            "per_head_cycles": [h["cycles"] for h in report["heads"]],
            "per_head_model_cycles": [h["cycles"] for h in model],
            "plain_qk_model_cycles": _per_head(plain_model),
            "per_head_plain_qk_model_cycles": [h["cycles"] for h in plain_model],
            "note": "cycles: per head over the run (first command to last output beat / heads; RTL), the layer "
                    "load and the first head's load included. "
                    "plain_qk: the same heads without the decoder, from the cycle model (exact on the RTL runs)"}


def _per_head(per_head):
    """Cycles per head over the whole run: from the first command to the last output beat, over the
    heads (each head's ``cycles`` run from the previous head's last output beat, so they add up to
    the run). Heads overlap, so one head's share of a run is not its own cost: only the run is."""
    return float(np.mean([h["cycles"] for h in per_head]))


def _dense_rtl(cfg8, build_root, n_heads: int) -> float:
    """RTL cycles per head of the dense baseline (full 197 x 197 attention, lines balanced), ``n_heads``
    of them back to back."""
    from attnforge.algo.vitcod.golden import head_params
    from attnforge.formats.csr import CSR
    from attnforge.flows.vitcod import head_for
    from attnforge.hw.vitcod.cycles import dense_baseline_shape

    rng = np.random.default_rng(7)
    heads = []
    for _ in range(n_heads):
        sh = dense_baseline_shape(cfg8, N, N)
        rp = np.arange(N + 1, dtype=np.int32) * (N - sh.g)
        ci = np.tile(np.arange(sh.g, N, dtype=np.int32), N)
        q, k, v = (rng.integers(-128, 128, (N, D)).astype(np.int8) for _ in range(3))
        heads.append(head_for(cfg8, q, k, v, sh.g, CSR(rp, ci, (N, N)), head_params(0.02, 0.02, 0.02, 0.02, D)))
    return _per_head(measure_rtl(cfg8, heads, "vitcod_dense", build_root)["heads"])


def _irregular_run(name, cfg, build_root) -> dict:
    """Irregular heads of real models on the RTL, bit-exact, and the cycle model on them: non-square
    (49 x 196 and 16 x 49, as LeViT's subsampling attention), G = 0 and G = N."""
    from attnforge.algo.vitcod.synthetic import polarized_mask_set, real_shaped_mask_set
    from attnforge.hw.vitcod.cycles import run_cycles
    from attnforge.flows.vitcod import shapes_of

    sets = [real_shaped_mask_set(1, 1, 49, 0.9, nk=196, seed=3), real_shaped_mask_set(1, 1, 16, 0.8, nk=49, seed=4),
            real_shaped_mask_set(1, 1, N, 0.9, seed=5, global_range=(0, 0)),
            polarized_mask_set(1, 1, 64, 0.0, dense_share=1.0, seed=6)]
    heads = [h for i, ms in enumerate(sets) for h in _heads(cfg, ms, seed=100 + i)]
    report = measure_rtl(cfg, heads, f"vitcod_{_slug(name)}_irregular", build_root)
    model = run_cycles(cfg, shapes_of(heads))["heads"]
    rows = [{"nq": m["nq"], "nk": m["nk"], "g": m["g"], "nnz": m["nnz"], "cycles": r["cycles"],
             "model_cycles": m["cycles"]} for r, m in zip(report["heads"], model)]
    return {"config": name, "bit_exact": True, "heads": rows,
            "model_exact": all(r["cycles"] == r["model_cycles"] for r in rows)}


def _row(name, cfg, kind, s, ms, shapes, model, dense_c, source, rtl_report=None) -> dict:
    """One benchmark row: a configuration on one mask set (per head over the whole run)."""
    model_c = _per_head(model["heads"])
    cycles = _per_head(rtl_report["heads"]) if rtl_report else model_c
    ideal = float(np.mean([h["ideal_cycles"] for h in model["heads"]]))
    row = {"config": name, "lines": cfg.lines * cfg.tiles, "tiles": cfg.tiles, "merge_depth": cfg.merge_depth,
           "source": source, "masks": kind, "target_sparsity": s,
           "sparsity": 1.0 - float(ms.keep.mean()), "global_tokens": [int(x) for x in ms.n_global[0]],
           "cycles": cycles, "ideal_cycles": ideal, "utilization": ideal / cycles,
           "dense_baseline_cycles": dense_c, "speedup": dense_c / cycles,
           **_bandwidth(cfg, shapes, model["heads"])}
    row["cycles_over_bound"] = cycles / row["bound_cycles"]
    if rtl_report:
        row.update(model_cycles=model_c, model_error=(model_c - cycles) / cycles,
                   per_head_cycles=[h["cycles"] for h in rtl_report["heads"]],
                   per_head_model_cycles=[h["cycles"] for h in model["heads"]],
                   first_head_cycles_with_load=rtl_report["heads"][0]["cycles"])
    return row


def _model_row(name, cfg, kind, s, ms, dense_c) -> dict:
    """A cycle-model row (a job of the sweep)."""
    from attnforge.formats.masks import head_csr
    from attnforge.hw.vitcod.cycles import HeadShape, run_cycles

    shapes = [HeadShape.from_csr(g, csr.row_ptr, N) for g, csr in (head_csr(ms, 0, h) for h in range(ms.heads))]
    return _row(name, cfg, kind, s, ms, shapes, run_cycles(cfg, shapes), dense_c, "cycle model")


def _rtl_row(name, cfg, kind, s, ms, dense_c, build_root) -> dict:
    """An RTL row (a job of the sweep): the mask set's heads on Verilator, bit-exact, and the cycle
    model beside them. ``dense_c`` None: the caller fills in the RTL dense baseline (another job)."""
    from attnforge.flows.vitcod import shapes_of
    from attnforge.hw.vitcod.cycles import run_cycles

    heads = _heads(cfg, ms, seed=int(s * 1000))
    report = measure_rtl(cfg, heads, f"vitcod_{_slug(name)}_{kind}_s{int(s * 100)}", build_root)
    shapes = shapes_of(heads)
    return _row(name, cfg, kind, s, ms, shapes, run_cycles(cfg, shapes), 1.0 if dense_c is None else dense_c,
                "rtl", report)


def _with_dense(row: dict, dense_c: float) -> dict:
    """``row`` with another dense baseline (the keys stay in their order)."""
    row["dense_baseline_cycles"] = dense_c
    row["speedup"] = dense_c / row["cycles"]
    return row


def sweep(masks: dict, cfgs: dict, rtl_names, build_root, *, rtl_dense: bool = True, extras: bool = True,
          workers: int | None = 1, cluster: str | None = None, progress=None) -> dict:
    """The benchmark's independent runs as jobs of ``attnforge.jobs.run_jobs`` (local processes or a
    Dask cluster): every configuration of ``cfgs`` on every mask set of ``masks`` through the cycle
    model, the ``rtl_names`` configurations on every mask set on the RTL, with ``rtl_dense`` the
    RTL dense baseline of 4+4 x 8 (its RTL rows' speedup is then over it) and, with ``extras``, the
    irregular heads and the decoder layer. The rows come back in the order one process makes them
    (per mask set: the model rows, then the RTL rows), so the JSON does not depend on ``workers``.
    Returns ``rows``, ``dense`` (model), ``dense_rtl``, ``irregular``, ``decoder``."""
    from attnforge.hw.vitcod.cycles import dense_baseline_shape, run_cycles
    from attnforge.jobs import Job, run_jobs

    n_heads = max(ms.heads for ms in masks.values())
    dense = {name: _per_head(run_cycles(cfg, [dense_baseline_shape(cfg, N, N) for _ in range(n_heads)])["heads"])
             for name, cfg in cfgs.items()}
    jobs = []
    if rtl_dense:
        jobs.append(Job("dense rtl 4+4 x 8", _dense_rtl, (cfgs["4+4 x 8"], build_root, n_heads)))
    for (kind, s), ms in masks.items():
        for name in cfgs:
            jobs.append(Job(f"model {name} {kind} {s}", _model_row, (name, cfgs[name], kind, s, ms, dense[name])))
        for name in rtl_names:
            dense_c = None if rtl_dense and name == "4+4 x 8" else dense[name]
            jobs.append(Job(f"rtl {name} {kind} {s}", _rtl_row, (name, cfgs[name], kind, s, ms, dense_c, build_root)))
    if extras:
        jobs += [Job(f"irregular {name}", _irregular_run, (name, cfgs[name], build_root)) for name in rtl_names]
        jobs.append(Job("decoder 4+4 x 8", _decoder_run, (cfgs["4+4 x 8"], masks[("synthetic", 0.9)], build_root)))
    results = dict(zip((j.key for j in jobs), run_jobs(jobs, workers=workers, cluster=cluster, progress=progress)))
    dense_rtl = results["dense rtl 4+4 x 8"] if rtl_dense else None
    rows = []
    for (kind, s), ms in masks.items():
        rows += [results[f"model {name} {kind} {s}"] for name in cfgs]
        for name in rtl_names:
            row = results[f"rtl {name} {kind} {s}"]
            rows.append(_with_dense(row, dense_rtl) if rtl_dense and name == "4+4 x 8" else row)
    return {"rows": rows, "dense": dense, "dense_rtl": dense_rtl,
            "irregular": [results[f"irregular {name}"] for name in rtl_names] if extras else [],
            "decoder": results["decoder 4+4 x 8"] if extras else None}


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench", workers: int | None = 1,
        cluster: str | None = None, synth_report: str | Path | None = None) -> Path:
    """``workers`` / ``cluster``: where the sweep's runs go (``sweep``; one process by default).
    ``synth_report``: the routed ``attnforge synth vitcod`` report of the 4+4 x 8 configuration whose
    Fmax gives the effective throughput [``SYNTH_REPORT``, when it exists]."""
    report_path = Path(synth_report) if synth_report is not None else SYNTH_REPORT
    if synth_report is not None and not report_path.is_file():    # before the sweep, not after it
        raise FileNotFoundError(f"--synth-report {report_path}: no such file (attnforge synth vitcod ... -o DIR "
                                f"writes DIR/report.json)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_root = Path("build") / "bench"
    n_heads = 3 if quick else HEADS
    masks = _mask_sets(n_heads, quick)
    max_nnz = max(int(ms.keep[0].sum(axis=(1, 2)).max()) for ms in masks.values())
    # one build per configuration for the sparse masks and the dense baseline (sparse part N - G per row)
    cfgs = {name: _config(dl + sl, dl, max(max_nnz, N * N), width, tiles, depth)
            for name, dl, sl, width, tiles, depth in MODEL_CONFIGS}
    rtl_configs = RTL_CONFIGS[:1] if quick else RTL_CONFIGS
    with tqdm(desc="vitcod bench", unit="run") as bar:
        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()
        swept = sweep(masks, cfgs, [name for name, *_ in rtl_configs], build_root, rtl_dense=not quick,
                      workers=workers, cluster=cluster, progress=progress)
    rows, dense, irregular, decoder = swept["rows"], swept["dense"], swept["irregular"], swept["decoder"]
    dense_rtl = swept["dense_rtl"]

    result = {
        "benchmark": "vitcod_hw", "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "workload": {"tokens": N, "head_dim": D, "heads_back_to_back": n_heads, "dense_share": DENSE_SHARE,
                     "masks": {"synthetic": "algo/vitcod/synthetic.polarized_mask_set (half the kept entries global)",
                               "real-shaped": "algo/vitcod/synthetic.real_shaped_mask_set (G 1-10, heavy-tailed rows)"},
                     "per_head": "cycles of the run from the first command to the last output beat / heads "
                                 "(loads overlap compute and heads overlap; the first head's load counts)",
                     "utilization": "ideal MAC cycles of the kept entries of all heads / the run's cycles"},
        "configs": {name: dataclasses.asdict(cfg) for name, cfg in cfgs.items()},
        "dense_baseline": {"rtl_cycles_4+4": dense_rtl, "model_cycles": dense},
        "rows": rows,
        "irregular_heads": irregular,
        "decoder": decoder,
        "goals": goals(rows),
    }
    if report_path.is_file():
        result["synthesis_ecp5_85k"] = json.loads(report_path.read_text())
        result["synthesis_report"] = str(report_path)
        result["effective_throughput"] = effective_throughput(rows, result["synthesis_ecp5_85k"], cfgs)
    else:
        result["effective_throughput"] = []
        result["effective_throughput_missing"] = (f"no routed synthesis report at {report_path}: `attnforge synth "
                                                  f"vitcod ... -o {report_path.parent}` or --synth-report FILE")
    path = out_dir / "vitcod_hw.json"
    write_json_atomic(path, result, default=str)
    _plot(rows, out_dir / "vitcod_hw.png")
    return path


def effective_throughput(rows, synth: dict, cfgs: dict, config: str = "4+4 x 8") -> list[dict]:
    """Effective GOPS (issue 15): 2 x MACs x Fmax x utilization, per ``config`` row, with the routed
    Fmax of ``synth`` (``attnforge synth vitcod``'s report of that configuration's lines and MACs;
    its stream width may differ from the benchmark's). Empty without an Fmax."""
    fmax = synth.get("fmax_mhz")
    if not fmax:
        return []
    cfg = cfgs[config]
    built = synth.get("config")
    if built is not None:
        fields = ("macs", "dense_lines", "sparse_lines", "tiles")
        theirs, ours = ({f: c.get(f) for f in fields} for c in (built, dataclasses.asdict(cfg)))
        if theirs != ours:
            raise ValueError(f"the synthesis report is of {theirs}, not of the benchmark's {config} {ours}: "
                             f"its Fmax does not give this configuration's throughput")
    macs = cfg.macs * cfg.lines * cfg.tiles
    return [{"config": row["config"], "masks": row["masks"], "target_sparsity": row["target_sparsity"],
             "source": row["source"], "utilization": row["utilization"], "macs": macs, "fmax_mhz": fmax,
             "gops": 2 * macs * fmax * 1e6 * row["utilization"] / 1e9}
            for row in rows if row["config"] == config]


def goals(rows) -> dict:
    """Issue 14's goals (``GOALS``) against the rows: per goal, each of its configurations' value per
    mask kind (the RTL row where there is one, else the cycle model's), the configuration whose worst
    mask kind is best, and whether that one meets the limit on every mask kind the rows cover."""
    out = {}
    for key, text, names, s, field, sense, limit in GOALS:
        per_config = {}
        for name in names:
            vals = {}
            for r in rows:
                if r["config"] == name and r["target_sparsity"] == s:
                    if r["masks"] not in vals or r["source"] == "rtl":
                        vals[r["masks"]] = {"value": r[field], "source": r["source"]}
            if vals:
                per_config[name] = vals
        if not per_config:
            continue

        def worst(name):
            vs = [v["value"] for v in per_config[name].values()]
            return min(vs) if sense == "min" else max(vs)
        best = (max if sense == "min" else min)(per_config, key=worst)
        out[key] = {"goal": text, "sparsity": s, "field": field, "limit": limit, "per_config": per_config,
                    "best_config": best, "best_worst_value": worst(best),
                    "met": worst(best) >= limit if sense == "min" else worst(best) <= limit}
    return out


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    model = [r for r in rows if r["source"] == "cycle model"]
    for kind, marker in (("synthetic", "o"), ("real-shaped", "s")):
        for s in sorted({r["target_sparsity"] for r in model if r["masks"] == kind}):
            rs = sorted((r for r in model if r["masks"] == kind and r["target_sparsity"] == s), key=lambda r: r["lines"])
            if s in (0.9, 0.95):
                # one pipeline of L + L lines; tiles of 4+4; tiles of 8+8 (lines: of all tiles)
                for per_tile, style, label in ((None, "-", ""), (8, "--", " tiles of 4+4"),
                                               (16, ":", " tiles of 8+8")):
                    pts = [r for r in rs if r.get("merge_depth", 1) == 1 and
                           (r["tiles"] == 1 if per_tile is None
                            else r["tiles"] > 1 and r["lines"] // r["tiles"] == per_tile)]
                    if pts:     # one colour per mask set, one line style per kind of configuration
                        color = f"C{2 * (kind != 'synthetic') + (s == 0.95)}"
                        axes[0].plot([r["lines"] for r in pts], [r["utilization"] for r in pts], marker + style,
                                     color=color, label=f"{kind} {int(s * 100)} %{label}")
                deeper = [r for r in rs if r.get("merge_depth", 1) > 1]
                if deeper:      # tiles with a deeper row merger: points beside their one-row merger line
                    axes[0].plot([r["lines"] for r in deeper], [r["utilization"] for r in deeper], "x",
                                 color=f"C{2 * (kind != 'synthetic') + (s == 0.95)}")
            cfg44 = [r for r in rs if r["config"] == "4+4 x 8"]
            if cfg44:
                axes[1].plot(100 * s, cfg44[0]["speedup"], marker, color="C0" if kind == "synthetic" else "C1")
    for r in rows:
        if r["source"] == "rtl":
            axes[0].plot(r["lines"], r["utilization"], "k+", ms=10)
            if r["config"] == "4+4 x 8":
                axes[1].plot(100 * r["target_sparsity"], r["speedup"], "k+", ms=10)
    axes[0].set_xscale("log", base=2)
    axes[0].axhline(0.9, color="gray", ls="--", lw=0.8)
    axes[0].axhline(0.8, color="gray", ls=":", lw=0.8)
    axes[0].set(xlabel="MAC lines (Denser + Sparser, 8 MACs each)", ylabel="MAC utilization", ylim=(0, 1.05),
                title="N=197, d=64, heads back to back (+: RTL)")
    lim = np.linspace(50, 95, 46)
    axes[1].plot(lim, 1 / (1 - lim / 100), ":", color="gray", label="limit 1/(1 - sparsity)")
    axes[1].set(xlabel="attention sparsity (%)", ylabel="speedup over same-MAC dense",
                title="4+4 x 8 (o synthetic, s real-shaped, +: RTL)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
