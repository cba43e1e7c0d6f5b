"""The draft-block memory: one word (q, k, v) per draft token, with a registered write.

Seen from the command control it is a memory whose synchronous read is transparent
for its write port: a token written in the cycle its beat is taken is read back by a
read issued in that same cycle (a one-token block's pass starts the next cycle).

Inside (timing closure, issue 15), the write is registered: the command FSM's
decision (``collected``, ``en``) no longer drives the LUT RAMs' write address and
enable across the device. The memory is split into ``config.block_slices`` memories
of bit slices (``BLOCK_SLICE_CELLS`` LUT-RAM cells each, ``config.block_slice_bits``
bits); each slice has its own copy of the write address and enable registers
(attribute ``replica``: ``fpga.synth`` keeps the copies apart), and all share the
write-data register. The memories are written one cycle after the beat. The read is
synchronous as seen from outside, built per slice from its own copy of the read address
register and the LUT RAM's asynchronous read, which sees the write in flight (what
Yosys makes of a transparent read port, but with one address register per slice
instead of one for all 384 LUT RAMs at d = 64). A read issued in
the beat's cycle at the beat's address cannot see the memory yet: a registered
``hit`` (one copy per slice) selects the write-data register instead of the
memory's output, one multiplexer in front of the user's register. So the read data
is cycle for cycle what the old transparent memory gave.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

from ..common import ConfiguredComponent, log2_ceil
from .config import LinearDecodeConfig

__all__ = ["DraftBlock"]


class DraftBlock(ConfiguredComponent):
    """The draft-block memory in bit slices, written one cycle after the beat, read as if not.

    Parameters
    ----------
    config : LinearDecodeConfig

    Members
    -------
    write : ``Out(WritePort.Signature(shape=config.block_word))`` (a port, as a memory's)
        Token n of the block at address n, in the cycle its beat is taken (``en``). Address
        and data may be driven every cycle; only ``en`` needs to be qualified.
    read : ``Out(ReadPort.Signature(shape=config.block_word))`` (a port, as a memory's)
        Synchronous read, the address a cycle ahead; the data includes a write of the same
        cycle (transparent). The read is always enabled (``en`` is not used).
    """

    config_type = LinearDecodeConfig

    @classmethod
    def signature_of(cls, config: LinearDecodeConfig):
        addr = log2_ceil(config.block_depth)
        return {
            "write": Out(WritePort.Signature(addr_width=addr, shape=config.block_word)),
            "read": Out(ReadPort.Signature(addr_width=addr, shape=config.block_word)),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        write, read = self.write, self.read
        width = len(write.data.as_value())
        data = Signal(width, name="block_write_data")
        m.d.sync += data.eq(write.data.as_value())
        hit_now = write.en & (read.addr == write.addr)     # a read of the word being taken now
        step = cfg.block_slice_bits
        out = []
        for s, lo in enumerate(range(0, width, step)):
            hi = min(lo + step, width)
            mem = Memory(shape=hi - lo, depth=cfg.block_depth, init=[])
            m.submodules[f"slice{s}"] = mem
            port_w = mem.write_port()
            # The synchronous read as a registered address (a copy per slice) and the LUT RAM's
            # asynchronous read: it sees the write in flight (transparent), as Yosys would map a
            # transparent read port, but without one address register driving every slice.
            port_r = mem.read_port(domain="comb")
            addr = Signal.like(write.addr, name=f"block_write_addr_rep{s}", attrs={"replica": 1})
            en = Signal(name=f"block_write_en_rep{s}", attrs={"replica": 1})
            hit = Signal(name=f"block_hit_rep{s}", attrs={"replica": 1})
            raddr = Signal.like(read.addr, name=f"block_read_addr_rep{s}", attrs={"replica": 1})
            m.d.sync += [addr.eq(write.addr), en.eq(write.en), hit.eq(hit_now), raddr.eq(read.addr)]
            m.d.comb += [port_w.addr.eq(addr), port_w.en.eq(en), port_w.data.eq(data[lo:hi]),
                         port_r.addr.eq(raddr)]
            out.append(Mux(hit, data[lo:hi], port_r.data))
        m.d.comb += read.data.eq(Cat(*out))
        return m
