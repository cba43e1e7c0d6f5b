"""``attnforge flow vitcod``: stage caching, --from, invalidation by a changed option, bad input, and (make
test-full) the tiny preset end to end on the RTL.

The caching tests train the real tiny model (seconds) but replace the three hardware jobs (Verilog + lint,
the RTL run, Yosys) by fakes that write their files, so they need no simulator build; the end-to-end test
runs the real ones.
"""

import dataclasses
import json
import types
from pathlib import Path

import pytest

from attnforge.cli import main
from attnforge.flows import vitcod_flow
from attnforge.flows.stages import Stage, run_stages
from attnforge.flows.vitcod_flow import STAGE_NAMES, flow_options, hw_config, run_vitcod_flow

CACHED = ("train", "masks", "verilog", "synth", "finetune", "export", "sim")
#: What the fake RTL run reports (a test sets "bit_exact" False to see the flow fail).
FAKE_RTL = {"bit_exact": True}


@pytest.fixture
def fake_hw(monkeypatch):
    """Fake Verilog + lint, RTL run and synthesis: each writes its file and counts its calls."""
    calls = {"verilog": 0, "sim": 0, "synth": 0}

    def generate_verilog(design, cfg, output, lint=True):
        calls["verilog"] += 1
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"// fake {cfg}\n")
        return path, types.SimpleNamespace(clean=True, messages=[])

    def simulate_masks(masks_path, *, tensors_path, build_root, **kw):
        calls["sim"] += 1
        from attnforge.formats.masks import load_masks

        ms = load_masks(masks_path)
        opts = flow_options("tiny", **{k: kw[k] for k in ("macs", "dense_lines", "sparse_lines", "data_width")})
        heads = [{"layer": l, "head": h, "g": int(ms.n_global[l, h]), "nnz": 10, "cycles": 100, "ideal_cycles": 80,
                  "utilization": 0.8, "dense_baseline_cycles": 500, "speedup": 5.0, "model_cycles": 100}
                 for l in range(ms.layers) for h in range(ms.heads)]
        n = len(heads)
        return {"config": dataclasses.asdict(hw_config(masks_path, 16, opts)), "bit_exact": FAKE_RTL["bit_exact"],
                "cycles": 100 * n, "ideal_cycles": 80 * n, "utilization": 0.8, "dense_baseline_cycles": 500 * n,
                "speedup": 5.0, "model_cycles": 100 * n, "sparsity": ms.sparsity(), "simulator": "verilator",
                "output_digest": "0" * 64, "heads": heads, "run_dir": str(build_root)}

    def synthesize(component, *, top, device, out_dir, pnr, **kw):
        calls["synth"] += 1
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        report = {"device": device, "luts": 1000, "ffs": 900, "dsp": 3, "bram": 4, "fmax_mhz": None,
                  "target_mhz": 150.0, "shell_ffs": 80, "yosys_seconds": 1.0, "nextpnr_seconds": 0.0}
        (Path(out_dir) / "report.json").write_text(json.dumps(report))
        return report

    monkeypatch.setattr("attnforge.flows.build.generate_verilog", generate_verilog)
    monkeypatch.setattr("attnforge.flows.vitcod.simulate_masks", simulate_masks)
    monkeypatch.setattr("attnforge.fpga.synth.synthesize", synthesize)
    monkeypatch.setitem(FAKE_RTL, "bit_exact", True)
    return calls


def _run(out, log, from_stage=None, **overrides):
    lines = []
    code = run_vitcod_flow(out, flow_options("tiny", progress=False, **overrides), from_stage=from_stage,
                           log=lines.append)
    log.append(lines)
    return code, lines


def _ran(lines):
    """The stages that ran (not cached) according to the progress lines."""
    return [s for s in CACHED if any(l.startswith(f"[{CACHED.index(s) + 1}/8] {s}: done") for l in lines)]


def _mtimes(out):
    return {s: (out / "stages" / f"{s}.json").stat().st_mtime_ns for s in CACHED}


def test_rerun_skips_cached_stages_and_changed_options_rerun_downstream(tmp_path, fake_hw):
    out, log = tmp_path / "flow", []
    code, lines = _run(out, log)
    assert code == 0 and _ran(lines) == list(CACHED)
    report = (out / "report.md").read_text()
    assert "4 of 4" in report and "## Reproduce" in report and "attnforge vitcod masks" in report
    assert (out / "masks" / "l0_h3.png").is_file() and (out / "cycles.png").is_file()
    assert (out / "accuracy.png").is_file()
    first = _mtimes(out)

    # Nothing changed: every stage is cached, no marker rewritten, no hardware job called again.
    code, lines = _run(out, log)
    assert code == 0 and _ran(lines) == []
    assert all("cached" in l for l in lines if l.startswith("[") and "report" not in l)
    assert _mtimes(out) == first and fake_hw == {"verilog": 1, "sim": 1, "synth": 1}

    # An accelerator option: the model stages stay cached, the hardware stages run again.
    code, lines = _run(out, log, dense_lines=2)
    assert _ran(lines) == ["verilog", "synth", "sim"]
    assert "2 Denser + 2 Sparser" in (out / "report.md").read_text()

    # A pruning option: masks and everything downstream of them run again, training does not.
    code, lines = _run(out, log, dense_lines=2, sparsity=0.8)
    assert _ran(lines) == ["masks", "verilog", "synth", "finetune", "export", "sim"]
    assert _mtimes(out)["train"] == first["train"]

    # --from: that stage and every stage downstream of it, whatever the cache says.
    code, lines = _run(out, log, from_stage="sim", dense_lines=2, sparsity=0.8)
    assert _ran(lines) == ["sim"]
    code, lines = _run(out, log, from_stage="verilog", dense_lines=2, sparsity=0.8)
    assert _ran(lines) == ["verilog", "synth", "sim"]
    code, lines = _run(out, log, from_stage="finetune", dense_lines=2, sparsity=0.8)
    assert _ran(lines) == ["finetune", "export", "sim"]

    # A changed output file reruns the stage that writes it (and the stages that read it).
    (out / "sim.json").write_text("{}")
    code, lines = _run(out, log, dense_lines=2, sparsity=0.8)
    assert _ran(lines) == ["sim"]

    # An RTL that differs from the golden model: exit status 1, and the report says so.
    FAKE_RTL["bit_exact"] = False
    code, lines = _run(out, log, from_stage="sim", dense_lines=2, sparsity=0.8)
    assert code == 1 and "the RTL differs from the golden model" in (out / "report.md").read_text()


def test_stage_dependencies_only(tmp_path):
    """The generic runner: a stage reruns when a stage it depends on changed its output, not otherwise."""
    calls = []

    def job(name, text):
        def run(ctx):
            calls.append(name)
            (tmp_path / f"{name}.txt").write_text(text(ctx))
            return {"n": len(calls)}
        return run

    stages = [Stage("a", job("a", lambda c: c.a), ("a.txt",), (), lambda c: {"a": c.a}),
              Stage("b", job("b", lambda c: "b"), ("b.txt",), (), lambda c: {}),
              Stage("c", job("c", lambda c: "c"), ("c.txt",), ("a",), lambda c: {})]
    ctx = types.SimpleNamespace(a="1", results={})
    run_stages(tmp_path, stages, ctx, log=lambda s: None)
    assert calls == ["a", "b", "c"]
    ctx.a = "2"
    runs = run_stages(tmp_path, stages, ctx, log=lambda s: None)
    assert calls == ["a", "b", "c", "a", "c"] and runs["b"].cached and ctx.results["b"] == {"n": 2}


def test_waiting_for_a_background_stage_is_reported(tmp_path):
    """A background stage still running when the flow needs it: a line says so, again while it runs."""
    import threading

    release, lines = threading.Event(), []

    def slow(ctx):
        release.wait(10)
        (tmp_path / "s.txt").write_text("s")
        return {}

    def quick(ctx):
        (tmp_path / "q.txt").write_text("q")
        return {}

    def after(ctx):
        (tmp_path / "r.txt").write_text("r")
        return {}

    def log(line):
        lines.append(line)
        if sum("waiting for it" in x for x in lines) == 3:
            release.set()           # let the stage finish after the third notice

    stages = [Stage("s", slow, ("s.txt",), (), lambda c: {}, background=True),
              Stage("q", quick, ("q.txt",), (), lambda c: {}), Stage("r", after, ("r.txt",), ("s",), lambda c: {})]
    run_stages(tmp_path, stages, types.SimpleNamespace(results={}), log=log, background_notice_s=0.05)
    # (a loaded machine may let one more notice out before the released thread ends)
    kinds = [x.split(": ")[0] + ": " + x.split(": ")[1].split(",")[0].split(" in ")[0] for x in lines]
    assert kinds[:3] == ["[1/3] s: s (no marker)", "[2/3] q: q (no marker)", "[2/3] q: done"]
    waits = kinds[3:-3]
    assert len(waits) >= 3 and set(waits) == {"[1/3] s: waiting for it"}
    assert kinds[-3:] == ["[1/3] s: done", "[3/3] r: r (no marker)", "[3/3] r: done"]
    assert all(x.startswith("[1/3] s: waiting for it, running for ") and x.endswith(" s")
               for x in lines[3:-3])


@pytest.mark.parametrize("args, message", [
    (["--from", "bogus"], "--from must be one of 'train', 'masks', 'verilog'"),
    (["--macs", "3"], "macs (M) must be a power of two, not 3"),
    (["--macs", "32"], "head_dim=16 must be a multiple of macs=32"),
    (["--dense-lines", "0"], "dense"),
    (["--data-width", "24"], "data_width=24"),
    (["--sparsity", "1.5"], "--sparsity must be a fraction in (0, 1)"),
    (["--epochs", "-1"], "--epochs must be >= 0"),
    (["--pnr", "--no-synth"], "--pnr needs the synth stage"),
])
def test_bad_input_exits_2_before_anything_runs(tmp_path, capsys, args, message):
    out = tmp_path / "flow"
    assert main(["flow", "vitcod", "--preset", "tiny", "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnforge flow vitcod: error:") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_out_is_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["flow", "vitcod", "--preset", "tiny", "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_stage_names_are_the_documented_ones():
    assert STAGE_NAMES == ("train", "masks", "verilog", "synth", "finetune", "export", "sim", "report")
    assert [s.name for s in vitcod_flow.STAGES] == list(CACHED)


@pytest.mark.full
@pytest.mark.timeout(900)
def test_tiny_preset_end_to_end_on_the_rtl(tmp_path, capsys):
    """Real training and Verilator (about 2 min on 2 cores: the Verilator build; so in make test-full):
    every head bit exact, cycles = cycle model, a readable report. Synthesis is left out (Yosys on the
    accelerator takes minutes more; ``synthesize(pnr=False)`` is tested on the MAC line in test_synth.py)."""
    out = tmp_path / "flow"
    args = ["flow", "vitcod", "--preset", "tiny", "--out", str(out), "--no-progress", "--no-synth"]
    assert main(args) == 0
    sim = json.loads((out / "sim.json").read_text())
    assert sim["bit_exact"] is True and len(sim["heads"]) == 4
    assert all(h["cycles"] == h["model_cycles"] for h in sim["heads"])
    report = (out / "report.md").read_text()
    assert "**4 of 4**" in report and "cycle model" in report and "OMP_NUM_THREADS=1 attnforge vitcod train" in report
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    # A rerun with nothing changed skips every stage.
    assert main(args) == 0
    assert capsys.readouterr().out.count(": cached (") == len(CACHED)


def test_help_names_the_stages_and_presets(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["flow", "vitcod", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "train, masks, verilog, synth, finetune, export, sim, report" in " ".join(out.split())
    assert "small" in out and "full" in out and "--pnr" in out
