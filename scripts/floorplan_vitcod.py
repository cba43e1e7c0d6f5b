"""Experiment (issue 15): pin the ViTCoD block's DSP blocks and block RAMs to two halves of the ECP5-85k.

nextpnr's static placer packs the design into the middle of the die (its spacers fill the die to
80 %: a design using 37 % of the logic gets about half of the area), where router2 then congests.
This script gives a Yosys netlist (``attnforge synth vitcod ... --no-pnr``'s ``netlist.json``)
``BEL`` attributes that nextpnr's placers take as fixed: the Denser Engine's MAC lines, exponent
unit and the buffer copies it reads on the left half, the Sparser Engine's on the right; the rest
(scheduler, loader, output stage, softmax and the cells this script cannot attribute) stays free. Within a half,
cells in name order take the free sites nearest the half's centre, so a line's eight multipliers
sit together.

    python scripts/floorplan_vitcod.py build/x/netlist.json build/x/netlist_fp.json

The sites are the LFE5U-85F's (DSP rows Y 10/34/58, block RAM rows Y 22/46/70/82; nextpnr's names
``X<x>/Y<y>/MULT18_<k>`` and ``X<x>/Y<y>/EBR<k>``, read from a placement of every site).

Result (docs/vitcod-hw.md, "A floorplan by halves did not help"): more wirelength and more overused
wires at every router2 iteration than without it; kept to reproduce that measurement.
"""

from __future__ import annotations

import json
import re
import sys

DSP_X = [4, 5, 8, 9, 13, 14, 17, 18, 22, 23, 26, 27, 31, 32, 35, 36, 40, 41, 44, 45, 49, 50, 53, 54, 58, 59,
         62, 63, 69, 70, 73, 74, 78, 79, 82, 83, 87, 88, 91, 92, 96, 97, 100, 101, 105, 106, 109, 110, 114, 115,
         118, 119]
EBR_X = [4, 6, 8, 10, 13, 15, 17, 19, 22, 24, 26, 28, 31, 33, 35, 37, 40, 42, 44, 46, 49, 51, 53, 55, 58, 60,
         62, 64, 69, 71, 73, 75, 78, 80, 82, 84, 87, 89, 91, 93, 96, 98, 100, 102, 105, 107, 109, 111, 114, 116,
         118, 120]
DSP_Y, EBR_Y = (10, 34, 58), (22, 46, 70, 82)
SPLIT = 66          # the die's middle column, between the two halves' site columns


def _sites(names: dict[tuple[int, int], str], left: bool):
    centre = (SPLIT / 2, 46) if left else ((SPLIT + 127) / 2, 46)
    half = [(x, y) for (x, y) in names if (x < SPLIT) == left]
    return [names[s] for s in sorted(half, key=lambda s: (abs(s[0] - centre[0]) + abs(s[1] - centre[1]), s))]


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def engine_of(name: str) -> str | None:
    """``denser`` / ``sparser`` for the cells this floorplan pins (the buffers' read-port copies:
    copy 1 feeds the Denser Engine, copy 0 the Sparser, as the netlist's connections show)."""
    m = re.match(r"inner\.(denser|sparser)\.", name)
    if m:
        return m.group(1)
    m = re.match(r"inner\.[qkv]_buf\.(\d+)\.", name)
    if m:
        return {"1": "denser", "0": "sparser"}[m.group(1)]
    return None


def floorplan(netlist: dict) -> dict[str, str]:
    top = max(netlist["modules"].values(), key=lambda mod: len(mod.get("cells", {})))
    dsp = {(x, y): f"X{x}/Y{y}/MULT18_{_dsp_index(x)}" for x in DSP_X for y in DSP_Y}
    ebr = {(x, y): f"X{x}/Y{y}/EBR{_ebr_index(x)}" for x in EBR_X for y in EBR_Y}
    pinned = {}
    for kind, sites in (("MULT18X18D", dsp), ("DP16KD", ebr)):
        for engine, left in (("denser", True), ("sparser", False)):
            free = _sites(sites, left)
            cells = sorted((n for n, c in top["cells"].items() if c["type"] == kind and engine_of(n) == engine),
                           key=_natural)
            if len(cells) > len(free):
                raise SystemExit(f"{len(cells)} {kind} of the {engine} engine, {len(free)} sites in its half")
            for name, site in zip(cells, free):
                top["cells"][name].setdefault("attributes", {})["BEL"] = site
                pinned[name] = site
    return pinned


def _dsp_index(x: int) -> int:
    """The MULT18 site's index in its tile group: columns 4, 5, 8, 9 of every 9 (58/62 before the middle gap)."""
    return (0, 1, 4, 5)[DSP_X.index(x) % 4]


def _ebr_index(x: int) -> int:
    return EBR_X.index(x) % 4


if __name__ == "__main__":
    src, dst = sys.argv[1:3]
    net = json.load(open(src))
    pins = floorplan(net)
    json.dump(net, open(dst, "w"))
    print(f"pinned {len(pins)} cells")
