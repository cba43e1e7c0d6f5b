"""``BoardTop``: UART pins -> ``UartBridge`` -> an AXI-wrapped accelerator, and two LEDs.

The board build (``fpga/board.py``) puts this under a platform top that
makes the ``sync`` domain from the board's oscillator and the ``fast`` domain
from a PLL; a simulation (``tb/board_tb.py``) drives ``clk``/``rst`` and
``fast_clk``/``fast_rst`` directly, with a small ``divisor`` (8 cycles per bit)
so that a byte costs 80 cycles.

Two clocks: ``sync`` (the UART and the bridge) and ``fast`` (the accelerator,
as fast as it routes): the bridge's critical path (its response decision) no
longer limits the accelerator's clock; on one clock the iCEBreaker top routed
well below the bare linear block (docs/board.md). Between them the three buses
cross through ``hw/common/crossing.py`` (a handshake per transfer; the clocks
need no relation).

The accelerator's wrapper (``VitcodAxi``, ``LinearDecodeAxi``) defines its own
two domains on its ``aclk``/``aresetn`` ports; they are renamed (``axi``,
``axi_accel``) and fed from ``fast``.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, DomainRenamer, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from attnforge.hw.common.axi import BUS_DOMAINS
from attnforge.hw.common.crossing import AxiLiteCrossing, AxisCrossing
from attnforge.hw.common.regmap import AXI_LITE_PORTS
from attnforge.hw.common.uart import UartRx, UartTx, check_divisor

from .bridge import UartBridge

__all__ = ["BoardTop", "axi_widths"]


def axi_widths(accel) -> dict:
    """s_axis / m_axis bytes and AXI4-Lite address bits of an AXI-wrapped accelerator."""
    from amaranth.hdl import Shape

    members = accel.signature.members
    width = lambda name: Shape.cast(members[name].shape).width   # noqa: E731
    return {"s_bytes": width("s_axis_tdata") // 8, "m_bytes": width("m_axis_tdata") // 8,
            "addr_width": width("s_axil_awaddr")}


class BoardTop(wiring.Component):
    """The board's logic: a UART, the framed protocol's bridge and the accelerator behind AXI.

    Parameters
    ----------
    accel : VitcodAxi or LinearDecodeAxi
        The wrapped accelerator.
    divisor : int
        UART clock cycles per bit (``round(f_clk / baud)``).
    buffer : int
        The bridge's payload buffer in bytes (a block RAM).
    timeout : int
        Cycles the bridge waits for a beat or a frame's next byte.

    Members
    -------
    uart_rx : ``In(1, init=1)``
        From the host (idle high).
    uart_tx : ``Out(1, init=1)``
        To the host.
    led_busy : ``Out(1)``
        A frame is being received, executed or answered.
    led_error : ``Out(1)``
        Sticky: an error response was sent, or the UART saw a bad stop bit or an overrun.
    """

    def __init__(self, accel, *, divisor: int = 8, buffer: int = 256, timeout: int = 1 << 22):
        self.accel = accel
        self.divisor = check_divisor(divisor)
        self.widths = axi_widths(accel)
        self.bridge = UartBridge(**self.widths, buffer=buffer, timeout=timeout)
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "led_busy": Out(1),
                          "led_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UartRx(self.divisor)
        m.submodules.uart_tx = tx = UartTx(self.divisor)
        m.submodules.bridge = bridge = self.bridge
        m.submodules.accel = accel = DomainRenamer(BUS_DOMAINS)(self.accel)
        w = self.widths
        m.submodules.to_accel = to_accel = AxisCrossing(w["s_bytes"], s_domain="sync", m_domain="fast")
        m.submodules.from_accel = from_accel = AxisCrossing(w["m_bytes"], s_domain="fast", m_domain="sync")
        m.submodules.registers = regs = AxiLiteCrossing(w["addr_width"], s_domain="sync", m_domain="fast")
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx),
                     accel.aclk.eq(ClockSignal("fast")), accel.aresetn.eq(~ResetSignal("fast"))]
        wiring.connect(m, rx.o, bridge.rx)
        wiring.connect(m, bridge.tx, tx.i)
        for name in AXI_LITE_PORTS:
            master_out = bridge.signature.members["m_axil_" + name].flow == Out
            if master_out:
                m.d.comb += [getattr(regs, "s_axil_" + name).eq(getattr(bridge, "m_axil_" + name)),
                             getattr(accel, "s_axil_" + name).eq(getattr(regs, "m_axil_" + name))]
            else:
                m.d.comb += [getattr(bridge, "m_axil_" + name).eq(getattr(regs, "s_axil_" + name)),
                             getattr(regs, "m_axil_" + name).eq(getattr(accel, "s_axil_" + name))]
        for name in ("tdata", "tkeep", "tvalid", "tlast"):
            m.d.comb += [getattr(to_accel, "s_axis_" + name).eq(getattr(bridge, "m_axis_" + name)),
                         getattr(accel, "s_axis_" + name).eq(getattr(to_accel, "m_axis_" + name)),
                         getattr(from_accel, "s_axis_" + name).eq(getattr(accel, "m_axis_" + name)),
                         getattr(bridge, "s_axis_" + name).eq(getattr(from_accel, "m_axis_" + name))]
        m.d.comb += [bridge.m_axis_tready.eq(to_accel.s_axis_tready), to_accel.m_axis_tready.eq(accel.s_axis_tready),
                     accel.m_axis_tready.eq(from_accel.s_axis_tready),
                     from_accel.m_axis_tready.eq(bridge.s_axis_tready)]
        uart_error = Signal()
        m.d.comb += [uart_error.eq(rx.frame_error | rx.overrun),
                     self.led_busy.eq(bridge.busy | tx.busy), self.led_error.eq(bridge.error | uart_error)]
        return m
