"""Balanced trees: adders, multiplexers and constant tables."""

from __future__ import annotations

from amaranth.hdl import Const, Mux, Signal, Value

from attnforge.errors import ConfigError, check_int

__all__ = ["replica_tree", "delay_stages", "log2_ceil", "tree_sum", "mux_tree", "rom", "saturate", "split_product", "product_pieces", "dsp_cut", "DSP_PIECE",
           "DSP_CUTS", "DSP_PIECE_RANGE"]

#: Bits of the wide operand per unsigned piece in ``split_product`` by default (ECP5's): unsigned
#: 17-bit pieces (and a signed top piece of at most 18 bits) each fit one 18x18 DSP multiplier.
DSP_PIECE = 17
#: How ``split_product`` cuts the wide operand for each FPGA family's DSP multiplier: (bits per
#: unsigned piece, most bits of the signed top piece), the widest cut that Yosys 0.70 maps to one
#: DSP block per piece with nothing of the product left to the logic (docs/board.md, "Multipliers
#: in logic"). ECP5's MULT18X18D is mapped as a signed 18 x 18 multiplier: unsigned 17-bit pieces
#: (18 bits with their zero sign bit) and a signed top of up to 18 bits. The iCE40's SB_MAC16
#: multiplies 16 x 16 bits, signed or unsigned: unsigned 16-bit pieces and a signed top of up to 16
#: bits, for a narrow operand that is unsigned or a non-negative constant of at most 16 bits (with
#: ECP5's cut ``synth_ice40 -dsp`` cuts each 17-bit piece again and leaves a one-bit slice of its
#: product to the logic).
DSP_CUTS = {"ecp5": (17, 18), "ice40": (16, 16)}
#: Piece widths ``split_product`` takes: a 9 x 9 multiplier's (8) to an 18 x 18 one's (17).
DSP_PIECE_RANGE = (8, 17)


def dsp_cut(family: str) -> tuple[int, int]:
    """``split_product``'s ``(piece, top)`` for an FPGA family's DSP blocks (``DSP_CUTS``)."""
    try:
        return DSP_CUTS[family]
    except KeyError:
        raise ValueError(f"no DSP cut for FPGA family {family!r}; known: {', '.join(DSP_CUTS)}") from None


def replica_tree(m, value, name: str, counts) -> list:
    """``value`` registered through ``len(counts)`` levels of copies, ``counts[n]`` copies at level n,
    each copy of level n fed by one of level n - 1 (copy k by copy ``k * counts[n-1] // counts[n]``:
    contiguous runs, so leaves that sit together share their parent). Every copy carries the attribute
    ``replica`` (``fpga.synth`` keeps the identical copies apart). A registered fan-out tree: each net
    runs from one flip-flop to a few flip-flops (or, at the last level, to a few users). Returns the
    last level's copies, ``len(counts)`` cycles after ``value``."""
    level = [value]
    for n, count in enumerate(counts):
        if count < 1:
            raise ValueError(f"replica_tree needs at least one copy per level, got {counts!r}")
        copies = [Signal.like(value, name=f"{name}_l{n}_{k}", attrs={"replica": 1}) for k in range(count)]
        m.d.sync += [copy.eq(level[k * len(level) // count]) for k, copy in enumerate(copies)]
        level = copies
    return level


def delay_stages(m, value, name: str, stages: int):
    """``value`` through ``stages`` registers without reset (``{name}{k}``); ``value`` itself for 0."""
    for k in range(stages):
        reg = Signal(value.shape(), name=f"{name}{k}", reset_less=True)
        m.d.sync += reg.eq(value)
        value = reg
    return value


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
    """``value`` clamped to ``fmt``'s range (an ``attnforge.numfmt.IntFormat``).

    The range tests read the bits above the format's: a two's-complement value is in a signed
    N-bit range when its bits N-1 and up all equal its sign, in an unsigned one when its sign and
    bits N and up are clear. Those are OR/AND reductions (a LUT tree of a few levels), where
    ``value > fmt.max`` is a carry chain through every bit (31 steps for a 30-bit value: the
    requantizer's routed critical path at ECP5-85k, issue 15). The result's shape is that of the
    comparisons' ``Mux`` (callers narrow it to the format's width)."""
    value = Value.cast(value)
    shape = value.shape()
    width = shape.width
    never = Const(0, 1)
    if shape.signed:
        sign = value[width - 1]
        if fmt.signed:
            # bits fmt.width - 1 .. width - 1 not all equal: out of range, on the sign's side
            top = value[fmt.width - 1:] if width > fmt.width else None
            out = never if top is None else ~(top.all() | ~top.any())
            too_high, too_low = out & ~sign, out & sign
        else:
            # bits fmt.width .. width - 2 (below the sign): any set, above the range
            too_high = ~sign & value[fmt.width:width - 1].any() if width - 1 > fmt.width else never
            too_low = sign
    else:
        keep = fmt.width - 1 if fmt.signed else fmt.width
        too_high = value[keep:].any() if width > keep else never
        too_low = never
    return Mux(too_high, fmt.max, Mux(too_low, fmt.min, value))


def product_pieces(wide, piece: int = DSP_PIECE, top: int | None = None):
    """``wide`` cut as ``split_product`` cuts it: ``[(lo, slice), ...]``, unsigned ``piece``-bit
    slices from bit 0 and a top slice of 2 to ``top`` bits that keeps ``wide``'s sign."""
    check_int("split_product piece", piece, *DSP_PIECE_RANGE)
    top = piece + 1 if top is None else top
    if isinstance(top, bool) or top not in (piece, piece + 1):
        raise ConfigError(f"split_product top must be {piece} or {piece + 1} (piece {piece} or piece + 1), "
                          f"not {top!r}")
    wide_bits = len(wide)
    cuts = [[lo, piece] for lo in range(0, wide_bits - top, piece)]
    top_lo = cuts[-1][0] + piece if cuts else 0
    if wide_bits - top_lo == 1:
        cuts[-1][1] -= 1
        top_lo -= 1
    pieces = [(lo, wide[lo:lo + bits]) for lo, bits in cuts]
    pieces.append((top_lo, wide[top_lo:].as_signed() if wide.shape().signed else wide[top_lo:]))
    return pieces


def split_product(m, narrow, wide, name: str, piece: int = DSP_PIECE, top: int | None = None, *,
                  reset_less: bool = False, piece_stages: int = 0):
    """``narrow * wide`` in two registered stages, the products cut for the target's DSP blocks.

    ``wide`` is cut into unsigned ``piece``-bit pieces and a top piece of 2 to ``top`` bits that
    keeps the sign (``top``: ``piece + 1``, the default, for a signed-only multiplier of ``piece
    + 1`` bits, or ``piece`` for one that also multiplies unsigned operands; a top of one bit takes
    a bit from the piece below). Stage 1 registers ``narrow`` times each piece (one DSP multiplier
    each, nothing between the DSP and its register), stage 2 registers their shifted sum. A
    ``wide`` of at most ``top`` bits is one product, registered twice. ``narrow`` must fit the
    DSP's other port (with ``top == piece``: unsigned, or a non-negative constant, of at most
    ``piece`` bits). ``DSP_CUTS`` has each FPGA family's cut; the product is the same at every
    cut. ``reset_less``: the stage-1 registers without a reset. ``piece_stages``: that many more
    registers (without reset) per piece before the sum, so a piece's long net from a far DSP block
    is cut (the sum is then stage 2 + ``piece_stages``). Returns the last stage's signal (the shape
    of ``narrow * wide``).
    """
    value = narrow * wide
    pieces = product_pieces(wide, piece, top)
    partial = []
    for n, (lo, part) in enumerate(pieces):
        term = narrow * part
        reg = Signal(term.shape(), name=f"{name}_piece{n}", reset_less=reset_less)
        m.d.sync += reg.eq(term)
        reg = delay_stages(m, reg, f"{name}_piece{n}_stage", piece_stages)
        partial.append(reg << lo if lo else reg)
    out = Signal(value.shape(), name=name)
    m.d.sync += out.eq(tree_sum(partial))
    return out
