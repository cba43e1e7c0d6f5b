"""``attnforge linear sim``: run a token sequence on the linear decode datapath's RTL,
compare it bit for bit with the golden model, and report cycles.

    attnforge linear sim --tokens 500 [--verify T] [--seed S] [--json OUT] [--tensors FILE]

JSON keys (stable; others may be added): ``bit_exact``, ``cycles_per_token``,
``ideal_cycles_per_token``, ``utilization`` (steady state), plus the model's
prediction and the configuration.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from attnforge.cli import print_json
from attnforge.linear_format import FEATURE_MAPS

__all__ = ["register", "cmd_linear_sim", "run_linear_sim"]


def _positive(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"--{name} must be an integer, not {text!r}") from None
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, not {value}")
        return value
    return parse


def register(subparsers) -> None:
    from attnforge.cli import command_group

    g = command_group(subparsers, "linear", "Linearized LLMs: training, decoding, and the decode datapath")
    p = g.add_parser("sim", help="run tokens on the linear decode datapath RTL, bit for bit against the golden model",
                     description="Build the linear-attention decode datapath, run a seeded random program "
                                 "(decode steps, verify blocks with random commit(a), resets) of about N tokens "
                                 "and a steady-state run of N tokens (decode, or verify blocks of T all "
                                 "accepted) on the RTL, compare every output with the integer golden model, "
                                 "and write JSON with bit_exact, cycles_per_token, ideal_cycles_per_token, "
                                 "utilization. With --tensors the file's tokens are run instead.")
    p.add_argument("--tokens", type=int, default=256, help="tokens in each run [256]")
    p.add_argument("--verify", type=int, default=None, metavar="T", help="verify blocks of T draft tokens")
    p.add_argument("--seed", type=int, default=0, help="seed of the random program [0]")
    p.add_argument("--tensors", metavar="FILE", help="attnforge.linear_tensors/1 .npz to run instead of random data")
    p.add_argument("--json", metavar="OUT", help="write the JSON here instead of stdout")
    p.add_argument("--d", type=int, default=64, help="head dimension [64]")
    p.add_argument("--macs", type=int, default=64, help="state lanes M (each one update + one readout MAC) [64]")
    p.add_argument("--conv-taps", type=int, default=4, help="causal conv kernel size K [4]")
    p.add_argument("--t-max", type=int, default=8, help="largest verify block [8]")
    p.add_argument("--heads", type=int, default=1, help="time-multiplexed heads [1]")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens the widths are proven for [4096]")
    p.add_argument("--feature-map", choices=FEATURE_MAPS, default="relu",
                   help="relu (unnormalized) or relu_norm (normalizer z and divider) [relu]")
    p.add_argument("--snapshots", action="store_true",
                   help="t_max+1 state banks per head: commit(a) never replays tokens")
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--build-root", default="build/sim", help="per-configuration builds [build/sim]")
    p.set_defaults(func=cmd_linear_sim)


def run_linear_sim(*, tokens: int, verify: int | None, seed: int, tensors: str | None, config_kw: dict,
                   simulator: str = "verilator", build_root: str = "build/sim") -> dict:
    from attnforge.hw.designs import get_design
    from attnforge.hw.linear.decode import LinearDecodeConfig
    from attnforge.linear_format import LinearDecodeFormat
    from attnforge.sim.linear_cycles import LinearDecodeCycles, steady_cycles_per_token
    from attnforge.sim.linear_tensors import load_linear_tensors
    from attnforge.sim.runner import simulate

    if tokens < 1:
        raise ValueError(f"--tokens must be >= 1, not {tokens}")
    if verify is not None and not 1 <= verify <= config_kw.get("t_max", 8):
        raise ValueError(f"--verify must be in [1, t_max={config_kw.get('t_max', 8)}], not {verify}")
    if tensors:
        t = load_linear_tensors(tensors, d=config_kw.get("d"), conv_taps=config_kw.get("conv_taps"))
        requant = LinearDecodeFormat.requant_params(t["attn_scale"], t["conv_scale"])
    else:
        from attnforge.linear_format import random_data_requant
        requant = random_data_requant(config_kw["d"], config_kw["conv_taps"],
                                      feature_map=config_kw.get("feature_map", "relu"))
    config = LinearDecodeConfig(**config_kw, **requant)
    mode = [verify or 0, verify or 1]
    params = {"tokens": tokens, "rate_tokens": tokens, "rate_modes": [mode]}
    if tensors:
        params.update(tensors=str(Path(tensors).resolve()), verify=verify)
    result = simulate(get_design("linear-decode"), config, seed=seed, tb_params=params, simulator=simulator,
                      build_root=build_root)
    row = (result.report or {}).get("modes", [{}])[0]
    model = LinearDecodeCycles.of(config)
    ideal = model.ideal_cycles_per_token
    measured = row.get("steady_cycles_per_accepted")
    predicted = None
    if row.get("ops"):
        outs = model.run([tuple(op) for op in row["ops"]])
        predicted = steady_cycles_per_token(outs, verify) * (1 if not verify else verify / mode[1])
    return {
        "format": "attnforge.linear_sim/1",
        "bit_exact": result.passed,
        "cycles_per_token": measured,
        "ideal_cycles_per_token": ideal,
        "utilization": ideal / measured if measured else None,
        "model_cycles_per_token": predicted,
        "tokens": tokens if not tensors else row.get("tokens"),
        "verify": verify,
        "seed": seed,
        "tensors": tensors,
        "simulator": result.simulator,
        "tests": result.tests,
        "failed": result.failed,
        "config": dataclasses.asdict(config),
        "build_dir": str(result.build_dir),
        "run_dir": str(result.run_dir),
    }


def cmd_linear_sim(args) -> int:
    config_kw = dict(d=args.d, macs=args.macs, conv_taps=args.conv_taps, t_max=args.t_max, heads=args.heads,
                     max_tokens=args.max_tokens, snapshots=args.snapshots, feature_map=args.feature_map)
    summary = run_linear_sim(tokens=args.tokens, verify=args.verify, seed=args.seed, tensors=args.tensors,
                             config_kw=config_kw, simulator=args.simulator, build_root=args.build_root)
    print_json(summary, args.json)
    if not summary["bit_exact"]:
        print(f"FAILED: {summary['failed']} of {summary['tests']} testbench tests; "
              f"log: {Path(summary['run_dir']) / 'test.log'}", file=sys.stderr)
        return 1
    return 0
