"""``attnforge flow linear``: stage caching, invalidation, the digest cross-check, bad input, and (make
test-full) the tiny preset end to end on the RTL.

The caching tests train the real tiny model (seconds) but replace the hardware jobs (Verilog + lint, the RTL
run, Yosys) by fakes; the fake RTL run returns the integer golden model's output digest computed here from the
exported tensors, so the flow's own check (RTL digest = the export stage's golden digest) is exercised.
"""

import dataclasses
import json
import types
from pathlib import Path

import pytest

from attnforge.cli import main
from attnforge.flows.linear_flow import LINEAR_STAGE_NAMES, LINEAR_STAGES, linear_flow_options, run_linear_flow

CACHED = ("train", "export", "verilog", "synth", "sim")
FAKE = {"bit_exact": True, "flip": False}


@pytest.fixture
def fake_hw(monkeypatch):
    calls = {"verilog": 0, "sim": 0, "synth": 0}

    def generate_verilog(design, cfg, output, lint=True):
        calls["verilog"] += 1
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(f"// fake {cfg}\n")
        return Path(output), types.SimpleNamespace(clean=True, messages=[])

    def run_linear_sim(*, tokens, verify, seed, tensors, config_kw, simulator=None, build_root="build/sim"):
        import numpy as np

        from attnforge.algo.linear.golden import LinearDecodeGolden
        from attnforge.formats.digest import output_digest
        from attnforge.formats.linear_tensors import load_linear_tensors
        from attnforge.hw.linear import LinearDecodeConfig

        calls["sim"] += 1
        t = load_linear_tensors(tensors)
        cfg = LinearDecodeConfig(**config_kw, **LinearDecodeConfig(**config_kw).format.checked_requant_params(
            t["attn_scale"], t["conv_scale"]))
        out = LinearDecodeGolden(cfg.format, t["taps"]).run(t["q"], t["k"], t["v"])
        if FAKE["flip"]:
            out = out ^ np.int64(1)
        return {"bit_exact": FAKE["bit_exact"], "cycles_per_token": 20.0, "ideal_cycles_per_token": 16,
                "utilization": 0.8, "model_cycles_per_token": 20.0, "overflow": [False],
                "output_digest": output_digest([out], "int8"), "simulator": "verilator", "tokens": len(out),
                "config": dataclasses.asdict(cfg), "run_dir": str(build_root)}

    def synthesize(component, *, top, device, out_dir, pnr, **kw):
        calls["synth"] += 1
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        report = {"device": device, "luts": 1000, "ffs": 900, "dsp": 3, "bram": 4, "fmax_mhz": None,
                  "target_mhz": 150.0, "shell_ffs": 80, "yosys_seconds": 1.0, "nextpnr_seconds": 0.0}
        (Path(out_dir) / "report.json").write_text(json.dumps(report))
        return report

    monkeypatch.setattr("attnforge.flows.build.generate_verilog", generate_verilog)
    monkeypatch.setattr("attnforge.flows.linear.run_linear_sim", run_linear_sim)
    monkeypatch.setattr("attnforge.fpga.synth.synthesize", synthesize)
    monkeypatch.setitem(FAKE, "bit_exact", True)
    monkeypatch.setitem(FAKE, "flip", False)
    return calls


def _run(out, from_stage=None, **overrides):
    lines = []
    code = run_linear_flow(out, linear_flow_options("tiny", progress=False, **overrides), from_stage=from_stage,
                           log=lines.append)
    ran = [s for s in CACHED if any(l.startswith(f"[{CACHED.index(s) + 1}/6] {s}: done") for l in lines)]
    return code, ran


@pytest.mark.full      # 28 s; make test keeps the ViTCoD flow's rerun test, the same stage cache (flows/stages)
def test_rerun_caches_and_changed_options_rerun_downstream(tmp_path, fake_hw):
    out = tmp_path / "flow"
    assert _run(out) == (0, list(CACHED))
    report = (out / "report.md").read_text()
    assert "**48 of 48**" in report and "attnforge linear export" in report and "## Cycles against a KV cache" in report
    assert "held-out perplexity with every head in the datapath's integers" in report and "linear int-eval" in report
    for png in ("training.png", "head.png", "kv_cache.png"):
        assert (out / png).is_file()
    exported = json.loads((out / "export.json").read_text())
    assert len(exported["heads"]) == 2 and exported["chosen"]["rel_rms_err"] < 0.06

    assert _run(out) == (0, []) and fake_hw == {"verilog": 1, "sim": 1, "synth": 1}
    # another head: export and the hardware stages (its requantizers are generator parameters), not training
    assert _run(out, head=1) == (0, ["export", "verilog", "synth", "sim"])
    # a datapath option only: the hardware stages
    assert _run(out, head=1, t_max=4) == (0, ["verilog", "synth", "sim"])
    assert _run(out, from_stage="sim", head=1, t_max=4) == (0, ["sim"])

    # The testbench says pass but the RTL's output digest is not the export stage's golden output: exit 1.
    FAKE["flip"] = True
    assert _run(out, from_stage="sim", head=1, t_max=4) == (1, ["sim"])
    assert "digest against the export stage's golden output: DIFFERENT" in (out / "report.md").read_text()
    FAKE.update(flip=False, bit_exact=False)
    assert _run(out, from_stage="sim", head=1, t_max=4) == (1, ["sim"])


@pytest.mark.parametrize("args, message", [
    (["--from", "bogus"], "--from must be one of 'train', 'export'"),
    (["--d-model", "30", "--heads", "4"], "--d-model 30 must be a multiple of --heads 4"),
    (["--head", "2"], "--head must be"),
    (["--tokens", "65"], "--tokens must be"),
    (["--macs", "3"], "macs"),
    (["--conv-kernel", "0"], "--conv-kernel must be"),
    (["--pnr", "--no-synth"], "--pnr needs the synth stage"),
])
def test_bad_input_exits_2_before_anything_runs(tmp_path, capsys, args, message):
    out = tmp_path / "flow"
    assert main(["flow", "linear", "--preset", "tiny", "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnforge flow linear: error:") and message in err, err
    assert not out.exists()


def test_stage_names():
    assert LINEAR_STAGE_NAMES == ("train", "export", "verilog", "synth", "sim", "report")
    assert [s.name for s in LINEAR_STAGES] == list(CACHED)


@pytest.mark.full
@pytest.mark.timeout(900)
def test_tiny_preset_end_to_end_on_the_rtl(tmp_path, capsys):
    """Real training and Verilator: the head's tokens bit exact, cycles per token = the cycle model, digest =
    the golden model's from the export stage."""
    out = tmp_path / "flow"
    args = ["flow", "linear", "--preset", "tiny", "--out", str(out), "--no-progress", "--no-synth"]
    assert main(args) == 0
    sim = json.loads((out / "sim.json").read_text())
    exported = json.loads((out / "export.json").read_text())
    assert sim["bit_exact"] is True and sim["tokens"] == 48
    assert sim["output_digest"] == exported["golden_digest"]
    assert sim["cycles_per_token"] == sim["model_cycles_per_token"]
    assert "**48 of 48**" in (out / "report.md").read_text()
    assert main(args) == 0
    assert capsys.readouterr().out.count(": cached (") == len(CACHED)
