"""Board top in simulation (issue 19, "and as a benchmark"): ``attnforge board run --sim`` at the
generator's default configurations, written to ``bench/results/board_sim.json``.

Two runs through the host driver, cocotbext-uart, the UART, the protocol bridge and the AXI-wrapped
accelerator, on Verilator (``--simulator``'s default): the linear decode block at its defaults
(``LinearDecodeConfig()``) with 16 tokens, and the ViTCoD accelerator at ``board run``'s defaults for
a masks file (d = 64, 4 + 4 lines x 8 MACs, the stream width and buffer sizes from the masks) with two
heads of 197 tokens of the real-shaped mask generator at 90 % sparsity. Each row: bit exact or not,
the output digest, the accelerator's performance counters (BUSY, STALL_IN, STALL_OUT: over a UART they
measure the link), the done/failed counts, MAC_ACTIVE against the
cycle model (``mac_active_consistent``: equal for the linear block; for ViTCoD between the busier
engine's issue cycles and both engines' together, since output backpressure over the UART moves how
the engines overlap), the wall time (build included: a fresh Verilator build of the board top is minutes).
``--quick``: the make-test sizes (d = 4 linear, d = 8 ViTCoD at 8 tokens) on Icarus, a smoke run.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from attnforge.formats.atomic import write_json_atomic

__all__ = ["run", "RUNS"]

#: name -> (quick, full): the ``attnforge board run`` arguments of each run (after ``--masks`` for ViTCoD)
RUNS = {
    "linear-decode": (["--design", "linear-decode", "--d", "4", "--macs", "2", "--conv-taps", "2", "--t-max", "2",
                       "--heads", "1", "--tokens", "16", "--divisor", "4", "--simulator", "icarus"],
                      ["--design", "linear-decode", "--tokens", "16", "--divisor", "4", "--simulator", "verilator"]),
    "vitcod": (["--design", "vitcod", "--all-heads", "--vitcod-head-dim", "8", "--vitcod-macs", "4",
                "--vitcod-dense-lines", "1", "--vitcod-sparse-lines", "1", "--divisor", "4", "--simulator", "icarus"],
               ["--design", "vitcod", "--all-heads", "--divisor", "4", "--simulator", "verilator"]),
}
#: the ViTCoD masks: (tokens, sparsity) quick / full, two heads of one layer
MASKS = {True: (8, 0.5), False: (197, 0.9)}


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench board_sim") -> Path:
    from attnforge.algo.vitcod.synthetic import polarized_mask_set, real_shaped_mask_set
    from attnforge.formats.masks import save_masks

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_root = Path("build") / "bench" / "board_sim"
    build_root.mkdir(parents=True, exist_ok=True)
    tokens, sparsity = MASKS[quick]
    masks = (polarized_mask_set(1, 2, tokens, sparsity, seed=2) if quick
             else real_shaped_mask_set(1, 2, tokens, sparsity, seed=90))
    masks_path = save_masks(masks, build_root / f"masks_{tokens}.npz")
    rows = {}
    for name, (small, full) in RUNS.items():
        args = list(small if quick else full)
        if name == "vitcod":
            args += ["--masks", str(masks_path)]
        report = build_root / f"{name}{'_quick' if quick else ''}.json"
        print(f"bench board_sim: {name} ({len(rows) + 1} of {len(RUNS)}; a fresh Verilator build of the board top "
              f"takes minutes)", file=sys.stderr, flush=True)
        start = time.monotonic()
        # the user's command itself, in its own process (the benchmarks do not import the CLI)
        rc = subprocess.run([sys.executable, "-m", "attnforge.cli", "board", "run", "--sim", "--seed", "1",
                             "--build-root", str(build_root / name), "--json", str(report), *args]).returncode
        wall = time.monotonic() - start
        r = json.loads(report.read_text()) if report.exists() else {}
        rows[name] = {
            "command": "attnforge board run --sim --seed 1 " + " ".join(args),
            "exit_status": rc, "bit_exact": r.get("bit_exact"), "output_digest": r.get("output_digest"),
            "output_packets": r.get("output_packets"), "done_count": r.get("done_count"),
            "failed_count": r.get("failed_count"), "counters": r.get("counters"),
            "mac_active_cycles": r.get("mac_active_cycles"), "model_mac_active_cycles": r.get("model_mac_active_cycles"),
            "model_engine_issue_cycles": r.get("model_engine_issue_cycles"),
            "mac_active_consistent": r.get("mac_active_consistent"),
            "registers_match_config": r.get("registers_match_config"),
            "config": r.get("config"), "wall_seconds": round(wall, 1),
        }
    result = {
        "format": "attnforge.bench/1", "benchmark": "board_sim", "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "quick": quick,
        "vitcod_masks": {"generator": "polarized_mask_set" if quick else "real_shaped_mask_set",
                         "tokens": tokens, "sparsity": sparsity, "heads": 2},
        "runs": rows,
        "all_bit_exact": all(r["bit_exact"] is True for r in rows.values()),
    }
    path = out_dir / ("board_sim_quick.json" if quick else "board_sim.json")
    write_json_atomic(path, result)
    return path
