"""The board's UART (``UartRx``, ``UartTx``), the framed protocol and ``UartBridge``, in amaranth.sim (fast).

The bridge is driven byte by byte on its ``rx`` stream (not through the UART:
the UART has its own tests) against a small AXI4-Lite slave and AXI4-Stream
sink/source written in the testbench; every response is decoded with the
host's own ``decode_response``."""

import dataclasses
import json
import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from attnforge.errors import ConfigError
from attnforge.hw.board.bridge import UartBridge
from attnforge.hw.board.protocol import (
    BoardInfo, Command, Status, crc8, decode_response, encode_request, encode_response,
)
from attnforge.hw.common.uart import UartRx, UartTx


# ------------------------------------------------------------------------------ protocol

def test_crc8_is_crc8_smbus():
    assert crc8(b"123456789") == 0xF4     # the catalogue's check value of CRC-8/SMBUS
    assert crc8(b"") == 0


def test_frames_round_trip_and_a_bad_crc_is_refused():
    frame = encode_response(Status.OK, b"\x01\x02\x03")
    assert decode_response(frame) == (Status.OK, b"\x01\x02\x03")
    bad = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(RuntimeError, match="CRC"):
        decode_response(bad)
    assert encode_request(Command.READ, b"\x10")[:4] == bytes([0xA5, 0x02, 0x01, 0x00])


# ------------------------------------------------------------------------------ UART

class _Loop(wiring.Component):
    """UartTx's pin into UartRx (a test fixture).

    Members
    -------
    (those of the two halves, reached as ``tx`` and ``rx``)
    """

    def __init__(self, divisor):
        self.utx, self.urx = UartTx(divisor), UartRx(divisor)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.utx, m.submodules.urx = self.utx, self.urx
        m.d.comb += self.urx.rx.eq(self.utx.tx)
        return m


@pytest.mark.parametrize("divisor", [4, 7, 8])
def test_uart_loopback(divisor):
    """UartTx -> UartRx: every byte comes back, in order, back to back at full rate."""
    dut = _Loop(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA] + [random.Random(divisor).randrange(256) for _ in range(12)]
    got = []

    async def bench(ctx):
        ctx.set(dut.urx.o.ready, 1)
        n = 0
        for _ in range(len(data) * 10 * divisor + 40):
            if n < len(data):
                ctx.set(dut.utx.i.valid, 1)
                ctx.set(dut.utx.i.payload, data[n])
            else:
                ctx.set(dut.utx.i.valid, 0)
            sent = ctx.get(dut.utx.i.valid) and ctx.get(dut.utx.i.ready)
            if ctx.get(dut.urx.o.valid):
                got.append(ctx.get(dut.urx.o.payload))
            await ctx.tick()
            n += bool(sent)
        assert not ctx.get(dut.urx.frame_error) and not ctx.get(dut.urx.overrun)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == data


def _rx_bench(divisor, waveform):
    """Drive UartRx's pin with ``waveform`` (levels, one per cycle); return bytes and flags."""
    dut = UartRx(divisor)
    got = {"bytes": []}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for level in waveform:
            ctx.set(dut.rx, level)
            if ctx.get(dut.o.valid):
                got["bytes"].append(ctx.get(dut.o.payload))
            await ctx.tick()
        got["frame_error"] = ctx.get(dut.frame_error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def _bits(byte, divisor, stop=1):
    levels = [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
    return [x for x in levels for _ in range(divisor)]


def test_uart_rx_ignores_a_glitch_and_flags_a_low_stop_bit():
    d = 8
    glitch = [1] * 5 + [0] * 2 + [1] * 20            # shorter than half a bit: no start bit
    good = _bits(0x3C, d)
    bad = _bits(0x81, d, stop=0) + [0] * 3 * d + [1] * 2 * d
    got = _rx_bench(d, glitch + good + [1] * d + bad + _bits(0x42, d) + [1] * 3 * d)
    assert got["bytes"] == [0x3C, 0x42] and got["frame_error"] == 1


def test_uart_refuses_a_divisor_below_four():
    with pytest.raises(ConfigError, match="divisor = 3"):
        UartRx(3)
    with pytest.raises(ConfigError, match="divisor"):
        UartTx(True)


# ------------------------------------------------------------------------------ the bridge

def _bridge_bench(frames, *, s_bytes=4, m_bytes=2, buffer=16, timeout=200, results=(), take_stream=True,
                  gaps=0):
    """Send ``frames`` (bytes each; a frame may be cut) to a UartBridge; a fake AXI4-Lite slave (16 registers,
    reads return the written values), an s_axis sink and an m_axis source holding ``results`` beats.
    Returns the responses (raw bytes), the beats taken (data, last) and the register writes."""
    dut = UartBridge(s_bytes=s_bytes, m_bytes=m_bytes, addr_width=6, buffer=buffer, timeout=timeout)
    out = {"tx": bytearray(), "beats": [], "writes": []}
    regs = {}
    pending = list(results)

    async def host(ctx):
        for frame in frames:
            expected = len(out["tx"])     # (before the bytes: with gaps the response may come during the last)
            for b in frame:
                ctx.set(dut.rx.valid, 1)
                ctx.set(dut.rx.payload, b)
                await ctx.tick().until(dut.rx.ready)
                ctx.set(dut.rx.valid, 0)
                for _ in range(gaps):
                    await ctx.tick()
            # wait for the response's CRC before the next frame (stop and wait)
            for _ in range(timeout * 4 + 2000):
                await ctx.tick()
                if len(out["tx"]) >= expected + 5 and \
                        len(out["tx"]) == expected + 5 + int.from_bytes(out["tx"][expected + 2:expected + 4],
                                                                        "little"):
                    break
            else:
                raise AssertionError(f"no response to frame {frame.hex()}")

    async def devices(ctx):
        ctx.set(dut.tx.ready, 1)
        aw = None
        wdata = None
        read = None
        while True:
            ctx.set(dut.m_axis_tready, int(take_stream))
            ctx.set(dut.s_axis_tvalid, int(bool(pending)))
            if pending:
                ctx.set(dut.s_axis_tdata, pending[0])
            ctx.set(dut.m_axil_awready, 1)
            ctx.set(dut.m_axil_wready, 1)
            ctx.set(dut.m_axil_arready, 1)
            ctx.set(dut.m_axil_bvalid, int(aw is not None and wdata is not None))
            ctx.set(dut.m_axil_rvalid, int(read is not None))
            ctx.set(dut.m_axil_rdata, regs.get(read, 0) if read is not None else 0)
            if ctx.get(dut.tx.valid):
                out["tx"].append(ctx.get(dut.tx.payload))
            if ctx.get(dut.m_axis_tvalid) and take_stream:
                out["beats"].append((ctx.get(dut.m_axis_tdata), ctx.get(dut.m_axis_tlast)))
            if pending and ctx.get(dut.s_axis_tready):
                pending.pop(0)
            if ctx.get(dut.m_axil_bready) and aw is not None and wdata is not None:
                regs[aw] = wdata
                out["writes"].append((aw, wdata))
                aw = wdata = None
            elif ctx.get(dut.m_axil_awvalid) and aw is None:
                aw = ctx.get(dut.m_axil_awaddr)
                if ctx.get(dut.m_axil_wvalid):
                    wdata = ctx.get(dut.m_axil_wdata)
            elif ctx.get(dut.m_axil_wvalid) and wdata is None:
                wdata = ctx.get(dut.m_axil_wdata)
            if ctx.get(dut.m_axil_rready) and read is not None:
                read = None
            elif ctx.get(dut.m_axil_arvalid):
                read = ctx.get(dut.m_axil_araddr)
            out["error"] = ctx.get(dut.error)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(devices, background=True)
    sim.run()
    return out


def _responses(raw: bytes):
    out, at = [], 0
    while at < len(raw):
        n = int.from_bytes(raw[at + 2:at + 4], "little")
        out.append(decode_response(bytes(raw[at:at + 5 + n])))
        at += 5 + n
    return out


def test_bridge_info_registers_stream_and_results():
    """INFO; WRITE then READ back (AXI4-Lite); STREAM two beats with tlast; RESULTS two beats."""
    frames = [encode_request(Command.INFO),
              encode_request(Command.WRITE, bytes([0x08]) + (0xDEADBEEF).to_bytes(4, "little")),
              encode_request(Command.READ, bytes([0x08])),
              encode_request(Command.STREAM, bytes([1]) + bytes(range(1, 9))),
              encode_request(Command.RESULTS, (2).to_bytes(2, "little"))]
    out = _bridge_bench(frames, results=[0x1234, 0xABCD])
    r = _responses(out["tx"])
    assert [s for s, _ in r] == [Status.OK] * 5
    assert BoardInfo.decode(r[0][1]) == BoardInfo(1, 4, 2, 16, 6)
    assert out["writes"] == [(0x08, 0xDEADBEEF)]
    assert r[2][1] == (0xDEADBEEF).to_bytes(4, "little")
    assert out["beats"] == [(0x04030201, 0), (0x08070605, 1)]
    assert r[4][1] == bytes([0x34, 0x12, 0xCD, 0xAB])
    assert not out["error"]


def test_bridge_answers_bad_frames_with_an_error_and_never_hangs():
    """A bad CRC (a STREAM frame: nothing is sent), an unknown command, bad lengths, a frame cut short,
    RESULTS with no results and STREAM nobody takes: each gets its error response, and a good
    frame afterwards works."""
    stream = encode_request(Command.STREAM, bytes([0]) + bytes(range(4)))
    corrupted = stream[:5] + bytes([stream[5] ^ 0x10]) + stream[6:]
    frames = [corrupted, encode_request(0x7E), encode_request(Command.READ, b"\x00\x01"),
              encode_request(Command.STREAM, bytes([0]) + bytes(3)),          # not whole beats
              encode_request(Command.RESULTS, (9).to_bytes(2, "little")),     # 18 bytes > buffer 16
              encode_request(Command.WRITE, bytes(4)),                        # one byte short
              encode_request(Command.INFO, b"\x00"),                          # INFO takes none
              encode_request(Command.RESULTS, (0).to_bytes(2, "little")),     # no beats
              encode_request(Command.WRITE, bytes(5))[:4],                    # cut short
              encode_request(Command.RESULTS, (1).to_bytes(2, "little")),     # none come
              encode_request(Command.INFO)]
    out = _bridge_bench(frames)
    r = _responses(out["tx"])
    assert [s for s, _ in r] == [Status.BAD_CRC, Status.BAD_CMD, *[Status.BAD_LEN] * 6,
                                 Status.FRAME_TIMEOUT, Status.TIMEOUT, Status.OK]
    assert out["beats"] == [] and out["writes"] == [] and out["error"]
    assert r[9][1] == b""


def test_bridge_takes_bytes_up_to_timeout_minus_two_cycles_apart():
    """The frame timer's bound (timeout 200): a frame whose bytes are 198 or 199 idle cycles apart is
    answered without the error flag (at 199 the byte comes in the timeout's own cycle: it is taken; the
    flag was set there before), one whose bytes are 200 apart gets FRAME_TIMEOUT."""
    for gap in (198, 199):
        early = _bridge_bench([encode_request(Command.INFO)], gaps=gap)
        assert [s for s, _ in _responses(early["tx"])] == [Status.OK] and not early["error"], gap
    late = _bridge_bench([encode_request(Command.INFO)], gaps=200)
    assert [s for s, _ in _responses(late["tx"])][:1] == [Status.FRAME_TIMEOUT] and late["error"]


def test_bridge_results_of_one_beat():
    """RESULTS asking for one beat: the beat that comes is the last, its two bytes answered."""
    out = _bridge_bench([encode_request(Command.RESULTS, (1).to_bytes(2, "little"))], results=[0xBEEF])
    assert _responses(out["tx"]) == [(Status.OK, bytes([0xEF, 0xBE]))]


def test_bridge_stream_times_out_when_nobody_takes_the_beats():
    out = _bridge_bench([encode_request(Command.STREAM, bytes([0]) + bytes(8))], take_stream=False)
    assert _responses(out["tx"]) == [(Status.TIMEOUT, (0).to_bytes(2, "little"))]


def test_bridge_refuses_a_buffer_smaller_than_a_beat():
    with pytest.raises(ConfigError, match="buffer = 4"):
        UartBridge(s_bytes=8, m_bytes=2, addr_width=7, buffer=4)
    with pytest.raises(ConfigError, match="addr_width"):
        UartBridge(s_bytes=8, m_bytes=2, addr_width=9)


# ------------------------------------------------------------------------------ PLL, board build, host report

def test_pll_settings_match_icepll_and_ecppll():
    """The settings yowasp-icepll / yowasp-ecppll print for the same requests (hw/board/pll.py)."""
    from attnforge.hw.board.pll import ecp5_pll, ice40_pll

    s = ice40_pll(12, 30)
    assert (s.f_out, s.params) == (30.0, {"DIVR": 0, "DIVF": 79, "DIVQ": 5, "FILTER_RANGE": 1})
    s = ecp5_pll(25, 40)
    assert (s.f_out, s.params) == (40.0, {"CLKI_DIV": 5, "CLKFB_DIV": 8, "CLKOP_DIV": 15, "CLKOP_CPHASE": 7})
    with pytest.raises(ConfigError, match="--clock-mhz 300.*16 to 275 MHz"):
        ice40_pll(12, 300)
    with pytest.raises(ConfigError, match="--clock-mhz 500"):
        ecp5_pll(25, 500)


def test_uart_divisor_and_board_names_are_checked():
    from attnforge.fpga.board import get_board, uart_divisor

    assert uart_divisor(24.0, 115200) == 208
    with pytest.raises(ConfigError, match="--baud 3000000 at 1"):
        uart_divisor(1.0, 3_000_000)
    with pytest.raises(ConfigError, match="--board 'de10'"):
        get_board("de10")


def test_program_says_which_tool_is_missing(tmp_path, monkeypatch):
    from attnforge.fpga.board import ToolMissing, program_board

    bit = tmp_path / "board_top.bin"
    bit.write_bytes(b"\0")
    monkeypatch.setenv("PATH", str(tmp_path))          # neither iceprog nor openFPGALoader
    with pytest.raises(ToolMissing, match="iceprog .*openFPGALoader"):
        program_board("icebreaker", bit)
    with pytest.raises(FileNotFoundError, match="attnforge board build --board ulx3s"):
        program_board("ulx3s", tmp_path / "none.bit")
    (tmp_path / "openFPGALoader").write_text("#!/bin/sh\n")
    (tmp_path / "openFPGALoader").chmod(0o755)
    assert program_board("ulx3s", bit, dry_run=True) == ["openFPGALoader", "-b", "ulx3s", str(bit)]


def test_host_report_finds_the_first_wrong_byte():
    """The host's comparison (attnforge/host/run.py) fails on one flipped bit and names where."""
    from attnforge.host.run import _report
    from attnforge.hw.vitcod import VitcodConfig
    from attnforge.tb.board_jobs import BoardJob

    cfg = VitcodConfig(head_dim=8, max_tokens=8, max_nnz=16, macs=4, dense_lines=1, sparse_lines=1, data_width=64)
    job = BoardJob([b"\0" * 8], [bytes(range(8)), bytes(range(8, 16))], [2])
    got = {"outputs": [bytes(range(8)), bytes(range(8, 16))], "params": {}, "status": 0, "done_count": 2,
           "failed_count": 0, "counters": dict(busy=9, stall_in=0, stall_out=0, mac_active=3), "frames": 5,
           "info": {}}
    assert _report("vitcod", cfg, job, got, sim=True, port=None)["bit_exact"]
    got["outputs"][1] = bytes([8, 9, 10 ^ 1, 11, 12, 13, 14, 15])
    r = _report("vitcod", cfg, job, got, sim=True, port=None)
    assert not r["bit_exact"] and r["first_mismatch"] == {"packet": 1, "byte": 2}


def test_board_cli_refuses_bad_input(capsys):
    from attnforge.cli import main

    assert main(["board", "run", "--design", "vitcod", "--sim"]) == 2
    assert "--masks" in capsys.readouterr().err
    assert main(["board", "build", "--board", "icebreaker", "--clock-mhz", "500"]) == 2
    assert "--clock-mhz 500" in capsys.readouterr().err


def test_board_build_passes_placer_and_lut_mapper_to_the_tools(tmp_path, capsys):
    """--placer reaches nextpnr's command line in the build script, --lut-mapper abc splits synth_ecp5
    around classic ABC in the Yosys script (the real tools run in tests/rtl/test_board.py, full); abc on
    the iCE40 board is refused before anything is written."""
    from attnforge.cli import main

    tiny = ["--design", "linear-decode", "--d", "4", "--macs", "2", "--conv-taps", "2", "--t-max", "2", "--heads", "1"]
    out = tmp_path / "u"
    assert main(["board", "build", "--board", "ulx3s", *tiny, "--prepare-only", "--placer", "static",
                 "--lut-mapper", "abc", "--out", str(out)]) == 0
    script = [line.strip() for line in (out / "board_top.ys").read_text().splitlines()]
    at = script.index("synth_ecp5 -run :map_luts -top board_top")
    assert script[at + 1:at + 4] == ["abc -lut 4:7 -dress", "clean", "synth_ecp5 -top board_top -run map_cells:"]
    nextpnr = [line for line in (out / "build_board_top.sh").read_text().splitlines() if "NEXTPNR_ECP5\" " in line]
    assert len(nextpnr) == 1 and " --placer static " in nextpnr[0] and " --router router2 " in nextpnr[0]
    report = json.loads((out / "report.json").read_text())
    assert (report["placer"], report["lut_mapper"], report["router"]) == ("static", "abc", "router2")
    default = tmp_path / "d"
    assert main(["board", "build", "--board", "ulx3s", *tiny, "--prepare-only", "--out", str(default)]) == 0
    assert "abc -lut" not in (default / "board_top.ys").read_text()
    assert "--placer" not in (default / "build_board_top.sh").read_text()
    assert " --router router2 " in (default / "build_board_top.sh").read_text()     # the ECP5 default, as synth
    r1 = tmp_path / "r1"
    assert main(["board", "build", "--board", "ulx3s", *tiny, "--prepare-only", "--router", "router1",
                 "--out", str(r1)]) == 0
    assert " --router router1 " in (r1 / "build_board_top.sh").read_text()
    ice_default = tmp_path / "id"
    assert main(["board", "build", "--board", "icebreaker", *tiny, "--prepare-only", "--out", str(ice_default)]) == 0
    assert "--router" not in (ice_default / "build_board_top.sh").read_text()
    # two clocks: the oscillator (the UART, the bridge) and the PLL (the accelerator)
    rtlil = (ice_default / "board_top.il").read_text()
    assert "cell \\SB_PLL40_2_PAD" in rtlil and "connect \\PLLOUTGLOBALA \\clk" in rtlil \
        and "connect \\PLLOUTGLOBALB \\fast_clk" in rtlil
    assert json.loads((ice_default / "report.json").read_text())["uart"]["divisor"] == 104    # 12 MHz / 115200
    assert json.loads((default / "report.json").read_text())["uart"]["divisor"] == 217        # 25 MHz / 115200
    capsys.readouterr()
    ice = tmp_path / "i"
    assert main(["board", "build", "--board", "icebreaker", *tiny, "--prepare-only", "--lut-mapper", "abc",
                 "--out", str(ice)]) == 2
    assert "--lut-mapper abc on --board icebreaker" in capsys.readouterr().err and not ice.exists()


@pytest.mark.parametrize("board, given, family", [("icebreaker", None, "ice40"), ("ulx3s", None, "ecp5"),
                                                  ("icebreaker", "ecp5", "ecp5")])
def test_board_build_cuts_products_for_the_boards_dsp(monkeypatch, tmp_path, board, given, family):
    """`board build` cuts the linear decode block's products for the board's DSP blocks (the iCEBreaker's
    SB_MAC16, the ULX3S's MULT18X18D) unless --dsp-family says otherwise."""
    import attnforge.fpga.board as fpga_board
    from attnforge.cli import main

    built = {}

    def build_board(board_name, design, config, accel, **kw):
        built.update(board=board_name, config=config, accel=accel)
        return {"prepared": []}

    monkeypatch.setattr(fpga_board, "build_board", build_board)
    argv = ["board", "build", "--board", board, "--prepare-only", "--out", str(tmp_path)]
    assert main(argv + ([] if given is None else ["--dsp-family", given])) == 0
    assert built["board"] == board and built["config"].dsp_family == family
    assert built["accel"].config.dsp_family == family


def test_board_top_answers_info_through_its_uart_pins():
    """BoardTop (UART pins, bridge, LinearDecodeAxi) in amaranth.sim: an INFO frame bit-banged on uart_rx,
    the response decoded from uart_tx."""
    from attnforge.hw.board.top import BoardTop
    from attnforge.hw.linear import LinearDecodeConfig
    from attnforge.hw.linear.axi import LinearDecodeAxi

    d = 4
    dut = BoardTop(LinearDecodeAxi(LinearDecodeConfig(d=4, macs=2, conv_taps=2, t_max=2, heads=1)), divisor=d)
    wave = [1] * 8 + [x for b in encode_request(Command.INFO) for x in _bits(b, d)] + [1] * 700
    line = []

    async def bench(ctx):
        for level in wave:
            ctx.set(dut.uart_rx, level)
            line.append(ctx.get(dut.uart_tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    got, i = [], 0
    while i < len(line):
        if line[i] == 0:
            got.append(sum(line[i + d // 2 + d * (k + 1)] << k for k in range(8)))
            i += 10 * d - d // 2
        else:
            i += 1
    status, payload = decode_response(bytes(got))
    assert status == Status.OK and BoardInfo.decode(payload) == BoardInfo(1, 16, 4, 256, 7)


def test_mac_active_against_the_model():
    """Linear decode: MAC_ACTIVE equals the model's issue cycles. ViTCoD (one tile): within the busier
    engine's issue cycles and both engines' together, whatever the rate; more tiles: not judged.
    The model's per-engine counts bound its own union (the same two heads as the board's RTL test)."""
    from attnforge.algo.vitcod.synthetic import polarized_mask_set
    from attnforge.flows.vitcod import mask_heads
    from attnforge.formats.masks import head_csr
    from attnforge.host.run import _mac_active_consistent
    from attnforge.hw.linear import LinearDecodeConfig
    from attnforge.hw.vitcod import VitcodConfig
    from attnforge.hw.vitcod.cycles import run_cycles
    from attnforge.tb.vitcod_jobs import shapes_of

    lin = LinearDecodeConfig(d=4, macs=2)
    assert _mac_active_consistent("linear-decode", lin, {"model_mac_active_cycles": 128}, 128)
    assert not _mac_active_consistent("linear-decode", lin, {"model_mac_active_cycles": 128}, 127)
    ms = polarized_mask_set(1, 2, 8, 0.5, seed=2)
    pairs = [(0, 0), (0, 1)]
    cfg = VitcodConfig(head_dim=8, macs=4, dense_lines=1, sparse_lines=1, max_tokens=8, data_width=64,
                       max_nnz=max(head_csr(ms, l, h)[1].nnz for l, h in pairs))
    model = run_cycles(cfg, shapes_of(mask_heads(cfg, ms, pairs, seed=1)))
    per_engine = model["engine_issue_cycles"]
    assert max(per_engine) <= model["mac_active_cycles"] <= sum(per_engine) and min(per_engine) > 0
    info = {"model_engine_issue_cycles": per_engine}
    assert all(_mac_active_consistent("vitcod", cfg, info, n) for n in (max(per_engine), sum(per_engine)))
    assert not any(_mac_active_consistent("vitcod", cfg, info, n) for n in (max(per_engine) - 1, sum(per_engine) + 1))
    tiled = dataclasses.replace(cfg, tiles=2)
    assert _mac_active_consistent("vitcod", tiled, info, 0) is None


def _pnr(accel=(43.3, 42.0), bridge=(29.8, 12.0), crossing_ns=(8.4, 28.4)):
    """A nextpnr --report as the iCEBreaker board build writes it (two clocks, paths between them)."""
    def step(ns, kind="logic", src="board.x_SB_DFFESR_Q_LC", dst="board.y_SB_DFFESR_Q_LC"):
        return {"delay": ns, "type": kind, "net": src.split("_SB")[0], "from": {"cell": src, "port": "O"},
                "to": {"cell": dst, "port": "I0"}}

    return {"fmax": {"board.accel.aclk": {"achieved": accel[0], "constraint": accel[1]},
                     "board.clk": {"achieved": bridge[0], "constraint": bridge[1]}},
            "critical_paths": [
                {"from": "posedge board.accel.aclk", "to": "posedge board.accel.aclk",
                 "path": [step(1.4, "clk-to-q", "board.accel.core.output.full_SB_DFFSR_Q_1_LC"),
                          step(14.3, "routing"), step(7.4, "logic", dst="board.accel.core.control.busy_SB_DFFE_Q_LC")]},
                {"from": "posedge board.clk", "to": "posedge board.clk", "path": [step(30.0), step(3.5)]},
                {"from": "<async>", "to": "posedge board.clk", "path": [step(500.0)]},
                {"from": "posedge board.accel.aclk", "to": "posedge board.clk", "path": [step(crossing_ns[0])]},
                {"from": "posedge board.clk", "to": "posedge board.accel.aclk",
                 "path": [step(crossing_ns[1] / 2), step(crossing_ns[1] / 2)]}]}


def test_board_timing_judges_each_clock_and_the_paths_between_them():
    """Each clock against its own constraint (the bridge's 12 MHz, not the PLL's), the accelerator's
    clock found by its constraint, the paths between the clocks against a source plus a destination
    period; paths from or to <async> (reset synchronizers, pins) are not crossings."""
    from attnforge.fpga.board import board_timing

    t = board_timing(_pnr(), 42.0)
    assert t["met"] and t["accel_clock"] == "board.accel.aclk"
    assert t["clocks"]["board.clk"] == {
        "fmax_mhz": 29.8, "constraint_mhz": 12.0, "met": True,
        "critical_path": {"stage": "board.x -> board.y", "delay_ns": 33.5, "logic_ns": 33.5, "routing_ns": 0.0,
                          "logic_steps": 2}}
    # each clock's own longest path (not a crossing's, nor the <async> one): where to pipeline next
    assert t["clocks"]["board.accel.aclk"]["critical_path"] == {
        "stage": "board.accel.core.output.full -> board.accel.core.control.busy", "delay_ns": 23.1,
        "logic_ns": 8.8, "routing_ns": 14.3, "logic_steps": 1}
    budget = 107.14          # ns: a 42 MHz period (23.81) plus a 12 MHz one (83.33)
    assert [(c["from"], c["to"], c["delay_ns"], c["budget_ns"]) for c in t["crossings"]] == [
        ("board.accel.aclk", "board.clk", 8.4, budget), ("board.clk", "board.accel.aclk", 28.4, budget)]
    assert not board_timing(_pnr(accel=(41.9, 42.0)), 42.0)["met"]
    assert not board_timing(_pnr(bridge=(11.9, 12.0)), 42.0)["met"]
    late = board_timing(_pnr(crossing_ns=(8.4, budget + 0.1)), 42.0)
    assert not late["met"] and [c["met"] for c in late["crossings"]] == [True, False]
    assert board_timing({"fmax": {}}, 42.0) == {"clocks": {}, "accel_clock": None, "crossings": [],
                                                      "met": False}


def test_a_failed_board_build_leaves_no_earlier_report_or_bitstream(tmp_path, monkeypatch, capsys):
    """A build that fails (here its Yosys: ``false``) exits 3 naming the build's output, and leaves
    neither the report nor the bitstream of an earlier build in its folder to be taken for its own."""
    from attnforge.cli import main

    out = tmp_path / "ice"
    out.mkdir()
    for name in ("report.json", "report.txt", "board_top.bin", "board_top.tim"):
        (out / name).write_text("an earlier build's\n")
    monkeypatch.setenv("YOSYS", "false")
    tiny = ["--design", "linear-decode", "--d", "4", "--macs", "2", "--conv-taps", "2", "--t-max", "2", "--heads", "1"]
    assert main(["board", "build", "--board", "icebreaker", *tiny, "--out", str(out)]) == 3
    assert "the icebreaker build failed (exit 1)" in capsys.readouterr().err
    assert not any((out / name).exists() for name in ("report.json", "report.txt", "board_top.bin", "board_top.tim"))
    assert (out / "build_board_top.sh").exists() and (out / "build.log").exists()


def test_each_design_gets_its_ecp5_router():
    """Without --router the ULX3S build routes the ViTCoD block with router1 (router2 stalls on it,
    docs/vitcod-hw.md) and the rest with router2, as `attnforge synth` does; a router given wins; the
    iCEBreaker keeps nextpnr's default."""
    from attnforge.fpga.board import _router, get_board
    from attnforge.fpga.synth import ecp5_router

    ulx3s, ice = get_board("ulx3s"), get_board("icebreaker")
    assert [_router(ulx3s, None, d) for d in ("vitcod", "linear-decode")] == ["router1", "router2"]
    assert _router(ulx3s, "router2", "vitcod") == "router2" and _router(ice, None, "vitcod") is None
    assert [ecp5_router(t) for t in ("vitcod", "vitcod_axi", "linear_decode", "mac_line")] == \
        ["router1", "router1", "router2", "router2"]
