"""The model-level accelerator without the RTL (hw/vitmodel): parameters, the ISA's beats both ways, bad
programs refused with clear errors, the reference executor against int_ops, the cycle model by hand.
The RTL runs are tests/rtl/test_vitmodel.py (make test-full)."""


import numpy as np
import pytest

from attnforge.errors import ConfigError
from attnforge.formats.csr import dense_to_csr
from attnforge.hw.vitmodel import (DEIT_TINY, DIGITS, Add, Gelu, LayerNorm, Load, Matmul, Region, ReferenceMachine,
                                   Store, VitModelConfig, assemble, check_program, disassemble, instruction_cycles,
                                   program_cycles)
from attnforge.hw.vitmodel.isa import (HEADER_FIELDS, HEADER_WIDTH, WEIGHT_FIELDS, Op, int32_to_raw_halves, pack,
                                      raw_halves_to_int32, unpack)
from attnforge.hw.vitmodel.program import DECODE_CYCLES, READ_LATENCY
from attnforge.hw.vit.matmul import matmul_cycles
from attnforge.int_ops import INT16
from attnforge.numfmt import INT8, IntFormat, Requantizer
from attnforge.tb.vitmodel_case import TENSORS, load_program_case, mlp_case, save_program_case

SMALL = VitModelConfig(lines=1, macs=2, max_tokens=5, max_cols=8, ln_channels=4, buffer_tiles=80)


def _case(cfg=SMALL, seed=0, **kw):
    shape = dict(tokens=cfg.max_tokens, dim=cfg.ln_channels, hidden=cfg.max_cols)
    return mlp_case(cfg, seed, **{**shape, **kw})


# ------------------------------------------------------------------------------ parameters

@pytest.mark.parametrize("params, message", [
    (dict(lines=0), "ViT matmul lines"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(max_tokens=1000, lines=1, macs=2), "row groups"),
    (dict(ln_channels=6, macs=4), "ln_channels=6 must be a multiple"),
    (dict(ln_channels=300, max_cols=256), "ln_channels must be in"),
    (dict(buffer_tiles=10), "buffer_tiles=10 cannot hold"),
    (dict(multiplier_width=33), "multiplier_width"),
])
def test_init_wrong_parameters(params, message):
    with pytest.raises(ConfigError, match=message):
        VitModelConfig(**params)


def test_presets():
    assert DIGITS.lanes == 8 and DIGITS.max_tokens == 65 and DIGITS.max_cols == 256
    assert DEIT_TINY.max_tokens == 197 and DEIT_TINY.ln_channels == 192 and DEIT_TINY.max_cols == 768
    # header, weight beat, tensor beat (8 x int16), gamma/beta beat (8 x 48 bits): the widest sets the stream
    assert DIGITS.beat_width == max(HEADER_WIDTH, 8 * 48) == 384


# ------------------------------------------------------------------------------ the ISA's beats

def test_fields_round_trip_and_range():
    values = dict(opcode=Op.GELU, a=3, b=65535, d=7, rows=65, cols=256, out_cols=1, dense=1, out8=0,
                  m0=(1 << 32) - 1, s0=62, m1=5, s1=0, k0=(1 << 61) - 1, k1=(1 << 20) - 1, head=3, heads=255,
                  g=65535, nnz=(1 << 20) - 1, raw=1)
    assert unpack(HEADER_FIELDS, pack(HEADER_FIELDS, values)) == values
    w = dict(value=-128, index=255, last=1, bias=-(1 << 31), multiplier=1, shift=3)
    assert unpack(WEIGHT_FIELDS, pack(WEIGHT_FIELDS, w)) == w
    with pytest.raises(ConfigError, match="beat field k1 must be in"):
        pack(HEADER_FIELDS, dict(k1=1 << 20))
    with pytest.raises(ConfigError, match="beat field value"):
        pack(WEIGHT_FIELDS, dict(value=128))


def test_assemble_disassemble_round_trip():
    cfg = VitModelConfig(lines=2, macs=2, max_tokens=13, max_cols=64, ln_channels=16, buffer_tiles=512)
    case = _case(cfg, tokens=13, dim=16, hidden=64)
    beats = assemble(case.program, cfg)
    back = disassemble(beats, cfg)
    assert assemble(back, cfg) == beats
    assert [type(i) for i in back] == [type(i) for i in case.program]
    assert (back[0].data == case.program[0].data).all()
    csr_back, csr = back[9].weight, case.program[9].weight
    assert (csr_back.row_ptr == csr.row_ptr).all() and (csr_back.values == csr.values).all()
    assert csr.row_ptr[-1] == csr.row_ptr[-2]          # the empty channel went out as one zero beat, came back empty
    # payload beats: LOAD rows*cols/P, LAYERNORM D/P, dense fc1 out*in, CSR max(nnz, 1) per channel, the raw
    # matmul's P x D; 16 headers
    assert len(beats) == (16 + 13 * 16 // 4 + 16 // 4 + 64 * 16 + 16 * 64 + int(np.maximum(np.diff(csr.row_ptr), 1).sum())
                          + 4 * 16)


def test_program_file_for_the_testbench_is_plain_data(tmp_path):
    """What the compiled-program RTL test hands the testbench: beats and int64 arrays in an ``.npz`` read
    without pickle; the program that comes back assembles to the same beats and runs to the same tensors."""
    cfg = VitModelConfig(lines=1, macs=4, max_tokens=5, max_cols=16, ln_channels=8, buffer_tiles=80)
    case = _case(cfg, tokens=5, dim=8, hidden=16)
    path = save_program_case(tmp_path / "p.npz", case, TENSORS, cfg)
    back, names = load_program_case(path, cfg)
    assert names == TENSORS and assemble(back.program, cfg) == assemble(case.program, cfg)
    assert set(back.expected) == set(case.expected)
    assert all(np.array_equal(back.expected[k], case.expected[k]) for k in case.expected)
    ours, theirs = ReferenceMachine(cfg).run(back.program), ReferenceMachine(cfg).run(case.program)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_disassemble_refuses_a_reserved_opcode():
    with pytest.raises(ConfigError, match="opcode 8 is not an instruction"):
        disassemble([pack(HEADER_FIELDS, dict(opcode=8))], SMALL)
    with pytest.raises(ConfigError, match="stream ends inside an ATTENTION's key order"):
        disassemble([pack(HEADER_FIELDS, dict(opcode=Op.ATTENTION, rows=2, cols=8, heads=1))], SMALL)
    with pytest.raises(ConfigError, match="stream ends inside a LOAD"):
        disassemble([pack(HEADER_FIELDS, dict(opcode=Op.LOAD, rows=2, cols=2))], SMALL)


# ------------------------------------------------------------------------------ bad programs

def _bad(program, message):
    with pytest.raises((ValueError, TypeError), match=message):   # ConfigError, or numfmt's ValueError
        check_program(program, SMALL)


def test_bad_programs_are_refused():
    rq8, rq18 = Requantizer(1, 0), Requantizer(1, 0, IntFormat(18))
    x = np.zeros((2, 4), np.int64)
    _bad([Load(Region(78, 5, 4), np.zeros((5, 4), np.int64))], r"instruction 0 \(LOAD\) destination at tile 78 takes 6")
    _bad([Load(Region(0, 2, 3), np.zeros((2, 3), np.int64))], "cols=3 must be a multiple of the lanes P=2")
    _bad([Load(Region(0, 6, 4), np.zeros((6, 4), np.int64))], "rows must be in")
    _bad([Load(Region(0, 2, 4), np.zeros((2, 2), np.int64))], "needs integers of shape")
    _bad([Load(Region(0, 2, 4), np.full((2, 4), 40000))], "int16")
    _bad([Store(Region(0, 1, 2)), "ATTENTION"], "instruction 1 must be one of")
    _bad([LayerNorm(Region(0, 2, 8), Region(8, 2, 8), np.ones(8), np.ones(8), rq8, 0)], "channels D must be in")
    _bad([LayerNorm(Region(0, 2, 4), Region(1, 2, 4), np.ones(4), np.ones(4), rq8, 0)], "overlaps the source")
    _bad([LayerNorm(Region(0, 2, 4), Region(8, 2, 4), np.ones(4), np.ones(4), rq18, 0)], "writes int18")
    _bad([Gelu(Region(0, 2, 4), Region(8, 2, 4), 0, 5, rq8)], "GELU constant T")
    _bad([Gelu(Region(0, 2, 4), Region(8, 2, 8), 3, 5, rq8)], "must match")
    _bad([Add(Region(0, 2, 4), Region(4, 2, 4), Region(8, 2, 4), rq8, rq18)], "rq_a writes int8")
    _bad([Add(Region(0, 2, 4), Region(4, 2, 4), Region(5, 2, 4), rq18, rq18)], "overlaps the branch b")
    w = np.ones((8, 4), np.int8)
    mm = dict(src=Region(0, 2, 4), dst=Region(8, 2, 8), weight=w, bias=np.zeros(8, np.int64),
              requant=(Requantizer(1, 0, INT16),) * 8)
    check_program([Matmul(**mm)], SMALL)
    _bad([Matmul(**{**mm, "weight": np.ones((4, 8), np.int8)})], r"shape \(8, 4\) \[out, in\]")
    _bad([Matmul(**{**mm, "dst": Region(8, 3, 8)})], "source rows 2 != destination rows 3")
    _bad([Matmul(**{**mm, "requant": (Requantizer(1, 0, INT16),) * 7})], "7 requantizers for 8")
    _bad([Matmul(**{**mm, "requant": (Requantizer(1, 0, IntFormat(32), 32),) * 8})], "int8 or int16")
    _bad([Matmul(**{**mm, "requant": (Requantizer(1 << 20, 0, INT16, 32),) * 8})], "multiplier must be in")
    _bad([Matmul(**{**mm, "bias": np.full(8, 1 << 40)})], "bias has values")
    _bad([Matmul(**{**mm, "weight": dense_to_csr(np.ones((8, 5), np.int8))})], "CSR weight of shape")
    # a raw (int32) matmul: its high halves' region, and sums that stay within int32
    raw = dict(mm, requant=None, dst_hi=Region(16, 2, 8))
    check_program([Matmul(**raw)], SMALL)
    _bad([Matmul(**{**raw, "dst_hi": None})], "needs dst_hi, the region of its sums' high halves")
    _bad([Matmul(**{**mm, "dst_hi": Region(16, 2, 8)})], "dst_hi .* belongs to a raw MATMUL")
    _bad([Matmul(**{**raw, "dst_hi": Region(16, 2, 4)})], "dst_hi is 2 x 4, the source 2 x 8")
    _bad([Matmul(**{**raw, "dst_hi": Region(10, 2, 8)})], "overlaps the low halves' region")
    _bad([Matmul(**{**raw, "dst_hi": Region(78, 2, 8)})], "dst_hi at tile 78 takes 4 tiles")
    room = (1 << 31) - 1 - 4 * 128          # |bias| + sum |w| x 128 at most int32's maximum
    check_program([Matmul(**{**raw, "bias": np.full(8, -room)})], SMALL)
    _bad([Matmul(**{**raw, "bias": np.full(8, room + 1)})], "output channel 0's sums can reach 2147483648")


def test_raw_matmul_halves_give_back_the_int32_sums():
    """The reference executor's raw MATMUL writes each int32 sum as two int16 halves that
    ``raw_halves_to_int32`` joins back, at both ends of int32 and around the halves' boundaries."""
    room = (1 << 31) - 1 - 4 * 127 * 128
    bias = np.array([room, -room, 0, -1, 1 << 15, -(1 << 15), 65535, -65536], np.int64)
    x = np.array([[127, -128, 5, 0], [-128, -128, -128, -128]], np.int64)
    w = np.array([[127, -128, 1, 0]] * 8, np.int8)
    program = [Load(Region(0, 2, 4), x), Matmul(Region(0, 2, 4), Region(8, 2, 8), w, bias, None, Region(16, 2, 8)),
               Store(Region(8, 2, 8)), Store(Region(16, 2, 8))]
    lo, hi = ReferenceMachine(SMALL).run(program)
    want = x @ w.T.astype(np.int64) + bias
    assert lo.min() >= -(1 << 15) and lo.max() < 1 << 15 and hi.min() >= -(1 << 15) and hi.max() < 1 << 15
    np.testing.assert_array_equal(raw_halves_to_int32(lo, hi), want)
    assert want.max() > (1 << 31) - 70000 and want.min() < -(1 << 31) + 70000      # both ends of int32
    # the halves of values whose bit patterns are known by hand
    lo, hi = int32_to_raw_halves([-1, 65535, -65536, (1 << 31) - 1, -(1 << 31), 32768])
    assert lo.tolist() == [-1, -1, 0, -1, 0, -32768] and hi.tolist() == [-1, 0, -1, 32767, -32768, 0]
    assert disassemble(assemble(program, SMALL), SMALL)[1].dst_hi == Region(16, 2, 8)


def test_reference_refuses_an_int16_matmul_source():
    x = np.full((2, 4), 300)
    program = [Load(Region(0, 2, 4), x),
               Matmul(Region(0, 2, 4), Region(8, 2, 2), np.ones((2, 4), np.int8), np.zeros(2, np.int64),
                      (Requantizer(1, 0, INT8),) * 2)]
    with pytest.raises(ConfigError, match=r"instruction 1 \(MATMUL\).*values in \[300, 300\].*int8"):
        ReferenceMachine(SMALL).run(program)


# ------------------------------------------------------------------------------ reference executor

@pytest.mark.parametrize("cfg, shape", [(SMALL, dict(tokens=5, dim=4, hidden=8)),
                                        (DIGITS, dict(tokens=65, dim=64, hidden=256)),
                                        (VitModelConfig(lines=1, macs=3, max_tokens=7, max_cols=12, ln_channels=6,
                                                        buffer_tiles=96), dict(tokens=7, dim=6, hidden=12))])
def test_reference_executor_matches_int_ops(cfg, shape):
    """Through the buffer's tiles (regions at odd bases, padding rows and channels) the program computes
    what int_ops computes directly, tensor by tensor."""
    case = mlp_case(cfg, 5, **shape)
    stored = ReferenceMachine(cfg).run(case.program)
    assert len(stored) == len(TENSORS)
    for name, got in zip(TENSORS, stored):
        np.testing.assert_array_equal(got, case.expected[name], err_msg=name)
    assert not (case.expected["fc2_dense"] == case.expected["fc2_csr"]).all()   # the two fc2 forms differ


# ------------------------------------------------------------------------------ cycle model

def test_cycle_model_by_hand():
    cfg = SMALL                                          # P = 2
    ln = cfg.layernorm
    rq8 = Requantizer(1, 0)
    assert instruction_cycles(Load(Region(0, 5, 4), np.zeros((5, 4), np.int64)), cfg).total == 2 + 10
    assert instruction_cycles(Store(Region(0, 5, 4)), cfg).total == 2 + 1 + 10
    g = instruction_cycles(Gelu(Region(0, 5, 4), Region(20, 5, 4), 3, 5, rq8), cfg)
    assert g.total == 2 + 1 + 10 + 6
    a = instruction_cycles(Add(Region(0, 5, 4), Region(6, 5, 4), Region(12, 5, 4), Requantizer(1, 0, IntFormat(18)),
                               Requantizer(1, 0, IntFormat(18))), cfg)
    assert a.total == 2 + 1 + 10 + 3
    n = instruction_cycles(LayerNorm(Region(0, 5, 4), Region(6, 5, 4), np.ones(4), np.ones(4), rq8, 0), cfg)
    # 2 beats per row, 31 isqrt + 48 + 2 divider cycles: latency 2*2 + 31 + 50 + 10, period 2 + 31 + 50 + 3
    assert n.unit == (4 + 31 + 50 + 10) + 4 * (2 + 31 + 50 + 3) and n.total == 2 + 2 + 1 + n.unit
    csr = dense_to_csr(np.array([[1, 0, 0, 2], [0, 0, 0, 0], [3, 3, 3, 3]], np.int8))
    m = instruction_cycles(Matmul(Region(0, 5, 4), Region(6, 5, 3), csr, np.zeros(3, np.int64),
                                  (Requantizer(1, 0, INT16),) * 3), cfg)
    # 3 row groups: 3 * 4 activation beats, 3 * (2 + 1 + 4) weight cycles, latency 6
    assert m.unit == 12 + 21 + 6 and m.total == DECODE_CYCLES + READ_LATENCY + m.unit and m.op == "MATMUL_CSR"


def test_program_cycles_add_up():
    case = _case()
    cycles = program_cycles(case.program, SMALL)
    assert [c.op for c in cycles][:4] == ["LOAD", "LAYERNORM", "STORE", "MATMUL_DENSE"]
    fc2 = case.program[7]
    assert cycles[7].unit == matmul_cycles(SMALL.matmul, [fc2.src.cols] * fc2.dst.cols, 5, fc2.src.cols).total


def test_accelerator_ports_follow_the_config():
    from amaranth.hdl import Shape

    from attnforge.hw.vitmodel.accelerator import VitModelAccelerator, header_layout

    acc = VitModelAccelerator(DIGITS)
    assert Shape.cast(acc.i.payload.shape()).width == DIGITS.beat_width
    assert len(acc.o.payload) == DIGITS.lanes and header_layout().size == HEADER_WIDTH
    with pytest.raises(TypeError, match="needs a VitModelConfig"):
        VitModelAccelerator(DIGITS.matmul)


@pytest.mark.full
def test_deit_tiny_shapes_in_the_cycle_model():
    """DEIT_TINY takes a 197-token, D = 192, MLP 768 half; its dense matmuls keep 197 of 200 lanes busy."""
    case = mlp_case(DEIT_TINY, 0, tokens=197, dim=192, hidden=768)
    cycles = program_cycles(case.program, DEIT_TINY)
    dense = [c for c in cycles if c.op == "MATMUL_DENSE"]
    assert len(dense) == 2 and all(0.97 <= c.ideal / c.total <= 197 / 200 for c in dense)
    assert cycles[1].unit == DEIT_TINY.layernorm.cycles(197, 192)
