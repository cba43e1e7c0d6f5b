"""Linear-attention decode datapath: one head's (or several time-multiplexed
heads') decode step with speculative verify/commit, bit-exact against
``algo/linear/golden.py``; widths from ``attnforge.linear_format``.

Microarchitecture (``docs/linear-hw.md`` has the picture); the components, each
in its own module of this package:

* ``CommandControl`` (``control.py``): commands, per-head bookkeeping, pass walk, fetch;
* ``DraftBlock`` (``block.py``): the draft-block memory in bit slices, its write registered;
* ``StateLanes`` (``lanes.py``): the M update and readout lanes on the state memory;
* ``Convolution`` (``convolution.py``): taps, history, the K-tap window;
* ``Normalizer`` (``normalizer.py``, relu_norm only): the divider;
* ``OutputStage`` (``output.py``): requantizers, output buffer, emitter.


* The state ``S`` of every head lives in on-chip memory (``amaranth.lib.memory``),
  two banks per head. One memory word holds ``M = macs`` state elements: rows
  ``g*M .. g*M+M-1`` of column ``j`` (``G = d/M`` row groups); above 8 lanes the word is
  split into ``state_slices`` memories of 4 lanes, each with its own address registers.
* A *pass* walks ``for g, for j, for tau in block``: it reads the word of the
  committed bank once, and each cycle its M lanes fold one draft token
  (``S += phi(k_tau) v_tau[j]``, M update multipliers) and multiply the running
  state with ``phi(q_tau)`` (M readout multipliers) into an adder tree that
  gives ``phi(q_tau)^T S_tau`` for column j (summed over the G groups in a
  small numerator memory). After the last token the running word goes to the
  *other* bank. So a block of T tokens costs ``G*d*T = T*d^2/M`` cycles.
* ``commit(T)`` only flips the head's bank pointer (the pass already wrote
  ``S`` after all T tokens); ``commit(0)`` does nothing; ``commit(a)`` with
  ``0 < a < T`` runs a pass of the first a tokens without outputs, then flips.
  The convolution history (K-1 committed v per head) is shifted a times.
* Output stage per (column, token): causal depthwise convolution over a K-deep
  window (K multipliers), two requantizers, saturation, into a double-buffered
  output buffer emitted one token (d int8) per beat. A pass starts only when
  its output buffer half is free, so backpressure never stalls the pipeline.
* The draft block (q, k, v of up to ``t_max`` tokens) and the output buffer are
  memories too (one word per token), read synchronously with the address issued
  a cycle ahead (the next ``tau``, the next emitted token), so they cost no
  cycle; the readout adder tree is split over two pipeline stages.

Normalized variant (``feature_map="relu_norm"``, elaborated only then): the
normalizer z is one more column of every state bank (column 0, folded with
v = 1), so it is banked, committed, replayed and reset exactly like S. Each
pass walks it first, so the readout lanes deliver ``den_tau = phi(q_tau)^T z_tau``
before the token's numerators; a pipelined restoring divider (leading one,
reduction to DIV_DEN_BITS bits, DIV_STEPS_PER_STAGE quotient bits per stage)
writes the reciprocal into a per-output-half register set, and the numerators
wait NORM_DELAY stages, then ``(A >> s) * recip`` is rounded (``divide_fixed``)
before the attention requantizer. Cost: one more column per pass (``(d+1)*G``
cycles per token instead of ``d*G``) and NORM_EXTRA_DEPTH cycles of latency.

Numerical safety: the state and numerator widths are derived from d,
``max_tokens`` and ``t_max`` (``LinearDecodeFormat``) so that no accumulator can
overflow while at most ``max_tokens`` tokens are committed; a per-head sticky
``overflow`` flag rises when a commit goes past that (the registers then wrap,
exactly as the golden model does).
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..common import ConfiguredComponent
from .block import DraftBlock
from .config import (NORM_EXTRA_DEPTH, PIPELININGS, LinearDecodeConfig,  # noqa: F401  (re-exported)
                     pipeline_depth)
from .control import CommandControl
from .convolution import Convolution
from .lanes import StateLanes
from .normalizer import Normalizer
from .output import OutputStage

__all__ = ["LinearDecodeConfig", "LinearDecode", "pipeline_depth", "PIPELININGS", "NORM_EXTRA_DEPTH"]


class LinearDecode(ConfiguredComponent):
    """Linear-attention decode datapath with verify/commit.

    Parameters
    ----------
    config : LinearDecodeConfig

    Members
    -------
    i : ``In(stream.Signature(config.input_layout))``
        Commands. ``cmd=CMD_TOKEN``: one draft token (q, k, v) of head ``head``;
        ``last`` ends the block (a block also ends at ``t_max`` tokens), which
        then produces one output per token. ``cmd=CMD_COMMIT``: fold the first
        ``a`` tokens of the pending block (``a`` larger than the block: ignored).
        ``cmd=CMD_RESET``: clear head ``head``'s state, history and token count.
        ``cmd=CMD_TAPS``: set head ``head``'s conv taps ``w[a][:] = v``.
        An ordinary decode step is a one-token block followed by ``commit(1)``.
    o : ``Out(stream.Signature(config.output_layout))``
        One int8 output vector per verified token, in order.
    overflow : ``Out(heads)``
        Sticky per head: more than ``max_tokens`` tokens committed since reset.
    o_last : ``Out(1)``
        With ``o.valid``: the token offered is its block's last (``tlast`` of the AXI wrapper).
    busy : ``Out(1)``
        A pass or history shift is running, or outputs are in flight (claimed or unsent).
    mac_active : ``Out(1)``
        A pass issues a state element to the M update and readout lanes this cycle.
    block_open : ``Out(1)``
        An unfinished block waits for its next token (the input is what it waits on).
    """

    config_type = LinearDecodeConfig

    @classmethod
    def signature_of(cls, config: LinearDecodeConfig):
        return {
            "i": In(stream.Signature(config.input_layout)),
            "o": Out(stream.Signature(config.output_layout)),
            "overflow": Out(config.heads),
            "o_last": Out(1),
            "busy": Out(1),
            "mac_active": Out(1),
            "block_open": Out(1),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        # The state of every head, bank, row group and column: one word of M elements. A pass never
        # reads a word in the cycle it is written (it reads the committed bank and writes another;
        # short passes wait STATE_WRITE_GAP), so the read-write collision is declared "don't care"
        # (Yosys's no_rw_check): otherwise Yosys emulates the read port's read-old-value collision
        # around the DP16KD (at d = 64: a registered copy of all 1,728 write-data bits, an address
        # comparator, and one flip-flop selecting 1,728 read bits, a net across all 48 block RAMs).
        # Simulation is unchanged (the attribute only annotates the memory).
        # In ``state_slices`` slices of lanes, each its own memory with its own address registers.
        slices = [Memory(shape=cfg.state_slice_word, depth=cfg.state_depth, init=[], attrs={"no_rw_check": 1})
                  for _ in range(cfg.state_slices)]
        for s, memory in enumerate(slices):
            m.submodules["state" if len(slices) == 1 else f"state{s}"] = memory
        # The draft block, one word (q, k, v) per token: read as a transparent memory (a token
        # taken in the cycle before its pass starts is read back), written a cycle later.
        m.submodules.block = block = DraftBlock(cfg)

        m.submodules.control = control = CommandControl(cfg)
        m.submodules.lanes = lanes = StateLanes(cfg)
        m.submodules.convolution = convolution = Convolution(cfg)
        m.submodules.output = output = OutputStage(cfg)
        wiring.connect(m, wiring.flipped(self.i), control.i)
        m.d.comb += [self.overflow.eq(control.overflow), self.o_last.eq(output.last),
                     self.busy.eq(control.busy | output.pending), self.mac_active.eq(control.issue),
                     self.block_open.eq(control.block_open)]
        wiring.connect(m, control.block_write, block.write)
        wiring.connect(m, control.block_read, block.read)
        wiring.connect(m, control.fetch, lanes.fetch, convolution.fetch)
        wiring.connect(m, control.conv, convolution.control)
        wiring.connect(m, control.half, output.half)
        for memory, read, write in zip(slices, lanes.state_read, lanes.state_write):
            wiring.connect(m, read, memory.read_port())
            wiring.connect(m, write, memory.write_port())

        # Lanes and convolution meet here: the numerator and the conv sum of the same element.
        if cfg.normalized:
            m.submodules.normalizer = normalizer = Normalizer(cfg)
            result = normalizer.numerator
            wiring.connect(m, normalizer.quotient, output.result)
        else:
            result = output.result
        m.d.comb += [result.element.eq(lanes.numerator.element), result.attn.eq(lanes.numerator.attn),
                     result.conv.eq(convolution.sum)]
        wiring.connect(m, wiring.flipped(self.o), output.o)
        return m
