"""The draft-block memory: one word (q, k, v) per draft token, with a registered write and a
read through a registered fan-out tree of its address.

Seen from the command control it is a memory read ``block_read_latency`` cycles after its
address (``config.pipe``, ``Pipelining``), with every write taken up to ``block_read_sees`` (0 or 1)
cycles after the address (a token written in the cycle its beat is taken is read back by a read
addressed in that same cycle: a one-token block's pass starts the next cycle; the next block's
first beat comes at least a cycle after the last read of the pass before is addressed).

Inside (timing closure, issue 15), the write is registered: the command FSM's
decision (``collected``, ``en``) no longer drives the LUT RAMs' write address and
enable across the device. The memory is split into ``config.block_slices`` slices of
``config.block_slice_bits`` bits (``BLOCK_SLICE_CELLS`` LUT-RAM cells each); the write address
and enable go through ``block_write_levels`` register levels (ECP5: 3), ``block_roots`` copies (the
FSM's decision reaches these few flip-flops only), a copy per slice, then a copy per read part
(attribute ``replica``: ``fpga.synth`` keeps the copies apart; with fewer levels the trailing
ones), the write data through as many registers. The memories are written ``block_write_levels``
cycles after the beat. The read address goes through ``block_read_levels`` register levels (ECP5:
4): a root register (the command FSM's address is combinational, from the output half's state: it
reaches one flip-flop), ``block_roots`` copies, a copy per slice, then a copy per read part of the
slice (``config.block_read_bits`` bits, about ``BLOCK_READ_CELLS`` LUT-RAM cells, one memory each),
which addresses the LUT RAMs' asynchronous read (registered per part with ``block_read_register``,
the ECP5's: a cycle more). The read comes after the write of a beat taken in
the address's cycle (the read is at least one level deeper than the write, plus the cycle the
write lands in), so no forwarding multiplexer is needed (one level of copies needed a registered
``hit`` and was a routed critical path: a copy's net to its 32 LUT RAMs, 11.1 ns).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

from ..common import ConfiguredComponent, log2_ceil, replica_tree
from .config import LinearDecodeConfig

__all__ = ["DraftBlock"]


class DraftBlock(ConfiguredComponent):
    """The draft-block memory in bit slices, written ``block_write_levels`` cycles after the beat,
    read ``block_read_latency`` cycles after the address (``config.pipe``).

    Parameters
    ----------
    config : LinearDecodeConfig

    Members
    -------
    write : ``Out(WritePort.Signature(shape=config.block_word))`` (a port, as a memory's)
        Token n of the block at address n, in the cycle its beat is taken (``en``). Address
        and data may be driven every cycle; only ``en`` needs to be qualified.
    read : ``Out(ReadPort.Signature(shape=config.block_word))`` (a port, as a memory's)
        ``data``: the word at the ``addr`` of ``block_read_latency`` cycles before (at ``t_max`` 1 the one
        word, whatever ``addr``: a register, no memory), including the
        writes taken up to ``block_read_sees`` cycles after it (combinational from the LUT
        RAMs, or from a register per read part with ``block_read_register``: the user registers
        it; the control never writes a word a read in flight needs).
        The read is always enabled (``en`` is not used).
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
        pipe = cfg.pipe        # Pipelining checked its levels: block_read_sees is 0 or 1
        m = Module()
        write, read = self.write, self.read
        width = len(write.data.as_value())
        data = write.data.as_value()
        for n in range(pipe.block_write_levels):
            data_n = Signal(width, name=f"block_write_data{n}")
            m.d.sync += data_n.eq(data)
            data = data_n
        step, part = cfg.block_slice_bits, cfg.block_read_bits
        slices = [(lo, min(lo + step, width)) for lo in range(0, width, step)]
        parts = [(s, plo, min(plo + part, hi)) for s, (lo, hi) in enumerate(slices) for plo in range(lo, hi, part)]
        roots = min(pipe.block_roots, len(slices))
        levels = [roots, len(slices), len(parts)]
        many = cfg.t_max > 1          # (at t_max 1 there is one word: no address, below)
        if many:
            # The read address: root registers (the command FSM's combinational address, the pass's
            # next token, reaches one flip-flop), copies each for a run of slices, a copy per slice, a
            # copy per part, each addressing its LUT RAMs' asynchronous read (the trailing levels when
            # fewer).
            raddr = replica_tree(m, read.addr, "block_read_addr",
                                 ([1] * (pipe.block_read_levels - 3) + levels)[-pipe.block_read_levels:])
        # The write address and enable: copies each for a run of slices, a copy per slice, then a copy
        # per part beside its LUT RAMs.
        wtree = ([roots] * (pipe.block_write_levels - 2) + levels[1:])[-pipe.block_write_levels:]
        if many:
            waddr = replica_tree(m, write.addr, "block_write_addr", wtree)
        wen = replica_tree(m, write.en, "block_write_en", wtree)
        out = []
        for p, (s, plo, phi) in enumerate(parts):
            if not many:
                # One token: the part is a register written as a memory's word is, read without an
                # address (the control reads only word 0). A memory of block_depth = 2 words kept its
                # second, never written word too: on the iCE40 (no LUT RAM) 384 flip-flops and a
                # multiplexer per bit at d = 16, where the UP5K's logic cells ran out.
                word = Signal(phi - plo, name=f"block_word{p}")
                with m.If(wen[p]):
                    m.d.sync += word.eq(data[plo:phi])
                value = word
            else:
                mem = Memory(shape=phi - plo, depth=cfg.block_depth, init=[])
                m.submodules[f"slice{s}_{p}"] = mem
                port_w, port_r = mem.write_port(), mem.read_port(domain="comb")
                m.d.comb += [port_w.addr.eq(waddr[p]), port_w.en.eq(wen[p]), port_w.data.eq(data[plo:phi]),
                             port_r.addr.eq(raddr[p])]
                value = port_r.data
            if pipe.block_read_register:
                # beside the part's LUT RAMs: their asynchronous read ends at a flip-flop
                held = Signal(phi - plo, name=f"block_read_data{p}")
                m.d.sync += held.eq(value)
                out.append(held)
            else:
                out.append(value)
        m.d.comb += read.data.eq(Cat(*out))
        return m
