"""Issue 17, milestone 2: the ATTENTION instruction (isa.Attention: checks, beats, the reference executor
with the ViTCoD head golden model as its head; the RTL's attention unit in the Amaranth simulator, bit for
bit against the reference, its cycles against the cycle model) and the whole-image compiler
(model_program: patch embedding, every block with its heads as ATTENTION instructions, the final
LayerNorm), each STOREd tensor compared with the integer ViT's own trace (algo/vitcod/intvit.py), an
implementation the compiler does not share."""

import dataclasses

import numpy as np
import pytest
import torch

from attnforge.algo.vitcod.intvit import compile_int_vit, quantize_image, trace_image
from attnforge.algo.vitcod.model_program import (ATTENTION_BLOCK_TENSORS, attention_instructions, block_program,
                                                 model_logits, model_program, model_tensors, reference_machine)
from attnforge.algo.vitcod.synthetic import polarized_mask_set
from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer
from attnforge.errors import ConfigError
from attnforge.formats.csr import CSR
from attnforge.hw.vitmodel import (DIGITS, Attention, Load, ReferenceMachine, Store, VitModelConfig, assemble,
                                   disassemble, instruction_cycles)
from attnforge.hw.vitmodel.isa import Region, raw_halves_to_int32
from attnforge.numfmt import INT8


@pytest.fixture(scope="module")
def model():
    """A 2-layer digits ViT (65 tokens, width 64, 4 heads of 16) with fixed random weights, 90 % masks
    of a seeded polarized model (G and the sparse rows differ per head), and the trace of one image."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = VisionTransformer(PRESETS["digits"], depth=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.08)
    masks = polarized_mask_set(2, 4, 65, 0.9, seed=3)
    net.set_masks(torch.from_numpy(masks.keep))
    calib = torch.rand(32, 1, 32, 32) * 2 - 1
    qm = compile_int_vit(net.eval(), masks, calib)
    image = calib[5]
    tr = trace_image(qm, image)
    torch.set_num_threads(threads)
    return qm, tr, quantize_image(qm, image[None])[0]


def _as_rows(t):
    """[H, N, d] -> [N, H d] (heads concatenated, as proj takes them)."""
    return t.transpose(1, 0, 2).reshape(t.shape[1], -1)


def _expected(tr, layer: int) -> dict:
    p = f"blocks.{layer}."
    q, k, v = (tr[p + n][0] for n in "qkv")
    qkv = np.stack([q, k, v]).transpose(2, 0, 1, 3).reshape(q.shape[1], -1)
    return {"qkv": qkv, "attn": _as_rows(tr[p + "attn"][0]),
            **{n: tr[p + n][0] for n in ATTENTION_BLOCK_TENSORS if n not in ("qkv", "attn")}}


def test_block_with_attention_instructions_reproduces_the_trace(model):
    """Every head of block 1 as an ATTENTION instruction: attn and every other tensor equal the trace."""
    qm, tr, _ = model
    program = block_program(qm, 1, tr["blocks.0.add2"][0], None, DIGITS)
    assert sum(isinstance(i, Attention) for i in program) == 4
    stored = reference_machine(DIGITS).run(program)
    expected = _expected(tr, 1)
    assert len(stored) == len(ATTENTION_BLOCK_TENSORS)
    for name, got in zip(ATTENTION_BLOCK_TENSORS, stored):
        np.testing.assert_array_equal(got, expected[name], err_msg=name)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_whole_image_program_reproduces_every_tensor_and_the_class(model, sparse):
    qm, tr, xq = model
    program = model_program(qm, xq, DIGITS, sparse=sparse)
    stored = reference_machine(DIGITS).run(program)
    names = model_tensors(qm)
    assert len(stored) == len(names) == 2 + 2 * len(ATTENTION_BLOCK_TENSORS) + 1 + 2
    got = dict(zip(names, stored))
    np.testing.assert_array_equal(got["patch"][1:], tr["patch"][0], err_msg="patch")   # row 0: the class token's
    np.testing.assert_array_equal(got["embed"], tr["embed"][0], err_msg="embed")
    for layer in range(2):
        for name, want in _expected(tr, layer).items():
            np.testing.assert_array_equal(got[f"blocks.{layer}.{name}"], want, err_msg=f"blocks.{layer}.{name}")
    np.testing.assert_array_equal(got["norm"][0], tr["norm"][0], err_msg="norm")
    np.testing.assert_array_equal(model_logits(qm, got["norm"]), tr["logits"][0])      # the host's classifier
    # the classifier instruction: the int32 logits as two int16 halves, padded to P = 8 channels with zeros
    classes = tr["logits"].shape[1]
    assert got["logits.lo"].shape == got["logits.hi"].shape == (1, -(-classes // DIGITS.lanes) * DIGITS.lanes)
    logits = raw_halves_to_int32(got["logits.lo"], got["logits.hi"])[0]
    np.testing.assert_array_equal(logits[:classes], tr["logits"][0])
    assert not logits[classes:].any()


def test_a_wrong_head_is_caught(model):
    """The comparison can fail: a head function off by one LSB in one output changes attn."""
    qm, tr, _ = model
    from attnforge.algo.vitcod.model_program import head_function

    def off_by_one(*args):
        out = np.array(head_function(*args), np.int64)
        out[3, 2] = out[3, 2] + 1 if out[3, 2] < 127 else out[3, 2] - 1
        return out

    program = block_program(qm, 0, tr["embed"][0], None, DIGITS)
    stored = ReferenceMachine(DIGITS, attention=off_by_one).run(program)
    attn = stored[ATTENTION_BLOCK_TENSORS.index("attn")]
    assert (attn != _expected(tr, 0)["attn"]).sum() == 4              # one entry per head


def test_attention_beats_round_trip(model):
    qm, tr, _ = model
    program = block_program(qm, 0, tr["embed"][0], None, DIGITS)
    beats = assemble(program, DIGITS)
    back = disassemble(beats, DIGITS)
    assert assemble(back, DIGITS) == beats
    for a, b in zip([i for i in program if isinstance(i, Attention)], [i for i in back if isinstance(i, Attention)]):
        assert (a.head, a.heads, a.n_global, a.qkv, a.dst, a.exp_rq, a.out_rq) == \
               (b.head, b.heads, b.n_global, b.qkv, b.dst, b.exp_rq, b.out_rq)
        np.testing.assert_array_equal(a.order, b.order)
        np.testing.assert_array_equal(a.csr.row_ptr, b.csr.row_ptr)
        np.testing.assert_array_equal(a.csr.col_idx, b.csr.col_idx)
    # each ATTENTION: header + key order + 2 N + 1 half-row pointers + nnz columns, P / 2 indices a beat
    P = DIGITS.lanes // 2
    att = [i for i in program if isinstance(i, Attention)]
    assert len(att) == 4
    payload = sum(1 + -(-i.qkv.rows // P) + -(-(2 * i.qkv.rows + 1) // P) + -(-i.nnz // P) for i in att)
    others = assemble([i for i in program if not isinstance(i, Attention)], DIGITS)
    assert len(beats) == len(others) + payload


def test_attention_instruction_checks_name_the_field(model):
    qm, tr, _ = model
    blk = qm.blocks[0]
    qkv, out = Region(0, 65, 192), Region(300, 65, 64)
    good = attention_instructions(blk, qkv, out)[1]
    n = 65
    bad_csr = CSR(np.asarray(good.csr.row_ptr), np.full(good.nnz, max(good.n_global - 1, 0), np.int32), (n, n))
    cases = [
        (dict(order=np.zeros(n, np.int64)), "key order must be a permutation of 0..64"),
        (dict(head=4), "head must be"),
        (dict(dst=Region(300, 65, 48)), "must be 3 H d and H d"),
        (dict(dst=Region(100, 65, 64)), "overlaps the qkv source"),
        (dict(n_global=66), "global keys G"),
        (dict(exp_rq=good.out_rq), "exponent requantizer must be a numfmt.Requantizer to"),
        (dict(balance="fair"), "balance 'fair' is not one of"),
        (dict(csr=np.zeros((n, n), bool)), "the sparse part must be a formats.csr.CSR, not ndarray"),
    ]
    if good.n_global > 0 and good.nnz:
        cases.append((dict(csr=bad_csr), f"CSR columns must be polarized positions in [G={good.n_global}"))
    for change, message in cases:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
            assemble([dataclasses.replace(good, **change)], DIGITS)
    with pytest.raises(ConfigError, match="no head function"):
        ReferenceMachine(DIGITS).run([good])
    no_unit = dataclasses.replace(DIGITS, att_head_dim=0)
    with pytest.raises(ConfigError, match="no attention unit"):
        assemble([good], no_unit)
    with pytest.raises(ConfigError, match="attention unit is built for att_head_dim=8"):
        assemble([good], dataclasses.replace(DIGITS, att_head_dim=8))
    assert good.out_rq.out == INT8


def test_model_program_refuses_a_float_image(model):
    qm, _, xq = model
    with pytest.raises(ConfigError, match="one int8 image"):
        model_program(qm, xq.astype(np.float32), DIGITS)


# ------------------------------------------------------------------ the RTL (Amaranth simulator)

#: P = 4 lanes, heads of d = 4: the unit's stream beats are 32 bits (one row vector, or two indices)
SMALL = VitModelConfig(lines=1, macs=4, max_tokens=9, max_cols=48, ln_channels=16, buffer_tiles=128,
                       att_head_dim=4, att_macs=4)


def _heads_program(cfg, n, seed):
    """LOAD a random int8 qkv [n, 3 H d] (H = 2), one ATTENTION per head (one with G = N and no CSR
    entry, one with G = 0; the two balance modes), STORE the output."""
    from attnforge.formats.csr import dense_to_csr
    from attnforge.softmax_int import exp_requantizer, out_requantizer

    rng = np.random.default_rng(seed)
    H, d = 2, cfg.att_head_dim
    qkv, out = Region(0, n, 3 * H * d), Region(64, n, H * d)
    program = [Load(qkv, rng.integers(-60, 60, (n, 3 * H * d)))]
    for h, g in enumerate((n, 0)):
        keep = rng.random((n, n)) < 0.4
        keep[:, :g] = False
        program.append(Attention(qkv, out, h, H, rng.permutation(n), g, dense_to_csr(keep),
                                 exp_requantizer(0.05, 0.05, d), out_requantizer(0.05, 0.03),
                                 balance=("balanced", "none")[h]))
    return program + [Store(out)]


def _run_rtl(cfg, program, *, idle=0.0, stall=0.0, seed=0):
    """The program's beats into the accelerator (``idle``: chance of an idle host cycle, ``stall``: of
    o.ready low); returns the STOREd vectors and each instruction's cycles (retire to retire)."""
    from amaranth.sim import Simulator

    from attnforge.hw.vitmodel.accelerator import VitModelAccelerator

    dut, beats = VitModelAccelerator(cfg), assemble(program, cfg)
    rng = np.random.default_rng(seed)
    got, retired_at = [], [0]

    async def bench(ctx):
        k = 0
        for cycle in range(50_000):
            offer = k < len(beats) and rng.random() >= idle
            ctx.set(dut.i.valid, offer)
            ctx.set(dut.i.payload, beats[k] if offer else 0)
            ctx.set(dut.o.ready, rng.random() >= stall)
            await ctx.delay(1e-8)
            k += offer and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append([ctx.get(dut.o.payload[j]) for j in range(cfg.lanes)])
            assert not ctx.get(dut.error), f"error at cycle {cycle}"
            await ctx.tick()
            if ctx.get(dut.retired) == len(retired_at):
                retired_at.append(cycle + 1)
            if len(retired_at) == len(program) + 1:
                return
        raise AssertionError("the program did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.asarray(got), np.diff(retired_at)


def test_attention_on_the_rtl_bit_exact_and_cycles_exact():
    """Two heads through the RTL's attention unit at full rate: the STOREd output equals the reference
    executor's (the ViTCoD head golden model), and every instruction takes the cycle model's cycles."""
    program = _heads_program(SMALL, 5, seed=1)
    want = reference_machine(SMALL).run(program)[0]
    got, cycles = _run_rtl(SMALL, program)
    np.testing.assert_array_equal(got.reshape(want.shape), want)
    model = [instruction_cycles(ins, SMALL).total for ins in program]
    assert list(cycles) == model


@pytest.mark.full
@pytest.mark.parametrize("n", [1, 9])
def test_attention_on_the_rtl_under_idle_and_backpressure(n):
    """The same with the host idle 30 % of the cycles and o stalled 40 %: still bit-exact."""
    program = _heads_program(SMALL, n, seed=n)
    want = reference_machine(SMALL).run(program)[0]
    got, _ = _run_rtl(SMALL, program, idle=0.3, stall=0.4, seed=n)
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_the_buffer_does_not_grow_with_the_depth(model):
    """Every block's scratch starts at the same tile, so the 2-layer model's program needs the buffer tiles
    of its first block alone (it grew by a block's scratch per layer: 1880 tiles for the 4-layer digits ViT,
    where 576 hold it)."""
    qm, _, xq = model
    one = dataclasses.replace(qm, blocks=qm.blocks[:1])

    def tiles(m):
        return max(reg.end(DIGITS.lanes) for ins in model_program(m, xq, DIGITS)
                   for reg in (getattr(ins, k, None) for k in ("src", "dst", "dst_hi", "a", "b", "qkv"))
                   if hasattr(reg, "end"))

    # 65 x 64 is 9 x 8 tiles: the two residuals, norm1, qkv (x 3), the heads' output, proj; then the final
    # norm's one row group, and the logits' two halves (one row of 10 classes padded to 16: 2 tiles each)
    assert tiles(qm) == tiles(one) == 72 * (2 + 1 + 3 + 1 + 1) + 8 + 2 * 2
