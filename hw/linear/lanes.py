"""The M state lanes: update (``S += phi(k) v``) and readout (``phi(q)^T S``) of one state word per pass element.

Each cycle the lanes take one element from the fetch stage: column j of row group
g for draft token tau. On the pass's first token the word comes from the state
memory (or is zero, for a bank cleared by reset), later tokens fold into the
running word; the word goes back to memory after the pass's last token (after
every token with snapshot banks). The readout multiplies the running word with
phi(q) into an adder tree split over registered stages; with G > 1 row groups a small
numerator memory sums the groups.

Pipelined for the clock (``config.pipe.lanes_latency`` stages from the update stage to the
numerator, 13 with the ECP5's pipelining and 11 with the iCE40's, latency only): the fetch's outputs are registered once (stage 0: the first level of
v's and the bank-zero bit's fan-out tree, one copy per LANE_REGION lanes; the state read
address, phi(k), phi(q) and the element delayed alike), the block RAM's read data is registered (stage 1), the
update products (two adder levels per stage) and the word to start from are
registered (stages 2, 3), so the running word's loop (stage 4) is one multiplexer
and one adder; the write data is the running register (stage 5). The control bits and v reach the 64 lanes
through one register copy per ``lane_group`` lanes (each from its region's copy), not one wide
broadcast, and each slice of the state memory (``config.state_slices``) has its own copies of the read
and write addresses (from ``config.state_addr_roots`` copies a level before); the
readout multipliers have registered operands and are split into DSP products
(``config.dsp_family``: 18x18 bits on ECP5, 16x16 on the iCE40), each registered right
after its DSP (and ``readout_piece_stages`` more times in the fabric: ECP5's far DSP blocks),
then summed (``registered_split_product``; with ``config.dsp_primitives`` the operand and product
registers are the ECP5 DSP blocks' own);
the adder tree's registered stages are ``readout_tree_chunks`` (ECP5: pairs of products, one adder
level beside the DSP blocks' long nets, then two of at most two adder levels), then the numerator
register.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from attnforge.linear_format import PHI_FORMAT
from attnforge.numfmt import INT8

from ..common import ConfiguredComponent, log2_ceil, registered_split_product, replica_tree, tree_sum
from .config import LANE_FANOUT_LEVELS, LANE_REGION, LinearDecodeConfig, Pipelining
from .interfaces import FetchSignature

__all__ = ["StateLanes", "mul_shift_add", "readout_elements"]

def readout_elements(pipe: Pipelining) -> range:
    """Stages of the readout's element records (``readout_element{n}``): the two DSP product stages,
    the pieces' registers (``readout_piece_stages``), the adder tree's (``readout_tree_chunks``), and
    the numerator's, after the operands' stage 5."""
    return range(6, 9 + pipe.readout_piece_stages + len(pipe.readout_tree_chunks))


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
        ahead, the address of the next element's state word (``state_addr``, in copies each for a
        run of slices).
    state_read : ``In(ReadPort.Signature(...)).array(config.state_slices)`` (the ports seen from their user)
        The read port of each slice of the state memory (synchronous, not transparent; slice s holds
        lanes ``s * L .. s * L + L - 1``, ``L = macs // state_slices``): the word of
        ``fetch.state_addr``, there when its element is in the update stage. Each slice's address
        is its own register copy.
    state_write : ``In(WritePort.Signature(...)).array(config.state_slices)``
        Each slice's write port: the updated word at ``element.state_addr``, four
        cycles after the update stage, after the pass's last token (after every token with snapshot
        banks); address and enable each slice's own register copy.
    numerator : ``Out(StructLayout({"element": element_layout, "attn": numerator shape}))``
        ``config.pipe.lanes_latency`` cycles after the update stage: the element's context and
        ``phi(q)^T S`` over all d rows (complete in the last row group), wrapped to
        ``numerator_format``.
    """

    config_type = LinearDecodeConfig

    @classmethod
    def signature_of(cls, config: LinearDecodeConfig):
        addr_width = log2_ceil(config.state_depth)
        return {
            "fetch": In(FetchSignature(config)),
            "state_read": In(ReadPort.Signature(addr_width=addr_width, shape=config.state_slice_word)
                             ).array(config.state_slices),
            "state_write": In(WritePort.Signature(addr_width=addr_width, shape=config.state_slice_word)
                              ).array(config.state_slices),
            "numerator": Out(data.StructLayout({"element": config.element_layout,
                                                "attn": signed(config.format.numerator_format.width)})),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        fetch = self._input(m)
        m.d.comb += [port.addr.eq(addr) for port, addr in zip(self.state_read, fetch["state_addr"])]
        element3, element4, base, product, valid, first = self._update_operands(m, fetch)
        # Stage 4: the running word of each lane (also what the readout multiplies); one loop of
        # a multiplexer and an adder between registers.
        width = cfg.format.state_format.width
        running = [Signal(signed(width), name=f"state_run{i}") for i in range(cfg.macs)]
        for i in range(cfg.macs):
            g = i // cfg.pipe.lane_group
            with m.If(valid[g]):
                m.d.sync += running[i].eq(Mux(first[g], base[i], running[i]) + product[i])   # wraps, as the golden model
        element5 = Signal.like(element4, name="update_element5")
        m.d.sync += element5.eq(element4)
        # Stage 5: the running word goes back to memory (a register drives the write data); each
        # slice's address and enable are its own copies, from config.state_addr_roots copies registered
        # with stage 4 (one register into the 16 slices' copies was a routed critical path: the write
        # enable's 10.6 ns net, issue 15).
        write3 = element3.valid if cfg.snapshots else element3.valid & element3.last_token
        lanes, slices = cfg.macs // cfg.state_slices, cfg.state_slices
        tree = [cfg.state_addr_roots, slices]
        waddr = replica_tree(m, element3.state_addr, "state_waddr", tree)
        wen = replica_tree(m, write3, "state_wen", tree)
        for s, port in enumerate(self.state_write):
            m.d.comb += [port.addr.eq(waddr[s]), port.en.eq(wen[s]),
                         *[port.data[k].eq(running[s * lanes + k]) for k in range(lanes)]]
        self._readout(m, element5, running)
        return m

    def _group_copies(self, m, regions, name, groups):
        """One copy per lane group, each from the copy of its region (``regions``, the upper levels of
        the fan-out tree; group g's region holds its lanes)."""
        copies = [Signal.like(regions[0], name=f"{name}_rep{g}", attrs={"replica": 1}) for g in range(groups)]
        group = self._config.pipe.lane_group
        m.d.sync += [c.eq(regions[min(g * group // LANE_REGION, len(regions) - 1)]) for g, c in enumerate(copies)]
        return copies

    def _input(self, m):
        """Stage 0 (LANE_FANOUT_LEVELS - 1 registers): the first levels of v's and the bank-zero
        bit's fan-out tree (one copy per LANE_REGION lanes), the state read address, phi(k), phi(q)
        and the element delayed alike. Returns them by the fetch's names (``v``, ``bank_zero``:
        the copies)."""
        cfg, fetch = self._config, self.fetch
        regions = -(-cfg.macs // LANE_REGION)
        upper = [regions] * (LANE_FANOUT_LEVELS - 1)
        out = {"v": replica_tree(m, fetch.v, "update_v_region", upper) or [fetch.v],
               "bank_zero": replica_tree(m, fetch.element.bank_zero, "update_zero_region", upper)
               or [fetch.element.bank_zero]}
        # the state read address: a copy per slice of the state memory, each from the fetch stage's copy
        # for its run of slices
        roots, slices = cfg.state_addr_roots, cfg.state_slices
        out["state_addr"] = [replica_tree(m, fetch.state_addr[s * roots // slices], f"lanes_state_addr{s}",
                                          [1] * (LANE_FANOUT_LEVELS - 1))[0] for s in range(slices)]
        for name in ("element", "phi_k", "phi_q"):
            value = getattr(fetch, name)
            for n in range(LANE_FANOUT_LEVELS - 1):
                reg = Signal.like(value, name=f"lanes_{name}{n}")
                m.d.sync += reg.eq(value)
                value = reg
            out[name] = value
        return out

    def _update_operands(self, m, fetch):
        """Stage 1: the state word out of the block RAM registered, phi(k) and v registered per
        lane group. Stage 2: the word to start from (zero for a bank cleared by reset), the
        update products' first adder level. Stage 3: the products; the per-group control bits.
        Returns the elements of stages 3 and 4, the start words, products, and per-group valid and
        first-token bits."""
        cfg = self._config
        groups = -(-cfg.macs // cfg.pipe.lane_group)
        lanes = cfg.macs // cfg.state_slices
        width = cfg.format.state_format.width
        elements = [fetch["element"]]
        for n in (2, 3, 4):
            elements.append(Signal.like(fetch["element"], name=f"update_element{n}"))
            m.d.sync += elements[-1].eq(elements[-2])
        self._phi_q = [fetch["phi_q"]]
        for n in (2, 3, 4, 5):
            self._phi_q.append(Signal.like(fetch["phi_q"], name=f"readout_phi_q{n}"))
            m.d.sync += self._phi_q[-1].eq(self._phi_q[-2])
        phi_k2 = Signal.like(fetch["phi_k"], name="update_phi_k2")
        state2 = [Signal(signed(width), name=f"state_read{i}") for i in range(cfg.macs)]
        m.d.sync += [phi_k2.eq(fetch["phi_k"]), *[state2[i].eq(self.state_read[i // lanes].data[i % lanes]) for i in range(cfg.macs)]]
        # the last level of v's and bank-zero's fan-out trees: a group's copy from its region's
        v2 = self._group_copies(m, fetch["v"], "update_v", groups)
        zero2 = self._group_copies(m, fetch["bank_zero"], "update_zero", groups)
        # the valid and first-token bits as two-level trees too (a copy per region a stage earlier)
        regions = -(-cfg.macs // LANE_REGION)
        first = self._group_copies(m, replica_tree(m, elements[1].first_token, "update_first_region", [regions]),
                                   "update_first", groups)
        valid = self._group_copies(m, replica_tree(m, elements[1].valid, "update_valid_region", [regions]),
                                   "update_valid", groups)
        base3 = [Signal(signed(width), name=f"state_base{i}") for i in range(cfg.macs)]
        base4 = [Signal(signed(width), name=f"state_start{i}") for i in range(cfg.macs)]
        product4 = [Signal(signed(INT8.width + PHI_FORMAT.width + 1), name=f"update_product{i}")
                    for i in range(cfg.macs)]
        for i in range(cfg.macs):
            g = i // cfg.pipe.lane_group
            # phi(k)[i] * v as shifted adds: pairs summed in stage 2, the rest in stage 3
            terms = [Mux(phi_k2[i][b], v2[g] << b, 0) for b in range(PHI_FORMAT.width)]
            pairs = []
            for n, lo in enumerate(range(0, len(terms), 2)):
                pair_sum = tree_sum(terms[lo:lo + 2])
                pair = Signal(pair_sum.shape(), name=f"update_pair{i}_{n}")
                m.d.sync += pair.eq(pair_sum)
                pairs.append(pair)
            m.d.sync += [base3[i].eq(Mux(zero2[g], 0, state2[i])), base4[i].eq(base3[i]),
                         product4[i].eq(tree_sum(pairs))]
        return elements[2], elements[3], base4, product4, valid, first

    def _readout(self, m, element5, running):
        """Readout operands (stage 5), products split over DSP blocks (6, 7), the adder tree in
        registered stages of ``readout_tree_chunks`` (8, 9, 10 with the ECP5's), then the numerator
        register (the group sum in it)."""
        cfg = self._config
        fmt = cfg.format
        elements = [element5]
        for n in readout_elements(cfg.pipe):
            elements.append(Signal.like(element5, name=f"readout_element{n}"))
            m.d.sync += elements[-1].eq(elements[-2])
        # the element of the cycle before the numerator's, and the numerator's
        element_prev, element_last = elements[-2], elements[-1]
        # phi(q) and the running word registered (in the DSP blocks with dsp_primitives), the pieces
        # registered, their sum registered
        sums = [registered_split_product(m, self._phi_q[-1][i], running[i], f"readout_product{i}", *cfg.dsp_cut,
                                         dsp_primitive=cfg.dsp_primitives, piece_stages=cfg.pipe.readout_piece_stages)
                for i in range(cfg.macs)]
        for stage, chunk in enumerate(cfg.pipe.readout_tree_chunks):
            level = []
            for lo in range(0, len(sums), chunk):
                part = tree_sum(sums[lo:lo + chunk])
                reg = Signal(part.shape(), name=f"readout_tree{stage}_{lo // chunk}")
                m.d.sync += reg.eq(part)
                level.append(reg)
            sums = level
        numerator = Signal(signed(fmt.numerator_format.width), name="readout_numerator")
        if cfg.groups > 1:
            # Sum of the row groups so far, per (token, column): read a cycle ahead.
            group_sums = Memory(shape=numerator.shape(), depth=cfg.t_max * cfg.columns, init=[])
            m.submodules.group_sums = group_sums
            read, write = group_sums.read_port(), group_sums.write_port()
            ahead, base = element_prev, Mux(element_last.first_group, 0, read.data)
            if cfg.pipe.group_sum_register and cfg.columns >= 3:
                # read two cycles ahead, the data registered (zero for a first row group): a sum written
                # by element e is read for the next row group's e, columns x tokens >= 3 cycles later, so
                # the read's edge comes after the write's
                ahead, base = elements[-3], Signal(numerator.shape(), name="readout_group_sum")
                m.d.sync += base.eq(Mux(element_prev.first_group, 0, read.data))
            written, data = element_last, numerator
            if cfg.pipe.group_sum_register and cfg.columns >= 4:
                # and the sum written from the numerator's register, a cycle later (read back for the
                # next row group >= 4 cycles after its element, so still before that read's edge): the
                # add no longer ends at the RAM's write data (the iCE40's routed critical path at d = 9,
                # M = 3: the registered read, a 6 ns net, the 30-bit carry chain, back to the RAM)
                written, data = self.numerator.element, self.numerator.attn
            m.d.comb += [read.addr.eq(ahead.token * cfg.columns + ahead.column),
                         numerator.eq(base + tree_sum(sums)),
                         write.addr.eq(written.token * cfg.columns + written.column), write.data.eq(data),
                         write.en.eq(written.valid & ~written.last_group)]
        else:
            m.d.comb += numerator.eq(tree_sum(sums))
        m.d.sync += [self.numerator.element.eq(element_last), self.numerator.attn.eq(numerator)]
