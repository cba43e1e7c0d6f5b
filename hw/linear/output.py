"""Output stage: both requantizers, the double-buffered output buffer and its emitter.

Per element (column j of draft token tau, last row group) the attention value and
the convolution sum are requantized into ``MID_FORMAT``, added, saturated to int8
and written as byte j of token tau's word in the pass's output half. A half that
a pass has completely written is emitted one token (d int8) per ``o`` transfer.
Because a pass claims its half before it starts and only when it is free,
backpressure on ``o`` never reaches the pipeline.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from attnforge.linear_format import MID_FORMAT
from attnforge.numfmt import INT8

from ..common import ConfiguredComponent, log2_ceil, mux_tree, requant_round, saturate, split_product
from .config import LinearDecodeConfig, shape_of
from .interfaces import OutputHalfSignature, ResultSignature

__all__ = ["OutputStage"]


def requant_multiplier(rq):
    """A requantizer's unsigned multiplier as a signed constant (``requant_product``'s operand)."""
    return Cat(Const(rq.multiplier, rq.multiplier_width), Const(0, 1)).as_signed()


class OutputStage(ConfiguredComponent):
    """Requantizers (``config.pipe.output_stages`` stages), output buffer (two halves of ``t_max`` tokens) and emitter.

    Parameters
    ----------
    config : LinearDecodeConfig

    Members
    -------
    result : ``In(ResultSignature(config, attn_input_format.width))``
        One element per cycle (``element.valid``): its context, the attention input
        (numerator, or quotient for relu_norm) and the convolution sum. Written to the
        buffer ``output_stages`` cycles later when the element emits (``emit``), is in the last row
        group and is not the z column; the pass's last element (``pass_end``) marks its
        half full with ``tokens`` tokens.
    half : ``In(OutputHalfSignature())``
        The half the command control's next output pass writes; ``free`` tells it the
        half can be claimed, ``claim`` marks it busy until the pass's last element.
    o : ``Out(stream.Signature(config.output_layout))``
        One token's d int8 outputs per transfer, in order; a half is emitted once full.
    last : ``Out(1)``
        With ``o.valid``: the token offered is its block's last (an AXI4-Stream ``tlast``).
    pending : ``Out(1)``
        A half is claimed by a pass or holds tokens not yet emitted (outputs in flight).
    """

    config_type = LinearDecodeConfig

    @classmethod
    def signature_of(cls, config: LinearDecodeConfig):
        return {
            "result": In(ResultSignature(config, config.format.attn_input_format.width)),
            "half": In(OutputHalfSignature()),
            "o": Out(stream.Signature(config.output_layout)),
            "last": Out(1),
            "pending": Out(1),
        }

    def elaborate(self, platform):
        cfg = self._config
        tm = cfg.t_max
        m = Module()
        full = Signal(2)          # half written completely, not yet emitted
        busy = Signal(2)          # half claimed by a pass still writing it
        tokens = [Signal(cfg.token_count_shape, name=f"half{b}_tokens") for b in range(2)]
        # tokens - 1, kept beside each count: the emitter's end-of-block test is then an equality
        # (a LUT tree), not a subtraction's carry chain on the path into the read address
        last_tokens = [Signal(cfg.token_index_shape, name=f"half{b}_last_token") for b in range(2)]
        m.d.comb += self.half.free.eq(~(full.bit_select(self.half.half, 1) | busy.bit_select(self.half.half, 1)))
        with m.If(self.half.claim):
            m.d.sync += busy.bit_select(self.half.half, 1).eq(1)

        element, value = self._requantize(m)
        # Two halves of t_max tokens, one word (d int8) per token, written one int8 per cycle
        # (byte enables), read by the emitter; the read is transparent so a half is read in the
        # cycle its last int8 is written.
        write, read = self._buffer(m)
        m.d.comb += [write.addr.eq(_buffer_address(element.out_half, element.token, tm)),
                     write.data.eq(value.as_signed()[:INT8.width].replicate(cfg.d))]
        written = element.valid & element.emit & element.last_group
        if cfg.normalized:
            with m.If(written & ~element.is_z):
                m.d.comb += write.en.bit_select((element.column - 1)[:len(element.column)], 1).eq(1)
        else:
            with m.If(written):
                m.d.comb += write.en.bit_select(element.column, 1).eq(1)
        with m.If(element.valid & element.emit & element.pass_end):
            for b in range(2):
                with m.If(element.out_half == b):
                    m.d.sync += [full[b].eq(1), busy[b].eq(0), tokens[b].eq(element.tokens),
                                 last_tokens[b].eq(element.tokens - 1)]

        # Emitter: the read address is (half, token) of the next cycle, so the word is there with o.valid.
        # named (a tuple assignment leaves them "$signal"): the Verilog and the formal harness read them
        half, token = Signal(name="emit_half"), Signal(cfg.token_index_shape, name="emit_token")
        half_next, token_next = Signal(name="emit_half_next"), Signal.like(token, name="emit_token_next")
        m.d.comb += [half_next.eq(half), token_next.eq(token)]
        m.d.sync += [half.eq(half_next), token.eq(token_next)]
        m.d.comb += [read.addr.eq(_buffer_address(half_next, token_next, tm)),
                     self.o.valid.eq(full.bit_select(half, 1)), self.o.payload.as_value().eq(read.data)]
        block_last = Signal()
        m.d.comb += [block_last.eq(token == mux_tree(last_tokens, half)), self.last.eq(block_last),
                     self.pending.eq((full | busy).any())]
        with m.If(self.o.valid & self.o.ready):
            with m.If(block_last):
                m.d.comb += [token_next.eq(0), half_next.eq(~half)]
                m.d.sync += full.bit_select(half, 1).eq(0)
            with m.Else():
                m.d.comb += token_next.eq(token + 1)
        return m

    def _buffer(self, m):
        """The output buffer's write port and its read (a port's signature, seen from its user:
        ``addr`` of the cycle before the data). ``output_part_bytes`` 0: one memory, its read
        synchronous and transparent to the write. n: the memory in parts of n bytes, each read
        asynchronously through its own registered copy of the read address (``replica``): what
        Yosys makes of the synchronous read on ECP5's LUT RAM (an address register), with a copy per
        part instead of one register into every cell; a read sees the write of the cycle before,
        as the transparent port does."""
        cfg = self._config
        width, depth, part = INT8.width * cfg.d, 2 * cfg.t_max, cfg.pipe.output_part_bytes
        if not part:
            buffer = Memory(shape=width, depth=depth, init=[])
            m.submodules.buffer = buffer
            write = buffer.write_port(granularity=INT8.width)
            return write, buffer.read_port(transparent_for=(write,))
        write = WritePort.Signature(addr_width=log2_ceil(depth), shape=width, granularity=INT8.width).create()
        read = ReadPort.Signature(addr_width=log2_ceil(depth), shape=width).create()
        datas = []
        for p, lo in enumerate(range(0, cfg.d, part)):
            n = min(part, cfg.d - lo)
            mem = Memory(shape=INT8.width * n, depth=depth, init=[])
            m.submodules[f"buffer{p}"] = mem
            port_w, port_r = mem.write_port(granularity=INT8.width), mem.read_port(domain="comb")
            addr = Signal.like(read.addr, name=f"buffer_read_addr_rep{p}", attrs={"replica": 1})
            m.d.sync += addr.eq(read.addr)
            m.d.comb += [port_w.addr.eq(write.addr), port_w.en.eq(write.en[lo:lo + n]),
                         port_w.data.eq(write.data[INT8.width * lo:INT8.width * (lo + n)]), port_r.addr.eq(addr)]
            datas.append(port_r.data)
        m.d.comb += read.data.eq(Cat(*datas))
        return write, read

    def _requantize(self, m):
        """Stages 1-2: both requantizer products, split over DSP blocks (``split_product``). With
        5 or 6 ``output_stages`` (ECP5): stage 3 their rounding adds and shifts (``requant_round``
        without its saturation), stage 4 each saturated into MID_FORMAT (the add and the saturation's
        comparisons in one stage, carry chain after carry chain, was the routed critical path, issue
        15); with 4 (iCE40) both in stage 3 (``requant_round``). With 6 the two mids' sum is
        registered (stage 5: the sum and its int8 saturation in one stage was the routed critical
        path, 4.1 ns of logic). The last stage: the sum saturated to int8, registered for the
        buffer's write port. Returns the element context of the write stage and the int8 value."""
        fmt = self._config.format
        stages = self._config.pipe.output_stages
        attn_rq, conv_rq = fmt.attn_requant, fmt.conv_requant
        result = self.result
        elements = [result.element]
        for n in range(1, stages + 1):
            elements.append(Signal.like(result.element, name=f"requant_element{n}"))
            m.d.sync += elements[-1].eq(elements[-2])
        cut = self._config.dsp_cut
        attn_reg = split_product(m, requant_multiplier(attn_rq), result.attn, "requant_attn_product", *cut)
        conv_reg = split_product(m, requant_multiplier(conv_rq), result.conv, "requant_conv_product", *cut)
        attn_mid = Signal(shape_of(MID_FORMAT), name="requant_attn_mid")
        conv_mid = Signal(shape_of(MID_FORMAT), name="requant_conv_mid")
        value = Signal(shape_of(INT8), name="requant_value")
        if stages >= 5:
            attn_rounded = _rounded(m, attn_reg, attn_rq.shift, "requant_attn_rounded")
            conv_rounded = _rounded(m, conv_reg, conv_rq.shift, "requant_conv_rounded")
            m.d.sync += [attn_mid.eq(saturate(attn_rounded, MID_FORMAT)),
                         conv_mid.eq(saturate(conv_rounded, MID_FORMAT))]
        else:
            m.d.sync += [attn_mid.eq(requant_round(attn_reg, attn_rq.shift, MID_FORMAT)),
                         conv_mid.eq(requant_round(conv_reg, conv_rq.shift, MID_FORMAT))]
        total = attn_mid + conv_mid
        if stages == 6:
            registered = Signal(total.shape(), name="requant_sum")
            m.d.sync += registered.eq(total)
            total = registered
        m.d.sync += value.eq(saturate(total, INT8))
        return elements[stages], value


def _buffer_address(half, token, t_max: int):
    """A token's word in the output buffer, ``half * t_max + token``: the two side by side when
    ``t_max`` is a power of two (at least 2, so ``token`` is exactly its log2 bits), else the
    multiply-add."""
    if t_max >= 2 and t_max & (t_max - 1) == 0:
        return Cat(token, half)
    return half * t_max + token


def _rounded(m, product, shift: int, name: str):
    """``(product + round) >> shift`` registered: ``requant_round``'s rounding half up, before its
    saturation (a constant ``shift``, so the shift is wiring)."""
    rounding = (1 << shift) >> 1
    value = (product + rounding) >> shift
    reg = Signal(value.shape(), name=name)
    m.d.sync += reg.eq(value)
    return reg
