"""The path estimate before placement (fpga/paths.py) on netlists worked by hand."""

import pytest

from attnforge.fpga.paths import estimate_paths, net_delay


def _cell(kind, **pins):
    """A netlist cell: pins given as name=(bit, "input"|"output")."""
    return {"type": kind, "connections": {p: [b] for p, (b, _) in pins.items()},
            "port_directions": {p: d for p, (_, d) in pins.items()}}


def _netlist(cells):
    return {"modules": {"top": {"attributes": {"top": 1}, "cells": cells}}}


I, O = "input", "output"


def test_delays_add_up_along_each_path_and_the_worst_stage_comes_first():
    cells = {
        # a flip-flop through two LUTs into a flip-flop: 0.45 + (0.8 + 0.25) * 2 + 0.8 + 0.2
        "a": _cell("TRELLIS_FF", CLK=(1, I), DI=(9, I), Q=(2, O)),
        "l1": _cell("LUT4", A=(2, I), Z=(3, O)),
        "l2": _cell("LUT4", A=(3, I), Z=(4, O)),
        "b": _cell("TRELLIS_FF", CLK=(1, I), DI=(4, I), Q=(10, O)),
        # a block RAM's output straight into a flip-flop: 4.3 + 0.8 + 0.2
        "ram": _cell("DP16KD", CLKA=(1, I), DOA0=(5, O)),
        "c": _cell("TRELLIS_FF", CLK=(1, I), DI=(5, I), Q=(11, O)),
        # a carry chain: the second cell is entered on CIN (no routing, no level)
        # 0.45 + 0.8 + 0.35 (A0 -> COUT) + 0.3 (CIN -> S0) + 0.8 + 0.2
        "d": _cell("TRELLIS_FF", CLK=(1, I), DI=(12, I), Q=(6, O)),
        "c1": _cell("CCU2C", A0=(6, I), COUT=(7, O)),
        "c2": _cell("CCU2C", CIN=(7, I), S0=(8, O)),
        "e": _cell("TRELLIS_FF", CLK=(1, I), DI=(8, I), Q=(13, O)),
    }
    found = estimate_paths(_netlist(cells), top=10, budget_ns=4.0)
    stages = {st["stage"]: st for st in found["stages"]}
    assert stages["ram -> c"]["ns"] == pytest.approx(5.3) and stages["ram -> c"]["levels"] == 0
    assert stages["a -> b"]["ns"] == pytest.approx(3.55) and stages["a -> b"]["levels"] == 2
    assert stages["a -> b"]["cells"] == ["TRELLIS_FF", "LUT4", "LUT4", "TRELLIS_FF"]
    assert stages["d -> e"]["ns"] == pytest.approx(2.9) and stages["d -> e"]["levels"] == 1
    assert found["stages"][0]["stage"] == "ram -> c" and found["worst_ns"] == pytest.approx(5.3)
    assert found["over_budget"] == 1


def test_fanout_slows_a_net_and_endpoints_of_a_stage_are_counted():
    cells = {"src": _cell("TRELLIS_FF", CLK=(1, I), DI=(99, I), Q=(2, O))}
    for k in range(4):
        cells[f"dst{k}"] = _cell("TRELLIS_FF", CLK=(1, I), DI=(2, I), Q=(10 + k, O))
    found = estimate_paths(_netlist(cells), signal_of=lambda name: name.rstrip("0123456789"))
    (stage,) = [st for st in found["stages"] if st["stage"] == "src -> dst"]
    assert stage["endpoints"] == 4
    assert stage["ns"] == pytest.approx(0.45 + net_delay(4) + 0.2) and net_delay(4) == pytest.approx(1.5)


def test_a_combinational_loop_does_not_hang():
    cells = {"x": _cell("LUT4", A=(3, I), Z=(2, O)), "y": _cell("LUT4", A=(2, I), Z=(3, O)),
             "f": _cell("TRELLIS_FF", CLK=(1, I), DI=(3, I), Q=(4, O))}
    found = estimate_paths(_netlist(cells))
    assert found["endpoints"] == 1
