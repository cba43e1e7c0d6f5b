"""nextpnr's progress from its log (fpga/pnr_log.py) and the stop rules of ``attnforge synth``."""

import json

import pytest

from attnforge.fpga.pnr_log import PnrProgress
from attnforge.fpga.synth import synthesize
from attnforge.hw.mac_line import MacLine, MacLineConfig

# lines as nextpnr-ecp5 0.11 writes them (from the logs of docs/vitcod-hw.md's runs, shortened)
ROUTER2_LOG = """\
Info: Packing IOs..
Info: Running Static placer...
Info: iter=0 steplen=1.823187 a=1.000000 penalty=[0.00, 0.00, 0.00, 0.00]
Info: Running simulated annealing placer for refinement.
Info: SA placement time 178.60s

Info: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 45.75 MHz (FAIL at 100.00 MHz)

Info: Routing globals...
Info:     routing clock net $glbnet$clk$TRELLIS_IO_IN using global 0
Info: Running router2...
Info: Setting up routing resources...
Info: Running main router loop...
Info:     iter=1 wires=693440 overused=52984 overuse=65512 archfail=NA
Info:     iter=2 wires=709743 overused=35160 overuse=38615 archfail=NA
Info:     iter=3 wires=721074 overused=0 overuse=0 archfail=NA
Info: Router2 time 1224.50s
Info: Running router1 to check that route is legal...

Info: Routing..
Info: Setting up routing queue.
Info: Routing 0 arcs.
Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |
Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|
Info:          0 |        0          0 |    0     0 |         0|       0.17       0.17|
Info: Routing complete.
Info: Router1 time 0.17s

Info: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 37.92 MHz (FAIL at 100.00 MHz)
Info: Program finished normally.
"""

ROUTER1_LOG = """\
Info: Creating initial analytic placement for 14096 cells, random placement wirelen = 1254.
Info: Running main analytical placer, max placement attempts per cell = 194688.
Info: Max frequency for clock 'clk': 52.10 MHz (PASS at 48.00 MHz)
Info: Max frequency for clock 'fast': 61.30 MHz (PASS at 48.00 MHz)
Info: Routing globals...
Info: Routing..
Info: Setting up routing queue.
Info: Routing 154912 arcs.
Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |
Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|
Info:       1000 |       83        916 |   83   916 |    154071|       2.75       2.75|
Info:       2000 |      193       1806 |  110   890 |    153208|       0.41       3.16|
Info:     412000 |   260114     151885 |  512   488 |      2839|      12.06    4849.31|
"""


def _fed(text, **kwargs):
    progress = PnrProgress(**kwargs)
    for line in text.splitlines(keepends=True):
        progress.feed(line)
    return progress


def test_router2_log_gives_the_placement_estimate_and_each_iteration():
    p = _fed(ROUTER2_LOG)
    s = p.summary()
    # the estimate is the analysis after placement, not the routed one after it
    assert s["placement_fmax_mhz"] == {"$glbnet$clk$TRELLIS_IO_IN": 45.75} and s["placer"] == "static"
    assert (s["router"], s["router2_overused"], s["router2_fewest_overused"]) == ("router2", [52984, 35160, 0], [0, 3])
    # router2's own time, not that of the router1 legality check after it, whose rows are not router1's run
    assert (s["route_seconds"], s["routed"], s["router1_remaining"], s["router1_arcs"]) == (1224.5, True, None, None)
    assert p.phase == "done" and p.stop_reason(10 ** 6) is None
    assert p.status() == ("placement estimate 45.75 MHz; router2 iteration 3: 0 overused wires (fewest 0 at 3); "
                          "routed")


def test_router1_log_gives_arcs_left_and_time():
    p = _fed(ROUTER1_LOG)
    s = p.summary()
    assert s["placement_fmax_mhz"] == {"clk": 52.1, "fast": 61.3} and s["placer"] == "heap"
    assert (s["router"], s["router1_arcs"]) == ("router1", 154912)
    assert s["router1_remaining"] == [[2.75, 154071], [3.16, 153208], [4849.31, 2839]]
    assert (s["routed"], s["route_seconds"], s["router2_overused"]) == (False, None, None)
    assert p.status() == "placement estimate 52.10 MHz; router1: 2,839 of 154,912 arcs left after 4849 s"


def _router2(overused, **kwargs):
    p = _fed("Info: Running router2...\n", **kwargs)
    for i, n in enumerate(overused, 1):
        p.feed(f"Info:     iter={i} wires=700000 overused={n} overuse={n + 10} archfail=NA\n")
    return p


def test_patience_stops_router2_that_no_longer_improves():
    # fewest at iteration 3; iterations 4 and 5 do not improve on it: stop after the third that does not
    assert _router2([5000, 900, 477, 600, 520], patience=3).stop_reason(1.0) is None
    reason = _router2([5000, 900, 477, 600, 520, 1009], patience=3).stop_reason(1.0)
    assert reason == ("router2 did not converge: fewest overused wires 477 at iteration 3, 1,009 at iteration 6: "
                      "no new minimum for 3 iterations (the patience given: 3)")
    # a new minimum resets the count; a run that reaches 0 is never stopped
    assert _router2([5000, 900, 477, 600, 520, 470, 480], patience=3).stop_reason(1.0) is None
    assert _router2([5, 4, 0], patience=1).stop_reason(1.0) is None
    # without patience: never
    assert _router2([1, 2, 3, 4, 5, 6]).stop_reason(1.0) is None


def test_timeout_stops_any_phase():
    p = _fed("Info: Running Static placer...\n", timeout_s=60)
    assert p.stop_reason(59.9) is None
    assert p.stop_reason(61.0) == "nextpnr ran 61 s, the limit given (60 s): placing (static)"


@pytest.mark.parametrize("kwargs, message", [
    ({"patience": 0}, "route patience 0: give a whole number of router2 iterations >= 1"),
    ({"patience": 2.5}, "route patience 2.5"),
    ({"timeout_s": 0}, "nextpnr timeout 0: give a number of seconds > 0")])
def test_bad_limits_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PnrProgress(**kwargs)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_limits_are_refused_before_yosys(tmp_path):
    with pytest.raises(ValueError, match="route patience 0"):
        synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ice40-up5k", out_dir=tmp_path,
                   route_patience=0)
    assert not any(tmp_path.iterdir())


def test_the_report_holds_the_routers_progress(tmp_path):
    """A real place and route (iCE40, router1): the report's ``pnr`` is what nextpnr's log says."""
    report = synthesize(MacLine(MacLineConfig(macs=2)), top="mac_line", device="ice40-up5k", out_dir=tmp_path,
                        target_mhz=30)
    pnr = report["pnr"]
    log = (tmp_path / "nextpnr.log").read_text()
    assert pnr["router"] == "router1" and pnr["routed"] and "Info: Routing complete." in log
    assert f"Info: Router1 time {pnr['route_seconds']:.2f}s" in log
    assert pnr["router1_remaining"][-1][1] == 0 and pnr["router1_arcs"] > 0
    assert set(pnr["placement_fmax_mhz"]) == set(report["nextpnr_fmax"])
    assert json.loads((tmp_path / "report.json").read_text())["pnr"] == pnr


def test_a_timeout_stops_nextpnr_and_writes_no_report(tmp_path, capsys):
    """``attnforge synth --pnr-timeout``: nextpnr stopped at the limit, exit status 3 with the reason,
    no report; the log so far stays."""
    from attnforge.cli import EXIT_INTERNAL, main

    assert main(["synth", "mac-line", "--macs", "2", "--device", "ice40-up5k", "--pnr-timeout", "0.001",
                 "-o", str(tmp_path)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "attnforge synth mac-line: nextpnr stopped: nextpnr ran" in err and "the limit given (0.06 s)" in err
    assert f"nothing routed (log: {tmp_path / 'nextpnr.log'})" in err and "internal error" not in err
    assert not (tmp_path / "report.json").exists() and (tmp_path / "nextpnr.log").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--pnr-timeout", "0", "--pnr-timeout 0: give the minutes of place and route allowed, > 0"),
    ("--route-patience", "0", "--route-patience 0: give router2 iterations, >= 1")])
def test_cli_refuses_bad_limits_with_exit_2(tmp_path, capsys, option, value, message):
    from attnforge.cli import EXIT_BAD_INPUT, main

    assert main(["synth", "mac-line", option, value, "-o", str(tmp_path / "x")]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_follow_stops_a_process_group_writing_a_log(tmp_path):
    """``follow`` with ``FileLines`` (how a board build reads nextpnr's ``--log``): a process that writes
    router2's iterations into a file and would run for ever, with a child of its own, is stopped at the
    patience with its whole process group."""
    import os
    import subprocess
    import sys
    import time

    from attnforge.fpga.pnr_log import FileLines, follow

    log, pid_file = tmp_path / "board_top.tim", tmp_path / "child.pid"
    script = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(1.5)                     # Yosys: no log yet, no time counted
with open({str(log)!r}, "w") as f:
    f.write("Info: Running router2...\\n"); f.flush()
    for i, n in enumerate([900, 477, 600, 700, 800, 900, 1000], 1):
        f.write(f"Info:     iter={{i}} wires=1 overused={{n}} overuse={{n}} archfail=NA\\n"); f.flush()
        time.sleep(0.2)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    progress = PnrProgress(patience=3)
    t0 = time.monotonic()
    reason = follow(proc, FileLines(log, proc), progress, show=False)
    assert reason.startswith("router2 did not converge: fewest overused wires 477 at iteration 2, 800 at iteration 5")
    assert progress.overused[:5] == [900, 477, 600, 700, 800] and time.monotonic() - t0 < 30
    assert proc.poll() is not None
    child = int(pid_file.read_text())
    for _ in range(50):                 # the child of the script went with its group
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the log writer's child outlived the stop")


def test_file_lines_keeps_a_partial_line_until_it_ends(tmp_path):
    import subprocess
    import sys

    from attnforge.fpga.pnr_log import FileLines

    log = tmp_path / "x.tim"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        lines = FileLines(log, proc)
        assert lines.take(0.01) == ([], False)          # no file yet
        log.write_text("Info: one\nInfo: tw")
        assert lines.take(0.01) == (["Info: one\n"], False)
        with open(log, "a") as f:
            f.write("o\n")
        assert lines.take(0.01) == (["Info: two\n"], False)
    finally:
        proc.kill()
        proc.wait()
    assert lines.take(0.01) == ([], True)


def test_an_interrupt_while_following_stops_the_process(tmp_path):
    """Ctrl-C in ``attnforge synth`` reaches Python, not nextpnr (its own session): ``follow`` stops it."""
    import subprocess
    import sys

    from attnforge.fpga.pnr_log import follow

    class Interrupting:
        def take(self, timeout):
            raise KeyboardInterrupt

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    with pytest.raises(KeyboardInterrupt):
        follow(proc, Interrupting(), PnrProgress(), show=False)
    assert proc.poll() is not None


def test_the_progress_script_reads_a_log(tmp_path):
    """``scripts/pnr_progress.py LOG``: the status line of a run (also one still going), ``--json`` its summary;
    a file that is no nextpnr log is refused with exit status 2."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "pnr_progress.py"
    log = tmp_path / "nextpnr.log"
    log.write_text(ROUTER1_LOG)
    run = subprocess.run([sys.executable, str(script), str(log), "--json"], capture_output=True, text=True)
    status, summary = run.stdout.split("\n", 1)
    assert run.returncode == 0 and status == "placement estimate 52.10 MHz; router1: 2,839 of 154,912 arcs left after 4849 s"
    assert json.loads(summary)["router1_remaining"][-1] == [4849.31, 2839]
    log.write_text("hello\n")
    run = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True)
    assert run.returncode == 2 and "no nextpnr placement or routing in it" in run.stderr
