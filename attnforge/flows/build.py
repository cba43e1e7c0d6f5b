"""Verilog of one configuration of a block, then its Verilator lint (``attnforge verilog``, the demo)."""

from __future__ import annotations

from pathlib import Path

from attnforge.hw.verilog import write_verilog
from attnforge.sim.lint import LintResult, lint_verilog

__all__ = ["verilog_path", "generate_verilog"]


def verilog_path(design, config, output: str | Path | None = None, *, top: str | None = None) -> Path:
    """Where the Verilog goes: ``output`` (a file, or a folder when it exists or ends in ``/``), else
    ``build/verilog/<config>/<top>.v``."""
    top = top or design.top
    if not output:
        return Path("build") / "verilog" / design.config_name(config) / f"{top}.v"
    out = Path(output)
    if out.is_dir() or str(output).endswith("/"):
        out = out / f"{top}.v"
    return out


def generate_verilog(design, config, output=None, *, lint: bool = True, axi: bool = False,
                     axi_options: dict | None = None) -> tuple[Path, LintResult | None]:
    """Write the Verilog of ``config`` (``verilog_path``) and lint it (``verilator --lint-only -Wall``).

    ``axi``: the block behind its AXI4-Stream/AXI4-Lite wrapper (top ``<top>_axi``; ``axi_options``
    go to the wrapper, e.g. ``axis_width``)."""
    if axi:
        if design.axi is None:
            raise ValueError(f"design {design.name!r} has no AXI wrapper; the designs with one: vitcod, "
                             f"linear-decode")
        component, top = design.axi(config, **(axi_options or {})), design.axi_top
    else:
        if axi_options:
            raise ValueError(f"{', '.join(sorted(axi_options))}: options of the AXI wrapper; add --axi")
        component, top = design.build(config), design.top
    path = write_verilog(component, top, verilog_path(design, config, output, top=top))
    return path, (lint_verilog(path, top) if lint else None)
