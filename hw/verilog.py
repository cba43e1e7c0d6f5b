"""Verilog generation: the one place that turns an Amaranth component into a file."""

from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog

from attnforge.formats.atomic import write_text_atomic

__all__ = ["to_verilog", "write_verilog"]


def to_verilog(component, top: str) -> str:
    """Verilog text of ``component`` with top module ``top`` (ports named ``i__valid`` etc.)."""
    return verilog.convert(component, name=top, emit_src=False)


def write_verilog(component, top: str, path: str | Path) -> Path:
    """Write ``component`` as Verilog to ``path``.

    The file is rewritten only when its text changes, so that simulators that
    rebuild on timestamps (Verilator's make) skip unchanged designs. It is
    written to a temporary name first: no half-written file is ever left.
    """
    path = Path(path)
    text = to_verilog(component, top)
    if path.exists() and path.read_text() == text:
        return path
    return write_text_atomic(path, text)
