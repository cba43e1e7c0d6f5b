"""Linear-attention decode datapath: one head's (or several time-multiplexed
heads') decode step with speculative verify/commit, bit-exact against
``algo/linear/golden.py``; widths from ``attnforge.linear_format``.

Microarchitecture (``docs/linear-hw.md`` has the picture):

* The state ``S`` of every head lives in on-chip memory (``amaranth.lib.memory``),
  two banks per head. One memory word holds ``M = macs`` state elements: rows
  ``g*M .. g*M+M-1`` of column ``j`` (``G = d/M`` row groups).
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

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from attnforge.linear_format import CMD_COMMIT, CMD_RESET, CMD_TAPS, CMD_TOKEN, DIV_DEN_BITS, MID_FORMAT
from attnforge.numfmt import INT8

from ..common import saturate, tree_sum
from .normalizer import Normalizer
from .lanes import StateLanes
from .output import OutputStage
from .config import (DIV_STAGES, DIV_STEPS_PER_STAGE, NORM_DELAY, NORM_EXTRA_DEPTH, PIPELINE_DEPTH, RECIP_BITS,
                     TREE_CHUNK, LinearDecodeConfig, pipeline_depth)

__all__ = ["LinearDecodeConfig", "LinearDecode", "pipeline_depth"]


def _mul_shift_add(small, value):
    """``small * value`` for a narrow unsigned ``small``, as shifted adds in LUTs.

    The update products (uint7 * int8, M of them) are built from adders so that
    synthesis keeps the FPGA's DSP blocks for the wide readout products.
    """
    return tree_sum([Mux(small[b], value << b, 0) for b in range(len(small))])


class LinearDecode(wiring.Component):
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
    """

    def __init__(self, config: LinearDecodeConfig):
        if not isinstance(config, LinearDecodeConfig):
            raise TypeError(f"LinearDecode needs a LinearDecodeConfig, not {config!r}")
        self._config = config
        super().__init__({
            "i": In(stream.Signature(config.input_layout)),
            "o": Out(stream.Signature(config.output_layout)),
            "overflow": Out(config.heads),
        })

    @property
    def config(self) -> LinearDecodeConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        fmt = cfg.format
        d, M, G, K, TM, H = cfg.d, cfg.macs, cfg.groups, fmt.conv_taps, fmt.t_max, cfg.heads
        sw, nw = fmt.state_format.width, fmt.numerator_format.width
        norm = cfg.normalized
        DC = cfg.columns   # relu_norm: column 0 of every bank is z (v = 1), S columns are 1..d
        m = Module()

        # ------------------------------------------------------------ storage
        NB = cfg.banks
        state = Memory(shape=data.ArrayLayout(signed(sw), M), depth=H * NB * G * DC, init=[])
        m.submodules.state = state
        s_rd = state.read_port()
        s_wr = state.write_port()

        # Draft block: one word per token (q, k, v). Read synchronously, the address issued
        # one cycle ahead (``blk_ra`` below), transparent so a token written in the cycle
        # before its pass starts is read back.
        blk = Memory(shape=data.StructLayout({"q": 8 * d, "k": 8 * d, "v": 8 * d}), depth=max(TM, 2),
                     init=[])  # depth >= 2: a 1-deep memory has a zero-width address
        m.submodules.block = blk
        b_wr = blk.write_port()
        b_rd = blk.read_port(transparent_for=(b_wr,))
        hist = [[Signal(8 * d, name=f"hist{h}_{n}") for n in range(K - 1)] for h in range(H)]
        taps = [[Signal(8 * d, name=f"taps{h}_{n}") for n in range(K)] for h in range(H)]
        cur = Signal(H)          # committed bank per head (two banks)
        cur_n = [Signal(range(NB), name=f"cur{h}") for h in range(H)] if cfg.snapshots else []
        # Bank holds all zeros (after reset), per head and bank; the memory itself is never cleared.
        zero = Signal(NB * H, init=(1 << (NB * H)) - 1)
        count = [Signal(range(fmt.max_tokens + 2), name=f"count{h}") for h in range(H)]
        overflow = Signal(H)
        m.d.comb += self.overflow.eq(overflow)

        # ------------------------------------------------------------ command FSM
        tcount = Signal(range(TM + 1))       # tokens collected into the block
        blk_t = Signal(range(TM + 1))        # size of the pending block (0: none)
        blk_h = Signal(cfg.head_width)
        pass_t = Signal(range(TM + 1))       # tokens of the pass in flight
        pass_out = Signal()                  # the pass produces outputs
        pass_flip = Signal()                 # flip the bank when the pass ends (commit repair)
        hist_n = Signal(range(TM + 1))       # history shifts still to do
        hist_u = Signal(range(TM + 1))
        g = Signal(range(max(G, 2)))  # never zero-width (Verilog [-1:0])
        j = Signal(range(DC))
        tau = Signal(range(max(TM, 2)))
        obank = Signal()                     # output buffer half of the next output pass
        output_free, output_claim = Signal(), Signal()

        p = self.i.p
        issue = Signal()
        # tau's value in the next cycle; the draft block is read at it one cycle ahead
        # (in HIST: the next history row), so its data is there when stage 0 needs it.
        tau_next = Signal.like(tau)
        blk_ra = Signal.like(tau)
        m.d.comb += [tau_next.eq(tau), blk_ra.eq(tau_next), b_rd.addr.eq(blk_ra)]
        m.d.sync += tau.eq(tau_next)
        s0_last_elem = Signal()

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    with m.Switch(p.cmd):
                        with m.Case(CMD_TOKEN):
                            m.d.comb += [b_wr.addr.eq(tcount), b_wr.en.eq(1), b_wr.data.q.eq(p.q.as_value()),
                                         b_wr.data.k.eq(p.k.as_value()), b_wr.data.v.eq(p.v.as_value())]
                            m.d.sync += [blk_h.eq(p.head), blk_t.eq(0)]
                            with m.If(p.last | (tcount == TM - 1)):
                                m.d.sync += [pass_t.eq(tcount + 1), blk_t.eq(tcount + 1), tcount.eq(0),
                                             pass_out.eq(1), pass_flip.eq(0)]
                                m.next = "PASS"
                            with m.Else():
                                m.d.sync += tcount.eq(tcount + 1)
                        with m.Case(CMD_COMMIT):
                            with m.If((blk_t != 0) & (p.a <= blk_t)):
                                m.d.sync += blk_t.eq(0)
                                for h in range(H):
                                    with m.If(blk_h == h):
                                        total = count[h] + p.a
                                        m.d.sync += count[h].eq(Mux(total > fmt.max_tokens, fmt.max_tokens + 1, total))
                                        with m.If(total > fmt.max_tokens):
                                            m.d.sync += overflow[h].eq(1)
                                if cfg.snapshots:
                                    # The pass left the state after token a in bank cur + a.
                                    with m.If(p.a != 0):
                                        for h in range(H):
                                            with m.If(blk_h == h):
                                                nxt = cur_n[h] + p.a
                                                m.d.sync += cur_n[h].eq(Mux(nxt >= NB, nxt - NB, nxt))
                                        m.d.sync += [hist_n.eq(p.a), hist_u.eq(0)]
                                        if K > 1:
                                            m.next = "HIST"
                                else:
                                    with m.If(p.a == blk_t):
                                        m.d.sync += [cur.bit_select(blk_h, 1).eq(~cur.bit_select(blk_h, 1)),
                                                     hist_n.eq(p.a), hist_u.eq(0)]
                                        if K > 1:
                                            m.next = "HIST"
                                    with m.Elif(p.a != 0):
                                        m.d.sync += [pass_t.eq(p.a), pass_out.eq(0), pass_flip.eq(1),
                                                     hist_n.eq(p.a), hist_u.eq(0)]
                                        m.next = "PASS"
                        with m.Case(CMD_RESET):
                            for h in range(H):
                                with m.If(p.head == h):
                                    m.d.sync += [*[zero[NB * h + b].eq(1) for b in range(NB)], count[h].eq(0),
                                                 overflow[h].eq(0), *[x.eq(0) for x in hist[h]]]
                            m.d.sync += [blk_t.eq(0), tcount.eq(0)]
                        with m.Case(CMD_TAPS):
                            for h in range(H):
                                for n in range(K):
                                    with m.If((p.head == h) & (p.a == n)):
                                        m.d.sync += taps[h][n].eq(p.v.as_value())

            with m.State("PASS"):
                start = (g == 0) & (j == 0) & (tau == 0)
                can = ~pass_out | output_free
                with m.If(~start | can):
                    m.d.comb += issue.eq(1)
                    with m.If(start):
                        if not cfg.snapshots:
                            other = Cat(~cur.bit_select(blk_h, 1), blk_h)
                            m.d.sync += zero.bit_select(other, 1).eq(0)
                        with m.If(pass_out):
                            m.d.comb += output_claim.eq(1)
                    last_tau = tau == pass_t - 1
                    m.d.comb += tau_next.eq(Mux(last_tau, 0, tau + 1))
                    with m.If(last_tau):
                        m.d.sync += j.eq(Mux(j == DC - 1, 0, j + 1))
                        with m.If(j == DC - 1):
                            m.d.sync += g.eq(Mux(g == G - 1, 0, g + 1))
                    m.d.comb += s0_last_elem.eq(last_tau & (j == DC - 1) & (g == G - 1))
                    with m.If(s0_last_elem):
                        with m.If(pass_out):
                            m.d.sync += obank.eq(~obank)
                        with m.If(pass_flip):
                            m.d.sync += cur.bit_select(blk_h, 1).eq(~cur.bit_select(blk_h, 1))
                            if K > 1:
                                m.next = "HIST"
                            else:
                                m.next = "IDLE"
                        with m.Else():
                            m.next = "IDLE"

            with m.State("HIST"):
                m.d.comb += blk_ra.eq(hist_u + 1)
                vrow = b_rd.data.v
                for h in range(H if K > 1 else 0):
                    with m.If(blk_h == h):
                        m.d.sync += [hist[h][0].eq(vrow), *[hist[h][n].eq(hist[h][n - 1]) for n in range(1, K - 1)]]
                m.d.sync += [hist_u.eq(hist_u + 1), hist_n.eq(hist_n - 1)]
                with m.If(hist_n == 1):
                    m.next = "IDLE"

        # A continuous assignment (not inside the FSM's case statement): Icarus does not
        # evaluate an `always @*` whose inputs never change after time 0.
        m.d.comb += self.i.ready.eq(fsm.ongoing("IDLE"))

        # ------------------------------------------------------------ stage 0: fetch
        if cfg.snapshots:
            rbank = Array(cur_n)[blk_h]
            rsel = blk_h * NB + rbank                 # (head, bank) of the committed state
            wnext = rbank + 1 + tau                   # snapshot after draft token tau
            wsel = blk_h * NB + Mux(wnext >= NB, wnext - NB, wnext)
        else:
            rbank = cur.bit_select(blk_h, 1)
            rsel = Cat(rbank, blk_h)
            wsel = Cat(~rbank, blk_h)
        state_addr0 = Signal(range(H * NB * G * DC))
        m.d.comb += state_addr0.eq(((rsel * G + g) * DC + j))
        if norm:
            jd = Signal(range(d))        # data column of j (column 0 is z)
            m.d.comb += jd.eq(Mux(j == 0, 0, j - 1))
        else:
            jd = j
        qrow, krow, vrow0 = b_rd.data.q, b_rd.data.k, b_rd.data.v   # token tau (address issued last cycle)

        def phi(x):
            x = x.as_signed()
            return Mux(x[7], 0, x[:7])

        v1 = Signal(signed(8))
        kk1 = [Signal(unsigned(7), name=f"kk1_{i}") for i in range(M)]
        qq1 = [Signal(unsigned(7), name=f"qq1_{i}") for i in range(M)]
        hv1 = [Signal(signed(8), name=f"hv1_{n}") for n in range(K - 1)]
        tw1 = [Signal(signed(8), name=f"tw1_{n}") for n in range(K)]
        c1 = dict(valid=Signal(), first=Signal(), lastt=Signal(), firstg=Signal(), lastg=Signal(), zero=Signal(),
                  out=Signal(), end=Signal(), tau=Signal(range(max(TM, 2))), j=Signal(range(DC)), obank=Signal(),
                  waddr=Signal(range(H * NB * G * DC)), ntok=Signal(range(TM + 1)))
        if norm:
            c1["isz"] = Signal()
        if cfg.snapshots:
            c1["wsel"] = Signal(range(H * NB))
        m.d.sync += [
            c1["valid"].eq(issue), c1["first"].eq(tau == 0), c1["lastt"].eq(tau == pass_t - 1),
            c1["firstg"].eq(g == 0), c1["lastg"].eq(g == G - 1),
            c1["zero"].eq(zero.bit_select(rsel, 1)), c1["out"].eq(pass_out),
            c1["end"].eq(s0_last_elem), c1["tau"].eq(tau), c1["j"].eq(j), c1["obank"].eq(obank),
            c1["waddr"].eq((wsel * G + g) * DC + j), c1["ntok"].eq(pass_t),
            *([c1["wsel"].eq(wsel)] if cfg.snapshots else []),
            # z is the column with v = 1: S[i][z] += phi(k)[i] * 1
            v1.eq(Mux(j == 0, 1, vrow0.word_select(jd, 8)) if norm else vrow0.word_select(j, 8)),
            *([c1["isz"].eq(j == 0)] if norm else []),
        ]
        for i in range(M):
            m.d.sync += [kk1[i].eq(phi(krow.word_select(g * M + i, 8))),
                         qq1[i].eq(phi(qrow.word_select(g * M + i, 8)))]
        hsel = Array([Cat(*hist[h]) for h in range(H)])[blk_h] if K > 1 else None
        tsel = Array([Cat(*taps[h]) for h in range(H)])[blk_h]
        for n in range(K - 1):
            m.d.sync += hv1[n].eq(hsel.word_select(n * d + jd, 8))
        for n in range(K):
            m.d.sync += tw1[n].eq(tsel.word_select(n * d + jd, 8))

        # ------------------------------------------------------------ lanes
        names = dict(valid="valid", first="first_token", lastt="last_token", firstg="first_group",
                     lastg="last_group", zero="bank_zero", out="emit", end="pass_end", tau="token", j="column",
                     obank="out_half", waddr="state_addr", ntok="tokens", wsel="snapshot_bank", isz="is_z")
        m.submodules.lanes = lanes = StateLanes(cfg)
        wiring.connect(m, lanes.state_read, s_rd)
        wiring.connect(m, lanes.state_write, s_wr)
        fe = lanes.fetch
        m.d.comb += fe.state_addr.eq(state_addr0)
        m.d.comb += [getattr(fe.element, names[k]).eq(v) for k, v in c1.items()]
        m.d.comb += [fe.v.eq(v1), *[fe.phi_k[i].eq(kk1[i]) for i in range(M)], *[fe.phi_q[i].eq(qq1[i]) for i in range(M)]]
        if cfg.snapshots:
            # Every token's state goes to its snapshot bank, which then holds real data.
            with m.If(c1["valid"]):
                m.d.sync += zero.bit_select(c1["wsel"], 1).eq(0)

        win = [Signal(signed(8), name=f"win{n}") for n in range(K)]
        win_cur = [v1] + [Mux(c1["first"], hv1[n], win[n]) for n in range(K - 1)]
        with m.If(c1["valid"]):
            m.d.sync += [win[n].eq(win_cur[n]) for n in range(K)]
        conv = tree_sum([tw1[n] * win_cur[n] for n in range(K)])
        conv2 = Signal(signed(fmt.conv_format.width))
        conv3 = Signal.like(conv2)
        conv4 = Signal.like(conv2)
        conv5 = Signal.like(conv2)
        m.d.sync += [conv2.eq(conv), conv3.eq(conv2), conv4.eq(conv3), conv5.eq(conv4)]

        # ------------------------------------------------------------ output stage
        m.submodules.output = output = OutputStage(cfg)
        if norm:
            m.submodules.normalizer = normalizer = Normalizer(cfg)
            result = normalizer.numerator
            wiring.connect(m, normalizer.quotient, output.result)
        else:
            result = output.result
        m.d.comb += [result.element.eq(lanes.numerator.element), result.attn.eq(lanes.numerator.attn),
                     result.conv.eq(conv5)]
        m.d.comb += [output.half.half.eq(obank), output.half.claim.eq(output_claim), output_free.eq(output.half.free)]
        wiring.connect(m, wiring.flipped(self.o), output.o)
        return m
