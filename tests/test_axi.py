"""The AXI wrappers without RTL simulation: parameter checks, port names, the register parameters
shared with ``attnforge regs``, the input framing and the output register in amaranth.sim, and the CLI's
``--axi`` options. (The wrappers in cocotb with cocotbext-axi: tests/rtl/test_axi.py.)"""

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from attnforge.cli import main
from attnforge.errors import ConfigError
from attnforge.hw.common.axi import AxisCommandInput, AxisOutput, check_axis_width, register_params
from attnforge.hw.linear import LinearDecodeConfig
from attnforge.hw.linear.axi import LinearDecodeAxi, default_axis_width
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.axi import VitcodAxi
from attnforge.linear_format import FEATURE_MAPS

PORTS = {"aclk", "aresetn",
         *(f"s_axis_{p}" for p in ("tdata", "tkeep", "tvalid", "tready", "tlast")),
         *(f"m_axis_{p}" for p in ("tdata", "tkeep", "tvalid", "tready", "tlast")),
         *(f"s_axil_{p}" for p in ("awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp",
                                   "bvalid", "bready", "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid",
                                   "rready"))}


def test_init_wrong_config():
    with pytest.raises(TypeError, match="VitcodAxi needs a VitcodConfig"):
        VitcodAxi(LinearDecodeConfig())
    with pytest.raises(TypeError, match="LinearDecodeAxi needs a LinearDecodeConfig"):
        LinearDecodeAxi(VitcodConfig())


@pytest.mark.parametrize("width", [0, 4, 12, 8192, True, 64.0])
def test_init_wrong_axis_width(width):
    with pytest.raises(ConfigError, match=r"axis_width = .* is not accepted; accepted: a multiple of 8"):
        LinearDecodeAxi(LinearDecodeConfig(d=8, macs=4), axis_width=width)


def test_check_axis_width_takes_whole_bytes():
    assert check_axis_width("w", 24) == 24


def test_wrapper_ports_are_the_standard_names():
    vit = VitcodAxi(VitcodConfig(head_dim=16, max_tokens=16, max_nnz=256, data_width=64))
    lin = LinearDecodeAxi(LinearDecodeConfig(d=8, macs=4), axis_width=64)
    for dut in (vit, lin):
        assert set(dut.signature.members) == PORTS
    assert vit.signature.members["s_axis_tdata"].shape == 64
    assert vit.signature.members["s_axis_tkeep"].shape == 8
    assert lin.signature.members["m_axis_tdata"].shape == 64 and lin.cmd_beats == -(-lin.config.input_layout.size // 64)
    assert vit.cmd_beats == -(-vit.config.cmd_layout.size // 64)
    # the default linear width: one beat per command, a power of two
    cfg = LinearDecodeConfig(d=8, macs=4)
    w = default_axis_width(cfg)
    assert w >= cfg.input_layout.size > w // 2 and LinearDecodeAxi(cfg).cmd_beats == 1


def test_register_parameters_are_the_ones_attnforge_regs_writes():
    from attnforge.cli.hw import _register_params

    cfg = LinearDecodeConfig(d=8, macs=4, feature_map="relu_norm", pipelining="ice40")
    params = register_params(cfg, {"feature_map": FEATURE_MAPS, "pipelining": ("ecp5", "ice40")})
    assert params == _register_params(cfg) and params["feature_map"] == FEATURE_MAPS.index("relu_norm")
    assert params["pipelining"] == 1 and "dsp_family" not in params     # the cycles differ; the results do not
    regmap = LinearDecodeAxi(cfg).regmap
    assert {r.name[6:]: r.reset for r in regmap if r.name.startswith("param_") and r.name != "param_count"} == \
        {k: int(v) for k, v in params.items()}


def test_dsp_family_is_not_a_register():
    """The product cut (``dsp_family``) changes the Verilog, not what it computes: a bitstream built for the
    iCE40 reads back the same PARAM_* registers as the host's default configuration (ECP5's cut)."""
    ice40 = LinearDecodeConfig(d=8, macs=4, dsp_family="ice40")
    params = register_params(ice40, {"feature_map": FEATURE_MAPS})
    assert "dsp_family" not in params and params == register_params(LinearDecodeConfig(d=8, macs=4),
                                                                   {"feature_map": FEATURE_MAPS})
    assert not any("dsp" in r.name for r in LinearDecodeAxi(ice40).regmap)


def _command_input_bench(dut, beats, *, ready_pattern, valid_pattern=(1,)):
    """Drive ``beats`` ((data, keep)) into ``dut``; collect commands and data beats. Where
    ``valid_pattern`` is 0, ``tvalid`` is low and ``tdata`` is garbage (``~`` of the next beat)."""
    got = {"cmd": [], "data": [], "keep_error": [], "last_error": [], "partial": []}

    async def bench(ctx):
        ctx.set(dut.enable, 1)
        n, cycle = 0, 0
        while n < len(beats) or cycle < 3:
            ready = ready_pattern[cycle % len(ready_pattern)]
            ctx.set(dut.cmd.ready, ready)
            ctx.set(dut.data.ready, ready)
            if n < len(beats) and not valid_pattern[cycle % len(valid_pattern)]:
                ctx.set(dut.tdata, ~beats[n][0] & ((1 << len(dut.tdata)) - 1))
                ctx.set(dut.tvalid, 0)
            elif n < len(beats):
                ctx.set(dut.tdata, beats[n][0])
                ctx.set(dut.tkeep, beats[n][1])
                ctx.set(dut.tlast, beats[n][2] if len(beats[n]) > 2 else 0)
                ctx.set(dut.tvalid, 1)
            else:
                ctx.set(dut.tvalid, 0)
            got["partial"].append(ctx.get(dut.partial))
            if ctx.get(dut.cmd.valid) and ctx.get(dut.cmd.ready):
                got["cmd"].append(ctx.get(dut.cmd.payload))
            if ctx.get(dut.data.valid) and ctx.get(dut.data.ready):
                got["data"].append(ctx.get(dut.data.payload))
            if ctx.get(dut.tvalid) and ctx.get(dut.tready):
                n += 1
            await ctx.tick()
            got["keep_error"].append(ctx.get(dut.keep_error))
            got["last_error"].append(ctx.get(dut.last_error))
            cycle += 1
        ctx.set(dut.tvalid, 0)
        got["partial"].append(ctx.get(dut.partial))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("valid_pattern", [(1,), (1, 0, 0, 1, 1, 0, 1)])
def test_axis_command_input_assembles_commands_and_frames_their_data(valid_pattern):
    """A 20-bit command over 8-bit beats (3 beats), then ``n`` data beats; backpressure; a tkeep bit
    low; idle cycles with other tdata between beats (a command beat's register follows tdata until
    its beat is taken)."""
    layout = data.StructLayout({"n": 4, "tag": 16})
    dut = AxisCommandInput(8, layout, data_beats=lambda p: p.n, count_width=4)
    assert dut.cmd_beats == 3

    def command(n, tag):
        word = n | tag << 4
        return [(word >> (8 * j) & 0xFF, 1) for j in range(3)]

    # tlast where packets may end: after a command's data, after a command without data
    beats = command(2, 0xBEEF) + [(0x11, 1), (0x22, 1, 1)] + command(0, 0x1234)
    beats[-1] += (1,)
    beats += command(1, 0x0F0F) + [(0x33, 0)]
    got = _command_input_bench(dut, beats, ready_pattern=[1, 0, 1, 1, 0], valid_pattern=valid_pattern)
    assert not any(got["last_error"])
    assert [(c.n, c.tag) for c in got["cmd"]] == [(2, 0xBEEF), (0, 0x1234), (1, 0x0F0F)]
    assert got["data"] == [0x11, 0x22, 0x33]          # the beat with tkeep low is used as it is
    assert got["keep_error"][-1] == 1 and not any(got["keep_error"][:10])
    assert any(got["partial"]) and got["partial"][-1] == 0


@pytest.mark.parametrize("at", [0, 2, 3])     # a command beat, the command's last beat, a data beat
def test_axis_command_input_flags_a_packet_that_ends_inside_a_command(at):
    layout = data.StructLayout({"n": 4, "tag": 16})
    dut = AxisCommandInput(8, layout, data_beats=lambda p: p.n, count_width=4)
    beats = [(2, 1), (0, 1), (0, 1), (0x11, 1), (0x22, 1)]       # n = 2: three command beats, two data beats
    beats[at] += (1,)
    got = _command_input_bench(dut, beats, ready_pattern=[1])
    assert got["last_error"][-1] == 1 and got["data"] == [0x11, 0x22]


@pytest.mark.parametrize("stream", ["cmd", "data"])
def test_axis_command_input_keeps_an_offer_when_enable_falls(stream):
    """ENABLE cleared (the host writes it at any time) while a beat waits on ``cmd`` (``data``): the beat
    stays offered until taken, with its AXI beat; the next beat waits for ENABLE. (Before, ``enable``
    gated ``valid`` directly and withdrew the offer: tests/test_formal.py finds that in the RTL.)"""
    layout = data.StructLayout({"n": 4, "tag": 16})
    dut = AxisCommandInput(8, layout, data_beats=lambda p: p.n, count_width=4)
    beats = [2, 0, 0, 0x11, 0x22]                   # n = 2: three command beats, two data beats
    stall_at = 2 if stream == "cmd" else 3          # the command's last beat, its first data beat
    port = getattr(dut, stream)
    seen = []

    async def bench(ctx):
        ctx.set(dut.tkeep, 1)
        n = 0
        for cycle in range(12):
            ctx.set(dut.enable, cycle <= stall_at or cycle >= 9)       # falls while the beat waits
            ctx.set(dut.cmd.ready, 1)
            ctx.set(dut.data.ready, 1)
            ctx.set(port.ready, cycle not in (stall_at, stall_at + 1))
            ctx.set(dut.tvalid, n < len(beats))
            ctx.set(dut.tdata, beats[min(n, len(beats) - 1)])
            seen.append((ctx.get(port.valid), ctx.get(port.ready), ctx.get(dut.tready)))
            n += ctx.get(dut.tvalid) and ctx.get(dut.tready)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # offered at stall_at, stalled two cycles (enable low in the second), taken in the third with its AXI beat
    assert seen[stall_at:stall_at + 3] == [(1, 0, 0), (1, 0, 0), (1, 1, 1)]
    assert all(not tready for _, _, tready in seen[stall_at + 3:9])     # then nothing until ENABLE is back
    assert any(tready for _, _, tready in seen[9:])


def test_axis_output_holds_a_stalled_beat():
    dut = AxisOutput(16)
    seen = []

    async def bench(ctx):
        sent = 0
        for cycle in range(40):
            ctx.set(dut.i.valid, sent < 6)
            ctx.set(dut.i.payload, {"data": 0x100 + sent, "last": int(sent == 5)})
            ctx.set(dut.tready, cycle % 3 == 0)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                sent += 1
            if ctx.get(dut.tvalid):
                seen.append((ctx.get(dut.tdata), ctx.get(dut.tlast), ctx.get(dut.tready), ctx.get(dut.tkeep)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    taken = [(d, last) for d, last, ready, _ in seen if ready]
    assert taken == [(0x100 + k, int(k == 5)) for k in range(6)]
    assert all(keep == 0b11 for *_, keep in seen)
    for a, b in zip(seen, seen[1:]):     # an offered beat stays until taken
        if not a[2]:
            assert b[:2] == a[:2]


def test_verilog_axi_options_refused_where_they_do_not_apply(capsys):
    with pytest.raises(SystemExit):
        main(["verilog", "mac-line", "--axi"])
    assert main(["verilog", "vitcod", "--axi", "--axis-width", "64"]) == 2
    assert "--axis-width is the linear decode wrapper's" in capsys.readouterr().err


@pytest.mark.full     # two Verilog conversions and lints (~30 s); tests/rtl/test_axi.py lints what it simulates
@pytest.mark.parametrize("args, top", [(["vitcod", "--head-dim", "16", "--max-tokens", "16", "--data-width", "64"],
                                        "vitcod_axi"),
                                       (["linear-decode", "--d", "8", "--macs", "4", "--axis-width", "64"],
                                        "linear_decode_axi")])
def test_verilog_axi_writes_a_lint_clean_wrapped_top(tmp_path, capsys, args, top):
    out = tmp_path / f"{top}.v"
    assert main(["verilog", *args, "--axi", "-o", str(out)]) == 0
    text = out.read_text()
    assert f"module {top}(" in text and "input aclk;" in text and "input aresetn;" in text
    assert "lint clean" in capsys.readouterr().out


def _on_parent_clock_reads(dut, offsets):
    """AXI4-Lite reads of ``offsets`` through ``dut``'s passed-through ports; None where no response came."""
    got = []

    async def bench(ctx):
        for offset in offsets:
            ctx.set(dut.s_axil_araddr, offset)
            ctx.set(dut.s_axil_arvalid, 1)
            ctx.set(dut.s_axil_rready, 1)
            value = None
            for _ in range(20):
                await ctx.tick()
                if ctx.get(dut.s_axil_arready):
                    ctx.set(dut.s_axil_arvalid, 0)
                if ctx.get(dut.s_axil_rvalid):
                    value = ctx.get(dut.s_axil_rdata)
                    break
            ctx.set(dut.s_axil_arvalid, 0)
            await ctx.tick()
            got.append(value)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def test_on_parent_clock_runs_the_wrapper_on_sync():
    """`attnforge synth --axi`'s adapter: aclk from sync, aresetn from its reset (held in reset, or with
    no clock, the register bank would never answer), every other port under its own name."""
    from attnforge.hw.common.accel_regs import ID_MAGIC, REGMAP_VERSION, design_code
    from attnforge.hw.common.axi import OnParentClock

    cfg = LinearDecodeConfig(d=4, macs=1, conv_taps=1, t_max=1, max_tokens=16)
    wrapper = LinearDecodeAxi(cfg, axis_width=32, perf_width=33)
    dut = OnParentClock(wrapper)
    members = dut.signature.members
    assert "aclk" not in members and "aresetn" not in members
    assert set(members) == set(wrapper.signature.members) - {"aclk", "aresetn"}
    assert all(members[n].flow == wrapper.signature.members[n].flow for n in members)
    regmap = wrapper.regmap
    ident, design = _on_parent_clock_reads(dut, [regmap["id"].offset, regmap["design"].offset])
    assert ident == ID_MAGIC << 16 | REGMAP_VERSION[0] << 8 | REGMAP_VERSION[1]
    assert design == design_code("linear-decode")


def test_on_parent_clock_refuses_a_component_without_clock_ports():
    from attnforge.hw.common.axi import OnParentClock

    with pytest.raises(ConfigError, match="OnParentClock needs a wrapper with aclk and aresetn ports; AxisOutput"):
        OnParentClock(AxisOutput(8))


def test_synth_axi_options_need_axi(capsys):
    assert main(["synth", "linear-decode", "--axis-width", "32", "--no-pnr"]) == 2
    assert "--axis-width and --perf-width are the AXI wrapper's; add --axi" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "mac-line", "--axi"])
