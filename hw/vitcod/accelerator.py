"""The ViTCoD accelerator: one attention head at a time, many heads in a row.

Data path: the ``Loader`` writes a head's Q, K, V, row pointers and column
indices from the data stream into one of two buffer banks (double buffering:
the next head loads while the current one computes), checking every index as
it arrives. The ``RowScheduler`` then runs the rows through the Denser Engine
(global columns) and the Sparser Engine (CSR entries) side by side (``Engine``:
``AttentionLine``s and an ``ExpUnit``), in a row pipeline ``score(i+1) |
softmax(i) | pv(i)``: while the engines' lines compute the scores of the next
row, the exponent units and the divider (``SoftmaxStage``) finish the softmax
of the current one. Each output row (both engines' share of ``P·V``) leaves
through the ``OutputStage`` (the int8 requantizer) one beat per cycle. With the Q/K
decoder, the loader also holds a ``LayerStore`` and a ``QkDecoder``.

With ``tiles`` T > 1 there are T such row pipelines ("tiles": a scheduler, a
Denser and a Sparser Engine, a softmax stage each); tile t computes every T-th
query row (a head's row i when ``(i + off) mod T == t``, ``off`` the rows of the
heads before it: one rotation across heads). The tiles read the shared Q/K/V/column-index banks
(their own read ports) and two narrow row pointer memories each (their rows'
starts and split points, ``tile_rp_width`` bits, filled by the loader as the
pointer section streams in); a ``RowMerger`` (one row buffer per tile) puts
the rows back in row order in front of the output stage. The tiles start and
end each head together. The stream format does not depend on T.

Data stream layout of one head (``data_width`` bits per beat, little-endian
bytes, the first element in the lowest bits):

1. Q: ``Nq * d`` int8, row by row (``Nq * d / B`` beats, B = data_width / 8; with
   ``data_width = 2 * 8 * d`` two rows per beat, ``ceil(Nq / 2)`` beats, the last one's
   second row zero when Nq is odd; the same for K and V);
2. K: ``Nk * d`` int8 in polarized key order;
3. V: ``Nk * d`` int8 in polarized key order;
4. row pointers: ``2 Nq + 1`` uint16, ``B / 2`` per beat, the last beat padded: two half-rows
   per query row, ``ptr[2i] .. ptr[2i+1]`` the CSR entries of row i that the Denser Engine
   takes after its G global keys, ``ptr[2i+1] .. ptr[2i+2]`` the Sparser Engine's (the
   host's split, ``hw/vitcod/balance.py``; the result does not depend on it);
5. col_idx: ``nnz`` uint16 (positions in the polarized order), ``B / 2`` per beat.

With the Q/K decoder (``decoder=True``) Q and K do not travel per head. A
*layer* command (``layer = 1``: Nq, Nk, Hc) carries the layer's compressed Q
then compressed K, int8 ``[Hc, N, d]`` in model token order, as ``Hc`` beats
(one per compressed head) for each beat-sized word of each token row; they go
to an on-chip layer store. A head command (``layer = 0``) then carries

1. the key order: ``Nk`` uint16, polarized position -> model token (``B / 2`` per beat);
2. V, row pointers, col_idx as above;

and the loader replays the head's Q rows, and its K rows through the key
order, from the store into the decoder (one beat per cycle, two cycles of
latency), which writes the head's decoded Q and K into the bank. A head whose
Nq, Nk or Hc differs from the loaded layer is refused (``ERR_LAYER``).

Output: ``Nq * d / B`` beats, row by row, int8 (with ``data_width = 2 * 8 * d`` one row
per beat in the lower ``d`` lanes, the upper lanes zero).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from attnforge.hw.common import ConfiguredComponent

from .config import ERROR_BITS, STATUS_COUNT_WIDTH, VitcodConfig
from .engine import Engine
from .loader import Loader
from .output import OutputStage, RowMerger
from .scheduler import RowScheduler
from .softmax import SoftmaxStage

__all__ = ["VitcodAccelerator"]


class VitcodAccelerator(ConfiguredComponent):
    """ViTCoD attention accelerator (Denser + Sparser Engines, integer softmax).

    Parameters
    ----------
    config : VitcodConfig

    Members
    -------
    cmd : ``In(stream.Signature(config.cmd_layout))``
        One transfer per head: Nq, Nk, G, nnz and the exponent and output
        requantizers (multiplier, shift). The head's data follows on ``data``.
        With the decoder, also Hc, the head's decoder weights and requantizers,
        and ``layer``: 1 makes the transfer a layer load (Nq, Nk, Hc) instead of a head.
    data : ``In(stream.Signature(config.data_width))``
        Q, K, V, row pointers and column indices of each commanded head, in order.
    o : ``Out(stream.Signature(config.data_width))``
        The int8 output rows of every head without an error, in order.
    busy : ``Out(1)``
        A command is taken in this cycle, or a head is loading, waiting or computing, or output is
        in the requantizer. (With heads overlapping, the heads before a refused command may all be
        out when the loader takes the next command: that cycle counts as busy, so at full rate
        ``busy`` is high from the first command's cycle to the last output beat, both included.)
    heads_done : ``Out(STATUS_COUNT_WIDTH)``
        Heads computed and fully output since reset (counted with their last output beat).
    heads_failed : ``Out(STATUS_COUNT_WIDTH)``
        Commands refused: heads (their data consumed and dropped, no output) and, with the
        decoder, layer loads.
    error : ``Out(ERROR_BITS)``
        Sticky since reset: ``ERR_SIZE``, ``ERR_ROW_PTR``, ``ERR_COL_IDX``, ``ERR_LAYER`` (decoder).
    o_last : ``Out(1)``
        With ``o.valid``: the beat offered on ``o`` is its head's last (``tlast`` of the AXI wrapper).
    mac_active : ``Out(1)``
        The Denser or the Sparser Engine issues a score or pv beat to its MAC lines this cycle.
    """

    config_type = VitcodConfig

    @classmethod
    def signature_of(cls, config: VitcodConfig):
        return {
            "cmd": In(stream.Signature(config.cmd_layout)),
            "data": In(stream.Signature(config.data_width)),
            "o": Out(stream.Signature(config.data_width)),
            "busy": Out(1),
            "heads_done": Out(STATUS_COUNT_WIDTH),
            "heads_failed": Out(STATUS_COUNT_WIDTH),
            "error": Out(ERROR_BITS),
            "o_last": Out(1),
            "mac_active": Out(1),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.loader = loader = Loader(cfg)
        m.submodules.output = output = OutputStage(cfg)

        # Buffers, two banks each (the next head loads while the current one computes). A Q/K/V
        # word holds the S chunks a score step (or a pv pass of a line group) reads, so each
        # engine has one K and one V read port per score group, not one per line.
        buffers = {}
        shared = [("q", cfg.qkv_word_width, cfg.qkv_bank_words), ("k", cfg.qkv_word_width, cfg.qkv_bank_words),
                  ("v", cfg.qkv_word_width, cfg.qkv_bank_words)]
        if cfg.tiles == 1:
            shared.append(("rp", cfg.data_width, cfg.rp_bank_words))
        shared.append(("ci", cfg.data_width, cfg.ci_bank_words))
        for name, width, words in shared:
            m.submodules[f"{name}_buf"] = buffers[name] = Memory(shape=unsigned(width), depth=cfg.banks * words,
                                                                 init=[])
            wiring.connect(m, getattr(loader, f"{name}_write"), buffers[name].write_port())

        wiring.connect(m, wiring.flipped(self.cmd), loader.cmd)
        wiring.connect(m, wiring.flipped(self.data), loader.data)
        actives = []    # every engine's "issues a beat to its MAC lines this cycle"
        if cfg.tiles == 1:
            scheduler = self._tile(m, "", loader, buffers, [buffers["rp"]] * 4, actives)
            wiring.connect(m, scheduler.rows, output.row)
            busy = scheduler.busy
        else:
            busy = self._tiles(m, loader, buffers, output, actives)
        wiring.connect(m, output.o, wiring.flipped(self.o))

        # status: outputs from registers through plain assignments (Icarus evaluates those at time 0)
        heads_done = Signal.like(self.heads_done)
        with m.If(output.head_done):
            m.d.sync += heads_done.eq(heads_done + 1)
        m.d.comb += [self.heads_done.eq(heads_done), self.heads_failed.eq(loader.heads_failed),
                     self.error.eq(loader.error), self.o_last.eq(output.last),
                     self.mac_active.eq(Cat(*actives).any()),
                     self.busy.eq(loader.busy | busy | output.busy | (self.cmd.valid & self.cmd.ready))]
        return m

    def _tile(self, m, suffix, loader, buffers, row_ptr_memories, actives, tile=0):
        """One row pipeline: Denser and Sparser Engine, row scheduler and softmax stage, their read
        ports on the shared buffers, and the row pointer ports on ``row_ptr_memories`` (one per port
        of ``RowScheduler.row_ptr``). Appends the engines' ``active`` to ``actives``; returns the
        scheduler."""
        cfg = self._config
        dense = Engine(cfg, sparse=False, lines=cfg.dense_lines)
        sparse = Engine(cfg, sparse=True, lines=cfg.sparse_lines)
        scheduler = RowScheduler(cfg) if cfg.tiles == 1 else RowScheduler(cfg, tile=tile)
        softmax = SoftmaxStage(cfg)
        for name, sub in (("denser", dense), ("sparser", sparse), ("scheduler", scheduler), ("softmax", softmax)):
            m.submodules[name + suffix] = sub
        actives += [dense.active, sparse.active]
        for engine in (dense, sparse):
            wiring.connect(m, engine.q, buffers["q"].read_port())
            for g in range(engine.score_groups):
                wiring.connect(m, engine.k[g], buffers["k"].read_port())
                wiring.connect(m, engine.v[g], buffers["v"].read_port())
            for g in range(engine.score_groups):
                wiring.connect(m, engine.col[g], buffers["ci"].read_port())
        for port, memory in zip(scheduler.row_ptr, row_ptr_memories):
            wiring.connect(m, port, memory.read_port())
        if tile == 0:
            wiring.connect(m, loader.banks, scheduler.banks)
        else:    # every tile adopts the heads as tile 0 does, which releases the banks
            m.d.comb += [scheduler.banks.full.eq(loader.banks.full), scheduler.banks.heads.eq(loader.banks.heads)]
        wiring.connect(m, scheduler.dense, dense.job)
        wiring.connect(m, scheduler.sparse, sparse.job)
        wiring.connect(m, scheduler.softmax_rows, softmax.rows)
        wiring.connect(m, softmax.dense_exp, dense.exp)
        wiring.connect(m, softmax.sparse_exp, sparse.exp)
        wiring.connect(m, softmax.recips, scheduler.recips)
        return scheduler

    def _tiles(self, m, loader, buffers, output, actives):
        """(tiles > 1) T row pipelines, each with its two narrow row pointer memories (its rows' starts
        and split points), rows merged in row order. Returns the schedulers' busy."""
        cfg = self._config
        T = cfg.tiles
        memories = []
        for t in range(T):
            for half, name in enumerate(("start", "split")):
                mem = Memory(shape=unsigned(cfg.tile_rp_width), depth=cfg.banks * cfg.tile_rp_bank_words, init=[])
                m.submodules[f"rp{t}_{name}"] = mem
                wiring.connect(m, loader.rp_tile_writes[2 * t + half], mem.write_port())
                memories.append(mem)
        m.submodules.merger = merger = RowMerger(cfg)
        wiring.connect(m, merger.row, output.row)
        schedulers = []
        for t in range(T):
            # ports: this tile's starts and split points (Denser Engine), its split points and the
            # next query row's start, in the next tile (Sparser Engine)
            ports = [memories[2 * t], memories[2 * t + 1], memories[2 * t + 1], memories[2 * ((t + 1) % T)]]
            schedulers.append(self._tile(m, str(t), loader, buffers, ports, actives, tile=t))
            wiring.connect(m, schedulers[-1].rows, merger.tiles[t])
        # a head is done when the merger hands its last row to the output stage
        released = Signal()
        m.d.comb += released.eq(output.row.valid & output.row.ready & output.row.payload.row_last
                                & output.row.payload.head_last)
        m.d.comb += [s.released.eq(released) for s in schedulers]
        return Cat(*(s.busy for s in schedulers)).any()
