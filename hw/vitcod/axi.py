"""``VitcodAxi``: the ViTCoD accelerator behind AXI4-Stream and AXI4-Lite (ports: ``hw/common/axi.py``).

Input (``s_axis``, ``data_width`` bits): per head (or, with the decoder, per
layer load) one *packet*: the command (``cmd_layout``, first field in the
lowest bits, ``cmd_beats`` beats, zero padding above), then the head's data
beats exactly as ``hw/vitcod/accelerator.py`` lays them out. The number of
data beats comes from the command (``loader.command_data_beats``: also for a
head the accelerator refuses, whose data it drops), so ``s_axis_tlast`` does not
frame; a ``tlast`` in the middle of a packet sets ``ERR_AXIS_TLAST``.

Output (``m_axis``, ``data_width`` bits): the output rows of every head
without an error, ``Nq * d / B`` beats, ``tlast`` on each head's last beat (one
S2MM packet per head). A refused head produces nothing (see STATUS).

Registers (``accelerator_regmap("vitcod", params)``, docs/axi.md has the table):
STATUS.busy is the accelerator's ``busy``; STATUS.errors bits 3:0 are its
sticky ``ERR_SIZE``, ``ERR_ROW_PTR``, ``ERR_COL_IDX``, ``ERR_LAYER``, bit 6
``ERR_AXIS_TLAST``, bit 7 ``ERR_AXIS_TKEEP``; DONE_COUNT and FAILED_COUNT are
``heads_done`` and ``heads_failed``. ENABLE.enable (reset 0) gates ``s_axis_tready``: a driver
writes 1 first. CONTROL.soft_reset resets the accelerator, the input framing,
the error bits, the counts and the performance counters; CONTROL.start is not
used (a head starts when its command arrives). The counters count cycles of:

* BUSY: ``busy`` high (a command taken, a head loading, waiting or computing, or
  output in the requantizer): at full rate, from the cycle the first command is
  taken to the last output beat, both included: the cycle model's
  ``total_cycles`` + 1;
* STALL_IN: a command is part-way in (some of its beats or of its data beats
  taken), the next beat would be taken (``s_axis_tready``) and
  ``s_axis_tvalid`` is low;
* STALL_OUT: an output beat waits because ``m_axis`` is backpressured (the
  output register is full);
* MAC_ACTIVE: the Denser or the Sparser Engine issues a beat to its MAC lines:
  the cycle model's ``mac_active_cycles``.
"""

from __future__ import annotations

from amaranth.hdl import DomainRenamer, Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from attnforge.hw.common import AcceleratorRegisters
from attnforge.hw.common.axi import (
    ERR_AXIS_TKEEP, ERR_AXIS_TLAST, AxisCommandInput, AxisOutput, axil_members, axis_master_members,
    axis_slave_members,
    bus_domains, connect_axil, register_params,
)

from .accelerator import VitcodAccelerator
from .config import VitcodConfig
from .loader import command_data_beats

__all__ = ["VitcodAxi", "DESIGN_NAME"]

#: The design name in the DESIGN register (CRC-32) and the register map's name.
DESIGN_NAME = "vitcod"


class VitcodAxi(wiring.Component):
    """The ViTCoD accelerator with AXI4-Stream in/out and an AXI4-Lite register bank.

    Parameters
    ----------
    config : VitcodConfig
    addr_width : int or None
        AXI4-Lite byte-address bits (default: the fewest that reach every register).
    perf_width : int
        Bits of each performance counter (33..64; the HI registers hold bits ``perf_width-1:32``).
        A board build on the iCE40 UP5K uses 33: four 64-bit chains cost ~370 logic cells there.
    core : Component or None
        The accelerator inside (default ``VitcodAccelerator(config)``; a test passes a mutant).

    Members
    -------
    aclk : ``In(1)``
    aresetn : ``In(1)``
        Active-low synchronous reset of everything.
    s_axis_tdata, s_axis_tkeep, s_axis_tvalid, s_axis_tready, s_axis_tlast
        Commands and data in (module docstring); ``tlast`` is checked, not used.
    m_axis_tdata, m_axis_tkeep, m_axis_tvalid, m_axis_tready, m_axis_tlast
        Output rows; ``tlast`` on each head's last beat.
    s_axil_awaddr ... s_axil_rready
        The register bank (``RegisterBank``'s AXI4-Lite slave).
    """

    def __init__(self, config: VitcodConfig, *, addr_width: int | None = None, core=None, perf_width: int = 64):
        if not isinstance(config, VitcodConfig):
            raise TypeError(f"VitcodAxi needs a VitcodConfig, not {config!r}")
        self._config = config
        self._core = core if core is not None else VitcodAccelerator(config)
        self._regs = AcceleratorRegisters(DESIGN_NAME, register_params(config), addr_width=addr_width,
                                          perf_width=perf_width)
        w = config.data_width
        super().__init__({"aclk": In(1), "aresetn": In(1), **axis_slave_members(w), **axis_master_members(w),
                          **axil_members(self._regs.bank)})

    @property
    def config(self) -> VitcodConfig:
        return self._config

    @property
    def regmap(self):
        """The register map this wrapper's bank implements."""
        return self._regs.bank.regmap

    @property
    def cmd_beats(self) -> int:
        """``s_axis`` beats of one command."""
        return -(-self._config.cmd_layout.size // self._config.data_width)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.regs = regs = self._regs
        bus_domains(m, self.aclk, self.aresetn, regs.control.soft_reset)
        connect_axil(m, self, regs)
        m.submodules.core = core = DomainRenamer("accel")(self._core)
        framing = AxisCommandInput(cfg.data_width, cfg.cmd_layout, count_width=cfg.command_beats_width,
                                   data_beats=lambda p: command_data_beats(cfg, p))
        m.submodules.framing = framing = DomainRenamer("accel")(framing)
        m.submodules.out = out = AxisOutput(cfg.data_width)
        m.d.comb += [framing.tdata.eq(self.s_axis_tdata), framing.tkeep.eq(self.s_axis_tkeep),
                     framing.tvalid.eq(self.s_axis_tvalid), self.s_axis_tready.eq(framing.tready),
                     framing.tlast.eq(self.s_axis_tlast),
                     framing.enable.eq(regs.enable.enable)]
        wiring.connect(m, framing.cmd, core.cmd)
        wiring.connect(m, framing.data, core.data)
        m.d.comb += [out.i.valid.eq(core.o.valid), out.i.payload.data.eq(core.o.payload),
                     out.i.payload.last.eq(core.o_last), core.o.ready.eq(out.i.ready),
                     self.m_axis_tdata.eq(out.tdata), self.m_axis_tkeep.eq(out.tkeep),
                     self.m_axis_tvalid.eq(out.tvalid), out.tready.eq(self.m_axis_tready),
                     self.m_axis_tlast.eq(out.tlast)]
        m.d.comb += [regs.status.busy.eq(core.busy),
                     regs.status.errors.eq(core.error | Mux(framing.keep_error, ERR_AXIS_TKEEP, 0)
                                           | Mux(framing.last_error, ERR_AXIS_TLAST, 0)),
                     regs.done_count.value.eq(core.heads_done), regs.failed_count.value.eq(core.heads_failed),
                     regs.perf.busy.eq(core.busy),
                     regs.perf.stall_in.eq(framing.partial & framing.tready & ~self.s_axis_tvalid),
                     regs.perf.stall_out.eq(core.o.valid & ~core.o.ready),
                     regs.perf.mac_active.eq(core.mac_active)]
        return m
