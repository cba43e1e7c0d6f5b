"""Record Yosys + nextpnr-packer counts of ViTCoD configurations into fpga/data/vitcod_ecp5.json.

The resource model of ``attnforge explore vitcod`` (``fpga/resources.py``) fits its LUT/FF terms to
the records marked ``fit`` and is measured on those marked ``heldout``. Each configuration is
synthesized with ``attnforge.fpga.synth.synthesize(..., pack_only=True)`` (what ``attnforge synth
vitcod ... --pack-only`` runs): Yosys 5-20 minutes per configuration here, the packer seconds.

Usage: .venv/bin/python scripts/record_vitcod_resources.py CONFIGS.json [--out-root build/explore_data]
CONFIGS.json maps a name to {"split": "fit"|"heldout", "config": {VitcodConfig fields}}. Finished
configurations (a report.json in their folder) are not run again; the data file is rewritten from
every finished one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from attnforge.formats.atomic import write_json_atomic
from attnforge.fpga.resources import DATA
from attnforge.fpga.synth import synthesize, tool_versions
from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig

PACKED = ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", "TRELLIS_RAMW")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs")
    ap.add_argument("--out-root", default="build/explore_data")
    args = ap.parse_args(argv)
    todo = json.loads(Path(args.configs).read_text())
    root = Path(args.out_root)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for name, entry in todo.items():
        out = root / name
        if (out / "report.json").exists():
            continue
        t = time.time()
        cfg = VitcodConfig(**entry["config"])
        synthesize(VitcodAccelerator(cfg), top="vitcod", device="ecp5-85k", out_dir=out, pack_only=True)
        (out / "record.json").write_text(json.dumps({"name": name, "commit": commit, **entry}))
        print(f"{name}: {time.time() - t:.0f} s", flush=True)
    records = []
    for rec_path in sorted(root.glob("*/record.json")):
        rec = json.loads(rec_path.read_text())
        report = json.loads((rec_path.parent / "report.json").read_text())
        used = report["nextpnr_utilization"]
        records.append({"name": rec["name"], "split": rec["split"], "config": rec["config"], "commit": rec["commit"],
                        "packed": {k: used[k]["used"] for k in PACKED if k in used},
                        "yosys": {"luts": report["luts"], "ffs": report["ffs"], "dsp": report["dsp"],
                                  "bram": report["bram"]},
                        "yosys_seconds": report["yosys_seconds"], "shell_ffs": report["shell_ffs"]})
    write_json_atomic(DATA, {"format": "attnforge.vitcod-resources/1", "device": "ecp5-85k",
                             "tools": tool_versions("ecp5-85k"),
                             "command": "attnforge synth vitcod <config> --pack-only "
                                        "(scripts/record_vitcod_resources.py)",
                             "records": records})
    print(f"wrote {DATA}: {len(records)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
