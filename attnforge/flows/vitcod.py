"""Heads of a mask file on the ViTCoD accelerator's RTL, bit for bit, with cycles and the dense baseline.

``simulate_masks`` is the job behind ``attnforge vitcod sim``: each head runs
with seeded random int8 Q/K/V (or the real ones of a head-tensors file,
polarized with the masks' key order), is compared with the golden model bit for
bit by the testbench, and the report has (stable keys) ``bit_exact``,
``cycles``, ``ideal_cycles``, ``utilization``, ``dense_baseline_cycles`` and
``speedup``, and ``output_digest`` (``attnforge.formats.digest``: SHA-256 of the
RTL's int8 outputs, heads in run order, rows in order), and the stream's side:
``load_cycles`` (data-stream beats, one per cycle), ``bound_cycles`` = max(ideal,
load) and ``limited_by`` (``"stream"`` when loading takes longer than the ideal
compute, else ``"macs"``); with ``all_heads`` the same keys for the whole run (every head of
the file back to back, loads overlapping compute) plus ``heads``, a list with
each head's figures (and its ``compute_cycles``).

Cycles are RTL cycles from the first command to the last output beat (the
first head's load included). The dense baseline is the cycle model
(``hw/vitcod/cycles.py``, exact on the RTL in the tests) of the same
accelerator computing the full Nq x Nk attention with its lines balanced.

The benchmark reaches the testbench's workloads through this module too:
``mask_heads``, ``run_heads`` and the re-exported head builders ``head_for``,
``layer_heads`` and ``shapes_of`` (from ``attnforge.tb.vitcod_jobs``).
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import numpy as np

from attnforge.algo.vitcod.golden import check_head_scales, head_inputs, head_params, vitcod_head_golden
from attnforge.errors import check_int
from attnforge.formats.head_tensors import decoder_requantizers, load_head_tensors
from attnforge.formats.masks import head_csr, load_masks
from attnforge.hw.designs import get_design
from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
from attnforge.hw.vitcod.balance import GLOBAL_COLUMNS
from attnforge.hw.vitcod.cycles import dense_baseline_shape, run_cycles, sent_globals
from attnforge.sim.runner import run_cocotb
from attnforge.tb.vitcod_jobs import TbHead, head_for, job_from_arrays, layer_heads, save_jobs, shapes_of, tb_head

__all__ = ["simulate_masks", "mask_heads", "run_heads", "head_for", "layer_heads", "shapes_of", "GLOBAL_COLUMNS"]


def mask_heads(cfg: VitcodConfig, ms, pairs, *, seed: int = 0, tensors=None, decoder: bool = False,
               g_sent=None) -> list[TbHead]:
    """Testbench heads for the ``(layer, head)`` pairs of mask set ``ms``, with their golden outputs.

    Q/K/V and the softmax scales are seeded random int8 unless ``tensors`` (``HeadTensors``) gives the
    real ones; with ``decoder`` each layer's compressed Q/K are loaded once (before its first head)
    and each head sends its key order and decodes its Q and K on chip. ``g_sent`` (one per pair, or
    None: every head's G): the global columns the host sends as global, the others as CSR entries
    (``hw/vitcod/balance.py``; the same output).
    """
    nq, nk, d = ms.keep.shape[2], ms.keep.shape[3], cfg.head_dim
    rng = np.random.default_rng(seed)
    heads: list[TbHead] = []
    for n, (l, h) in enumerate(pairs):
        g, csr = head_csr(ms, l, h)
        sent = None if g_sent is None else int(g_sent[n])
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
            job = job_from_arrays(q, k, v, g, csr, params)
            job.g_sent = sent
            rq, rk = decoder_requantizers(tensors, l, h)
            job.qc, job.kc, job.key_order = tensors.qc[l], tensors.kc[l], ms.order[l, h]
            job.wq, job.wk = tensors.dec_wq[l, h], tensors.dec_wk[l, h]
            job.dq, job.dk = (rq.multiplier, rq.shift), (rk.multiplier, rk.shift)
            first = not heads or heads[-1].info["layer"] != l
            heads.append(tb_head(cfg, job, vitcod_head_golden(q, k, v, g, csr, params), with_layer=first,
                                 layer=l, head=h))
        else:
            heads.append(head_for(cfg, q, k, v, g, csr, params, g_sent=sent, layer=l, head=h))
    return heads


def run_heads(cfg: VitcodConfig, heads: list[TbHead], *, name: str, simulator: str | None = None,
              build_root="build/sim", seed: int | None = None, build_args=()):
    """Run ``heads`` back to back on the accelerator's RTL through its testbench; the runner's result.

    ``seed`` seeds the simulator's random generator (None: cocotb picks one); the testbench gets 0 then.

    The job file is this run's own (``name`` plus a random suffix): runs side by side (parallel
    tests, two users) never share one, and it is removed afterwards.
    """
    design = get_design("vitcod")
    jobs = save_jobs(Path(build_root) / "jobs" / f"{name}_{uuid.uuid4().hex}.npz", heads)
    try:
        return run_cocotb(VitcodAccelerator(cfg), top=design.top, config_name=design.config_name(cfg),
                          test_module=design.testbench, simulator=simulator, build_root=build_root, seed=seed,
                          build_args=list(build_args),
                          params={"config": dataclasses.asdict(cfg), "jobs": str(jobs.resolve()),
                                  "seed": 0 if seed is None else seed})
    finally:
        jobs.unlink(missing_ok=True)


def simulate_masks(masks_path, *, layer: int = 0, head: int = 0, all_heads: bool = False, seed: int = 0,
                   simulator: str | None = None, tensors_path=None, decoder: bool = False,
                   head_dim: int | None = None, macs: int = VitcodConfig.macs,
                   dense_lines: int = VitcodConfig.dense_lines, sparse_lines: int = VitcodConfig.sparse_lines,
                   data_width: int | None = None, tiles: int = VitcodConfig.tiles,
                   merge_depth: int = VitcodConfig.merge_depth, row_slots: int = VitcodConfig.row_slots,
                   divider_bits: int = VitcodConfig.divider_bits, banks: int = VitcodConfig.banks,
                   build_root="build/sim",
                   global_columns: str = "mask") -> dict:
    """The report of ``attnforge vitcod sim`` as a dict (see the module docstring).

    ``head_dim`` defaults to the tensors' d, else ``VitcodConfig.head_dim``; ``data_width`` to
    ``min(256, 8 * head_dim)``; buffer sizes and the decoder's head count follow from the masks.
    ``global_columns``: ``mask`` sends every head's G global columns as global columns; ``cycles``
    lets the host send only G' <= G of them, the others as CSR entries of every row, G' per head
    chosen with the cycle model (``hw/vitcod/cycles.sent_globals``; the output is the same).
    """
    check_int("--seed", seed, 0)
    if global_columns not in GLOBAL_COLUMNS:
        raise ValueError(f"--global-columns {global_columns!r}: expected one of {', '.join(GLOBAL_COLUMNS)}")
    ms = load_masks(masks_path)
    tensors = load_head_tensors(tensors_path) if tensors_path else None
    if tensors is not None:
        check_head_scales(tensors, tensors_path)
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
    d = VitcodConfig.head_dim if head_dim is None else head_dim
    csrs = [head_csr(ms, l, h) for l, h in pairs]
    max_nnz = max(1, max(csr.nnz for _, csr in csrs))
    hc = tensors.qc.shape[1] if decoder else VitcodConfig.decoder_heads
    cfg = VitcodConfig(head_dim=d, max_tokens=max(nq, nk), max_nnz=max_nnz, macs=macs, dense_lines=dense_lines,
                       sparse_lines=sparse_lines,
                       data_width=min(256, 8 * d) if data_width is None else data_width,
                       decoder=decoder, decoder_heads=hc, tiles=tiles, merge_depth=merge_depth,
                       row_slots=row_slots, divider_bits=divider_bits, banks=banks)
    g_sent = None
    if global_columns == "cycles":
        # the heads as mask_heads sends them (with the decoder, each layer's load before its first head),
        # G' chosen on their shapes; the choice depends on the lines and the stream, not on the buffer
        # sizes, and the index buffer then holds the global columns sent as CSR entries too
        shapes = shapes_of(mask_heads(cfg, ms, pairs, seed=seed, tensors=tensors, decoder=decoder))
        g_sent = [g2 for g2, s in zip(sent_globals(cfg, shapes), shapes) if not s.layer]
        max_nnz = max(1, max(csr.nnz + csr.shape[0] * (g - g2) for (g, csr), g2 in zip(csrs, g_sent)))
        cfg = dataclasses.replace(cfg, max_nnz=max_nnz)
    heads = mask_heads(cfg, ms, pairs, seed=seed, tensors=tensors, decoder=decoder, g_sent=g_sent)
    result = run_heads(cfg, heads, name=f"vitcod_sim_{Path(masks_path).stem}_{seed}", simulator=simulator,
                       build_root=build_root, seed=seed)
    report = result.report or {"heads": [], "total_cycles": 0}
    model = run_cycles(cfg, shapes_of(heads))
    dense = run_cycles(cfg, [dense_baseline_shape(cfg, nq, nk) for _ in heads])
    per_head = []
    for i, t in enumerate(heads):
        rtl = report["heads"][i]["cycles"] if i < len(report["heads"]) else None
        ideal = model["heads"][i]["ideal_cycles"]
        dense_c = dense["heads"][i]["cycles"]
        per_head.append({"layer": t.info["layer"], "head": t.info["head"], "g": t.info["g"],
                         "g_sent": t.info.get("g_sent", t.info["g"]), "nnz": t.info["nnz"],
                         "cycles": rtl, "ideal_cycles": ideal,
                         "utilization": ideal / rtl if rtl else None,
                         "dense_baseline_cycles": dense_c, "speedup": dense_c / rtl if rtl else None,
                         "model_cycles": model["heads"][i]["cycles"],
                         **{k: model["heads"][i][k] for k in ("load_cycles", "compute_cycles", "bound_cycles",
                                                              "limited_by")}})
    cycles = report.get("total_cycles") or None
    ideal = sum(h["ideal_cycles"] for h in per_head)
    load = sum(h["load_cycles"] for h in per_head)
    dense_total = dense["total_cycles"]
    out = {
        "masks": str(masks_path), "tensors": str(tensors_path) if tensors_path else None,
        "layer": None if all_heads else layer, "head": None if all_heads else head, "all_heads": all_heads,
        "seed": seed, "simulator": result.simulator, "config": dataclasses.asdict(cfg),
        "global_columns": global_columns,
        "bit_exact": result.passed,
        "output_digest": report.get("output_digest"),
        "cycles": cycles, "ideal_cycles": ideal,
        "utilization": ideal / cycles if cycles else None,
        "dense_baseline_cycles": dense_total,
        "speedup": dense_total / cycles if cycles else None,
        "model_cycles": model["total_cycles"],
        # the data stream's side: beats of the heads (one per cycle) against their ideal compute
        "load_cycles": load, "bound_cycles": max(ideal, load), "limited_by": "stream" if load > ideal else "macs",
        "sparsity": 1.0 - float(np.mean([ms.keep[l, h].mean() for l, h in pairs])),
        "build_dir": str(result.build_dir),
        "run_dir": str(result.run_dir),
    }
    if all_heads:
        out["heads"] = per_head
    return out
