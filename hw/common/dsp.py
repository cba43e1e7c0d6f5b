"""Products in DSP blocks with their operand registers: portable, or ECP5's ``MULT18X18D`` instantiated.

Yosys maps an inferred ``a * b`` on ECP5 to ``MULT18X18D`` with no internal register
(its ``dsp_map_18x18.v`` sets none), so the fabric registers around it stay in the fabric and
a routed path runs register -> long net -> combinational multiplier -> register. With the
primitive instantiated with its input registers (``REG_INPUTA_CLK``/``REG_INPUTB_CLK``) and
its output register (``REG_OUTPUT_CLK``), those registers sit inside the DSP block: the
fabric sees a net into a register and a register out, and nextpnr times the registered mode.

``registered_split_product`` is ``narrow * wide`` in three registered stages either way:
operands, pieces (one DSP multiplier each, as ``split_product`` cuts them), their sum. The
portable form (the default, what every simulation of the default configuration runs) writes
the three stages as Amaranth registers; ``dsp_primitive=True`` puts stages 1 and 2 of each
piece into a ``MULT18X18D``. The stage registers have no reset in either form (the DSP's are
tied off), so the two are the same circuit cycle for cycle, also across a reset.

Yosys ships no simulation model of ``MULT18X18D`` (a black box in ``cells_bb_ecp5.v``):
``MULT18X18D_MODEL`` is attnforge's own, of the modes instantiated here (checked at
elaboration of the model; any other mode stops the simulation). ``sim.runner`` adds it to a
simulation whose Verilog instantiates the primitive; tests/rtl/test_dsp_primitive.py checks it
against Python's product (every pair at small widths, random pairs at full width) and
against the portable form.
"""

from __future__ import annotations

import re
from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Signal

from attnforge.errors import ConfigError

from .trees import DSP_PIECE, delay_stages, product_pieces, split_product, tree_sum

__all__ = ["ECP5_MULT_WIDTH", "MULT18X18D_MODEL", "mult18x18d", "primitive_models", "registered_split_product"]

#: Operand bits of ECP5's MULT18X18D (each operand signed or unsigned by SIGNEDA/SIGNEDB).
ECP5_MULT_WIDTH = 18
#: attnforge's simulation model of the MULT18X18D modes ``mult18x18d`` instantiates.
MULT18X18D_MODEL = Path(__file__).with_name("models") / "MULT18X18D.v"
_INSTANCE = re.compile(r"^\s*MULT18X18D\b", re.MULTILINE)


def primitive_models(verilog: str) -> list[Path]:
    """The simulation models a simulator needs beside ``verilog`` (Amaranth's output): attnforge's
    ``MULT18X18D`` model where the text instantiates one, else none."""
    return [MULT18X18D_MODEL] if _INSTANCE.search(verilog) else []


def mult18x18d(m, a, b, name: str):
    """``a * b`` two cycles later from an ECP5 ``MULT18X18D`` with input and output registers.

    ``a`` and ``b`` (at most 18 bits each, signed or unsigned) are registered inside the DSP block
    (stage 1), their product in its output register (stage 2); no pipeline register, no reset
    (RST0 tied low, the registers start at zero), clock enable tied high; SIGNEDA/SIGNEDB are the
    operands' signedness (each operand is extended to 18 bits by its own). The instance is
    ``m.submodules[name + "_dsp"]``. Returns a signal of the shape of ``a * b``: the low bits of P.
    """
    for label, value in (("a", a), ("b", b)):
        if len(value) > ECP5_MULT_WIDTH:
            raise ConfigError(f"mult18x18d {name}: operand {label} has {len(value)} bits; MULT18X18D takes at "
                              f"most {ECP5_MULT_WIDTH}")
    a18, b18 = Signal(ECP5_MULT_WIDTH, name=f"{name}_a"), Signal(ECP5_MULT_WIDTH, name=f"{name}_b")
    m.d.comb += [a18.eq(a), b18.eq(b)]   # sign- or zero-extended by each operand's own signedness
    p = Signal(2 * ECP5_MULT_WIDTH, name=f"{name}_p")
    ports = {f"i_A{k}": a18[k] for k in range(ECP5_MULT_WIDTH)}
    ports.update({f"i_B{k}": b18[k] for k in range(ECP5_MULT_WIDTH)})
    ports.update({f"o_P{k}": p[k] for k in range(2 * ECP5_MULT_WIDTH)})
    registers = {f"p_REG_{reg}_{what}": value for reg in ("INPUTA", "INPUTB", "OUTPUT")
                 for what, value in (("CLK", "CLK0"), ("CE", "CE0"), ("RST", "RST0"))}
    m.submodules[f"{name}_dsp"] = Instance(
        "MULT18X18D", **registers, p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE", p_GSR="DISABLED",
        p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED", p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_INPUT",
        i_CLK0=ClockSignal(), i_CE0=1, i_RST0=0, i_SIGNEDA=int(a.shape().signed), i_SIGNEDB=int(b.shape().signed),
        i_SOURCEA=0, i_SOURCEB=0, **ports)
    shape = (a * b).shape()
    out = Signal(shape, name=name)
    m.d.comb += out.eq(p[:shape.width].as_signed() if shape.signed else p[:shape.width])
    return out


def registered_split_product(m, narrow, wide, name: str, piece: int = DSP_PIECE, top: int | None = None, *,
                             dsp_primitive: bool = False, piece_stages: int = 0):
    """``narrow * wide`` in three registered stages: the operands (1), each DSP piece's product (2)
    as ``split_product`` cuts ``wide`` (``piece``, ``top``), their shifted sum (3); with
    ``piece_stages`` that many fabric registers per piece between 2 and the sum (stage 3 +
    ``piece_stages``: a far DSP block's output net cut in parts).

    Portable (default): Amaranth registers throughout, which synthesis maps to fabric registers and a
    combinational DSP multiplier. ``dsp_primitive``: each piece an ECP5 ``MULT18X18D`` whose own
    input and output registers are stages 1 and 2 (``mult18x18d``; ``piece`` + 1 and ``top`` must fit
    its 18 bits, as ECP5's cut does). The stage-1 and stage-2 registers have no reset in either form.
    Returns the stage-3 signal (the shape of ``narrow * wide``).
    """
    if not dsp_primitive:
        narrow_reg = Signal(narrow.shape(), name=f"{name}_narrow", reset_less=True)
        wide_reg = Signal(wide.shape(), name=f"{name}_wide", reset_less=True)
        m.d.sync += [narrow_reg.eq(narrow), wide_reg.eq(wide)]
        return split_product(m, narrow_reg, wide_reg, name, piece, top, reset_less=True, piece_stages=piece_stages)
    pieces = product_pieces(wide, piece, top)
    terms = [delay_stages(m, mult18x18d(m, narrow, part, f"{name}_piece{n}"), f"{name}_piece{n}_stage", piece_stages)
             for n, (_, part) in enumerate(pieces)]
    out = Signal((narrow * wide).shape(), name=name)
    m.d.sync += out.eq(tree_sum([term << lo if lo else term for term, (lo, _) in zip(terms, pieces)]))
    return out
