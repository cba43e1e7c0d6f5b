"""The model-level ViT accelerator: a sequencer runs the ISA (``isa.py``) on the units around one buffer.

Blocks (docs/vit-model.md):

* **Host stream** ``i``: header and payload beats (``beat_width`` bits). The sequencer takes a
  header (FETCH), decodes it (DECODE: the walkers are reset), forwards LAYERNORM's gamma/beta
  beats to the LayerNorm unit (PARAM), then runs the instruction (RUN) until its last output
  is written (or, for STORE, has left on ``o``), and takes the next header. Opcode 0 and the
  reserved ATTENTION halt it with ``error`` set (ERROR; only a reset leaves it).
* **Activation buffer**: ``P`` banks of ``buffer_tiles * P`` int16 elements, **skewed**: element
  ``(r, c)`` of a region lies in bank ``(r + c) mod P``, at word ``tile * P + r mod P`` of its
  ``P x P`` tile. A *row vector* (P channels of one row: LayerNorm, GELU, ADD, LOAD, STORE) and a
  *column vector* (P rows of one channel: the matmul's activations and outputs) then each take
  one element from every bank, so both move at one vector per cycle, rotated by ``r mod P``
  (row) or ``c mod P`` (column) on the way in and out. Two read ports (ADD reads its residual
  and its branch at once) and one write port per bank.
* **Reader** (read ports, one register of latency) and **writer** (write port, always ready):
  each walks a region vector by vector (``_walker``) in the order the consumer or producer
  needs: rows then channel groups (row vectors); row groups then channels (the matmul's ``x``);
  channels then row groups (the matmul's ``o``).
* **Units**: ``VitMatmul`` (int16 output; an int8 instruction saturates it to int8 on the way
  into the buffer, which equals requantizing to int8 directly; a raw instruction takes its int32
  sums and writes their low halves into region ``d`` and their high halves into region ``b``),
  ``LayerNormUnit``, ``GeluUnit``, ``ResidualAddUnit`` (16-bit operands). Their run-time constants are the header register's
  fields, which hold still for the whole instruction.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from attnforge.numfmt import INT8

from ..common.component import ConfiguredComponent
from ..vit.eltwise import GeluUnit, ResidualAddUnit
from ..vit.layernorm import LayerNormUnit
from ..vit.matmul import VitMatmul
from ..vitcod.accelerator import VitcodAccelerator
from .config import VitModelConfig
from .isa import BETA_WIDTH, ELEMENT_WIDTH, GAMMA_WIDTH, HEADER_FIELDS, WEIGHT_FIELDS, Op

__all__ = ["VitModelAccelerator", "header_layout", "weight_layout"]


def _layout(fields) -> data.StructLayout:
    return data.StructLayout({name: signed(w) if s else unsigned(w) for name, w, s in fields})


def header_layout() -> data.StructLayout:
    """The header beat as an Amaranth layout (``isa.HEADER_FIELDS``)."""
    return _layout(HEADER_FIELDS)


def weight_layout() -> data.StructLayout:
    return _layout(WEIGHT_FIELDS)


def _ceil_div(value, divisor: int, max_value: int):
    """``ceil(value / divisor)`` for a run-time ``value`` in [0, max_value] and a constant divisor."""
    if divisor & (divisor - 1) == 0:
        return (value + divisor - 1) >> (divisor.bit_length() - 1)
    return sum((value > k * divisor).as_unsigned() for k in range(-(-max_value // divisor)))


def _mod_p(value, lanes: int):
    """``value mod P`` for a value in [0, 2P)."""
    return Mux(value >= lanes, value - lanes, value)


class VitModelAccelerator(ConfiguredComponent):
    """Model-level ViT accelerator: ISA sequencer, skewed activation buffer, matmul/LayerNorm/GELU/add units.

    Members
    -------
    i : ``In(stream.Signature(unsigned(beat_width)))``
        The host's instruction stream: header beats and their payload beats (``isa``).
    o : ``Out(stream.Signature(ArrayLayout(signed(16), P)))``
        STORE's row vectors: channels ``g*P ..`` of one row, rows outer.
    busy : ``Out(1)``
        An instruction is under way (a register: from the cycle after its header to the one after its end).
    error : ``Out(1)``
        A header with an opcode this hardware does not run, or with a shape it cannot run (``rows`` or ``cols``
        0 or past ``max_tokens`` / ``max_cols``, a MATMUL's ``out_cols`` likewise, a LAYERNORM wider than
        ``ln_channels``), was taken; the machine has halted (a register).
    retired : ``Out(32)``
        Instructions completed since reset (counts up in the cycle the sequencer is ready for the next header).
    """

    config_type = VitModelConfig

    @classmethod
    def signature_of(cls, config: VitModelConfig):
        return {
            "i": In(stream.Signature(unsigned(config.beat_width))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(ELEMENT_WIDTH), config.lanes))),
            "busy": Out(1),
            "error": Out(1),
            "retired": Out(32),
        }

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.matmul = mm = VitMatmul(cfg.matmul)
        m.submodules.layernorm = ln = LayerNormUnit(cfg.layernorm)
        m.submodules.gelu = gelu = GeluUnit(cfg.gelu)
        m.submodules.add = add = ResidualAddUnit(cfg.add)
        hdr = Signal(header_layout())
        units = dict(mm=mm, ln=ln, gelu=gelu, add=add)
        if cfg.attention is not None:
            m.submodules.attention = units["att"] = VitcodAccelerator(cfg.attention)
        self._constants(m, cfg, hdr, units)
        shape = self._shape(m, cfg, hdr)
        ctl = self._sequencer(m, cfg, hdr, shape, units)
        banks = self._banks(m, cfg)
        att = self._attention(m, cfg, hdr, ctl, units) if "att" in units else None
        self._reader(m, cfg, hdr, shape, ctl, banks, units, att)
        self._writer(m, cfg, hdr, shape, ctl, banks, units, att)
        return m

    def _constants(self, m, cfg, hdr, u):
        """The units' run-time ports from the header register (still for the whole instruction)."""
        mw = cfg.multiplier_width
        m.d.comb += [u["mm"].rows.eq(hdr.rows), u["mm"].in_features.eq(hdr.cols),
                     u["mm"].out_features.eq(hdr.out_cols), u["mm"].dense.eq(hdr.dense), u["mm"].raw.eq(hdr.raw),
                     u["ln"].channels.eq(hdr.cols), u["ln"].eps.eq(hdr.k0), u["ln"].multiplier.eq(hdr.m0[:mw]),
                     u["ln"].shift.eq(hdr.s0),
                     u["gelu"].t.eq(hdr.k1), u["gelu"].c.eq(hdr.k0), u["gelu"].multiplier.eq(hdr.m0[:mw]),
                     u["gelu"].shift.eq(hdr.s0),
                     u["add"].a_multiplier.eq(hdr.m0[:mw]), u["add"].a_shift.eq(hdr.s0),
                     u["add"].b_multiplier.eq(hdr.m1[:mw]), u["add"].b_shift.eq(hdr.s1)]
        for name, unit in u.items():
            if name != "mm":                          # the writer takes a vector every cycle (a raw
                m.d.comb += unit.o.ready.eq(1)        # matmul's in two: see _writer)

    def _shape(self, m, cfg, hdr):
        """Counts derived from the header: groups of P and the beats each side moves."""
        P = cfg.lanes
        s = dict(rows_g=Signal(range(cfg.matmul.groups + 1)), cols_g=Signal(range(-(-cfg.max_cols // P) + 1)),
                 out_g=Signal(range(-(-cfg.max_cols // P) + 1)), r_total=Signal(32), w_total=Signal(32))
        is_mm = hdr.opcode == Op.MATMUL
        m.d.comb += [s["rows_g"].eq(_ceil_div(hdr.rows, P, cfg.max_tokens)),
                     s["cols_g"].eq(_ceil_div(hdr.cols, P, cfg.max_cols)),
                     s["out_g"].eq(_ceil_div(hdr.out_cols, P, cfg.max_cols)),
                     s["r_total"].eq(Mux(is_mm, s["rows_g"] * hdr.cols, hdr.rows * s["cols_g"])),
                     s["w_total"].eq(Mux(is_mm, hdr.out_cols * s["rows_g"], hdr.rows * s["cols_g"]))]
        if cfg.attention is not None:
            with m.If(hdr.opcode == Op.ATTENTION):       # the head's output: N rows of d / P vectors
                m.d.comb += s["w_total"].eq(hdr.rows * (cfg.attention.head_dim // P))
        return s

    def _sequencer(self, m, cfg, hdr, shape, u):
        """FETCH -> DECODE -> (PARAM) -> RUN -> FETCH; forwards the host's payload beats."""
        # named: tb/formal.py's harness reads r_more and w_more (a dict of Signal() leaves them "$signal")
        ctl = dict(start=Signal(), run=Signal(), done=Signal(), r_more=Signal(name="r_more"),
                   w_more=Signal(name="w_more"),
                   load_valid=Signal(), order=Signal(), order_beats=Signal(16), att_fail=Signal(), att_ready=Signal(),
                   att_valid=Signal())
        hdr_in = self.i.payload[:len(hdr.as_value())]
        p_idx = Signal(16, name="p_idx")            # LAYERNORM's gamma/beta beats; ATTENTION's order beats
        ctl["order_addr"] = p_idx
        fwd_cols = Signal(16)                       # MATMUL: output channels whose weights were forwarded
        op = hdr.opcode
        known = (op >= Op.LOAD) & (op <= Op.MATMUL)
        if cfg.attention is not None:
            known = known | (op == Op.ATTENTION)
        # a shape the walkers cannot end (0 rows or columns: a STORE would stream forever) or the units do not
        # take is refused like an unknown opcode (check_program refuses them on the host already)
        shape_ok = ((hdr.rows != 0) & (hdr.rows <= cfg.max_tokens) & (hdr.cols != 0) & (hdr.cols <= cfg.max_cols)
                    & ((op != Op.MATMUL) | ((hdr.out_cols != 0) & (hdr.out_cols <= cfg.max_cols)))
                    & ((op != Op.LAYERNORM) | (hdr.cols <= cfg.ln_channels)))
        known = known & shape_ok
        m.d.comb += ctl["run"].eq(0)
        gb = self.i.payload
        width = GAMMA_WIDTH * cfg.lanes
        m.d.comb += [u["ln"].param.payload.index.eq(p_idx),
                     u["ln"].param.payload.gamma.as_value().eq(gb[:width]),
                     u["ln"].param.payload.beta.as_value().eq(gb[width:width + BETA_WIDTH * cfg.lanes])]
        w = weight_layout()(self.i.payload[:weight_layout().size])
        m.d.comb += [u["mm"].w.payload.value.eq(w.value), u["mm"].w.payload.index.eq(w.index),
                     u["mm"].w.payload.last.eq(w.last), u["mm"].w.payload.bias.eq(w.bias),
                     u["mm"].w.payload.multiplier.eq(w.multiplier), u["mm"].w.payload.shift.eq(w.shift)]
        with m.FSM(name="seq"):
            with m.State("FETCH"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [hdr.eq(hdr_in), self.busy.eq(1)]
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += ctl["start"].eq(known)
                m.d.sync += [p_idx.eq(0), fwd_cols.eq(0),
                             ctl["r_more"].eq(known & (op != Op.LOAD) & (op != Op.ATTENTION)),
                             ctl["w_more"].eq(known & (op != Op.STORE))]
                with m.If(~known):
                    m.d.sync += self.error.eq(1)
                    m.next = "ERROR"
                with m.Elif(op == Op.LAYERNORM):
                    m.next = "PARAM"
                with m.Elif(op == Op.ATTENTION):
                    m.next = "ORDER"
                with m.Else():
                    m.next = "RUN"
            with m.State("PARAM"):
                m.d.comb += [u["ln"].param.valid.eq(self.i.valid),
                             self.i.ready.eq(u["ln"].param.ready)]
                with m.If(self.i.valid & self.i.ready):
                    m.d.sync += p_idx.eq(p_idx + 1)
                    with m.If(p_idx == shape["cols_g"] - 1):
                        m.next = "RUN"
            with m.State("ORDER"):                     # ATTENTION: the key order into its table
                m.d.comb += [ctl["order"].eq(self.i.valid), self.i.ready.eq(1)]
                with m.If(self.i.valid):
                    m.d.sync += p_idx.eq(p_idx + 1)
                    with m.If(p_idx == ctl["order_beats"] - 1):
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += ctl["run"].eq(1)
                with m.If(op == Op.ATTENTION):         # the head's pointer and column beats, through the feed
                    m.d.comb += [ctl["att_valid"].eq(self.i.valid), self.i.ready.eq(ctl["att_ready"])]
                with m.If(ctl["att_fail"]):
                    m.d.sync += self.error.eq(1)
                    m.next = "ERROR"
                with m.If(op == Op.MATMUL):
                    more = fwd_cols != hdr.out_cols
                    m.d.comb += [u["mm"].w.valid.eq(self.i.valid & more), self.i.ready.eq(u["mm"].w.ready & more)]
                    with m.If(self.i.valid & self.i.ready & w.last):
                        m.d.sync += fwd_cols.eq(fwd_cols + 1)
                with m.Elif(op == Op.LOAD):
                    m.d.comb += [ctl["load_valid"].eq(self.i.valid & ctl["w_more"]), self.i.ready.eq(ctl["w_more"])]
                with m.If(ctl["done"] & ~ctl["att_fail"]):
                    m.d.sync += [self.retired.eq(self.retired + 1), self.busy.eq(0)]
                    m.next = "FETCH"
            with m.State("ERROR"):
                pass
        return ctl

    def _attention(self, m, cfg, hdr, ctl, u):
        """ATTENTION on the ViTCoD unit: its command from the header; its data stream fed by a two-stage
        pipeline (A: the key-order table read, B: the buffer read) with Q's rows in order, K's and V's
        through the key order, then the host's pointer and column beats; its output rows to the writer.
        Returns the buffer read address/enable of stage A and the writer's tile, rotation and lanes."""
        att, acfg = u["att"], cfg.attention
        P = cfg.lanes
        lg, half = P.bit_length() - 1, P // 2
        dg = acfg.head_dim // P                      # row vectors of a head's row
        is_att = hdr.opcode == Op.ATTENTION
        n = hdr.rows
        # the key order: P / 2 entries of 16 bits a word, as the ORDER beats bring them
        m.submodules.key_order = table = Memory(shape=unsigned(8 * P), depth=-(-cfg.max_tokens // half), init=[])
        tw, tr = table.write_port(), table.read_port(domain="sync", transparent_for=())
        m.d.comb += [tw.addr.eq(ctl["order_addr"]), tw.data.eq(self.i.payload[:8 * P]), tw.en.eq(ctl["order"]),
                     ctl["order_beats"].eq(_ceil_div(n, half, cfg.max_tokens))]
        # the command, once per instruction
        sent = Signal(name="att_cmd_sent")
        cmd = att.cmd.payload
        m.d.comb += [att.cmd.valid.eq(is_att & ctl["run"] & ~sent),
                     cmd.nq.eq(n), cmd.nk.eq(n), cmd.g.eq(hdr.g), cmd.nnz.eq(hdr.nnz), cmd.exp_mult.eq(hdr.m0),
                     cmd.exp_shift.eq(hdr.s0), cmd.out_mult.eq(hdr.m1), cmd.out_shift.eq(hdr.s1)]
        with m.If(ctl["start"]):
            m.d.sync += sent.eq(0)
        with m.Elif(att.cmd.valid & att.cmd.ready):
            m.d.sync += sent.eq(1)
        failed_was = Signal.like(att.heads_failed)
        m.d.sync += failed_was.eq(att.heads_failed)
        m.d.comb += ctl["att_fail"].eq(is_att & ((att.heads_failed != failed_was) | (att.error != 0)))
        # the feed: counters (issue), stage A, stage B (the ViTCoD unit's data beat)
        phase = Signal(2, name="att_phase")          # 0 Q, 1 K, 2 V, 3 the host's beats
        j = Signal(range(cfg.max_tokens + 1), name="att_row")
        c = Signal(range(max(dg, 2)), name="att_chunk")
        host_left = Signal(32, name="att_host_left")
        va, vb = Signal(name="att_a_valid"), Signal(name="att_b_valid")
        advance = Signal(name="att_advance")
        m.d.comb += advance.eq(~vb | att.data.ready)
        going = is_att & ctl["run"]
        qkv_issue = advance & going & (phase != 3)
        m.d.comb += ctl["att_ready"].eq(advance & (phase == 3) & (host_left != 0))
        host_issue = going & ctl["att_valid"] & ctl["att_ready"]
        half_ceil = lambda v, most: _ceil_div(v, half, most)    # noqa: E731
        with m.If(ctl["start"]):
            m.d.sync += [phase.eq(0), j.eq(0), c.eq(0),
                         host_left.eq(half_ceil(2 * n + 1, 2 * cfg.max_tokens + 1)
                                      + half_ceil(hdr.nnz, acfg.max_nnz))]
        with m.Elif(qkv_issue):
            with m.If(c == dg - 1):
                m.d.sync += c.eq(0)
                with m.If(j == n - 1):
                    m.d.sync += [j.eq(0), phase.eq(phase + 1)]
                with m.Else():
                    m.d.sync += j.eq(j + 1)
            with m.Else():
                m.d.sync += c.eq(c + 1)
        with m.Elif(host_issue):
            m.d.sync += host_left.eq(host_left - 1)
        m.d.comb += [tr.addr.eq(j >> (half.bit_length() - 1)), tr.en.eq(advance)]
        pa, ca, ja = Signal(2, name="att_a_phase"), Signal.like(c, name="att_a_chunk"), Signal.like(j, name="att_a_row")
        host_a = Signal(8 * P, name="att_a_host")
        pb, host_b, rot_b = Signal(2, name="att_b_phase"), Signal(8 * P, name="att_b_host"), Signal(range(P))
        with m.If(advance):
            m.d.sync += [va.eq(qkv_issue | host_issue), pa.eq(phase), ca.eq(c), ja.eq(j),
                         host_a.eq(self.i.payload[:8 * P]), vb.eq(va), pb.eq(pa), host_b.eq(host_a)]
        # stage A: the row (Q: in order; K, V: the key order's entry) and its buffer address
        entry = tr.data.word_select(ja[:max(half.bit_length() - 1, 0)] if half > 1 else 0, 16)
        row = Signal(16, name="att_a_token")
        m.d.comb += row.eq(Mux(pa == 0, ja, entry))
        heads_g = hdr.heads * dg                     # row vectors of q (or k, or v) of all heads
        group = Mux(pa == 0, 0, Mux(pa == 1, heads_g, heads_g << 1)) + hdr.head * dg + ca
        rk = row[:lg] if lg else 0
        # one Signal, not an expression: each of the P banks' address ports would get its own copy of the
        # product (and Yosys its own DSP block)
        tile = Signal(32, name="att_a_tile")
        m.d.comb += tile.eq(hdr.a + (row >> lg) * (heads_g * 3) + group)
        read = dict(addr=tile * P + rk, en=advance)
        with m.If(advance):
            m.d.sync += rot_b.eq(rk)
        # stage B: the data beat
        m.d.comb += att.data.valid.eq(vb)
        return dict(read=read, rot_b=rot_b, phase_b=pb, host_b=host_b, is_att=is_att,
                    out=self._attention_out(m, cfg, hdr, ctl, att, dg, lg))

    def _attention_out(self, m, cfg, hdr, ctl, att, dg, lg):
        """The unit's output rows (d / P beats of P int8 each) into columns ``head * d ..`` of region d."""
        P = cfg.lanes
        ro = Signal(range(cfg.max_tokens + 1), name="att_out_row")
        co = Signal(range(max(dg, 2)), name="att_out_chunk")
        m.d.comb += att.o.ready.eq(1)                 # the writer takes a vector every cycle
        with m.If(ctl["start"]):
            m.d.sync += [ro.eq(0), co.eq(0)]
        with m.Elif(att.o.valid):
            with m.If(co == dg - 1):
                m.d.sync += [co.eq(0), ro.eq(ro + 1)]
            with m.Else():
                m.d.sync += co.eq(co + 1)
        rk = ro[:lg] if lg else 0
        tile = Signal(32, name="att_out_tile")          # a Signal: one product for all banks (as above)
        m.d.comb += tile.eq(hdr.d + (ro >> lg) * (hdr.heads * dg) + hdr.head * dg + co)
        lanes = [att.o.payload[8 * k:8 * k + 8].as_signed() for k in range(P)]
        return dict(valid=att.o.valid, lanes=lanes, tile=tile, rot=rk)

    def _banks(self, m, cfg):
        banks = []
        for b in range(cfg.lanes):
            mem = Memory(shape=signed(ELEMENT_WIDTH), depth=cfg.bank_depth, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append(dict(a=mem.read_port(domain="sync", transparent_for=()),
                              b=mem.read_port(domain="sync", transparent_for=()), w=mem.write_port()))
        return banks

    def _walker(self, m, cfg, name, *, col, chan_outer, shape, region_g, start, step):
        """Counters of a walk over a region, vector by vector: row group ``rg``, row in group ``rk``, channel
        group ``cg``, channel in group ``ck`` (``c`` the channel). Row vectors (``col`` 0): rows outer, channel
        groups inner. Column vectors: row groups outer and channels inner, or (``chan_outer``) the reverse.
        Returns the tile offset in the region, the rotation and the per-bank word offsets."""
        P = cfg.lanes
        rg = Signal(range(cfg.matmul.groups + 1), name=f"{name}_rg")
        rk = Signal(range(P), name=f"{name}_rk")
        cg = Signal(range(-(-cfg.max_cols // P) + 1), name=f"{name}_cg")
        ck = Signal(range(P), name=f"{name}_ck")
        c = Signal(16, name=f"{name}_c")

        def next_row():
            m.d.sync += [rk.eq(Mux(rk == P - 1, 0, rk + 1)), rg.eq(Mux(rk == P - 1, rg + 1, rg))]

        def next_chan():
            m.d.sync += [ck.eq(Mux(ck == P - 1, 0, ck + 1)), cg.eq(Mux(ck == P - 1, cg + 1, cg)), c.eq(c + 1)]

        with m.If(start):
            m.d.sync += [rg.eq(0), rk.eq(0), cg.eq(0), ck.eq(0), c.eq(0)]
        with m.Elif(step):
            with m.If(~col):
                with m.If(cg == region_g - 1):
                    m.d.sync += cg.eq(0)
                    next_row()
                with m.Else():
                    m.d.sync += cg.eq(cg + 1)
            with m.Else():
                if not chan_outer:
                    with m.If(c == shape["nch"] - 1):
                        m.d.sync += [c.eq(0), ck.eq(0), cg.eq(0), rg.eq(rg + 1)]
                    with m.Else():
                        next_chan()
                else:
                    with m.If(rg == shape["rows_g"] - 1):
                        m.d.sync += rg.eq(0)
                        next_chan()
                    with m.Else():
                        m.d.sync += rg.eq(rg + 1)
        tile_off = Signal(32, name=f"{name}_tile")
        m.d.comb += tile_off.eq(rg * region_g + cg)
        rot = Mux(col, ck, rk)
        offsets = [Mux(col, _mod_p(b + P - ck, P), rk) for b in range(P)]
        return tile_off, rot, offsets

    def _reader(self, m, cfg, hdr, shape, ctl, banks, u, att=None):
        """Region ``a`` (and ``b`` for ADD) into the consumer the opcode names, one vector per cycle."""
        P = cfg.lanes
        op = hdr.opcode
        is_mm = op == Op.MATMUL
        valid, ready, last = Signal(name="rd_valid"), Signal(name="rd_ready"), Signal(name="rd_last")
        n = Signal(32, name="rd_n")
        advance = ~valid | ready
        issue = advance & ctl["r_more"] & ctl["run"]
        tile_off, rot, offsets = self._walker(m, cfg, "rd", col=is_mm, chan_outer=False,
                                              shape=dict(nch=hdr.cols, rows_g=shape["rows_g"]),
                                              region_g=shape["cols_g"], start=ctl["start"], step=issue)
        rot_q = Signal(range(P))
        with m.If(ctl["start"]):
            m.d.sync += n.eq(0)
        with m.If(advance):
            m.d.sync += valid.eq(issue)
        with m.If(issue):
            m.d.sync += [n.eq(n + 1), rot_q.eq(rot)]
            with m.If(n == shape["r_total"] - 1):
                m.d.sync += ctl["r_more"].eq(0)
        lanes = {}
        for port, base in (("a", hdr.a), ("b", hdr.b)):
            tile = (base + tile_off) * P
            for b, bank in enumerate(banks):
                m.d.comb += [bank[port].addr.eq(tile + offsets[b]), bank[port].en.eq(advance)]
                if att is not None and port == "a":
                    with m.If(att["is_att"]):
                        m.d.comb += [bank[port].addr.eq(att["read"]["addr"]), bank[port].en.eq(att["read"]["en"])]
            words = Array(bank[port].data for bank in banks)
            lanes[port] = [words[_mod_p(rot_q + j, P)] for j in range(P)]
        if att is not None:       # ATTENTION's data beat: the row vector's int8 values, or the host's beat
            words = Array(bank["a"].data for bank in banks)
            vec = Cat(*[words[_mod_p(att["rot_b"] + j, P)][:INT8.width] for j in range(P)])
            m.d.comb += u["att"].data.payload.eq(Mux(att["phase_b"] == 3, att["host_b"], vec))
        m.d.comb += last.eq(~ctl["r_more"])          # the vector on offer is the last one
        consumers = {Op.STORE: (self.o, "a"), Op.LAYERNORM: (u["ln"].i, "a"), Op.GELU: (u["gelu"].i, "a"),
                     Op.MATMUL: (u["mm"].x, "a8")}
        for code, (sink, port) in consumers.items():
            here = op == code
            m.d.comb += sink.valid.eq(valid & here)
            for j in range(P):
                value = lanes["a"][j][:INT8.width].as_signed() if port == "a8" else lanes["a"][j]
                m.d.comb += sink.payload[j].eq(value)
            with m.If(here):
                m.d.comb += ready.eq(sink.ready)
        here = op == Op.ADD
        m.d.comb += [u["add"].a.valid.eq(valid & here), u["add"].b.valid.eq(valid & here)]
        for j in range(P):
            m.d.comb += [u["add"].a.payload[j].eq(lanes["a"][j]), u["add"].b.payload[j].eq(lanes["b"][j])]
        with m.If(here):
            m.d.comb += ready.eq(u["add"].a.ready)
        with m.If((op == Op.STORE) & self.o.valid & self.o.ready & last):
            m.d.comb += ctl["done"].eq(1)

    def _writer(self, m, cfg, hdr, shape, ctl, banks, u, att=None):
        """The producer the opcode names into region ``d``, one vector per cycle, never stalling (a raw
        MATMUL: two cycles per vector, region ``d`` then ``b``)."""
        P = cfg.lanes
        op = hdr.opcode
        is_mm = op == Op.MATMUL
        valid = Signal(name="wr_valid")
        lanes = [Signal(signed(ELEMENT_WIDTH), name=f"wr_lane{j}") for j in range(P)]
        n = Signal(32, name="wr_n")
        write = valid & ctl["w_more"] & ctl["run"]
        # a raw MATMUL: each output beat is written twice, its low halves into region d, then (``high``)
        # its high halves into region b; the matmul's beat is taken with the second write
        raw = is_mm & hdr.raw
        high = Signal(name="wr_high")
        with m.If(ctl["start"]):
            m.d.sync += high.eq(0)
        with m.Elif(write & raw):
            m.d.sync += high.eq(~high)
        m.d.comb += u["mm"].o.ready.eq(~raw | high)
        step = write & (~raw | high)
        tile_off, rot, offsets = self._walker(m, cfg, "wr", col=is_mm, chan_outer=True,
                                              shape=dict(nch=hdr.out_cols, rows_g=shape["rows_g"]),
                                              region_g=Mux(is_mm, shape["out_g"], shape["cols_g"]),
                                              start=ctl["start"], step=step)
        load = data.ArrayLayout(signed(ELEMENT_WIDTH), P)(self.i.payload[:P * ELEMENT_WIDTH])
        sat8 = [Mux(v > INT8.max, INT8.max, Mux(v < INT8.min, INT8.min, v)) for v in u["mm"].o.payload]
        half = [Mux(high, v[ELEMENT_WIDTH:2 * ELEMENT_WIDTH], v[:ELEMENT_WIDTH]).as_signed()
                for v in u["mm"].o.payload]
        mm_lanes = [Mux(hdr.raw, half[j], Mux(hdr.out8, sat8[j], u["mm"].o.payload[j][:ELEMENT_WIDTH].as_signed()))
                    for j in range(P)]
        producers = {Op.LOAD: (ctl["load_valid"], [load[j] for j in range(P)]),
                     Op.MATMUL: (u["mm"].o.valid, mm_lanes),
                     Op.LAYERNORM: (u["ln"].o.valid, list(u["ln"].o.payload)),
                     Op.GELU: (u["gelu"].o.valid, list(u["gelu"].o.payload)),
                     Op.ADD: (u["add"].o.valid, list(u["add"].o.payload))}
        if att is not None:                     # a head's output rows: row vectors of its columns of region d
            producers[Op.ATTENTION] = (att["out"]["valid"], att["out"]["lanes"])
            isa = att["is_att"]
            tile_off = Mux(isa, att["out"]["tile"] - hdr.d, tile_off)
            rot = Mux(isa, att["out"]["rot"], rot)
            offsets = [Mux(isa, att["out"]["rot"], off) for off in offsets]
        with m.Switch(op):
            for code, (v, values) in producers.items():
                with m.Case(code):
                    m.d.comb += [valid.eq(v)] + [lanes[j].eq(values[j]) for j in range(P)]
        with m.If(ctl["start"]):
            m.d.sync += n.eq(0)
        with m.If(step):
            m.d.sync += n.eq(n + 1)
            with m.If(n == shape["w_total"] - 1):
                m.d.sync += ctl["w_more"].eq(0)
                m.d.comb += ctl["done"].eq(1)
        tile = (Mux(high, hdr.b, hdr.d) + tile_off) * P
        lane_of = Array(lanes)
        for b, bank in enumerate(banks):
            m.d.comb += [bank["w"].addr.eq(tile + offsets[b]), bank["w"].en.eq(write),
                         bank["w"].data.eq(lane_of[_mod_p(b + P - rot, P)])]
