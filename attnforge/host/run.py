"""``board_run``: a job of an AXI-wrapped accelerator through the board's UART protocol, on a real board
(pyserial) or on the board top in simulation (cocotb + cocotbext-uart), against the golden model.

Both paths run the same driver code: ``run_packets`` and ``BoardClient``
(``hw/board/protocol.py``); only the transport differs (``SerialTransport``
here, ``CocotbUartTransport`` in ``tb/board_tb.py``).

The JSON report keeps the keys of ``attnforge vitcod sim`` / ``linear sim``
that mean the same thing here: ``bit_exact``, ``output_digest`` (SHA-256 of
every output byte in order, as there), ``config``; and adds what the board
reports over AXI4-Lite: ``status`` (busy, ``errors``), ``done_count``,
``failed_count`` and the performance ``counters`` (BUSY, STALL_IN, STALL_OUT,
MAC_ACTIVE). Over a UART the input is far slower than the accelerator, so
BUSY and STALL_IN measure the link; MAC_ACTIVE is the accelerator's own
issue cycles and is printed next to the cycle model's (``model_mac_active_cycles``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np

from attnforge.errors import ConfigError, check_int
from attnforge.formats.digest import output_digest
from attnforge.hw.board.protocol import BoardClient, run_packets
from attnforge.hw.board.top import BoardTop
from attnforge.hw.common import accelerator_regmap
from attnforge.hw.common.axi import register_params
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.axi import LinearDecodeAxi, default_axis_width
from attnforge.hw.linear.config import REGISTER_CHOICES
from attnforge.hw.linear.cycles import LinearDecodeCycles
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.axi import VitcodAxi
from attnforge.hw.vitcod.cycles import ideal_cycles, run_cycles
from attnforge.tb.board_jobs import BoardJob, linear_job, vitcod_job
from attnforge.tb.vitcod_jobs import shapes_of

__all__ = ["board_run", "vitcod_board_job", "linear_board_job", "SIM_DIVISOR", "DESIGNS"]

#: UART clock cycles per bit in simulation (a byte: 80 cycles).
SIM_DIVISOR = 8
DESIGNS = ("vitcod", "linear-decode")
TB = "attnforge.tb.board_tb"


def vitcod_board_job(cfg: VitcodConfig, heads) -> BoardJob:
    """``TbHead``s (e.g. ``flows.vitcod.mask_heads``) as a board job, with the cycle model's figures."""
    job = vitcod_job(cfg, heads)
    shapes = shapes_of(heads)
    model = run_cycles(cfg, shapes)
    job.info.update(model_cycles=model["total_cycles"], model_mac_active_cycles=model["mac_active_cycles"],
                    model_engine_issue_cycles=model["engine_issue_cycles"],
                    ideal_cycles=sum(ideal_cycles(cfg, s) for s in shapes if s.good and not s.layer))
    return job


def linear_board_job(cfg: LinearDecodeConfig, axis_width: int, *, tokens: int, seed: int,
                     tensors: str | None = None, verify: int | None = None) -> BoardJob:
    """A seeded random program of about ``tokens`` tokens (``build_program``), or the tokens of a
    ``tensors`` file (``program_from_tensors``), as a board job."""
    from attnforge.tb.linear_decode_tb import build_program, program_from_tensors

    prog = program_from_tensors(cfg, tensors, verify) if tensors else build_program(cfg, seed, tokens)
    job = linear_job(cfg, axis_width, prog)
    walk = LinearDecodeCycles.of(cfg).walk(prog.ops)
    job.info.update(model_mac_active_cycles=walk["issue"],
                    model_cycles=max(walk["outputs"][-1] + 1, walk["end"]) if walk["outputs"] else walk["end"])
    return job


def _accel(design: str, config, axis_width):
    if design == "vitcod":
        return VitcodAxi(config), accelerator_regmap("vitcod", register_params(config))
    if design == "linear-decode":
        return (LinearDecodeAxi(config, axis_width=axis_width),
                accelerator_regmap("linear-decode", register_params(config, REGISTER_CHOICES)))
    raise ConfigError(f"--design {design!r} is not accepted; accepted: {', '.join(DESIGNS)}")


def _simulate(design, config, job, accel, *, divisor, simulator, build_root, axis_width, timeout_cycles,
              read_params, extra_tests, fast_clock_ns):
    from attnforge.hw.designs import get_design
    from attnforge.sim.runner import run_cocotb

    folder = Path(build_root).resolve()
    name = f"board_{get_design(design).config_name(config)}_aw{axis_width}_div{divisor}"
    job_path = job.save(folder / name / "job.json")
    top = BoardTop(accel, divisor=divisor, timeout=timeout_cycles)
    params = {"design": design, "config": dataclasses.asdict(config), "axis_width": axis_width,
              "divisor": divisor, "job": str(job_path), "timeout_cycles": 4 * timeout_cycles,
              "read_params": read_params, "fast_clock_ns": fast_clock_ns}
    result = run_cocotb(top, top="board_top", config_name=name, test_module=TB, params=params,
                        testcase=["board_run", *extra_tests], simulator=simulator, build_root=folder)
    if not result.passed or result.report is None:
        raise RuntimeError(f"the board simulation did not finish; log: {result.log}")
    report = dict(result.report)
    report["outputs"] = [bytes.fromhex(x) for x in report["outputs"]]
    report.update(simulator=result.simulator, run_dir=str(result.run_dir), build_dir=str(result.build_dir))
    return report


def board_run(design: str, config, job: BoardJob, *, port: str | None = None, baud: int = 115200,
              sim: bool = False, simulator: str | None = None, divisor: int = SIM_DIVISOR,
              axis_width: int | None = None, build_root="build/board_sim", timeout_cycles: int = 1 << 16,
              read_params: bool = True, extra_tests=(), fast_clock_ns: float = 6) -> dict:
    """Run ``job`` on the board (``port``) or its simulation (``sim``); the report (module docstring).

    ``timeout_cycles``: the simulated bridge's time limit (a beat, a frame's next byte);
    ``read_params=False`` skips the ``param_*`` registers; ``extra_tests``: more testcases of
    ``tb/board_tb.py`` in the same simulation (the test suite's bad-frame test); ``fast_clock_ns``: the
    simulated accelerator's clock period (the UART's and bridge's is 10 ns; a board runs them apart too)."""
    if sim == (port is not None):
        raise ConfigError("give either --port DEV (a board) or --sim (the board top in simulation), not "
                          f"{'both' if sim else 'neither'}")
    if design == "linear-decode":
        axis_width = axis_width or default_axis_width(config)
    accel, regmap = _accel(design, config, axis_width)
    if sim:
        check_int("--divisor", divisor, 4, 1 << 16)
        got = _simulate(design, config, job, accel, divisor=divisor, simulator=simulator, build_root=build_root,
                        axis_width=axis_width, timeout_cycles=timeout_cycles, read_params=read_params,
                        extra_tests=tuple(extra_tests), fast_clock_ns=fast_clock_ns)
    else:
        from .serial_port import SerialTransport

        transport = SerialTransport(port, baud)
        try:
            got = asyncio.run(run_packets(BoardClient(transport), regmap, job.packets, job.output_lengths,
                                          job.completed, read_params=read_params))
        finally:
            transport.close()
    return _report(design, config, job, got, sim=sim, port=port)


def _mac_active_consistent(design, config, info: dict, mac_active: int) -> bool | None:
    """MAC_ACTIVE against the cycle model. Linear decode: equal (one datapath). ViTCoD (one tile):
    between the busier engine's issue cycles and both engines' together, the model's per-engine counts
    (MAC_ACTIVE is their union, and over a UART the output backpressure moves how they overlap, so
    the full-rate model's ``mac_active_cycles`` is exact only at full rate: tests/rtl/test_axi.py)."""
    if design != "vitcod":
        return mac_active == info.get("model_mac_active_cycles")
    per_engine = info.get("model_engine_issue_cycles")
    if per_engine is None or config.tiles != 1:
        return None
    return max(per_engine) <= mac_active <= sum(per_engine)


def _report(design, config, job: BoardJob, got: dict, *, sim: bool, port) -> dict:
    outputs = got["outputs"]
    mismatch = None
    for i, (a, b) in enumerate(zip(outputs, job.expected)):
        if a != b:
            at = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
            mismatch = {"packet": i, "byte": at}
            break
    params_ok = None if not got["params"] else all(
        got["params"].get(k) == int(v)
        for k, v in register_params(config, REGISTER_CHOICES if design != "vitcod" else None).items())
    errors = got["status"] >> 8
    counters = got["counters"]
    report = {
        "design": design, "transport": "sim" if sim else port, "config": dataclasses.asdict(config),
        "bit_exact": len(outputs) == len(job.expected) and mismatch is None,
        "first_mismatch": mismatch,
        "output_digest": output_digest([np.frombuffer(o, np.int8) for o in outputs], "int8"),
        "output_packets": len(outputs),
        "registers_match_config": params_ok,
        "status": got["status"], "errors": errors, "done_count": got["done_count"],
        "failed_count": got["failed_count"], "counters": counters,
        "cycles": counters["busy"], "mac_active_cycles": counters["mac_active"],
        **{k: job.info[k] for k in ("model_cycles", "model_mac_active_cycles", "model_engine_issue_cycles",
                                    "ideal_cycles") if k in job.info},
        "mac_active_consistent": _mac_active_consistent(design, config, job.info, counters["mac_active"]),
        "frames": got["frames"], "bridge": got["info"],
    }
    if "ideal_cycles" in job.info and counters["mac_active"]:
        report["mac_utilization"] = job.info["ideal_cycles"] / counters["mac_active"]
    for key in ("simulator", "run_dir", "build_dir"):
        if key in got:
            report[key] = got[key]
    return report
