"""Register maps (hw/common/regmap.py), the AXI4-Lite ``RegisterBank``, ``PerfCounters`` and
``AcceleratorRegisters`` in amaranth.sim; the generated C header and Markdown table.

Expected read values come from the description (field masks and resets written
out by hand or computed with plain integer arithmetic), never from the bank.
"""

import random
import re
import shutil
import subprocess
import zlib

import pytest
from amaranth.sim import Simulator

from attnforge.errors import ConfigError
from attnforge.hw.common import (
    ID_MAGIC, PARAM_BASE, PERF_COUNTERS, REGMAP_VERSION, AcceleratorRegisters, Field, PerfCounters, Register,
    RegisterBank, RegisterMap, accelerator_regmap, c_header, design_code, markdown_table,
)

# ------------------------------------------------------------------ the description


def test_offsets_and_bits_are_assigned_in_order():
    regmap = RegisterMap("demo", [
        Register("a", "rw", (Field("x", 3), Field("y", 4), Field("z", 2, lsb=20))),
        Register("b", "ro"),
        Register("c", "const", (Field("k", 8, reset=0x5A),), offset=0x10),
        Register("d", "pulse", (Field("go"),)),
    ])
    assert [r.offset for r in regmap] == [0, 4, 0x10, 0x14]
    assert [(f.name, f.lsb, f.mask) for f in regmap["a"].fields] == [("x", 0, 0x7), ("y", 3, 0x78),
                                                                     ("z", 20, 0x300000)]
    assert [(f.name, f.lsb, f.width) for f in regmap["b"].fields] == [("value", 0, 32)]
    assert regmap["c"].reset == 0x5A and regmap.size == 0x18


@pytest.mark.parametrize("registers,words", [
    ([Register("a", "rw", (Field("x", 4), Field("y", 4, lsb=2)))], ["'y'", "'a'", "'x'", "disjoint"]),
    ([Register("a", "rw", (Field("x", 33),))], ["'x'", "'a'", "33", "1..32"]),
    ([Register("a", "rw", (Field("x", 8, lsb=28),))], ["'x'", "'a'", "28", "bit 35", "lsb + width <= 32"]),
    ([Register("a", "rw", (Field("x", 4, reset=16),))], ["'x'", "'a'", "16", "0..15"]),
    ([Register("a", "rw", (Field("x", 4, reset=-1),))], ["'a'", "-1", "0..15"]),
    ([Register("a", "ro"), Register("a", "rw")], ["'a'", "twice", "unique"]),
    ([Register("a", "rw", (Field("x"), Field("x")))], ["'x'", "'a'", "twice"]),
    ([Register("a", "rw"), Register("b", "rw", offset=6)], ["'b'", "6", "multiple of 4"]),
    ([Register("a", "rw", offset=8), Register("b", "rw", offset=4)], ["'b'", "4", "0xc"]),
    ([Register("a", "sticky")], ["'a'", "access", "'w1c'", "'sticky'"]),
    ([Register("rdata", "ro")], ["'rdata'", "AXI4-Lite"]),
    ([Register("Bad-Name", "ro")], ["'Bad-Name'", "lower-case"]),
    ([Register("a_b", "rw", (Field("c"),)), Register("a", "rw", (Field("b_c"),))], ["A_B_C", "collides"]),
    ([Register("a", "ro", (Field("read_strobe"),), read_strobe=True)], ["read_strobe", "'a'"]),
    ([], ["no registers"]),
])
def test_bad_descriptions_are_refused_naming_register_value_and_what_is_accepted(registers, words):
    with pytest.raises(ConfigError) as err:
        RegisterMap("demo", registers)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize("name", ["signature", "elaborate", "regmap"])
def test_register_names_that_are_bank_attributes_are_refused(name):
    RegisterMap("demo", [Register(name, "const")])          # no ports: no attribute needed
    with pytest.raises(ConfigError, match=f"'{name}'.*RegisterBank's own attribute"):
        RegisterBank(RegisterMap("demo", [Register(name, "rw")]))


def test_c_header_has_guard_and_every_macro_and_compiles():
    regmap = accelerator_regmap("vitcod", {"head_dim": 64, "decoder": True})
    text = c_header(regmap)
    assert text.count("#ifndef ATTNFORGE_VITCOD_REGS_H") == 1 and text.rstrip().endswith("*/")
    for reg in regmap:
        assert f"#define ATTNFORGE_VITCOD_{reg.name.upper()}_OFFSET 0x{reg.offset:04x}u" in text
        for f in reg.fields:
            assert f"#define ATTNFORGE_VITCOD_{reg.name.upper()}_{f.name.upper()}_MASK 0x{f.mask:08x}u" in text
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc, "no C compiler on PATH (Verilator needs one too; make setup checks the toolchain)"
    checks = "\n".join([
        '#include "regs.h"', '#include "regs.h"',  # the guard: a second include is harmless
        "_Static_assert(ATTNFORGE_VITCOD_ID_MAGIC_MASK >> ATTNFORGE_VITCOD_ID_MAGIC_SHIFT == 0xffffu, \"\");",
        f"_Static_assert(ATTNFORGE_VITCOD_PARAM_HEAD_DIM_OFFSET == {PARAM_BASE}u, \"\");",
        "_Static_assert(ATTNFORGE_VITCOD_PARAM_HEAD_DIM_RESET == 64u, \"\");",
        "_Static_assert(ATTNFORGE_VITCOD_STATUS_ERRORS_MASK == 0xff00u, \"\");", ""])
    return_code, output = _compile(gcc, text, checks)
    assert return_code == 0, output


def _compile(gcc, header, source):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "regs.h").write_text(header)
        Path(tmp, "check.c").write_text(source)
        done = subprocess.run([gcc, "-std=c11", "-Wall", "-Werror", "-fsyntax-only", "check.c"], cwd=tmp,
                              capture_output=True, text=True)
        return done.returncode, done.stderr


def test_markdown_has_one_row_per_field():
    regmap = accelerator_regmap("mac-line", {"macs": 16, "operand_width": 8})
    rows = [line for line in markdown_table(regmap).splitlines() if re.match(r"\| 0x", line)]
    fields = [(r, f) for r in regmap for f in r.fields]
    assert len(rows) == len(fields) == 3 + 1 + 2 + 1 + 2 + 2 + 2 * len(PERF_COUNTERS) + 1 + 2
    for row, (reg, f) in zip(rows, fields):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:4] == [f"0x{reg.offset:03x}", reg.name.upper(), reg.access, f.name]
        assert len(cells) == 7


def test_accelerator_map_layout_is_fixed_and_holds_the_parameters():
    regmap = accelerator_regmap("linear-decode", {"heads": 4, "verify": True, "depth": 0xFFFFFFFF})
    assert regmap["id"].reset == ID_MAGIC << 16 | REGMAP_VERSION[0] << 8 | REGMAP_VERSION[1]
    assert regmap["design"].reset == design_code("linear-decode") == zlib.crc32(b"linear-decode")
    offsets = {r.name: r.offset for r in regmap}
    assert offsets["control"] == 0x08 and offsets["status"] == 0x10 and offsets["perf_busy_lo"] == 0x1C
    assert offsets["perf_mac_active_hi"] == 0x38 and offsets["param_count"] == 0x3C
    assert [(offsets[f"param_{n}"], regmap[f"param_{n}"].reset) for n in ("heads", "verify", "depth")] == \
        [(0x40, 4), (0x44, 1), (0x48, 0xFFFFFFFF)]
    with pytest.raises(ConfigError, match="PARAM_FEATURE_MAP.*'relu'.*accepted"):
        accelerator_regmap("linear-decode", {"feature_map": "relu"})
    with pytest.raises(ConfigError, match="PARAM_X.*4294967296"):
        accelerator_regmap("x", {"x": 1 << 32})


# ------------------------------------------------------------------ AXI4-Lite in amaranth.sim


async def axi_write(ctx, dut, addr, data, strb=0xF, *, aw_at=0, w_at=0, b_hold=0):
    """One write: AW offered from cycle ``aw_at``, W from ``w_at``; ``bready`` low for ``b_hold``
    cycles after ``bvalid`` rises. Checks valid-held and payload-stable on B; returns the cycles taken."""
    aw_done = w_done = False
    cycle, b_seen = 0, 0
    while True:
        ctx.set(dut.awvalid, int(not aw_done and cycle >= aw_at))
        ctx.set(dut.awaddr, addr)
        ctx.set(dut.wvalid, int(not w_done and cycle >= w_at))
        ctx.set(dut.wdata, data)
        ctx.set(dut.wstrb, strb)
        ctx.set(dut.bready, int(b_seen >= b_hold))
        *_, awv, awr, wv, wr, bv, br, bresp = await ctx.tick().sample(
            dut.awvalid, dut.awready, dut.wvalid, dut.wready, dut.bvalid, dut.bready, dut.bresp)
        assert not (bv and not (aw_done and w_done)), "B response before its AW and W were taken"
        aw_done |= bool(awv and awr)
        w_done |= bool(wv and wr)
        if bv:
            assert bresp == 0
            b_seen += 1
            if br:
                break
        elif b_seen:
            raise AssertionError("bvalid dropped before bready")
        cycle += 1
    ctx.set(dut.bready, 0)
    return cycle + 1


async def axi_read(ctx, dut, addr, *, ar_at=0, r_hold=0):
    """One read: AR offered from cycle ``ar_at``; ``rready`` low for ``r_hold`` cycles after
    ``rvalid`` rises, while ``rdata`` must hold still. Returns the data."""
    ar_done, cycle, r_seen, held = False, 0, 0, None
    while True:
        ctx.set(dut.arvalid, int(not ar_done and cycle >= ar_at))
        ctx.set(dut.araddr, addr)
        ctx.set(dut.rready, int(r_seen >= r_hold))
        *_, arv, arr, rv, rr, rdata, rresp = await ctx.tick().sample(
            dut.arvalid, dut.arready, dut.rvalid, dut.rready, dut.rdata, dut.rresp)
        assert not (rv and not ar_done), "R response before its AR was taken"
        ar_done |= bool(arv and arr)
        if rv:
            assert rresp == 0 and (held is None or rdata == held), "rdata changed while rvalid and not rready"
            held, r_seen = rdata, r_seen + 1
            if rr:
                break
        elif r_seen:
            raise AssertionError("rvalid dropped before rready")
        cycle += 1
    ctx.set(dut.rready, 0)
    return held


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


DEMO = RegisterMap("demo", [
    Register("ctrl", "rw", (Field("mode", 3, reset=5), Field("level", 12, lsb=8, reset=0x123),
                            Field("flag", lsb=31, reset=1))),
    Register("word", "rw"),
    Register("status", "ro", (Field("busy"), Field("code", 7, lsb=4))),
    Register("ident", "const", (Field("value", 32, reset=0xC0FFEE01),)),
    Register("cmd", "pulse", (Field("go"), Field("stop"))),
    Register("flags", "w1c", (Field("err", 4),)),
    Register("count", "ro", (), read_strobe=True),
])


def _expected_word(reg, written, live):
    if reg.access == "rw":
        return written & sum(f.mask for f in reg.fields)
    if reg.access == "const":
        return reg.reset
    if reg.access == "ro":
        return live
    return 0


def test_every_register_reads_back_what_its_access_kind_says():
    dut = RegisterBank(DEMO)
    rng = random.Random(5)

    async def bench(ctx):
        ctx.set(dut.status.busy, 1)
        ctx.set(dut.status.code, 0x55)
        ctx.set(dut.count.value, 0x89ABCDEF)
        live, last = {"status": 1 | 0x55 << 4, "count": 0x89ABCDEF}, {}
        # after reset: rw registers hold their reset values
        assert await axi_read(ctx, dut, 0) == 5 | 0x123 << 8 | 1 << 31
        for reg in DEMO:
            if reg.access == "w1c":
                continue
            for value in (0xFFFFFFFF, 0, rng.getrandbits(32)):
                await axi_write(ctx, dut, reg.offset, value)
                got = await axi_read(ctx, dut, reg.offset)
                assert got == _expected_word(reg, value, live.get(reg.name)), (reg.name, hex(value), hex(got))
                last[reg.name] = value
        # the rw registers' ports carry the stored fields
        assert (ctx.get(dut.ctrl.mode), ctx.get(dut.ctrl.level), ctx.get(dut.ctrl.flag)) == \
            (last["ctrl"] & 7, (last["ctrl"] >> 8) & 0xFFF, last["ctrl"] >> 31)
        assert ctx.get(dut.word.value) == last["word"]

    run(dut, bench)


def test_read_only_and_unmapped_addresses_ignore_writes_and_read_zero_with_okay():
    dut = RegisterBank(DEMO, addr_width=8)

    async def bench(ctx):
        before = [await axi_read(ctx, dut, r.offset) for r in DEMO]
        for addr in (DEMO["ident"].offset, DEMO["status"].offset, DEMO.size, 0x80, 0xFC):
            await axi_write(ctx, dut, addr, 0xDEADBEEF)
        assert [await axi_read(ctx, dut, r.offset) for r in DEMO] == before
        for addr in (DEMO.size, 0x80, 0xFC):
            assert await axi_read(ctx, dut, addr) == 0
        # address bits 1:0 are ignored
        assert await axi_read(ctx, dut, DEMO["ident"].offset + 3) == 0xC0FFEE01

    run(dut, bench)


def test_wstrb_writes_only_the_strobed_bytes():
    dut = RegisterBank(DEMO)
    off = DEMO["word"].offset

    async def bench(ctx):
        word = 0x11223344
        await axi_write(ctx, dut, off, word)
        for strb in range(16):
            value = random.Random(strb).getrandbits(32)
            await axi_write(ctx, dut, off, value, strb)
            mask = sum(0xFF << 8 * k for k in range(4) if strb >> k & 1)
            word = (word & ~mask) | (value & mask)
            assert await axi_read(ctx, dut, off) == word, bin(strb)
        # a pulse fires only where its byte is strobed
        await axi_write(ctx, dut, DEMO["cmd"].offset, 0x1, strb=0b1110)
        assert ctx.get(dut.cmd.go) == 0

    run(dut, bench)


@pytest.mark.parametrize("aw_at,w_at,hold", [(0, 0, 0), (0, 4, 3), (5, 0, 6), (2, 2, 1)])
def test_handshake_with_aw_and_w_apart_and_responses_held(aw_at, w_at, hold):
    dut = RegisterBank(DEMO)

    async def bench(ctx):
        cycles = await axi_write(ctx, dut, DEMO["word"].offset, 0xA5A5F00D, aw_at=aw_at, w_at=w_at, b_hold=hold)
        assert cycles >= max(aw_at, w_at) + 2 + hold
        assert ctx.get(dut.word.value) == 0xA5A5F00D
        assert await axi_read(ctx, dut, DEMO["word"].offset, ar_at=aw_at, r_hold=hold) == 0xA5A5F00D

    run(dut, bench)


def test_second_write_waits_for_the_first_response():
    """AW and W of write 2 are taken while write 1's B waits, but write 2 is applied only after B 1."""
    dut = RegisterBank(DEMO)
    off = DEMO["word"].offset

    async def bench(ctx):
        ctx.set(dut.awaddr, off)
        ctx.set(dut.wstrb, 0xF)
        for data in (1, 2):   # offer each write until both its AW and W are taken
            ctx.set(dut.wdata, data)
            aw_done = w_done = False
            while not (aw_done and w_done):
                ctx.set(dut.awvalid, int(not aw_done))
                ctx.set(dut.wvalid, int(not w_done))
                *_, awv, awr, wv, wr = await ctx.tick().sample(dut.awvalid, dut.awready, dut.wvalid, dut.wready)
                aw_done |= bool(awv and awr)
                w_done |= bool(wv and wr)
            ctx.set(dut.awvalid, 0)
            ctx.set(dut.wvalid, 0)
        for _ in range(4):   # B 1 waits; write 2 is held, not applied; no third AW/W would be taken
            await ctx.tick()
            assert ctx.get(dut.bvalid) and ctx.get(dut.word.value) == 1
            assert not ctx.get(dut.awready) and not ctx.get(dut.wready)
        ctx.set(dut.bready, 1)
        responses = 0
        for _ in range(6):
            *_, bv, br = await ctx.tick().sample(dut.bvalid, dut.bready)
            responses += bool(bv and br)
        assert responses == 2 and ctx.get(dut.word.value) == 2 and not ctx.get(dut.bvalid)

    run(dut, bench)


def test_pulse_w1c_and_read_strobe():
    dut = RegisterBank(DEMO)

    pulses = []

    async def watch(ctx):
        async for _, _, go, stop in ctx.tick().sample(dut.cmd.go, dut.cmd.stop):
            pulses.append((go, stop))

    async def bench(ctx):
        await axi_write(ctx, dut, DEMO["cmd"].offset, 0b10)
        await axi_write(ctx, dut, DEMO["cmd"].offset, 0b01)
        await ctx.tick()
        assert [k for k, p in enumerate(pulses) if p != (0, 0)] == [2, 5]   # one cycle each
        assert pulses[2] == (0, 1) and pulses[5] == (1, 0)
        # w1c: set by the input, held, cleared by writing 1, set wins over the clear
        flags = DEMO["flags"].offset
        ctx.set(dut.flags.err, 0b1010)
        await ctx.tick()
        ctx.set(dut.flags.err, 0)
        assert await axi_read(ctx, dut, flags) == 0b1010
        await axi_write(ctx, dut, flags, 0b0010)
        assert await axi_read(ctx, dut, flags) == 0b1000
        ctx.set(dut.flags.err, 0b1000)
        await axi_write(ctx, dut, flags, 0b1000)
        ctx.set(dut.flags.err, 0)
        assert await axi_read(ctx, dut, flags) == 0b1000
        # read strobe: one cycle, for its own register only
        strobes = []
        ctx.set(dut.araddr, DEMO["count"].offset)
        ctx.set(dut.arvalid, 1)
        ctx.set(dut.rready, 1)
        for _ in range(3):
            strobes.append(ctx.get(dut.count.read_strobe))
            ctx.set(dut.arvalid, 0)   # offered for one cycle: taken (arready is high)
            await ctx.tick()
        assert strobes == [1, 0, 0]
        assert await axi_read(ctx, dut, DEMO["word"].offset) is not None and not ctx.get(dut.count.read_strobe)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(watch, background=True)
    sim.add_testbench(bench)
    sim.run()


# ------------------------------------------------------------------ performance counters


def preset(ctx, registers, value):
    low, high, carry = registers
    ctx.set(low, value & 0xFFFFFFFF)
    ctx.set(high, value >> 32)
    ctx.set(carry, 0)


def count(ctx, registers):
    low, high, carry = registers
    return (ctx.get(high) + ctx.get(carry)) << 32 | ctx.get(low)


def test_perf_counters_count_with_enables_clear_and_latch_hi_on_lo_read():
    dut = PerfCounters(("a", "b"))

    async def bench(ctx):
        pattern = [random.Random(9).random() < 0.6 for _ in range(50)]
        for on in pattern:
            ctx.set(dut.a.count, int(on))
            ctx.set(dut.b.count, 1)
            await ctx.tick()
        ctx.set(dut.a.count, 0)
        ctx.set(dut.b.count, 0)
        assert (ctx.get(dut.a.lo), ctx.get(dut.b.lo)) == (sum(pattern), 50)
        assert ctx.get(dut.a.hi) == 0
        # just below 2**32: LO read latches HI; the counter carries afterwards, HI stays
        preset(ctx, dut.counts["a"], (7 << 32) | 0xFFFFFFFE)
        ctx.set(dut.a.count, 1)
        ctx.set(dut.a.lo_read, 1)
        lo = ctx.get(dut.a.lo)
        await ctx.tick()
        ctx.set(dut.a.lo_read, 0)
        for _ in range(3):
            await ctx.tick()
        assert (lo, ctx.get(dut.a.hi)) == (0xFFFFFFFE, 7)
        assert count(ctx, dut.counts["a"]) == (8 << 32) | 2 and ctx.get(dut.a.lo) == 2
        ctx.set(dut.a.lo_read, 1)
        await ctx.tick()
        ctx.set(dut.a.lo_read, 0)
        assert ctx.get(dut.a.hi) == 8
        # clear wins over counting and empties the latch
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        ctx.set(dut.a.count, 0)
        assert (ctx.get(dut.a.lo), ctx.get(dut.a.hi), ctx.get(dut.b.lo)) == (0, 0, 0)

    run(dut, bench)


@pytest.mark.parametrize("before_wrap", [-2, -1, 0, 1, 2, 3])
def test_perf_counter_lo_hi_read_is_the_count_whatever_the_cycle_of_the_carry(before_wrap):
    """A LO read ``before_wrap`` cycles before the low word wraps (negative: after it, while the carry
    to the high word is pending or just applied) gives HI:LO = the count in the cycle LO was sampled."""
    dut = PerfCounters(("a",))
    start = (5 << 32) | 0xFFFFFFFF

    async def bench(ctx):
        preset(ctx, dut.counts["a"], start - 3)
        ctx.set(dut.a.count, 1)
        ticks = 3 - before_wrap          # the low word wraps on the 4th edge
        for _ in range(ticks):
            await ctx.tick()
        lo = ctx.get(dut.a.lo)
        ctx.set(dut.a.lo_read, 1)
        await ctx.tick()
        ctx.set(dut.a.lo_read, 0)
        for _ in range(2):
            await ctx.tick()
        assert ctx.get(dut.a.hi) << 32 | lo == start - 3 + ticks

    run(dut, bench)


def test_perf_counters_refuse_bad_parameters():
    with pytest.raises(ConfigError, match="width must be in \\[33, 64\\], not 32"):
        PerfCounters(width=32)
    with pytest.raises(ConfigError, match="no duplicates"):
        PerfCounters(("a", "a"))


def test_accelerator_registers_64_bit_read_is_consistent_across_a_carry():
    params = {"macs": 8, "signed": True}
    dut = AcceleratorRegisters("mac-line", params)
    regmap = dut.bank.regmap

    async def bench(ctx):
        assert await axi_read(ctx, dut, 0) >> 16 == ID_MAGIC
        assert await axi_read(ctx, dut, regmap["design"].offset) == design_code("mac-line")
        assert [await axi_read(ctx, dut, PARAM_BASE + 4 * k) for k in range(3)] == [8, 1, 0]
        counter = dut.counters.counts["busy"]
        lo_off, hi_off = regmap["perf_busy_lo"].offset, regmap["perf_busy_hi"].offset
        ctx.set(dut.perf.busy, 1)
        for start in (0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF):
            preset(ctx, counter, (3 << 32) | start)
            lo = await axi_read(ctx, dut, lo_off)
            hi = await axi_read(ctx, dut, hi_off)
            assert count(ctx, counter) >= 4 << 32             # the carry happened before HI's read
            value = hi << 32 | lo
            assert (3 << 32) | start <= value <= (3 << 32) + start + 3, hex(value)
        # soft reset clears the counters
        ctx.set(dut.perf.busy, 0)
        await axi_write(ctx, dut, regmap["control"].offset, 0b01)
        assert await axi_read(ctx, dut, lo_off) == 0 and await axi_read(ctx, dut, hi_off) == 0

    run(dut, bench)


def test_regs_command_writes_the_header_and_table_of_a_configuration(tmp_path):
    """``attnforge regs DESIGN [generator options]``: the map of that configuration (a choice such as the
    feature map becomes its index), as a C header that compiles and a Markdown table."""
    from attnforge.cli import main
    from attnforge.linear_format import FEATURE_MAPS

    assert main(["regs", "vitcod", "--head-dim", "32", "--data-width", "64", "-o", str(tmp_path / "v")]) == 0
    header = (tmp_path / "v" / "attnforge_vitcod_regs.h").read_text()
    assert "#define ATTNFORGE_VITCOD_PARAM_HEAD_DIM_RESET 0x00000020u" in header
    assert "| PARAM_DATA_WIDTH | const | value | 31:0 | 0x40 |" in (tmp_path / "v" / "attnforge_vitcod_regs.md").read_text()
    assert main(["regs", "linear-decode", "--feature-map", FEATURE_MAPS[-1], "-o", str(tmp_path / "l")]) == 0
    header = (tmp_path / "l" / "attnforge_linear_decode_regs.h").read_text()
    assert f"#define ATTNFORGE_LINEAR_DECODE_PARAM_FEATURE_MAP_RESET 0x{len(FEATURE_MAPS) - 1:08x}u" in header
    gcc = shutil.which("gcc") or shutil.which("cc")
    return_code, output = _compile(gcc, header, '#include "regs.h"\n')
    assert return_code == 0, output
    with pytest.raises(SystemExit) as exc:       # only the accelerators have the standard map
        main(["regs", "mac-line"])
    assert exc.value.code == 2
