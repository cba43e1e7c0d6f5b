"""cocotb testbench of the board top (``hw/board/top.py``): the host driver's own code
(``BoardClient``, ``run_packets`` in ``hw/board/protocol.py``) talks to the simulated board through
cocotbext-uart (``UartSource`` into ``uart_rx``, ``UartSink`` on ``uart_tx``) at the clock / ``divisor``
baud rate: the protocol, the UART, the bridge and the AXI-wrapped accelerator end to end.

Parameters (``ATTNFORGE_TB_PARAMS``): ``design``, ``config`` (the dataclass's fields),
``axis_width`` (linear), ``divisor`` (clock cycles per UART bit), ``job`` (a
``BoardJob`` JSON file, ``tb/board_jobs.py``), ``timeout_cycles`` (a response's time limit),
``read_params`` (read the ``param_*`` registers; default true), ``fast_clock_ns``
(the accelerator's clock period; the UART's is 10 ns).

* ``board_run``: ``run_packets`` on the job; the report (``ATTNFORGE_REPORT``)
  holds the output packets (hex), the registers and counters read over the
  UART, and the frames sent. The host compares the outputs with the golden model.
* ``bad_frames_get_error_responses``: a frame with a corrupted CRC (BAD_CRC,
  nothing executed), an unknown command (BAD_CMD), a frame cut short
  (FRAME_TIMEOUT) each get their error response, the error LED lights, and the
  board still answers INFO afterwards.
"""

from __future__ import annotations

import json
import logging
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge
from cocotbext.uart import UartSink, UartSource

from attnforge.hw.board.protocol import BoardClient, Command, Status, encode_request, run_packets
from attnforge.hw.common import accelerator_regmap
from attnforge.hw.common.axi import register_params
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.config import REGISTER_CHOICES
from attnforge.hw.vitcod import VitcodConfig

from .board_jobs import BoardJob

CLOCK_NS = 10          # the UART and the bridge (``sync``)
FAST_CLOCK_NS = 6      # the accelerator (``fast``): another clock, as on a board (PLL vs oscillator)


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


class CocotbUartTransport:
    """A ``BoardClient`` transport on cocotbext-uart: ``write`` queues bytes on the pin and waits until
    they are out; ``read(n)`` waits for n bytes, at most ``timeout_ns`` for each."""

    def __init__(self, source: UartSource, sink: UartSink, timeout_ns: int):
        self.source, self.sink, self.timeout_ns = source, sink, timeout_ns

    async def write(self, data: bytes) -> None:
        await self.source.write(data)
        await self.source.wait()

    async def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if self.sink.empty():
                await self.sink.wait(self.timeout_ns, "ns")
                if self.sink.empty():
                    break
            out += self.sink.read_nowait(min(n - len(out), self.sink.count()))
        return bytes(out)


async def _start(dut):
    p = _params()
    divisor = p.get("divisor", 8)
    baud = 1e9 / (CLOCK_NS * divisor)
    dut.uart_rx.value = 1
    dut.rst.value = 1
    dut.fast_rst.value = 1
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    cocotb.start_soon(Clock(dut.fast_clk, p.get("fast_clock_ns", FAST_CLOCK_NS), unit="ns").start())
    source = UartSource(dut.uart_rx, baud=baud, bits=8, stop_bits=1)
    sink = UartSink(dut.uart_tx, baud=baud, bits=8, stop_bits=1)
    for x in (source, sink):
        x.log.setLevel(logging.WARNING)
    await ClockCycles(dut.clk, 4)
    await FallingEdge(dut.fast_clk)
    dut.fast_rst.value = 0
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    timeout_ns = p.get("timeout_cycles", 1 << 20) * CLOCK_NS
    return p, BoardClient(CocotbUartTransport(source, sink, timeout_ns))


def _regmap(p: dict):
    if p["design"] == "vitcod":
        return accelerator_regmap("vitcod", register_params(VitcodConfig(**p["config"])))
    cfg = LinearDecodeConfig(**p["config"])
    return accelerator_regmap("linear-decode", register_params(cfg, REGISTER_CHOICES))


@cocotb.test()
async def board_run(dut):
    """The job through host driver -> UART -> bridge -> accelerator -> back (module docstring)."""
    p, client = await _start(dut)
    job = BoardJob.load(p["job"])
    result = await run_packets(client, _regmap(p), job.packets, job.output_lengths, job.completed,
                               read_params=p.get("read_params", True))
    result["outputs"] = [x.hex() for x in result["outputs"]]
    result["led_error"] = int(dut.led_error.value)
    path = os.environ.get("ATTNFORGE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(result, f)
    assert len(result["outputs"]) == len(job.expected)


@cocotb.test()
async def bad_frames_get_error_responses(dut):
    """Corrupted CRC, unknown command, a frame cut short: an error response each, then INFO still works."""
    p, client = await _start(dut)
    t = client.transport
    assert int(dut.led_error.value) == 0
    good = encode_request(Command.WRITE, bytes([0x0C, 1, 0, 0, 0]))       # ENABLE = 1
    corrupted = good[:-1] + bytes([good[-1] ^ 0x5A])
    await t.write(corrupted)
    assert (await client.response(expect=None))[0] == Status.BAD_CRC
    assert int(dut.led_error.value) == 1
    assert await client.read_reg(0x0C) == 0, "a frame with a bad CRC was executed"
    await t.write(encode_request(0x42))
    assert (await client.response(expect=None))[0] == Status.BAD_CMD
    await t.write(good[:3])                                                  # cut short
    status, _ = await client.response(expect=None)
    assert status == Status.FRAME_TIMEOUT, Status.NAMES.get(status)
    info = await client.info()
    assert info.version == 1
    await client.write_reg(0x0C, 1)
    assert await client.read_reg(0x0C) == 1

