"""``UartBridge``: the framed protocol of ``hw/board/protocol.py`` to AXI4-Lite and AXI4-Stream.

Bytes from the UART receiver are parsed into a frame (sync, command,
length, payload, CRC-8). The payload goes into a buffer of ``buffer`` bytes
(one block RAM) and the first five bytes also into an argument register;
only a frame whose CRC matches and whose length the command takes is
executed (module docstring of ``protocol.py``), so a corrupted STREAM frame
sends nothing to the accelerator. Then one response frame goes out through
the UART transmitter:

* WRITE / READ: one AXI4-Lite write or read (address and data held until
  their handshakes, as AXI4-Lite requires);
* STREAM: the buffer's bytes, ``s_bytes`` per beat (little-endian), on
  ``m_axis`` (the accelerator's ``s_axis``); ``tvalid`` stays up until
  ``tready`` — or until ``timeout`` cycles pass: then the response is TIMEOUT
  and ``tvalid`` drops (AXI4-Stream does not allow that; it only happens when
  the accelerator stopped taking data, ENABLE = 0 or a hung design, and a soft
  reset follows);
* RESULTS: up to n beats from ``s_axis`` (the accelerator's ``m_axis``) into
  the buffer, each waited for at most ``timeout`` cycles, then sent back.

A frame whose bytes stop for ``timeout`` cycles is dropped with a
FRAME_TIMEOUT response. The bridge never waits without a time limit, except
for an AXI4-Lite response (the register bank always gives one).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError, check_int
from attnforge.hw.common.axi import axil_ports, axis_master_members, axis_slave_members

from .protocol import PROTOCOL_VERSION, SYNC_REQUEST, SYNC_RESPONSE, Command, Status

__all__ = ["UartBridge", "crc8_next"]


def _byte_of(value, index):
    """Byte ``index`` of ``value`` as a multiplexer (``word_select`` with a variable index becomes a
    multiplication by 8 that Yosys's ``-dsp`` maps to an iCE40 SB_MAC16)."""
    return Array(value[8 * i:8 * i + 8] for i in range(len(value) // 8))[index]


def crc8_next(crc, byte):
    """CRC-8/SMBUS (polynomial 0x07) of ``crc`` followed by ``byte``, as an Amaranth expression."""
    bits = [crc[i] ^ byte[i] for i in range(8)]
    for _ in range(8):
        top = bits[7]
        shifted = [Const(0, 1)] + bits[:7]
        bits = [shifted[i] ^ top if (0x07 >> i) & 1 else shifted[i] for i in range(8)]
    return Cat(*bits)


class UartBridge(wiring.Component):
    """Host frames (bytes in, bytes out) to an AXI4-Lite master and AXI4-Stream master/slave.

    Parameters
    ----------
    s_bytes : int
        Bytes of one beat to the accelerator (its ``s_axis_tdata`` / 8).
    m_bytes : int
        Bytes of one beat from the accelerator (its ``m_axis_tdata`` / 8).
    addr_width : int
        AXI4-Lite address bits (at most 8: the protocol's address is one byte).
    buffer : int
        Payload buffer bytes (at least one beat each way).
    timeout : int
        Cycles a beat or a frame's next byte is waited for.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Bytes from the UART receiver.
    tx : ``Out(stream.Signature(8))``
        Bytes to the UART transmitter.
    m_axil_awaddr ... m_axil_rready
        AXI4-Lite master (to the wrapper's ``s_axil_*``).
    m_axis_tdata, m_axis_tkeep, m_axis_tvalid, m_axis_tready, m_axis_tlast
        Beats to the accelerator's ``s_axis``.
    s_axis_tdata, s_axis_tkeep, s_axis_tvalid, s_axis_tready, s_axis_tlast
        Beats from the accelerator's ``m_axis``.
    busy : ``Out(1)``
        A frame is being received, executed or answered.
    error : ``Out(1)``
        Sticky: some response had a status other than OK.
    """

    def __init__(self, *, s_bytes: int, m_bytes: int, addr_width: int, buffer: int = 256,
                 timeout: int = 1 << 22):
        check_int("bridge s_bytes", s_bytes, 1, 512)
        check_int("bridge m_bytes", m_bytes, 1, 512)
        check_int("bridge addr_width", addr_width, 1, 8)
        check_int("bridge timeout", timeout, 16, 1 << 30)
        check_int("bridge buffer", buffer, 1, 1 << 15)
        if buffer < max(s_bytes, m_bytes):
            raise ConfigError(f"bridge buffer = {buffer} bytes is not accepted; accepted: at least one beat "
                              f"each way ({max(s_bytes, m_bytes)} bytes)")
        self.s_bytes, self.m_bytes, self.addr_width = s_bytes, m_bytes, addr_width
        self.buffer, self.timeout = buffer, timeout
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          **axil_ports("m_axil_", addr_width, master=True), **axis_master_members(8 * s_bytes),
                          **axis_slave_members(8 * m_bytes), "busy": Out(1), "error": Out(1)})

    # ------------------------------------------------------------------ elaboration

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=self.buffer, init=[])
        s = _State(self, m, mem)
        s.wr = mem.write_port()
        s.rd = mem.read_port()
        m.d.comb += [self.m_axis_tkeep.eq(-1), self.m_axil_wstrb.eq(0xF), self.rx.ready.eq(s.receiving)]
        # cycles since a frame's last byte (FRAME_TIMEOUT); the same counter times STREAM and RESULTS beats
        with m.If(self.rx.valid & s.receiving):
            m.d.sync += s.timer.eq(0)
        with m.Elif(s.receiving & s.in_frame):
            m.d.sync += s.timer.eq(s.timer + 1)
        # one CRC-8 step for both directions: the states say which byte (crc_in) and when (crc_en);
        # a state's own assignment of crc (a frame's start, a response's start) comes later and wins
        with m.If(s.crc_en):
            m.d.sync += s.crc.eq(crc8_next(s.crc, s.crc_in))
        with m.FSM(name="bridge") as fsm:
            self._receive(m, s)
            self._execute(m, s)
            self._respond(m, s)
        # rx.ready as one expression of the state (not assigned inside the states): Icarus runs no
        # `always @*` block before one of its inputs changes, and the state does not change before
        # the first byte, which rx.ready must already take
        frame = [fsm.ongoing(x) for x in ("CMD", "LEN0", "LEN1", "CRC")]
        payload = fsm.ongoing("PAYLOAD")
        m.d.comb += [s.in_frame.eq(payload | frame[0] | frame[1] | frame[2] | frame[3]),
                     s.receiving.eq(fsm.ongoing("SYNC") | (s.in_frame & ~(payload & s.payload_end)))]
        return m

    def _receive(self, m, s):
        """SYNC .. CRC: a frame in; a good one goes to its command's state, a bad one to RESPOND."""
        rx = self.rx
        byte = rx.payload
        take = rx.valid          # in the states below that look at it, ``receiving`` (rx.ready) is high
        with m.State("SYNC"):
            with m.If(take & (byte == SYNC_REQUEST)):
                m.d.sync += [s.crc.eq(0), s.count.eq(0), s.mod.eq(0)]
                m.next = "CMD"
        for state, nxt, field in (("CMD", "LEN0", s.cmd), ("LEN0", "LEN1", s.length[:8])):
            with m.State(state):
                s.frame_timeout(m)
                with m.If(take):
                    m.d.sync += field.eq(byte)
                    m.d.comb += [s.crc_in.eq(byte), s.crc_en.eq(1)]
                    m.next = nxt
        with m.State("LEN1"):
            s.frame_timeout(m)
            with m.If(take):
                m.d.sync += [s.length[8:].eq(byte), s.payload_end.eq(Cat(s.length[:8], byte) == 0)]
                m.d.comb += [s.crc_in.eq(byte), s.crc_en.eq(1)]
                m.next = "PAYLOAD"
        with m.State("PAYLOAD"):
            s.frame_timeout(m)
            self._length_checks(m, s)
            with m.If(s.payload_end):
                m.next = "CRC"
            with m.Elif(take):
                m.d.sync += [s.count.eq(s.count + 1), s.payload_end.eq(s.count + 1 == s.length)]
                m.d.comb += [s.crc_in.eq(byte), s.crc_en.eq(1)]
                with m.Switch(s.count):
                    for i in range(5):
                        with m.Case(i):
                            m.d.sync += s.args[8 * i:8 * i + 8].eq(byte)
                with m.If((s.count != 0) & (s.count <= self.buffer)):
                    m.d.comb += [s.wr.en.eq(1), s.wr.addr.eq(s.count - 1), s.wr.data.eq(byte)]
                # (payload bytes after the first) mod s_bytes: STREAM's length check
                with m.If(s.count != 0):
                    m.d.sync += s.mod.eq(Mux(s.mod == self.s_bytes - 1, 0, s.mod + 1))
        with m.State("CRC"):
            s.frame_timeout(m)
            with m.If(take):
                with m.If(byte != s.crc):
                    s.reply(m, Status.BAD_CRC)
                with m.Else():
                    self._dispatch(m, s)

    def _length_checks(self, m, s):
        """Whether the frame's length suits each command, registered in every PAYLOAD cycle (the last one
        sees the complete length, arguments and ``mod``), so the CRC byte's dispatch reads flip-flops:
        the comparisons' carry chains into the response's registers were the iCEBreaker top's critical
        path."""
        n = s.length
        results_n = s.args[:16]
        checks = {Command.INFO: n == 0, Command.WRITE: n == 5, Command.READ: n == 1,
                  Command.STREAM: (n > self.s_bytes) & (n - 1 <= self.buffer) & (s.mod == 0),
                  Command.RESULTS: (n == 2) & (results_n != 0) & (results_n <= self.buffer // self.m_bytes)}
        m.d.sync += [s.length_ok[code].eq(ok) for code, ok in checks.items()]

    def _dispatch(self, m, s):
        """A frame with a good CRC: check the length its command takes, then run it."""
        with m.Switch(s.cmd):
            for code, state in ((Command.INFO, "INFO"), (Command.WRITE, "WRITE"), (Command.READ, "READ"),
                                (Command.STREAM, "STREAM_LOAD"), (Command.RESULTS, "RESULTS_WAIT")):
                ok = s.length_ok[code]
                with m.Case(code):
                    with m.If(ok):
                        m.d.sync += [s.index.eq(0), s.beats.eq(0), s.timer.eq(0), s.aw_done.eq(0), s.w_done.eq(0),
                                     s.fill.eq(0)]
                        m.next = state
                    with m.Else():
                        s.reply(m, Status.BAD_LEN)
            with m.Default():
                s.reply(m, Status.BAD_CMD)

    def _execute(self, m, s):
        with m.State("INFO"):
            info = Cat(Const(PROTOCOL_VERSION, 8), Const(self.s_bytes, 16), Const(self.m_bytes, 16),
                       Const(self.buffer, 16), Const(self.addr_width, 8))
            m.d.sync += s.word.eq(info)
            s.reply(m, Status.OK, length=8)
        self._axil(m, s)
        self._stream(m, s)
        self._results(m, s)

    def _axil(self, m, s):
        addr = s.args[:self.addr_width]
        with m.State("WRITE"):
            m.d.comb += [self.m_axil_awaddr.eq(addr), self.m_axil_wdata.eq(s.args[8:40]),
                         self.m_axil_awvalid.eq(~s.aw_done), self.m_axil_wvalid.eq(~s.w_done),
                         self.m_axil_bready.eq(s.aw_done & s.w_done)]
            with m.If(self.m_axil_awvalid & self.m_axil_awready):
                m.d.sync += s.aw_done.eq(1)
            with m.If(self.m_axil_wvalid & self.m_axil_wready):
                m.d.sync += s.w_done.eq(1)
            with m.If(self.m_axil_bready & self.m_axil_bvalid):
                s.reply(m, Mux(self.m_axil_bresp == 0, Status.OK, Status.BUS_ERROR))
        with m.State("READ"):
            m.d.comb += [self.m_axil_araddr.eq(addr), self.m_axil_arvalid.eq(~s.aw_done),
                         self.m_axil_rready.eq(s.aw_done)]
            with m.If(self.m_axil_arvalid & self.m_axil_arready):
                m.d.sync += s.aw_done.eq(1)
            with m.If(self.m_axil_rready & self.m_axil_rvalid):
                m.d.sync += s.word.eq(self.m_axil_rdata)
                s.reply(m, Mux(self.m_axil_rresp == 0, Status.OK, Status.BUS_ERROR),
                        length=Mux(self.m_axil_rresp == 0, 4, 0))

    def _stream(self, m, s):
        """STREAM: fill a beat from the buffer (a byte per two cycles), offer it, repeat."""
        sb = self.s_bytes
        total = s.length - 1
        with m.State("STREAM_LOAD"):
            m.d.comb += s.rd.addr.eq(s.index)
            m.next = "STREAM_BYTE"
        with m.State("STREAM_BYTE"):
            m.d.sync += [s.beat_out.eq(Cat(s.beat_out[8:], s.rd.data)), s.index.eq(s.index + 1),
                         s.fill.eq(s.fill + 1)]
            with m.If(s.fill == sb - 1):
                m.d.sync += [s.fill.eq(0), s.timer.eq(0)]
                m.next = "STREAM_SEND"
            with m.Else():
                m.next = "STREAM_LOAD"
        with m.State("STREAM_SEND"):
            m.d.comb += [self.m_axis_tdata.eq(s.beat_out), self.m_axis_tvalid.eq(1),
                         self.m_axis_tlast.eq(s.args[0] & (s.index == total))]
            m.d.sync += s.timer.eq(s.timer + 1)
            with m.If(self.m_axis_tready):
                m.d.sync += s.beats.eq(s.beats + 1)
                with m.If(s.index == total):
                    s.reply(m, Status.OK)
                with m.Else():
                    m.next = "STREAM_LOAD"
            with m.Elif(s.timer == self.timeout - 1):
                m.d.sync += s.word.eq(s.beats)
                s.reply(m, Status.TIMEOUT, length=2)

    def _results(self, m, s):
        """RESULTS: take a beat from s_axis (or time out), write its bytes to the buffer, repeat."""
        mb = self.m_bytes
        with m.State("RESULTS_WAIT"):
            m.d.comb += self.s_axis_tready.eq(1)
            m.d.sync += s.timer.eq(s.timer + 1)
            with m.If(self.s_axis_tvalid):
                m.d.sync += [s.beat_in.eq(self.s_axis_tdata), s.fill.eq(0)]
                m.next = "RESULTS_STORE"
            with m.Elif(s.timer == self.timeout - 1):
                s.reply(m, Status.TIMEOUT, length=s.index, from_buffer=True)
        with m.State("RESULTS_STORE"):
            m.d.comb += [s.wr.en.eq(1), s.wr.addr.eq(s.index), s.wr.data.eq(s.beat_in[:8])]
            m.d.sync += [s.beat_in.eq(s.beat_in >> 8), s.index.eq(s.index + 1), s.fill.eq(s.fill + 1)]
            with m.If(s.fill == mb - 1):
                m.d.sync += [s.beats.eq(s.beats + 1), s.timer.eq(0)]
                with m.If(s.beats + 1 == s.args[:16]):
                    s.reply(m, Status.OK, length=s.index + 1, from_buffer=True)
                with m.Else():
                    m.next = "RESULTS_WAIT"

    def _respond(self, m, s):
        """RESP_*: sync, status, length, payload (the word register or the buffer), CRC."""
        tx = self.tx
        sent = tx.valid & tx.ready
        header = Cat(Const(SYNC_RESPONSE, 8), s.status, s.resp_len)
        with m.State("RESPOND"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(_byte_of(header, s.index[:2]))]
            with m.If(sent):
                m.d.sync += s.index.eq(s.index + 1)
                with m.If(s.index != 0):
                    m.d.comb += [s.crc_in.eq(tx.payload), s.crc_en.eq(1)]
                with m.If(s.index == 3):
                    m.d.sync += s.index.eq(0)
                    m.next = "RESP_PAYLOAD"
        with m.State("RESP_PAYLOAD"):
            m.d.comb += s.rd.addr.eq(s.index)
            with m.If(s.index == s.resp_len):
                m.next = "RESP_CRC"
            with m.Else():
                byte = Mux(s.from_buffer, s.rd.data, _byte_of(s.word, s.index[:3]))
                # the buffer's read port answers a cycle after its address: wait one cycle per byte
                m.d.sync += s.settled.eq(1)
                m.d.comb += [tx.valid.eq(s.settled), tx.payload.eq(byte)]
                with m.If(sent):
                    m.d.sync += [s.index.eq(s.index + 1), s.settled.eq(0)]
                    m.d.comb += [s.crc_in.eq(byte), s.crc_en.eq(1)]
        with m.State("RESP_CRC"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(s.crc)]
            with m.If(sent):
                m.next = "SYNC"


class _State:
    """The bridge's registers and the helpers its states share."""

    def __init__(self, bridge: UartBridge, m: Module, mem):
        self.bridge = bridge
        self.cmd = Signal(8)
        self.length = Signal(16)
        self.count = Signal(16)
        # count == length in PAYLOAD, registered a byte ahead: the 16-bit comparison sat on the path
        # rx.ready -> the receiver -> the frame timer's enable (the iCEBreaker top's critical path, 10 LUTs)
        self.payload_end = Signal()
        # per command: the frame's length (and arguments) suit it (``_length_checks``)
        self.length_ok = {code: Signal(name=f"length_ok_{name.lower()}")
                          for name, code in vars(Command).items() if name.isupper()}
        self.crc = Signal(8)
        self.args = Signal(40)
        self.index = Signal(16)
        self.beats = Signal(16)
        self.fill = Signal(range(max(bridge.s_bytes, bridge.m_bytes) + 1))
        self.mod = Signal(range(bridge.s_bytes + 1))     # (payload bytes - 1) mod s_bytes, as they come
        self.timer = Signal(range(bridge.timeout + 1))
        self.crc_in = Signal(8)
        self.crc_en = Signal()
        self.status = Signal(8)
        self.resp_len = Signal(16)
        self.word = Signal(64)
        self.from_buffer = Signal()
        self.settled = Signal()
        self.aw_done = Signal()
        self.w_done = Signal()
        self.beat_out = Signal(8 * bridge.s_bytes)
        self.beat_in = Signal(8 * bridge.m_bytes)
        self.receiving = Signal()
        self.in_frame = Signal()
        # busy: anywhere but waiting for a frame's sync byte
        m.d.comb += bridge.busy.eq(~(self.receiving & ~self.in_frame))

    def frame_timeout(self, m):
        # a byte that comes in the timeout's own cycle is taken and the frame goes on (before, the frame
        # went on too, as the state's byte handling came later, but the error flag was set on the way)
        with m.If((self.timer == self.bridge.timeout - 1) & ~(self.bridge.rx.valid & self.receiving)):
            self.reply(m, Status.FRAME_TIMEOUT)

    def reply(self, m, status, *, length=0, from_buffer=False):
        """Go to RESPOND with ``status`` and ``length`` payload bytes (the word register or the buffer)."""
        m.d.sync += [self.status.eq(status), self.resp_len.eq(length), self.from_buffer.eq(from_buffer),
                     self.index.eq(0), self.crc.eq(0), self.timer.eq(0), self.settled.eq(0)]
        if not (isinstance(status, int) and status == Status.OK):
            with m.If(status != Status.OK):
                m.d.sync += self.bridge.error.eq(1)
        m.next = "RESPOND"

