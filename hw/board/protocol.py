"""The framed protocol between a host and the board's UART bridge (``hw/board/bridge.py``), and its client.

Every frame, both ways, is

    sync | kind | length (2 bytes, little-endian) | payload (length bytes) | CRC-8

``sync`` is 0xA5 from the host and 0x5A from the board; ``kind`` is the
command (host) or the status (board). The CRC-8 (polynomial 0x07, initial value 0,
no reflection, no final XOR: CRC-8/SMBUS; ``crc8(b"123456789") == 0xF4``) covers
``kind``, the length and the payload. The host sends one frame and waits for
its response (stop and wait); the board answers every frame it receives, also
a bad one, with exactly one response.

Commands (payload -> response payload on status OK):

| command | code | payload | response payload |
|---|---|---|---|
| INFO | 0x00 | none | 8 bytes: version, s_axis bytes (2), m_axis bytes (2), buffer bytes (2), address bits |
| WRITE | 0x01 | register byte address (1), value (4, LE) | none |
| READ | 0x02 | register byte address (1) | value (4, LE) |
| STREAM | 0x03 | flags (1: bit 0 = ``tlast`` on the last beat), then k whole ``s_axis`` beats (LE) | none |
| RESULTS | 0x04 | n (2, LE): ``m_axis`` beats to read | the beats read (LE), n of them unless TIMEOUT |

Statuses: OK 0, BAD_CRC 1 (the frame was dropped: nothing executed), BAD_CMD 2,
BAD_LEN 3 (a length the command does not take: WRITE 5, READ 1, INFO 0,
STREAM ``1 + k * s_bytes`` with 1 <= k and ``k * s_bytes`` <= the buffer,
RESULTS 2 with ``n * m_bytes`` <= the buffer), TIMEOUT 4 (a STREAM beat not
taken, or a RESULTS beat not given, within the bridge's timeout; the response
payload is the beats done so far: RESULTS the beats read, STREAM their count as 2 bytes),
FRAME_TIMEOUT 5 (the bytes of a frame stopped coming for longer than the
timeout: the partial frame is dropped), BUS_ERROR 6 (an AXI4-Lite response
other than OKAY).

``BoardClient`` speaks this protocol over any *transport* with ``async
write(data: bytes)`` and ``async read(n: int) -> bytes`` (``n`` bytes, or fewer
when the transport's time limit ran out): pyserial on a real port
(``attnforge.host.serial``), cocotbext-uart in simulation (``tb/board_tb.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SYNC_REQUEST", "SYNC_RESPONSE", "Command", "Status", "crc8", "encode_request", "encode_response",
           "decode_response", "BoardInfo", "BoardClient", "ProtocolError", "PROTOCOL_VERSION", "run_packets"]

SYNC_REQUEST = 0xA5
SYNC_RESPONSE = 0x5A
PROTOCOL_VERSION = 1


class Command:
    INFO = 0x00
    WRITE = 0x01
    READ = 0x02
    STREAM = 0x03
    RESULTS = 0x04


class Status:
    OK = 0
    BAD_CRC = 1
    BAD_CMD = 2
    BAD_LEN = 3
    TIMEOUT = 4
    FRAME_TIMEOUT = 5
    BUS_ERROR = 6

    NAMES = {0: "OK", 1: "BAD_CRC", 2: "BAD_CMD", 3: "BAD_LEN", 4: "TIMEOUT", 5: "FRAME_TIMEOUT", 6: "BUS_ERROR"}


class ProtocolError(RuntimeError):
    """A response that is not a frame, has a bad CRC, or a status other than the one expected."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def crc8_update(crc: int, byte: int) -> int:
    crc ^= byte
    for _ in range(8):
        crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = crc8_update(crc, b)
    return crc


def _frame(sync: int, kind: int, payload: bytes) -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError(f"frame payload of {len(payload)} bytes; at most 65535")
    body = bytes([kind]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([sync]) + body + bytes([crc8(body)])


def encode_request(command: int, payload: bytes = b"") -> bytes:
    return _frame(SYNC_REQUEST, command, payload)


def encode_response(status: int, payload: bytes = b"") -> bytes:
    return _frame(SYNC_RESPONSE, status, payload)


def decode_response(frame: bytes) -> tuple[int, bytes]:
    """(status, payload) of one whole response frame; ``ProtocolError`` if it is not one."""
    if len(frame) < 5 or frame[0] != SYNC_RESPONSE:
        raise ProtocolError(f"not a response frame: {bytes(frame[:8]).hex()}")
    n = int.from_bytes(frame[2:4], "little")
    if len(frame) != 5 + n:
        raise ProtocolError(f"response of {len(frame)} bytes, its header says {5 + n}")
    if crc8(frame[1:-1]) != frame[-1]:
        raise ProtocolError(f"response CRC {frame[-1]:#04x}, computed {crc8(frame[1:-1]):#04x}")
    return frame[1], bytes(frame[4:-1])


@dataclass(frozen=True)
class BoardInfo:
    version: int
    s_bytes: int        # bytes of one s_axis beat (STREAM)
    m_bytes: int        # bytes of one m_axis beat (RESULTS)
    buffer: int         # the bridge's payload buffer: most STREAM data / RESULTS bytes per frame
    addr_bits: int      # AXI4-Lite address bits

    @classmethod
    def decode(cls, payload: bytes) -> "BoardInfo":
        if len(payload) != 8:
            raise ProtocolError(f"INFO payload of {len(payload)} bytes, expected 8")
        u16 = lambda i: int.from_bytes(payload[i:i + 2], "little")   # noqa: E731
        return cls(payload[0], u16(1), u16(3), u16(5), payload[7])


class BoardClient:
    """The host side of the protocol over ``transport`` (module docstring). Every method is async."""

    def __init__(self, transport):
        self.transport = transport
        self._info: BoardInfo | None = None
        self.frames = 0            # requests sent

    async def request(self, command: int, payload: bytes = b"", *, expect: int | None = Status.OK) -> tuple[int, bytes]:
        """Send one frame and return the response's (status, payload); with ``expect``, a different
        status raises ``ProtocolError``."""
        await self.transport.write(encode_request(command, payload))
        self.frames += 1
        return await self.response(expect=expect)

    async def response(self, *, expect: int | None = Status.OK) -> tuple[int, bytes]:
        head = await self.transport.read(4)
        if len(head) < 4:
            raise ProtocolError(f"no response from the board (got {bytes(head).hex() or 'nothing'})")
        if head[0] != SYNC_RESPONSE:
            raise ProtocolError(f"response starts with {head[0]:#04x}, expected {SYNC_RESPONSE:#04x}")
        n = int.from_bytes(head[2:4], "little")
        rest = await self.transport.read(n + 1)
        if len(rest) < n + 1:
            raise ProtocolError(f"response cut short: {4 + len(rest)} of {5 + n} bytes")
        status, payload = decode_response(bytes(head) + bytes(rest))
        if expect is not None and status != expect:
            raise ProtocolError(f"board answered {Status.NAMES.get(status, status)}, expected "
                                f"{Status.NAMES.get(expect, expect)}", status)
        return status, payload

    async def info(self) -> BoardInfo:
        if self._info is None:
            self._info = BoardInfo.decode((await self.request(Command.INFO))[1])
        return self._info

    async def write_reg(self, offset: int, value: int) -> None:
        await self.request(Command.WRITE, bytes([offset]) + int(value).to_bytes(4, "little"))

    async def read_reg(self, offset: int) -> int:
        return int.from_bytes((await self.request(Command.READ, bytes([offset])))[1], "little")

    async def stream(self, data: bytes, *, last: bool = False) -> None:
        """Send ``data`` (whole ``s_axis`` beats) in frames of at most the bridge's buffer; ``last``:
        ``tlast`` on the final beat."""
        info = await self.info()
        if len(data) % info.s_bytes:
            raise ValueError(f"{len(data)} bytes are not whole s_axis beats of {info.s_bytes} bytes")
        chunk = info.buffer // info.s_bytes * info.s_bytes
        for at in range(0, len(data), chunk):
            piece = data[at:at + chunk]
            flags = int(last and at + len(piece) == len(data))
            await self.request(Command.STREAM, bytes([flags]) + piece)

    async def results(self, nbytes: int) -> bytes:
        """Read ``nbytes`` (whole ``m_axis`` beats) of results; ``ProtocolError`` (status TIMEOUT) when
        fewer come."""
        info = await self.info()
        if nbytes % info.m_bytes:
            raise ValueError(f"{nbytes} bytes are not whole m_axis beats of {info.m_bytes} bytes")
        out = bytearray()
        per = info.buffer // info.m_bytes
        left = nbytes // info.m_bytes
        while left:
            n = min(per, left)
            status, data = await self.request(Command.RESULTS, n.to_bytes(2, "little"), expect=None)
            out += data
            if status != Status.OK:
                raise ProtocolError(f"RESULTS: board answered {Status.NAMES.get(status, status)} after "
                                    f"{len(out)} of {nbytes} bytes", status)
            left -= n
        return bytes(out)


async def run_packets(client: BoardClient, regmap, packets, outputs, completed, *,
                      read_params: bool = True) -> dict:
    """The driver's job: the accelerator's input ``packets`` (bytes each, whole ``s_axis`` beats) in,
    its output packets (``outputs``: their lengths in bytes) out, and the registers read.

    ``completed[i]`` is the number of output packets complete once packet ``i`` is in: packets
    are sent together (in frames of up to the bridge's buffer) until an output packet is due,
    which is then read before more goes in (so the accelerator's output never backs up into
    its input). ``read_params=False`` skips the ``param_*`` registers (a frame each). Returns the
    bridge's ``info``, the registers ``params`` (every ``param_*``),
    ``id``/``design``, ``status``, ``done_count``, ``failed_count``, the performance ``counters``
    (LO then HI) and the ``outputs`` (bytes each), and ``frames`` (requests sent).
    """
    info = await client.info()
    if any(len(p) % info.s_bytes for p in packets) or any(n % info.m_bytes for n in outputs):
        raise ProtocolError(f"the board's beats ({info.s_bytes} bytes in, {info.m_bytes} out) do not divide this "
                            f"job's packets: build and run with the same design options (--axis-width)")
    reg = {r.name: r.offset for r in regmap}
    out = {"info": info.__dict__, "id": await client.read_reg(reg["id"]),
           "design": await client.read_reg(reg["design"])}
    out["params"] = {name[6:]: await client.read_reg(off) for name, off in reg.items()
                     if read_params and name.startswith("param_") and name != "param_count"}
    await client.write_reg(reg["control"], 1)      # soft reset: counts and counters from zero
    await client.write_reg(reg["enable"], 1)
    got, pending = [], bytearray()
    for i, pkt in enumerate(packets):
        pending += pkt
        due = completed[i] > len(got)
        if due or i == len(packets) - 1:
            await client.stream(bytes(pending), last=True)
            pending.clear()
        while len(got) < completed[i]:
            got.append(await client.results(outputs[len(got)]))
    out["status"] = await client.read_reg(reg["status"])
    out["done_count"] = await client.read_reg(reg["done_count"])
    out["failed_count"] = await client.read_reg(reg["failed_count"])
    counters = {}
    for name in ("busy", "stall_in", "stall_out", "mac_active"):
        lo = await client.read_reg(reg[f"perf_{name}_lo"])
        counters[name] = (await client.read_reg(reg[f"perf_{name}_hi"])) << 32 | lo
    out["counters"] = counters
    out["outputs"] = got
    out["frames"] = client.frames
    return out
