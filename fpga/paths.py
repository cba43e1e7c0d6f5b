"""Register-to-register paths of a Yosys ECP5 netlist, ranked before place and route.

nextpnr names one critical path per run, after placement and routing (tens of minutes at the
benchmark configurations). This ranks *every* path of Yosys's ``netlist.json`` in seconds, with a
delay model of the ECP5 cells (speed grade 6, rounded) and a routing delay per net that grows with
its fan-out, so a pipelining round can fix every long path at once instead of one per routed run.

The figures rank paths; they are not an Fmax. On the ViTCoD benchmark configuration (issue 15) the
worst estimate was 31.5 ns where nextpnr's placement estimated 29.9 ns (33.5 MHz); routing congestion,
which the model does not see, comes on top.

Model (ns): a path starts at a flip-flop's Q (``START``), a block RAM's data out (clock to output,
no output register) or a DSP's output (combinational here: Yosys maps multipliers without their
registers); it ends at a flip-flop's D, CE or LSR, a block RAM's or LUT RAM's inputs (``SETUP``).
In between each LUT, multiplexer, carry cell, multiplier and LUT-RAM read adds its delay
(``cell_delay``) and each net ``net_delay(fan-out)``, except the dedicated carry chain.
"""

from __future__ import annotations

import collections
import math
import re

__all__ = ["estimate_paths", "net_delay", "START", "SETUP", "LOGIC_LEVELS"]

#: clock to output at a path's start
START = {"TRELLIS_FF": 0.45, "DP16KD": 4.3}
#: setup at a path's end
SETUP = {"TRELLIS_FF": 0.2, "DP16KD": 0.3, "TRELLIS_DPR16X4": 0.4}
#: cells that count as a level of logic
LOGIC_LEVELS = frozenset({"LUT4", "PFUMX", "L6MUX21", "CCU2C", "MULT18X18D", "TRELLIS_DPR16X4"})
_SIMPLE = {"LUT4": 0.25, "PFUMX": 0.25, "L6MUX21": 0.25}
_MULT = 3.9           # an inferred 18x18 multiplier, input to output, no internal registers
_LUTRAM_READ = 0.7    # TRELLIS_DPR16X4 read address to data


def net_delay(fanout: int) -> float:
    """Routing delay of a net with ``fanout`` loads."""
    return 0.8 + 0.35 * math.log2(max(fanout, 1))


def cell_delay(kind: str, pin: str, out: str) -> float | None:
    """Delay through a combinational cell from input ``pin`` to output ``out``; None: no such arc."""
    if kind == "CCU2C":
        if pin == "CIN":
            return 0.05 if out == "COUT" else 0.3
        return 0.35 if out == "COUT" else 0.4
    if kind == "TRELLIS_DPR16X4":
        return _LUTRAM_READ if pin.startswith("RAD") and out.startswith("DO") else None
    if kind == "MULT18X18D":
        return _MULT if re.fullmatch(r"[AB]\d+", pin) and out.startswith("P") else None
    return _SIMPLE.get(kind)


def _pins(cell: dict):
    """(pin, net bit, is output) of a cell; a bus port's bits are pins ``PORT0``, ``PORT1``, ..."""
    for port, bits in cell["connections"].items():
        output = cell["port_directions"].get(port) == "output"
        for i, bit in enumerate(bits):
            if isinstance(bit, int):
                yield (port if len(bits) == 1 else f"{port}{i}"), bit, output


def _paths(module: dict):
    """Every endpoint's worst arrival: [(ns, levels, cells from start to end, end pin)]."""
    cells = module["cells"]
    fanout = collections.Counter()
    inputs = collections.defaultdict(list)
    outputs = collections.defaultdict(list)
    for name, cell in cells.items():
        for pin, bit, output in _pins(cell):
            if output:
                outputs[name].append((pin, bit))
            else:
                fanout[bit] += 1
                inputs[name].append((pin, bit))
    # arrival per net: (ns at its driver's output, levels, cells); start points first, then the
    # combinational outputs in topological order (Kahn), each from the arcs into it
    arrival: dict[int, tuple] = {}
    arcs: dict[int, tuple] = {}
    for name, cell in cells.items():
        kind = cell["type"]
        for pin, bit in outputs[name]:
            into = [] if kind in START else [(ibit, d, kind == "CCU2C" and ipin == "CIN")
                                             for ipin, ibit in inputs[name]
                                             if (d := cell_delay(kind, ipin, pin)) is not None]
            if into:
                arcs[bit] = (name, kind, into)
            else:
                arrival[bit] = (START.get(kind, 0.0), 0, (name,))
    users = collections.defaultdict(list)
    waiting = {}
    for bit, (_, _, into) in arcs.items():
        pending = [ibit for ibit, _, _ in into if ibit in arcs]
        waiting[bit] = len(pending)
        for ibit in pending:
            users[ibit].append(bit)
    ready = collections.deque(bit for bit, count in waiting.items() if count == 0)
    while ready:
        bit = ready.popleft()
        name, kind, into = arcs[bit]
        best = (0.0, 0, (name,))
        for ibit, d, carry in into:
            t, levels, path = arrival.get(ibit, (0.0, 0, ()))
            t += d + (0.0 if carry else net_delay(fanout[ibit]))
            if t > best[0]:
                best = (t, levels + (kind in LOGIC_LEVELS and not carry), path + (name,))
        arrival[bit] = best
        for user in users[bit]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    ends = []
    for name, cell in cells.items():
        kind = cell["type"]
        if kind not in SETUP:
            continue
        for pin, bit in inputs[name]:
            if pin.startswith("CLK") or pin == "WCK" or (kind == "TRELLIS_DPR16X4" and pin.startswith("RAD")):
                continue
            t, levels, path = arrival.get(bit, (0.0, 0, ()))     # (a combinational loop: not ranked)
            ends.append((t + net_delay(fanout[bit]) + SETUP[kind], levels, path + (name,), pin))
    return ends


def estimate_paths(netlist: dict, *, top: int = 10, budget_ns: float = 10.0, signal_of=None) -> dict:
    """The ``top`` worst stages (distinct from-signal -> to-signal pairs) of ``netlist`` (Yosys's JSON,
    flat, ECP5 cells), worst first, with their estimated delay, logic levels and endpoint count, and
    how many endpoints exceed ``budget_ns``. ``signal_of`` names a cell's signal (``fpga.synth``'s)."""
    name_of = signal_of or (lambda cell: cell)
    module = next(mod for mod in netlist["modules"].values() if mod.get("attributes", {}).get("top"))
    ends = _paths(module)
    ends.sort(key=lambda e: -e[0])
    stages: dict[str, dict] = {}
    for ns, levels, path, pin in ends:
        stage = f"{name_of(path[0])} -> {name_of(path[-1])}"
        if stage in stages:
            stages[stage]["endpoints"] += 1
        elif len(stages) < top:
            stages[stage] = {"stage": stage, "ns": round(ns, 2), "levels": levels, "pin": pin, "endpoints": 1,
                             "cells": [module["cells"][c]["type"] for c in path]}
    return {"model": "fpga/paths.py (ECP5, before placement)", "endpoints": len(ends),
            "budget_ns": budget_ns, "over_budget": sum(1 for e in ends if e[0] > budget_ns),
            "worst_ns": round(ends[0][0], 2) if ends else None, "stages": list(stages.values())}
