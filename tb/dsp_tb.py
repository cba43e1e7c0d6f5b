"""cocotb testbench of ``registered_split_product``'s two forms (tb/dsp_probe.py) against Python's product.

Each cycle a new pair goes in; three cycles later both outputs must be the pair's product (Python's
integers: an independent reference). Parameters (``ATTNFORGE_TB_PARAMS``): the operand shapes as
``[width, signed]``, ``exhaustive`` (every pair) or ``pairs`` random pairs after the extremes, ``seed``.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

LATENCY = 3


def _range(width: int, signed: bool) -> tuple[int, int]:
    lo = -(1 << (width - 1)) if signed else 0
    return lo, lo + (1 << width) - 1


def _pairs(params: dict) -> list[tuple[int, int]]:
    (na, sa), (nb, sb) = params["narrow"], params["wide"]
    alo, ahi = _range(na, sa)
    blo, bhi = _range(nb, sb)
    if params.get("exhaustive"):
        return [(a, b) for a in range(alo, ahi + 1) for b in range(blo, bhi + 1)]
    rng = random.Random(params.get("seed", 0))
    edges_a = sorted({alo, ahi, 0, 1, alo + 1, ahi - 1, -1 if sa else 2})
    edges_b = sorted({blo, bhi, 0, 1, blo + 1, bhi - 1, -1 if sb else 2})
    pairs = [(a, b) for a in edges_a for b in edges_b]
    return pairs + [(rng.randint(alo, ahi), rng.randint(blo, bhi)) for _ in range(params["pairs"])]


def _signed(value, width: int) -> int:
    v = int(value)
    return v - (1 << width) if v >> (width - 1) else v


@cocotb.test()
async def products(dut):
    """Both forms give Python's product of every pair, LATENCY cycles after it went in, one pair per cycle."""
    params = json.loads(os.environ["ATTNFORGE_TB_PARAMS"])
    pairs = _pairs(params)
    width = len(dut.portable)
    signed_out = params["narrow"][1] or params["wide"][1]
    read = (lambda s: _signed(s.value, width)) if signed_out else (lambda s: int(s.value))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.narrow.value = 0
    dut.wide.value = 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    wrong = []
    for n in range(len(pairs) + LATENCY):
        if n < len(pairs):
            a, b = pairs[n]
            dut.narrow.value = a
            dut.wide.value = b
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        # after the edge that ended cycle n, the outputs hold the product of pair n - LATENCY + 1
        k = n - LATENCY + 1
        if 0 <= k < len(pairs):
            want = pairs[k][0] * pairs[k][1]
            got = (read(dut.portable), read(dut.instantiated))
            if got != (want, want) and len(wrong) < 10:
                wrong.append(f"{pairs[k][0]} * {pairs[k][1]} = {want}: portable {got[0]}, instantiated {got[1]}")
    assert not wrong, f"{len(pairs)} pairs; first mismatches: " + "; ".join(wrong)
    report = os.environ.get("ATTNFORGE_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"pairs": len(pairs)}, f)
