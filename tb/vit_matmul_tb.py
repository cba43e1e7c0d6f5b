"""cocotb testbench of the ViT matmul (hw/vit/matmul.py): RTL against the integer golden models, bit for bit.

Expected outputs come from the golden models alone: ``int_ops.linear_acc`` + ``requantize_columns``
(dense and 2:4 layers, one requantizer per output channel; ``linear_acc`` alone for the raw int32
output) and ``algo.tickets.export.sparse_linear_golden`` (unstructured CSR layers, one requantizer
for the layer as a ticket has; ``csr_golden="int_ops"`` takes ``linear_acc`` of the CSR's dense form
instead, which spares the torch import for the short runs of ``make test``). Weights are random
int8, magnitude-pruned to the pattern.

Run through ``attnforge.sim.runner`` (``tests/rtl/test_vit_matmul.py``, ``scripts/vit_matmul_cycles.py``);
the configuration, the seed and an optional ``measure`` layer arrive in ``ATTNFORGE_TB_PARAMS``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from attnforge.formats.csr import CSR, csr_to_dense, dense_to_csr
from attnforge.hw.vit.matmul import VitMatmulConfig, matmul_cycles
from attnforge.int_ops import linear_acc, requantize_columns
from attnforge.numfmt import INT8, IntFormat, Requantizer

from .streams import StreamBench, StreamSink, StreamSource, reset_quiet

MODES = ("dense", "csr", "2:4")


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


def prune(w: np.ndarray, mode: str, sparsity: float) -> np.ndarray:
    """Keep mask of ``w [out, in]``: all (dense), the largest ``1 - sparsity`` of ``|w|`` (csr), or the two
    largest of every four consecutive inputs (2:4; a tail of fewer than four keeps at most two)."""
    if mode == "dense":
        return np.ones(w.shape, bool)
    mag = np.abs(w.astype(np.int64)) * 4096 + np.random.default_rng(0).integers(0, 4096, w.shape)  # ties broken
    keep = np.zeros(w.shape, bool)
    if mode == "csr":
        k = int(round(w.size * (1.0 - sparsity)))
        if k:
            keep.flat[np.argsort(mag, axis=None)[-k:]] = True
        return keep
    for start in range(0, w.shape[1], 4):
        block = mag[:, start:start + 4]
        top = np.argsort(block, axis=1)[:, -min(2, block.shape[1]):]
        np.put_along_axis(keep[:, start:start + 4], top, True, axis=1)
    return keep


def ticket_layer(measure: dict):
    """The CSR of layer ``measure["layer"]`` of the ticket CSR file ``measure["ticket"]``."""
    from attnforge.formats.ticket_csr import load_ticket_csr

    layers, _ = load_ticket_csr(measure["ticket"])
    return layers[measure.get("layer", 0)].csr


class VitMatmulTB:
    """Owns clock, reset, the activation and weight sources and the output sink of one matmul."""

    def __init__(self, dut, *, idle: float, stall: float, seed: int):
        self.cfg = VitMatmulConfig(**_params().get("config", {}))
        self.dut = dut
        rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed + 1)
        self.x_src = StreamSource(dut, "x", self.cfg.x_layout, idle=idle, rng=random.Random(rng.random()))
        self.w_src = StreamSource(dut, "w", self.cfg.w_layout, idle=idle, rng=random.Random(rng.random()))
        self.sink = StreamSink(dut, "o", self.cfg.o_layout, stall=stall, rng=random.Random(rng.random()))
        self.bench = StreamBench(dut.clk, [self.x_src, self.w_src, self.sink])
        self.expected: list[tuple[list, int]] = []     # (lanes, rows valid in the beat)
        self.shape = None
        self.tile_raw = self.cfg.raw                   # this tile's output is the raw int32 sum

    async def reset(self) -> None:
        await reset_quiet(self.dut, (self.x_src, self.w_src, self.sink), cycles=3)

    async def set_shape(self, rows: int, in_f: int, out_f: int, dense: bool) -> None:
        """Drive the tile ports (only between tiles, with nothing in flight: no transfer can be missed
        in the cycle this waits for)."""
        await FallingEdge(self.dut.clk)
        assert not self.x_src.queue and not self.w_src.queue and len(self.sink.received) == len(self.expected)
        self.dut.rows.value, self.dut.in_features.value = rows, in_f
        self.dut.out_features.value, self.dut.dense.value = out_f, int(dense)
        self.shape = (rows, in_f, out_f, dense)
        if self.cfg.raw_port:              # a run-time switch: each tile raw or requantized at random
            self.tile_raw = bool(self.np_rng.integers(2))
            self.dut.raw.value = int(self.tile_raw)

    def random_layer(self, mode: str, sparsity: float = 0.75, *, extreme: bool = False):
        """Random int8 ``x [rows, in]``, magnitude-pruned ``W [out, in]`` (zeros where pruned), keep mask."""
        rows, in_f, out_f, _ = self.shape
        if extreme:
            x = np.full((rows, in_f), INT8.min, np.int64)
            w = np.full((out_f, in_f), INT8.min, np.int64)
        else:
            x = self.np_rng.integers(INT8.min, INT8.max + 1, (rows, in_f))
            w = self.np_rng.integers(INT8.min, INT8.max + 1, (out_f, in_f))
        if mode == "ticket":        # the kept weights of one layer of a ticket CSR file (`attnforge tickets export`)
            csr = ticket_layer(_params()["measure"])
            assert csr.shape == (out_f, in_f), f"ticket layer {csr.shape} != tile {out_f} x {in_f}"
            keep = csr_to_dense(CSR(csr.row_ptr, csr.col_idx, csr.shape))
            return x, csr_to_dense(csr).astype(np.int64), keep
        keep = prune(w, mode, sparsity)
        return x, np.where(keep, w, 0), keep

    def column_settings(self, x, w, bias, shared: bool):
        """A requantizer per column whose output range the column's sums reach, or one for all."""
        cfg = self.cfg
        if self.tile_raw:
            return [None] * w.shape[0]
        span = np.abs(linear_acc(x, w, bias)).max(axis=0) + 1
        if shared:
            span = np.full_like(span, span.max())
        out = []
        for o in range(w.shape[0]):
            mult = int(self.np_rng.integers(1, 1 << cfg.multiplier_width))
            shift = (int(span[o]) * mult).bit_length() - (cfg.out_width - 1) + int(self.np_rng.integers(-2, 3))
            out.append(cfg.requantizer(mult, min(max(shift, 0), 62)))
        return out if not shared else [out[0]] * w.shape[0]

    def random_bias(self, in_f: int, out_f: int, extreme: bool = False):
        # |bias| + |products| < 2**31: the raw int32 output never saturates (the model builder's INT32 check)
        limit = (1 << 31) - 1 - in_f * 128 * 128
        if extreme:
            return np.array([limit if o % 2 else -limit for o in range(out_f)], np.int64)
        scale = self.np_rng.choice([64, 1 << 12, 1 << 20, limit], size=out_f)
        return self.np_rng.integers(-scale, scale + 1)

    def queue_tile(self, mode: str, sparsity: float = 0.75, *, extreme: bool = False) -> dict:
        """Send one tile (activations, then weights) and record the golden model's answer."""
        rows, in_f, out_f, dense = self.shape
        x, w, keep = self.random_layer(mode, sparsity, extreme=extreme)
        bias = self.random_bias(in_f, out_f, extreme)
        rqs = self.column_settings(x, w, bias, shared=(mode in ("csr", "ticket")))
        csr = dense_to_csr(w.astype(np.int8), keep=keep)
        assert (csr_to_dense(csr) == w).all()
        if self.tile_raw:
            y = linear_acc(x, w, bias)
        elif mode in ("csr", "ticket") and _params().get("csr_golden", "tickets") == "tickets":
            from attnforge.algo.tickets.export import sparse_linear_golden   # imports torch: seconds

            y = sparse_linear_golden(csr, x, rqs[0], bias, acc_width=self.cfg.sum_width)
        else:
            y = requantize_columns(linear_acc(x, w, bias), rqs)
        self._send_x(x)
        self._send_w(csr, bias, rqs, dense)
        lanes = self.cfg.lanes
        groups = -(-rows // lanes)
        for o in range(out_f):
            for g in range(groups):
                part = [int(v) for v in y[g * lanes:(g + 1) * lanes, o]]
                self.expected.append((part, len(part)))
        return dict(nnz=[int(k) for k in np.diff(csr.row_ptr)], rows=rows, in_features=in_f)

    def _send_x(self, x) -> None:
        rows, in_f = x.shape
        lanes = self.cfg.lanes
        for g in range(-(-rows // lanes)):
            for i in range(in_f):
                beat = [int(x[r, i]) if r < rows else int(self.np_rng.integers(-128, 128))   # padding: ignored
                        for r in range(g * lanes, (g + 1) * lanes)]
                self.x_src.send(beat)

    def _send_w(self, csr, bias, rqs, dense: bool) -> None:
        cfg = self.cfg
        for o in range(csr.shape[0]):
            lo, hi = int(csr.row_ptr[o]), int(csr.row_ptr[o + 1])
            entries = [(int(csr.values[k]), int(csr.col_idx[k])) for k in range(lo, hi)] or [(0, 0)]
            if dense:      # every input in order; the index is ignored, so send junk
                assert [i for _, i in entries] == list(range(csr.shape[1]))
                entries = [(v, random.Random(o * 7919 + i).randrange(cfg.max_in)) for v, i in entries]
            rq = rqs[o] or Requantizer(0, 0, IntFormat(32), cfg.multiplier_width)
            for n, (value, index) in enumerate(entries):
                last = n == len(entries) - 1
                self.w_src.send({"value": value, "index": index, "last": int(last),
                                 "bias": int(bias[o]) if last else 0,
                                 "multiplier": rq.multiplier if last else 0, "shift": rq.shift if last else 0})

    async def drain(self) -> int:
        beats = self.x_src.sent + len(self.x_src.queue) + self.w_src.sent + len(self.w_src.queue)
        cycles = await self.bench.run_until(
            lambda: self.x_src.done and self.w_src.done and len(self.sink.received) >= len(self.expected),
            max_cycles=80 * (beats + 20) * -(-self.cfg.max_rows // self.cfg.lanes))
        await self.bench.expect_quiet(self.sink, 20)
        self.check()
        return cycles

    def check(self) -> None:
        got = self.sink.received
        assert len(got) == len(self.expected), f"got {len(got)} output beats, expected {len(self.expected)}"
        for n, (beat, (want, valid)) in enumerate(zip(got, self.expected)):
            assert beat[:valid] == want, f"output beat {n}: RTL {beat[:valid]} != golden {want}"


def _start(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())


@cocotb.test()
async def random_tiles_with_idle_and_backpressure(dut):
    """Dense, unstructured CSR and 2:4 tiles of random shapes, back to back; idle input, stalled output."""
    _start(dut)
    p = _params()
    seed = p.get("seed", 0)
    tb = VitMatmulTB(dut, idle=0.0, stall=0.0, seed=seed)
    await tb.reset()
    cfg = tb.cfg
    rng = random.Random(seed + 5)
    for idle, stall in [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.4, 0.6)]:
        tb.x_src.idle = tb.w_src.idle = idle
        tb.sink.stall = stall
        for _ in range(p.get("shapes", 3)):
            mode = rng.choice(MODES)
            rows = rng.choice([1, cfg.max_rows, rng.randint(1, cfg.max_rows)])
            in_f = rng.choice([cfg.max_in, rng.randint(1, cfg.max_in)])
            await tb.set_shape(rows, in_f, rng.randint(1, p.get("max_out", 6)), dense=(mode == "dense"))
            for _ in range(2):          # two tiles of one shape back to back
                tb.queue_tile(mode, rng.choice([0.5, 0.75, 0.9]))
            await tb.drain()


@cocotb.test()
async def empty_columns_and_extreme_sums(dut):
    """A CSR layer with empty columns (bias only); then min*min in every product at max rows and inputs."""
    _start(dut)
    tb = VitMatmulTB(dut, idle=0.2, stall=0.3, seed=_params().get("seed", 0) + 100)
    await tb.reset()
    cfg = tb.cfg
    await tb.set_shape(cfg.max_rows, cfg.max_in, 5, dense=False)
    tb.queue_tile("csr", sparsity=0.97)             # most columns keep nothing
    await tb.drain()
    await tb.set_shape(cfg.max_rows, cfg.max_in, 3, dense=True)
    tb.queue_tile("dense", extreme=True)
    await tb.drain()


@cocotb.test()
async def full_rate_cycles_match_the_model(dut):
    """No idle, no stalls: the cycles from the first activation beat to the last output beat are the model's.
    ``measure`` (rows, in_features, out_features, mode, sparsity; or mode "ticket" with ``ticket``, a ticket
    CSR file, and ``layer``, its index there) picks the layer; the report gives cycles and the model's."""
    _start(dut)
    p = _params()
    tb = VitMatmulTB(dut, idle=0.0, stall=0.0, seed=p.get("seed", 0) + 200)
    await tb.reset()
    cfg = tb.cfg
    meas = p.get("measure") or dict(rows=cfg.max_rows, in_features=cfg.max_in, out_features=4, mode="csr",
                                    sparsity=0.75)
    if meas["mode"] == "ticket":
        meas = dict(meas, out_features=ticket_layer(meas).shape[0], in_features=ticket_layer(meas).shape[1])
    await tb.set_shape(meas["rows"], meas["in_features"], meas["out_features"], dense=(meas["mode"] == "dense"))
    info = tb.queue_tile(meas["mode"], meas.get("sparsity", 0.0))
    await tb.drain()
    measured = tb.sink.transfer_cycles[-1] - tb.x_src.transfer_cycles[0] + 1
    model = matmul_cycles(cfg, info["nnz"], info["rows"], info["in_features"])
    compute = tb.sink.transfer_cycles[-1] - tb.w_src.transfer_cycles[0] + 1
    report = os.environ.get("ATTNFORGE_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({**meas, "nnz": sum(info["nnz"]), "measured_cycles": measured,
                       "measured_weight_phase": compute, "model_cycles": model.total, "load": model.load,
                       "compute": model.compute, "latency": model.latency, "ideal": model.ideal,
                       "ratio": measured / model.ideal if model.macs else None,
                       "utilization": model.ideal / measured}, f)
    assert measured == model.total, f"measured {measured} cycles, the model says {model.total} ({model})"
