"""The longest register-to-register paths of a Yosys ECP5 ``netlist.json``, before place and route
(``attnforge.fpga.paths``; ``attnforge synth`` puts the ten worst in its report as ``estimated_paths``).

    .venv/bin/python scripts/netlist_paths.py build/synth/<config>/ecp5-85k/netlist.json --top 40 [-v]

Each line: estimated ns, logic levels, from signal -> to signal (the registers or memories at both
ends, named as the report names nextpnr's critical path), the end pin and the number of endpoints
of that stage; ``-v`` adds the cell types along the worst one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnforge.fpga.paths import estimate_paths
from attnforge.fpga.synth import signal_of


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netlist", type=Path)
    parser.add_argument("--top", type=int, default=30, help="stages to list [30]")
    parser.add_argument("--budget", type=float, default=10.0, help="count endpoints over this many ns [10]")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the cell types of each path")
    args = parser.parse_args(argv)
    try:
        netlist = json.loads(args.netlist.read_text())
        cells = next(mod for mod in netlist["modules"].values() if mod.get("attributes", {}).get("top"))["cells"]
    except (OSError, ValueError, KeyError, StopIteration, AttributeError) as err:
        parser.error(f"{args.netlist}: not a readable Yosys netlist.json with a top module ({err!r})")
    if not any(cell["type"] == "TRELLIS_FF" for cell in cells.values()):
        parser.error(f"{args.netlist}: no ECP5 flip-flop (TRELLIS_FF) in it; the model is ECP5's "
                     "(run attnforge synth with an ecp5-* --device)")
    found = estimate_paths(netlist, top=args.top, budget_ns=args.budget, signal_of=signal_of)
    print(f"{found['endpoints']} endpoints, {found['over_budget']} over {args.budget} ns ({found['model']})")
    for st in found["stages"]:
        print(f"{st['ns']:6.2f} ns {st['levels']:3d} lv  {st['stage']} ({st['pin']}; {st['endpoints']} endpoints)")
        if args.verbose:
            print("            " + " > ".join(st["cells"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
