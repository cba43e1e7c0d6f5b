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


def test_verilog_vitcod_bad_merge_depth_names_it(tmp_path, capsys):
    out = tmp_path / "vitcod.v"
    assert main(["verilog", "vitcod", "--tiles", "2", "--merge-depth", "9", "-o", str(out)]) == 2
    assert "ViTCoD merge_depth must be in [1, 8], not 9" in capsys.readouterr().err
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


def test_synth_help_lists_only_that_designs_options():
    proc = _run("synth", "mac-line", "--help")
    assert proc.returncode == 0
    assert "--macs" in proc.stdout and "--acc-width" in proc.stdout
    assert "--feature-map" not in proc.stdout and "--head-dim" not in proc.stdout
    assert "Number of MAC units M" in proc.stdout          # help from MacLineConfig's docstring


def test_option_of_another_design_refused():
    proc = _run("verilog", "mac-line", "--head-dim", "999")
    assert proc.returncode == 2
    assert "unrecognized arguments: --head-dim 999" in proc.stderr


@pytest.mark.parametrize("command", ["verilog", "synth"])
def test_cli_defaults_are_the_dataclass_defaults(command):
    import dataclasses

    from attnforge.cli import build_parser
    from attnforge.hw.designs import DESIGNS

    parser = build_parser()
    for name, design in DESIGNS.items():
        args = parser.parse_args([command, name])
        # synth: the linear decode's product cut and pipelining come from --device
        # (test_synth_cuts_products_for_the_device)
        from_device = ({"dsp_family": None, "pipelining": None} if command == "synth" and name == "linear-decode"
                       else {})
        assert {n: getattr(args, n) for n in args.config_fields} == \
            {f.name: f.default for f in dataclasses.fields(design.config_cls)} | from_device


@pytest.mark.parametrize("device, given, family", [("ice40-up5k", None, "ice40"), ("ecp5-85k", None, "ecp5"),
                                                   ("ecp5-25k", None, "ecp5"), ("ice40-up5k", "ecp5", "ecp5")])
def test_synth_cuts_products_for_the_device(device, given, family):
    """`attnforge synth linear-decode` cuts the products for the device's DSP blocks (SB_MAC16 or
    MULT18X18D) and pipelines for its family unless --dsp-family / --pipelining say otherwise."""
    from attnforge.cli import build_parser
    from attnforge.cli.hw import _config, _device_defaults

    argv = ["synth", "linear-decode", "--d", "8", "--macs", "2", "--device", device]
    given_args = [] if given is None else ["--dsp-family", given, "--pipelining", given]
    args = build_parser().parse_args(argv + given_args)
    _device_defaults(args)
    config = _config(args)[1]
    assert (config.dsp_family, config.pipelining) == (family, family)


def test_verilog_bad_dsp_family_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verilog", "linear-decode", "--dsp-family", "xc7"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--dsp-family: invalid choice: 'xc7'" in err and "ecp5" in err and "ice40" in err


def test_one_command_per_simulation_job(capsys):
    assert main(["sim", "vitcod", "--head-dim", "16"]) == 2
    assert "attnforge vitcod sim" in capsys.readouterr().err
    assert main(["sim", "linear-decode"]) == 2
    assert "attnforge linear sim" in capsys.readouterr().err


def test_simulator_choices_and_default_from_sim_tools():
    from attnforge.cli import build_parser
    from attnforge.sim.tools import SIMULATORS

    parser = build_parser()
    for argv in (["sim", "mac-line"], ["vitcod", "sim", "--masks", "m.npz"], ["linear", "sim"]):
        assert parser.parse_args(argv).simulator is None          # the runner then reads $ATTNFORGE_SIM
        assert parser.parse_args([*argv, "--simulator", SIMULATORS[-1]]).simulator == SIMULATORS[-1]
    with pytest.raises(SystemExit):
        parser.parse_args(["sim", "mac-line", "--simulator", "xcelium"])


def test_linear_sim_defaults_are_the_config_defaults():
    from attnforge.cli import build_parser
    from attnforge.hw.linear import LinearDecodeConfig

    args = build_parser().parse_args(["linear", "sim"])
    assert (args.d, args.macs, args.t_max) == (LinearDecodeConfig.d, LinearDecodeConfig.macs, LinearDecodeConfig.t_max)


def test_docstring_params_reads_numpydoc():
    from attnforge.cli.options import docstring_params
    from attnforge.hw.linear import LinearDecodeConfig

    helps = docstring_params(LinearDecodeConfig)
    assert helps["d"].startswith("Head dimension")
    assert helps["attn_shift"] == helps["conv_multiplier"]      # one entry documents four names


def test_help_does_not_import_torch():
    """Building every command group's parser (what ``attnforge --help`` does) loads no torch: the
    choices it lists come from the light ``names`` modules, so ``--help`` answers in well under a second
    instead of ~5 s. Fails if a command module imports a torch-heavy module at its top."""
    code = ("import sys; from attnforge.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_light_name_lists_match_their_modules():
    """The names the CLI offers without importing torch are exactly the modules' own."""
    from attnforge.algo.linear.names import VARIANT_NAMES
    from attnforge.algo.linear.variants import VARIANTS
    from attnforge.algo.vitcod import polarize, vit

    assert tuple(VARIANTS) == VARIANT_NAMES
    assert polarize.POLARIZE_MODES == ("fixed", "cycles") and vit.PRESETS["digits"].num_tokens == 65
