"""The M state lanes: update (``S += phi(k) v``) and readout (``phi(q)^T S``) of one state word per pass element.

Each cycle the lanes take one element from the fetch stage: column j of row group
g for draft token tau. On the pass's first token the word comes from the state
memory (or is zero, for a bank cleared by reset), later tokens fold into the
running word; the word goes back to memory after the pass's last token (after
every token with snapshot banks). The readout multiplies the running word with
phi(q) into an adder tree split over two stages; with G > 1 row groups a small
numerator memory sums the groups. Four stages from the fetch register to the
numerator.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from attnforge.linear_format import PHI_FORMAT

from ..common import ConfiguredComponent, log2_ceil, tree_sum
from .config import TREE_CHUNK, LinearDecodeConfig
from .interfaces import FetchSignature

__all__ = ["StateLanes", "mul_shift_add"]


def mul_shift_add(small, value):
    """``small * value`` for a narrow unsigned ``small``, as shifted adds in LUTs.

    The update products (uint7 * int8, M of them) are built from adders so that
    synthesis keeps the FPGA's DSP blocks for the wide readout products.
    """
    return tree_sum([Mux(small[b], value << b, 0) for b in range(len(small))])


class StateLanes(ConfiguredComponent):
    """M update lanes and M readout lanes on the state memory, with the numerator adder tree.

    Parameters
    ----------
    config : LinearDecodeConfig

    Members
    -------
    fetch : ``In(FetchSignature(config))``
        The element to update (``element``, ``v``, ``phi_k``, ``phi_q``) and, a cycle
        ahead, the address of the next element's state word (``state_addr``).
    state_read : ``In(ReadPort.Signature(...))`` (the port seen from its user)
        The state memory's read port (synchronous, not transparent): the word of
        ``fetch.state_addr``, there when its element is in the update stage.
    state_write : ``In(WritePort.Signature(...))``
        The state memory's write port: the updated word at ``element.state_addr``
        after the pass's last token (after every token with snapshot banks).
    numerator : ``Out(StructLayout({"element": element_layout, "attn": numerator shape}))``
        Four cycles after the update stage: the element's context and
        ``phi(q)^T S`` over all d rows (complete in the last row group), wrapped to
        ``numerator_format``.
    """

    config_type = LinearDecodeConfig

    @classmethod
    def signature_of(cls, config: LinearDecodeConfig):
        addr_width = log2_ceil(config.state_depth)
        return {
            "fetch": In(FetchSignature(config)),
            "state_read": In(ReadPort.Signature(addr_width=addr_width, shape=config.state_word)),
            "state_write": In(WritePort.Signature(addr_width=addr_width, shape=config.state_word)),
            "numerator": Out(data.StructLayout({"element": config.element_layout,
                                                "attn": signed(config.format.numerator_format.width)})),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        fetch = self.fetch
        element = fetch.element
        m.d.comb += self.state_read.addr.eq(fetch.state_addr)
        # Update stage: the running word of each lane (also what the readout multiplies).
        running = [Signal(signed(cfg.format.state_format.width), name=f"state_run{i}") for i in range(cfg.macs)]
        for i in range(cfg.macs):
            word = Mux(element.first_token, Mux(element.bank_zero, 0, self.state_read.data[i]), running[i])
            updated = Signal.like(running[i], name=f"state_new{i}")
            m.d.comb += [updated.eq(word + mul_shift_add(fetch.phi_k[i], fetch.v)),   # wraps, as the golden model
                         self.state_write.data[i].eq(updated)]
            with m.If(element.valid):
                m.d.sync += running[i].eq(updated)
        write = element.valid if cfg.snapshots else element.valid & element.last_token
        m.d.comb += [self.state_write.addr.eq(element.state_addr), self.state_write.en.eq(write)]
        self._readout(m, running)
        return m

    def _readout(self, m, running):
        """Readout products (stage 2), the tree in chunks (3), the chunk sums plus the group sum (4)."""
        cfg = self._config
        fmt = cfg.format
        element2 = Signal.like(self.fetch.element, name="readout_element2")
        phi_q2 = Signal.like(self.fetch.phi_q, name="readout_phi_q2")
        m.d.sync += [element2.eq(self.fetch.element), phi_q2.eq(self.fetch.phi_q)]
        element3 = Signal.like(element2, name="readout_element3")
        products = [Signal(signed(fmt.state_format.width + PHI_FORMAT.width + 1), name=f"readout_product{i}") for i in range(cfg.macs)]
        m.d.sync += [element3.eq(element2), *[products[i].eq(phi_q2[i] * running[i]) for i in range(cfg.macs)]]
        # The M products are summed in two stages: chunks of TREE_CHUNK here, the chunk sums
        # (and the group sum) next, so no cycle holds a log2(M)-deep adder chain.
        element4 = Signal.like(element2, name="readout_element4")
        chunks = []
        for lo in range(0, cfg.macs, TREE_CHUNK):
            chunk_sum = tree_sum(products[lo:lo + TREE_CHUNK])
            chunk = Signal(chunk_sum.shape(), name=f"readout_chunk{lo // TREE_CHUNK}")
            m.d.sync += chunk.eq(chunk_sum)
            chunks.append(chunk)
        m.d.sync += element4.eq(element3)
        numerator = Signal(signed(fmt.numerator_format.width), name="readout_numerator")
        if cfg.groups > 1:
            # Sum of the row groups so far, per (token, column): read a cycle ahead.
            group_sums = Memory(shape=numerator.shape(), depth=cfg.t_max * cfg.columns, init=[])
            m.submodules.group_sums = group_sums
            read, write = group_sums.read_port(), group_sums.write_port()
            m.d.comb += [read.addr.eq(element3.token * cfg.columns + element3.column),
                         numerator.eq(Mux(element4.first_group, 0, read.data) + tree_sum(chunks)),
                         write.addr.eq(element4.token * cfg.columns + element4.column), write.data.eq(numerator),
                         write.en.eq(element4.valid & ~element4.last_group)]
        else:
            m.d.comb += numerator.eq(tree_sum(chunks))
        m.d.sync += [self.numerator.element.eq(element4), self.numerator.attn.eq(numerator)]
