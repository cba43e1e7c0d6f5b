"""Where a nextpnr run stands, from its log (``nextpnr.log`` of `attnforge synth`, ``board_top.tim`` of a
board build), also while it runs: the status line `attnforge synth` shows and, with ``--json``, the
report's ``pnr`` (``attnforge.fpga.pnr_log``).

    .venv/bin/python scripts/pnr_progress.py build/synth/<config>/ecp5-85k/nextpnr.log [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnforge.fpga.pnr_log import PnrProgress


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--json", action="store_true", help="print the report's pnr summary as well")
    args = parser.parse_args(argv)
    try:
        text = args.log.read_text(errors="replace")
    except OSError as err:
        parser.error(f"{args.log}: cannot read it ({err.strerror})")
    progress = PnrProgress()
    for line in text.splitlines():
        progress.feed(line)
    if progress.phase == "packing" and progress.placer is None:
        parser.error(f"{args.log}: no nextpnr placement or routing in it (not a nextpnr log?)")
    print(progress.status())
    if args.json:
        print(json.dumps(progress.summary(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
