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


def test_command_group_shared_by_two_modules():
    import argparse

    from attnforge.cli import command_group

    parser = argparse.ArgumentParser(prog="attnforge")
    sub = parser.add_subparsers(dest="command")
    command_group(sub, "demo-group", "a group").add_parser("one").set_defaults(which=1)
    command_group(sub, "demo-group", "a group").add_parser("two").set_defaults(which=2)
    assert parser.parse_args(["demo-group", "one"]).which == 1
    assert parser.parse_args(["demo-group", "two"]).which == 2
