"""AXI4-Stream and AXI4-Lite plumbing shared by the accelerators' bus wrappers.

An accelerator's wrapper (``hw/vitcod/axi.py``, ``hw/linear/axi.py``) is one
Verilog module with the port names Vivado, Quartus and LiteX expect:

* ``aclk``, ``aresetn`` (active low, synchronous): the clock and reset of
  everything. Amaranth would name them ``clk`` and ``rst``; the wrapper makes
  its two clock domains from these ports instead (``bus_domains``);
* ``s_axis_tdata/tkeep/tvalid/tready/tlast``: commands and their data in;
* ``m_axis_tdata/tkeep/tvalid/tready/tlast``: results out;
* ``s_axil_awaddr ... s_axil_rready``: the register bank (``RegisterBank``).

Two clock domains on the one clock: ``sync`` (the register bank and the
output register, reset by ``aresetn`` only) and ``accel`` (the accelerator and
the input framing, reset by ``aresetn`` and by ``CONTROL.soft_reset``). So a
soft reset never cuts an AXI4-Lite response short, and a beat already offered
on ``m_axis`` stays offered until it is taken (AXI4-Stream forbids taking it
back): at most the two beats the output register holds still come out after
a soft reset; a driver drains them (or resets its S2MM channel) before it
starts again.

``tkeep``: the wrappers carry whole beats only. A beat taken on ``s_axis``
with any ``tkeep`` bit low is used as it is (all its bytes, whatever they
hold) and sets the sticky error bit ``ERR_AXIS_TKEEP`` of ``STATUS.errors``;
``m_axis_tkeep`` is always all ones.

``s_axis_tlast`` does not frame: the command says how many data beats follow
it, so one DMA packet may carry one command or a whole program (docs/axi.md).
It is checked: ``tlast`` on a beat that does not end a command (with its data)
sets the sticky ``ERR_AXIS_TLAST`` (a packet shorter than its command says: the
next packet's beats will be taken as this command's data; soft reset recovers).
"""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Const, DomainRenamer, Module, Mux, ResetSignal, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError

from .regbank import RegisterBank
from .stream import SkidBuffer

__all__ = ["ERR_AXIS_TKEEP", "ERR_AXIS_TLAST", "AXIL_PREFIX", "axis_slave_members", "axis_master_members",
           "axil_members", "axil_ports",
           "bus_domains", "BUS_DOMAINS", "connect_axil", "register_params", "check_axis_width", "AxisCommandInput",
           "AxisOutput", "OnParentClock"]

#: STATUS.errors bit the wrappers add: a beat with a ``tkeep`` bit low was taken on ``s_axis``.
ERR_AXIS_TKEEP = 0x80
#: STATUS.errors bit: a packet ended (``s_axis_tlast``) in the middle of a command or its data.
ERR_AXIS_TLAST = 0x40
#: Prefix of the AXI4-Lite ports on a wrapper.
AXIL_PREFIX = "s_axil_"


def check_axis_width(what: str, width) -> int:
    """An AXI4-Stream ``tdata`` width: whole bytes (for ``tkeep``), 8..4096 bits. (DMA engines
    take powers of two; the wrappers' defaults are.)"""
    if isinstance(width, bool) or not isinstance(width, int) or not 8 <= width <= 4096 or width % 8:
        raise ConfigError(f"{what} = {width!r} is not accepted; accepted: a multiple of 8 from 8 to 4096 bits "
                          f"(AXI4-Stream tdata of whole bytes)")
    return width


def axis_slave_members(width: int) -> dict:
    return {"s_axis_tdata": In(width), "s_axis_tkeep": In(width // 8), "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1), "s_axis_tlast": In(1)}


def axis_master_members(width: int) -> dict:
    return {"m_axis_tdata": Out(width), "m_axis_tkeep": Out(width // 8), "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1), "m_axis_tlast": Out(1)}


def axil_ports(prefix: str, addr_width: int, *, master: bool) -> dict:
    """AXI4-Lite ports (32-bit data) named ``prefix + name``; ``master``: the address and data flow out
    (the board bridge, a crossing's slave-facing side), else in."""
    fwd, back = (Out, In) if master else (In, Out)
    ports = (("awaddr", fwd, addr_width), ("awvalid", fwd, 1), ("awready", back, 1), ("wdata", fwd, 32),
             ("wstrb", fwd, 4), ("wvalid", fwd, 1), ("wready", back, 1), ("bresp", back, 2), ("bvalid", back, 1),
             ("bready", fwd, 1), ("araddr", fwd, addr_width), ("arvalid", fwd, 1), ("arready", back, 1),
             ("rdata", back, 32), ("rresp", back, 2), ("rvalid", back, 1), ("rready", fwd, 1))
    return {prefix + name: flow(width) for name, flow, width in ports}


def axil_members(bank: RegisterBank) -> dict:
    """The bank's AXI4-Lite ports, renamed ``s_axil_<port>``, same directions."""
    from .regmap import AXI_LITE_PORTS
    members = bank.signature.members
    return {AXIL_PREFIX + name: members[name] for name in AXI_LITE_PORTS}


def connect_axil(m: Module, outer, regs) -> None:
    """Wire ``outer``'s ``s_axil_*`` ports to ``regs``'s AXI4-Lite ports (``RegisterBank`` names)."""
    from .regmap import AXI_LITE_PORTS
    members = regs.signature.members
    for name in AXI_LITE_PORTS:
        port, inner = getattr(outer, AXIL_PREFIX + name), getattr(regs, name)
        if members[name].flow == In:
            m.d.comb += inner.eq(port)
        else:
            m.d.comb += port.eq(inner)


def bus_domains(m: Module, aclk, aresetn, soft_reset) -> None:
    """Define ``sync`` (reset by ``~aresetn``) and ``accel`` (also reset by ``soft_reset``) on ``aclk``."""
    m.domains.sync = ClockDomain("sync")
    m.domains.accel = ClockDomain("accel")
    m.d.comb += [ClockSignal("sync").eq(aclk), ResetSignal("sync").eq(~aresetn),
                 ClockSignal("accel").eq(aclk), ResetSignal("accel").eq(~aresetn | soft_reset)]


#: ``bus_domains``'s domains, renamed when a wrapper sits inside a design with domains of its own
#: (``OnParentClock``, the board tops): the wrapper's ``sync`` and ``accel`` become these.
BUS_DOMAINS = {"sync": "axi", "accel": "axi_accel"}


class OnParentClock(wiring.Component):
    """An AXI-wrapped accelerator (``VitcodAxi``, ``LinearDecodeAxi``) clocked by the parent's ``sync``.

    The wrapper's ``aclk`` is driven by ``ClockSignal("sync")`` and its ``aresetn``
    by ``~ResetSignal("sync")``; every other port is passed through under the same
    name. What ``attnforge synth --axi`` places and routes (its shell drives every
    input port from a shift register, which must not drive the clock).

    Members
    -------
    <the wrapper's members but aclk, aresetn>
        The same direction and shape (``s_axis_*``, ``m_axis_*``, ``s_axil_*``).
    """

    def __init__(self, wrapper):
        members = wrapper.signature.members
        if "aclk" not in members or "aresetn" not in members:
            raise ConfigError(f"OnParentClock needs a wrapper with aclk and aresetn ports; {type(wrapper).__name__} "
                              f"has {', '.join(sorted(members))}")
        self.wrapper = wrapper
        super().__init__({name: member for name, member in members.items() if name not in ("aclk", "aresetn")})

    def elaborate(self, platform):
        m = Module()
        m.submodules.wrapper = inner = DomainRenamer(BUS_DOMAINS)(self.wrapper)
        m.d.comb += [inner.aclk.eq(ClockSignal("sync")), inner.aresetn.eq(~ResetSignal("sync"))]
        for name, member in self.signature.members.items():
            if member.flow == In:
                m.d.comb += getattr(inner, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(inner, name))
        return m


def register_params(config, choices: dict | None = None) -> dict:
    """A configuration dataclass's fields as register values: ints and bools as they are, a field
    with a fixed set of values (``choices[name]``) as its index in that set. A field whose metadata
    says ``register: False`` (how the Verilog is built for a device, not what it computes) is left out."""
    params = {}
    for f in dataclasses.fields(config):
        if not f.metadata.get("register", True):
            continue
        value = getattr(config, f.name)
        params[f.name] = list(choices[f.name]).index(value) if choices and f.name in choices else value
    return params


class AxisCommandInput(wiring.Component):
    """AXI4-Stream beats to an accelerator's command stream (and the data stream after each command).

    A command of ``cmd_layout`` spans ``cmd_beats = ceil(width(cmd_layout) / width)``
    beats, its first field in the lowest bits of the first beat (little-endian
    bytes, zero padding above). The last command beat is passed straight to
    ``cmd`` (``tready`` is ``cmd.ready`` then), so a one-beat command costs no
    cycle. With ``data_beats`` (a function of the command's ``View`` giving the
    number of data beats that follow it) the next that many beats go to ``data``
    unchanged; then the next command begins. ``enable`` low holds ``tready`` low, except to
    finish a beat already offered on ``cmd`` or ``data`` (a stream never takes an offer back).

    Members
    -------
    tdata : ``In(width)``
    tkeep : ``In(width // 8)``
    tvalid : ``In(1)``
    tready : ``Out(1)``
    enable : ``In(1)``
        Beats are taken only while high (and the one offered on ``cmd`` or ``data`` when it fell).
    cmd : ``Out(stream.Signature(cmd_layout))``
    data : ``Out(stream.Signature(width))``
        Only with ``data_beats``.
    tlast : ``In(1)``
    keep_error : ``Out(1)``
        Sticky: a beat with a ``tkeep`` bit low was taken.
    last_error : ``Out(1)``
        Sticky: a beat with ``tlast`` high was taken that does not end a command (with its
        data): a packet ended in the middle of a command. (A packet may hold many commands:
        ``tlast`` low at a command's end is no error.)
    partial : ``Out(1)``
        A command is part-way in (some of its beats, or of its data beats, taken): a cycle
        without ``tvalid`` then is a stall on the input.
    """

    def __init__(self, width: int, cmd_layout, *, data_beats=None, count_width: int = 16):
        self._width = check_axis_width("AXI4-Stream input width", width)
        self._layout = cmd_layout
        self._data_beats = data_beats
        self._count_width = count_width
        self._cmd_bits = Shape.cast(cmd_layout).width
        members = {"tdata": In(width), "tkeep": In(width // 8), "tvalid": In(1), "tready": Out(1), "tlast": In(1),
                   "enable": In(1), "cmd": Out(stream.Signature(cmd_layout)), "keep_error": Out(1),
                   "last_error": Out(1), "partial": Out(1)}
        if data_beats is not None:
            members["data"] = Out(stream.Signature(width))
        super().__init__(members)

    @property
    def cmd_beats(self) -> int:
        return -(-self._cmd_bits // self._width)

    def elaborate(self, platform):
        m = Module()
        w, k = self._width, self.cmd_beats
        held = [Signal(w, name=f"cmd_beat{j}") for j in range(k - 1)]
        count = Signal(range(max(k, 2)), name="cmd_beat_count")
        in_data = Signal(name="in_data")
        left = Signal(self._count_width, name="data_beats_left")
        take = Signal()
        m.d.comb += [take.eq(self.tvalid & self.tready),
                     self.cmd.payload.as_value().eq(Cat(*held, self.tdata)[:self._cmd_bits]),
                     self.partial.eq(in_data | (count != 0))]
        with m.If(take & ~self.tkeep.all()):
            m.d.sync += self.keep_error.eq(1)
        # Plain expressions, no conditional assignments: Icarus does not run a netlist's
        # combinational processes at time 0 for inputs that never change, and tready must be known.
        last_cmd_beat = Signal()
        data_valid = self.data.valid if self._data_beats is not None else 0
        data_ready = self.data.ready if self._data_beats is not None else 0
        # A beat offered on cmd or data stays offered until taken, whatever enable does (a host may
        # clear ENABLE at any time): enable only stops the next beat from being offered.
        offered = Signal(name="offered")
        m.d.sync += offered.eq(self.cmd.valid & ~self.cmd.ready | data_valid & ~data_ready)
        open_ = Signal(name="open")
        m.d.comb += [last_cmd_beat.eq(~in_data & (count == k - 1)),
                     open_.eq(self.enable | offered),
                     self.cmd.valid.eq(self.tvalid & open_ & last_cmd_beat),
                     self.tready.eq(open_ & Mux(in_data, data_ready, ~last_cmd_beat | self.cmd.ready))]
        with m.If(take & ~in_data & ~last_cmd_beat):
            for j in range(k - 1):
                with m.If(count == j):
                    m.d.sync += held[j].eq(self.tdata)
            m.d.sync += count.eq(count + 1)
        # the beat that ends a command: its last beat when no data follows, else its last data beat
        ends_command = Signal()
        if self._data_beats is not None:
            beats = Signal(self._count_width, name="data_beats")
            m.d.comb += [beats.eq(self._data_beats(self.cmd.payload)),
                         ends_command.eq(last_cmd_beat & (beats == 0) | in_data & (left == 1))]
        else:
            m.d.comb += ends_command.eq(last_cmd_beat)
        with m.If(take & last_cmd_beat):
            m.d.sync += count.eq(0)
            if self._data_beats is not None:
                m.d.sync += [left.eq(beats), in_data.eq(beats != 0)]
        with m.If(take & self.tlast & ~ends_command):
            m.d.sync += self.last_error.eq(1)
        if self._data_beats is not None:
            m.d.comb += [self.data.valid.eq(self.tvalid & open_ & in_data), self.data.payload.eq(self.tdata)]
            with m.If(take & in_data):
                m.d.sync += left.eq(left - 1)
                with m.If(left == 1):
                    m.d.sync += in_data.eq(0)
        return m


class AxisOutput(wiring.Component):
    """An accelerator's output stream (with its ``last`` flag) to AXI4-Stream master ports.

    A ``SkidBuffer`` in between: ``tvalid``, ``tdata`` and ``tlast`` come from
    registers (no combinational path from ``m_axis_tready``), full throughput.
    ``tkeep`` is all ones. Elaborate it in the domain that soft reset does not
    touch, so an offered beat is never withdrawn.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"data": width, "last": 1})))``
    tdata : ``Out(width)``
    tkeep : ``Out(width // 8)``
    tvalid : ``Out(1)``
    tready : ``In(1)``
    tlast : ``Out(1)``
    """

    def __init__(self, width: int):
        self._width = check_axis_width("AXI4-Stream output width", width)
        self._layout = data.StructLayout({"data": width, "last": 1})
        super().__init__({"i": In(stream.Signature(self._layout)), "tdata": Out(width), "tkeep": Out(width // 8),
                          "tvalid": Out(1), "tready": In(1), "tlast": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer = skid = SkidBuffer(self._layout)
        wiring.connect(m, wiring.flipped(self.i), skid.i)
        m.d.comb += [self.tdata.eq(skid.o.payload.data), self.tlast.eq(skid.o.payload.last),
                     self.tvalid.eq(skid.o.valid), skid.o.ready.eq(self.tready),
                     self.tkeep.eq(Const((1 << self._width // 8) - 1, self._width // 8))]
        return m
