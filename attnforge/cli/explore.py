"""``attnforge explore vitcod``: which accelerator configuration to build for a masks file and an FPGA.

Cycle model and resource model (no simulation, no synthesis); with ``--pnr N`` the N fastest
configurations of the front that fit go through Yosys and nextpnr: see
``attnforge/flows/explore.py`` and docs/explore.md.
"""

from __future__ import annotations

import sys

from . import add_cluster_option, command_group

__all__ = ["register"]


def cmd_explore_vitcod(args) -> int:
    from tqdm import tqdm

    from attnforge.flows.explore import explore_vitcod, format_pnr_table, write_outputs, format_table

    bars = {}       # one bar per kind of job, opened when its first progress comes

    def progress_bar(desc):
        def progress(done, total):
            if desc not in bars:
                for other in bars.values():
                    other.close()
                bars[desc] = tqdm(desc=desc, unit="job", file=sys.stderr, disable=not args.progress, leave=False)
            bar = bars[desc]
            bar.total = total
            bar.n = done
            bar.refresh()
        return progress

    space = {}
    if args.lines:
        space["line_splits"] = tuple(_lines(v) for v in args.lines)
    if args.macs:
        space["macs"] = tuple(args.macs)
    if args.data_width:
        space["data_widths"] = tuple(args.data_width)
    if args.no_decoder:
        space["decoder"] = (False,)
    try:
        result = explore_vitcod(args.masks, device=args.device, head_dim=args.head_dim, budget_dsp=args.budget_dsp,
                                budget_bram=args.budget_bram, workers=args.workers, cluster=args.cluster,
                                cache_dir=args.cache_dir, progress=progress_bar("cycle-model jobs"),
                                pnr=args.pnr, pnr_flow=args.pnr_flow,
                                pnr_progress=progress_bar(f"{args.pnr_flow} jobs (minutes each)"), **space)
    finally:
        for bar in bars.values():
            bar.close()
    paths = write_outputs(result, args.out)
    fits = sum(r["fits"] for r in result["rows"])
    print(f"{result['candidates']} configurations for {args.masks} ({result['layers']} layers x {result['heads']} "
          f"heads, N = {result['nq']}, d = {result['head_dim']}) on {result['device']}: {fits} fit; Pareto front "
          f"(cycles of all heads vs the largest fraction of the device one resource takes):\n")
    print(format_table(result))
    best = result["fastest_fitting"]
    if best is None:
        print(f"\nno configuration fits {result['device']} within {result['capacity']}")
    else:
        print(f"\nfastest that fits: {best['dense_lines']}+{best['sparse_lines']} lines x {best['macs']} MACs, "
              f"data width {best['data_width']}{', decoder' if best['decoder'] else ''}: {best['cycles']:,} cycles, "
              f"utilization {best['utilization']:.2f}, {best['area']:.0%} of the device ({best['binding']})")
    if result.get("pnr"):
        pnr = result["pnr"]
        failed = f", {pnr['failed']} failed" if pnr["failed"] else ""
        print(f"\n{pnr['configurations']} configuration(s) through the toolchain ({pnr['flow']}) on "
              f"{pnr['device']}{failed}:\n")
        print(format_pnr_table(result))
    print(f"wrote {paths['json']}, {paths['table']}, {paths['plot']}")
    return 0


def _lines(value: str) -> tuple[int, int]:
    from attnforge.errors import ConfigError

    try:
        dense, sparse = (int(v) for v in value.split("+"))
    except ValueError:
        raise ConfigError(f"--lines {value!r}: give dense+sparse line counts such as 2+2 or 1+3") from None
    return dense, sparse


def register(subparsers) -> None:
    from attnforge.fpga.resources import DEVICE_CAPACITY

    g = command_group(subparsers, "explore", "design-space exploration: which accelerator to build for your masks "
                                             "and FPGA (cycle model + resource model, seconds)")
    p = g.add_parser("vitcod", help="sweep ViTCoD configurations for a masks file: Pareto front of cycles vs "
                                    "resources, what fits the device",
                     description="Sweep lines per engine, MACs per line, stream width and the Q/K decoder with "
                                 "the exact cycle model and the resource model (DSP and block RAM exact, LUT/FF "
                                 "fitted to nextpnr's packed counts); print the Pareto front and write "
                                 "explore.json, pareto.md and pareto.png.")
    p.add_argument("--masks", required=True, help="masks file (attnforge.masks/1, from `attnforge vitcod masks`)")
    p.add_argument("--device", default="ecp5-85k",
                   help=f"FPGA: {', '.join(sorted(DEVICE_CAPACITY))} [ecp5-85k] (ice40-up5k is refused, naming why)")
    p.add_argument("--head-dim", type=int, default=64, help="channels per head d [64]")
    p.add_argument("--budget-dsp", type=int, help="DSP blocks you can spend [the device's]")
    p.add_argument("--budget-bram", type=int, help="block RAMs you can spend [the device's]")
    p.add_argument("--lines", nargs="+", metavar="D+S",
                   help="Denser+Sparser Engine lines to sweep [1+1 1+3 2+2 2+6 4+4 4+12 8+8]")
    p.add_argument("--macs", type=int, nargs="+", help="MACs per line to sweep [4 8 16]")
    p.add_argument("--data-width", type=int, nargs="+", help="stream widths to sweep [32 64 128 256, where valid]")
    p.add_argument("--no-decoder", action="store_true", help="leave the Q/K decoder out of the sweep")
    p.add_argument("--workers", type=int, help="processes evaluating the cycle model [the CPU count]")
    p.add_argument("--pnr", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="place and route the N fastest configurations of the front that fit the device with Yosys "
                        "+ nextpnr (jobs like the cycle model's, cached; 5-20+ minutes each) [1 when given "
                        "without N; off]")
    p.add_argument("--pnr-flow", choices=("route", "pack", "yosys"), default="route",
                   help="how far --pnr goes: route (Fmax), pack (nextpnr's packed counts, no Fmax), yosys "
                        "(Yosys's counts only) [route]")
    add_cluster_option(p)
    p.add_argument("--out", default="build/explore/vitcod", help="folder of explore.json, pareto.md, pareto.png")
    p.add_argument("--cache-dir", default="build/explore", help="cycle-model results, a file per job, by masks digest "
                                                             "[build/explore]")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_explore_vitcod)
