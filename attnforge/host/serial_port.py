"""``SerialTransport``: a real serial port (pyserial) as a ``BoardClient`` transport."""

from __future__ import annotations

__all__ = ["SerialTransport", "DEFAULT_BAUD"]

#: The board top's default baud rate (``fpga/board.py`` picks the divisor for it from the PLL clock).
DEFAULT_BAUD = 115200


class SerialTransport:
    """``write``/``read`` of ``BoardClient`` on ``port`` (8N1). ``read(n)`` returns fewer than n bytes when
    ``timeout`` seconds pass without the rest."""

    def __init__(self, port: str, baud: int = DEFAULT_BAUD, timeout: float = 2.0):
        try:
            import serial
        except ImportError as exc:   # pragma: no cover - pyserial is a dependency
            raise RuntimeError("pyserial is not installed (pip install pyserial)") from exc
        try:
            self.port = serial.Serial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=timeout)
        except serial.SerialException as exc:
            raise FileNotFoundError(f"--port {port}: cannot open the serial port ({exc})") from None
        self.port.reset_input_buffer()

    async def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    async def read(self, n: int) -> bytes:
        return self.port.read(n)

    def close(self) -> None:
        self.port.close()
