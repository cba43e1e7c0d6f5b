"""The package as a user installs it: a regular (non-editable) wheel, without tests, that imports and runs."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_holds_no_tests_and_runs_from_a_fresh_venv(tmp_path):
    # Build from a copy: setuptools' in-tree build/ folder may hold files of an older layout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "bench", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(wheels)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("attnforge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tests = [n for n in names if Path(n).name.startswith("test_") or Path(n).name == "conftest.py"]
    assert not tests, f"test files in the wheel: {tests}"
    assert "attnforge/cli/__init__.py" in names and "attnforge/hw/vitcod/cycles.py" in names

    # A fresh venv whose only attnforge is the wheel; the toolchain (amaranth, torch, ...) comes
    # from this test's environment through a .pth line (which adds the folder but does not run
    # the editable install's own .pth there).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "toolchain.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outside = tmp_path / "elsewhere"      # a cwd outside the repository: the source tree is not on sys.path
    outside.mkdir()
    walk = ("import importlib, pkgutil, attnforge\n"
            "print(attnforge.__file__)\n"
            "for m in pkgutil.walk_packages(attnforge.__path__, 'attnforge.'):\n"
            "    if m.ispkg:\n"
            "        importlib.import_module(m.name)\n"
            "        print(m.name)\n")
    proc = subprocess.run([str(python), "-c", walk], cwd=outside, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0].startswith(str(venv)), f"attnforge imported from {lines[0]}, not the wheel"
    for package in ("attnforge.cli", "attnforge.flows", "attnforge.formats", "attnforge.hw.vitcod",
                    "attnforge.hw.linear", "attnforge.sim", "attnforge.tb", "attnforge.algo.vitcod"):
        assert package in lines

    proc = subprocess.run([str(venv / "bin" / "attnforge"), "--help"], cwd=outside, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage: attnforge" in proc.stdout
    # the data files the code opens at run time came with it
    proc = subprocess.run([str(python), "-c", "from attnforge.hw.common.dsp import MULT18X18D_MODEL as m; "
                           "print(m.is_file())"], cwd=outside, env=env, capture_output=True, text=True)
    assert proc.stdout.split() == ["True"], proc.stderr
