"""The host-side compiler (algo/vitcod/model_program.py): a compiled integer ViT's MLP half, as a program
of the model-level accelerator, computes the integer golden model's own trace bit for bit (reference
executor here; the RTL in make test-full), dense and with 75 %-pruned linear layers as CSR; and a whole
block with the heads' output replayed from the trace (the ATTENTION instruction is milestone 2)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from attnforge.algo.vitcod.intvit import compile_int_vit, trace_image
from attnforge.algo.vitcod.model_program import (ATTENTION_BLOCK_TENSORS, BLOCK_TENSORS, MLP_TENSORS, RegionAllocator,
                                                 block_program, mlp_half_program)
from attnforge.algo.vitcod.synthetic import polarized_mask_set
from attnforge.algo.vitcod.vit import PRESETS, VisionTransformer
from attnforge.errors import ConfigError
from attnforge.hw.vitmodel import DIGITS, Matmul, ReferenceMachine, VitModelConfig, program_cycles

BUILD = Path(__file__).resolve().parents[1] / "build" / "test_sim"


def _digits_model(prune: float | None):
    """A 1-layer digits ViT (65 tokens, width 64, MLP 128) with fixed random weights spread wider than
    timm's init, 90 % attention masks; ``prune``: that fraction of fc1's and fc2's smallest weights zeroed."""
    torch.manual_seed(0)
    model = VisionTransformer(PRESETS["digits"], depth=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.08)
        if prune:
            for lin in (model.blocks[0].mlp.fc1, model.blocks[0].mlp.fc2):
                w = lin.weight
                w[w.abs() <= w.abs().flatten().kthvalue(int(prune * w.numel())).values] = 0
    masks = polarized_mask_set(1, 4, 65, 0.9, seed=0)
    model.set_masks(torch.from_numpy(masks.keep))
    calib = torch.rand(32, 1, 32, 32) * 2 - 1
    qm = compile_int_vit(model.eval(), masks, calib)
    return qm, trace_image(qm, calib[3])


@pytest.fixture(scope="module", params=[None, 0.75], ids=["dense", "pruned75"])
def model(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    qm, tr = _digits_model(request.param)
    torch.set_num_threads(threads)
    return qm, tr, request.param is not None


@pytest.fixture(scope="module")
def compiled(model):
    qm, tr, sparse = model
    program = mlp_half_program(qm, 0, tr["blocks.0.add1"][0], DIGITS, sparse=sparse)
    expected = {name: tr[f"blocks.0.{name}"][0] for name in MLP_TENSORS}
    return qm, program, expected, sparse


def _block_expected(tr) -> dict:
    """The trace's tensors of block 0 as the block program STOREs them; qkv rebuilt from q, k, v."""
    q, k, v = (tr[f"blocks.0.{n}"][0] for n in "qkv")                 # [H, N, d] each
    qkv = np.stack([q, k, v]).transpose(2, 0, 1, 3).reshape(q.shape[1], -1)   # [N, 3 * H * d]
    return {"qkv": qkv, **{name: tr[f"blocks.0.{name}"][0] for name in BLOCK_TENSORS if name != "qkv"}}


@pytest.fixture(scope="module")
def compiled_block(model):
    qm, tr, sparse = model
    attn = tr["blocks.0.attn"][0]                                      # [H, N, d]
    attn = attn.transpose(1, 0, 2).reshape(attn.shape[1], -1)
    program = block_program(qm, 0, tr["embed"][0], attn, DIGITS, sparse=sparse)
    return qm, program, _block_expected(tr), sparse


def test_block_program_reproduces_the_trace(compiled_block):
    """norm1, qkv, proj, add1 and the MLP half on the reference executor, the heads' output replayed."""
    _, program, expected, _ = compiled_block
    stored = ReferenceMachine(DIGITS).run(program)
    assert len(stored) == len(BLOCK_TENSORS)
    for name, got in zip(BLOCK_TENSORS, stored):
        np.testing.assert_array_equal(got, expected[name], err_msg=name)


def test_mlp_half_program_reproduces_the_trace(compiled):
    qm, program, expected, sparse = compiled
    stored = ReferenceMachine(DIGITS).run(program)
    for name, got in zip(MLP_TENSORS, stored):
        np.testing.assert_array_equal(got, expected[name], err_msg=name)
    mms = [ins for ins in program if isinstance(ins, Matmul)]
    assert [m.dense for m in mms] == [not sparse] * 2
    if sparse:     # the ticket's zeros are not streamed: about a quarter of the weight beats, fewer cycles
        kept = sum(sum(m.nnz_per_column()) for m in mms)
        assert kept <= 0.26 * sum(m.src.cols * m.dst.cols for m in mms)
        dense = mlp_half_program(qm, 0, program[0].data, DIGITS)
        beats = [sum(max(k, 1) for m in p if isinstance(m, Matmul) for k in m.nnz_per_column()) for p in (program, dense)]
        assert beats[0] < 0.3 * beats[1]                      # weight beats (assemble: one each)
        cycles = [sum(c.total for c in program_cycles(p, DIGITS) if c.op.startswith("MATMUL")) for p in (program, dense)]
        assert cycles[0] < 0.35 * cycles[1]


def test_compiler_refuses_bad_inputs(compiled):
    qm, program, expected, _ = compiled
    x = program[0].data
    with pytest.raises(ConfigError, match=r"layer must be in \[0, 0\], not 1"):
        mlp_half_program(qm, 1, x, DIGITS)
    with pytest.raises(ConfigError, match=r"residual must be \[tokens, 64\]"):
        mlp_half_program(qm, 0, x[:, :32], DIGITS)
    small = VitModelConfig(lines=1, macs=8, max_tokens=65, max_cols=128, ln_channels=64, buffer_tiles=300)
    with pytest.raises(ConfigError, match="activation buffer \\(300 tiles\\) is full: gelu \\(65 x 128\\) needs tiles 288..431"):
        mlp_half_program(qm, 0, x, small)
    with pytest.raises(ConfigError, match="is full"):
        RegionAllocator(small)(65, 128 * 20)


@pytest.fixture(scope="module")
def compiled_attention_block(model):
    """The whole block with its heads as ATTENTION instructions (the RTL's attention unit)."""
    qm, tr, sparse = model
    program = block_program(qm, 0, tr["embed"][0], None, DIGITS, sparse=sparse)
    attn = tr["blocks.0.attn"][0]
    expected = {**_block_expected(tr), "attn": attn.transpose(1, 0, 2).reshape(attn.shape[1], -1)}
    return qm, program, expected, sparse


@pytest.mark.full
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("what", ["mlp_half", "block", "attention_block"])
def test_compiled_program_runs_bit_exact_on_the_rtl(what, compiled, compiled_block, compiled_attention_block,
                                                    tmp_path):
    """The compiled program on the RTL (Verilator, the digits configuration, full rate): every tensor equal
    to the integer ViT's trace and to the reference executor, cycles per instruction equal to the model.
    (Idle host beats and backpressure: tests/rtl/test_vitmodel.py's small cases.)"""
    from attnforge.hw.designs import get_design
    from attnforge.sim.runner import simulate
    from attnforge.tb.vitmodel_case import MlpCase, save_program_case

    _, program, expected, sparse = {"mlp_half": compiled, "block": compiled_block,
                                    "attention_block": compiled_attention_block}[what]
    names = {"mlp_half": MLP_TENSORS, "block": BLOCK_TENSORS, "attention_block": ATTENTION_BLOCK_TENSORS}[what]
    path = save_program_case(tmp_path / "program.npz", MlpCase(program, expected, {}), names, DIGITS)
    result = simulate(get_design("vit-model"), DIGITS, seed=3, tb_params={"program_file": str(path)},
                      simulator="verilator", build_root=BUILD, testcase="mlp_half_full_rate_cycles_match_the_model")
    assert result.tests == 1 and result.passed, f"see {result.log}"
    assert result.report["measured"] == result.report["model"]
    print({k: result.report[k] for k in ("ops", "measured", "total")})
