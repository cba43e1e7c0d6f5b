"""Linear decode datapath generator (hw/linear/decode.py): parameter checks (one test per
rule), Verilog lint, the cycle model and baseline (hw/linear/cycles.py), the tensor
file loader and the `attnforge linear sim` argument checks. No RTL simulation here."""

import dataclasses

import numpy as np
import pytest

from attnforge.cli import main
from attnforge.hw.linear.decode import LinearDecode, LinearDecodeConfig
from attnforge.hw.verilog import write_verilog
from attnforge.linear_format import LinearDecodeFormat
from attnforge.hw.linear.cycles import (LinearDecodeCycles, crossover_context, softmax_kv_cycles,
                                         steady_cycles_per_token)
from attnforge.formats.linear_tensors import load_linear_tensors, save_linear_tensors
from attnforge.sim.lint import lint_verilog


def test_init_wrong_macs_not_dividing_d():
    with pytest.raises(ValueError, match=r"macs \(M\) must divide d=16 \(1 <= M <= d\), not 5"):
        LinearDecodeConfig(d=16, macs=5)


def test_init_wrong_macs_larger_than_d():
    with pytest.raises(ValueError, match="not 32"):
        LinearDecodeConfig(d=16, macs=32)


def test_init_wrong_macs_type():
    with pytest.raises(TypeError, match="must be an integer, not 4.0"):
        LinearDecodeConfig(macs=4.0)


def test_init_wrong_heads():
    with pytest.raises(ValueError, match=r"heads must be in \[1, 16\], not 0"):
        LinearDecodeConfig(heads=0)


def test_init_wrong_feature_map():
    with pytest.raises(ValueError, match=r"feature_map must be one of \('relu', 'relu_norm'\), not 'elu'"):
        LinearDecodeConfig(feature_map="elu")


def test_normalized_config():
    cfg = LinearDecodeConfig(d=32, macs=8, feature_map="relu_norm")
    assert cfg.normalized and cfg.columns == 33 and cfg.format.feature_map == "relu_norm"
    assert not LinearDecodeConfig(d=32, macs=8).normalized and LinearDecodeConfig(d=32, macs=8).columns == 32
    # The divider's proven widths: the scaled numerator and the quotient (see LinearDecodeFormat).
    assert cfg.format.attn_input_format == cfg.format.quotient_format
    assert LinearDecodeConfig().format.attn_input_format == LinearDecodeConfig().format.numerator_format


def test_divider_widths_hold_the_extremes():
    """|A| <= 128 den: the scaled numerator and the quotient of divide_fixed stay in their
    formats for the extreme ratios (A = -128 den and 127 den) over every reduction shift."""
    from attnforge.algo.linear.golden import divide_fixed
    from attnforge.linear_format import DIV_DEN_BITS

    fmt = LinearDecodeFormat(d=64, feature_map="relu_norm")
    dens = [1, 2, 3, 255, (1 << 15) - 1, 1 << 15, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, (1 << 17) - 1,
            (1 << 20) + 12345, (1 << (fmt.denominator_format.width - 2)) + 7]
    for den in dens:
        s = max(0, den.bit_length() - DIV_DEN_BITS)
        num = np.array([-128 * den, 127 * den, -128 * den + 1, 127 * den - 1])
        assert all(fmt.scaled_numerator_format.contains(int(x)) for x in num >> s)
        assert all(fmt.quotient_format.contains(int(x)) for x in divide_fixed(num, den))


def test_init_wrong_conv_taps():
    with pytest.raises(ValueError, match=r"conv_taps \(K\) must be in \[1, 16\], not 0"):
        LinearDecodeConfig(conv_taps=0)


def test_init_wrong_t_max():
    with pytest.raises(ValueError, match=r"t_max \(verify block size\) must be in \[1, 64\], not 65"):
        LinearDecodeConfig(t_max=65)


def test_init_wrong_max_tokens_too_large_for_widths():
    with pytest.raises(ValueError, match=r"needs a 52-bit numerator; at most 44 bits"):
        LinearDecodeConfig(d=64, macs=64, max_tokens=1 << 24)


def test_init_wrong_requant_shift():
    with pytest.raises(ValueError, match="requantizer shift"):
        LinearDecodeConfig(attn_shift=70)


def test_init_wrong_snapshots_type():
    with pytest.raises(TypeError, match="snapshots must be a bool, not 1"):
        LinearDecodeConfig(snapshots=1)


def test_init_wrong_dsp_family():
    with pytest.raises(ValueError, match=r"linear decode dsp_family must be one of 'ecp5', 'ice40', not 'xc7'"):
        LinearDecodeConfig(dsp_family="xc7")


def test_init_wrong_pipelining():
    with pytest.raises(ValueError, match=r"linear decode pipelining must be one of 'ecp5', 'ice40', not 'deep'"):
        LinearDecodeConfig(pipelining="deep")


@pytest.mark.parametrize("levels, message", [
    (dict(block_read_levels=4, block_write_levels=1), "block_read_levels - block_write_levels - 1 must be 0 or 1"),
    (dict(block_read_levels=3, block_write_levels=3), "block_read_levels - block_write_levels - 1 must be 0 or 1"),
    (dict(output_stages=7), "output_stages must be 4, 5 or 6, not 7"),
    (dict(readout_tree_chunks=(1, 4)), r"readout tree chunks at least 2, not 3, 4, 1, \(1, 4\)"),
])
def test_pipelining_refuses_levels_that_break_the_draft_block_or_the_requantizer(levels, message):
    """A read that would miss the write of its address's cycle (or see the next block's), a requantizer
    of a depth the output stage does not build, a tree stage that sums one value."""
    from attnforge.hw.linear.config import PIPELININGS

    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PIPELININGS["ecp5"], **levels)


def test_pipelining_depths():
    """The pipeline depths the cycle model takes (the stage counts of docs/linear-hw.md): ECP5 6 fetch
    (the draft block's read data registered) + 13 lanes + 6 requantizer + 1 = 26, iCE40 4 + 11 + 5 + 1 = 21; relu_norm adds NORM_EXTRA_DEPTH to each."""
    from attnforge.hw.linear.config import NORM_EXTRA_DEPTH

    assert [LinearDecodeConfig(pipelining=p).pipeline_depth for p in ("ecp5", "ice40")] == [26, 21]
    assert LinearDecodeConfig(pipelining="ice40", feature_map="relu_norm").pipeline_depth == 21 + NORM_EXTRA_DEPTH


def test_dsp_cut_follows_the_family():
    assert LinearDecodeConfig().dsp_cut == (17, 18) and LinearDecodeConfig(dsp_family="ice40").dsp_cut == (16, 16)


def test_snapshot_banks():
    assert LinearDecodeConfig(t_max=8).banks == 2
    assert LinearDecodeConfig(t_max=8, snapshots=True).banks == 9


def test_init_wrong_config_type():
    with pytest.raises(TypeError, match="needs a LinearDecodeConfig"):
        LinearDecode({"d": 16})


def test_widths_are_the_shared_formats():
    cfg = LinearDecodeConfig(d=32, macs=8, max_tokens=1000, t_max=4)
    fmt = cfg.format
    assert fmt == LinearDecodeFormat(d=32, max_tokens=1000, t_max=4, conv_taps=4)
    # State width proven for max_tokens + t_max terms of uint7 * int8.
    assert fmt.state_format.contains(-128 * 127 * 1004) and fmt.state_format.contains(127 * 127 * 1004)
    assert cfg.groups == 4


@pytest.mark.parametrize("params", [dict(d=8, macs=4, conv_taps=3, t_max=4, heads=2, snapshots=True),
                                    dict(d=16, macs=16, conv_taps=1, t_max=1),
                                    dict(d=8, macs=4, conv_taps=3, t_max=4, heads=2, feature_map="relu_norm"),
                                    dict(d=16, macs=16, conv_taps=1, t_max=1, snapshots=True,
                                         feature_map="relu_norm")])
def test_verilog_lint_clean(tmp_path, params):
    path = write_verilog(LinearDecode(LinearDecodeConfig(**params)), "linear_decode", tmp_path / "l.v")
    result = lint_verilog(path, "linear_decode")
    assert result.clean, result.messages
    text = path.read_text()
    for port in ("i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload", "overflow"):
        assert port in text


def test_state_memory_declares_its_read_write_collisions_dont_care(tmp_path):
    """The state memory (and only it) carries Yosys's ``no_rw_check``: a pass never reads a word in the
    cycle it is written, and without the attribute synth_ecp5 wraps every DP16KD in collision logic (a
    copy of the write data and a select flip-flop on every read bit; docs/linear-hw.md)."""
    import re

    cfg = LinearDecodeConfig(d=8, macs=4, conv_taps=2, t_max=4)
    text = write_verilog(LinearDecode(cfg), "linear_decode", tmp_path / "l.v").read_text()
    marked = re.findall(r"\(\* no_rw_check = 32'd1 \*\)\s*(?:\(\*[^)]*\*\)\s*)*reg \[(\d+):0\] (\w+) \[(\d+):0\]", text)
    assert marked == [(str(cfg.macs * cfg.format.state_format.width - 1), "state", str(cfg.state_depth - 1))]


def test_cycle_model_decode_and_verify():
    m = LinearDecodeCycles(d=64, macs=64, conv_taps=4, t_max=8)
    assert m.ideal_cycles_per_token == 64
    # token beat + 64-cycle pass + commit + one history shift
    assert m.cycles_per_token() == 67
    # block of 8: 8 beats + 8*64 pass + commit + 8 shifts, per 8 accepted tokens
    assert m.cycles_per_token(verify=8) == (8 + 512 + 1 + 8) / 8
    # commit(a) with 0 < a < T replays a tokens: per accepted token it costs more
    assert m.cycles_per_token(verify=8, accept=4) == (8 + 512 + 1 + 4 * 64 + 4) / 4
    # with snapshot banks commit(a) is free for every a
    snap = LinearDecodeCycles(d=64, macs=64, conv_taps=4, t_max=8, snapshots=True)
    assert snap.cycles_per_token(verify=8, accept=4) == (8 + 512 + 1 + 4) / 4
    assert snap.cycles_per_token(verify=8) == m.cycles_per_token(verify=8)
    k1 = LinearDecodeCycles(d=16, macs=4, conv_taps=1, t_max=2)
    assert k1.cycles_per_token() == 4 * 16 + 2


def test_cycle_model_normalized():
    # relu_norm walks d + 1 columns (z first) per row group: one more cycle per token and group
    m = LinearDecodeCycles(d=64, macs=64, conv_taps=4, t_max=8, feature_map="relu_norm")
    assert m.columns == 65 and m.ideal_cycles_per_token == 64
    assert m.cycles_per_token() == 68
    assert m.cycles_per_token(verify=8) == (8 + 8 * 65 + 1 + 8) / 8
    assert m.cycles_per_token(verify=8, accept=4) == (8 + 8 * 65 + 1 + 4 * 65 + 4) / 4
    g4 = LinearDecodeCycles(d=32, macs=8, conv_taps=3, t_max=8, feature_map="relu_norm")
    assert g4.cycles_per_token() == 4 * 33 + 3
    # the divider only lengthens the latency: the first output comes NORM_EXTRA_DEPTH cycles later
    from attnforge.hw.linear.decode import NORM_EXTRA_DEPTH
    relu = LinearDecodeCycles(d=64, macs=64, conv_taps=4, t_max=8)
    assert m.run([("block", 1)])[0] == relu.run([("block", 1)])[0] + 1 + NORM_EXTRA_DEPTH
    assert LinearDecodeCycles.of(LinearDecodeConfig(feature_map="relu_norm")).feature_map == "relu_norm"


def test_steady_statistic():
    outs = [10 * i for i in range(40)]
    assert steady_cycles_per_token(outs, None) == 10
    bursts = [100 * b + k for b in range(10) for k in range(4)]
    assert steady_cycles_per_token(bursts, 4) == 25


def test_baseline_grows_with_context_and_crosses_over():
    assert softmax_kv_cycles(64, 64, 64) == 2 * 32 + 24
    assert softmax_kv_cycles(1024, 64, 64) > softmax_kv_cycles(512, 64, 64)
    c = crossover_context(67, 64, 64)
    assert softmax_kv_cycles(c, 64, 64) > 67 >= softmax_kv_cycles(c - 1, 64, 64)
    # An off-chip cache read at 16 bytes/cycle overtakes much earlier.
    assert crossover_context(67, 64, 64, bytes_per_cycle=16) < c


def test_tensor_file_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    q, k, v = (rng.integers(-128, 128, size=(5, 8)) for _ in range(3))
    taps = rng.integers(-128, 128, size=(2, 8))
    path = save_linear_tensors(tmp_path / "t.npz", q=q, k=k, v=v, taps=taps, attn_scale=1e-6, conv_scale=1e-3)
    t = load_linear_tensors(path, d=8, conv_taps=2)
    assert (t["q"] == q).all() and t["attn_scale"] == 1e-6
    with pytest.raises(ValueError, match="configured for d=16"):
        load_linear_tensors(path, d=16)
    with pytest.raises(ValueError, match="conv_taps=3"):
        load_linear_tensors(path, conv_taps=3)
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.array("attnforge.linear_tensors/1"), q=q.astype(np.int16), k=k, v=v, taps=taps,
             attn_scale=1.0, conv_scale=1.0)
    with pytest.raises(ValueError, match=r"bad.npz: field 'q' must be int8"):
        load_linear_tensors(bad)
    with pytest.raises(FileNotFoundError, match="no such"):
        load_linear_tensors(tmp_path / "none.npz")
    np.savez(bad, format=np.array("x/1"))
    with pytest.raises(ValueError, match="missing field"):
        load_linear_tensors(bad)


def test_cli_linear_sim_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "o.json"
    assert main(["linear", "sim", "--tokens", "0", "--json", str(out)]) == 2
    assert "--tokens must be >= 1, not 0" in capsys.readouterr().err
    assert main(["linear", "sim", "--verify", "9", "--t-max", "8", "--json", str(out)]) == 2
    assert "--verify must be in [1, t_max=8], not 9" in capsys.readouterr().err
    assert main(["linear", "sim", "--d", "16", "--macs", "5", "--json", str(out)]) == 2
    assert "must divide d=16" in capsys.readouterr().err
    assert main(["linear", "sim", "--tensors", str(tmp_path / "missing.npz"), "--json", str(out)]) == 2
    with pytest.raises(SystemExit) as exc:   # argparse: choices are relu, relu_norm
        main(["linear", "sim", "--feature-map", "elu", "--json", str(out)])
    assert exc.value.code == 2
    assert "invalid choice: 'elu'" in capsys.readouterr().err
    assert not out.exists()


def test_benchmark_reads_the_critical_path(tmp_path):
    import json

    from attnforge.benchmarks.linear_hw import critical_path

    clk = "posedge $glbnet$clk"

    def step(kind, delay, a, b):
        return {"type": kind, "delay": delay, "from": {"cell": a}, "to": {"cell": b}}

    report = {"critical_paths": [
        # pin path of the shell: not a register-to-register path, even though it is longer
        {"from": "<async>", "to": clk, "path": [step("routing", 30.0, "rst$tr_io", "ff0")]},
        {"from": clk, "to": clk, "path": [step("clk-to-q", 0.5, "a", "a"), step("routing", 1.5, "a", "add"),
                                          step("logic", 2.0, "add", "add"), step("logic", 3.0, "add", "b"),
                                          step("setup", 0.25, "b", "b")]},
        {"from": clk, "to": clk, "path": [step("clk-to-q", 0.5, "c", "c"), step("routing", 1.0, "c", "d")]},
    ]}
    path = tmp_path / "nextpnr.json"
    path.write_text(json.dumps(report))
    cp = critical_path(path)
    assert (cp["from"]["cell"], cp["to"]["cell"], cp["clock"]) == ("a", "b", clk)
    assert (cp["delay_ns"], cp["logic_ns"], cp["routing_ns"], cp["logic_steps"]) == (7.25, 5.75, 1.5, 2)
    assert cp["stage"] == "a -> b"
    assert critical_path(tmp_path / "missing.json") is None


def test_config_defaults_are_the_formats():
    import dataclasses

    shared = {f.name for f in dataclasses.fields(LinearDecodeFormat)}
    fmt, cfg = LinearDecodeFormat(), LinearDecodeConfig()
    assert shared <= {f.name for f in dataclasses.fields(LinearDecodeConfig)}
    assert all(getattr(cfg, name) == getattr(fmt, name) for name in shared)
    assert cfg.format == fmt


def test_linear_decode_stack_has_one_instance_per_layer_and_checks_its_layers():
    """LinearDecodeStack (the co-simulation's toplevel): layer n's ports prefixed l<n>__, each layer its own
    configuration; no layers, too many or a wrong type are refused by name."""
    from amaranth.back import verilog

    from attnforge.errors import ConfigError
    from attnforge.hw.linear.stack import MAX_STACK_LAYERS, LinearDecodeStack, LinearStackConfig

    a = LinearDecodeConfig(d=4, macs=4, conv_taps=2, heads=2, t_max=1, max_tokens=16)
    b = LinearDecodeConfig(d=4, macs=2, conv_taps=1, heads=3, t_max=1, max_tokens=16, feature_map="relu_norm")
    text = verilog.convert(LinearDecodeStack(LinearStackConfig((a, b))), name="linear_stack")
    top = text[text.index("module linear_stack("):]
    top = top[:top.index("endmodule")]
    for port in ("input [{}:0] l0__i__payload".format(a.input_layout.size - 1), "output [1:0] l0__overflow",
                 "input [{}:0] l1__i__payload".format(b.input_layout.size - 1), "output [2:0] l1__overflow",
                 "output [31:0] l1__o__payload"):
        assert port in top, port
    assert top.count("linear_stack.layer0 layer0") + top.count("layer0 (") >= 1 and "layer2" not in top
    with pytest.raises(ConfigError, match="expected 1 to"):
        LinearStackConfig(())
    with pytest.raises(ConfigError, match="expected 1 to"):
        LinearStackConfig((a,) * (MAX_STACK_LAYERS + 1))
    with pytest.raises(ConfigError, match=r"layers\[1\] is dict"):
        LinearStackConfig((a, {"d": 4}))
