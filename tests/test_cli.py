"""The attnforge command line: help, Verilog generation, error messages."""

import subprocess
import sys

import pytest

from attnforge.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "attnforge.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("sub", [[], ["verilog"], ["sim"], ["synth"], ["bench"], ["demo"]])
def test_help(sub):
    proc = _run(*sub, "--help")
    assert proc.returncode == 0
    assert "usage: attnforge" in proc.stdout


def test_verilog_writes_lint_clean_file(tmp_path, capsys):
    out = tmp_path / "v" / "line.v"
    assert main(["verilog", "mac-line", "--macs", "3", "-o", str(out)]) == 0
    assert "module mac_line" in out.read_text()
    assert "lint clean" in capsys.readouterr().out


def test_verilog_bad_parameter_names_it_and_writes_nothing(tmp_path):
    out = tmp_path / "line.v"
    proc = _run("verilog", "mac-line", "--macs", "0", "-o", str(out))
    assert proc.returncode == 2
    assert "macs (M) must be in [1, 1024], not 0" in proc.stderr
    assert not out.exists()


def test_verilog_narrow_accumulator_refused(tmp_path):
    proc = _run("verilog", "mac-line", "--max-length", "16", "--acc-width", "12", "-o", str(tmp_path / "x.v"))
    assert proc.returncode == 2
    assert "acc_width=12 is narrower than the 20 bits" in proc.stderr


def test_unknown_design():
    proc = _run("verilog", "softmax-9000")
    assert proc.returncode == 2
    assert "invalid choice: 'softmax-9000'" in proc.stderr
