"""Generator parameters of the ViTCoD accelerator and every width derived from them.

One place computes the widths (scores, row sums, reciprocal, P·V accumulators,
buffer depths, the command layout) from ``attnforge.numfmt`` and
``attnforge.softmax_int``, so the RTL, the testbench, the cycle model and the
host code agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from attnforge.errors import ConfigError, check_int
from attnforge.hw.common.requant import MAX_SHIFT
from attnforge.hw.common.trees import log2_ceil
from attnforge.numfmt import INT8, Requantizer, accumulator_width
from attnforge.softmax_int import PROB_FORMAT, recip_width, sum_width

__all__ = ["VitcodConfig", "INDEX_WIDTH", "ROW_SLOTS", "PV_QUEUE", "POINTER_QUEUE", "POINTER_LATENCY",
           "MULTIPLIER_WIDTH", "SHIFT_WIDTH", "STATUS_COUNT_WIDTH",
           "MAX_DECODER_HEADS", "MAX_TILES", "MAX_MERGE_DEPTH", "MAX_TOKENS_PER_BEAT", "ERR_SIZE", "ERR_ROW_PTR",
           "ERR_COL_IDX", "ERR_LAYER",
           "ERROR_BITS"]

#: Rows in flight in the score and exponent buffers by default (``row_slots``): the engines may score up
#: to ROW_SLOTS - 1 rows ahead of their pv jobs, which hides the softmax latency.
ROW_SLOTS = 4
#: Most row slots a configuration may have (``row_slots``).
MAX_ROW_SLOTS = 32
#: Quotient bits per cycle of the softmax's divider by default (``divider_bits``): 13 cycles for the 26-bit
#: reciprocal.
DIVIDER_BITS = 2
#: Rows' P.V shares each engine holds (started P.V jobs whose row the output has not taken yet): the
#: next row's P.V job runs while the previous row waits for the other engine or the output stage.
PV_QUEUE = 2
#: rows of row pointers the scheduler reads ahead of each engine's score stage (``RowScheduler``;
#: a power of two, the queue is a ring)
POINTER_QUEUE = 4
#: cycles from the pointer walk taking a row to the row being ready to start (read, register, sums)
POINTER_LATENCY = 3
#: Row pointers and column indices travel as uint16 on the data stream.
INDEX_WIDTH = 16
#: Run-time requantizers (exponent, output, decoder): a ``Requantizer``'s unsigned multiplier
#: and its right shift (0..MAX_SHIFT), as the command carries them.
MULTIPLIER_WIDTH = Requantizer.multiplier_width
SHIFT_WIDTH = MAX_SHIFT.bit_length()
#: ``heads_done`` and ``heads_failed`` (wrap around).
STATUS_COUNT_WIDTH = 16
#: Most compressed heads the Q/K decoder may be built for; the command's ``hc`` field holds it.
MAX_DECODER_HEADS = 16
#: Error status bits (sticky until reset).
ERR_SIZE = 1      # N, G or nnz beyond what the buffers hold (or N = 0, G > Nk)
ERR_ROW_PTR = 2   # ptr[0] != 0, decreasing, a half-row longer than Nk - G, or ptr[2 Nq] != nnz
ERR_COL_IDX = 4   # a column index outside [G, Nk), or (decoder) a key order entry outside [0, Nk)
ERR_LAYER = 8     # (decoder) a head whose layer (compressed Q/K of its Nq, Nk, Hc) is not loaded
ERROR_BITS = 4
#: Most row pipelines (``tiles``) a configuration may have.
MAX_TILES = 16
#: Most finished rows the row merger may buffer per tile (``merge_depth``).
MAX_MERGE_DEPTH = 8
#: Buffer banks a configuration may have (``banks``).
BANK_COUNTS = (2, 4)
#: Most token rows of Q, K or V one data beat may carry (``data_width`` up to this times ``8 * head_dim``).
MAX_TOKENS_PER_BEAT = 2


def _check(what, value, lo, hi):
    return check_int(f"ViTCoD {what}", value, lo, hi)


def _pow2(value):
    return value & (value - 1) == 0


@dataclass(frozen=True)
class VitcodConfig:
    """Generator parameters of the ViTCoD accelerator (one attention head at a time).

    Parameters
    ----------
    head_dim : int
        d, channels per head (a multiple of ``macs`` and of the data-stream bytes).
    max_tokens : int
        Largest Nq and Nk a head may have (buffer depth), 1..4096.
    max_nnz : int
        Largest number of sparse (CSR) entries of a head, 1..65535 (uint16 row pointers).
    macs : int
        MACs per line M, a power of two 1..64.
    dense_lines : int
        MAC lines of the Denser Engine (global columns), 1..64.
    sparse_lines : int
        MAC lines of the Sparser Engine (CSR entries), 1..64.
    data_width : int
        Bits per beat of the data input and output streams: a power of two,
        a multiple of ``8 * macs`` and of 16, dividing ``8 * head_dim`` (a token row is whole
        beats) or ``2 * 8 * head_dim`` (a beat carries two token rows of Q, K or V; not with
        the decoder). An output beat carries one output row at most (the upper lanes zero).
    decoder : bool
        Include the Q/K decoder: a layer's compressed Q/K (Hc heads) are loaded once into an
        on-chip layer store, and every head of the layer decodes its Q and K from there.
    decoder_heads : int
        Most compressed heads Hc the decoder combines (with ``decoder``), 1..16.
    tiles : int
        T, independent row pipelines ("tiles"), 1..16: tile t computes every T-th query row (a
        head's row i when ``(i + off) mod T == t``, ``off`` the rows of the heads before it: the
        tiles take the rows of all heads in one rotation) on its own Denser + Sparser Engine
        pair (``dense_lines`` + ``sparse_lines`` lines each: the line counts are per tile),
        scheduler and softmax
        stage; all tiles read the shared Q/K/V/column-index banks (one read port per score
        group each) and their own narrow row-pointer memories, and the rows leave in row
        order. T = 1 is the single-pipeline design. T > 1 needs ``data_width >= 32`` and
        T to divide or be at least the query rows per pointer beat (``data_width / 32``),
        and ``T <= max_tokens``.
    merge_depth : int
        (``tiles > 1``) Finished rows the row merger buffers per tile, 1..8: a tile may finish up
        to this many rows ahead of the merger, which takes the rows back in row order (a tile on a
        long row then holds the others back less). Each row is ``head_dim * row_width`` bits plus
        its requantizer, in registers: ``tiles * merge_depth`` of them. No effect with ``tiles == 1``
        (no merger).
    row_slots : int
        Rows in flight per row pipeline, a power of two 2..32 (default 4): each engine scores up to
        ``row_slots - 1`` rows ahead of its pv jobs, which hides the softmax's latency. Each slot is
        ``max_tokens`` scores and exponents in each engine's score and exponent buffers (their depth
        grows with it) and a few registers in the scheduler.
    divider_bits : int
        Quotient bits the softmax's divider computes per cycle, 1..8 (default 2): a row's reciprocal
        takes ``ceil(recip_width / divider_bits)`` cycles (13 at 2 bits). More bits per cycle chain
        that many subtract-and-compare stages in one cycle (a longer path).
    banks : int
        Banks of the Q, K, V, row pointer and column index buffers, 2 (default) or 4: the loader
        fills the next bank while the heads of the others compute, and a head's bank is free again
        when its last row has gone to the output. Heads overlap (the next head's rows follow the
        previous head's through every stage), so with two banks a head can load only once the head
        two before it is out; four banks let three heads be loaded ahead, which short heads need
        to keep the engines busy. Each bank is a copy of every buffer's words (block RAM).
    """

    head_dim: int = 64
    max_tokens: int = 256
    max_nnz: int = 16384
    macs: int = 8
    dense_lines: int = 4
    sparse_lines: int = 4
    data_width: int = 128
    decoder: bool = False
    decoder_heads: int = 2
    tiles: int = 1
    merge_depth: int = 1
    row_slots: int = ROW_SLOTS
    divider_bits: int = DIVIDER_BITS
    banks: int = 2

    def __post_init__(self):
        _check("macs (M)", self.macs, 1, 64)
        if not _pow2(self.macs):
            raise ConfigError(f"ViTCoD macs (M) must be a power of two, not {self.macs}")
        _check("head_dim", self.head_dim, 1, 1024)
        if self.head_dim % self.macs:
            raise ConfigError(f"ViTCoD head_dim={self.head_dim} must be a multiple of macs={self.macs}")
        _check("max_tokens", self.max_tokens, 1, 4096)
        _check("max_nnz", self.max_nnz, 1, (1 << INDEX_WIDTH) - 1)
        _check("dense_lines", self.dense_lines, 1, 64)
        _check("sparse_lines", self.sparse_lines, 1, 64)
        _check("data_width", self.data_width, 16, 4096)
        if not _pow2(self.data_width) or self.data_width % (8 * self.macs):
            raise ConfigError(f"ViTCoD data_width={self.data_width} must be a power of two and a multiple of "
                             f"8 * macs = {8 * self.macs}")
        token = 8 * self.head_dim
        if token % self.data_width and not (self.data_width % token == 0
                                             and self.data_width // token <= MAX_TOKENS_PER_BEAT):
            raise ConfigError(f"ViTCoD data_width={self.data_width} must divide 8 * head_dim = {token} (a token's "
                             f"row is whole beats) or be at most {MAX_TOKENS_PER_BEAT} x that, "
                             f"{MAX_TOKENS_PER_BEAT * token} (whole token rows per beat)")
        if not isinstance(self.decoder, bool):
            raise TypeError(f"ViTCoD decoder must be True or False, not {self.decoder!r}")
        if self.decoder and self.tokens_per_beat > 1:
            raise ConfigError(f"ViTCoD data_width={self.data_width} carries {self.tokens_per_beat} token rows per "
                             f"beat at head_dim={self.head_dim}; the Q/K decoder takes at most one "
                             f"(data_width <= {token})")
        _check("decoder_heads", self.decoder_heads, 1, MAX_DECODER_HEADS)
        _check("tiles", self.tiles, 1, MAX_TILES)
        if self.tiles > 1:
            if self.tiles > self.max_tokens:
                raise ConfigError(f"ViTCoD tiles={self.tiles} must not exceed max_tokens={self.max_tokens} "
                                  f"(a tile computes every tiles-th query row)")
            if self.data_width < 32:
                raise ConfigError(f"ViTCoD tiles={self.tiles} needs data_width >= 32 (a whole query row's two "
                                  f"row pointers per beat), not {self.data_width}")
            rows = self.pointer_rows_per_beat
            if self.tiles < rows and rows % self.tiles:
                raise ConfigError(f"ViTCoD tiles={self.tiles} must divide or be at least the {rows} query rows "
                                  f"of pointers per beat (data_width={self.data_width} / 32)")
        _check("merge_depth", self.merge_depth, 1, MAX_MERGE_DEPTH)
        _check("row_slots", self.row_slots, 2, MAX_ROW_SLOTS)
        if not _pow2(self.row_slots):
            raise ConfigError(f"ViTCoD row_slots must be a power of two in [2, {MAX_ROW_SLOTS}], "
                              f"not {self.row_slots}")
        _check("divider_bits", self.divider_bits, 1, 8)
        if isinstance(self.banks, bool) or not isinstance(self.banks, int):
            raise TypeError(f"ViTCoD banks must be an int, not {type(self.banks).__name__}")
        if self.banks not in BANK_COUNTS:
            raise ConfigError(f"ViTCoD banks must be one of {', '.join(map(str, BANK_COUNTS))}, not {self.banks}")

    def require_decoder(self, part: str) -> None:
        """Raise ``ConfigError`` unless the configuration includes the Q/K decoder (``part`` needs it)."""
        if not self.decoder:
            raise ConfigError(f"{part} is the Q/K decoder's: it needs a VitcodConfig with decoder=True")

    # -- derived sizes -------------------------------------------------------------------
    @property
    def data_bytes(self) -> int:
        return self.data_width // 8

    @property
    def words_per_token(self) -> int:
        """Beats per token row of Q, K or V when a row is whole beats (1 when a beat carries
        several rows), and beats per output row (one output row per beat at most)."""
        return max(1, self.head_dim // self.data_bytes)

    @property
    def tokens_per_beat(self) -> int:
        """Token rows of Q, K or V per data beat: 1, or 2 with ``data_width = 2 * 8 * head_dim``."""
        return max(1, self.data_bytes // self.head_dim)

    def token_beats(self, n: int) -> int:
        """Data beats of n token rows of Q, K or V (the last beat's unused rows are zero)."""
        return -(-n // self.tokens_per_beat) * self.words_per_token

    @property
    def chunks_per_word(self) -> int:
        return self.data_bytes // self.macs

    @property
    def chunks_per_token(self) -> int:
        """M-channel chunks per token row (cycles per score on one line)."""
        return self.head_dim // self.macs

    @property
    def indices_per_word(self) -> int:
        return self.data_width // INDEX_WIDTH

    def score_split(self, lines: int) -> int:
        """Lines S that share one score in an engine of ``lines`` lines: the largest power of two
        dividing both ``lines`` and ``chunks_per_token``.

        A score job gives each key S lines, each taking ``d / (M S)`` of its chunks, so the
        engine scores ``K = lines / S`` keys every ``d / (M S)`` cycles and a row of n keys
        takes ``ceil(n / K) * d / (M S)`` cycles (with one line per key, S = 1, the row is
        rounded up to whole groups of ``lines`` keys of ``d / M`` cycles each: 16 cycles for
        5 keys on 4 lines, against 10 with S = 4).
        """
        s = 1
        while lines % (2 * s) == 0 and self.chunks_per_token % (2 * s) == 0:
            s *= 2
        return s

    def pv_keys(self, lines: int) -> int:
        """Keys P that an engine of ``lines`` lines takes per P·V step: 1 (a step covers
        ``min(lines, d / M)`` chunks of one key; ``ceil((d / M) / lines)`` passes over the row)."""
        check_int("ViTCoD engine lines", lines, 1, 64)
        return 1

    @property
    def qkv_word_chunks(self) -> int:
        """M-channel chunks per word of the Q, K and V buffers: a score step reads the S chunks of
        a key from one word, and a pv pass the S chunks of a line group, so each engine needs one
        read port per score group (K = lines / S), not one per line. A word is ``data_width``
        bits, or several beats the loader joins."""
        return max(self.chunks_per_word, self.score_split(self.dense_lines), self.score_split(self.sparse_lines))

    @property
    def qkv_beats_per_word(self) -> int:
        """Data beats per Q/K/V buffer word."""
        return self.qkv_word_chunks // self.chunks_per_word

    @property
    def qkv_words_per_token(self) -> int:
        """Q/K/V buffer words per token row (1 when a word holds several rows)."""
        return max(1, self.chunks_per_token // self.qkv_word_chunks)

    @property
    def qkv_tokens_per_word(self) -> int:
        """Token rows per Q/K/V buffer word: 1, or ``tokens_per_beat`` when a beat carries several
        (one beat is one word; token t is row ``t mod tokens`` of word ``t // tokens``)."""
        return max(1, self.qkv_word_chunks // self.chunks_per_token)

    @property
    def chunk_width(self) -> int:
        """Bits of an M-channel chunk of int8 (what a line takes per cycle)."""
        return INT8.width * self.macs

    @property
    def qkv_word_width(self) -> int:
        """Bits of a Q/K/V buffer word (``qkv_word_chunks`` chunks)."""
        return self.chunk_width * self.qkv_word_chunks

    @property
    def bank_bits(self) -> int:
        """Bits of a bank number (the top bits of every buffer address)."""
        return log2_ceil(self.banks)

    @property
    def qkv_addr_width(self) -> int:
        """Q/K/V buffer address: the bank (top bits) and the word in the bank."""
        return log2_ceil(self.qkv_bank_words) + self.bank_bits

    @property
    def rp_addr_width(self) -> int:
        """Row pointer buffer address: the bank (top bits) and the word in the bank."""
        return log2_ceil(self.rp_bank_words) + self.bank_bits

    @property
    def ci_addr_width(self) -> int:
        """Column index buffer address: the bank (top bits) and the word in the bank."""
        return log2_ceil(self.ci_bank_words) + self.bank_bits

    @property
    def lines(self) -> int:
        return self.dense_lines + self.sparse_lines

    @property
    def total_macs(self) -> int:
        """MACs of all tiles (``lines`` per tile)."""
        return self.macs * self.lines * self.tiles

    # -- tiles: per-tile row pointer memories ---------------------------------------------
    @property
    def pointer_rows_per_beat(self) -> int:
        """Query rows whose two pointers (``ptr[2i]``, ``ptr[2i + 1]``) one stream beat carries."""
        return max(1, self.indices_per_word // 2)

    @property
    def tile_rp_words_per_entry(self) -> int:
        """(tiles > 1) Pointers W per word of a tile's row pointer memories: a tile's rows of one
        beat (``pointer_rows_per_beat / tiles``, at least 1) are one word."""
        return max(1, self.pointer_rows_per_beat // self.tiles)

    @property
    def tile_rp_width(self) -> int:
        """(tiles > 1) Bits of a word of a tile's row pointer memories."""
        return INDEX_WIDTH * self.tile_rp_words_per_entry

    @property
    def tile_rp_bank_words(self) -> int:
        """(tiles > 1) Words per bank of each of a tile's two row pointer memories (row starts
        ``ptr[2i]`` and split points ``ptr[2i + 1]`` of its rows, local row ``i // T``; the start
        memory also holds ``ptr[2 Nq]`` as row Nq's start)."""
        local_rows = self.max_tokens // self.tiles + 1
        return self._pow2_ceil(-(-local_rows // self.tile_rp_words_per_entry))

    @property
    def tile_rp_addr_width(self) -> int:
        """(tiles > 1) Address of a tile row pointer memory: bank (top bits) and word."""
        return log2_ceil(self.tile_rp_bank_words) + self.bank_bits

    # -- widths ---------------------------------------------------------------------------
    @property
    def score_width(self) -> int:
        return accumulator_width(INT8, INT8, self.head_dim)

    @property
    def pv_width(self) -> int:
        """Accumulator of sum_j P_j v_j over at most max_tokens keys per engine (and the two engines' sum)."""
        return accumulator_width(PROB_FORMAT, INT8, 2 * self.max_tokens)

    @property
    def row_width(self) -> int:
        """An output row's channel before requantization: the sum of both engines' P·V shares."""
        return self.pv_width + 1

    @property
    def decoder_sum_width(self) -> int:
        """The Q/K decoder's per-lane sum of ``decoder_heads`` int8 weight x int8 value products."""
        return accumulator_width(INT8, INT8, self.decoder_heads)

    @property
    def sum_width(self) -> int:
        return sum_width(self.max_tokens)

    @property
    def recip_width(self) -> int:
        return recip_width()

    @property
    def divider_cycles(self) -> int:
        """Cycles the softmax's divider takes for a row's reciprocal (a row with keys)."""
        return -(-self.recip_width // self.divider_bits)

    @property
    def pv_queue(self) -> int:
        """P.V shares of rows each engine holds for the output (``PV_QUEUE``)."""
        return PV_QUEUE

    @property
    def command_beats_width(self) -> int:
        """Bits of a count of the data beats one command may announce (any field values: a
        refused head's beats are counted off too)."""
        top = (1 << INDEX_WIDTH) - 1
        heads = (1 << MAX_DECODER_HEADS.bit_length()) - 1 if self.decoder else 1
        index_beats = -(-(top + 1) // self.indices_per_word)
        return (2 * top * self.words_per_token * heads + top * self.words_per_token + 4 * index_beats).bit_length()

    # -- buffer depths (per bank; ``banks`` banks) ---------------------------------------
    @staticmethod
    def _pow2_ceil(n: int) -> int:
        return 1 << max(0, (n - 1).bit_length())

    @property
    def qkv_bank_words(self) -> int:
        """Words (of ``qkv_word_chunks`` chunks) per bank of the Q, K and V buffers."""
        return self._pow2_ceil(-(-self.max_tokens // self.qkv_tokens_per_word) * self.qkv_words_per_token)

    @property
    def qk_store_words(self) -> int:
        """Words of the decoder's layer store: compressed Q (``max_tokens`` rows) then K, each row
        ``words_per_token`` words of ``decoder_heads`` beats."""
        return 2 * self.max_tokens * self.words_per_token * self.decoder_heads

    @property
    def order_words(self) -> int:
        """Words of the decoder's key-order buffer (one uint16 per key)."""
        return -(-self.max_tokens // self.indices_per_word)

    @property
    def rp_bank_words(self) -> int:
        """Words of the row pointer buffer: ``2 * max_tokens + 1`` pointers (two half-rows per query
        row, ``hw/vitcod/balance.py``)."""
        return self._pow2_ceil(-(-(2 * self.max_tokens + 1) // self.indices_per_word))

    @property
    def ci_bank_words(self) -> int:
        return self._pow2_ceil(-(-self.max_nnz // self.indices_per_word))

    # -- interfaces -------------------------------------------------------------------------
    @property
    def cmd_layout(self) -> data.StructLayout:
        """One head: sizes and the two requantizers (exponent and output)."""
        fields = {
            "nq": unsigned(INDEX_WIDTH), "nk": unsigned(INDEX_WIDTH),
            "g": unsigned(INDEX_WIDTH), "nnz": unsigned(INDEX_WIDTH),
            "exp_mult": unsigned(MULTIPLIER_WIDTH), "exp_shift": unsigned(SHIFT_WIDTH),
            "out_mult": unsigned(MULTIPLIER_WIDTH), "out_shift": unsigned(SHIFT_WIDTH),
        }
        if self.decoder:
            fields.update({
                "layer": unsigned(1),   # 1: load a layer's compressed Q/K (nq, nk, hc); 0: a head
                "hc": unsigned(MAX_DECODER_HEADS.bit_length()),
                "wq": data.ArrayLayout(signed(INT8.width), self.decoder_heads),
                "wk": data.ArrayLayout(signed(INT8.width), self.decoder_heads),
                "dq_mult": unsigned(MULTIPLIER_WIDTH), "dq_shift": unsigned(SHIFT_WIDTH),
                "dk_mult": unsigned(MULTIPLIER_WIDTH), "dk_shift": unsigned(SHIFT_WIDTH),
            })
        return data.StructLayout(fields)
