"""``attnforge vitcod sim``: run heads of a mask file on the ViTCoD accelerator's RTL, bit for bit.

    attnforge vitcod sim --masks FILE --layer L --head H [--seed S]
                         [--simulator verilator|icarus] [--json OUT] [--tensors FILE] [--all-heads]

Each head runs with seeded random int8 Q/K/V (or the real ones of ``--tensors``,
format ``attnforge.vitcod_head/1``, polarized with the masks' key order), is
compared with the golden model bit for bit, and reports (stable JSON keys):
``bit_exact``, ``cycles``, ``ideal_cycles``, ``utilization``,
``dense_baseline_cycles`` and ``speedup``; with ``--all-heads`` the same keys
for the whole run (every head of the file back to back, loads overlapping
compute) plus ``heads``, a list with each head's figures.

Cycles are RTL cycles from the first command to the last output beat (the
first head's load included). The dense baseline is the cycle model
(``sim/vitcod_cycles.py``, held within 5 % of the RTL by the tests) of the same
accelerator computing the full Nq x Nk attention with its lines balanced.
"""

from __future__ import annotations

import dataclasses
import sys
import uuid
from pathlib import Path

from attnforge.cli import print_json

__all__ = ["register", "simulate_masks"]


def register(subparsers) -> None:
    from attnforge.cli import command_group

    g = command_group(subparsers, "vitcod", "ViTCoD: sparse attention masks, training and the accelerator")
    p = g.add_parser("sim", help="run mask-file heads on the accelerator RTL against the golden model",
                     description=__doc__.split("\n\n")[0])
    p.add_argument("--masks", required=True, help="masks file (attnforge.masks/1)")
    p.add_argument("--layer", type=int, default=0, help="layer of the head [0]")
    p.add_argument("--head", type=int, default=0, help="head [0]")
    p.add_argument("--all-heads", action="store_true", help="every head of the file, back to back")
    p.add_argument("--seed", type=int, default=0, help="seed of the random Q/K/V and scales [0]")
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--tensors", help="real int8 Q/K/V (attnforge.vitcod_head/1) instead of random ones")
    p.add_argument("--decoder", action="store_true",
                   help="decode Q and K on chip: each layer's compressed Q/K are loaded once into the layer store, "
                        "each head sends its key order (needs --tensors with compressed heads)")
    p.add_argument("--json", help="write the JSON report here (default: print it)")
    gen = p.add_argument_group("generator parameters")
    gen.add_argument("--head-dim", type=int, default=None, help="d (default: the tensors' d, else 64)")
    gen.add_argument("--macs", type=int, default=8, help="MACs per line [8]")
    gen.add_argument("--dense-lines", type=int, default=4, help="Denser Engine lines [4]")
    gen.add_argument("--sparse-lines", type=int, default=4, help="Sparser Engine lines [4]")
    gen.add_argument("--data-width", type=int, default=None, help="stream bits per beat (default min(256, 8 d))")
    gen.add_argument("--build-root", default="build/sim", help="RTL build folder [build/sim]")
    p.set_defaults(func=cmd_vitcod_sim)


def simulate_masks(masks_path, *, layer: int = 0, head: int = 0, all_heads: bool = False, seed: int = 0,
                   simulator: str = "verilator", tensors_path=None, decoder: bool = False,
                   head_dim: int | None = None, macs: int = 8, dense_lines: int = 4, sparse_lines: int = 4,
                   data_width: int | None = None, build_root="build/sim") -> dict:
    """The report of ``attnforge vitcod sim`` as a dict (see the module docstring)."""
    import numpy as np

    from attnforge.algo.vitcod.golden import head_inputs, head_params, vitcod_head_golden
    from attnforge.head_tensors import load_head_tensors
    from attnforge.hw.designs import get_design
    from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
    from attnforge.masks import head_csr, load_masks
    from attnforge.sim.runner import run_cocotb
    from attnforge.sim.vitcod_cycles import dense_baseline_shape, run_cycles
    from attnforge.tb.vitcod_jobs import TbHead, head_for, job_from_arrays, save_jobs, shapes_of, tb_head

    ms = load_masks(masks_path)
    tensors = load_head_tensors(tensors_path) if tensors_path else None
    if decoder and (tensors is None or not tensors.has_decoder):
        raise ValueError("--decoder needs --tensors with the compressed Q/K fields (qc, kc, dec_wq, ...)")
    pairs = [(l, h) for l in range(ms.layers) for h in range(ms.heads)] if all_heads else [(layer, head)]
    for l, h in pairs:
        if not (0 <= l < ms.layers and 0 <= h < ms.heads):
            raise ValueError(f"layer {l} head {h} out of range: {masks_path} has {ms.layers} layers and "
                             f"{ms.heads} heads")
    nq, nk = ms.keep.shape[2], ms.keep.shape[3]
    if tensors is not None:
        if (tensors.layers, tensors.heads) != (ms.layers, ms.heads) or tensors.q.shape[2] != nq \
                or tensors.k.shape[2] != nk:
            raise ValueError(f"{tensors_path}: tensors of {tensors.layers} layers x {tensors.heads} heads, "
                             f"Nq={tensors.q.shape[2]}, Nk={tensors.k.shape[2]} do not match {masks_path} "
                             f"({ms.layers} x {ms.heads}, Nq={nq}, Nk={nk})")
        if head_dim is not None and head_dim != tensors.head_dim:
            raise ValueError(f"--head-dim {head_dim} differs from the tensors' d={tensors.head_dim}")
        head_dim = tensors.head_dim
    d = head_dim or 64
    csrs = {(l, h): head_csr(ms, l, h) for l, h in pairs}
    max_nnz = max(1, max(c.nnz for _, c in csrs.values()))
    hc = (tensors.qc.shape[1] if decoder else 2)
    cfg = VitcodConfig(head_dim=d, max_tokens=max(nq, nk), max_nnz=max_nnz, macs=macs, dense_lines=dense_lines,
                       sparse_lines=sparse_lines, data_width=data_width or min(256, 8 * d),
                       decoder=decoder, decoder_heads=hc)

    rng = np.random.default_rng(seed)
    heads: list[TbHead] = []
    for l, h in pairs:
        g, csr = csrs[(l, h)]
        if tensors is not None:
            inp = head_inputs(tensors, l, h, ms.order[l, h], use_decoder=decoder)
            q, k, v, params = inp["q"], inp["k"], inp["v"], inp["params"]
        else:
            q = rng.integers(-128, 128, (nq, d)).astype(np.int8)
            k = rng.integers(-128, 128, (nk, d)).astype(np.int8)
            v = rng.integers(-128, 128, (nk, d)).astype(np.int8)
            sc = rng.uniform(0.01, 0.05, 4)
            params = head_params(sc[0], sc[1], sc[2], sc[3], d)
        if decoder:
            # the layer's compressed Q/K go to the layer store once (before its first head);
            # each head sends its key order and decodes its Q and K on chip
            from attnforge.head_tensors import decoder_requantizers

            job = job_from_arrays(q, k, v, g, csr, params)
            rq, rk = decoder_requantizers(tensors, l, h)
            job.qc, job.kc, job.key_order = tensors.qc[l], tensors.kc[l], ms.order[l, h]
            job.wq, job.wk = tensors.dec_wq[l, h], tensors.dec_wk[l, h]
            job.dq, job.dk = (rq.multiplier, rq.shift), (rk.multiplier, rk.shift)
            first = not heads or heads[-1].info["layer"] != l
            th = tb_head(cfg, job, vitcod_head_golden(q, k, v, g, csr, params), with_layer=first,
                         layer=l, head=h)
        else:
            th = head_for(cfg, q, k, v, g, csr, params, layer=l, head=h)
        heads.append(th)

    design = get_design("vitcod")
    # a job file of this run only: runs side by side (parallel tests, two users) must not share one
    jobs = save_jobs(Path(build_root) / "jobs" / f"vitcod_sim_{Path(masks_path).stem}_{seed}_{uuid.uuid4().hex}.npz",
                     heads)
    try:
        result = run_cocotb(VitcodAccelerator(cfg), top=design.top, config_name=design.config_name(cfg),
                            test_module=design.testbench, simulator=simulator, build_root=build_root, seed=seed,
                            params={"config": dataclasses.asdict(cfg), "jobs": str(jobs.resolve()), "seed": seed})
    finally:
        jobs.unlink(missing_ok=True)
    report = result.report or {"heads": [], "total_cycles": 0}
    model = run_cycles(cfg, shapes_of(heads))
    dense = run_cycles(cfg, [dense_baseline_shape(cfg, nq, nk) for _ in heads])
    per_head = []
    for i, t in enumerate(heads):
        rtl = report["heads"][i]["cycles"] if i < len(report["heads"]) else None
        ideal = model["heads"][i]["ideal_cycles"]
        dense_c = dense["heads"][i]["cycles"]
        per_head.append({"layer": t.info["layer"], "head": t.info["head"], "g": t.info["g"], "nnz": t.info["nnz"],
                         "cycles": rtl, "ideal_cycles": ideal,
                         "utilization": ideal / rtl if rtl else None,
                         "dense_baseline_cycles": dense_c, "speedup": dense_c / rtl if rtl else None,
                         "model_cycles": model["heads"][i]["cycles"]})
    cycles = report.get("total_cycles") or None
    ideal = sum(h["ideal_cycles"] for h in per_head)
    dense_total = dense["total_cycles"]
    out = {
        "masks": str(masks_path), "tensors": str(tensors_path) if tensors_path else None,
        "layer": None if all_heads else layer, "head": None if all_heads else head, "all_heads": all_heads,
        "seed": seed, "simulator": result.simulator, "config": dataclasses.asdict(cfg),
        "bit_exact": result.passed,
        "cycles": cycles, "ideal_cycles": ideal,
        "utilization": ideal / cycles if cycles else None,
        "dense_baseline_cycles": dense_total,
        "speedup": dense_total / cycles if cycles else None,
        "model_cycles": model["total_cycles"],
        "sparsity": 1.0 - float(np.mean([ms.keep[l, h].mean() for l, h in pairs])),
        "build_dir": str(result.build_dir),
        "run_dir": str(result.run_dir),
    }
    if all_heads:
        out["heads"] = per_head
    return out


def cmd_vitcod_sim(args) -> int:
    from attnforge.head_tensors import HeadTensorsError
    from attnforge.masks import MaskFileError

    try:
        report = simulate_masks(args.masks, layer=args.layer, head=args.head, all_heads=args.all_heads,
                                seed=args.seed, simulator=args.simulator, tensors_path=args.tensors,
                                decoder=args.decoder, head_dim=args.head_dim, macs=args.macs,
                                dense_lines=args.dense_lines, sparse_lines=args.sparse_lines,
                                data_width=args.data_width, build_root=args.build_root)
    except (MaskFileError, HeadTensorsError, ValueError, TypeError) as exc:
        print(f"attnforge vitcod sim: {exc}", file=sys.stderr)
        return 2
    print_json(report, args.json)
    if not report["bit_exact"]:
        print(f"RTL and golden model differ; log: {report['run_dir']}/test.log", file=sys.stderr)
        return 1
    return 0
