"""Balanced trees: adders, multiplexers and constant tables."""

from __future__ import annotations

from amaranth.hdl import Const, Mux, Signal

from attnforge.errors import check_int

__all__ = ["log2_ceil", "tree_sum", "mux_tree", "rom", "saturate", "split_product", "check_dsp_piece",
           "dsp_piece_for", "DSP_PIECE", "DSP_PIECES", "DSP_PIECE_RANGE"]

#: Bits of the wide operand per piece in ``split_product`` by default (ECP5's): unsigned 17-bit
#: pieces (and a signed top piece of at most 18 bits) each fit one 18x18 DSP multiplier.
DSP_PIECE = 17
#: ``split_product``'s piece width for each FPGA family's DSP multiplier: the widest cut that
#: Yosys maps to one DSP block per piece with nothing of the product left to the logic.
#: ECP5's MULT18X18D multiplies signed 18 x 18 bits: unsigned 17-bit pieces (18 bits with their
#: zero sign bit) and a signed top of at most 18 bits. The iCE40's SB_MAC16 multiplies 16 x 16
#: bits (signed or unsigned): 15-bit pieces and a signed top of at most 16 bits; at 17 or 16
#: bits ``synth_ice40 -dsp`` cuts a piece (or a 17-bit top) again and leaves a one-bit slice of
#: its product to the logic (Yosys 0.70, docs/board.md, "Multipliers in logic").
DSP_PIECES = {"ecp5": 17, "ice40": 15}
#: Piece widths ``split_product`` takes: a 9 x 9 multiplier's (8) to an 18 x 18 one's (17).
DSP_PIECE_RANGE = (8, 17)


def log2_ceil(n: int) -> int:
    """Bits of an index that addresses ``n`` entries (0 for n <= 1)."""
    return (n - 1).bit_length()


def tree_sum(values):
    """Sum as a balanced adder tree: widths grow by log2 of the count, not by the count."""
    values = list(values)
    if not values:
        raise ValueError("tree_sum needs at least one value")
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def mux_tree(values, index):
    """``values[index]`` as a tree of two-input multiplexers on the index bits, LSB first.

    An index past the last value selects the last value of its subtree. (Not an
    ``Array``: Yosys writes that as a case statement in a combinational process,
    which Icarus leaves at X while the index keeps its initial value.)
    """
    level = list(values)
    if not level:
        raise ValueError("mux_tree needs at least one value")
    for bit in range(len(index)):
        level = [Mux(index[bit], level[i + 1], level[i]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def rom(values, width: int, index):
    """A constant table (``width`` bits per entry) read at ``index``, as a ``mux_tree``."""
    return mux_tree([Const(v, width) for v in values], index)


def saturate(value, fmt):
    """``value`` clamped to ``fmt``'s range (an ``attnforge.numfmt.IntFormat``)."""
    return Mux(value > fmt.max, fmt.max, Mux(value < fmt.min, fmt.min, value))


def check_dsp_piece(name: str, piece) -> int:
    """``piece`` if it is a piece width ``split_product`` takes (``DSP_PIECE_RANGE``); else
    ``TypeError``/``ConfigError`` naming ``name``, the value and the range."""
    return check_int(name, piece, *DSP_PIECE_RANGE)


def dsp_piece_for(family: str) -> int:
    """The piece width for an FPGA family's DSP blocks (``DSP_PIECES``)."""
    try:
        return DSP_PIECES[family]
    except KeyError:
        raise ValueError(f"no DSP piece width for FPGA family {family!r}; known: "
                         f"{', '.join(DSP_PIECES)}") from None


def split_product(m, narrow, wide, name: str, piece: int = DSP_PIECE):
    """``narrow * wide`` in two registered stages, for DSP blocks of ``piece + 1`` bits (signed).

    ``wide`` is cut into unsigned ``piece``-bit pieces (the top piece, of 2 to ``piece + 1``
    bits, keeps the sign); stage 1 registers ``narrow`` times each piece (one DSP multiplier
    each, nothing between the DSP and its register), stage 2 registers their shifted sum. A
    ``wide`` of at most ``piece + 1`` bits is one product, registered twice. ``narrow`` must
    fit the DSP's other port: at most ``piece + 1`` bits as a signed operand, or a constant
    whose extra bits are zero. ``piece`` is the target's (``DSP_PIECES``: 17 for ECP5, 15
    for the iCE40); the product is the same at every width. Returns the stage-2 signal (the
    shape of ``narrow * wide``).
    """
    check_dsp_piece("split_product piece", piece)
    value = narrow * wide
    wide_bits = len(wide)
    pieces = [(lo, wide[lo:lo + piece]) for lo in range(0, wide_bits - piece - 1, piece)]
    top = pieces[-1][0] + piece if pieces else 0
    pieces.append((top, wide[top:].as_signed() if wide.shape().signed else wide[top:]))
    partial = []
    for n, (lo, part) in enumerate(pieces):
        term = narrow * part
        reg = Signal(term.shape(), name=f"{name}_piece{n}")
        m.d.sync += reg.eq(term)
        partial.append(reg << lo if lo else reg)
    out = Signal(value.shape(), name=name)
    m.d.sync += out.eq(tree_sum(partial))
    return out
