"""Issue 17, milestone 2 on the host side: the ATTENTION instruction (isa.Attention: checks, beats, the
reference executor with the ViTCoD head golden model as its head) and the whole-image compiler
(model_program: patch embedding, every block with its heads as ATTENTION instructions, the final
LayerNorm), each STOREd tensor compared with the integer ViT's own trace (algo/vitcod/intvit.py), an
implementation the compiler does not share. The RTL does not run ATTENTION yet."""

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
from attnforge.hw.vitmodel import DIGITS, Attention, ReferenceMachine, assemble, disassemble, instruction_cycles
from attnforge.hw.vitmodel.isa import Region
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
    assert len(stored) == len(names) == 2 + 2 * len(ATTENTION_BLOCK_TENSORS) + 1
    got = dict(zip(names, stored))
    np.testing.assert_array_equal(got["patch"][1:], tr["patch"][0], err_msg="patch")   # row 0: the class token's
    np.testing.assert_array_equal(got["embed"], tr["embed"][0], err_msg="embed")
    for layer in range(2):
        for name, want in _expected(tr, layer).items():
            np.testing.assert_array_equal(got[f"blocks.{layer}.{name}"], want, err_msg=f"blocks.{layer}.{name}")
    np.testing.assert_array_equal(got["norm"][0], tr["norm"][0], err_msg="norm")
    logits = model_logits(qm, got["norm"])
    np.testing.assert_array_equal(logits, tr["logits"][0])
    assert int(np.argmax(logits)) == int(np.argmax(tr["logits"][0]))


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
    # each ATTENTION: header + key order + 2 N + 1 half-row pointers + nnz columns, P indices a beat
    P = DIGITS.lanes
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
        (dict(dense_entries=np.full(n, 10 ** 4)), "dense_entries"),
    ]
    if good.n_global > 0 and good.nnz:
        cases.append((dict(csr=bad_csr), f"CSR columns must be polarized positions in [G={good.n_global}"))
    for change, message in cases:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
            assemble([dataclasses.replace(good, **change)], DIGITS)
    with pytest.raises(ConfigError, match="no head function"):
        ReferenceMachine(DIGITS).run([good])
    with pytest.raises(ConfigError, match="ATTENTION has no cycle model yet"):
        instruction_cycles(good, DIGITS)
    assert good.out_rq.out == INT8


def test_model_program_refuses_a_float_image(model):
    qm, _, xq = model
    with pytest.raises(ConfigError, match="one int8 image"):
        model_program(qm, xq.astype(np.float32), DIGITS)
