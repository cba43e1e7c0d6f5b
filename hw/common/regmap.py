"""Register maps: one Python description, three outputs (RTL, C header, Markdown).

A ``RegisterMap`` is a list of ``Register``s, each a list of ``Field``s. From it:

* ``RegisterBank(regmap)`` is an AXI4-Lite slave (32-bit data) whose register
  fields are the component's ports;
* ``c_header(regmap)`` is a C header: per register ``<P>_<REG>_OFFSET`` and
  ``_RESET``, per field ``<P>_<REG>_<FIELD>_SHIFT``, ``_MASK`` (in register
  position) and ``_WIDTH``, under an include guard;
* ``markdown_table(regmap)`` is a Markdown table with one row per field.

Register offsets are assigned in order, 4 bytes apart, unless a register gives
its own (a multiple of 4, above the previous one); field bit positions likewise
follow each other from bit 0 unless a field gives ``lsb``.

Access kinds (one per register):

==========  ==========================================  =========================
access      read                                        port per field
==========  ==========================================  =========================
``const``   the reset value (ID, generator parameters)  none
``ro``      the live input                              ``In(width)``
``rw``      the stored value (reset: ``reset``)         ``Out(width)``, the value
``pulse``   0                                           ``Out(width)``: one cycle
                                                        high per written 1 bit
``w1c``     the sticky flags                            ``In(width)``: each high
                                                        bit sets its flag; a
                                                        written 1 clears it (set
                                                        wins in the same cycle)
==========  ==========================================  =========================

A register with ``read_strobe=True`` also has an ``Out(1)`` member
``read_strobe``, high in the cycle its read is accepted (the cycle its value is
sampled into ``rdata``); ``PerfCounters`` latches a counter's upper word on it.

The checks (``RegisterMap.__init__``) raise ``attnforge.errors.ConfigError``
naming the register, the value and what would be accepted: duplicate names,
names that are not lower-case identifiers, fields that overlap or reach past
bit 31, reset values that do not fit their field, misaligned or overlapping
offsets, and C macro names that would collide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from attnforge.errors import ConfigError, check_choice

__all__ = ["ACCESS_KINDS", "AXI_LITE_PORTS", "Field", "Register", "RegisterMap", "c_header", "markdown_table"]

#: The access kinds a register may have (see the module docstring).
ACCESS_KINDS = ("const", "ro", "rw", "pulse", "w1c")

#: The bank's AXI4-Lite port names (no register may take one of them).
AXI_LITE_PORTS = ("awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp", "bvalid",
                  "bready", "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid", "rready")

_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*\Z")
_DATA_BITS = 32


def _check_name(kind: str, name, where: str = "") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{kind} name {name!r}{where} is not accepted: use a lower-case identifier "
                          f"(letters, digits, single underscores between them, a letter first)")
    return name


@dataclass(frozen=True)
class Field:
    """A bit range of a register.

    Parameters
    ----------
    name : str
        Lower-case identifier, unique in its register.
    width : int
        Bits, 1..32.
    lsb : int or None
        Lowest bit; ``None`` places the field right above the previous one (bit 0 for the first).
    reset : int
        Reset value of an ``rw`` field, the value of a ``const`` one; must fit ``width`` bits.
    doc : str
        One line for the header and the table.
    """

    name: str
    width: int = 1
    lsb: int | None = None
    reset: int = 0
    doc: str = ""

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        """The field's bits in register position."""
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """One 32-bit register.

    Parameters
    ----------
    name : str
        Lower-case identifier, unique in the map.
    access : str
        One of ``ACCESS_KINDS``.
    fields : tuple of Field
        Its fields; empty means one 32-bit field ``value``.
    doc : str
        One line for the header and the table.
    offset : int or None
        Byte offset; ``None`` means 4 past the previous register (0 for the first).
    read_strobe : bool
        Add an ``Out(1)`` port pulsed when the register is read.
    """

    name: str
    access: str
    fields: tuple = ()
    doc: str = ""
    offset: int | None = None
    read_strobe: bool = False

    @property
    def reset(self) -> int:
        """The register's reset (or constant) word."""
        return sum(f.reset << f.lsb for f in self.fields)


def _place_fields(reg: Register) -> Register:
    """``reg`` with every field's ``lsb`` assigned and checked (width, reset, overlap)."""
    where = f" of register {reg.name!r}"
    fields = reg.fields or (Field("value", _DATA_BITS, 0, 0, reg.doc),)
    placed, used, seen, lsb = [], 0, set(), 0
    for f in fields:
        if not isinstance(f, Field):
            raise TypeError(f"register {reg.name!r}: fields must be Field instances, not {f!r}")
        _check_name("field", f.name, where)
        if f.name in seen:
            raise ConfigError(f"field name {f.name!r}{where} is used twice; field names must be unique per register")
        if reg.read_strobe and f.name == "read_strobe":
            raise ConfigError(f"field name 'read_strobe'{where} is taken by the read strobe port; rename the field")
        seen.add(f.name)
        if isinstance(f.width, bool) or not isinstance(f.width, int) or not 1 <= f.width <= _DATA_BITS:
            raise ConfigError(f"field {f.name!r}{where} has width {f.width!r}; accepted: 1..{_DATA_BITS} bits")
        lsb = lsb if f.lsb is None else f.lsb
        if isinstance(lsb, bool) or not isinstance(lsb, int) or lsb < 0 or lsb + f.width > _DATA_BITS:
            raise ConfigError(f"field {f.name!r}{where} at lsb {lsb!r} with width {f.width} reaches bit "
                              f"{lsb + f.width - 1 if isinstance(lsb, int) else '?'}; accepted: bits 0..31, "
                              f"lsb + width <= {_DATA_BITS}")
        if isinstance(f.reset, bool) or not isinstance(f.reset, int) or not 0 <= f.reset < 1 << f.width:
            raise ConfigError(f"field {f.name!r}{where} has reset value {f.reset!r}, which does not fit its "
                              f"{f.width} bits; accepted: 0..{(1 << f.width) - 1}")
        field = Field(f.name, f.width, lsb, f.reset, f.doc)
        if used & field.mask:
            other = next(p.name for p in placed if p.mask & field.mask)
            raise ConfigError(f"field {f.name!r}{where} (bits {field.msb}:{lsb}) overlaps field {other!r}; "
                              f"accepted: fields on disjoint bits")
        used |= field.mask
        placed.append(field)
        lsb = field.msb + 1
    return Register(reg.name, reg.access, tuple(placed), reg.doc, reg.offset, reg.read_strobe)


class RegisterMap:
    """A checked list of registers with their offsets assigned.

    ``registers`` are ``Register``s (their fields and offsets placed here);
    ``name`` prefixes the C macros (upper-cased) and names the include guard.
    Iterating yields the placed registers in offset order; ``map[name]`` finds one.
    """

    def __init__(self, name: str, registers):
        self.name = _check_name("register map", name)
        self.registers = self._place(list(registers))
        self._by_name = {r.name: r for r in self.registers}
        self._check_macros()

    @staticmethod
    def _place(registers) -> tuple:
        placed, names, offset = [], set(), 0
        for reg in registers:
            if not isinstance(reg, Register):
                raise TypeError(f"a register map takes Register instances, not {reg!r}")
            _check_name("register", reg.name)
            if reg.name in names:
                raise ConfigError(f"register name {reg.name!r} is used twice; register names must be unique")
            if reg.name in AXI_LITE_PORTS:
                raise ConfigError(f"register name {reg.name!r} is an AXI4-Lite port name; accepted: any other name")
            names.add(reg.name)
            check_choice(f"register {reg.name!r} access", reg.access, ACCESS_KINDS)
            if reg.offset is not None:
                if isinstance(reg.offset, bool) or not isinstance(reg.offset, int) or reg.offset % 4 \
                        or reg.offset < offset:
                    raise ConfigError(f"register {reg.name!r} has offset {reg.offset!r}; accepted: a multiple "
                                      f"of 4 at or above {offset:#x} (past the previous register)")
                offset = reg.offset
            reg = _place_fields(reg)
            placed.append(Register(reg.name, reg.access, reg.fields, reg.doc, offset, reg.read_strobe))
            offset += 4
        if not placed:
            raise ConfigError(f"register map has no registers; accepted: at least one")
        return tuple(placed)

    def _check_macros(self) -> None:
        seen: dict[str, str] = {}
        for reg in self.registers:
            names = {f"{reg.name}_offset": reg.name, f"{reg.name}_reset": reg.name}
            for f in reg.fields:
                for suffix in ("shift", "mask", "width"):
                    names[f"{reg.name}_{f.name}_{suffix}"] = f"{reg.name}.{f.name}"
            for macro, owner in names.items():
                if macro in seen:
                    raise ConfigError(f"register {reg.name!r}: C macro {self.macro(macro)} of {owner} collides "
                                      f"with {seen[macro]}'s; accepted: names whose macros differ")
                seen[macro] = owner

    def macro(self, suffix: str) -> str:
        """The C macro name ``<MAP>_<SUFFIX>``."""
        return f"{self.name}_{suffix}".upper()

    @property
    def size(self) -> int:
        """Bytes spanned: the last register's offset + 4."""
        return self.registers[-1].offset + 4

    def __iter__(self):
        return iter(self.registers)

    def __len__(self) -> int:
        return len(self.registers)

    def __getitem__(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"register map {self.name!r} has no register {name!r}") from None


def c_header(regmap: RegisterMap) -> str:
    """The C header of ``regmap``: offsets, reset words, and each field's shift, mask and width."""
    guard = regmap.macro("regs_h")
    lines = [f"/* {regmap.name}: register map ({len(regmap)} registers, {regmap.size} bytes).",
             " * Generated by attnforge (attnforge.hw.common.regmap); do not edit. */",
             f"#ifndef {guard}", f"#define {guard}", ""]
    for reg in regmap:
        doc = f" ({reg.doc})" if reg.doc else ""
        lines.append(f"/* {reg.name.upper()}: {reg.access}{doc} */".replace("*/ */", "*/"))
        lines.append(f"#define {regmap.macro(reg.name + '_offset')} 0x{reg.offset:04x}u")
        lines.append(f"#define {regmap.macro(reg.name + '_reset')} 0x{reg.reset:08x}u")
        for f in reg.fields:
            base = regmap.macro(f"{reg.name}_{f.name}")
            lines += [f"#define {base}_SHIFT {f.lsb}u", f"#define {base}_MASK 0x{f.mask:08x}u",
                      f"#define {base}_WIDTH {f.width}u"]
        lines.append("")
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"


def markdown_table(regmap: RegisterMap) -> str:
    """A Markdown table of ``regmap``: one row per field, in offset then bit order."""
    rows = ["| offset | register | access | field | bits | reset | description |",
            "|---|---|---|---|---|---|---|"]
    for reg in regmap:
        for f in reg.fields:
            bits = f"{f.lsb}" if f.width == 1 else f"{f.msb}:{f.lsb}"
            doc = (f.doc or reg.doc).replace("|", "\\|")
            rows.append(f"| 0x{reg.offset:03x} | {reg.name.upper()} | {reg.access} | {f.name} | {bits} "
                        f"| 0x{f.reset:x} | {doc} |")
    return "\n".join(rows) + "\n"
