"""The exit-status contract of ``attnforge`` (``attnforge/cli/__init__.py``): 0 done, 1 RTL differs,
2 bad input or configuration (one line naming it), 3 tool or internal failure.

Every bad value here must be refused before any simulation starts: the simulators are replaced by
functions that fail the test if they are reached, so these tests build nothing.
"""

import json
import subprocess
import sys

import pytest

from attnforge.cli import EXIT_BAD_INPUT, EXIT_INTERNAL, main


@pytest.fixture
def no_simulation(monkeypatch):
    """Any RTL build or run fails the test."""
    import attnforge.flows.linear
    import attnforge.flows.vitcod
    import attnforge.sim.runner

    def boom(*a, **k):
        raise AssertionError("a simulation started")

    monkeypatch.setattr(attnforge.flows.vitcod, "run_cocotb", boom)
    monkeypatch.setattr(attnforge.flows.linear, "simulate", boom)
    monkeypatch.setattr(attnforge.sim.runner, "simulate", boom)
    monkeypatch.setattr(attnforge.sim.runner, "run_cocotb", boom)


@pytest.fixture
def masks_file(tmp_path):
    from attnforge.algo.vitcod.synthetic import polarized_mask_set
    from attnforge.formats.masks import save_masks

    return str(save_masks(polarized_mask_set(1, 1, 8, 0.5, seed=0), tmp_path / "masks.npz"))


def _bad(argv, capsys, *words, code=EXIT_BAD_INPUT):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err                     # one line
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.mark.parametrize("option,name", [("--d", "d (head dim)"), ("--conv-taps", "conv_taps")])
def test_linear_sim_zero_sizes_name_the_option(option, name, capsys, no_simulation):
    _bad(["linear", "sim", option, "0"], capsys, name, "not 0")


@pytest.mark.parametrize("argv", [["linear", "sim"], ["vitcod", "sim", "--masks", "MASKS"], ["sim", "mac-line"]])
def test_negative_seed_refused(argv, capsys, no_simulation, masks_file):
    argv = [masks_file if a == "MASKS" else a for a in argv]
    _bad([*argv, "--seed", "-1"], capsys, "--seed must be >= 0, not -1")


@pytest.mark.parametrize("option,name", [("--head-dim", "head_dim"), ("--data-width", "data_width")])
def test_vitcod_sim_zero_is_not_a_default(option, name, capsys, no_simulation, masks_file):
    _bad(["vitcod", "sim", "--masks", masks_file, option, "0"], capsys, name)


@pytest.mark.parametrize("argv", [["linear", "sim"], ["vitcod", "sim", "--masks", "MASKS"], ["sim", "mac-line"]])
def test_json_into_a_folder_refused_before_the_run(argv, tmp_path, capsys, no_simulation, masks_file):
    argv = [masks_file if a == "MASKS" else a for a in argv]
    _bad([*argv, "--json", str(tmp_path)], capsys, f"--json {tmp_path} is a folder")


def test_json_under_a_file_refused(tmp_path, capsys, no_simulation):
    (tmp_path / "f").write_text("")
    _bad(["linear", "sim", "--json", str(tmp_path / "f" / "out.json")], capsys, str(tmp_path / "f"))


def test_stale_json_removed_when_the_run_fails(tmp_path, capsys, no_simulation):
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"bit_exact": True}))
    _bad(["linear", "sim", "--d", "0", "--json", str(out)], capsys, "d (head dim)")
    assert not out.exists()


def test_internal_error_is_3_with_the_type(monkeypatch, capsys):
    import attnforge.flows.linear

    def crash(**kw):
        raise KeyError("oops")

    monkeypatch.setattr(attnforge.flows.linear, "run_linear_sim", crash)
    err = _bad(["linear", "sim"], capsys, "internal error", "KeyError", code=EXIT_INTERNAL)
    assert "Traceback" not in err
    assert main(["linear", "sim", "--traceback"]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("ATTNFORGE_TRACEBACK", "1")
    assert main(["linear", "sim"]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_tool_failure_is_3(monkeypatch, capsys):
    import attnforge.flows.linear

    def no_tool(**kw):
        raise RuntimeError("Verilator is not installed")

    monkeypatch.setattr(attnforge.flows.linear, "run_linear_sim", no_tool)
    _bad(["linear", "sim"], capsys, "internal error", "RuntimeError", "Verilator is not installed",
         code=EXIT_INTERNAL)


def test_argparse_error_is_2():
    proc = subprocess.run([sys.executable, "-m", "attnforge.cli", "linear", "sim", "--d", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "--d" in proc.stderr


def test_folder_given_as_a_file_is_2(tmp_path, capsys):
    _bad(["linear", "eval", str(tmp_path)], capsys, str(tmp_path))
