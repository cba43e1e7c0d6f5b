"""An AXI4-Lite protocol monitor for cocotb testbenches.

``AxiLiteMonitor`` watches the five channels of a slave's ports (``awaddr``,
``awvalid``, ... as ``RegisterBank`` names them, with an optional prefix) once
per clock cycle, at ``ReadOnly`` after the falling edge (the values the next
rising edge will see), and checks:

* valid held: once ``xVALID`` is high it stays high until ``xREADY`` (every channel);
* payload stable: the channel's payload does not change while valid and not ready;
* response ordering: a B response only for a write whose AW and W were both
  taken in earlier cycles, an R response only for an earlier AR, one response per
  request (AXI4-Lite answers in order, so the n-th response is the n-th request's);
* no X or Z on a valid or ready signal outside reset.

Breaches are collected in ``errors`` (with the cycle); ``check()`` raises an
``AssertionError`` listing them. Completed transactions are kept in ``writes``
(address, data, strobes, bresp) and ``reads`` (address, rdata, rresp), in order,
for scoreboards. So that a testbench can show it exercised the cases,
``stalls[ch]`` counts the cycles each channel was valid and not ready, and
``split_writes`` the writes whose AW and W were taken in different cycles. While ``reset`` is high nothing is checked and pending
requests are dropped (``reset_active_level=False`` for an active-low reset such as ``aresetn``).
"""

from __future__ import annotations

from collections import deque

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

__all__ = ["AxiLiteMonitor", "CHANNELS"]

#: channel -> (valid, ready, payload signals)
CHANNELS = {
    "aw": ("awvalid", "awready", ("awaddr",)),
    "w": ("wvalid", "wready", ("wdata", "wstrb")),
    "b": ("bvalid", "bready", ("bresp",)),
    "ar": ("arvalid", "arready", ("araddr",)),
    "r": ("rvalid", "rready", ("rdata", "rresp")),
}


def _read(signal):
    """The signal's value as an int, or ``None`` when it holds X or Z."""
    try:
        return int(signal.value)
    except ValueError:
        return None


class AxiLiteMonitor:
    """Checks the AXI4-Lite rules on ``dut``'s ports every cycle of ``clk`` (module docstring)."""

    def __init__(self, dut, clk, *, reset=None, prefix: str = "", reset_active_level: bool = True):
        self.clk, self.reset, self._reset_level = clk, reset, int(reset_active_level)
        self.signals = {ch: (getattr(dut, prefix + v), getattr(dut, prefix + r),
                             tuple(getattr(dut, prefix + p) for p in payload))
                        for ch, (v, r, payload) in CHANNELS.items()}
        self.errors: list[str] = []
        self.writes: list[tuple] = []
        self.reads: list[tuple] = []
        self.cycle = 0
        self.stalls = {ch: 0 for ch in CHANNELS}
        self.split_writes = 0
        self._pending = {ch: None for ch in CHANNELS}  # payload offered, not yet taken
        self._aw, self._w, self._ar = deque(), deque(), deque()
        self._task = None

    def start(self) -> "AxiLiteMonitor":
        """Start watching (a background task; it ends with the test)."""
        self._task = cocotb.start_soon(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await FallingEdge(self.clk)
            await ReadOnly()
            self.sample()

    def _error(self, text: str) -> None:
        self.errors.append(f"cycle {self.cycle}: {text}")

    def sample(self) -> None:
        """Check one cycle (called by the background task; a testbench may call it itself instead)."""
        self.cycle += 1
        if self.reset is not None and _read(self.reset) in (None, self._reset_level):
            self._pending = {ch: None for ch in CHANNELS}
            self._aw.clear(), self._w.clear(), self._ar.clear()
            return
        taken = {}
        for ch, (valid_sig, ready_sig, payload_sigs) in self.signals.items():
            valid, ready = _read(valid_sig), _read(ready_sig)
            if valid is None or ready is None:
                self._error(f"{ch.upper()} valid or ready is X/Z")
                continue
            payload = tuple(_read(p) for p in payload_sigs)
            pending = self._pending[ch]
            if pending is not None:
                if not valid:
                    self._error(f"{ch.upper()} valid dropped before ready")
                elif payload != pending:
                    self._error(f"{ch.upper()} payload changed while valid and not ready: {pending} -> {payload}")
            if valid and ready:
                taken[ch] = payload
            self.stalls[ch] += bool(valid and not ready)
            self._pending[ch] = payload if valid and not ready else None
            if valid and pending is None:
                self._check_response_allowed(ch)
        self._record(taken)

    def _check_response_allowed(self, ch: str) -> None:
        """A response rising now needs its request(s) taken in an earlier cycle."""
        if ch == "b" and not (self._aw and self._w):
            self._error("B response without a write whose AW and W were both taken before")
        if ch == "r" and not self._ar:
            self._error("R response without an AR taken before")

    def _record(self, taken: dict) -> None:
        """Pair responses with requests (responses first: they answer earlier cycles' requests)."""
        if "b" in taken and self._aw and self._w:
            ((addr,), aw_cycle), ((data, strb), w_cycle) = self._aw.popleft(), self._w.popleft()
            self.writes.append((addr, data, strb, taken["b"][0]))
            self.split_writes += aw_cycle != w_cycle
        if "r" in taken and self._ar:
            (addr,), _ = self._ar.popleft()
            self.reads.append((addr, *taken["r"]))
        for ch, queue in (("aw", self._aw), ("w", self._w), ("ar", self._ar)):
            if ch in taken:
                queue.append((taken[ch], self.cycle))

    def check(self) -> None:
        """Raise an ``AssertionError`` listing the breaches seen so far (the first 20)."""
        if self.errors:
            shown = "\n  ".join(self.errors[:20])
            raise AssertionError(f"AXI4-Lite protocol: {len(self.errors)} breaches:\n  {shown}")
