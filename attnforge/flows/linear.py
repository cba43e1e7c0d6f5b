"""Tokens through the linear decode datapath's RTL, bit for bit against the golden model, with cycles.

``run_linear_sim`` is the job behind ``attnforge linear sim``. Its JSON keys
(stable; others may be added): ``bit_exact``, ``cycles_per_token``,
``ideal_cycles_per_token``, ``utilization`` (steady state), ``overflow``,
``output_digest`` (``attnforge.formats.digest``: SHA-256 of the RTL's int8 output
tokens of the steady-state run, in order), plus the cycle model's prediction (``hw/linear/cycles.py``) and the configuration.

``overflow`` is one bool per head: whether the head's sticky overflow flag was
up during the run (more than ``max_tokens`` committed since a reset: the state
wrapped, so outputs from then on are exact copies of the golden model's
wrapped arithmetic, not the attention the widths were proven for). The
testbench compares the RTL's flags with the golden model's after every input
beat; a mismatch fails the run. ``None`` when the testbench reported nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from attnforge.errors import ArtifactError, ConfigError, check_int
from attnforge.formats.linear_tensors import load_linear_tensors
from attnforge.hw.designs import get_design
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.cycles import LinearDecodeCycles, steady_cycles_per_token
from attnforge.linear_format import random_data_requant
from attnforge.sim.runner import simulate

__all__ = ["run_linear_sim"]


def run_linear_sim(*, tokens: int, verify: int | None, seed: int, tensors: str | None, config_kw: dict,
                   simulator: str | None = None, build_root: str = "build/sim") -> dict:
    """Run the datapath of ``LinearDecodeConfig(**config_kw)`` (requantizers from the data) on the RTL."""
    check_int("--tokens", tokens, 1)
    check_int("--seed", seed, 0)
    # The configuration checks its own fields (d, conv_taps, ...) before the requantizers are worked out
    # from them, so a bad value is refused by name, before anything is built or run.
    kw = dataclasses.asdict(LinearDecodeConfig(**config_kw))
    if verify is not None and not 1 <= verify <= kw["t_max"]:
        raise ValueError(f"--verify must be in [1, t_max={kw['t_max']}], not {verify}")
    if tensors:
        t = load_linear_tensors(tensors, d=kw["d"], conv_taps=kw["conv_taps"])
        try:  # the scales against this configuration's accumulator ranges
            requant = LinearDecodeConfig(**config_kw).format.checked_requant_params(t["attn_scale"], t["conv_scale"])
        except ConfigError as exc:
            raise ArtifactError(f"{tensors}: {exc}") from None
    else:
        requant = random_data_requant(kw["d"], kw["conv_taps"], feature_map=kw["feature_map"])
    config = LinearDecodeConfig(**config_kw, **requant)
    mode = [verify or 0, verify or 1]
    params = {"tokens": tokens, "rate_tokens": tokens, "rate_modes": [mode]}
    if tensors:
        params.update(tensors=str(Path(tensors).resolve()), verify=verify)
    result = simulate(get_design("linear-decode"), config, seed=seed, tb_params=params, simulator=simulator,
                      build_root=build_root)
    report = result.report or {}
    row = report.get("modes", [{}])[0]
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
        "output_digest": (result.report or {}).get("output_digest"),
        "cycles_per_token": measured,
        "ideal_cycles_per_token": ideal,
        "utilization": ideal / measured if measured else None,
        "overflow": report.get("overflow"),
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
