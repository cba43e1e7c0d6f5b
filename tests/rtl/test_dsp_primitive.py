"""The ECP5 ``MULT18X18D`` primitive with its own registers (hw/common/dsp.py) and attnforge's model of it.

The model (hw/common/models/MULT18X18D.v) is the only simulation of the primitive there is (Yosys ships
a black box), so it is checked three ways: both forms of ``registered_split_product`` give Python's
product of every pair at small widths and of random and extreme pairs at full width (tb/dsp_tb.py); a
primitive instantiated with the wrong sign setting is caught; and the linear decode datapath built
with ``dsp_primitives`` is bit-exact against its golden model with the cycle model still exact.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from amaranth.hdl import Module, Shape, Signal, signed, unsigned

from attnforge.errors import ConfigError
from attnforge.hw.common.dsp import MULT18X18D_MODEL, mult18x18d, primitive_models
from attnforge.hw.designs import get_design
from attnforge.hw.linear.config import LinearDecodeConfig
from attnforge.hw.verilog import to_verilog
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.sim.tools import ensure_simulator
from attnforge.tb.dsp_probe import DspProbe

from .test_linear_decode import _config, check_cycle_model

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"


def _probe(narrow: Shape, wide: Shape, cut, *, simulator="verilator", mutant=None, **params):
    name = f"dsp_probe_{'s' if narrow.signed else 'u'}{narrow.width}_{'s' if wide.signed else 'u'}{wide.width}" \
           f"_{cut[0]}_{cut[1]}" + (f"_{mutant}" if mutant else "")
    params = {"narrow": [narrow.width, narrow.signed], "wide": [wide.width, wide.signed], **params}
    return run_cocotb(DspProbe(narrow, wide, cut, mutant=mutant), top="dsp_probe", config_name=name,
                      test_module="attnforge.tb.dsp_tb", params=params, simulator=simulator, build_root=BUILD,
                      seed=params.get("seed", 0))


@pytest.mark.parametrize("narrow", [unsigned(3), signed(3)])
@pytest.mark.parametrize("wide, cut", [(signed(11), (8, 9)), (unsigned(11), (8, 9)), (signed(9), (8, 8))])
def test_primitive_exhaustive_at_small_widths(narrow, wide, cut):
    """Every pair of 3-bit x 11-bit (8 + 3: the carry out of the low piece, every sign of the top piece)
    and of 3-bit x 9-bit at 8-bit pieces with a one-bit top borrowed from below: 16 384 or 4 096 pairs."""
    result = _probe(narrow, wide, cut, exhaustive=True)
    assert result.passed and result.report["pairs"] == (1 << narrow.width) * (1 << wide.width), f"see {result.log}"


@pytest.mark.parametrize("narrow, wide, cut", [
    (unsigned(7), signed(27), (17, 18)),   # linear decode's readout: phi(q) x state word, 17 + 10 bits
    (signed(18), unsigned(35), (17, 18)),  # the widest narrow operand, an unsigned wide one: 17 + 18
    (signed(17), signed(52), (17, 18)),    # three pieces and a top of 18 bits
    (unsigned(18), signed(18), (17, 18)),  # one piece, both operands at the port's 18 bits
])
def test_primitive_random_at_full_width(narrow, wide, cut):
    """The extremes (and their neighbours) of both operands crossed, then 3 000 random pairs."""
    result = _probe(narrow, wide, cut, pairs=3000, seed=narrow.width * 100 + wide.width)
    assert result.passed and result.report["pairs"] > 3000, f"see {result.log}"


def test_primitive_on_icarus():
    """The model on the second simulator (an 8 + 3 cut, every pair)."""
    result = _probe(signed(3), signed(11), (8, 9), simulator="icarus", exhaustive=True)
    assert result.passed and result.report["pairs"] == 8 * 2048, f"see {result.log}"


@pytest.mark.parametrize("mutant, narrow, wide, params", [
    # SIGNEDB wrong on the signed top piece: 17 x 18 bits, a product wider than the 18 bits below which
    # the sign setting cannot show (the operands are extended to 18 bits by their own sign)
    ("sign", signed(17), signed(52), dict(pairs=200)),
    ("unregistered", unsigned(3), signed(11), dict(exhaustive=True)),   # the product a cycle early
])
def test_wrong_instantiation_is_caught(mutant, narrow, wide, params):
    """A MULT18X18D instantiated wrong (tb/dsp_probe.py ``MUTANTS``) fails the testbench."""
    cut = (17, 18) if wide.width > 18 else (8, 9)
    result = _probe(narrow, wide, cut, mutant=mutant, **params)
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"


@pytest.mark.parametrize("parameter, message", [('.MULT_BYPASS("ENABLED")', "bypass"),
                                                ('.REG_INPUTC_CLK("CLK0")', "C input register")])
def test_model_refuses_modes_it_does_not_model(tmp_path, parameter, message):
    """A MULT18X18D with a multiplier bypass or its C register stops the simulation before the first cycle
    (the model only knows the modes attnforge instantiates)."""
    ensure_simulator("icarus")
    top = tmp_path / "top.v"
    top.write_text('module top(input wire clk, output wire p);\n'
                   f'  MULT18X18D #({parameter}) u (.CLK0(clk), .CE0(1\'b1), .RST0(1\'b0), .SIGNEDA(1\'b0),'
                   ' .SIGNEDB(1\'b0), .SOURCEA(1\'b0), .SOURCEB(1\'b0), .P0(p));\nendmodule\n')
    proc = subprocess.run(["iverilog", "-o", str(tmp_path / "a.out"), "-s", "top", str(top), str(MULT18X18D_MODEL)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run(["vvp", "-n", str(tmp_path / "a.out")], capture_output=True, text=True)
    assert message in run.stdout + run.stderr and run.returncode != 0


def test_models_added_only_where_instantiated():
    """The runner and the lint add the model exactly when the Verilog instantiates the primitive."""
    base = dict(d=8, macs=8, conv_taps=2, t_max=2)
    design = get_design("linear-decode")
    portable = to_verilog(design.build(_config(**base)), design.top)
    primitive = to_verilog(design.build(_config(**base, dsp_primitives=True)), design.top)
    assert primitive_models(portable) == [] and primitive_models(primitive) == [MULT18X18D_MODEL]
    # one MULT18X18D per readout piece (M = 8 lanes, the state word cut 17 + rest) and per conv tap (K = 2)
    assert len(re.findall(r"^\s*MULT18X18D\b", primitive, re.M)) == 8 * 2 + 2


def test_dsp_primitives_need_ecp5():
    with pytest.raises(ConfigError, match="dsp_primitives instantiates ECP5's MULT18X18D; dsp_family is 'ice40'"):
        LinearDecodeConfig(d=8, macs=8, dsp_family="ice40", dsp_primitives=True)


def test_linear_decode_with_primitives_is_bit_and_cycle_exact():
    """The linear decode datapath with its readout in MULT18X18D primitives (the model simulating them):
    bit-exact against the golden model and the cycle model exact, as the portable build."""
    config = _config(d=8, macs=8, conv_taps=2, t_max=4, dsp_primitives=True)
    tb = dict(tokens=300, rate_tokens=48, rate_modes=[[0, 1], [4, 4], [4, 1]])
    result = simulate(get_design("linear-decode"), config, seed=5, tb_params=tb, simulator="verilator",
                      build_root=BUILD)
    assert (result.tests, result.passed) == (2, True), f"see {result.log}"
    check_cycle_model(config, result.report)


def test_operand_wider_than_the_port_is_refused():
    with pytest.raises(ConfigError, match="mult18x18d x: operand b has 19 bits; MULT18X18D takes at most 18"):
        mult18x18d(Module(), Signal(8), Signal(signed(19)), "x")
