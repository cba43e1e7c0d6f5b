"""Balanced trees: adders, multiplexers and constant tables."""

from __future__ import annotations

from amaranth.hdl import Const, Mux, Signal

__all__ = ["log2_ceil", "tree_sum", "mux_tree", "rom", "saturate", "split_product", "DSP_PIECE"]

#: Bits of the wide operand per piece in ``split_product``: unsigned 17-bit pieces (and a
#: signed top piece of at most 18 bits) each fit one 18x18 DSP multiplier.
DSP_PIECE = 17


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


def split_product(m, narrow, wide, name: str):
    """``narrow * wide`` in two registered stages, for DSP blocks of 18x18 bits.

    ``wide`` is cut into unsigned DSP_PIECE-bit pieces (the top piece keeps the sign);
    stage 1 registers ``narrow`` times each piece (one DSP multiplier each, nothing between
    the DSP and its register), stage 2 registers their shifted sum. A ``wide`` that fits
    one DSP is one product, registered twice. ``narrow`` must be at most 18 bits. Returns
    the stage-2 signal (the shape of ``narrow * wide``).
    """
    value = narrow * wide
    wide_bits = len(wide)
    pieces = [(lo, wide[lo:lo + DSP_PIECE]) for lo in range(0, wide_bits - DSP_PIECE - 1, DSP_PIECE)]
    top = pieces[-1][0] + DSP_PIECE if pieces else 0
    pieces.append((top, wide[top:].as_signed() if wide.shape().signed else wide[top:]))
    partial = []
    for n, (lo, piece) in enumerate(pieces):
        term = narrow * piece
        reg = Signal(term.shape(), name=f"{name}_piece{n}")
        m.d.sync += reg.eq(term)
        partial.append(reg << lo if lo else reg)
    out = Signal(value.shape(), name=name)
    m.d.sync += out.eq(tree_sum(partial))
    return out
