"""Verilog of one configuration of a block, then its Verilator lint (``attnforge verilog``, the demo)."""

from __future__ import annotations

from pathlib import Path

from attnforge.hw.verilog import write_verilog
from attnforge.sim.lint import LintResult, lint_verilog

__all__ = ["verilog_path", "generate_verilog"]


def verilog_path(design, config, output: str | Path | None = None) -> Path:
    """Where the Verilog goes: ``output`` (a file, or a folder when it exists or ends in ``/``), else
    ``build/verilog/<config>/<top>.v``."""
    if not output:
        return Path("build") / "verilog" / design.config_name(config) / f"{design.top}.v"
    out = Path(output)
    if out.is_dir() or str(output).endswith("/"):
        out = out / f"{design.top}.v"
    return out


def generate_verilog(design, config, output=None, *, lint: bool = True) -> tuple[Path, LintResult | None]:
    """Write the Verilog of ``config`` (``verilog_path``) and lint it (``verilator --lint-only -Wall``)."""
    path = write_verilog(design.build(config), design.top, verilog_path(design, config, output))
    return path, (lint_verilog(path, design.top) if lint else None)
