"""cocotb testbench of the linear-attention decode datapath (hw/linear/decode.py):
RTL against the integer golden model (algo/linear/golden.py), bit for bit.

A *program* is a list of input beats (tokens, commits, resets, tap loads) with
the outputs the golden model expects; ``build_program`` makes one from a seed
(random decode steps, verify blocks with random commit(a) including a=0 and
a=T, resets mid-sequence, several heads) or from a tensor file. The beats go
through ``StreamSource`` (random idle) and the outputs through ``StreamSink``
(random backpressure, stream-rule checks). After every input beat the per-head
overflow flags are compared with the golden model's (``FlagMonitor``). Parameters arrive in ``ATTNFORGE_TB_PARAMS``; measured
cycles and the overflow flags go to ``ATTNFORGE_REPORT``.

Each test runs only where its parameters ask for it, and is otherwise skipped
visibly (``cocotb.skipif``, decided when the module loads): a skipped test is
not a pass, and the runner counts it apart (``SimResult.skipped``).
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from attnforge.algo.linear.golden import LinearDecodeGolden
from attnforge.formats.digest import output_digest
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.linear_format import CMD_COMMIT, CMD_RESET, CMD_TAPS, CMD_TOKEN, random_data_requant

from .streams import StreamBench, StreamSink, StreamSource


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


_P = _params()
#: Which tests these parameters ask for (the others are skipped, not passed).
RUN_RANDOM = not _P.get("tensors") and _P.get("mode", "random") == "random"
RUN_LIMIT = bool(_P.get("limit_test")) and not _P.get("tensors")
RUN_RATE = bool(_P.get("tensors") or _P.get("rate_tokens"))

_REPORT: dict = {}


def _report(**fields) -> None:
    """Add ``fields`` to what this run reports (``ATTNFORGE_REPORT``); ``overflow`` is OR-ed per head."""
    if "overflow" in fields and "overflow" in _REPORT:
        fields["overflow"] = [a or b for a, b in zip(_REPORT["overflow"], fields["overflow"])]
    _REPORT.update(fields)
    path = os.environ.get("ATTNFORGE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_REPORT, f)


class Program:
    """Input beats and the expected outputs/flags, built alongside per-head golden models."""

    def __init__(self, cfg: LinearDecodeConfig):
        self.cfg = cfg
        self.heads = [LinearDecodeGolden(cfg.format) for _ in range(cfg.heads)]
        self.beats: list[dict] = []
        self.beat_flags: list[int] = []  # golden overflow flags (bit per head) once each beat is taken
        self.expected: list[list[int]] = []
        self.tokens = 0          # tokens verified (outputs)
        self.accepted = 0        # tokens committed
        self.ops: list = []      # the same program for the cycle model (hw/linear/cycles.py)
        self.den_zero = 0        # relu_norm: draft tokens whose denominator is 0 (output from conv only)

    def _beat(self, cmd, head=0, a=0, last=0, q=None, k=None, v=None):
        z = [0] * self.cfg.d
        self.beats.append({"cmd": cmd, "last": last, "head": head, "a": a,
                           "q": list(map(int, z if q is None else q)), "k": list(map(int, z if k is None else k)),
                           "v": list(map(int, z if v is None else v))})
        self.beat_flags.append(self.flags())

    def taps(self, head, w):
        self.heads[head].load_taps(w)
        for n in range(self.cfg.conv_taps):
            self._beat(CMD_TAPS, head, a=n, v=w[n])
            self.ops.append(("taps",))

    def block(self, head, q, k, v):
        if self.cfg.normalized:
            z = self.heads[head].z + np.cumsum(np.maximum(k, 0), axis=0)
            self.den_zero += int(((np.maximum(q, 0) * z).sum(axis=1) == 0).sum())
        out = self.heads[head].verify(q, k, v)
        for t in range(q.shape[0]):
            self._beat(CMD_TOKEN, head, last=int(t == q.shape[0] - 1), q=q[t], k=k[t], v=v[t])
        self.expected.extend(out.tolist())
        self.tokens += q.shape[0]
        self.ops.append(("block", q.shape[0]))
        self._last_t = q.shape[0]

    def commit(self, head, a):
        self.heads[head].commit(a)
        self._beat(CMD_COMMIT, head, a=a)
        self.accepted += a
        self.ops.append(("commit", a, self._last_t))

    def reset(self, head):
        self.heads[head].reset()
        self._beat(CMD_RESET, head)
        self.ops.append(("reset",))

    def flags(self) -> int:
        return sum(int(g.overflow) << h for h, g in enumerate(self.heads))


def default_requant(d: int, conv_taps: int, feature_map: str = "relu") -> dict:
    return random_data_requant(d, conv_taps, feature_map=feature_map)


def build_program(cfg: LinearDecodeConfig, seed: int, tokens: int, *, verify: int | None = None,
                  accept: int | None = None, mode: str = "random") -> Program:
    """A seeded program of about ``tokens`` verified tokens.

    ``mode``: ``"random"`` mixes decode steps, verify blocks (T in 1..t_max,
    commit a in {0, T, random}), rare resets and rare tap loads over random heads; ``"decode"``
    is plain decode (block of 1 + commit(1)); some random blocks are left
    without a commit, so that the next block drops them; ``"verify"`` uses blocks of
    ``verify`` tokens with every token accepted; ``"extreme"`` drives the largest
    state values (k=127, v=-128) to reach the configured ``max_tokens``.
    """
    rng = np.random.default_rng(seed)
    prog = Program(cfg)
    d, tm = cfg.d, cfg.t_max
    for h in range(cfg.heads):
        prog.taps(h, rng.integers(-128, 128, size=(cfg.conv_taps, d)))

    def toks(t):
        q, k, v = (rng.integers(-128, 128, size=(t, d)) for _ in range(3))
        if cfg.normalized and mode == "random":
            # Rows with no positive element have phi = 0: an all-negative q gives den = 0,
            # and so do all-negative k rows from a reset on.
            for x in (q, k):
                neg = rng.random(t) < 0.15
                x[neg] = np.maximum(-np.abs(x[neg]) - 1, -128)
        return [q, k, v]

    while prog.tokens < tokens:
        if mode == "decode":
            prog.block(0, *toks(1))
            prog.commit(0, 1)
        elif mode == "verify":
            t = min(verify or tm, tm)
            prog.block(0, *toks(t))
            prog.commit(0, t if accept is None else min(accept, t))
        elif mode == "extreme":
            one = np.ones((1, d), dtype=np.int64)
            prog.block(0, 127 * one, 127 * one, -128 * one)
            prog.commit(0, 1)
        else:
            h = int(rng.integers(0, cfg.heads))
            r = rng.random()
            if r < 0.02:
                prog.reset(h)
            elif r < 0.05:   # new taps mid-program: right after a pass, its last elements still read the old
                prog.taps(h, rng.integers(-128, 128, size=(cfg.conv_taps, d)))
            elif r < 0.45:
                prog.block(h, *toks(1))
                prog.commit(h, 1)
            elif r < 0.5:  # a block left pending: the next block drops it (as commit(0))
                prog.block(h, *toks(int(rng.integers(1, tm + 1))))
            else:
                t = int(rng.integers(1, tm + 1))
                prog.block(h, *toks(t))
                choice = rng.random()
                a = 0 if choice < 0.25 else t if choice < 0.6 else int(rng.integers(0, t + 1))
                prog.commit(h, a)
    return prog


def program_from_tensors(cfg: LinearDecodeConfig, path: str, verify: int | None) -> Program:
    """Decode (or verify in blocks of ``verify``, all accepted) the q, k, v of a tensor file."""
    from attnforge.formats.linear_tensors import load_linear_tensors
    t = load_linear_tensors(path, d=cfg.d, conv_taps=cfg.conv_taps)
    prog = Program(cfg)
    prog.taps(0, t["taps"])
    n = t["q"].shape[0]
    step = verify or 1
    for s in range(0, n, step):
        e = min(s + step, n)
        prog.block(0, t["q"][s:e], t["k"][s:e], t["v"][s:e])
        prog.commit(0, e - s)
    return prog


class FlagMonitor:
    """A bench part that checks the RTL's per-head overflow flags after every input beat.

    The control registers a command's effect on the flags (commit past
    ``max_tokens`` raises, reset clears) at the edge that takes it, so in the
    cycle after the ``n``-th input beat (token, commit, reset, taps) the port
    must show the golden flags after beat ``n`` (0 after a DUT reset, before
    any beat); ``check`` compares again at the end of a run. The flags change
    only with commands, so this sees every value they take (``seen`` ORs them)
    at one port read per beat rather than per cycle (a third of a run's time).
    """

    def __init__(self, dut, source: StreamSource):
        self.port = dut.overflow
        self.source = source
        self.expected: list[int] = []
        self.start = 0
        self.checked = -1   # beats (since the reset) whose flags were compared
        self.seen = 0
        self.checks = 0

    def restart(self) -> None:
        """After a DUT reset: the flags are 0 and the next beat is the first of a new trace."""
        self.expected.clear()
        self.start = self.source.sent
        self.checked = -1

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        if self.source.sent - self.start != self.checked:
            self.check(cycle)

    def check(self, cycle: int) -> None:
        n = self.checked = self.source.sent - self.start
        want = self.expected[n - 1] if n else 0
        got = int(self.port.value)
        self.seen |= got
        self.checks += 1
        if got != want:
            raise AssertionError(f"cycle {cycle}: overflow flags RTL {got:b} != golden {want:b} after input "
                                 f"beat {n} of this run")


class LinearDecodeTB:
    def __init__(self, dut, *, idle: float, stall: float, seed: int):
        self.cfg = LinearDecodeConfig(**_params()["config"])
        self.dut = dut
        rng = random.Random(seed)
        self.source = StreamSource(dut, "i", self.cfg.input_layout, idle=idle, rng=random.Random(rng.random()))
        self.sink = StreamSink(dut, "o", self.cfg.output_layout, stall=stall, rng=random.Random(rng.random()))
        # The monitor samples first: it sees the beats taken at earlier edges only.
        self.monitor = FlagMonitor(dut, self.source)
        self.bench = StreamBench(dut.clk, [self.monitor, self.source, self.sink])
        self.expected: list = []

    async def reset(self):
        await FallingEdge(self.dut.clk)
        self.source.quiet()
        self.sink.quiet()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self.monitor.restart()

    async def run(self, prog: Program):
        for beat in prog.beats:
            self.source.send(beat)
        self.monitor.expected.extend(prog.beat_flags)
        self.expected.extend(prog.expected)
        want = len(self.expected)
        await self.bench.run_until(lambda: self.source.done and len(self.sink.received) == want,
                                   max_cycles=20 * (len(prog.beats) + 10) * self.cfg.d * self.cfg.groups)
        # Nothing more may come out.
        for _ in range(self.cfg.d + 12):
            await self.bench.step()
        self.monitor.check(self.bench.cycle)
        self.check()

    def check(self):
        assert len(self.sink.received) == len(self.expected), \
            f"got {len(self.sink.received)} outputs, expected {len(self.expected)}"
        for n, (got, want) in enumerate(zip(self.sink.received, self.expected)):
            assert got == want, f"output {n}: RTL {got} != golden {want}"

    def flags(self) -> int:
        return int(self.dut.overflow.value)

    def report_overflow(self) -> None:
        """Report per head whether its flag was up at any cycle of this bench's runs."""
        _report(overflow=[bool(self.monitor.seen >> h & 1) for h in range(self.cfg.heads)])


def _start_clock(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())


@cocotb.skipif(not RUN_RANDOM, reason="a tensor file or another mode was asked for")
@cocotb.test()
async def random_program(dut):
    """Random decode/verify/commit/reset program over all heads, with and without idle/backpressure."""
    _start_clock(dut)
    p = _params()
    seed = p.get("seed", 0)
    tokens = p.get("tokens", 200)
    cfg = LinearDecodeConfig(**p["config"])
    for n, (idle, stall) in enumerate([(0.0, 0.0), (0.3, 0.5)]):
        tb = LinearDecodeTB(dut, idle=idle, stall=stall, seed=seed + n)
        await tb.reset()
        prog = build_program(cfg, seed + 10 * n, tokens // 2)
        await tb.run(prog)
        assert tb.flags() == prog.flags(), f"overflow flags RTL {tb.flags():b} != golden {prog.flags():b}"
        tb.report_overflow()
        if cfg.normalized:
            assert prog.den_zero > 0, "the program never reached a zero denominator"
            dut._log.info(f"relu_norm: {prog.den_zero} of {prog.tokens} draft tokens had den = 0")


@cocotb.skipif(not RUN_LIMIT, reason="limit_test not asked for (or a tensor file)")
@cocotb.test()
async def overflow_limit(dut):
    """Extreme state values up to max_tokens: exact, flag low; one more commit: flag high (from that
    commit on, after every beat, see ``FlagMonitor``); reset: low."""
    _start_clock(dut)
    p = _params()
    cfg = LinearDecodeConfig(**p["config"])
    tb = LinearDecodeTB(dut, idle=0.1, stall=0.1, seed=p.get("seed", 0) + 50)
    await tb.reset()
    prog = build_program(cfg, 1, cfg.max_tokens, mode="extreme")
    await tb.run(prog)
    assert prog.heads[0].S.min() == -128 * 127 * cfg.max_tokens
    assert tb.flags() == 0 == prog.flags(), "flag rose before max_tokens"
    more = Program(cfg)
    more.heads = prog.heads
    one = np.ones((1, cfg.d), dtype=np.int64)
    for _ in range(3):
        more.block(0, 127 * one, 127 * one, -128 * one)
        more.commit(0, 1)
    await tb.run(more)
    assert tb.flags() == 1 == more.flags(), "flag did not rise past max_tokens"
    assert tb.monitor.seen == 1 and tb.monitor.checks > len(prog.beats) + len(more.beats)  # one per beat at least
    again = Program(cfg)
    again.heads = prog.heads
    again.reset(0)
    again.block(0, one, one, one)
    again.commit(0, 1)
    await tb.run(again)
    assert tb.flags() == 0 == again.flags(), "reset did not clear the flag"


@cocotb.skipif(not RUN_RATE, reason="neither rate_tokens nor a tensor file")
@cocotb.test()
async def measured_rate(dut):
    """No idle, no backpressure: steady-state cycles per output token, per mode, for the cycle model.

    ``rate_modes``: list of ``[T, a]`` or ``[T, a, tokens]``; T = 0 is plain decode, else verify
    blocks of T with commit(a) (a = T: all accepted). With ``tensors`` the file's
    tokens are decoded (or verified in blocks of ``verify``, all accepted).
    """
    from attnforge.hw.linear.cycles import steady_cycles_per_token

    _start_clock(dut)
    p = _params()
    cfg = LinearDecodeConfig(**p["config"])
    tokens = p.get("rate_tokens", 0)
    if p.get("tensors"):
        modes = [[p.get("verify") or 0, p.get("verify") or 1]]
    else:
        modes = p.get("rate_modes", [[0, 1]])
    tb = LinearDecodeTB(dut, idle=0.0, stall=0.0, seed=p.get("seed", 0) + 99)
    await tb.reset()
    rows, outputs = [], []   # outputs: every mode's RTL output tokens, in order (output_digest)
    for mode in modes:
        t, a = mode[0], mode[1]
        n_tok = mode[2] if len(mode) > 2 else tokens
        if p.get("tensors"):
            prog = program_from_tensors(cfg, p["tensors"], t or None)
        elif t:
            prog = build_program(cfg, p.get("seed", 0), n_tok, mode="verify", verify=t, accept=a)
        else:
            prog = build_program(cfg, p.get("seed", 0), n_tok, mode="decode")
        tb.source.transfer_cycles.clear()
        tb.sink.transfer_cycles.clear()
        await tb.run(prog)
        outs = list(tb.sink.transfer_cycles)
        per_out = steady_cycles_per_token(outs, t or None)
        rows.append({"verify": t, "accept": a, "tokens": len(outs), "accepted": prog.accepted,
                     "first_input_cycle": tb.source.transfer_cycles[0], "output_cycles": outs, "ops": prog.ops,
                     "steady_cycles_per_output": per_out,
                     "steady_cycles_per_accepted": (per_out * t / a if a else None) if t else per_out,
                     "overflow": [bool(tb.flags() >> h & 1) for h in range(cfg.heads)]})
        assert tb.flags() == prog.flags(), f"overflow flags RTL {tb.flags():b} != golden {prog.flags():b}"
        tb.report_overflow()
        outputs.extend(tb.sink.received)
        await tb.reset()
        tb.expected.clear()
        tb.sink.received.clear()
    _report(modes=rows, output_digest=output_digest(outputs, "int8"))
