"""Formal proofs (SymbiYosys, tb/formal.py's harnesses, sim/formal.py's runner).

``prove`` is k-induction: PASS holds for every cycle, unboundedly. ``make test``
runs the proofs of the small configurations (11 SymbiYosys runs); ``make
test-full`` adds the bounded completion checks at depth, the covers of every
harness, more mutants and larger configurations. A mutant with a broken
handshake must FAIL with a counterexample trace.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Cat, Fragment
from amaranth.sim import Simulator

from attnforge.hw.common.requant import RequantLine, RequantLineConfig
from attnforge.hw.common.stream import SkidBuffer
from attnforge.hw.common.uart import UartRx, UartTx
from attnforge.hw.mac_line import MacLine, MacLineConfig
from attnforge.algo.vitcod.golden import head_params
from attnforge.hw.vitcod.config import VitcodConfig
from attnforge.hw.vitcod.host import HeadJob
from attnforge.hw.vitcod.cycles import OUT_STAGES
from attnforge.sim.formal import FormalToolError, prove, tool_paths
from attnforge.hw.common.accel_regs import accelerator_regmap
from attnforge.hw.common.regbank import RegisterBank
from attnforge.hw.linear.config import LinearDecodeConfig
from attnforge.hw.linear.output import OutputStage as LinearOutputStage
from attnforge.hw.vitcod.accelerator import VitcodAccelerator
from attnforge.hw.vitcod.softmax import SoftmaxStage
from attnforge.hw.vit.layernorm import LayerNormUnit, LayerNormUnitConfig
from attnforge.hw.vit.matmul import VitMatmul, VitMatmulConfig
from attnforge.hw.vitmodel.accelerator import VitModelAccelerator
from attnforge.hw.vitmodel.config import VitModelConfig
from attnforge.tb.formal import (FORMAL_REGMAP, SMALLEST_LAYERNORM, SMALLEST_MATMUL, SMALLEST_VITCOD, SMALLEST_VITMODEL,
                                 GeluUnitHarness, LinearDecodeHarness, LinearOutputHarness, LoaderHarness,
                                 MacLineHarness, OutputStageHarness, RegisterBankHarness, RequantLineHarness,
                                 ResidualAddUnitHarness,
                                 LayerNormUnitHarness, SkidBufferHarness, VitcodAcceleratorHarness, VitMatmulHarness,
                                 VitModelAcceleratorHarness, harness, probe, SMALL_SCHEDULER, RowSchedulerHarness,
                                 quiet_until, registers, AxisCommandInputHarness, axis_command_input, UartRxHarness,
                                 UartTxHarness, UART_DIVISOR)
from attnforge.tb.mutants import (DropValidWhileStalled, EnableWithdrawsOffer, FlipOutputBit, GlitchWhileStalled,
                                  SparserReadsDenserHalfRow, WrapIntoOlderHead)

#: k of the k-induction: stream rules + accounting (safety), completion with ready high
SAFETY_K = {"skid_buffer": 3, "requant_line": 3, "mac_line": 4, "output_stage": 4, "loader": 2, "register_bank": 3,
            "linear_output": 8,    # the 4-stage requantizer pipeline (was 4 with one stage)
            "gelu_unit": 3, "residual_add_unit": 3, "layernorm_unit": 3, "vit_matmul": 3,
            "softmax_stage": 2, "exp_unit": 8, "engine": 2,
            # the harnesses tie every register to their reference (beats, cycles since the take, pin levels)
            "axis_command_input": 1, "uart_tx": 1, "uart_rx": 1}
#: the vit units' proofs run in make test-full (make test's budget is spent; about 6 s each)
FULL_ONLY = {"gelu_unit", "residual_add_unit", "layernorm_unit", "vit_matmul"}
COMPLETION_K = {"skid_buffer": 4, "requant_line": 4, "mac_line": 6, "output_stage": 6, "gelu_unit": 8,
                "residual_add_unit": 5}
#: bmc depth of the completion check: at least one whole (longest) input plus the latency
#: (MAC line: a vector of max_length = 4 beats, then 2 cycles; output stage: a row of
#: 2 beats behind a full pipeline, then 3 cycles), with margin
COMPLETION_BMC = {"skid_buffer": 8, "requant_line": 8, "mac_line": 12, "output_stage": 12, "gelu_unit": 12,
                  "residual_add_unit": 8,
                  # SMALLEST_LAYERNORM: a row is 16 cycles, back-to-back rows start every 8: two rows complete
                  "layernorm_unit": 30,
                  # SMALLEST_MATMUL: a one-row tile (one x beat, one weight beat) ends 8 cycles after reset
                  "vit_matmul": 24}


def _check(result):
    assert result.passed, result.summary() + "\n" + Path(result.log).read_text()[-4000:]


def test_tools_installed():
    paths = tool_paths()   # raises FormalToolError naming what is missing: never a skip
    assert {"sby", "yosys", "yosys-smtbmc", "boolector"} <= set(paths)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.full) if n in FULL_ONLY else n for n in SAFETY_K])
def test_safety_proven(tmp_path, name):
    """Stream rules on every port, "no output without an input", sticky bits: k-induction."""
    _check(prove(harness(name), name=name, mode="prove", depth=SAFETY_K[name], workdir=tmp_path))


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name in ("mac_line", "output_stage")
                                                else pytest.mark.full) for name in COMPLETION_K])
def test_completion_proven(tmp_path, name):
    """With ready high, every item held leaves within the block's latency: k-induction (its
    base case is a bounded check from reset to depth k, one whole input deep)."""
    _check(prove(harness(name, mode="completion"), name=name, mode="prove", depth=COMPLETION_K[name],
                 workdir=tmp_path))


@pytest.mark.full
def test_cover_output_stage(tmp_path):
    """The assumptions leave the behaviour under proof possible: a beat out, the stage full."""
    _check(prove(harness("output_stage"), name="output_stage", mode="cover", depth=12, workdir=tmp_path))


def test_mutant_dropping_valid_fails(tmp_path):
    """A broken handshake (valid dropped while stalled) is caught, with a counterexample trace."""
    mutant = DropValidWhileStalled(RequantLine(RequantLineConfig(lanes=1, in_width=4, multiplier_width=2,
                                                                 out_width=2)))
    result = prove(RequantLineHarness(dut=mutant), name="mutant", mode="prove", depth=3, workdir=tmp_path)
    assert result.status == "FAIL", result.summary()
    assert result.trace is not None and result.trace.exists() and "induct" not in result.trace.name
    assert "assert: o: valid held until ready" in result.failed, result.failed


def test_mutant_wrong_dot_product_fails(tmp_path):
    """A MAC line with one result bit flipped fails the data invariant (dot products proven)."""
    config = MacLineConfig(macs=1, operand_width=2, max_length=4)
    result = prove(MacLineHarness(config, dut=FlipOutputBit(MacLine(config))), name="mutant_mac", mode="prove",
                   depth=4, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert "assert: mac: o carries the oldest vector's dot products" in result.failed, result.failed


def _glitch():
    return GlitchWhileStalled(SkidBuffer(4), payload=("o", "payload"), valid=("o", "valid"), ready=("o", "ready"))


SKID_MUTANTS = [
    pytest.param(_glitch, "o: payload stable while stalled", id="glitch_payload", marks=pytest.mark.full),
    pytest.param(lambda: DropValidWhileStalled(SkidBuffer(4)), "o: valid held until ready", id="drop_valid",
                 marks=pytest.mark.full),
    pytest.param(lambda: FlipOutputBit(SkidBuffer(4), path=("o", "valid")), "skid: no output beat without an input",
                 id="valid_from_nothing", marks=pytest.mark.full),
]


@pytest.mark.parametrize("mutant,message", SKID_MUTANTS)
def test_skid_buffer_mutants_fail(tmp_path, mutant, message):
    """Each rule has a mutant that breaks it (bounded check from reset: a real trace)."""
    result = prove(SkidBufferHarness(dut=mutant()), name="mutant_skid", mode="bmc", depth=6, workdir=tmp_path)
    assert result.status == "FAIL", result.summary()
    assert result.trace is not None and result.trace.exists()
    assert f"assert: {message}" in result.failed, result.failed


def test_probe_names_what_there_is():
    from amaranth.hdl import Fragment
    frag = Fragment.get(MacLine(MacLineConfig(macs=1, operand_width=2, max_length=4)), None)
    assert probe(frag, "p_valid").name == "p_valid"
    with pytest.raises(KeyError, match="p_last"):
        probe(frag, "nonexistent")


def test_bad_mode_refused(tmp_path):
    with pytest.raises(ValueError, match="prove, bmc, cover"):
        prove(harness("skid_buffer"), name="x", mode="induct", workdir=tmp_path)
    with pytest.raises(ValueError, match="safety, completion"):
        harness("skid_buffer", mode="liveness")
    with pytest.raises(ValueError, match="no completion mode"):
        LoaderHarness(mode="completion")
    with pytest.raises(ValueError, match="no completion mode"):
        UartRxHarness(mode="completion")


def test_missing_tool_is_an_error(monkeypatch, tmp_path):
    import attnforge.sim.formal as formal
    monkeypatch.setitem(formal._TOOLS, "boolector", "no-such-solver-xyz")
    with pytest.raises(FormalToolError, match="no-such-solver-xyz"):
        prove(harness("skid_buffer"), name="x", workdir=tmp_path)


def test_timeout_is_an_error(tmp_path):
    """A run past its time ends (with SymbiYosys's tools) and says so; no verdict is made up."""
    with pytest.raises(FormalToolError, match="ran past 0.3 s"):
        prove(harness("mac_line"), name="slow", mode="prove", depth=4, workdir=tmp_path, timeout=0.3)
    assert _left_running(tmp_path) == []


@pytest.mark.full
def test_timeout_ends_the_engines(tmp_path):
    """A timeout while the solver runs (the whole ViTCoD accelerator's bounded check, far deeper
    than 20 s allows) ends smtbmc and the solver too: SymbiYosys starts them in a process group of
    their own, so only the session is a handle on them."""
    import time

    with pytest.raises(FormalToolError, match="ran past 20 s"):
        prove(harness("vitcod_accelerator", mode="completion"), name="slow", mode="bmc", depth=60,
              workdir=tmp_path, timeout=20)
    time.sleep(0.5)
    assert _left_running(tmp_path) == []


def _left_running(folder) -> list[str]:
    """Processes (not zombies) still working in ``folder``."""
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = Path(entry / "cwd").resolve()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and (cwd == Path(folder).resolve() or Path(folder).resolve() in cwd.parents):
                left.append((entry / "cmdline").read_text().replace("\0", " ")[:100])
    return left


# --- make test-full: explicit bounded checks, covers, larger configurations ------------------------

@pytest.mark.full
@pytest.mark.parametrize("name", list(COMPLETION_BMC))
def test_completion_bounded(tmp_path, name):
    """Completion by bounded model checking from reset, deeper than one whole input."""
    _check(prove(harness(name, mode="completion"), name=name, mode="bmc", depth=COMPLETION_BMC[name],
                 workdir=tmp_path))


@pytest.mark.full
@pytest.mark.parametrize("make,latency", [(MacLineHarness, 2), (OutputStageHarness, OUT_STAGES),
                                          (GeluUnitHarness, 6), (ResidualAddUnitHarness, 3)],
                         ids=["mac_line", "output_stage", "gelu_unit", "residual_add_unit"])
def test_completion_bound_is_tight(tmp_path, make, latency):
    """One cycle under the latency fails with a trace (the check can fail, the bound is exact)."""
    tight = make(mode="completion")
    assert tight.latency == latency
    tight.latency = latency - 1
    result = prove(tight, name="tight", mode="bmc", depth=12, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert result.failed == [f"assert: a beat leaves within {latency - 1} cycles while items are held"]


@pytest.mark.full
@pytest.mark.parametrize("name", ["skid_buffer", "requant_line", "mac_line", "loader", "register_bank",
                                  "linear_output", "axis_command_input"])
def test_covers_reached(tmp_path, name):
    _check(prove(harness(name), name=name, mode="cover", depth=12, workdir=tmp_path))


# The designs' default configurations (the RTL that `attnforge verilog` writes). The k-induction
# is unbounded whatever the vector length; the bmc of completion is one whole row / a 16-beat
# vector deep (the MAC line's max_length only sets its accumulator width).
DEFAULTS = [
    # 8 x int8 dot products by k-induction take ~5 min: the data invariants run on 2 MACs below
    ("mac_line", lambda mode: MacLineHarness(MacLineConfig(), mode, data=False), 6, 20),
    ("requant_line", lambda mode: RequantLineHarness(RequantLineConfig(), mode), 4, 12),
    ("skid_buffer", lambda mode: SkidBufferHarness(128, mode), 4, 16),
    ("output_stage", lambda mode: OutputStageHarness(VitcodConfig(), mode), 6, 20),
]


@pytest.mark.full
@pytest.mark.parametrize("name,make,k,depth", DEFAULTS, ids=[f[0] for f in DEFAULTS])
def test_default_configurations(tmp_path, name, make, k, depth):
    _check(prove(make("safety"), name=name, mode="prove", depth=k, workdir=tmp_path))
    _check(prove(make("completion"), name=name, mode="prove", depth=k, workdir=tmp_path))
    _check(prove(make("completion"), name=name, mode="bmc", depth=depth, workdir=tmp_path))


@pytest.mark.full
@pytest.mark.parametrize("config", [
    VitcodConfig(),
    VitcodConfig(head_dim=8, max_tokens=8, max_nnz=16, macs=2, dense_lines=1, sparse_lines=1, data_width=32,
                 decoder=True),
], ids=["default", "decoder"])
def test_loader_configurations(tmp_path, config):
    _check(prove(LoaderHarness(config), name="loader", mode="prove", depth=3, workdir=tmp_path))


@pytest.mark.full
def test_mac_line_dot_products_int8(tmp_path):
    """The dot products by k-induction with int8 operands (2 MACs, 16-beat accumulator width)."""
    harness_ = MacLineHarness(MacLineConfig(macs=2, operand_width=8, max_length=16))
    _check(prove(harness_, name="mac_line", mode="prove", depth=4, workdir=tmp_path))


@pytest.mark.full
def test_register_bank_mutant_and_accelerator_map(tmp_path):
    """rdata glitching while R is stalled fails; the accelerators' standard map is proven too."""
    result = prove(RegisterBankHarness(dut=GlitchWhileStalled(RegisterBank(FORMAL_REGMAP))), name="mutant_bank",
                   mode="bmc", depth=6, workdir=tmp_path)
    assert result.status == "FAIL" and "assert: r: payload stable while stalled" in result.failed, result.summary()
    regmap = accelerator_regmap("vitcod", {"head_dim": 64, "decoder": True})
    _check(prove(RegisterBankHarness(regmap), name="accel_regs", mode="prove", depth=3, workdir=tmp_path))


@pytest.mark.full
def test_linear_output_mutant_and_default(tmp_path):
    """The token word glitching while o is stalled fails; the default d = 16, t_max = 8 stage
    (relu_norm: the z column skipped) is proven too."""
    config = LinearDecodeConfig(d=2, macs=2, conv_taps=2, max_tokens=4, t_max=2)
    mutant = GlitchWhileStalled(LinearOutputStage(config), payload=("o", "payload"), valid=("o", "valid"),
                                ready=("o", "ready"))
    # deep enough for a pass through the requantizer's stages into a full half, then a stall
    result = prove(LinearOutputHarness(config, dut=mutant), name="mutant_linear", mode="bmc",
                   depth=config.pipe.output_stages + 4, workdir=tmp_path)
    assert result.status == "FAIL" and "assert: o: payload stable while stalled" in result.failed, result.summary()
    for feature_map in ("relu", "relu_norm"):
        _check(prove(LinearOutputHarness(LinearDecodeConfig(feature_map=feature_map)), name=f"linear_{feature_map}",
                     mode="prove", depth=SAFETY_K["linear_output"], workdir=tmp_path))


# --- whole accelerators: the ViTCoD accelerator and the linear decode datapath at their smallest
# legal configurations (tb/formal.py: SMALLEST_VITCOD, SMALLEST_LINEAR) ----------------------------

#: k of the k-induction of the whole designs (stream rules, sticky error/overflow bits, no output
#: before the first command, with the strengthening invariants of VitcodAcceleratorHarness and
#: LinearDecodeHarness)
WHOLE_K = {"vitcod_accelerator": 2, "linear_decode": 2, "vitmodel_accelerator": 2}
#: bounded completion: (bmc depth, the bounds, the same bounds one cycle less: each must fail). Deeper
#: than one smallest command: a ViTCoD head without keys (no score or P.V job) is done 34 cycles after
#: its command at cycle 1 (Amaranth simulation; its bound, 26 from the load, is reached at 36 with a
#: keyed head behind it; a keyed head is done at 64, beyond this depth: its bound, 55, is checked in
#: simulation, test_vitcod_head_bounds_are_the_rtls); a command is answered within 9; a one-token linear
#: block's output leaves 28 cycles after its token (46 when it waits for a free output half:
#: LinearDecodeHarness.LATENCY, from the pipeline's depth; 2 x 26 - 6)
WHOLE_COMPLETION = {"vitcod_accelerator": (40, {"latency": VitcodAcceleratorHarness.LATENCY,
                                                 "keyless_latency": VitcodAcceleratorHarness.KEYLESS_LATENCY}),
                    "linear_decode": (58, {"latency": LinearDecodeHarness.LATENCY})}


@pytest.mark.full     # 14-20 s of CPU each, mostly fixed cost (elaboration, Yosys): over make test's room
@pytest.mark.parametrize("name", list(WHOLE_K))
def test_whole_accelerator_safety_proven(tmp_path, name):
    """Stream rules on every port, the error (overflow) bits sticky until reset and no output beat
    before the first command, on the whole design, for every cycle (k-induction)."""
    _check(prove(harness(name), name=name, mode="prove", depth=WHOLE_K[name], workdir=tmp_path))


@pytest.mark.full
def test_whole_vitcod_mutant_handshake_not_proven(tmp_path):
    """The accelerator with o.valid dropped while stalled (a broken handshake at the top level):
    the k-induction of the same harness no longer holds, and the property it names is the
    stream rule (make test-full: a bounded check finds the trace from reset)."""
    mutant = DropValidWhileStalled(VitcodAccelerator(SMALLEST_VITCOD))
    result = prove(VitcodAcceleratorHarness(dut=mutant), name="mutant_vitcod", mode="prove",
                   depth=WHOLE_K["vitcod_accelerator"], workdir=tmp_path)
    assert result.status != "PASS", result.summary()
    assert result.failed == ["assert: o: valid held until ready"], result.failed


@pytest.mark.full
@pytest.mark.timeout(1200)
def test_whole_vitcod_mutant_handshake_trace(tmp_path):
    """The same mutant by bounded checking from reset: a real counterexample (a head computed, its
    first beat stalled, valid dropped: step 35 since issue 15's deeper pipelines, 23 before), 44
    cycles deep; the harness's lean form (control only, as in completion mode) keeps the data path
    out of the model."""
    mutant = DropValidWhileStalled(VitcodAccelerator(SMALLEST_VITCOD))
    result = prove(VitcodAcceleratorHarness(dut=mutant, lean=True), name="mutant_vitcod", mode="bmc", depth=44,
                   workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None and "induct" not in result.trace.name, \
        result.summary()
    assert result.failed == ["assert: o: valid held until ready"], result.failed


@pytest.mark.full
@pytest.mark.timeout(1800)    # two bounded checks 30-44 deep: 3-7 minutes each on a loaded 2-core machine
@pytest.mark.parametrize("name", list(WHOLE_COMPLETION))
def test_whole_accelerator_completion_bounded(tmp_path, name):
    """Every command answered within the latency bound (and, ViTCoD, every loaded head without keys
    computed and out within its bound), no output beyond what the commands ask for: bounded from
    reset, deeper than one whole smallest command; each bound one cycle smaller fails."""
    depth, bounds = WHOLE_COMPLETION[name]
    _check(prove(harness(name, mode="completion", **bounds), name=name, mode="bmc", depth=depth, workdir=tmp_path))
    too_small = {key: value - 1 for key, value in bounds.items()}
    result = prove(harness(name, mode="completion", **too_small), name=f"{name}_tight", mode="bmc",
                   depth=depth, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert any(f"within {too_small['latency']} cycles" in f for f in result.failed), result.failed
    if "keyless_latency" in bounds:
        assert any(f"done within {too_small['keyless_latency']} cycles (no keys)" in f for f in result.failed), \
            result.failed


def _head_gaps(jobs, delays=()) -> list[tuple[bool, int]]:
    """Amaranth simulation of SMALLEST_VITCOD: ``jobs`` offered from cycle 1, command k + 1
    ``delays[k]`` cycles after command k is taken (else at once), data always valid, ``o`` always
    ready. Per head: whether it has keys, and its gap as VitcodAcceleratorHarness counts it
    (``heads_done`` moves at cycle D: D - max(its load, the previous head's end) - 1)."""
    dut = VitcodAccelerator(SMALLEST_VITCOD)
    frag = Fragment.get(dut, None)
    full = Cat(probe(frag, "full0"), probe(frag, "full1"))
    loads, gaps = [], []

    async def bench(ctx):
        commands = [j.command(SMALLEST_VITCOD) for j in jobs]
        beats = [b for j in jobs for b in j.data_beats(SMALLEST_VITCOD)]
        c = b = 0
        full_was, done_was, previous, offer_from = 0, 0, 0, 1
        ctx.set(dut.o.ready, 1)
        for cycle in range(200):
            offered = cycle >= offer_from and c < len(commands)
            ctx.set(dut.cmd.valid, offered)
            if c < len(commands):
                ctx.set(dut.cmd.payload, dut.cmd.payload.shape().const(commands[c]))
            ctx.set(dut.data.valid, b < len(beats))
            if b < len(beats):
                ctx.set(dut.data.payload, beats[b])
            took_cmd = offered and ctx.get(dut.cmd.ready)
            took_data = b < len(beats) and ctx.get(dut.data.ready)
            now_full, done = ctx.get(full), ctx.get(dut.heads_done)
            if now_full & ~full_was:
                loads.append(cycle)
            if done != done_was:
                gaps.append(cycle - max(loads[len(gaps)], previous) - 1)
                previous = cycle
            full_was, done_was = now_full, done
            await ctx.tick()
            if took_cmd:
                offer_from = cycle + 1 + (delays[c] if c < len(delays) else 0)
            c, b = c + took_cmd, b + took_data

    sim = Simulator(frag)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(gaps) == len(jobs), (len(gaps), jobs)
    return [(j.g + len(j.col_idx) > 0, gap) for j, gap in zip(jobs, gaps)]


#: SMALLEST_VITCOD's heads: no key, a key in the CSR, a global key (g, nnz)
_HEAD_KINDS = {"none": (0, 0), "csr": (0, 1), "global": (1, 0)}


def _head(kind: str, seed: int) -> HeadJob:
    g, nnz = _HEAD_KINDS[kind]
    params = head_params(0.03, 0.02, 0.04, 0.02, SMALLEST_VITCOD.head_dim)
    q, k, v = (np.random.default_rng(seed).integers(-128, 128, (3, 1, 2)).astype(np.int8))
    return HeadJob(q, k, v, g, np.array([0, nnz]), np.zeros(nnz, dtype=np.int64), params.exp.multiplier,
                   params.exp.shift, params.out.multiplier, params.out.shift)


def _worst_gaps(cases) -> dict:
    worst = {False: 0, True: 0}
    for kinds, delays in cases:
        for keyed, gap in _head_gaps([_head(kind, n) for n, kind in enumerate(kinds)], delays):
            worst[keyed] = max(worst[keyed], gap)
    return worst


def test_vitcod_head_bounds_are_the_rtls():
    """The compute bounds of VitcodAcceleratorHarness against the RTL in simulation: each head
    kind alone stays within its bound, and each bound is reached by a second head arriving at the
    worst time (a head with a key 11 cycles behind a keyless one delays it by 2 cycles; two keyed
    heads 33 cycles apart), so the bounds are not loose. The bounded proof covers the keyless
    bound from reset; the keyed one lies beyond its depth (test-full searches the pairs)."""
    cases = [([kind], ()) for kind in _HEAD_KINDS] + [(["none", "csr"], (11,)), (["csr", "csr"], (33,))]
    assert _worst_gaps(cases) == {False: VitcodAcceleratorHarness.KEYLESS_LATENCY,
                                  True: VitcodAcceleratorHarness.HEAD_LATENCY}


@pytest.mark.full
@pytest.mark.timeout(1200)    # 405 simulations: 3 minutes on an idle 2-core machine, 6 beside place and route
def test_vitcod_head_bounds_hold_for_every_pair():
    """Every ordered pair of head kinds, the second command 0..44 cycles after the first: no head
    beyond its bound, and the largest gaps are the bounds."""
    cases = [([a, b], (delay,)) for a in _HEAD_KINDS for b in _HEAD_KINDS for delay in range(45)]
    assert _worst_gaps(cases) == {False: VitcodAcceleratorHarness.KEYLESS_LATENCY,
                                  True: VitcodAcceleratorHarness.HEAD_LATENCY}


def test_quiet_registers_are_named():
    """The 'quiet until the first command' invariant covers the control registers by path (a
    renamed register must not silently drop out of the proof: the exempt patterns match data
    registers only)."""
    from amaranth.hdl import Fragment, Module, Signal

    for make, control in ((VitcodAcceleratorHarness, ("dut.loader.", "dut.scheduler.", "dut.output.")),
                          (LinearDecodeHarness, ("dut.control.", "dut.output."))):
        h = make()
        frag = Fragment.get(h.dut, None)
        checked = quiet_until(Module(), frag, Signal(), exempt=h.EXEMPT,
                              valid_only=getattr(h, "VALID_ONLY", r"$^"))
        every = registers(frag)
        assert set(checked) <= set(every) and len(checked) > len(every) // 3
        for prefix in control:
            assert [p for p in checked if p.startswith(prefix)], prefix


@pytest.mark.full
def test_vit_unit_mutants_fail(tmp_path):
    """GELU with o.valid dropped after a stall, the residual add with its payload glitching while stalled:
    each proof fails exactly on the stream rule it breaks."""
    from attnforge.hw.vit.eltwise import GeluUnit, GeluUnitConfig, ResidualAddUnit, ResidualAddUnitConfig

    g = GeluUnitConfig(lanes=1, t_width=2, multiplier_width=2)
    result = prove(GeluUnitHarness(g, dut=DropValidWhileStalled(GeluUnit(g))), name="gelu_drop", mode="prove",
                   depth=3, workdir=tmp_path)
    assert not result.passed and result.failed == ["assert: o: valid held until ready"], result.summary()
    a = ResidualAddUnitConfig(lanes=1, a_width=3, b_width=2, out_width=2, multiplier_width=2)
    glitch = GlitchWhileStalled(ResidualAddUnit(a), payload=("o", "payload"), valid=("o", "valid"),
                                ready=("o", "ready"))
    result = prove(ResidualAddUnitHarness(a, dut=glitch), name="add_glitch", mode="prove", depth=3,
                   workdir=tmp_path)
    assert not result.passed and result.failed == ["assert: o: payload stable while stalled"], result.summary()


# --- ViT model blocks at their smallest legal configurations (tb/formal.py: SMALLEST_LAYERNORM, SMALLEST_MATMUL)

#: name -> (bmc depth, the harness's latency bound): bounds one cycle less must fail within the depth
VIT_TIGHT = {"layernorm_unit": (20, 15), "vit_matmul": (16, 6)}


@pytest.mark.full
@pytest.mark.parametrize("name", list(VIT_TIGHT))
def test_vit_block_completion_bound_is_tight(tmp_path, name):
    """The completion bound is the cycle model's (LayerNorm: ``row_latency - max_beats``), and one
    cycle less fails with a trace from reset."""
    depth, latency = VIT_TIGHT[name]
    assert harness(name, mode="completion").latency == latency
    result = prove(harness(name, mode="completion", latency=latency - 1), name=f"{name}_tight", mode="bmc",
                   depth=depth, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert len(result.failed) == 1 and f"within {latency - 1} cycles" in result.failed[0], result.failed


@pytest.mark.full
@pytest.mark.parametrize("make", [
    lambda: LayerNormUnitHarness(LayerNormUnitConfig(lanes=2, max_channels=6, isqrt_steps=1, div_bits=1,
                                                     multiplier_width=2)),
    lambda: LayerNormUnitHarness(LayerNormUnitConfig()),
    lambda: VitMatmulHarness(VitMatmulConfig(lines=2, macs=2, max_rows=9, max_in=3, out_width=16, multiplier_width=2)),
    lambda: VitMatmulHarness(VitMatmulConfig()),
], ids=["layernorm_lanes2", "layernorm_default", "matmul_groups3", "matmul_default"])
def test_vit_unit_safety_other_configurations(tmp_path, make):
    """The same k-induction beyond the smallest configurations: LayerNorm with 2 lanes and rows of 1-3
    beats (a one-beat row found that the harness first let ``channels`` change in the cycle after
    the row's only beat), and its default (4 lanes, 192 channels); the matmul with 4 lanes in 2 lines
    and 3 row groups, and its default (8 MACs, 65 rows, 256 input channels)."""
    _check(prove(make(), name="vit_unit", mode="prove", depth=3, workdir=tmp_path))


#: name -> (the block at its smallest configuration, bmc depth that reaches a stalled output beat from reset)
VIT_MUTANTS = {"layernorm_unit": (lambda: LayerNormUnit(SMALLEST_LAYERNORM), 20),
               "vit_matmul": (lambda: VitMatmul(SMALLEST_MATMUL), 12)}


@pytest.mark.full
@pytest.mark.parametrize("name", list(VIT_MUTANTS))
def test_vit_block_mutants_fail(tmp_path, name):
    """The block with ``o.valid`` dropped after a stall fails the k-induction on "valid held until
    ready" (the matmul's accounting, which counts ``o.valid`` as a held beat, fails with it); with its
    payload glitching while stalled, a bounded check from reset finds a trace and only "payload
    stable while stalled" fails (LayerNorm's first output beat is 16 cycles after reset)."""
    block, depth = VIT_MUTANTS[name]
    drop = DropValidWhileStalled(block())
    result = prove(harness(name, dut=drop), name=f"{name}_drop", mode="prove", depth=SAFETY_K[name], workdir=tmp_path)
    assert not result.passed and "assert: o: valid held until ready" in result.failed, result.summary()
    glitch = GlitchWhileStalled(block(), payload=("o", "payload"), valid=("o", "valid"), ready=("o", "ready"))
    result = prove(harness(name, dut=glitch), name=f"{name}_glitch", mode="bmc", depth=depth, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert result.failed == ["assert: o: payload stable while stalled"], result.failed


# --- the model-level ViT accelerator (tb/formal.py: SMALLEST_VITMODEL); its safety proof runs in
# test_whole_accelerator_safety_proven (WHOLE_K) -----------------------------------------------------

#: (bmc depth, latency bound) of its completion, and (depth, bound) that must fail. The slowest
#: instruction (a LAYERNORM) retires 20 cycles after its header: depth 26 holds one whole, from any
#: header taken in the first 6 cycles
VITMODEL_COMPLETION = ((26, 20), (22, 19))


@pytest.mark.full
@pytest.mark.timeout(1800)
def test_vitmodel_completion_bounded(tmp_path):
    """Every header retired or refused within 20 cycles (host always valid, o always ready, legal
    shapes), bounded from reset; 19 fails with a trace."""
    (depth, latency), (tight_depth, tight) = VITMODEL_COMPLETION
    assert harness("vitmodel_accelerator", mode="completion").latency == latency
    _check(prove(harness("vitmodel_accelerator", mode="completion"), name="vitmodel", mode="bmc", depth=depth,
                 workdir=tmp_path))
    result = prove(harness("vitmodel_accelerator", mode="completion", latency=tight), name="vitmodel_tight",
                   mode="bmc", depth=tight_depth, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert result.failed == [f"assert: an instruction retires or is refused within {tight} cycles of its header"], \
        result.failed


@pytest.mark.full
def test_vitmodel_mutants_and_cover(tmp_path):
    """``o.valid`` dropped after a stall, the payload glitching while stalled: each fails the
    k-induction exactly on the rule it breaks, and a bounded check from reset (depth 8: a STORE's
    beat is out 3 cycles after its header) finds the trace. The covers (an output beat) are reached."""
    _check(prove(harness("vitmodel_accelerator"), name="vitmodel", mode="cover", depth=10, workdir=tmp_path))
    glitch = GlitchWhileStalled(VitModelAccelerator(SMALLEST_VITMODEL), payload=("o", "payload"),
                                valid=("o", "valid"), ready=("o", "ready"))
    for label, mutant, rule in (("drop", DropValidWhileStalled(VitModelAccelerator(SMALLEST_VITMODEL)),
                                 "valid held until ready"),
                                ("glitch", glitch, "payload stable while stalled")):
        for mode, depth in (("prove", WHOLE_K["vitmodel_accelerator"]), ("bmc", 8)):
            result = prove(VitModelAcceleratorHarness(dut=mutant), name=f"vitmodel_{label}", mode=mode, depth=depth,
                           workdir=tmp_path)
            assert not result.passed and result.failed == [f"assert: o: {rule}"], result.summary()
            assert mode == "prove" or (result.status == "FAIL" and result.trace is not None), result.summary()


@pytest.mark.full
@pytest.mark.parametrize("config", [
    VitModelConfig(lines=1, macs=2, max_tokens=3, max_cols=4, ln_channels=4, buffer_tiles=4, isqrt_steps=31,
                   div_bits=48, multiplier_width=2),
    VitModelConfig(lines=2, macs=1, max_tokens=3, max_cols=3, ln_channels=2, buffer_tiles=4, isqrt_steps=31,
                   div_bits=48, multiplier_width=2),
    # the smallest with an ATTENTION unit (a ViTCoD accelerator: P a power of two >= 2, head dim P)
    VitModelConfig(lines=1, macs=2, max_tokens=1, max_cols=2, ln_channels=2, buffer_tiles=1, isqrt_steps=31,
                   div_bits=48, multiplier_width=1, att_head_dim=2, att_max_nnz=1, att_macs=1),
], ids=["P2", "two_lines", "attention"])
def test_vitmodel_safety_larger(tmp_path, config):
    """The same k-induction on P = 2 (one line of two MACs; two lines of one), several row groups and
    channel groups (3 tokens, up to 4 channels: partial groups, a non-power-of-two channel count), and
    with an attention unit (ATTENTION then runs; one the unit refuses halts in ERROR): the
    strengthening invariants are written for any configuration, not only the smallest."""
    _check(prove(VitModelAcceleratorHarness(config), name="vitmodel", mode="prove", depth=WHOLE_K["vitmodel_accelerator"],
                 workdir=tmp_path))


# the ViTCoD row scheduler alone (heads overlap: tb/formal.py RowSchedulerHarness) --------------------

#: k of its k-induction: the harness's invariants (the ring of adopted heads, each stage's place in the
#: stream of rows, the counts between the stages) are inductive in one step
SCHEDULER_K = 1
SCHEDULER_BANKS4 = dataclasses.replace(SMALL_SCHEDULER, banks=4)
#: two tiles, heads of 1..3 rows: a tile has 0, 1 or 2 rows of a head (the rotation's off free)
SCHEDULER_TILES2 = dataclasses.replace(SMALL_SCHEDULER, max_tokens=3, data_width=32, tiles=2)
#: two output beats a row (d = 4 at 16-bit beats): the row goes out with its last beat
SCHEDULER_BEATS2 = dataclasses.replace(SMALL_SCHEDULER, head_dim=4)


@pytest.mark.full     # 20-40 s (banks 2, tiles 2, beats 2) and 5 min (banks 4) in SymbiYosys: over make test's room
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("config,tile", [(SMALL_SCHEDULER, 0), (SCHEDULER_BANKS4, 0), (SCHEDULER_TILES2, 1),
                                         (SCHEDULER_BEATS2, 0)],
                         ids=["banks2", "banks4", "tiles2", "beats2"])
def test_row_scheduler_proven(tmp_path, config, tile):
    """Every stage takes every row of the adopted heads once, in order, never ahead of the stage
    before it; jobs only for adopted heads; inflight <= row_slots, pv_held <= pv_queue; the adopted
    banks a ring segment, released oldest first; the stream rules on softmax_rows and rows. With
    tiles, the row merger's ``released`` is assumed only once this tile's rows of the head are out."""
    _check(prove(RowSchedulerHarness(config, tile=tile), name="row_scheduler", mode="prove", depth=SCHEDULER_K,
                 workdir=tmp_path, timeout=900))


@pytest.mark.full
def test_row_scheduler_covers(tmp_path):
    """The assumptions leave the heads moving: all banks adopted at once, a bank loaded again and its
    new head released (three heads out), heads overlapping (a score stage in a later head while the
    output is in an earlier one), a row to the softmax and a row out."""
    _check(prove(RowSchedulerHarness(), name="row_scheduler", mode="cover", depth=32, workdir=tmp_path))


@pytest.mark.full
def test_row_scheduler_wrap_into_older_head_fails(tmp_path):
    """Without the "not the newest" term of ``wrap``, a stage that has finished the newest head walks
    into the next bank's older head and does its rows again: a bounded check from reset finds it (at
    step 8: two one-row heads, the score stage through both while the output is in the first)."""
    result = prove(RowSchedulerHarness(dut=WrapIntoOlderHead(SMALL_SCHEDULER)), name="mutant_wrap", mode="bmc",
                   depth=10, workdir=tmp_path)
    assert result.status == "FAIL", result.summary()
    assert result.trace is not None and result.trace.exists() and "induct" not in result.trace.name
    assert any(f.endswith("takes every row of the adopted heads once, in order") for f in result.failed), \
        result.failed


@pytest.mark.full     # about 90 s + 40 s of bounded checks
@pytest.mark.timeout(900)
def test_row_scheduler_completion_bounded(tmp_path):
    """Engines and softmax answering within 2 cycles, both outputs always ready: while a head is
    adopted a row goes out at least every 16 cycles (bmc from reset, depth 21: the first head's first
    row, its row pointers read first, the score jobs of up to row_slots - 1 rows going before its pv
    job); 15 fails with a trace."""
    latency = RowSchedulerHarness.LATENCY
    assert latency == 16
    _check(prove(RowSchedulerHarness(mode="completion"), name="row_scheduler", mode="bmc", depth=21,
                 workdir=tmp_path))
    result = prove(RowSchedulerHarness(mode="completion", latency=latency - 1), name="row_scheduler_tight",
                   mode="bmc", depth=20, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert result.failed == [f"assert: a row goes out at least every {latency - 1} cycles while a head is adopted"], \
        result.failed


# the data of the jobs the row scheduler hands to the engines (RowSchedulerHarness(data=True)) ---------

@pytest.mark.full     # about 4 min of CPU (the control proof alone: 20 s)
@pytest.mark.timeout(1800)
def test_row_scheduler_job_data_proven(tmp_path):
    """Every score and pv job offered is its row's: n, base and prefix from the row pointer buffer
    (Denser Engine: G + ptr[2i + 1] - ptr[2i] keys from CSR entry ptr[2i] - G; Sparser Engine:
    ptr[2i + 2] - ptr[2i + 1] from ptr[2i + 1]), nonzero/single from n, bank/row/slot the stage's,
    the pv job's reciprocal the row's; every row to the softmax carries its rows' n and the larger
    of its maxima. The buffer is any memory, fixed while a bank's head is adopted (a new one on every
    load). k-induction, k = 1, with the control invariants."""
    _check(prove(RowSchedulerHarness(data=True), name="row_scheduler_data", mode="prove", depth=SCHEDULER_K,
                 workdir=tmp_path, timeout=1500))


def _flip_field(port, member, field):
    """The scheduler with the lowest bit of one field of an output (``port.member``) flipped."""
    from attnforge.hw.vitcod.scheduler import RowScheduler
    dut = RowScheduler(SMALL_SCHEDULER)
    layout = dut.signature.members[port].signature.members[member].shape
    return FlipOutputBit(dut, path=(port, member), bit=layout[field].offset)


#: (full: 8-10 s each with SymbiYosys's Yosys, the score jobs; 30 s the softmax row; 2 min the pv job)
@pytest.mark.full
@pytest.mark.parametrize("make,depth,message", [
    pytest.param(lambda: _flip_field("dense", "score", "n"), 6, "engine 0: an offered score job's n is its row's",
                 id="score_n"),
    pytest.param(lambda: SparserReadsDenserHalfRow(SMALL_SCHEDULER), 6,
                 "engine 1: an offered score job's n is its row's", id="sparser_reads_denser_half_row"),
    pytest.param(lambda: _flip_field("softmax_rows", "payload", "max"), 8,
                 "softmax row: max is the row's, over both engines", id="softmax_max"),
    pytest.param(lambda: _flip_field("sparse", "pv", "base"), 10, "engine 1: an offered pv job's base is its row's",
                 id="pv_base"),
])
def test_row_scheduler_job_data_mutants_fail(tmp_path, make, depth, message):
    """A score job's n one off (a bit flipped on the scheduler's output), the Sparser Engine's pointer
    walk reading the Denser Engine's half-row (ptr[2i + k] for ptr[2i + 1 + k]: every control signal
    right), a softmax row's maximum one off, a pv job's CSR base one off: each is caught by the job
    data properties (bounded check from reset: a real trace; a score job is first offered at step 5,
    a row to the softmax at step 7, a pv job at step 9). The control proof sees none of them."""
    result = prove(RowSchedulerHarness(dut=make(), data=True), name="mutant_sched_data", mode="bmc", depth=depth,
                   workdir=tmp_path)
    assert result.status == "FAIL", result.summary()
    assert result.trace is not None and result.trace.exists() and "induct" not in result.trace.name
    assert f"assert: {message}" in result.failed, result.failed


def test_row_scheduler_job_data_one_tile_only():
    with pytest.raises(ValueError, match="one tile"):
        RowSchedulerHarness(SCHEDULER_TILES2, tile=1, data=True)
    with pytest.raises(ValueError, match="safety mode"):
        RowSchedulerHarness(mode="completion", data=True)


# the ViTCoD softmax stage alone (exponent units free: tb/formal.py SoftmaxStageHarness) ---------------

def test_softmax_stage_completion_bound_is_tight(tmp_path):
    """Units answering within 2 cycles: while rows are owed a reciprocal leaves at least every 16
    cycles (bmc from reset, 30 deep: two rows through the 13-step divider); 15 fails with a trace."""
    from attnforge.tb.formal import SoftmaxStageHarness
    assert SoftmaxStageHarness(mode="completion").latency == 16
    _check(prove(SoftmaxStageHarness(mode="completion"), name="softmax_stage", mode="bmc", depth=30,
                 workdir=tmp_path))
    result = prove(SoftmaxStageHarness(mode="completion", latency=15), name="softmax_tight", mode="bmc", depth=30,
                   workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert result.failed == ["assert: a beat leaves within 15 cycles while items are held"], result.failed


@pytest.mark.parametrize("path,message", [
    (("recips", "payload"), "softmax: reciprocals in row order"),
    (("recips", "valid"), "softmax: no output beat without an input"),
    (("sparse_exp", "start"), "softmax: the sparse unit starts with a row taken"),
], ids=["wrong_slot", "recip_from_nothing", "one_unit_started"])
def test_softmax_stage_mutants_fail(tmp_path, path, message):
    """A reciprocal for the wrong row, one without a row, an exponent job on one unit only: each
    is caught (bounded check from reset: a real trace)."""
    from attnforge.tb.formal import SMALL_SOFTMAX, SoftmaxStageHarness
    mutant = FlipOutputBit(SoftmaxStage(SMALL_SOFTMAX), path=path)
    result = prove(SoftmaxStageHarness(dut=mutant), name="mutant_softmax", mode="bmc", depth=12, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert f"assert: {message}" in result.failed, result.failed



@pytest.mark.parametrize("path,message", [
    (("e_write", "addr"), "exp: a write at its job's slot and next entry, in order"),
    (("e_write", "en"), "exp: no write without an open job"),
    (("job", "done"), "exp: no done without an open job"),
    (("e_write", "data"), "exp: done with the sum of exactly its E values"),
], ids=["wrong_address", "write_from_nothing", "done_from_nothing", "wrong_value"])
def test_exp_unit_mutants_fail(tmp_path, path, message):
    """An exponent written to the wrong entry, a write or a done pulse without a job, a written E that
    the sum does not hold: each is caught (bounded check from reset: a real trace)."""
    from attnforge.hw.vitcod.exp_unit import ExpUnit
    from attnforge.tb.formal import SMALL_SOFTMAX, ExpUnitHarness
    mutant = FlipOutputBit(ExpUnit(SMALL_SOFTMAX, groups=1), path=path)
    result = prove(ExpUnitHarness(dut=mutant), name="mutant_exp", mode="bmc", depth=12, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert f"assert: {message}" in result.failed, result.failed


# one ViTCoD engine (environment within the scheduler's rules: tb/formal.py EngineHarness) ------------

#: Engines beside SMALL_SOFTMAX's Denser Engine of one line: its Sparser Engine; two lines sharing a key
#: (S = 2: one cycle a score step, the final step compared directly); three lines (K = 3 keys a step,
#: four cycles a step, the second pv pass one line short)
ENGINES = [
    pytest.param(None, True, 1, id="sparse"),
    pytest.param(VitcodConfig(head_dim=2, max_tokens=2, max_nnz=4, macs=1, dense_lines=2, sparse_lines=1,
                              data_width=16), False, 2, id="split2"),
    pytest.param(VitcodConfig(head_dim=4, max_tokens=4, max_nnz=8, macs=1, dense_lines=3, sparse_lines=1,
                              data_width=16), False, 3, id="lines3"),
]


@pytest.mark.full
@pytest.mark.parametrize("config,sparse,lines", ENGINES)
def test_engine_configurations_proven(tmp_path, config, sparse, lines):
    """The engine's safety properties (k-induction, k = 2) on more engine shapes than make test's."""
    from attnforge.tb.formal import EngineHarness
    _check(prove(EngineHarness(config, sparse=sparse, lines=lines), name="engine", mode="prove",
                 depth=SAFETY_K["engine"], workdir=tmp_path))


@pytest.mark.full
def test_engine_covers(tmp_path):
    """A score job done from its beats and one without keys, row_slots score jobs open at once,
    pv_queue pv jobs and shares, a zero share taken: the assumptions leave all of it possible."""
    from attnforge.tb.formal import EngineHarness
    _check(prove(EngineHarness(), name="engine", mode="cover", depth=24, workdir=tmp_path))


def test_engine_completion_bound_is_tight(tmp_path):
    """One cycle under each completion bound fails from reset (bmc 14: a job of 2 keys started
    right after reset): a score job is not always done within 11 cycles, a pv job not within 10."""
    from attnforge.tb.formal import EngineHarness
    assert (EngineHarness.SCORE_LATENCY, EngineHarness.PV_LATENCY) == (12, 11)
    result = prove(EngineHarness(mode="completion", score_latency=11, pv_latency=10), name="engine_tight",
                   mode="bmc", depth=14, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert sorted(result.failed) == ["assert: a pv job is done within 10 cycles of its start",
                                     "assert: a score job is done within 11 cycles of its start"], result.failed


@pytest.mark.full     # about 25 s of CPU (k = 11: two jobs' whole way through the pipeline)
@pytest.mark.timeout(900)
def test_engine_completion_proven(tmp_path):
    """Every score job is done within 12 cycles of its start and every pv job within 11, for every
    cycle (k-induction, k = 11; 10 is too shallow: UNKNOWN)."""
    from attnforge.tb.formal import EngineHarness
    _check(prove(EngineHarness(mode="completion"), name="engine", mode="prove", depth=11, workdir=tmp_path))


@pytest.mark.parametrize("path,message", [
    pytest.param(("job", "score_done"), "score: no output beat without an input", id="done_from_nothing"),
    pytest.param(("job", "done_slot"), "score: done in start order, with its slot", id="wrong_slot"),
    pytest.param(("job", "pv_active"), "pv: pv_active exactly while a pv job is open", id="pv_active"),
    pytest.param(("job", "out"), "shares: a pv job without keys reads back as zeros", id="share_not_zero"),
    pytest.param(("job", "issue_free"), "engine: issue_free exactly when no beat or a job's last beat issues",
                 id="issue_free", marks=pytest.mark.full),
    pytest.param(("active",), "engine: active exactly while a beat issues", id="active", marks=pytest.mark.full),
])
def test_engine_mutants_fail(tmp_path, path, message):
    """A score done pulse from nothing, a done with the wrong slot, pv_active inverted, a share's
    bit flipped (a pv job without keys no longer reads zeros), issue_free or active inverted: each
    is caught (bounded check from reset: a real trace)."""
    from attnforge.hw.vitcod.engine import Engine
    from attnforge.tb.formal import SMALL_SOFTMAX, EngineHarness
    mutant = FlipOutputBit(Engine(SMALL_SOFTMAX, sparse=False, lines=1), path=path)
    result = prove(EngineHarness(dut=mutant), name="mutant_engine", mode="bmc", depth=8, workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert f"assert: {message}" in result.failed, result.failed


# the bus and line interfaces: the AXI4-Stream command input, the UART (tb/formal.py) -----------------

def test_axis_command_input_completion(tmp_path):
    """Host and accelerator at full rate: a command's last beat (its cmd beat, or its last data beat)
    leaves within 5 cycles of its first beat, for every cycle (k-induction, k = 1: the deadline
    queue's age is the command's beats taken); 4 fails from reset (bmc 12: a command with 3 data beats)."""
    assert AxisCommandInputHarness.LATENCY == 5
    _check(prove(AxisCommandInputHarness(mode="completion"), name="axis", mode="prove", depth=1, workdir=tmp_path))
    result = prove(AxisCommandInputHarness(mode="completion", latency=4), name="axis_tight", mode="bmc", depth=12,
                   workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert "assert: a command's last beat leaves within 4 cycles of its first" in result.failed, result.failed


@pytest.mark.parametrize("make,mode,depth,failed", [
    pytest.param(lambda: DropValidWhileStalled(axis_command_input(), valid=("cmd", "valid"), ready=("cmd", "ready")),
                 "prove", 2, ["cmd: valid held until ready"], id="cmd_valid_dropped"),
    pytest.param(lambda: axis_command_input(EnableWithdrawsOffer), "bmc", 6,
                 ["cmd: valid held until ready", "data: valid held until ready"], id="enable_withdraws_offer"),
])
def test_axis_command_input_mutants_fail(tmp_path, make, mode, depth, failed):
    """``cmd.valid`` dropped the cycle after a stall: the k-induction fails on exactly the stream rule.
    The block as it was before ``enable`` kept an offer (ENABLE cleared while a beat waits withdrew it):
    a trace from reset (three command beats, the command stalled, ENABLE cleared) on ``cmd``, and one
    on ``data``."""
    result = prove(AxisCommandInputHarness(dut=make()), name="mutant_axis", mode=mode, depth=depth, workdir=tmp_path)
    assert result.status != "PASS", result.summary()
    assert sorted(result.failed) == [f"assert: {f}" for f in failed], result.failed
    if mode == "bmc":
        assert result.trace is not None and result.trace.exists() and "induct" not in result.trace.name


def test_uart_tx_completion_proven(tmp_path):
    """A byte offered to the transmitter has its start bit on the line within 42 cycles (its frame then
    follows exactly: the safety proof), for every cycle (k-induction, k = 2, divisor 4)."""
    assert UartTxHarness(mode="completion").latency == 42
    _check(prove(UartTxHarness(mode="completion"), name="uart_tx", mode="prove", depth=2, workdir=tmp_path))


@pytest.mark.full     # about 40 s: the trace is two frames deep
def test_uart_tx_completion_bound_is_tight(tmp_path):
    """41 cycles fail from reset (bmc 44: a byte taken, the next offered the cycle after, its start bit
    a whole frame and two cycles later)."""
    result = prove(UartTxHarness(mode="completion", latency=41), name="uart_tx_tight", mode="bmc", depth=44,
                   workdir=tmp_path)
    assert result.status == "FAIL" and result.trace is not None, result.summary()
    assert result.failed == ["assert: an offered byte's start bit is on the line within 41 cycles"], result.failed


@pytest.mark.parametrize("make,mode,depth,message", [
    pytest.param(lambda: UartRxHarness(dut=DropValidWhileStalled(UartRx(UART_DIVISOR))), "prove", 2,
                 "o: valid held until ready", id="rx_valid_dropped"),
    pytest.param(lambda: UartTxHarness(dut=FlipOutputBit(UartTx(UART_DIVISOR), path=("i", "ready"))), "bmc", 4,
                 "i: a byte taken only while no frame is on the line", id="tx_ready_while_busy"),
])
def test_uart_mutants_fail(tmp_path, make, mode, depth, message):
    """The receiver's ``o.valid`` dropped the cycle after a stall fails the k-induction on exactly the
    stream rule; the transmitter's ``i.ready`` inverted (a byte taken mid-frame) fails from reset."""
    result = prove(make(), name="mutant_uart", mode=mode, depth=depth, workdir=tmp_path)
    assert result.status != "PASS", result.summary()
    assert f"assert: {message}" in result.failed, result.failed
    if mode == "prove":
        assert result.failed == [f"assert: {message}"], result.failed


@pytest.mark.full
@pytest.mark.parametrize("make,depth", [(UartTxHarness, 45), (UartRxHarness, 84)], ids=["tx", "rx"])
def test_uart_covers_reached(tmp_path, make, depth):
    """The assumptions leave the line busy: two bytes back to back out of the transmitter; a byte taken
    from the receiver, a frame error, an overrun (the second byte, at step 80)."""
    _check(prove(make(), name="uart", mode="cover", depth=depth, workdir=tmp_path))
