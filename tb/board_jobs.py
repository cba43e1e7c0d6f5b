"""An accelerator's work as the board driver sends it: input packets, expected output packets, and when
each output packet is complete (``run_packets`` in ``hw/board/protocol.py`` reads it then).

No cocotb here: the host (``attnforge.host``) builds these for a real board, the board
testbench (``tb/board_tb.py``) runs them in simulation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.vitcod import VitcodConfig
from attnforge.linear_format import CMD_TOKEN

from .streams import pack

__all__ = ["BoardJob", "vitcod_job", "linear_job"]


@dataclass
class BoardJob:
    packets: list                 # bytes per input packet (whole s_axis beats)
    expected: list                # bytes per expected output packet
    completed: list               # output packets complete once input packet i is in
    info: dict = field(default_factory=dict)

    @property
    def output_lengths(self) -> list:
        return [len(x) for x in self.expected]

    def save(self, path) -> Path:
        """The job as JSON (hex bytes), for the board testbench."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        d = asdict(self)
        d["packets"] = [p.hex() for p in self.packets]
        d["expected"] = [p.hex() for p in self.expected]
        path.write_text(json.dumps(d))
        return path

    @classmethod
    def load(cls, path) -> "BoardJob":
        d = json.loads(Path(path).read_text())
        return cls([bytes.fromhex(p) for p in d["packets"]], [bytes.fromhex(p) for p in d["expected"]],
                   d["completed"], d.get("info", {}))


def _bytes(value: int, n: int) -> bytes:
    return int(value).to_bytes(n, "little")


def vitcod_job(cfg: VitcodConfig, heads) -> BoardJob:
    """``heads`` (``TbHead``s, ``tb/vitcod_jobs.py``): per head (and per layer load) one packet, command beats
    then data beats; each head without an error gives one output packet (its int8 rows)."""
    b = cfg.data_bytes
    cmd_bytes = -(-cfg.cmd_layout.size // cfg.data_width) * b
    packets, expected, completed = [], [], []
    for h in heads:
        if h.layer_cmd is not None:
            packets.append(_bytes(pack(cfg.cmd_layout, h.layer_cmd), cmd_bytes)
                           + b"".join(_bytes(x, b) for x in h.layer_beats))
            completed.append(len(expected))
        packets.append(_bytes(pack(cfg.cmd_layout, h.cmd), cmd_bytes) + b"".join(_bytes(x, b) for x in h.beats))
        if h.expected is not None:
            expected.append(np.ascontiguousarray(h.expected, np.int8).tobytes())
        completed.append(len(expected))
    return BoardJob(packets, expected, completed, {"heads": len(heads)})


def linear_job(cfg: LinearDecodeConfig, axis_width: int, prog) -> BoardJob:
    """A linear decode ``Program`` (``tb/linear_decode_tb.py``): one packet per command, one output packet
    per verified block (its tokens' int8 outputs)."""
    nbytes = -(-cfg.input_layout.size // axis_width) * axis_width // 8
    packets = [_bytes(pack(cfg.input_layout, beat), nbytes) for beat in prog.beats]
    expected, pos = [], 0
    for op in prog.ops:
        if op[0] == "block":
            expected.append(np.asarray(prog.expected[pos:pos + op[1]], np.int8).tobytes())
            pos += op[1]
    completed, blocks = [], 0
    for beat in prog.beats:
        blocks += beat["cmd"] == CMD_TOKEN and beat["last"]
        completed.append(blocks)
    return BoardJob(packets, expected, completed, {"tokens": prog.tokens, "flags": prog.flags()})
