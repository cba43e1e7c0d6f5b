"""hw/common/crossing.py in amaranth.sim on two unrelated clocks (the destination faster, then slower):
every beat and register access arrives once, in order, with its payload; random pauses on every
handshake; a monitor checks AXI's rules on both sides (valid held until ready, payload stable while
it waits, valid independent of ready); a withdrawn beat is not taken later."""

import random

import pytest
from amaranth.sim import Simulator

from attnforge.errors import ConfigError
from attnforge.hw.common.crossing import AxiLiteCrossing, AxisCrossing, ChannelCrossing

SRC_NS = 10.0
RATIOS = [4.3, 17.1]          # destination clock periods (ns): faster, slower than the source's 10 ns


def _clocks(dut, dst_ns):
    sim = Simulator(dut)
    sim.add_clock(SRC_NS * 1e-9, domain="sync")
    sim.add_clock(dst_ns * 1e-9, domain="fast")
    return sim


class _Held:
    """AXI's rules for one channel seen from the receiving side, checked at every edge."""

    def __init__(self, ctx, valid, ready, payload, name):
        self.ctx, self.valid, self.ready, self.payload, self.name = ctx, valid, ready, payload, name
        self.waiting = None

    def step(self, ready: bool):
        """Set ready, check the channel; the payload if a handshake happens at the coming edge."""
        ctx = self.ctx
        ctx.set(self.ready, 0)
        v0 = ctx.get(self.valid)
        ctx.set(self.ready, 1)
        assert ctx.get(self.valid) == v0, f"{self.name}: valid follows ready combinationally"
        ctx.set(self.ready, int(ready))
        valid, data = ctx.get(self.valid), [ctx.get(p) for p in self.payload]
        if self.waiting is not None:
            assert valid, f"{self.name}: valid dropped before ready"
            assert data == self.waiting, f"{self.name}: payload changed while waiting ({self.waiting} -> {data})"
        self.waiting = data if valid and not ready else None
        return data if valid and ready else None


@pytest.mark.parametrize("dst_ns", RATIOS)
def test_stream_crossing_keeps_every_beat_in_order(dst_ns):
    dut = AxisCrossing(3, s_domain="sync", m_domain="fast")
    rng = random.Random(int(dst_ns * 10))
    beats = [(rng.getrandbits(24), rng.getrandbits(3), rng.getrandbits(1)) for _ in range(300)]
    got = []

    async def source(ctx):
        for data, keep, last in beats:
            while rng.random() < 0.3:
                ctx.set(dut.s_axis_tvalid, 0)
                await ctx.tick("sync")
            ctx.set(dut.s_axis_tvalid, 1)
            ctx.set(dut.s_axis_tdata, data)
            ctx.set(dut.s_axis_tkeep, keep)
            ctx.set(dut.s_axis_tlast, last)
            await ctx.tick("sync").until(dut.s_axis_tready)
        ctx.set(dut.s_axis_tvalid, 0)

    async def sink(ctx):
        ch = _Held(ctx, dut.m_axis_tvalid, dut.m_axis_tready,
                   (dut.m_axis_tdata, dut.m_axis_tkeep, dut.m_axis_tlast), "m_axis")
        while len(got) < len(beats):
            beat = ch.step(rng.random() < 0.6)
            if beat is not None:
                got.append(tuple(beat))
            await ctx.tick("fast")

    sim = _clocks(dut, dst_ns)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert got == beats


@pytest.mark.parametrize("dst_ns", RATIOS)
def test_stream_crossing_withdrawn_beat_is_not_taken_later(dst_ns):
    """A beat offered while nobody takes it, then withdrawn (the board bridge's STREAM timeout), then
    new beats: only the new ones arrive, however long the destination waits before it is ready."""
    dut = AxisCrossing(1, s_domain="sync", m_domain="fast")
    got = []

    async def source(ctx):
        ctx.set(dut.s_axis_tvalid, 1)
        ctx.set(dut.s_axis_tdata, 0x11)
        for _ in range(20):
            await ctx.tick("sync")
        ctx.set(dut.s_axis_tvalid, 0)
        for _ in range(30):              # the payload kept a while (the bridge keeps it), then changed
            await ctx.tick("sync")
        ctx.set(dut.s_axis_tdata, 0x22)
        for _ in range(30):
            await ctx.tick("sync")
        for value in (0x55, 0x66):
            ctx.set(dut.s_axis_tvalid, 1)
            ctx.set(dut.s_axis_tdata, value)
            await ctx.tick("sync").until(dut.s_axis_tready)
        ctx.set(dut.s_axis_tvalid, 0)

    async def sink(ctx):
        ticks = 0
        while ticks * dst_ns < 20 * SRC_NS:      # the beat waits (valid up), nobody takes it
            await ctx.tick("fast")
            ticks += 1
        assert ctx.get(dut.m_axis_tvalid) and ctx.get(dut.m_axis_tdata) == 0x11
        while ticks * dst_ns < 70 * SRC_NS:
            await ctx.tick("fast")
            ticks += 1
        assert not ctx.get(dut.m_axis_tvalid)
        ctx.set(dut.m_axis_tready, 1)
        while ticks * dst_ns < 200 * SRC_NS:
            if ctx.get(dut.m_axis_tvalid):
                got.append(ctx.get(dut.m_axis_tdata))
            await ctx.tick("fast")
            ticks += 1

    sim = _clocks(dut, dst_ns)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert got == [0x55, 0x66]


@pytest.mark.parametrize("dst_ns", RATIOS)
def test_axil_crossing_writes_and_reads_a_slave_in_the_other_domain(dst_ns):
    """A master in ``sync`` writes and reads back 8 registers of a slave in ``fast`` (random ready and
    response delays, AW and W on their own; addresses >= 0x20 answer SLVERR): each access reaches the
    slave once, the data and responses come back."""
    dut = AxiLiteCrossing(6, s_domain="sync", m_domain="fast")
    rng = random.Random(int(dst_ns * 7))
    ops = [("w", rng.randrange(0, 0x28, 4), rng.getrandbits(32), rng.getrandbits(4)) for _ in range(40)]
    ops += [("r", a, 0, 0) for _, a, _, _ in ops[:20]]
    rng.shuffle(ops)
    seen = []            # (op, addr, data, strb) as the slave saw them
    answers = []         # (op, resp, data) as the master saw them

    async def master(ctx):
        for op, addr, data, strb in ops:
            if op == "w":
                ctx.set(dut.s_axil_awaddr, addr)
                ctx.set(dut.s_axil_wdata, data)
                ctx.set(dut.s_axil_wstrb, strb)
                aw = w = False
                ctx.set(dut.s_axil_awvalid, 1)
                if rng.random() < 0.5:   # W a few cycles after AW
                    for _ in range(rng.randrange(4)):
                        await ctx.tick("sync")
                ctx.set(dut.s_axil_wvalid, 1)
                while not (aw and w):
                    _, _, a_ok, w_ok = await ctx.tick("sync").sample(dut.s_axil_awready, dut.s_axil_wready)
                    aw, w = aw or a_ok, w or w_ok
                    ctx.set(dut.s_axil_awvalid, int(not aw))
                    ctx.set(dut.s_axil_wvalid, int(not w))
                ch = _Held(ctx, dut.s_axil_bvalid, dut.s_axil_bready, (dut.s_axil_bresp,), "b")
                while True:
                    got = ch.step(rng.random() < 0.5)
                    await ctx.tick("sync")
                    if got is not None:
                        answers.append(("w", got[0], 0))
                        ctx.set(dut.s_axil_bready, 0)
                        break
            else:
                ctx.set(dut.s_axil_araddr, addr)
                ctx.set(dut.s_axil_arvalid, 1)
                await ctx.tick("sync").until(dut.s_axil_arready)
                ctx.set(dut.s_axil_arvalid, 0)
                ch = _Held(ctx, dut.s_axil_rvalid, dut.s_axil_rready, (dut.s_axil_rresp, dut.s_axil_rdata), "r")
                while True:
                    got = ch.step(rng.random() < 0.5)
                    await ctx.tick("sync")
                    if got is not None:
                        answers.append(("r", got[0], got[1]))
                        ctx.set(dut.s_axil_rready, 0)
                        break

    async def slave(ctx):
        regs = {}
        aw_ch = _Held(ctx, dut.m_axil_awvalid, dut.m_axil_awready, (dut.m_axil_awaddr,), "aw")
        w_ch = _Held(ctx, dut.m_axil_wvalid, dut.m_axil_wready, (dut.m_axil_wdata, dut.m_axil_wstrb), "w")
        ar_ch = _Held(ctx, dut.m_axil_arvalid, dut.m_axil_arready, (dut.m_axil_araddr,), "ar")
        aw = w = ar = None
        b = r = None           # (delay, payload)
        while True:
            a_got = aw_ch.step(aw is None and rng.random() < 0.5)
            w_got = w_ch.step(w is None and rng.random() < 0.5)
            r_got = ar_ch.step(ar is None and r is None and rng.random() < 0.5)
            ctx.set(dut.m_axil_bvalid, int(b is not None and b[0] == 0))
            ctx.set(dut.m_axil_bresp, b[1] if b is not None else 0)
            ctx.set(dut.m_axil_rvalid, int(r is not None and r[0] == 0))
            ctx.set(dut.m_axil_rresp, r[1][0] if r is not None else 0)
            ctx.set(dut.m_axil_rdata, r[1][1] if r is not None else 0)
            b_taken = b is not None and b[0] == 0 and ctx.get(dut.m_axil_bready)
            r_taken = r is not None and r[0] == 0 and ctx.get(dut.m_axil_rready)
            await ctx.tick("fast")
            aw, w, ar = aw if a_got is None else a_got[0], w if w_got is None else w_got, \
                ar if r_got is None else r_got[0]
            if b_taken:
                b = None
            elif b is not None and b[0]:
                b = (b[0] - 1, b[1])
            if r_taken:
                r = None
            elif r is not None and r[0]:
                r = (r[0] - 1, r[1])
            if aw is not None and w is not None and b is None:
                seen.append(("w", aw, w[0], w[1]))
                regs[aw] = w[0]
                b = (rng.randrange(3), 2 if aw >= 0x20 else 0)
                aw = w = None
            if ar is not None and r is None:
                seen.append(("r", ar, 0, 0))
                r = (rng.randrange(3), (2 if ar >= 0x20 else 0, regs.get(ar, 0)))
                ar = None

    sim = _clocks(dut, dst_ns)
    sim.add_testbench(master)
    sim.add_testbench(slave, background=True)
    sim.run()
    assert seen == ops
    regs, expected = {}, []
    for op, addr, data, _ in ops:
        if op == "w":
            regs[addr] = data
        expected.append((op, 2 if addr >= 0x20 else 0, regs.get(addr, 0) if op == "r" else 0))
    assert answers == expected


def test_crossing_refuses_bad_widths():
    with pytest.raises(ConfigError, match="crossing data bytes must be >= 1, not 0"):
        AxisCrossing(0, s_domain="sync", m_domain="fast")
    with pytest.raises(ConfigError, match="crossing address bits must be >= 1, not 0"):
        AxiLiteCrossing(0, s_domain="sync", m_domain="fast")


def test_channel_crossing_delivers_each_transfer_once():
    """ChannelCrossing alone, a source that always has the next transfer and a destination always
    ready: as many handshakes on each side, the destination's valid never up twice for one request,
    and about one transfer per round trip (each level through two flip-flops each way)."""
    dut = ChannelCrossing(s_domain="sync", m_domain="fast")
    counts = {"s": 0, "m": 0}

    async def source(ctx):
        ctx.set(dut.s_valid, 1)
        for _ in range(400):
            _, _, ready = await ctx.tick("sync").sample(dut.s_ready)
            counts["s"] += ready
            assert counts["s"] in (counts["m"], counts["m"] - 1), counts

    async def sink(ctx):
        ctx.set(dut.m_ready, 1)
        while True:
            _, _, valid = await ctx.tick("fast").sample(dut.m_valid)
            counts["m"] += valid
            assert counts["m"] <= counts["s"] + 1, counts

    sim = _clocks(dut, 4.3)
    sim.add_testbench(source)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert 400 / 12 < counts["s"] <= 400 / 4, counts
