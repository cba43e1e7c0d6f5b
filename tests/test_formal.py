"""Formal proofs (SymbiYosys, tb/formal.py's harnesses, sim/formal.py's runner).

``prove`` is k-induction: PASS holds for every cycle, unboundedly. The quick
proofs (small configurations) run in ``make test``; larger configurations and
deeper bounded checks are marked ``full``. A mutant with a broken handshake
must FAIL with a counterexample trace.
"""

from pathlib import Path

import pytest

from attnforge.hw.common.requant import RequantLine, RequantLineConfig
from attnforge.hw.common.stream import SkidBuffer
from attnforge.hw.mac_line import MacLineConfig
from attnforge.hw.vitcod.config import VitcodConfig
from attnforge.sim.formal import FormalToolError, prove, tool_paths
from attnforge.tb.formal import (MacLineHarness, OutputStageHarness, RequantLineHarness, SkidBufferHarness,
                                 harness, probe)
from attnforge.tb.mutants import DropValidWhileStalled, FlipOutputBit, GlitchWhileStalled

# (harness, k-induction depth, bmc depth of the completion check): each bmc depth
# covers at least one whole input plus the block's latency (the MAC line: a vector of
# max_length = 4 beats, then 2 cycles).
QUICK = [("skid_buffer", 3, 8), ("requant_line", 3, 8), ("mac_line", 4, 10), ("output_stage", 4, 12)]


def _check(result):
    assert result.passed, result.summary() + "\n" + Path(result.log).read_text()[-4000:]


def test_tools_installed():
    paths = tool_paths()   # raises FormalToolError naming what is missing: never a skip
    assert {"sby", "yosys", "yosys-smtbmc", "boolector"} <= set(paths)


@pytest.mark.parametrize("name,k,_", QUICK, ids=[q[0] for q in QUICK])
def test_stream_rules_and_accounting_proven(tmp_path, name, k, _):
    """Stream rules on every port and "no output without an input", by k-induction."""
    _check(prove(harness(name), name=name, mode="prove", depth=k, workdir=tmp_path))


@pytest.mark.parametrize("name,_,depth", QUICK, ids=[q[0] for q in QUICK])
def test_completion_bounded(tmp_path, name, _, depth):
    """With ready high, every item held leaves within the block's latency (bounded)."""
    _check(prove(harness(name, mode="completion"), name=name, mode="bmc", depth=depth, workdir=tmp_path))


@pytest.mark.parametrize("name", ["mac_line", "output_stage"])
def test_covers_reached(tmp_path, name):
    """The assumptions leave the behaviour under proof possible: an output transfer, a full block."""
    _check(prove(harness(name), name=name, mode="cover", depth=12, workdir=tmp_path))


def test_mutant_dropping_valid_fails(tmp_path):
    """A broken handshake (valid dropped while stalled) is caught, with a counterexample trace."""
    mutant = DropValidWhileStalled(RequantLine(RequantLineConfig(lanes=1, in_width=8, multiplier_width=4,
                                                                 out_width=4)))
    result = prove(RequantLineHarness(dut=mutant), name="mutant", mode="prove", depth=3, workdir=tmp_path)
    assert result.status == "FAIL", result.summary()
    assert result.trace is not None and result.trace.exists()
    assert any("valid held until ready" in text for text in result.failed), result.failed


@pytest.mark.parametrize("mutant,message", [
    (lambda: DropValidWhileStalled(SkidBuffer(4)), "o: valid held until ready"),
    (lambda: GlitchWhileStalled(SkidBuffer(4), payload=("o", "payload"), valid=("o", "valid"), ready=("o", "ready")),
     "o: payload stable while stalled"),
    (lambda: FlipOutputBit(SkidBuffer(4), path=("o", "valid")), "skid: no output beat without an input"),
], ids=["drop_valid", "glitch_payload", "valid_from_nothing"])
def test_skid_buffer_mutants_fail(tmp_path, mutant, message):
    """Each rule has a mutant that breaks it alone (bounded check from reset: a real trace)."""
    result = prove(SkidBufferHarness(dut=mutant()), name="mutant_skid", mode="bmc", depth=6, workdir=tmp_path)
    assert result.status == "FAIL", result.summary()
    assert result.trace is not None and result.trace.exists()
    assert f"assert: {message}" in result.failed, result.failed


def test_probe_names_what_there_is():
    from amaranth.hdl import Fragment
    from attnforge.hw.mac_line import MacLine
    frag = Fragment.get(MacLine(MacLineConfig(macs=1, operand_width=2, max_length=4)), None)
    assert probe(frag, "p_valid").name == "p_valid"
    with pytest.raises(KeyError, match="p_last"):
        probe(frag, "nonexistent")


def test_bad_mode_refused(tmp_path):
    with pytest.raises(ValueError, match="prove, bmc, cover"):
        prove(harness("skid_buffer"), name="x", mode="induct", workdir=tmp_path)
    with pytest.raises(ValueError, match="safety, completion"):
        harness("skid_buffer", mode="liveness")


def test_missing_tool_is_an_error(monkeypatch, tmp_path):
    import attnforge.sim.formal as formal
    monkeypatch.setitem(formal._TOOLS, "boolector", "no-such-solver-xyz")
    with pytest.raises(FormalToolError, match="no-such-solver-xyz"):
        prove(harness("skid_buffer"), name="x", workdir=tmp_path)


# --- make test-full: larger configurations, deeper induction and bounds ---------------------------

FULL = [
    ("mac_line", lambda mode: MacLineHarness(MacLineConfig(macs=2, operand_width=4, max_length=8), mode), 6, 16),
    ("requant_line", lambda mode: RequantLineHarness(
        RequantLineConfig(lanes=2, in_width=16, multiplier_width=8, out_width=8), mode), 4, 12),
    ("skid_buffer", lambda mode: SkidBufferHarness(16, mode), 4, 16),
    ("output_stage", lambda mode: OutputStageHarness(VitcodConfig(
        head_dim=8, max_tokens=8, max_nnz=8, macs=1, dense_lines=1, sparse_lines=1, data_width=16), mode), 6, 20),
]


@pytest.mark.full
@pytest.mark.parametrize("name,make,k,depth", FULL, ids=[f[0] for f in FULL])
def test_larger_configurations(tmp_path, name, make, k, depth):
    _check(prove(make("safety"), name=name, mode="prove", depth=k, workdir=tmp_path))
    _check(prove(make("completion"), name=name, mode="bmc", depth=depth, workdir=tmp_path))
