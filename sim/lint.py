"""Verilator lint of generated Verilog, with Amaranth's style warnings waived in one file."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from attnforge.hw.common.dsp import primitive_models

from .tools import ensure_verilator

__all__ = ["WAIVERS", "LintResult", "lint_verilog"]

#: The one lint configuration: which warnings are waived, and why.
WAIVERS = Path(__file__).with_name("amaranth_waivers.vlt")

_MESSAGE = re.compile(r"^%(Warning|Error)(-[A-Z0-9_]+)?: (.*)$")


@dataclass
class LintResult:
    path: Path
    messages: list[str]   # every remaining %Warning/%Error line
    returncode: int

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and not self.messages

    def rules(self) -> set[str]:
        """Names of the rules that fired (``LATCH``, ``UNOPTFLAT``, ...; ``Error`` for plain errors)."""
        out = set()
        for line in self.messages:
            m = _MESSAGE.match(line)
            if m:
                out.add(m.group(2)[1:] if m.group(2) else m.group(1))
        return out


def lint_verilog(path: str | Path, top: str | None = None) -> LintResult:
    """Run ``verilator --lint-only -Wall`` with the Amaranth waivers on one Verilog file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Verilog file to lint not found: {path}")
    models = [str(p) for p in primitive_models(path.read_text())]   # instantiated DSP primitives' models
    cmd = [ensure_verilator(), "--lint-only", "-Wall", str(WAIVERS), str(path), *models]
    if top:
        cmd += ["--top-module", top]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    messages = [
        line for line in (proc.stdout + proc.stderr).splitlines()
        if _MESSAGE.match(line) and "Exiting due to" not in line
    ]
    return LintResult(path, messages, proc.returncode)
