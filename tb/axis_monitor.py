"""An AXI4-Stream protocol monitor for cocotb testbenches (the master's side of the rules).

``AxisMonitor`` watches one stream's ``<prefix>tvalid``, ``tready``, ``tdata``,
``tlast`` and ``tkeep`` once per clock cycle, at ``ReadOnly`` after the falling
edge (the values the next rising edge sees), and checks:

* valid held: once ``tvalid`` is high it stays high until ``tready``;
* payload stable: ``tdata``, ``tlast``, ``tkeep`` do not change while valid and not ready;
* no X or Z on ``tvalid`` (or ``tready``) outside reset;
* ``tkeep`` all ones on every transfer (``keep_all``: the wrappers send whole beats).

cocotbext-axi's sink checks none of these. Breaches go to ``errors``;
``check()`` raises listing them. ``transfers`` and ``stalls`` (cycles valid and
not ready) show what a test exercised. Nothing is checked while ``reset`` is at
``reset_active_level``.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from .axil_monitor import _read

__all__ = ["AxisMonitor"]


class AxisMonitor:
    """Checks the AXI4-Stream rules on ``dut``'s ``<prefix>t*`` ports every cycle of ``clk``."""

    def __init__(self, dut, clk, prefix: str, *, reset=None, reset_active_level: bool = True, keep_all: bool = True):
        self.clk, self.reset, self._level = clk, reset, int(reset_active_level)
        self.valid, self.ready = getattr(dut, prefix + "tvalid"), getattr(dut, prefix + "tready")
        self.payload = tuple(getattr(dut, prefix + n) for n in ("tdata", "tlast", "tkeep"))
        self.keep_all, self.keep_ones = keep_all, (1 << len(self.payload[2])) - 1
        self.errors: list[str] = []
        self.transfers = self.stalls = self.cycle = 0
        self._pending = None

    def start(self) -> "AxisMonitor":
        cocotb.start_soon(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await FallingEdge(self.clk)
            await ReadOnly()
            self.sample()

    def sample(self) -> None:
        self.cycle += 1
        if self.reset is not None and _read(self.reset) in (None, self._level):
            self._pending = None
            return
        valid, ready = _read(self.valid), _read(self.ready)
        if valid is None or ready is None:
            self.errors.append(f"cycle {self.cycle}: tvalid or tready is X/Z")
            return
        payload = tuple(_read(p) for p in self.payload)
        if self._pending is not None:
            if not valid:
                self.errors.append(f"cycle {self.cycle}: tvalid dropped before tready")
            elif payload != self._pending:
                self.errors.append(f"cycle {self.cycle}: payload changed while tvalid and not tready: "
                                   f"{self._pending} -> {payload}")
        if valid and ready:
            self.transfers += 1
            if self.keep_all and payload[2] != self.keep_ones:
                self.errors.append(f"cycle {self.cycle}: tkeep {payload[2]} on a transfer, expected all ones")
        self.stalls += bool(valid and not ready)
        self._pending = payload if valid and not ready else None

    def check(self) -> None:
        if self.errors:
            shown = "\n  ".join(self.errors[:20])
            raise AssertionError(f"AXI4-Stream protocol: {len(self.errors)} breaches:\n  {shown}")
