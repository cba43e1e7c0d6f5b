"""Cycle models: the linear-attention decode datapath (``hw/linear/decode.py``) and a
softmax KV-cache decode baseline with the same multipliers.

``LinearDecodeCycles`` replays the datapath's controller beat by beat: the
command FSM (one beat per cycle in IDLE), passes of ``G*d*T`` issue cycles that
start only when their half of the output buffer is free, the history shifts
after a commit, the fixed pipeline depth and the output emitter (one token per
cycle when the sink is ready). It predicts the cycle of every output transfer
when the input never idles and the output never stalls; a test holds it within
5 % of the RTL (``tests/rtl/test_linear_decode.py``).

``softmax_kv_cycles`` is a model (not RTL) of softmax decode over a KV cache
held on chip, using the same ``2*M`` multipliers the linear datapath has
(M lanes x one update and one readout multiplier): per token ``L*d`` MACs for
the scores and ``L*d`` for the weighted sum of V, plus a fixed latency for the
exponent/normalization pipeline; optionally limited by a memory bandwidth
(bytes per cycle) when the cache is off chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from attnforge.hw.linear import pipeline_depth  # last issue -> output half full
from attnforge.hw.linear.config import STATE_WRITE_GAP

__all__ = ["LinearDecodeCycles", "softmax_kv_cycles", "steady_cycles_per_token", "crossover_context",
           "SOFTMAX_FIXED_LATENCY"]

#: Cycles the baseline spends per token outside its MAC phases (max-search drain,
#: exponent pipeline, reciprocal of the sum, requantization): a generous guess.
SOFTMAX_FIXED_LATENCY = 24


@dataclass
class LinearDecodeCycles:
    """Cycle model of one ``LinearDecodeConfig`` (duck-typed: d, macs, conv_taps, t_max)."""

    d: int
    macs: int
    conv_taps: int
    t_max: int
    snapshots: bool = False   # t_max+1 state banks: commit(a) never replays
    feature_map: str = "relu"  # relu_norm: one more column (z) per pass, a deeper output pipeline
    pipelining: str = "ecp5"   # the register levels (``PIPELININGS``): the pipeline depth

    @classmethod
    def of(cls, config) -> "LinearDecodeCycles":
        return cls(config.d, config.macs, config.conv_taps, config.t_max, getattr(config, "snapshots", False),
                   getattr(config, "feature_map", "relu"), getattr(config, "pipelining", "ecp5"))

    @property
    def groups(self) -> int:
        return self.d // self.macs

    @property
    def columns(self) -> int:
        """State columns a pass walks per row group: d, plus z for relu_norm."""
        return self.d + 1 if self.feature_map == "relu_norm" else self.d

    @property
    def ideal_cycles_per_token(self) -> float:
        """State MACs of one token (d^2 updates + d^2 readouts) over the 2*M lane multipliers
        (relu_norm's z column is overhead, not counted as useful work)."""
        return self.d * self.d / self.macs

    def run(self, ops) -> list[int]:
        """Output transfer cycles (cycle 0: first input beat offered) for a list of ops.

        ``ops``: ``("block", T)`` (T token beats, the last with ``last``),
        ``("commit", a, T)`` (a of the last block's T), ``("reset",)``, ``("taps",)``.
        """
        return self.walk(ops)["outputs"]

    def walk(self, ops) -> dict:
        """``run``'s replay with its other figures: ``outputs`` (the output transfer cycles),
        ``end`` (the cycle the command FSM is idle after the last op) and ``issue`` (pass issue
        cycles: ``G * columns`` per token of every pass, commit replays included; what the
        AXI wrapper's MAC_ACTIVE counter counts)."""
        t = 0                      # next cycle the FSM can take a beat
        busy_until = [0, 0]        # cycle from which each output half may be written again
        obank = 0
        emit_free = 0              # next cycle the emitter can transfer
        pipe = pipeline_depth(self.feature_map, self.pipelining)
        # Short passes (fewer state words than STATE_WRITE_GAP) wait for the previous pass's writes.
        gap = STATE_WRITE_GAP if self.groups * self.columns < STATE_WRITE_GAP else 0
        last_issue = -gap          # the previous pass's last issue cycle
        outs: list[int] = []
        issued = 0
        for op in ops:
            kind = op[0]
            if kind == "block":
                n = op[1]
                t += n             # n beats, one per cycle; the pass may start after the last
                start = max(t, busy_until[obank], last_issue + gap)
                issue = self.groups * self.columns * n
                issued += issue
                last_issue = start + issue - 1
                first_emit = max(last_issue + pipe, emit_free)
                for k in range(n):
                    outs.append(first_emit + k)
                emit_free = first_emit + n
                busy_until[obank] = emit_free
                obank ^= 1
                t = last_issue + 1
                last_issue = t - 1
            elif kind == "commit":
                a, n = op[1], op[2]
                t += 1
                if 0 < a < n and not self.snapshots:
                    t = max(t, last_issue + gap) + self.groups * self.columns * a   # the replay pass
                    issued += self.groups * self.columns * a
                    last_issue = t - 1
                if a and self.conv_taps > 1:
                    t += a
            elif kind in ("reset", "taps"):
                t += 1
            else:
                raise ValueError(f"unknown op {op!r}")
        return {"outputs": outs, "end": t, "issue": issued}

    def decode_ops(self, tokens: int):
        return [op for _ in range(tokens) for op in (("block", 1), ("commit", 1, 1))]

    def verify_ops(self, tokens: int, t: int, accept: int | None = None):
        a = t if accept is None else accept
        return [op for _ in range(math.ceil(tokens / t)) for op in (("block", t), ("commit", a, t))]

    def cycles_per_token(self, verify: int | None = None, accept: int | None = None, tokens: int = 64) -> float:
        """Steady-state cycles per *accepted* token: decode, or verify blocks of ``verify``."""
        if verify is None:
            outs = self.run(self.decode_ops(tokens))
            return (outs[-1] - outs[tokens // 2]) / (tokens - 1 - tokens // 2)
        blocks = max(4, tokens // verify)
        a = verify if accept is None else accept
        ops = self.verify_ops(blocks * verify, verify, a)
        outs = self.run(ops)
        # Period of one block (first outputs of consecutive blocks) over accepted tokens.
        period = outs[(blocks - 1) * verify] - outs[(blocks - 2) * verify]
        return period / max(a, 1e-9)


def steady_cycles_per_token(outs: list[int], block: int | None) -> float:
    """The statistic the testbench reports: cycles per output in steady state, from the
    first output of the block that starts the second quarter to the first output of
    the last block (whole block periods, so bursts of T outputs do not bias it)."""
    n = len(outs)
    block = block or 1
    first = (n // 4) // block * block
    last = (n - 1) // block * block
    if last <= first:
        first, last = 0, n - 1
    if last <= first:
        raise ValueError(f"need outputs of at least two blocks to measure a rate, got {n}")
    return (outs[last] - outs[first]) / (last - first)


def softmax_kv_cycles(context: int, d: int, macs: int, *, bytes_per_cycle: float | None = None) -> float:
    """Cycles per decoded token of softmax attention over a KV cache of ``context`` tokens.

    Same multipliers as the linear datapath (``2*macs``): ``ceil(L*d / 2M)`` cycles
    for q.K^T and as many for P.V, plus ``SOFTMAX_FIXED_LATENCY``. With
    ``bytes_per_cycle``, reading the int8 K and V (``2*L*d`` bytes) can bound it instead.
    """
    lanes = 2 * macs
    compute = 2 * math.ceil(context * d / lanes) + SOFTMAX_FIXED_LATENCY
    if bytes_per_cycle:
        return max(compute, 2 * context * d / bytes_per_cycle)
    return float(compute)


def crossover_context(linear_cycles_per_token: float, d: int, macs: int, *,
                      bytes_per_cycle: float | None = None, limit: int = 1 << 20) -> int:
    """Smallest context length at which the KV-cache baseline needs more cycles per token."""
    lo, hi = 1, limit
    if softmax_kv_cycles(hi, d, macs, bytes_per_cycle=bytes_per_cycle) <= linear_cycles_per_token:
        raise ValueError(f"the baseline stays faster up to a context of {limit}")
    while lo < hi:
        mid = (lo + hi) // 2
        if softmax_kv_cycles(mid, d, macs, bytes_per_cycle=bytes_per_cycle) > linear_cycles_per_token:
            hi = mid
        else:
            lo = mid + 1
    return lo
