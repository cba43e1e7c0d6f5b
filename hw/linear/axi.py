"""``LinearDecodeAxi``: the linear decode datapath behind AXI4-Stream and AXI4-Lite (``hw/common/axi.py``).

Input (``s_axis``, ``axis_width`` bits, default the next power of two at or
above the command's width, so one beat per command): each command of
``LinearDecodeConfig.input_layout`` (cmd, last, head, a, q, k, v; first field
in the lowest bits) spans ``cmd_beats`` beats, zero padding above. No data
beats follow a command; ``s_axis_tlast`` does not frame (a ``tlast`` in the middle of
a multi-beat command sets ``ERR_AXIS_TLAST``).

Output (``m_axis``, ``8 d`` bits): one token's d int8 outputs per beat,
``tlast`` on the last token of each verified block (one S2MM packet per block).

Registers (``accelerator_regmap("linear-decode", params)``; ``feature_map`` and
``pipelining`` as their index in ``REGISTER_CHOICES``): STATUS.busy is the datapath's ``busy`` (a pass
or history shift running, or outputs in flight); STATUS.errors bit 0 is set
while any head's sticky ``overflow`` flag is, bit 6 ``ERR_AXIS_TLAST``, bit 7
``ERR_AXIS_TKEEP``;
DONE_COUNT counts output tokens sent on ``m_axis``; FAILED_COUNT is 0 (the
datapath refuses no command: an out-of-range commit is ignored, as the golden
model does). ENABLE gates ``s_axis_tready`` (reset 0); CONTROL.soft_reset
resets the datapath (state banks marked zero, histories, token counts, flags,
and the conv taps, which are registers: reload them), the counts and the
performance counters; CONTROL.start is not used. Counters:

* BUSY: ``busy`` high, or a command offered to the datapath (it takes one per
  cycle while idle): at full rate, from the first command offered to the end
  of the program, which is the cycle model's
  ``max(last output cycle + 1, end of the last command)``;
* STALL_IN: an unfinished block waits for its next token, or part of a
  command is in, the next beat would be taken and ``s_axis_tvalid`` is low;
* STALL_OUT: a token waits because ``m_axis`` is backpressured;
* MAC_ACTIVE: a pass issues a state element to the lanes: the cycle model's
  issue cycles (``G * columns`` per token of each pass, replays included).
"""

from __future__ import annotations

from amaranth.hdl import DomainRenamer, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from attnforge.hw.common import AcceleratorRegisters
from attnforge.hw.common.axi import (
    ERR_AXIS_TKEEP, ERR_AXIS_TLAST, AxisCommandInput, AxisOutput, axil_members, axis_master_members,
    axis_slave_members,
    bus_domains, check_axis_width, connect_axil, register_params,
)

from .config import REGISTER_CHOICES, LinearDecodeConfig
from .decode import LinearDecode

__all__ = ["LinearDecodeAxi", "DESIGN_NAME", "default_axis_width"]

#: The design name in the DESIGN register (CRC-32) and the register map's name.
DESIGN_NAME = "linear-decode"


def default_axis_width(config: LinearDecodeConfig) -> int:
    """The next power of two at or above the command's width (one ``s_axis`` beat per command)."""
    return 1 << max(3, (config.input_layout.size - 1).bit_length())


class LinearDecodeAxi(wiring.Component):
    """The linear decode datapath with AXI4-Stream in/out and an AXI4-Lite register bank.

    Parameters
    ----------
    config : LinearDecodeConfig
    axis_width : int or None
        ``s_axis_tdata`` bits, a multiple of 8 (default ``default_axis_width``); narrower
        widths take ``cmd_beats`` beats per command.
    addr_width : int or None
        AXI4-Lite byte-address bits (default: the fewest that reach every register).
    perf_width : int
        Bits of each performance counter (33..64; the HI registers hold bits ``perf_width-1:32``).
        A board build on the iCE40 UP5K uses 33: four 64-bit chains cost ~370 logic cells there.
    core : Component or None
        The datapath inside (default ``LinearDecode(config)``; a test passes a mutant).

    Members
    -------
    aclk : ``In(1)``
    aresetn : ``In(1)``
        Active-low synchronous reset of everything.
    s_axis_tdata, s_axis_tkeep, s_axis_tvalid, s_axis_tready, s_axis_tlast
        Commands in (module docstring); ``tlast`` is checked, not used.
    m_axis_tdata, m_axis_tkeep, m_axis_tvalid, m_axis_tready, m_axis_tlast
        One output token per beat; ``tlast`` on each block's last token.
    s_axil_awaddr ... s_axil_rready
        The register bank (``RegisterBank``'s AXI4-Lite slave).
    """

    def __init__(self, config: LinearDecodeConfig, *, axis_width: int | None = None,
                 addr_width: int | None = None, core=None, perf_width: int = 64):
        if not isinstance(config, LinearDecodeConfig):
            raise TypeError(f"LinearDecodeAxi needs a LinearDecodeConfig, not {config!r}")
        self._config = config
        self._axis_width = default_axis_width(config) if axis_width is None else \
            check_axis_width("linear decode AXI4-Stream axis_width", axis_width)
        self._core = core if core is not None else LinearDecode(config)
        self._regs = AcceleratorRegisters(DESIGN_NAME, register_params(config, REGISTER_CHOICES),
                                          addr_width=addr_width, perf_width=perf_width)
        super().__init__({"aclk": In(1), "aresetn": In(1), **axis_slave_members(self._axis_width),
                          **axis_master_members(config.output_layout.size), **axil_members(self._regs.bank)})

    @property
    def config(self) -> LinearDecodeConfig:
        return self._config

    @property
    def axis_width(self) -> int:
        return self._axis_width

    @property
    def regmap(self):
        """The register map this wrapper's bank implements."""
        return self._regs.bank.regmap

    @property
    def cmd_beats(self) -> int:
        """``s_axis`` beats of one command."""
        return -(-self._config.input_layout.size // self._axis_width)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.regs = regs = self._regs
        bus_domains(m, self.aclk, self.aresetn, regs.control.soft_reset)
        connect_axil(m, self, regs)
        m.submodules.core = core = DomainRenamer("accel")(self._core)
        m.submodules.framing = framing = DomainRenamer("accel")(AxisCommandInput(self._axis_width, cfg.input_layout))
        m.submodules.out = out = AxisOutput(cfg.output_layout.size)
        m.d.comb += [framing.tdata.eq(self.s_axis_tdata), framing.tkeep.eq(self.s_axis_tkeep),
                     framing.tvalid.eq(self.s_axis_tvalid), self.s_axis_tready.eq(framing.tready),
                     framing.tlast.eq(self.s_axis_tlast),
                     framing.enable.eq(regs.enable.enable)]
        wiring.connect(m, framing.cmd, core.i)
        m.d.comb += [out.i.valid.eq(core.o.valid), out.i.payload.data.eq(core.o.payload),
                     out.i.payload.last.eq(core.o_last), core.o.ready.eq(out.i.ready),
                     self.m_axis_tdata.eq(out.tdata), self.m_axis_tkeep.eq(out.tkeep),
                     self.m_axis_tvalid.eq(out.tvalid), out.tready.eq(self.m_axis_tready),
                     self.m_axis_tlast.eq(out.tlast)]
        tokens_done = Signal(32, name="tokens_done")
        with m.If(core.o.valid & core.o.ready):
            m.d.accel += tokens_done.eq(tokens_done + 1)
        m.d.comb += [regs.status.busy.eq(core.busy),
                     regs.status.errors.eq(core.overflow.any() | Mux(framing.keep_error, ERR_AXIS_TKEEP, 0)
                                           | Mux(framing.last_error, ERR_AXIS_TLAST, 0)),
                     regs.done_count.value.eq(tokens_done), regs.failed_count.value.eq(0),
                     regs.perf.busy.eq(core.busy | core.i.valid),
                     regs.perf.stall_in.eq((framing.partial | core.block_open) & framing.tready
                                           & ~self.s_axis_tvalid),
                     regs.perf.stall_out.eq(core.o.valid & ~core.o.ready),
                     regs.perf.mac_active.eq(core.mac_active)]
        return m
