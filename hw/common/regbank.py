"""``RegisterBank``: an AXI4-Lite slave generated from a ``RegisterMap``.

Protocol (AXI4-Lite, 32-bit data, ``addr_width``-bit byte addresses):

* Write: the address (AW) and the data (W) are each taken into a one-entry
  holding register as soon as it is free (``awready = ~aw held``,
  ``wready = ~w held``), so they may arrive in either order or in the same
  cycle. When both are held and no write response is waiting, the write is
  applied (``wstrb`` honoured byte by byte) and ``bvalid`` rises in the next
  cycle; it stays high, with ``bresp = OKAY``, until ``bready``. A second
  write's AW and W are taken meanwhile and wait for the response.
* Read: ``arready = ~rvalid``; the accepted address's register is sampled into
  ``rdata`` and ``rvalid`` rises in the next cycle, held with ``rresp = OKAY``
  until ``rready``.
* Unmapped addresses: no error responses. A read of an address no register
  occupies returns 0 with OKAY; a write there is ignored, answered OKAY. (A
  driver probing a smaller configuration's map reads zeros, never a bus
  error.) Address bits 1:0 are ignored (an unaligned address means its word).
* Writes to ``const`` and ``ro`` registers are ignored (answered OKAY).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError, check_int

from .regmap import RegisterMap

__all__ = ["RegisterBank", "register_signature"]

_PORT_FLOW = {"ro": In, "w1c": In, "rw": Out, "pulse": Out}


def register_signature(reg):
    """The signature of a register's ports (``None`` when it has none: ``const``)."""
    flow = _PORT_FLOW.get(reg.access)
    members = {f.name: flow(f.width) for f in reg.fields} if flow else {}
    if reg.read_strobe:
        members["read_strobe"] = Out(1)
    return wiring.Signature(members) if members else None


def _word(reg, values):
    """A 32-bit value with each field's value at its bits (zeros between)."""
    parts, bit = [], 0
    for f, value in sorted(zip(reg.fields, values), key=lambda p: p[0].lsb):
        if f.lsb > bit:
            parts.append(Const(0, f.lsb - bit))
        parts.append(value)
        bit = f.msb + 1
    if bit < 32:
        parts.append(Const(0, 32 - bit))
    return Cat(*parts)


class RegisterBank(wiring.Component):
    """The registers of ``regmap`` behind an AXI4-Lite slave (see the module docstring).

    ``addr_width`` is the byte-address width (default: the fewest bits that
    reach every register, at least 4).

    Members
    -------
    awaddr : ``In(addr_width)``
    awvalid : ``In(1)``
    awready : ``Out(1)``
    wdata : ``In(32)``
    wstrb : ``In(4)``
    wvalid : ``In(1)``
    wready : ``Out(1)``
    bresp : ``Out(2)``
        Always OKAY (0).
    bvalid : ``Out(1)``
    bready : ``In(1)``
    araddr : ``In(addr_width)``
    arvalid : ``In(1)``
    arready : ``Out(1)``
    rdata : ``Out(32)``
    rresp : ``Out(2)``
        Always OKAY (0).
    rvalid : ``Out(1)``
    rready : ``In(1)``
    <register> : ``Out(Signature)``
        One per register that has ports (``register_signature``): a member per
        field, ``In`` for ``ro``/``w1c``, ``Out`` for ``rw``/``pulse``, and
        ``read_strobe : Out(1)`` where asked for.
    """

    def __init__(self, regmap: RegisterMap, *, addr_width: int | None = None):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"RegisterBank needs a RegisterMap, not {regmap!r}")
        need = max(4, (regmap.size - 1).bit_length())
        self.addr_width = need if addr_width is None else check_int("register bank addr_width", addr_width,
                                                                     need, 32)
        self.regmap = regmap
        aw = self.addr_width
        members = {
            "awaddr": In(aw), "awvalid": In(1), "awready": Out(1),
            "wdata": In(32), "wstrb": In(4), "wvalid": In(1), "wready": Out(1),
            "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
            "araddr": In(aw), "arvalid": In(1), "arready": Out(1),
            "rdata": Out(32), "rresp": Out(2), "rvalid": Out(1), "rready": In(1),
        }
        for reg in regmap:
            sig = register_signature(reg)
            if sig is not None:
                if hasattr(type(self), reg.name) or reg.name in ("regmap", "addr_width"):
                    raise ConfigError(f"register name {reg.name!r} is taken by RegisterBank's own attribute; "
                                      f"accepted: a name other than that of an attribute or method of the bank")
                members[reg.name] = Out(sig)
        super().__init__(members)

    def _write_channel(self, m):
        """AW and W holding registers and the B response; returns (do_write, address, data, byte mask)."""
        aw_full, w_full = Signal(), Signal()
        # named (a tuple assignment leaves them "$signal"): the Verilog and the formal harness read them
        addr, data, strb = Signal(self.addr_width, name="aw_addr"), Signal(32, name="w_data"), Signal(4, name="w_strb")
        do_write = Signal()
        m.d.comb += [self.awready.eq(~aw_full), self.wready.eq(~w_full), self.bresp.eq(0),
                     do_write.eq(aw_full & w_full & ~self.bvalid)]
        with m.If(self.awvalid & self.awready):
            m.d.sync += [aw_full.eq(1), addr.eq(self.awaddr)]
        with m.If(self.wvalid & self.wready):
            m.d.sync += [w_full.eq(1), data.eq(self.wdata), strb.eq(self.wstrb)]
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), self.bvalid.eq(1)]
        with m.Elif(self.bready):
            m.d.sync += self.bvalid.eq(0)
        byte_mask = Cat(*(strb[k].replicate(8) for k in range(4)))
        return do_write, addr, data, byte_mask

    def _register(self, m, reg, hit, data, mask):
        """Storage and port logic of one register; returns the values its read returns, per field."""
        ports = getattr(self, reg.name, None)
        values = []
        for f in reg.fields:
            bits = slice(f.lsb, f.msb + 1)
            written = data[bits] & mask[bits]
            if reg.access == "const":
                values.append(Const(f.reset, f.width))
            elif reg.access == "ro":
                values.append(getattr(ports, f.name))
            elif reg.access == "rw":
                stored = Signal(f.width, init=f.reset, name=f"{reg.name}_{f.name}")
                with m.If(hit):
                    m.d.sync += stored.eq((stored & ~mask[bits]) | written)
                m.d.comb += getattr(ports, f.name).eq(stored)
                values.append(stored)
            elif reg.access == "pulse":
                pulse = Signal(f.width, name=f"{reg.name}_{f.name}")
                m.d.sync += pulse.eq(_gated(hit, written, f.width))
                m.d.comb += getattr(ports, f.name).eq(pulse)
                values.append(Const(0, f.width))
            else:  # w1c
                flags = Signal(f.width, name=f"{reg.name}_{f.name}")
                cleared = flags & ~_gated(hit, written, f.width)
                m.d.sync += flags.eq(cleared | getattr(ports, f.name))
                values.append(flags)
        return values

    def elaborate(self, platform):
        m = Module()
        do_write, waddr, data, mask = self._write_channel(m)
        read_taken = Signal()
        rindex = self.araddr[2:]
        m.d.comb += [self.arready.eq(~self.rvalid), self.rresp.eq(0),
                     read_taken.eq(self.arvalid & self.arready)]
        words = {}
        for reg in self.regmap:
            hit = Signal(name=f"{reg.name}_write")
            m.d.comb += hit.eq(do_write & (waddr[2:] == reg.offset >> 2))
            words[reg.offset >> 2] = _word(reg, self._register(m, reg, hit, data, mask))
            if reg.read_strobe:
                m.d.comb += getattr(self, reg.name).read_strobe.eq(read_taken & (rindex == reg.offset >> 2))
        with m.If(read_taken):
            m.d.sync += self.rvalid.eq(1)
            with m.Switch(rindex):
                for index, word in words.items():
                    with m.Case(index):
                        m.d.sync += self.rdata.eq(word)
                with m.Default():
                    m.d.sync += self.rdata.eq(0)
        with m.Elif(self.rready):
            m.d.sync += self.rvalid.eq(0)
        return m


def _gated(condition, value, width):
    """``value`` when ``condition`` else 0 (``width`` bits)."""
    return value & condition.replicate(width)
