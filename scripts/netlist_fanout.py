"""The widest nets of a Yosys ``netlist.json`` (what ``attnforge synth`` leaves in its folder): fan-out,
driver cell type, the net's shortest name, and the three most common sink pins.

A register or LUT driving hundreds of loads becomes one net across the device after placement; this
lists those candidates before place and route (the clock and the shell's ``rst`` pin come first).

    .venv/bin/python scripts/netlist_fanout.py build/synth/<config>/ecp5-85k/netlist.json --min 200
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def widest_nets(netlist: dict, minimum: int) -> list[tuple[int, str, str, dict]]:
    """(fan-out, driver type, name, {sink pin: count}) of every net with at least ``minimum`` loads,
    widest first, in the top module (the netlist is flat after synthesis)."""
    top = next(name for name, mod in netlist["modules"].items() if mod.get("attributes", {}).get("top"))
    mod = netlist["modules"][top]
    names: dict[int, str] = {}
    for name, net in mod["netnames"].items():
        for bit in net["bits"]:
            if isinstance(bit, int) and (bit not in names or len(name) < len(names[bit])):
                names[bit] = name
    driver: dict[int, str] = {}
    fanout: collections.Counter = collections.Counter()
    sinks: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for cell in mod["cells"].values():
        for port, bits in cell["connections"].items():
            output = cell["port_directions"].get(port) == "output"
            for bit in bits:
                if not isinstance(bit, int):
                    continue
                if output:
                    driver[bit] = cell["type"]
                else:
                    fanout[bit] += 1
                    sinks[bit][f"{cell['type']}.{port}"] += 1
    return [(n, driver.get(bit, "port"), names.get(bit, "?"), dict(sinks[bit].most_common(3)))
            for bit, n in fanout.most_common() if n >= minimum]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("netlist", type=Path, help="Yosys JSON netlist")
    ap.add_argument("--min", type=int, default=200, help="smallest fan-out listed [200]")
    args = ap.parse_args()
    for n, kind, name, pins in widest_nets(json.loads(args.netlist.read_text()), args.min):
        print(f"{n:7d}  {kind:12s}  {name[:80]:80s}  {pins}")


if __name__ == "__main__":
    main()
