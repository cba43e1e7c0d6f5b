"""Clock-domain crossings for the accelerators' buses: AXI4-Stream and AXI4-Lite, one handshake per transfer.

A board runs its UART bridge on the oscillator and the accelerator on a PLL
clock as fast as the accelerator routes (``hw/board/top.py``); these carry the
buses between the two domains. The clocks need no relation.

Every AXI channel (a stream's beats; AXI4-Lite's AW, W, B, AR, R) crosses
through a ``ChannelCrossing``: a four-phase handshake (request up, acknowledge
up, request down, acknowledge down) whose two levels cross through
``FFSynchronizer``\\ s. The payload is not copied: AXI holds a payload stable
from its ``valid`` until its ``ready``, and the destination sees the request
two of its clocks after the source raised ``valid``, so it reads a payload
that has settled (bundled data). Cost: a handful of flip-flops a channel, no
memory. ``AsyncFIFO`` (Amaranth's, first tried) carries four beats at a time
but its storage and pointers took about 1,000 logic cells of the iCEBreaker
top (its memories are too small for Yosys to put in block RAM), more than the
UP5K had left; the UART is the bottleneck of a board by orders of magnitude,
so one beat in flight costs nothing.

AXI's rules hold on each side: a ``valid`` never depends on the same side's
``ready`` and stays up until it; the destination's payload is the source's.
A source that withdraws ``valid`` before ``ready`` (the board bridge's STREAM
timeout, which AXI does not allow) withdraws the request: the destination's
``valid`` drops two of its clocks later, unless the destination took the
transfer meanwhile, so nothing is left to be taken after a soft reset. The
source must then keep the payload those two clocks (the bridge keeps it until
its next STREAM).

Throughput: one transfer per round trip, about four clocks of each domain.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from attnforge.errors import check_int

from .axi import axil_ports, axis_master_members, axis_slave_members

__all__ = ["ChannelCrossing", "AxisCrossing", "AxiLiteCrossing"]


class ChannelCrossing(wiring.Component):
    """One valid/ready channel from ``s_domain`` to ``m_domain``; the payload goes beside it, untouched
    (module docstring).

    Members
    -------
    s_valid : ``In(1)``
        The source's valid (``s_domain``), held until ``s_ready`` (or withdrawn).
    s_ready : ``Out(1)``
        One ``s_domain`` cycle: the destination took the transfer.
    m_valid : ``Out(1)``
        To the destination (``m_domain``): a transfer waits.
    m_ready : ``In(1)``
        The destination takes it.
    """

    def __init__(self, *, s_domain: str, m_domain: str):
        self.s_domain, self.m_domain = s_domain, m_domain
        super().__init__({"s_valid": In(1), "s_ready": Out(1), "m_valid": Out(1), "m_ready": In(1)})

    def elaborate(self, platform):
        m = Module()
        s, d = self.s_domain, self.m_domain
        req, ack = Signal(), Signal()             # the source's request, the destination's acknowledge
        req_d, ack_s = Signal(), Signal()         # each as the other side sees it
        m.submodules.req_cdc = FFSynchronizer(req, req_d, o_domain=d)
        m.submodules.ack_cdc = FFSynchronizer(ack, ack_s, o_domain=s)
        # source: raise req with valid; ready for one cycle when ack comes; then wait for ack to fall
        with m.If(~req & ~ack_s & self.s_valid):
            m.d[s] += req.eq(1)
        with m.Elif(req & ack_s):
            m.d.comb += self.s_ready.eq(1)
            m.d[s] += req.eq(0)
        with m.Elif(req & ~self.s_valid):         # withdrawn before the destination took it
            m.d[s] += req.eq(0)
        # destination: valid while the request stands and is not yet taken; ack follows the request down
        m.d.comb += self.m_valid.eq(req_d & ~ack)
        with m.If(self.m_valid & self.m_ready):
            m.d[d] += ack.eq(1)
        with m.Elif(~req_d):
            m.d[d] += ack.eq(0)
        return m


class AxisCrossing(wiring.Component):
    """AXI4-Stream of ``data_bytes`` bytes from ``s_domain`` to ``m_domain``.

    Members
    -------
    s_axis_tdata, s_axis_tkeep, s_axis_tlast, s_axis_tvalid, s_axis_tready
        The source's side (``s_domain``).
    m_axis_tdata, m_axis_tkeep, m_axis_tlast, m_axis_tvalid, m_axis_tready
        The destination's side (``m_domain``); the payload is the source's.
    """

    def __init__(self, data_bytes: int, *, s_domain: str, m_domain: str):
        self.data_bytes = check_int("crossing data bytes", data_bytes, 1)
        self.s_domain, self.m_domain = s_domain, m_domain
        super().__init__({**axis_slave_members(8 * self.data_bytes), **axis_master_members(8 * self.data_bytes)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.beats = ch = ChannelCrossing(s_domain=self.s_domain, m_domain=self.m_domain)
        m.d.comb += [ch.s_valid.eq(self.s_axis_tvalid), self.s_axis_tready.eq(ch.s_ready),
                     self.m_axis_tvalid.eq(ch.m_valid), ch.m_ready.eq(self.m_axis_tready),
                     Cat(self.m_axis_tdata, self.m_axis_tkeep, self.m_axis_tlast).eq(
                         Cat(self.s_axis_tdata, self.s_axis_tkeep, self.s_axis_tlast))]
        return m


class AxiLiteCrossing(wiring.Component):
    """AXI4-Lite (``addr_width`` address bits, 32-bit data) from a master in ``s_domain`` (on ``s_axil_*``)
    to a slave in ``m_domain`` (on ``m_axil_*``): each of the five channels crosses on its own.

    Members
    -------
    s_axil_awaddr ... s_axil_rready
        The slave port the master drives (``s_domain``).
    m_axil_awaddr ... m_axil_rready
        The master port to the slave (``m_domain``).
    """

    # (channel, its valid/ready's prefix, payload ports, True: flows master -> slave)
    CHANNELS = (("aw", ("awaddr",), True), ("w", ("wdata", "wstrb"), True), ("b", ("bresp",), False),
                ("ar", ("araddr",), True), ("r", ("rdata", "rresp"), False))

    def __init__(self, addr_width: int, *, s_domain: str, m_domain: str):
        self.addr_width = check_int("crossing address bits", addr_width, 1)
        self.s_domain, self.m_domain = s_domain, m_domain
        super().__init__({**axil_ports("s_axil_", self.addr_width, master=False),
                          **axil_ports("m_axil_", self.addr_width, master=True)})

    def elaborate(self, platform):
        m = Module()
        for name, payload, forward in self.CHANNELS:
            # forward: from the master's side (s_axil_, our s_domain) to the slave's (m_axil_, m_domain)
            src, dst = ("s_axil_", "m_axil_") if forward else ("m_axil_", "s_axil_")
            domains = (self.s_domain, self.m_domain) if forward else (self.m_domain, self.s_domain)
            m.submodules[name] = ch = ChannelCrossing(s_domain=domains[0], m_domain=domains[1])
            get = lambda side, port: getattr(self, side + port)   # noqa: E731
            m.d.comb += [ch.s_valid.eq(get(src, name + "valid")), get(src, name + "ready").eq(ch.s_ready),
                         get(dst, name + "valid").eq(ch.m_valid), ch.m_ready.eq(get(dst, name + "ready"))]
            m.d.comb += [get(dst, port).eq(get(src, port)) for port in payload]
        return m
