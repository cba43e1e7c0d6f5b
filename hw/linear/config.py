"""Parameters of the linear-attention decode datapath and the layouts its parts share.

``LinearDecodeConfig`` is what a user sets; every width comes from its
``LinearDecodeFormat`` (``attnforge.linear_format``), which the golden model
uses too. The pipeline constants (depths, the divider's stages) live here
because the cycle model (``pipeline_depth``) and the components read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Shape, signed
from amaranth.lib import data

from attnforge.errors import ConfigError, check_choice, check_int
from attnforge.linear_format import DIV_DEN_BITS, DIV_FRAC_BITS, FEATURE_MAPS, PHI_FORMAT, LinearDecodeFormat
from attnforge.numfmt import INT8, IntFormat

from ..common import DSP_CUTS, dsp_cut, log2_ceil

__all__ = [
    "LinearDecodeConfig", "Pipelining", "PIPELININGS", "REGISTER_CHOICES", "FAMILY_FIELDS", "pipeline_depth", "MAX_HEADS", "STATE_WRITE_GAP",
    "LANE_REGION", "STATE_SLICE_LANES", "STATE_ONE_SLICE_LANES", "LANE_FANOUT_LEVELS", "TREE_CHUNK",
    "BLOCK_SLICE_CELLS", "BLOCK_READ_CELLS", "RECIP_BITS",
    "DIV_STEPS_PER_STAGE", "DIV_STAGES", "NORM_DELAY", "NORM_EXTRA_DEPTH", "shape_of",
]

MAX_HEADS = 16


@dataclass(frozen=True)
class Pipelining:
    """How deep the datapath's fan-out trees and arithmetic are pipelined, per FPGA family: the
    register levels that close timing on a large ECP5 (long nets across the device, issue 15) cost
    flip-flops that a small iCE40's logic cells pay for one each (there the limit is logic, not
    nets). The results are the same; the cycles differ by ``pipeline_depth``, which the cycle model
    takes from here (``LinearDecodeConfig.pipelining`` picks one of ``PIPELININGS``).

    Fields
    ------
    block_read_levels : int
        Register levels of the draft block's read address (``DraftBlock``): the command FSM's
        combinational address into root registers, ``block_roots`` copies, one per write slice,
        then one per read part of ``BLOCK_READ_CELLS`` LUT-RAM cells (the trailing levels when
        fewer). The token's word leaves the memory that many cycles after its address
        (``block_read_register`` adds one: ``block_read_latency``).
    block_write_levels : int
        Register levels of the draft block's write address, enable and data (the trailing levels
        of ``block_roots`` copies, one per slice, one per read part). A write lands that many
        cycles after its beat; a read sees every write up to ``block_read_sees`` cycles after its
        address, which must be 0 (the write of the address's own cycle, what the command control
        needs) or 1 (later, a write of the next block could be seen by a read of the pass before).
    block_roots : int
        Copies of the draft block's addresses (and write enable) ahead of the slices' copies.
    state_addr_roots : int
        Registered copies of the state memory's read address that the fetch stage hands the lanes
        (its last register level), each feeding the copies of a run of slices (``state_slices``).
    lane_group : int
        Lanes per replicated copy of the update stage's control bits and v (registered fan-out).
    readout_piece_stages : int
        Fabric registers per DSP piece of a readout product before the pieces' sum (a far DSP
        block's output net cut in parts; ``registered_split_product``).
    output_part_bytes : int
        0: the output buffer one memory with a synchronous read; n: in parts of n bytes, each read
        through its own registered copy of the read address (ECP5's LUT RAMs: one address
        register into all 128 cells of the buffer was a routed critical path, an 8.3 ns net).
    readout_tree_chunks : tuple of int
        Readout products (then partial sums) summed per register in the adder tree's stages; the
        numerator register sums the rest.
    output_stages : int
        Requantizer stages of the output stage before the buffer's write: 4 (two product stages,
        the rounding shifts saturated into the mid format, the sum saturated to int8), 5 (the
        rounding adds apart from their saturation) or 6 (the sum registered before its saturation).
    block_read_register : bool
        The draft block's read data registered in the block, a register per read part beside its
        LUT RAMs, before the control's word register and v's group select (ECP5: a part's address
        copy through its LUT RAMs' asynchronous read and the 8 : 1 group select into v's group
        register, 5 ns of net between them, was a routed critical path at 98.58 MHz, issue 15). One
        cycle more from the address to the word (``block_read_latency``); what a read sees is
        unchanged (``block_read_sees`` counts the address's levels).
    group_sum_register : bool
        (``groups`` > 1) The row-group sums' block RAM read two cycles ahead and its data registered
        before the add, instead of one cycle ahead into the add: the loop read -> add -> write has a
        register in it (the iCE40's routed critical path at d = 12, M = 2 and 3: the RAM's output
        through a 30-bit carry chain). No cycle more; a pass needs at least 3 state columns (a
        sum written is read back by the next row group no sooner), so with fewer it is not used.
        With at least 4 columns the sum is also written from the numerator's register, a cycle later,
        so the add ends at a register, not at the RAM's write data (the loop's two halves: RAM ->
        read register, add -> numerator register -> RAM).
    conv_group_select : bool
        The convolution rows' byte at the element's column picked in two registered steps, the
        column's group of SELECT_GROUP bytes (a column copy per byte lane) then the byte (ECP5: the
        64 : 1 select with one column register was a routed critical path), or (False) in one, the
        byte registered and then delayed a cycle: the same latency, 16 flip-flops a row instead of 75
        and one column copy instead of 8 (the iCE40, where flip-flops cost logic cells).
    conv_taps_early : bool
        A TAPS command's row lands in the tap registers ``convolution.TAP_LOAD_LATENCY`` cycles after
        the command, the least a pass in flight allows, instead of ``block_read_latency`` (the
        history's delay): ``block_read_latency - TAP_LOAD_LATENCY`` rows of 8 d flip-flops fewer (one
        at the iCE40 levels).
    """

    block_read_levels: int
    block_write_levels: int
    block_roots: int
    state_addr_roots: int
    lane_group: int
    readout_tree_chunks: tuple[int, ...]
    output_stages: int
    readout_piece_stages: int = 0
    output_part_bytes: int = 0
    group_sum_register: bool = False
    block_read_register: bool = False
    conv_group_select: bool = True
    conv_taps_early: bool = False

    def __post_init__(self):
        if self.block_read_levels < 1 or self.block_write_levels < 1 or self.block_read_sees not in (0, 1):
            raise ConfigError(f"linear decode pipelining: block_read_levels - block_write_levels - 1 must be 0 or "
                              f"1 (block_read_levels {self.block_read_levels}, block_write_levels "
                              f"{self.block_write_levels}, each at least 1): a read sees the write of its "
                              "address's cycle, but not the next block's")
        if self.output_stages not in (4, 5, 6):
            raise ConfigError(f"linear decode pipelining: output_stages must be 4, 5 or 6, not {self.output_stages}")
        if min(self.readout_piece_stages, self.output_part_bytes) < 0:
            raise ConfigError(f"linear decode pipelining: readout_piece_stages and output_part_bytes at least 0, not "
                              f"{self.readout_piece_stages}, {self.output_part_bytes}")
        if min(self.block_roots, self.state_addr_roots, self.lane_group) < 1 or \
                any(c < 2 for c in self.readout_tree_chunks):
            raise ConfigError(f"linear decode pipelining: block_roots, state_addr_roots and lane_group at least 1, "
                              f"readout tree chunks at least 2, not {self.block_roots}, {self.state_addr_roots}, "
                              f"{self.lane_group}, {self.readout_tree_chunks}")

    @property
    def block_read_sees(self) -> int:
        """Cycles after a read's address up to which a write taken is seen by that read."""
        return self.block_read_levels - self.block_write_levels - 1

    @property
    def block_read_latency(self) -> int:
        """Cycles from the draft block's read address to its word: the address's register levels, and
        the read data's register when there is one."""
        return self.block_read_levels + self.block_read_register

    @property
    def fetch_stages(self) -> int:
        """Register stages of the fetch: the element's context waits block_read_latency cycles for the
        draft token's word (registered in the last of them, beside the last level of the column's
        copies), then phi(q), phi(k) and v are taken from it in one more."""
        return self.block_read_latency + 1

    @property
    def lanes_latency(self) -> int:
        """Cycles from an element's update stage (the cycle after its fetch) to its numerator leaving
        the lanes: LANE_FANOUT_LEVELS - 1 input registers (the first level of the fan-out tree),
        then the read register, two update product stages, running word, readout operands, two DSP
        product stages, the pieces' registers, the adder tree's registered stages and the numerator
        register. The convolution delays its sum by as much."""
        return LANE_FANOUT_LEVELS - 1 + 8 + self.readout_piece_stages + len(self.readout_tree_chunks)

    @property
    def pipeline_depth(self) -> int:
        """Cycles from a pass's last issue to its output-buffer half being seen full by the emitter
        (the fetch stages, the lanes, the requantizer stages, then the flag register)."""
        return self.fetch_stages + self.lanes_latency + self.output_stages + 1


#: Register levels from the fetch stage's v (and bank-zero bit) to a lane group's copy: one copy
#: per region of LANE_REGION lanes, then one per ``lane_group`` lanes beside them (a fan-out tree,
#: issue 15: one level left a group's copy 89 tiles from its lanes). Every other input of the
#: lanes is delayed by as many registers less one.
LANE_FANOUT_LEVELS = 2
#: Two adder levels per readout tree stage after the first.
TREE_CHUNK = 4
#: The pipelining of each FPGA family (``LinearDecodeConfig.pipelining``; ``attnforge synth`` and
#: ``board build`` take the device's).
PIPELININGS = {
    # For 100 MHz on the ECP5-85k (issue 15, docs/linear-hw.md): the draft block's read address from
    # one root register then 3 copies, then a copy per slice and per read part (one root register
    # ahead of the 12 slice copies was a 9.4 ns net); its write address and enable from 3 root
    # copies, then per slice and per part (one copy per slice into its 32 LUT-RAM cells was an 11.0 ns
    # net, then the FSM's enable into the 12 slice copies a 6.2 ns net); a copy of the lanes' control
    # bits and v per lane (a copy per 8 lanes left 8.5 ns of net to a far lane); the readout tree
    # starts with pairs (the nets from the DSP products are the long ones: a 5.7 ns net into a sum of
    # four); the state read address from 4 copies in the fetch stage's last register (one register
    # into the 16 slices' copies was a 10.8 ns net); the requantizer's rounding add apart from its
    # saturation, the sum registered before its int8 saturation (4.1 ns of logic with the add); a
    # register per readout DSP piece (132 of the 156 DSP blocks: some sit 79 columns from the adder
    # tree, an 8.5 ns net); the output buffer in parts of 8 bytes with their own read address copy; the
    # draft block's read data registered per part (its LUT RAMs' read into v's group select, 5 ns of
    # net, was seed 2's path at 98.58 MHz).
    "ecp5": Pipelining(block_read_levels=4, block_write_levels=3, block_roots=3, state_addr_roots=4, lane_group=1,
                       readout_tree_chunks=(2, TREE_CHUNK, TREE_CHUNK), output_stages=6, readout_piece_stages=1,
                       output_part_bytes=8, block_read_register=True),
    # The iCE40UP5K's 5,280 logic cells have one flip-flop each and its nets are short: one write
    # register level (192 bits at d = 8 instead of 576), one root, a copy per 8 lanes, the readout
    # tree in sums of four (the design before the ECP5 timing rounds, docs/board.md: the iCEBreaker
    # build at 88 % of the logic cells); the requantizer's rounding apart from its saturation and the
    # row-group sums' RAM read registered (the UP5K's routed critical paths at d = 12, M = 2 and 3), the
    # sum written back from the numerator's register (d = 9, M = 3); the convolution rows' byte picked in
    # one step (the two-step select's group registers and column copies cost a logic cell per flip-flop).
    "ice40": Pipelining(block_read_levels=3, block_write_levels=1, block_roots=1, state_addr_roots=1, lane_group=8,
                        readout_tree_chunks=(TREE_CHUNK, TREE_CHUNK), output_stages=5, group_sum_register=True,
                        conv_group_select=False, conv_taps_early=True),
}
#: The configuration's fields with a fixed set of values, as their PARAM_* registers hold them (the
#: index in the set: ``register_params``).
REGISTER_CHOICES = {"feature_map": FEATURE_MAPS, "pipelining": tuple(PIPELININGS)}
#: The fields whose default is the target's FPGA family (``attnforge synth``'s device, ``board build``'s
#: board): how the products are cut for its DSP blocks and how deep the datapath is pipelined.
FAMILY_FIELDS = ("dsp_family", "pipelining")
#: A state word written back by a pass element (read register, two update product stages,
#: running word, write: five cycles after its fetch into the lanes; the lanes' input registers
#: delay its read address and its write alike) is seen by a read
#: fetched STATE_WRITE_GAP cycles after that element. Passes of at least STATE_WRITE_GAP
#: words never read a word that soon; shorter ones (d <= 4) start no earlier than
#: STATE_WRITE_GAP cycles after the previous pass's last issue (the control and the cycle
#: model both wait).
STATE_WRITE_GAP = 6
#: Lanes per first-level copy of the update stage's v and bank-zero bit (LANE_FANOUT_LEVELS).
LANE_REGION = 16
#: Lanes per slice of the state memory (``state_slices``): each slice its own memory with its own
#: registered copies of the read and write addresses (one address register into all 48 block
#: RAMs at d = 64 was a routed critical path, an 11.7 ns net, issue 15). At the 27-bit state of
#: d = 64, 4 lanes are 108 bits: three DP16KD of 36.
STATE_SLICE_LANES = 4
#: Up to this many lanes the state memory is one slice (its address nets stay short, and the small
#: FPGAs' block RAMs are not split further).
STATE_ONE_SLICE_LANES = 8
#: LUT-RAM cells (ECP5 DPR16X4: 16 words x 4 bits) per bit slice of the draft-block memory,
#: each slice with its own copy of the registered write address and enable (``DraftBlock``).
#: At d = 64, t_max <= 16: 384 cells in 12 slices of 128 bits.
BLOCK_SLICE_CELLS = 32
#: LUT-RAM cells per read part of a draft-block slice: each part has its own last-level copy of
#: the read address (``Pipelining.block_read_levels``). At d = 64, t_max <= 16: 48 parts of 32 bits.
BLOCK_READ_CELLS = 8
#: relu_norm: bits of the reciprocal floor(2**(DIV_DEN_BITS+DIV_FRAC_BITS) / den')
#: (den' = 1 gives the largest, 2**24), and restoring-division steps per pipeline stage.
RECIP_BITS = DIV_DEN_BITS + DIV_FRAC_BITS + 1
DIV_STEPS_PER_STAGE = 3
DIV_STAGES = -(-RECIP_BITS // DIV_STEPS_PER_STAGE)
#: relu_norm: stages the numerators wait (delay line) so that the reciprocal of their
#: token's denominator, computed from the pass's first column, is ready: two
#: normalization stages + DIV_STAGES, less the one cycle a one-token block leaves.
NORM_DELAY = DIV_STAGES + 1
#: relu_norm: extra stages on the output path: the delay line, shift, product, rounding.
NORM_EXTRA_DEPTH = NORM_DELAY + 3


#: Bytes of a convolution history or tap row kept in the fetch cycle around the element's column (a
#: power of two: the column's low three bits pick the byte a cycle later; hw/linear/convolution.py)
SELECT_GROUP = 8


def conv_column_copies(d: int, group_select: bool = True) -> int:
    """Registered copies of the element's column per convolution row: one per byte lane of the
    row's group multiplexer (each selects among the row's d / SELECT_GROUP groups), one when the
    row is a single group or its byte is picked in one step (``Pipelining.conv_group_select`` False)."""
    return SELECT_GROUP if group_select and d > SELECT_GROUP else 1


def shape_of(fmt: IntFormat) -> Shape:
    """The Amaranth shape of a value in ``fmt``."""
    return Shape(fmt.width, fmt.signed)


def pipeline_depth(feature_map: str, pipelining: str = "ecp5") -> int:
    """Cycles from a pass's last issue to its output half being seen full (cycle model)."""
    check_choice("linear decode pipelining", pipelining, PIPELININGS)
    return PIPELININGS[pipelining].pipeline_depth + (NORM_EXTRA_DEPTH if feature_map == "relu_norm" else 0)


@dataclass(frozen=True)
class LinearDecodeConfig:
    """Generator parameters of the linear-attention decode datapath.

    Parameters
    ----------
    d : int
        Head dimension, 2..256.
    macs : int
        M, state elements processed per cycle (each lane has one update and one
        readout multiplier); must divide d.
    conv_taps : int
        K, causal depthwise convolution kernel size (1..16).
    max_tokens : int
        Committed tokens per sequence for which the widths are proven safe.
    t_max : int
        Largest verify block (draft tokens at once), 1..64.
    heads : int
        Heads time-multiplexed on the one datapath (own state, history, taps), 1..16.
    feature_map : str
        ``"relu"`` (unnormalized) or ``"relu_norm"`` (normalized: the normalizer z is
        kept as one more column of the state, ``den = phi(q)^T z`` comes out of the
        readout lanes first in each pass, a pipelined divider takes its reciprocal).
    attn_multiplier, attn_shift, conv_multiplier, conv_shift : int
        Requantizers of the attention numerator and of the convolution.
    snapshots : bool
        Keep ``t_max + 1`` state banks per head instead of 2: a verify pass writes
        the state after *every* draft token, so ``commit(a)`` is free for every a
        (no replay pass), at ``(t_max + 1) / 2`` times the state memory.
    dsp_family : str
        The FPGA family whose DSP multipliers the readout and requantizer products are cut
        for (``split_product``, ``DSP_CUTS``): ``"ecp5"`` (MULT18X18D, 18x18: 17-bit pieces)
        or ``"ice40"`` (SB_MAC16, 16x16: 16-bit pieces); ``attnforge synth`` and ``board
        build`` choose the device's. The results are the same for both; not a register.
    dsp_primitives : bool
        ECP5 only: the readout products in instantiated ``MULT18X18D`` blocks with their input and
        output registers (``registered_split_product``), so no fabric register sits between a
        DSP and the operand registers the readout stage has anyway; simulated with attnforge's
        own model of the cell. Off (the portable form, an inferred ``*`` in the same stages) by
        default. The results and cycles are the same; not a register.
    pipelining : str
        How deep the fan-out trees and the arithmetic are pipelined (``PIPELININGS``): ``"ecp5"``
        (for 100 MHz on the ECP5-85k, the default) or ``"ice40"`` (fewer registers, for the
        UP5K's logic cells); ``attnforge synth`` and ``board build`` choose the device's. The results
        are the same, the cycles differ by the pipeline depth (the cycle model takes it from here),
        so it is a register (PARAM_PIPELINING: a driver needs it to predict the cycles).
    """

    # The arithmetic parameters' defaults are LinearDecodeFormat's (one place).
    d: int = LinearDecodeFormat.d
    macs: int = LinearDecodeFormat.d      # M = d: one row group, and it always divides the default d
    conv_taps: int = LinearDecodeFormat.conv_taps
    max_tokens: int = LinearDecodeFormat.max_tokens
    t_max: int = LinearDecodeFormat.t_max
    heads: int = 1
    feature_map: str = LinearDecodeFormat.feature_map
    attn_multiplier: int = LinearDecodeFormat.attn_multiplier
    attn_shift: int = LinearDecodeFormat.attn_shift
    conv_multiplier: int = LinearDecodeFormat.conv_multiplier
    conv_shift: int = LinearDecodeFormat.conv_shift
    snapshots: bool = False
    # How the products are cut for the FPGA's DSP blocks: the Verilog's structure, not what it
    # computes, so not one of the PARAM_* registers (``register_params``).
    dsp_family: str = field(default="ecp5", metadata={"register": False})
    dsp_primitives: bool = field(default=False, metadata={"register": False})
    pipelining: str = "ecp5"

    def __post_init__(self):
        check_choice("linear decode dsp_family", self.dsp_family, DSP_CUTS)
        check_choice("linear decode pipelining", self.pipelining, PIPELININGS)
        for name in ("snapshots", "dsp_primitives"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"linear decode {name} must be a bool, not {getattr(self, name)!r}")
        if self.dsp_primitives and self.dsp_family != "ecp5":
            raise ConfigError(f"linear decode dsp_primitives instantiates ECP5's MULT18X18D; dsp_family is "
                              f"{self.dsp_family!r} (use dsp_family 'ecp5', or leave dsp_primitives off)")
        check_int("linear decode macs (M)", self.macs, 1)
        check_int("linear decode heads", self.heads, 1, MAX_HEADS)
        fmt = self.format  # validates d, K, max_tokens, t_max, feature_map, requantizers
        if self.macs > fmt.d or fmt.d % self.macs:
            raise ValueError(f"linear decode macs (M) must divide d={self.d} (1 <= M <= d), not {self.macs}")

    @property
    def format(self) -> LinearDecodeFormat:
        return LinearDecodeFormat(d=self.d, conv_taps=self.conv_taps, max_tokens=self.max_tokens,
                                  t_max=self.t_max, feature_map=self.feature_map,
                                  attn_multiplier=self.attn_multiplier, attn_shift=self.attn_shift,
                                  conv_multiplier=self.conv_multiplier, conv_shift=self.conv_shift)

    @property
    def pipe(self) -> Pipelining:
        """The register levels of ``pipelining``."""
        return PIPELININGS[self.pipelining]

    @property
    def pipeline_depth(self) -> int:
        """Cycles from a pass's last issue to its output half being seen full (``pipeline_depth``)."""
        return pipeline_depth(self.feature_map, self.pipelining)

    @property
    def dsp_cut(self) -> tuple[int, int]:
        """``split_product``'s (piece, top) for ``dsp_family``'s DSP blocks."""
        return dsp_cut(self.dsp_family)

    @property
    def groups(self) -> int:
        """G, row groups of M state rows."""
        return self.d // self.macs

    @property
    def normalized(self) -> bool:
        return self.feature_map == "relu_norm"

    @property
    def columns(self) -> int:
        """State columns a pass walks: d, plus the normalizer z (relu_norm)."""
        return self.d + 1 if self.normalized else self.d

    @property
    def banks(self) -> int:
        """State banks per head."""
        return self.t_max + 1 if self.snapshots else 2

    @property
    def head_width(self) -> int:
        return max(1, log2_ceil(self.heads))

    # ---------------------------------------------------------------- shapes

    @property
    def state_depth(self) -> int:
        """Words of the state memory: per head, bank, row group and column, one word of M elements."""
        return self.heads * self.banks * self.groups * self.columns

    @property
    def state_word(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(self.format.state_format.width), self.macs)

    @property
    def state_slices(self) -> int:
        """Slices of the state memory, each STATE_SLICE_LANES lanes wide (one slice up to
        STATE_ONE_SLICE_LANES lanes, or when M is not a multiple of STATE_SLICE_LANES)."""
        if self.macs <= STATE_ONE_SLICE_LANES or self.macs % STATE_SLICE_LANES:
            return 1
        return self.macs // STATE_SLICE_LANES

    @property
    def state_addr_roots(self) -> int:
        """Copies of the state read address from the fetch stage (``Pipelining.state_addr_roots``, at
        most one per slice)."""
        return min(self.pipe.state_addr_roots, self.state_slices)

    @property
    def state_slice_word(self) -> data.ArrayLayout:
        """One slice's word: ``macs // state_slices`` state elements."""
        return data.ArrayLayout(self.state_word.elem_shape, self.macs // self.state_slices)

    @property
    def block_depth(self) -> int:
        """Words of the draft-block memory (at least 2: a 1-deep memory has a zero-width address)."""
        return max(self.t_max, 2)

    @property
    def block_word(self) -> data.StructLayout:
        """One draft token: q, k and v, d int8 each."""
        vec = data.ArrayLayout(shape_of(INT8), self.d)
        return data.StructLayout({"q": vec, "k": vec, "v": vec})

    @property
    def block_slices(self) -> int:
        """Bit slices of the draft-block memory: about ``BLOCK_SLICE_CELLS`` LUT-RAM cells of
        16 words x 4 bits each (12 at d = 64 with t_max <= 16, 3 at d = 16, 1 at d <= 5)."""
        width = Shape.cast(self.block_word).width
        return -(-width // self.block_slice_bits)

    @property
    def block_slice_bits(self) -> int:
        """Bits of one draft-block slice (a multiple of 4, the LUT RAM's width, where it can be)."""
        width = Shape.cast(self.block_word).width
        nibbles = -(-width // 4)
        cells = nibbles * -(-self.block_depth // 16)
        slices = max(1, -(-cells // BLOCK_SLICE_CELLS))
        return 4 * -(-nibbles // slices)

    @property
    def block_read_bits(self) -> int:
        """Bits of one read part of a draft-block slice: about ``BLOCK_READ_CELLS`` LUT-RAM cells,
        each part read through its own copy of the read address (a multiple of 4 where it can be)."""
        nibbles = -(-self.block_slice_bits // 4)
        parts = max(1, -(-nibbles * -(-self.block_depth // 16) // BLOCK_READ_CELLS))
        return 4 * -(-nibbles // parts)

    @property
    def token_count_shape(self):
        """A count of draft tokens, 0..t_max."""
        return range(self.t_max + 1)

    @property
    def token_index_shape(self):
        """A draft token's index in its block, 0..t_max-1 (never zero-width)."""
        return range(self.block_depth)

    @property
    def phi_shape(self):
        return shape_of(PHI_FORMAT)

    @property
    def input_layout(self) -> data.StructLayout:
        vec = data.ArrayLayout(shape_of(INT8), self.d)
        return data.StructLayout({
            "cmd": 2, "last": 1, "head": self.head_width, "a": self.format.block_width,
            "q": vec, "k": vec, "v": vec,
        })

    @property
    def output_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(shape_of(INT8), self.d)

    @property
    def element_layout(self) -> data.StructLayout:
        """What travels with one issued state element (column ``column`` of row group g, draft token
        ``token``) down the pipeline, from the fetch stage to the output buffer."""
        fields = {
            "valid": 1,
            "first_token": 1,          # token 0 of the pass: the state word comes from memory
            "last_token": 1,           # last token of the pass: the word goes back to memory
            "first_group": 1,          # row group 0: the numerator sum starts
            "last_group": 1,           # last row group: the numerator is complete
            "bank_zero": 1,            # the committed bank holds zeros (after reset)
            "emit": 1,                 # the pass produces outputs (not a commit replay)
            "pass_end": 1,             # the pass's last element
            "token": self.token_index_shape,
            "column": range(self.columns),
            "out_half": 1,             # output-buffer half the pass writes
            "state_addr": range(self.state_depth),   # where the updated word is written
            "tokens": self.token_count_shape,        # tokens of the pass
        }
        if self.snapshots:
            fields["snapshot_bank"] = range(self.heads * self.banks)
        if self.normalized:
            fields["is_z"] = 1         # the normalizer column (gives the denominator)
        return data.StructLayout(fields)
