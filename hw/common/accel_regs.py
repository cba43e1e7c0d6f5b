"""The accelerators' standard register map, their performance counters, and both wired together.

``accelerator_regmap(design, params)`` lays out the same registers for every
accelerator (fixed offsets), then one read-only register per generator
parameter, so a driver finds out what it is talking to:

======  ================  ======  ====================================================
offset  register          access  contents
======  ================  ======  ====================================================
0x00    ID                const   magic 0xA77F (31:16), version major (15:8), minor (7:0)
0x04    DESIGN            const   CRC-32 of the design's name (``zlib.crc32``)
0x08    CONTROL           pulse   soft_reset (0), start (1)
0x0c    ENABLE            rw      enable (0)
0x10    STATUS            ro      busy (0), errors (15:8, design-defined error bits)
0x14    DONE_COUNT        ro      jobs finished
0x18    FAILED_COUNT      ro      jobs refused or failed
0x1c    PERF_*_LO / _HI   ro      four 64-bit counters, LO then HI: BUSY (cycles busy),
                                  STALL_IN (stalled on input), STALL_OUT (stalled on
                                  output), MAC_ACTIVE (cycles a MAC was active)
0x3c    PARAM_COUNT       const   number of parameter registers that follow
0x40    PARAM_<NAME>      const   one per generator parameter, in the order given
======  ================  ======  ====================================================

64-bit counters (``PerfCounters``): read LO first, then HI. Reading LO latches
the counter's upper 32 bits in the same clock edge that samples LO into
``rdata``; HI returns that latched word, so LO then HI is one consistent 64-bit
value even while the counter runs (a carry between the two reads does not tear
it). HI read without a LO read before it returns the word latched at the last
LO read (0 after reset). Soft reset (``CONTROL.soft_reset``) clears the counters
and the latched words.
"""

from __future__ import annotations

import zlib

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from attnforge.errors import ConfigError, check_int

from .regbank import RegisterBank
from .regmap import Field, Register, RegisterMap

__all__ = ["ID_MAGIC", "REGMAP_VERSION", "PERF_COUNTERS", "PARAM_BASE", "design_code", "accelerator_regmap",
           "PerfCounters", "AcceleratorRegisters"]

#: Upper half of the ID register.
ID_MAGIC = 0xA77F
#: (major, minor) of this register layout: major changes when an offset moves.
REGMAP_VERSION = (1, 0)
#: The performance counters, in register order.
PERF_COUNTERS = ("busy", "stall_in", "stall_out", "mac_active")
#: Offset of the first parameter register.
PARAM_BASE = 0x40

_PERF_DOCS = {"busy": "cycles busy", "stall_in": "cycles stalled on input",
              "stall_out": "cycles stalled on output", "mac_active": "cycles with a MAC active"}


def design_code(design: str) -> int:
    """The DESIGN register's value: CRC-32 of the design's name (UTF-8)."""
    return zlib.crc32(design.encode())


def _param_registers(params: dict) -> list:
    """One ``const`` register per parameter; refuses names and values a register cannot hold."""
    regs = []
    for name, value in params.items():
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ConfigError(f"register PARAM_{str(name).upper()}: parameter {name!r} = {value!r} cannot be a "
                              f"register value; accepted: an int or bool in 0..{(1 << 32) - 1} (map a choice "
                              f"to its index first)")
        regs.append(Register(f"param_{name}", "const", (Field("value", 32, reset=value),),
                             f"generator parameter {name}"))
    return regs


def accelerator_regmap(design: str, params: dict) -> RegisterMap:
    """The standard register map of accelerator ``design`` built with ``params`` (see the module docstring).

    ``params`` maps parameter names to ints or bools (e.g.
    ``dataclasses.asdict(config)``); the map is named ``attnforge_<design>``
    (dashes become underscores), which prefixes the C macros.
    """
    if not isinstance(design, str) or not design:
        raise ConfigError(f"accelerator design name {design!r} is not accepted; accepted: a non-empty string")
    major, minor = REGMAP_VERSION
    regs = [
        Register("id", "const", (Field("version_minor", 8, reset=minor), Field("version_major", 8, reset=major),
                                 Field("magic", 16, reset=ID_MAGIC)), "magic and register-layout version"),
        Register("design", "const", (Field("value", 32, reset=design_code(design)),), "CRC-32 of the design name"),
        Register("control", "pulse", (Field("soft_reset", doc="write 1: reset the accelerator and the counters"),
                                      Field("start", doc="write 1: start a job")), "commands"),
        Register("enable", "rw", (Field("enable", doc="1: the accelerator may run"),), "enable"),
        Register("status", "ro", (Field("busy", doc="a job is running"),
                                  Field("errors", 8, lsb=8, doc="error bits (design-defined)")), "status"),
        Register("done_count", "ro", (), "jobs finished"),
        Register("failed_count", "ro", (), "jobs refused or failed"),
    ]
    for name in PERF_COUNTERS:
        doc = _PERF_DOCS[name]
        regs += [Register(f"perf_{name}_lo", "ro", (), f"{doc}, bits 31:0 (read first: latches HI)",
                          read_strobe=True),
                 Register(f"perf_{name}_hi", "ro", (), f"{doc}, bits 63:32 (as of the last LO read)")]
    regs.append(Register("param_count", "const", (Field("value", 32, reset=len(params)),),
                         "number of PARAM_* registers"))
    params_regs = _param_registers(dict(params))
    if params_regs:
        first = params_regs[0]
        params_regs[0] = Register(first.name, first.access, first.fields, first.doc, offset=PARAM_BASE)
    return RegisterMap(f"attnforge_{design.replace('-', '_')}", regs + params_regs)


def _counter_signature():
    return wiring.Signature({"count": In(1), "lo": Out(32), "hi": Out(32), "lo_read": In(1)})


class PerfCounters(wiring.Component):
    """Free-running ``width``-bit event counters with a consistent two-word read.

    Each counter adds 1 in every cycle its ``count`` is high; ``clear`` zeroes
    every counter and latched word (and wins over ``count``). ``lo`` is the
    counter's bits 31:0, live; ``hi`` is its bits ``width-1:32`` as latched in
    the last cycle ``lo_read`` was high (the cycle a register bank samples
    ``lo``), so ``lo`` then ``hi`` read one value (module docstring).

    Timing: the two words are separate registers with the carry between them
    registered (``carry``: set in the cycle the low word wraps, added to the
    high word in the next), so the longest carry chain is 32 bits, not
    ``width`` (a 64-bit chain held an iCE40 UP5K at 35 MHz). The latch takes
    ``high + carry``, the value the high word is about to have, so the pending
    carry never tears a read.

    Members
    -------
    clear : ``In(1)``
    <name> : ``Out(Signature)``, one per name in ``names``
        ``count : In(1)``, ``lo : Out(32)``, ``hi : Out(32)``, ``lo_read : In(1)``.
    """

    def __init__(self, names=PERF_COUNTERS, *, width: int = 64):
        self.names = tuple(names)
        if not self.names or len(set(self.names)) != len(self.names):
            raise ConfigError(f"performance counter names {self.names!r}: accepted: at least one, no duplicates")
        self.width = check_int("performance counter width", width, 33, 64)
        super().__init__({"clear": In(1), **{n: Out(_counter_signature()) for n in self.names}})
        #: The counters' registers by name, ``(low word, high word, carry)``: a testbench may preset
        #: one (e.g. just below 2**32); the count is ``(high + carry) << 32 | low``.
        self.counts = {n: (Signal(32, name=f"{n}_count_lo"), Signal(self.width - 32, name=f"{n}_count_hi"),
                           Signal(name=f"{n}_carry")) for n in self.names}

    def elaborate(self, platform):
        m = Module()
        for name in self.names:
            port = getattr(self, name)
            low, high, carry = self.counts[name]
            latched = Signal(self.width - 32, name=f"{name}_hi_latched")
            high_next = Signal(self.width - 32, name=f"{name}_hi_next")
            low_inc = Signal(33, name=f"{name}_lo_inc")
            m.d.comb += [high_next.eq(high + carry), low_inc.eq(low + 1)]
            with m.If(self.clear):
                m.d.sync += [low.eq(0), high.eq(0), carry.eq(0), latched.eq(0)]
            with m.Else():
                m.d.sync += [high.eq(high_next), carry.eq(port.count & low_inc[32])]
                with m.If(port.count):
                    m.d.sync += low.eq(low_inc[:32])
                with m.If(port.lo_read):
                    m.d.sync += latched.eq(high_next)
            m.d.comb += [port.lo.eq(low), port.hi.eq(latched)]
        return m


class AcceleratorRegisters(wiring.Component):
    """``accelerator_regmap``'s ``RegisterBank`` with ``PerfCounters`` behind its PERF registers.

    Soft reset (``control.soft_reset``) also clears the counters. The ports
    are the bank's (``RegisterBank``: the AXI4-Lite slave and one member per
    register), except that the PERF registers' are replaced by one enable per
    counter.

    Members
    -------
    <AXI4-Lite ports> : as ``RegisterBank``
    control : ``Out(Signature)``
        ``soft_reset : Out(1)``, ``start : Out(1)``: one-cycle pulses.
    enable : ``Out(Signature)``
        ``enable : Out(1)``.
    status : ``Out(Signature)``
        ``busy : In(1)``, ``errors : In(8)``.
    done_count : ``Out(Signature)``
        ``value : In(32)``.
    failed_count : ``Out(Signature)``
        ``value : In(32)``.
    perf : ``Out(Signature)``
        ``busy``, ``stall_in``, ``stall_out``, ``mac_active`` : ``In(1)``: count this cycle.
    """

    def __init__(self, design: str, params: dict, *, addr_width: int | None = None, perf_width: int = 64):
        self.bank = RegisterBank(accelerator_regmap(design, params), addr_width=addr_width)
        self.counters = PerfCounters(width=perf_width)
        members = {name: member for name, member in self.bank.signature.members.items()
                   if not name.startswith("perf_")}
        members["perf"] = Out(wiring.Signature({n: In(1) for n in PERF_COUNTERS}))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bank, counters = self.bank, self.counters
        m.submodules.bank, m.submodules.counters = bank, counters
        outer = {path: Value.cast(v) for path, _, v in self.signature.flatten(self)}
        for path, member, value in bank.signature.flatten(bank):
            if path in outer:
                if member.flow == In:
                    m.d.comb += Value.cast(value).eq(outer[path])
                else:
                    m.d.comb += outer[path].eq(value)
        for name in PERF_COUNTERS:
            lo, hi, port = getattr(bank, f"perf_{name}_lo"), getattr(bank, f"perf_{name}_hi"), getattr(counters, name)
            m.d.comb += [lo.value.eq(port.lo), hi.value.eq(port.hi), port.lo_read.eq(lo.read_strobe),
                         port.count.eq(getattr(self.perf, name))]
        m.d.comb += counters.clear.eq(bank.control.soft_reset)
        return m
