"""Heads for the ViTCoD accelerator's testbench: random or from files, with golden answers.

A *job file* (npz, internal to the testbench) carries a list of heads with
their command, data beats, expected output (from the golden model,
``attnforge.algo.vitcod.golden``) or expected error bits. The pytest side (or
``attnforge vitcod sim``) writes it; the cocotb testbench replays it on the RTL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnforge.algo.vitcod.golden import HeadParams, decode_qk, head_params, vitcod_head_golden
from attnforge.formats.csr import CSR, dense_to_csr
from attnforge.hw.vitcod.config import ERR_COL_IDX, ERR_LAYER, ERR_ROW_PTR, ERR_SIZE, VitcodConfig
from attnforge.hw.vitcod.cycles import HeadShape
from attnforge.hw.vitcod.host import HeadJob, LayerJob
from attnforge.numfmt import Requantizer

__all__ = ["TbHead", "shapes_of", "random_head", "layer_heads", "job_from_arrays", "bad_head",
           "tb_head", "save_jobs", "load_jobs"]


@dataclass
class TbHead:
    cmd: dict
    beats: list
    expected: np.ndarray | None   # int8 [Nq, d]; None for a refused head
    error: int = 0                # error bits this head raises
    macs: int = 0                 # workload MACs (scores + P·V on kept entries)
    dense_macs: int = 0           # MACs of the same head computed densely (Nq x Nk)
    info: dict = field(default_factory=dict)
    # (decoder) a layer load sent before this head: its command, beats and error bits
    layer_cmd: dict | None = None
    layer_beats: list = field(default_factory=list)
    layer_error: int = 0


def tb_head(cfg: VitcodConfig, job: HeadJob, expected, error: int = 0, *, with_layer: bool = True, **info) -> TbHead:
    """A testbench head from a host job; with the decoder (and ``with_layer``) its layer load goes first."""
    h = TbHead(job.command(cfg), job.data_beats(cfg), expected, error, job.workload_macs(),
               2 * job.nq * job.nk * cfg.head_dim,
               dict(info, nq=job.nq, nk=job.nk, g=int(job.g), nnz=job.nnz, row_nnz=np.diff(job.row_ptr).tolist(),
                    balance=job.balance))
    if job.g_sent is not None and job.g_sent != job.g:
        h.info["g_sent"] = int(job.g_sent)
    if cfg.decoder:
        h.info["hc"] = int(h.cmd["hc"])
        if with_layer:
            lj = job.layer()
            h.layer_cmd, h.layer_beats = lj.command(cfg), lj.data_beats(cfg)
    return h


def job_from_arrays(q, k, v, g: int, csr: CSR, params: HeadParams) -> HeadJob:
    return HeadJob(np.asarray(q, np.int8), np.asarray(k, np.int8), np.asarray(v, np.int8), int(g),
                   np.asarray(csr.row_ptr), np.asarray(csr.col_idx), params.exp.multiplier, params.exp.shift,
                   params.out.multiplier, params.out.shift)


def head_for(cfg: VitcodConfig, q, k, v, g: int, csr: CSR, params: HeadParams, *, balance: str = "balanced",
             g_sent: int | None = None, **info) -> TbHead:
    """A head with its golden output; ``balance``: how the host splits each row's CSR entries between
    the engines, ``g_sent``: how many of the G global columns it sends as global columns, the others
    as CSR entries (``hw/vitcod/balance.py``; the output depends on neither)."""
    job = job_from_arrays(q, k, v, g, csr, params)
    job.balance, job.g_sent = balance, g_sent
    return tb_head(cfg, job, vitcod_head_golden(q, k, v, g, csr, params), **info)


def random_csr(rng, nq: int, nk: int, g: int, sparsity: float, empty_rows: int = 0) -> CSR:
    keep = rng.random((nq, nk - g)) >= sparsity
    if empty_rows:
        keep[rng.choice(nq, size=min(empty_rows, nq), replace=False)] = False
    s = dense_to_csr(keep)
    return CSR(s.row_ptr, s.col_idx + np.int32(g), (nq, nk))


def random_head(cfg: VitcodConfig, rng, *, nq: int, nk: int, g: int, sparsity: float, empty_rows: int = 0,
                compressed_heads: int = 0, balance: str = "balanced", g_sent: int | None = None) -> TbHead:
    """A random head; with ``compressed_heads`` > 0 its Q and K come through the Q/K decoder;
    ``g_sent``: the host sends that many of the G global columns as global (``head_for``)."""
    d = cfg.head_dim
    q = rng.integers(-128, 128, (nq, d)).astype(np.int8)
    k = rng.integers(-128, 128, (nk, d)).astype(np.int8)
    v = rng.integers(-128, 128, (nk, d)).astype(np.int8)
    csr = random_csr(rng, nq, nk, g, sparsity, empty_rows)
    s = rng.uniform(0.01, 0.05, 4)
    params = head_params(s[0], s[1], s[2], s[3] * 0.8, d)
    if not compressed_heads:
        return head_for(cfg, q, k, v, g, csr, params, balance=balance, g_sent=g_sent, sparsity=sparsity)
    return layer_heads(cfg, rng, nq=nq, nk=nk, hc=compressed_heads, specs=[(g, sparsity, empty_rows)],
                       params=params)[0]


def layer_heads(cfg: VitcodConfig, rng, *, nq: int, nk: int, hc: int, specs=(), masks=(), params=None) -> list[TbHead]:
    """Heads of one layer through the Q/K decoder: one random layer of ``hc`` compressed heads
    (loaded before the first head), then a head per ``(g, sparsity, empty_rows)`` of ``specs``
    (a random mask and key order) or per ``(g, csr, key_order)`` of ``masks``, each with its own
    decoder weights, requantizers and V."""
    d = cfg.head_dim
    qc = rng.integers(-128, 128, (hc, nq, d)).astype(np.int8)
    kc = rng.integers(-128, 128, (hc, nk, d)).astype(np.int8)
    heads = []
    todo = [("spec", x) for x in specs] + [("mask", x) for x in masks]
    for n, (what, x) in enumerate(todo):
        wq = rng.integers(-128, 128, hc).astype(np.int8)
        wk = rng.integers(-128, 128, hc).astype(np.int8)
        rq = Requantizer.from_scale(float(rng.uniform(0.5, 2.0)) / (128 * hc))
        rk = Requantizer.from_scale(float(rng.uniform(0.5, 2.0)) / (128 * hc))
        if what == "spec":
            g, sparsity, empty_rows = x
            order = rng.permutation(nk)
            csr = random_csr(rng, nq, nk, g, sparsity, empty_rows)
        else:
            g, csr, order = x
            sparsity = 1.0 - (nq * g + csr.nnz) / (nq * nk)
        q = decode_qk(qc, wq[None], rq)[0]
        k = decode_qk(kc, wk[None], rk)[0][np.asarray(order)]   # polarized key order
        v = rng.integers(-128, 128, (nk, d)).astype(np.int8)
        if params is None or n:
            s = rng.uniform(0.01, 0.05, 4)
            params = head_params(s[0], s[1], s[2], s[3] * 0.8, d)
        job = job_from_arrays(q, k, v, g, csr, params)
        job.qc, job.kc, job.wq, job.wk, job.key_order = qc, kc, wq, wk, np.asarray(order)
        job.dq, job.dk = (rq.multiplier, rq.shift), (rk.multiplier, rk.shift)
        heads.append(tb_head(cfg, job, vitcod_head_golden(q, k, v, g, csr, params), with_layer=n == 0,
                             sparsity=sparsity, layer_head=n))
    return heads


def bad_head(cfg: VitcodConfig, rng, kind: str) -> TbHead:
    """A head the accelerator must refuse: ``size``, ``row_ptr`` or ``col_idx``; with the decoder
    also ``order`` (a key order entry >= Nk), ``layer`` (the loaded layer has another Nq) and
    ``layer_size`` (its layer load is refused, so is the head)."""
    nq = nk = min(cfg.max_tokens, 8)
    d = cfg.head_dim
    q = rng.integers(-128, 128, (nq, d)).astype(np.int8)
    k = rng.integers(-128, 128, (nk, d)).astype(np.int8)
    csr = random_csr(rng, nq, nk, 1, 0.3)
    params = head_params(0.02, 0.02, 0.02, 0.02, d)
    rp, ci = csr.row_ptr.copy(), csr.col_idx.copy()
    ipw, wpt = cfg.indices_per_word, cfg.words_per_token
    if kind == "size":
        job = HeadJob(q, k, k, 1, rp, ci, 1, 1, 1, 1)
        big = cfg.max_tokens + 1
        cmd = job.command(cfg, nq=big)
        qk = -(-nk // ipw) if cfg.decoder else cfg.token_beats(big) + cfg.token_beats(nk)
        n_beats = qk + cfg.token_beats(nk) + -(-(2 * big + 1) // ipw) + -(-job.nnz // ipw)
        beats = [int(x) for x in rng.integers(0, 1 << 31, n_beats)]
        return TbHead(cmd, beats, None, ERR_SIZE, info=dict(kind=kind, nq=big, nk=nk, g=1, nnz=job.nnz,
                                                             row_nnz=[job.nnz] + [0] * (big - 1), hc=1))
    if kind in ("order", "layer", "layer_size"):
        if not cfg.decoder:
            raise ValueError(f"bad head kind {kind!r} needs the decoder")
        job = HeadJob(q, k, k, 1, rp, ci, params.exp.multiplier, params.exp.shift, params.out.multiplier,
                      params.out.shift)
        layer = job.layer()
        if kind == "order":
            job.key_order = np.arange(nk)
            job.key_order[int(rng.integers(0, nk))] = nk + int(rng.integers(0, 3))
        h = tb_head(cfg, job, None, ERR_COL_IDX if kind == "order" else ERR_LAYER, kind=kind)
        if kind == "layer":       # a good layer, but of Nq + 1 query tokens
            other = LayerJob(rng.integers(-128, 128, (1, nq + 1, d)).astype(np.int8), layer.kc)
            h.layer_cmd, h.layer_beats = other.command(cfg), other.data_beats(cfg)
        elif kind == "layer_size":  # a layer of more tokens than the store holds: refused
            big = cfg.max_tokens + 1
            h.layer_cmd = dict(layer.command(cfg), nq=big)
            h.layer_beats = [int(x) for x in rng.integers(0, 1 << 31, (big + nk) * wpt)]
            h.layer_error = ERR_SIZE
        return h
    if kind == "row_ptr":
        r = int(rng.integers(1, nq))
        rp[r] = rp[r - 1] - 1 if rp[r - 1] > 0 else rp[-1] + 1   # decreasing or beyond nnz
        err = ERR_ROW_PTR
    elif kind == "col_idx":
        if ci.size == 0:
            rp[1:] = 1
            ci = np.array([0], np.int32)
        ci[int(rng.integers(0, ci.size))] = int(rng.choice([0, nk, nk + 7]))  # in the global part, or past Nk
        err = ERR_COL_IDX
    else:
        raise ValueError(f"unknown bad head kind {kind!r}")
    job = HeadJob(q, k, k, 1, rp, ci, params.exp.multiplier, params.exp.shift, params.out.multiplier,
                  params.out.shift)
    h = tb_head(cfg, job, None, err, kind=kind)
    h.info["row_nnz"] = [job.nnz] + [0] * (nq - 1)   # refused: no row runs; the nnz still stream in
    return h


def save_jobs(path: str | Path, heads: list[TbHead]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    meta = []
    for n, h in enumerate(heads):
        arrays[f"beats{n}"] = np.array([str(b) for b in h.beats] or [""])  # beats can be wider than int64
        arrays[f"layer_beats{n}"] = np.array([str(b) for b in h.layer_beats] or [""])
        if h.expected is not None:
            arrays[f"expected{n}"] = h.expected
        meta.append(dict(cmd=h.cmd, error=h.error, macs=h.macs, dense_macs=h.dense_macs, info=h.info,
                         has_expected=h.expected is not None, n_beats=len(h.beats), layer_cmd=h.layer_cmd,
                         n_layer_beats=len(h.layer_beats), layer_error=h.layer_error))
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_jobs(path: str | Path) -> list[TbHead]:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        heads = []
        for n, mt in enumerate(meta):
            beats = [int(x) for x in f[f"beats{n}"][:mt["n_beats"]]]
            expected = f[f"expected{n}"] if mt["has_expected"] else None
            layer_beats = [int(x) for x in f[f"layer_beats{n}"][:mt["n_layer_beats"]]]
            heads.append(TbHead(mt["cmd"], beats, expected, mt["error"], mt["macs"], mt["dense_macs"], mt["info"],
                                mt["layer_cmd"], layer_beats, mt["layer_error"]))
    return heads


def shapes_of(heads: list[TbHead]) -> list:
    """The cycle model's view of testbench heads (a head's layer load, if any, first): as the
    accelerator gets them (``g_sent`` of the G global columns as global, the others as CSR entries)."""
    out = []
    for h in heads:
        i = h.info
        if h.layer_cmd is not None:
            c = h.layer_cmd
            out.append(HeadShape(c["nq"], c["nk"], 0, [], hc=c["hc"], good=False, dropped=h.layer_error != 0,
                                 layer=True))
        s = HeadShape(i["nq"], i["nk"], i["g"], list(i["row_nnz"]), hc=i.get("hc", 1),
                      good=h.expected is not None, dropped=i.get("kind") in ("size", "layer", "layer_size"),
                      info={k: v for k, v in i.items() if k not in ("row_nnz", "balance", "g_sent")},
                      balance=i.get("balance", "balanced"))
        out.append(s.with_sent_globals(i["g_sent"]) if "g_sent" in i else s)
    return out
