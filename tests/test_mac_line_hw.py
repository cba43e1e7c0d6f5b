"""MAC line generator: parameter validation (one test per rule), Verilog and lint."""

import pytest

from attnforge.hw.mac_line import MacLine, MacLineConfig
from attnforge.hw.verilog import write_verilog
from attnforge.sim.lint import lint_verilog


def test_init_wrong_macs_zero():
    with pytest.raises(ValueError, match=r"macs \(M\) must be in \[1, 1024\], not 0"):
        MacLineConfig(macs=0)


def test_init_wrong_macs_too_many():
    with pytest.raises(ValueError, match="not 1025"):
        MacLineConfig(macs=1025)


def test_init_wrong_macs_type():
    with pytest.raises(TypeError, match="integer, not 2.0"):
        MacLineConfig(macs=2.0)


def test_init_wrong_operand_width():
    with pytest.raises(ValueError, match=r"operand_width must be in \[2, 16\], not 1"):
        MacLineConfig(operand_width=1)


def test_init_wrong_max_length():
    with pytest.raises(ValueError, match="max_length must be >= 1, not 0"):
        MacLineConfig(max_length=0)


def test_init_wrong_acc_narrower_than_products():
    # 16 products of two int8 need 20 bits; 19 could overflow.
    with pytest.raises(ValueError, match="acc_width=19 is narrower than the 20 bits"):
        MacLineConfig(max_length=16, acc_width=19)


def test_init_wrong_acc_narrower_than_one_product():
    with pytest.raises(ValueError, match="acc_width=15 is narrower than the 16 bits"):
        MacLineConfig(max_length=1, acc_width=15)


def test_init_wrong_acc_too_wide():
    with pytest.raises(ValueError, match="at most 64"):
        MacLineConfig(acc_width=65)


def test_init_wrong_needs_over_64_bits():
    with pytest.raises(ValueError, match="needs a 68-bit accumulator"):
        MacLineConfig(operand_width=16, max_length=1 << 36)


def test_init_wrong_config_type():
    with pytest.raises(TypeError, match="needs a MacLineConfig"):
        MacLine({"macs": 8})


def test_acc_width_defaults_to_least_safe():
    # (-128)**2 = 2**14; 31 of them fit a signed 20-bit accumulator, 32 do not.
    assert MacLineConfig(max_length=31).acc_width == 20
    assert MacLineConfig(max_length=32).acc_width == 21


@pytest.mark.parametrize("params", [{}, {"macs": 1, "max_length": 16}, {"macs": 4, "acc_width": 64},
                                    {"macs": 3, "operand_width": 5, "max_length": 100}])
def test_verilog_lint_clean(tmp_path, params):
    cfg = MacLineConfig(**params)
    path = write_verilog(MacLine(cfg), "mac_line", tmp_path / "mac_line.v")
    result = lint_verilog(path, "mac_line")
    assert result.clean, result.messages
    text = path.read_text()
    for port in ("i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload"):
        assert port in text


def test_lint_catches_latch_and_loop(tmp_path):
    # The waivers must not hide real hardware bugs.
    bad = tmp_path / "bad.v"
    bad.write_text(
        "module bad(input a, input en, output reg q, output y, output z);\n"
        "always @* if (en) q = a;\n"
        "assign y = z ^ a;\n"
        "assign z = y;\n"
        "endmodule\n")
    result = lint_verilog(bad, "bad")
    assert not result.clean
    assert {"LATCH", "UNOPTFLAT"} <= result.rules()


def test_lint_catches_multiple_drivers(tmp_path):
    bad = tmp_path / "multi.v"
    bad.write_text(
        "module multi(input clk, input clk2, input a, input b, output reg q);\n"
        "always @(posedge clk) q <= a;\n"
        "always @(posedge clk2) q <= b;\n"
        "endmodule\n")
    assert "MULTIDRIVEN" in lint_verilog(bad, "multi").rules()


def test_write_verilog_unchanged_keeps_mtime(tmp_path):
    path = write_verilog(MacLine(MacLineConfig()), "mac_line", tmp_path / "m.v")
    before = path.stat().st_mtime_ns
    write_verilog(MacLine(MacLineConfig()), "mac_line", path)
    assert path.stat().st_mtime_ns == before
