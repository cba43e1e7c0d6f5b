"""Host side of the ViTCoD accelerator: a head as command + data beats, and the output back.

Pure numpy (no torch, no amaranth): used by the testbench, ``attnforge vitcod
sim`` and anyone driving the generated Verilog. The stream layout is the one
documented in ``hw/vitcod/accelerator.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .balance import check_sent_globals, globals_as_csr, half_row_pointers, split_rows
from .config import INDEX_WIDTH, VitcodConfig

__all__ = ["HeadJob", "LayerJob", "pack_bytes", "unpack_output"]


def pack_bytes(values: np.ndarray, beat_bytes: int) -> list[int]:
    """int8/uint8 values (flattened, row-major) to beats of ``beat_bytes`` bytes, first byte lowest."""
    raw = np.ascontiguousarray(values).astype(np.int8).view(np.uint8).reshape(-1)
    if raw.size % beat_bytes:
        raw = np.concatenate([raw, np.zeros(beat_bytes - raw.size % beat_bytes, np.uint8)])
    return [int.from_bytes(raw[i:i + beat_bytes].tobytes(), "little") for i in range(0, raw.size, beat_bytes)]


def _pack_u16(values: np.ndarray, beat_bytes: int) -> list[int]:
    raw = np.asarray(values, dtype="<u2").view(np.uint8)
    if raw.size == 0:
        return []
    if raw.size % beat_bytes:
        raw = np.concatenate([raw, np.zeros(beat_bytes - raw.size % beat_bytes, np.uint8)])
    return [int.from_bytes(raw[i:i + beat_bytes].tobytes(), "little") for i in range(0, raw.size, beat_bytes)]


def unpack_output(beats: list[int], nq: int, cfg: VitcodConfig) -> np.ndarray:
    """Output beats of one head to int8 ``[Nq, d]``."""
    need = nq * cfg.words_per_token
    if len(beats) != need:
        raise ValueError(f"{len(beats)} output beats for Nq={nq}, expected {need}")
    raw = b"".join(int(b).to_bytes(cfg.data_bytes, "little") for b in beats)
    # a beat wider than a row (two token rows per data beat) carries one output row in its lower lanes
    return np.frombuffer(raw, dtype=np.int8).reshape(nq, -1)[:, :cfg.head_dim].copy()


def _pack_qk(x: np.ndarray, beat_bytes: int) -> list[int]:
    """Compressed heads ``[Hc, N, d]`` as the layer store takes them: for each beat-sized word
    of each token row, ``Hc`` beats, one per compressed head."""
    return pack_bytes(np.stack([h.reshape(-1, beat_bytes) for h in x], axis=1), beat_bytes)


@dataclass
class LayerJob:
    """A layer's compressed Q and K (int8 ``[Hc, N, d]``, model token order) for the decoder's
    layer store: one ``layer`` command, loaded once for every head of the layer."""

    qc: np.ndarray
    kc: np.ndarray

    def command(self, cfg: VitcodConfig) -> dict:
        if not cfg.decoder:
            raise ValueError("a layer load needs the accelerator built with decoder=True")
        hc = self.qc.shape[0]
        if self.kc.shape[0] != hc or not 1 <= hc <= cfg.decoder_heads:
            raise ValueError(f"compressed Q/K with {self.qc.shape[0]}/{self.kc.shape[0]} heads; the decoder takes "
                             f"1..{cfg.decoder_heads}, the same for Q and K")
        zero = [0] * cfg.decoder_heads
        return dict(nq=self.qc.shape[1], nk=self.kc.shape[1], g=0, nnz=0, exp_mult=0, exp_shift=0, out_mult=0,
                    out_shift=0, layer=1, hc=hc, wq=zero, wk=zero, dq_mult=0, dq_shift=0, dk_mult=0, dk_shift=0)

    def data_beats(self, cfg: VitcodConfig) -> list[int]:
        for name, x in (("qc", self.qc), ("kc", self.kc)):
            if x.ndim != 3 or x.shape[2] != cfg.head_dim:
                raise ValueError(f"layer {name} has shape {x.shape}, expected [Hc, N, {cfg.head_dim}]")
        return _pack_qk(self.qc, cfg.data_bytes) + _pack_qk(self.kc, cfg.data_bytes)

    def matches(self, other: "LayerJob") -> bool:
        return (self.qc.shape == other.qc.shape and self.kc.shape == other.kc.shape
                and np.array_equal(self.qc, other.qc) and np.array_equal(self.kc, other.kc))


@dataclass
class HeadJob:
    """One head as the accelerator takes it (k, v in polarized order; CSR columns in [G, Nk))."""

    q: np.ndarray          # int8 [Nq, d]
    k: np.ndarray          # int8 [Nk, d]
    v: np.ndarray          # int8 [Nk, d]
    g: int
    row_ptr: np.ndarray    # [Nq + 1]
    col_idx: np.ndarray    # [nnz]
    exp_mult: int
    exp_shift: int
    out_mult: int
    out_shift: int
    # Q/K decoder inputs (optional): the layer's compressed heads [Hc, N, d] (model token
    # order), the key order (polarized position -> row of kc; identity if None), this head's
    # decoder weights [Hc] and the (multiplier, shift) of each decoder requantizer. Without
    # them, an accelerator with the decoder gets q and k as a layer of one head, weight 1.
    qc: np.ndarray | None = None
    kc: np.ndarray | None = None
    wq: np.ndarray | None = None
    wk: np.ndarray | None = None
    dq: tuple = (1, 0)
    dk: tuple = (1, 0)
    key_order: np.ndarray | None = None
    # how each row's CSR entries are split between the engines (``hw/vitcod/balance.py``)
    balance: str = "balanced"
    # G' <= G: the global columns sent as global columns; the others go as CSR entries of every
    # row (``balance.globals_as_csr``; same output, other cycles). None: all G of them.
    g_sent: int | None = None

    @property
    def nq(self) -> int:
        return self.q.shape[0]

    @property
    def nk(self) -> int:
        return self.k.shape[0]

    @property
    def nnz(self) -> int:
        """CSR entries of the head's mask (without the global columns sent as CSR entries)."""
        return int(self.col_idx.shape[0])

    def sent(self) -> tuple:
        """``(G', row_ptr, col_idx)`` as the accelerator gets them: ``g_sent`` global columns, the
        mask's other global columns as the first CSR entries of every row."""
        g = int(self.g)
        g_sent = g if self.g_sent is None else check_sent_globals(g, self.g_sent)
        rp, ci = globals_as_csr(g, g_sent, self.row_ptr, self.col_idx)
        return g_sent, rp, ci

    def command(self, cfg: VitcodConfig, **override) -> dict:
        """The ``cmd`` payload (``override`` replaces fields, e.g. to test refusals)."""
        g_sent, _, col_idx = self.sent()
        cmd = dict(nq=self.nq, nk=self.nk, g=g_sent, nnz=int(col_idx.size), exp_mult=int(self.exp_mult),
                   exp_shift=int(self.exp_shift), out_mult=int(self.out_mult), out_shift=int(self.out_shift))
        if cfg.decoder:
            if self.qc is None:  # pass q and k through the decoder unchanged: one head, weight 1, scale 1
                hc, wq, wk = 1, [1], [1]
            else:
                hc, wq, wk = self.qc.shape[0], [int(x) for x in self.wq], [int(x) for x in self.wk]
            if hc > cfg.decoder_heads:
                raise ValueError(f"{hc} compressed heads, the decoder is built for at most {cfg.decoder_heads}")
            pad = [0] * (cfg.decoder_heads - hc)
            cmd.update(layer=0, hc=hc, wq=wq + pad, wk=wk + pad, dq_mult=int(self.dq[0]), dq_shift=int(self.dq[1]),
                       dk_mult=int(self.dk[0]), dk_shift=int(self.dk[1]))
        elif self.qc is not None:
            raise ValueError("this head has compressed Q/K but the accelerator is built with decoder=False")
        cmd.update(override)
        return cmd

    def half_row_pointers(self, cfg: VitcodConfig) -> np.ndarray:
        """The ``2 Nq + 1`` row pointers of the stream: each row's CSR entries split between the engines."""
        g_sent, rp, _ = self.sent()
        return half_row_pointers(rp, split_rows(cfg, g_sent, np.diff(rp), self.balance))

    def data_beats(self, cfg: VitcodConfig) -> list[int]:
        """Every data beat of this head, in stream order."""
        if self.q.shape[1] != cfg.head_dim:
            raise ValueError(f"head has d={self.q.shape[1]}, the accelerator is built for head_dim={cfg.head_dim}")
        b = cfg.data_bytes
        mask = (1 << INDEX_WIDTH) - 1
        pointers = _pack_u16(self.half_row_pointers(cfg) & mask, b)
        col_idx = self.sent()[2]
        if cfg.decoder:
            # Q and K come from the layer store (``layer()``); the stream carries the key order
            order = np.arange(self.nk) if self.key_order is None else np.asarray(self.key_order, np.int64)
            if order.shape != (self.nk,):
                raise ValueError(f"key order of shape {order.shape}, expected ({self.nk},)")
            return (_pack_u16(order & mask, b) + pack_bytes(self.v, b) + pointers
                    + _pack_u16(col_idx & mask, b))
        return (pack_bytes(self.q, b) + pack_bytes(self.k, b) + pack_bytes(self.v, b) + pointers
                + _pack_u16(col_idx & mask, b))

    def layer(self) -> LayerJob:
        """The layer load this head reads its Q and K from (with the decoder)."""
        if self.qc is None:
            return LayerJob(self.q[None], self.k[None])
        return LayerJob(self.qc, self.kc)

    def workload_macs(self) -> int:
        """MACs of this head: scores and P·V on every kept entry."""
        kept = self.nq * int(self.g) + self.nnz
        return 2 * kept * self.q.shape[1]
