"""The ViT element-wise units (hw/vit/layernorm.py, hw/vit/eltwise.py): LayerNormUnit, GeluUnit, ResidualAddUnit.

Parameter checks, the cycle models by hand, amaranth.sim runs against ``attnforge.int_ops`` (with the
measured cycles against the cycle models), lint, and the cocotb testbench (tb/vit_eltwise_tb.py): in
``make test`` one small LayerNorm on Icarus, one small residual add on Verilator and one flipped-bit
mutant; the rest (larger configurations, every unit on both simulators, the other mutants) in
``make test-full``.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.errors import ConfigError
from attnforge.hw.designs import get_design
from attnforge.hw.verilog import write_verilog
from attnforge.hw.vit import (GeluUnit, GeluUnitConfig, LayerNormUnit, LayerNormUnitConfig, ResidualAddUnit,
                              ResidualAddUnitConfig)
from attnforge.int_ops import gelu_constants, layernorm_stats
from attnforge.numfmt import INT8, IntFormat, Requantizer
from attnforge.sim.lint import lint_verilog
from attnforge.sim.runner import run_cocotb, simulate
from attnforge.tb.mutants import FlipOutputBit

BUILD = Path(__file__).resolve().parents[1] / "build" / "test_sim"


# ------------------------------------------------------------------------------------------ parameters

@pytest.mark.parametrize("params,message", [
    (dict(lanes=0), r"LayerNorm unit lanes must be in \[1, 64\], not 0"),
    (dict(lanes=4, max_channels=10), "max_channels=10 must be a multiple of lanes=4"),
    (dict(max_channels=4000), "at most 812 channels of int16 fit"),
    (dict(isqrt_steps=32), r"isqrt_steps must be in \[1, 31\], not 32"),
    (dict(div_bits=0), r"div_bits must be in \[1, 48\], not 0"),
    (dict(multiplier_width=33), r"multiplier_width must be in \[1, 32\], not 33"),
])
def test_init_wrong_layernorm(params, message):
    with pytest.raises(ConfigError, match=message):
        LayerNormUnitConfig(**params)


def test_init_wrong_layernorm_type():
    with pytest.raises(TypeError, match="max_channels must be an integer, not 8.0"):
        LayerNormUnitConfig(max_channels=8.0)
    with pytest.raises(TypeError, match="needs a LayerNormUnitConfig"):
        LayerNormUnit(GeluUnitConfig())


@pytest.mark.parametrize("params,message", [
    (dict(lanes=65), r"GELU unit lanes must be in \[1, 64\], not 65"),
    (dict(t_width=21), r"GELU unit t_width must be in \[1, 20\], not 21"),
])
def test_init_wrong_gelu(params, message):
    with pytest.raises(ConfigError, match=message):
        GeluUnitConfig(**params)


@pytest.mark.parametrize("params,message", [
    (dict(lanes=0), r"residual add unit lanes must be in \[1, 64\], not 0"),
    (dict(a_width=33), r"residual add unit a_width must be in \[2, 32\], not 33"),
    (dict(out_width=1), r"residual add unit out_width must be in \[2, 32\], not 1"),
])
def test_init_wrong_residual_add(params, message):
    with pytest.raises(ConfigError, match=message):
        ResidualAddUnitConfig(**params)


def test_run_time_constants_are_checked():
    ln = LayerNormUnitConfig(lanes=4, max_channels=16)
    rq = Requantizer(3, 20)
    with pytest.raises(ConfigError, match=r"LayerNorm channels must be in \[4, 16\], not 20"):
        ln.check_channels(20)
    with pytest.raises(ConfigError, match="channels=6 must be a multiple of lanes=4"):
        ln.check_channels(6)
    with pytest.raises(ConfigError, match=r"LayerNorm eps E must be in \[0, 2305843009213693951\], not -1"):
        ln.check_constants([1] * 4, [0] * 4, rq, -1)
    with pytest.raises(ValueError, match="LayerNorm gamma"):
        ln.check_constants([1 << 15] * 4, [0] * 4, rq, 0)
    with pytest.raises(ConfigError, match="writes int16; this unit's requantizer writes int8"):
        ln.check_constants([1] * 4, [0] * 4, Requantizer(3, 20, IntFormat(16)), 0)
    gelu = GeluUnitConfig(t_width=4)
    with pytest.raises(ConfigError, match=r"GELU constant T must be in \[1, 15\], not 16"):
        gelu.check_constants(16, 3, rq)
    with pytest.raises(ConfigError, match=r"GELU constant C must be in \[0, 511\], not 512"):
        gelu.check_constants(3, 512, rq)
    add = ResidualAddUnitConfig()
    with pytest.raises(ConfigError, match="residual requantizer rq_a writes int8; this unit's requantizer writes int18"):
        add.golden([0], rq, [0], Requantizer(1, 0, IntFormat(18)))
    with pytest.raises(ConfigError, match=r"branch requantizer rq_b multiplier must be in \[0, 255\], not 256"):
        ResidualAddUnitConfig(multiplier_width=8).golden([0], Requantizer(1, 0, IntFormat(18)),
                                                         [0], Requantizer(256, 0, IntFormat(18), 16))


# ------------------------------------------------------------------------------------------ cycle models

def test_cycle_models_by_hand():
    # D = 192, P = 4: 48 input beats, STAT + SUM, 31 isqrt cycles, 1 + 48 + 1 divider cycles, 1 handover,
    # 48 issues, 7 stages; the next row's input starts after the handover
    ln = LayerNormUnitConfig()
    assert ln.row_latency(192) == 48 + 2 + 31 + 50 + 1 + 48 + 7 == 187
    assert ln.row_period(192) == 48 + 2 + 31 + 50 + 1 == 132
    # 4 isqrt iterations per cycle: 8 cycles; 8 quotient bits per cycle: 6 + 2
    assert LayerNormUnitConfig(lanes=8, isqrt_steps=4, div_bits=8).row_period(64) == 8 + 2 + 8 + 8 + 1
    assert LayerNormUnitConfig(lanes=2, max_channels=8).cycles(3, 4) == (2 + 2 + 31 + 50 + 1 + 2 + 7) + 2 * (2 + 2 + 31 + 50 + 1)
    assert GeluUnitConfig().cycles(10) == 16
    assert ResidualAddUnitConfig().cycles(10) == 13
    with pytest.raises(ConfigError, match=r"LayerNorm rows must be >= 1, not 0"):
        LayerNormUnitConfig().cycles(0, 192)


# ------------------------------------------------------------------------------------------ amaranth.sim

def _run_stream(dut, inputs: dict, constants: dict, *, setup=None, cycles: int):
    """Drive each input stream with its beats back to back (o always ready); outputs and transfer cycles."""
    out, t_in, t_out = [], {k: [] for k in inputs}, []

    async def bench(ctx):
        for port, value in constants.items():
            ctx.set(getattr(dut, port), value)
        if setup:
            await setup(ctx)
        ctx.set(dut.o.ready, 1)
        pos = {k: 0 for k in inputs}
        for cyc in range(cycles):
            for k, beats in inputs.items():
                port = getattr(dut, k)
                ctx.set(port.valid, pos[k] < len(beats))
                if pos[k] < len(beats):
                    ctx.set(port.payload, beats[pos[k]])
            _, _, *sampled = await ctx.tick().sample(*[getattr(dut, k).ready for k in inputs],
                                                     *[getattr(dut, k).valid for k in inputs], dut.o.valid, dut.o.payload)
            n = len(inputs)
            for j, k in enumerate(inputs):
                if sampled[j] and sampled[n + j]:
                    pos[k] += 1
                    t_in[k].append(cyc)
            if sampled[-2]:
                out.append([int(v) for v in sampled[-1]])
                t_out.append(cyc)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out, t_in, t_out


def _layernorm_sim(cfg, rows, gamma, beta, rq, eps):
    d, p = len(gamma), cfg.lanes
    dut = LayerNormUnit(cfg)

    async def load(ctx):
        for j in range(d // p):
            ctx.set(dut.param.valid, 1)
            ctx.set(dut.param.payload, {"index": j, "gamma": list(gamma[j * p:(j + 1) * p]),
                                        "beta": list(beta[j * p:(j + 1) * p])})
            await ctx.tick()
        ctx.set(dut.param.valid, 0)

    beats = [list(r[j * p:(j + 1) * p]) for r in rows for j in range(d // p)]
    out, t_in, t_out = _run_stream(dut, {"i": beats}, dict(channels=d, eps=eps, multiplier=rq.multiplier,
                                                           shift=rq.shift),
                                   setup=load, cycles=cfg.cycles(len(rows), d) + 20)
    return np.array(out).reshape(len(rows), d), t_in["i"], t_out


def test_layernorm_unit_amaranth_sim_edge_rows_and_cycles():
    """Rows where sigma is 1 (r = 2**48, beyond the divider's 48 bits) and 0 (r = 0), a constant row, full
    scale and random rows, bit-exact against int_ops.layernorm; rows start every row_period, the first takes
    row_latency, all of them cycles(rows)."""
    cfg = LayerNormUnitConfig(lanes=2, max_channels=2, isqrt_steps=8, div_bits=16)     # one beat per row
    rng = np.random.default_rng(5)
    gamma, beta = [int(v) for v in rng.integers(-2 ** 15, 2 ** 15, 2)], [int(v) for v in rng.integers(-2 ** 31, 2 ** 31, 2)]
    rq = Requantizer(40000, 38)
    sigma_one = [[0, 1], [5, 4]]
    assert list(layernorm_stats(np.array(sigma_one))["sigma"]) == [1, 1]
    rows = sigma_one + [[7, 7], [-32768, 32767], [32767, -32768]] + rng.integers(-300, 300, (3, 2)).tolist()
    for eps in (0, 2):      # eps 0: the constant row has sigma 0; eps 2: sigma 1 (E alone)
        got, t_in, t_out = _layernorm_sim(cfg, rows, gamma, beta, rq, eps)
        want = cfg.golden(np.array(rows), gamma, beta, rq, eps)
        assert (got == want).all(), (got, want)
        assert np.diff(t_in).tolist() == [cfg.row_period(2)] * (len(rows) - 1)
        assert t_out[0] - t_in[0] + 1 == cfg.row_latency(2)
        assert t_out[-1] - t_in[0] + 1 == cfg.cycles(len(rows), 2)


def test_layernorm_unit_amaranth_sim_random_channels_under_max():
    """D = 6 on a unit built for 12 (run-time channel count), random rows and constants."""
    cfg = LayerNormUnitConfig(lanes=3, max_channels=12, isqrt_steps=31, div_bits=48)
    rng = np.random.default_rng(6)
    gamma, beta = rng.integers(-2 ** 15, 2 ** 15, 6).tolist(), rng.integers(-2 ** 24, 2 ** 24, 6).tolist()
    rq, eps = Requantizer.from_scale(2.0 ** -22), 12345
    rows = rng.integers(-2 ** 15, 2 ** 15, (3, 6)).tolist()
    got, t_in, t_out = _layernorm_sim(cfg, rows, gamma, beta, rq, eps)
    assert (got == cfg.golden(np.array(rows), gamma, beta, rq, eps)).all()
    assert t_out[1] - t_in[0] + 1 == cfg.row_latency(6) == 2 * 2 + 2 + 1 + 3 + 1 + 7
    assert t_in[2] - t_in[0] == cfg.row_period(6) == 2 + 2 + 1 + 3 + 1


def test_gelu_unit_amaranth_sim():
    cfg = GeluUnitConfig(lanes=2, t_width=12)
    t, c, scale = gelu_constants(0.01)
    rq = Requantizer.from_scale(scale / 0.06)        # int8 up to 7.6
    rng = np.random.default_rng(7)
    values = [-32768, 32767, 0, 1, -1, t, -t, t + 1, -t - 1, t - 1] + rng.integers(-3 * t, 3 * t, 20).tolist()
    beats = [values[i:i + 2] for i in range(0, len(values), 2)]
    out, t_in, t_out = _run_stream(GeluUnit(cfg), {"i": beats}, dict(t=t, c=c, multiplier=rq.multiplier, shift=rq.shift),
                                   cycles=len(beats) + 10)
    assert out == [cfg.golden(b, t, c, rq) for b in beats]
    assert len({v for b in out for v in b}) > 10            # not all saturated
    assert t_out[-1] - t_in["i"][0] + 1 == cfg.cycles(len(beats))


def test_residual_add_unit_amaranth_sim():
    cfg = ResidualAddUnitConfig(lanes=3)
    wide = cfg.wide_format
    rq_a, rq_b = Requantizer(50000, 16, wide), Requantizer(40000, 8, wide)
    rng = np.random.default_rng(8)
    a = [-32768, 32767, 32767, -32768] + rng.integers(-2 ** 15, 2 ** 15, 20).tolist()
    b = [-128, 127, -128, 127] + rng.integers(-128, 128, 20).tolist()
    beats_a, beats_b = [a[i:i + 3] for i in range(0, 24, 3)], [b[i:i + 3] for i in range(0, 24, 3)]
    out, t_in, t_out = _run_stream(ResidualAddUnit(cfg), {"a": beats_a, "b": beats_b},
                                   dict(a_multiplier=rq_a.multiplier, a_shift=rq_a.shift,
                                        b_multiplier=rq_b.multiplier, b_shift=rq_b.shift), cycles=20)
    want = [cfg.golden(np.array(x), rq_a, np.array(y), rq_b).tolist() for x, y in zip(beats_a, beats_b)]
    assert out == want
    assert out[0][:2] == [-32768, 32767]                     # saturated sums: each operand alone fits int16
    assert -32768 < rq_a(-32768) and -32768 < rq_b(-128) and rq_a(32767) < 32767 and rq_b(127) < 32767
    assert t_out[-1] - t_in["a"][0] + 1 == cfg.cycles(8)


# ------------------------------------------------------------------------------------------ lint

@pytest.mark.parametrize("component,top", [
    (lambda: LayerNormUnit(LayerNormUnitConfig(lanes=2, max_channels=8, isqrt_steps=2, div_bits=3)), "layernorm_unit"),
    pytest.param(lambda: LayerNormUnit(LayerNormUnitConfig(lanes=1, max_channels=1)), "layernorm_unit",
                 marks=pytest.mark.full),       # one beat per row: no zero-width address or index
    pytest.param(lambda: GeluUnit(GeluUnitConfig(lanes=2)), "gelu_unit", marks=pytest.mark.full),
    pytest.param(lambda: ResidualAddUnit(ResidualAddUnitConfig(lanes=2)), "residual_add_unit", marks=pytest.mark.full),
], ids=["layernorm", "layernorm-one-beat", "gelu", "residual_add"])
def test_lint_clean(tmp_path, component, top):
    result = lint_verilog(write_verilog(component(), top, tmp_path / f"{top}.v"), top)
    assert result.clean, result.messages


# ------------------------------------------------------------------------------------------ cocotb

SMALL = {"layernorm-unit": dict(lanes=2, max_channels=8, isqrt_steps=4, div_bits=4),
         "gelu-unit": dict(lanes=1, t_width=12),
         "residual-add-unit": dict(lanes=1)}
LARGE = {"layernorm-unit": dict(lanes=4, max_channels=192),                  # DeiT-Tiny rows
         "gelu-unit": dict(lanes=4),
         "residual-add-unit": dict(lanes=4)}
# make test: the two small cases on Icarus (its build takes a second; Verilator runs every case in make test-full)
IN_MAKE_TEST = {("layernorm-unit", "icarus"), ("residual-add-unit", "icarus")}
CASES = [pytest.param(name, params, sim, marks=() if (name, sim) in IN_MAKE_TEST and params is SMALL[name]
                      else pytest.mark.full, id=f"{name}-{'small' if params is SMALL[name] else 'large'}-{sim}")
         for name in SMALL for params in (SMALL[name], LARGE[name]) for sim in ("verilator", "icarus")]


@pytest.mark.parametrize("name,params,simulator", CASES)
def test_rtl_matches_int_ops(name, params, simulator):
    """tb/vit_eltwise_tb.py: random constants and inputs, edge cases, idle cycles and backpressure, cycles."""
    design = get_design(name)
    rounds = 2 if simulator == "icarus" and name == "layernorm-unit" else 6
    result = simulate(design, design.make_config(**params), seed=11, simulator=simulator, build_root=BUILD,
                      tb_params={"rounds": rounds})
    assert result.passed, f"see {result.log}"
    assert result.report["output_digest"]


MUTANTS = ["residual-add-unit", "gelu-unit", "layernorm-unit"]


@pytest.mark.parametrize("name", [n if n == MUTANTS[0] else pytest.param(n, marks=pytest.mark.full) for n in MUTANTS])
def test_testbench_catches_a_flipped_bit(name):
    """The scoreboard can fail: the unit with the lowest output bit flipped (tb/mutants.py) fails."""
    design = get_design(name)
    config = design.make_config(**SMALL[name])
    result = run_cocotb(FlipOutputBit(design.build(config)), top=design.top,
                        config_name=f"{design.top}_flipoutputbit", test_module=design.testbench,
                        params={"config": dataclasses.asdict(config), "seed": 3, "rounds": 1},
                        simulator="icarus", build_root=BUILD, seed=3)
    assert (result.tests, result.failed) == (1, 1), f"see {result.log}"
    assert "RTL" in result.log.read_text() and "!= golden" in result.log.read_text()


def test_int8_output_format_is_the_models():
    """The units write what intvit's IntLayerNorm/IntGelu (int8) and IntAdd (stream + 2 bits, then int16) do."""
    assert LayerNormUnitConfig().output_layout.elem_shape.width == INT8.width
    assert GeluUnitConfig().output_layout.elem_shape.width == INT8.width
    assert ResidualAddUnitConfig().wide_format == IntFormat(18)


# ------------------------------------------------------------------------------------------ a compiled model

@pytest.mark.full
def test_units_reproduce_a_compiled_model():
    """The constants of a compiled integer ViT (1 block, width 32, fixed random weights, random images) in the
    units, in amaranth.sim: norm1 on the embedding, add1 of embedding and proj, i-GELU of fc1, each equal to
    the model's own trace (``intvit.trace_image``), not only to int_ops."""
    import torch

    from attnforge.algo.vitcod.intvit import compile_int_vit, dense_masks, trace_image
    from attnforge.algo.vitcod.vit import ViTConfig, VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=1,
                                        num_heads=2, mlp_ratio=2.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.08)
    qm = compile_int_vit(model, dense_masks(model), torch.randn(8, 1, 16, 16))
    trace = {k: v[0] for k, v in trace_image(qm, torch.randn(1, 16, 16)).items() if k.startswith(("embed", "blocks.0"))}
    blk = qm.blocks[0]
    rows = trace["embed"][:6]
    ln = LayerNormUnitConfig(lanes=4, max_channels=32, isqrt_steps=4, div_bits=8)
    got, _, _ = _layernorm_sim(ln, rows.tolist(), blk.norm1.gamma.tolist(), blk.norm1.beta.tolist(),
                               blk.norm1.requant, blk.norm1.eps)
    assert (got == trace["blocks.0.norm1"][:6]).all()

    add = ResidualAddUnitConfig(lanes=4)
    a, b = trace["embed"][:4].reshape(-1, 4).tolist(), trace["blocks.0.proj"][:4].reshape(-1, 4).tolist()
    out, _, _ = _run_stream(ResidualAddUnit(add), {"a": a, "b": b},
                            dict(a_multiplier=blk.add1.a_rq.multiplier, a_shift=blk.add1.a_rq.shift,
                                 b_multiplier=blk.add1.b_rq.multiplier, b_shift=blk.add1.b_rq.shift), cycles=len(a) + 10)
    assert out == trace["blocks.0.add1"][:4].reshape(-1, 4).tolist()

    gelu = GeluUnitConfig(lanes=4)
    q = trace["blocks.0.fc1"][:4].reshape(-1, 4).tolist()
    out, _, _ = _run_stream(GeluUnit(gelu), {"i": q}, dict(t=blk.gelu.t, c=blk.gelu.c, multiplier=blk.gelu.requant.multiplier,
                                                           shift=blk.gelu.requant.shift), cycles=len(q) + 10)
    assert out == trace["blocks.0.gelu"][:4].reshape(-1, 4).tolist()
    assert len(np.unique(trace["blocks.0.gelu"])) > 20        # the activations use the int8 range
