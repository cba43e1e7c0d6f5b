"""A UART in Amaranth: 8 data bits, no parity, one stop bit (8N1), LSB first.

``divisor`` is clock cycles per bit (``round(f_clk / baud)``; 12 MHz / 115200 -> 104,
an error of 0.16 %); the board top picks it, a simulation uses a small one (8)
so that a byte costs 80 cycles. ``amaranth-stdio`` is a placeholder name on
PyPI, hence this file.

* ``UartRx``: a 2-flip-flop synchronizer on the pin, then a start bit seen as
  a falling edge, checked again in its middle (a glitch shorter than half a bit
  is no start), each data bit sampled in its middle (``divisor // 2`` after its
  edge, counted from the start bit's edge), the stop bit checked: a low stop
  bit drops the byte and sets ``frame_error`` (sticky). A byte not taken before
  the next one is complete sets ``overrun`` (sticky) and is replaced.
* ``UartTx``: a stream of bytes in, the line idle high between bytes.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError

__all__ = ["UartRx", "UartTx", "check_divisor", "MIN_DIVISOR", "MAX_DIVISOR"]

#: Fewest clock cycles per bit: the receiver samples in the middle of a bit and needs a few
#: cycles of the synchronizer's delay to fit in half a bit.
MIN_DIVISOR = 4
MAX_DIVISOR = 1 << 20


def check_divisor(divisor) -> int:
    if isinstance(divisor, bool) or not isinstance(divisor, int) or not MIN_DIVISOR <= divisor <= MAX_DIVISOR:
        raise ConfigError(f"UART divisor = {divisor!r} is not accepted; accepted: an integer from "
                          f"{MIN_DIVISOR} to {MAX_DIVISOR} (clock cycles per bit)")
    return divisor


class UartRx(wiring.Component):
    """UART receiver (8N1) with a 2-FF synchronizer and mid-bit sampling.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    rx : ``In(1, init=1)``
        The pin (asynchronous; idle high).
    o : ``Out(stream.Signature(8))``
        Received bytes; ``valid`` stays high until ``ready``.
    frame_error : ``Out(1)``
        Sticky: a byte's stop bit was low (the byte was dropped).
    overrun : ``Out(1)``
        Sticky: a byte arrived while the last one was still not taken (it was replaced).
    """

    def __init__(self, divisor: int):
        self._divisor = check_divisor(divisor)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "frame_error": Out(1), "overrun": Out(1)})

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        sync1 = Signal(init=1, name="rx_sync1")
        sync2 = Signal(init=1, name="rx_sync2")
        m.d.sync += [sync1.eq(self.rx), sync2.eq(sync1)]
        timer = Signal(range(div + 1))
        bits = Signal(4)                       # data bits received
        shift = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        def deliver():
            with m.If(self.o.valid & ~self.o.ready):
                m.d.sync += self.overrun.eq(1)
            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~sync2):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(sync2):            # high again in the start bit's middle: a glitch
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bits.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], sync2)), bits.eq(bits + 1), timer.eq(div - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(sync2):
                        deliver()
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):               # wait for the line to go idle again
                with m.If(sync2):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """UART transmitter (8N1).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes to send; one is taken whenever the transmitter is idle.
    tx : ``Out(1, init=1)``
        The pin (a register; idle high).
    busy : ``Out(1)``
        A byte is on the line.
    """

    def __init__(self, divisor: int):
        self._divisor = check_divisor(divisor)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        shift = Signal(10)                      # start, 8 data bits, stop: shifted out LSB first
        left = Signal(range(11))
        m.d.comb += [self.busy.eq(left != 0), self.i.ready.eq(left == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shift.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))), left.eq(10), timer.eq(0)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [self.tx.eq(shift[0]), shift.eq(shift >> 1)]
            with m.If(timer == div - 1):
                m.d.sync += [timer.eq(0), left.eq(left - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer + 1)
        return m
