"""cocotb testbench of the model-level ViT accelerator (hw/vitmodel/accelerator.py).

One program: a random integer model's MLP half (``tb/vitmodel_case.py``: LOAD x; LAYERNORM;
fc1 dense MATMUL to int16; GELU; fc2 as a dense and as a CSR MATMUL to int8; residual ADD),
every intermediate tensor STOREd. Each STOREd tensor must equal, bit for bit, both the ISA's
reference executor (``ReferenceMachine``) and the same op computed directly with
``attnforge.int_ops`` (or, with ``program_file``, a compiled program and the integer ViT's own
trace, written by the test as plain data: ``vitmodel_case.save_program_case``). The full-rate test also checks every instruction's cycles against
``program.instruction_cycles``; the other runs the program with idle host beats and a stalled
output. The configuration, seed and case size arrive in ``ATTNFORGE_TB_PARAMS``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from amaranth.hdl import unsigned
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from attnforge.hw.vitmodel import Attention, ReferenceMachine, VitModelConfig, assemble, program_cycles
from attnforge.hw.vitmodel.isa import HEADER_FIELDS, Op, Region, Store, pack
from attnforge.hw.vitmodel.accelerator import VitModelAccelerator

from .streams import StreamBench, StreamSink, StreamSource, reset_quiet
from .vitmodel_case import TENSORS, load_program_case, mlp_case


def _params() -> dict:
    return json.loads(os.environ.get("ATTNFORGE_TB_PARAMS", "{}"))


class RetireMonitor:
    """Records the cycle in which the ``retired`` count reaches each value."""

    def __init__(self, dut):
        self.dut = dut
        self.cycles: dict[int, int] = {}

    def quiet(self) -> None:
        pass

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        n = int(self.dut.retired.value)
        self.cycles.setdefault(n, cycle)
        if int(self.dut.error.value):
            raise AssertionError(f"cycle {cycle}: the accelerator halted with error set")


class VitModelTB:
    def __init__(self, dut, *, idle: float = 0.0, stall: float = 0.0, seed: int = 0, streams: bool = True):
        """``streams`` False: no stream driver, sink or monitor (the player drives the design itself)."""
        p = _params()
        self.cfg = VitModelConfig(**p.get("config", {}))
        self.dut = dut
        rng = random.Random(seed)
        P = self.cfg.lanes
        if streams:
            self.src = StreamSource(dut, "i", unsigned(self.cfg.beat_width), idle=idle,
                                    rng=random.Random(rng.random()))
            self.sink = StreamSink(dut, "o", VitModelAccelerator(self.cfg).o.payload.shape(), stall=stall,
                                   rng=random.Random(rng.random()))
            self.mon = RetireMonitor(dut)
            self.bench = StreamBench(dut.clk, [self.src, self.sink, self.mon])
        if "program_file" in p:         # a compiled program and the golden model's tensors (written by the test)
            self.case, self.names = load_program_case(p["program_file"], self.cfg)
        else:
            case = p.get("case", {})
            self.case = mlp_case(self.cfg, seed, tokens=case.get("tokens", P + 1), dim=case.get("dim", 2 * P),
                                 hidden=case.get("hidden", 4 * P), sparsity=case.get("sparsity", 0.75))
            self.names = TENSORS
        if any(isinstance(ins, Attention) for ins in self.case.program):
            # ATTENTION runs the ViTCoD head golden model (algo/vitcod/golden.py; imported only then: torch)
            from attnforge.algo.vitcod.model_program import reference_machine

            self.reference = reference_machine(self.cfg).run(self.case.program)
        else:
            self.reference = ReferenceMachine(self.cfg).run(self.case.program)

    async def run(self) -> dict:
        await reset_quiet(self.dut, (self.src, self.sink), cycles=3)
        program = self.case.program
        beats = assemble(program, self.cfg)
        for b in beats:
            self.src.send(b)
        model = program_cycles(program, self.cfg)
        await self.bench.run_until(lambda: len(program) in self.mon.cycles,
                                   max_cycles=20 * sum(c.total for c in model) + 1000)
        await self.bench.expect_quiet(self.sink, 30)
        return self.finish(self.sink.received, self.src.transfer_cycles, self.mon.cycles[len(program)])

    def finish(self, received: list, transfer_cycles: list[int], retired_cycle: int) -> dict:
        """Check the output beats and return the cycles: each instruction from its header's transfer to the
        next header's (the last one to the cycle its retirement shows)."""
        program = self.case.program
        out_beats = sum(ins.src.rows * ins.src.cols // self.cfg.lanes for ins in program if isinstance(ins, Store))
        assert len(received) == out_beats, f"{len(received)} output beats, expected {out_beats}"
        self.check(received)
        headers = _header_positions(program, self.cfg)
        model = program_cycles(program, self.cfg)
        starts = [transfer_cycles[h] for h in headers]
        ends = starts[1:] + [retired_cycle]
        return dict(measured=[e - s for s, e in zip(starts, ends)], model=[c.total for c in model],
                    ops=[c.op for c in model], total=ends[-1] - starts[0],
                    last_tensors=[t.tolist() for t in self.last_tensors])

    def check(self, received: list) -> None:
        P = self.cfg.lanes
        got = iter(received)
        stores = [ins for ins in self.case.program if isinstance(ins, Store)]
        assert len(stores) == len(self.names) == len(self.reference)
        self.last_tensors = []         # the last two STOREd tensors (a classifier's low and high halves)
        for name, ins, ref in zip(self.names, stores, self.reference):
            rows, cols = ins.src.rows, ins.src.cols
            rtl = np.array([next(got) for _ in range(rows * cols // P)], np.int64).reshape(rows, cols)
            self.last_tensors = (self.last_tensors + [rtl])[-2:]
            for what, want in (("the reference executor", ref), ("the golden model", self.case.expected[name])):
                bad = np.argwhere(rtl != want)
                assert not len(bad), (f"tensor {name}: {len(bad)} elements differ from {what}, first at "
                                      f"{tuple(bad[0])}: RTL {rtl[tuple(bad[0])]} != {want[tuple(bad[0])]}")


def _header_positions(program, cfg) -> list[int]:
    """The index of each instruction's header among the program's host beats (each instruction assembled
    alone gives its header and payload beats)."""
    headers, pos = [], 0
    for ins in program:
        headers.append(pos)
        pos += len(assemble([ins], cfg))
    return headers


def _start(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())


@cocotb.test()
async def mlp_half_full_rate_cycles_match_the_model(dut):
    """Every tensor bit-exact; every instruction's cycles (header to next header) equal the model's."""
    _start(dut)
    p = _params()
    tb = VitModelTB(dut, idle=0.0, stall=0.0, seed=p.get("seed", 0))
    res = await tb.run()
    report = os.environ.get("ATTNFORGE_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump(res, f)
    assert res["measured"] == res["model"], f"cycles per instruction: RTL {res['measured']} != model {res['model']}"


@cocotb.test()
async def mlp_half_with_idle_host_and_backpressure(dut):
    """Every tensor bit-exact with 30 % idle host beats and 40 % output backpressure."""
    _start(dut)
    tb = VitModelTB(dut, idle=0.3, stall=0.4, seed=_params().get("seed", 0) + 1)
    await tb.run()


@cocotb.test()
async def reserved_opcode_halts_with_error(dut):
    """ATTENTION (not in this RTL yet) and opcode 0 are refused, and so are headers whose shape the hardware
    cannot run (a STORE of 0 rows streamed output beats forever before): ``error`` rises, nothing more is
    taken or retired."""
    _start(dut)
    cfg = VitModelConfig(**_params().get("config", {}))
    P = cfg.lanes
    bad = [dict(opcode=Op.ATTENTION, rows=1, cols=P), dict(opcode=0, rows=1, cols=P),
           dict(opcode=Op.STORE, rows=0, cols=P), dict(opcode=Op.STORE, rows=1, cols=0),
           dict(opcode=Op.LOAD, rows=cfg.max_tokens + 1, cols=P),
           dict(opcode=Op.MATMUL, rows=1, cols=P, out_cols=0, dense=1),
           dict(opcode=Op.MATMUL, rows=1, cols=P, out_cols=cfg.max_cols + 1, dense=1),
           dict(opcode=Op.LAYERNORM, rows=1, cols=cfg.ln_channels + P)]
    for header in bad:
        src = StreamSource(dut, "i", unsigned(cfg.beat_width))
        sink = StreamSink(dut, "o", VitModelAccelerator(cfg).o.payload.shape())
        bench = StreamBench(dut.clk, [src, sink])
        await reset_quiet(dut, (src, sink), cycles=3)
        assert int(dut.error.value) == 0
        src.send(pack(HEADER_FIELDS, header))
        src.send(pack(HEADER_FIELDS, Store(Region(0, 1, P)).header()))
        for _ in range(20):
            await bench.step()
        assert int(dut.error.value) == 1, f"{header}: error not set"
        assert src.sent == 1 and int(dut.retired.value) == 0 and not sink.received, \
            f"{header}: the machine went on after a bad header"


@cocotb.test(skip=_params().get("player") is None)
async def program_played_from_memory(dut):
    """The full-rate test at the simulator's speed (``tb/vitmodel_player.py``: the DUT is the player): the
    host beats from a memory, every output beat into one; every tensor bit-exact, every instruction's cycles
    equal the model's. Runs only when the test is built with the player as its top (``player`` in the
    parameters: its depth)."""
    from cocotb.triggers import ClockCycles, First, RisingEdge

    from .vitmodel_player import output_rows, read_hex, write_program_hex

    _start(dut)
    p = _params()
    tb = VitModelTB(dut, streams=False)
    program = tb.case.program
    beats = assemble(program, tb.cfg)
    if len(beats) > p["player"]:
        raise AssertionError(f"{len(beats)} host beats do not fit the player's {p['player']}")
    write_program_hex("program.hex", beats, tb.cfg.beat_width)
    model = program_cycles(program, tb.cfg)
    dut.load.value = 0
    dut.dump.value = 0
    dut.beats.value = len(beats)
    dut.instructions.value = len(program)
    # the program is read in during reset (at a clock edge with load high), before the first beat is offered
    await FallingEdge(dut.clk)
    dut.rst.value = 1
    dut.load.value = 1
    await FallingEdge(dut.clk)
    dut.load.value = 0
    await reset_quiet(dut, (), cycles=3)
    limit = 20 * sum(c.total for c in model) + 1000
    if not int(dut.done.value):
        await First(RisingEdge(dut.done), ClockCycles(dut.clk, limit))
    assert int(dut.done.value), (f"timed out after {limit} cycles (DUT hung or too slow): {int(dut.taken.value)} of "
                                 f"{len(beats)} host beats taken, {int(dut.retired.value)} of {len(program)} "
                                 f"instructions retired, {int(dut.given.value)} output beats")
    assert not int(dut.error.value), "the accelerator halted with error set"
    given = int(dut.given.value)
    assert given <= p["player"], f"{given} output beats do not fit the player's {p['player']}"
    await ClockCycles(dut.clk, 30)
    assert int(dut.given.value) == given, f"{int(dut.given.value) - given} output beat(s) after the last instruction"
    assert int(dut.taken.value) == len(beats), f"{int(dut.taken.value)} of {len(beats)} host beats taken"
    await FallingEdge(dut.clk)
    dut.dump.value = 1
    await FallingEdge(dut.clk)
    dut.dump.value = 0
    rcyc = read_hex("rcyc.hex")
    res = tb.finish(output_rows("out.hex", tb.cfg), read_hex("tcyc.hex"), rcyc[len(program)])
    report = os.environ.get("ATTNFORGE_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump(res, f)
    assert res["measured"] == res["model"], f"cycles per instruction: RTL {res['measured']} != model {res['model']}"
