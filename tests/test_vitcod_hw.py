"""ViTCoD accelerator generator: parameter checks, lint-clean Verilog, no torch in hw/."""

import subprocess
import sys

import pytest

from attnforge.hw.vitcod import VitcodAccelerator, VitcodConfig
from attnforge.hw.verilog import write_verilog
from attnforge.sim.lint import lint_verilog
from attnforge.softmax_int import EXP_BITS, reciprocal


@pytest.mark.parametrize("field,value", [
    ("macs", 8.0), ("head_dim", "64"), ("max_tokens", None), ("max_nnz", True), ("dense_lines", 1.5),
    ("sparse_lines", "2"), ("data_width", 64.0), ("decoder", 1), ("decoder_heads", None),
])
def test_init_wrong_type(field, value):
    with pytest.raises(TypeError, match=field.split("_")[0]):
        VitcodConfig(**{field: value})


@pytest.mark.parametrize("params,match", [
    (dict(macs=6), "power of two"),
    (dict(macs=0), r"macs \(M\) must be in"),
    (dict(head_dim=60), "multiple of macs"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(max_tokens=5000), "max_tokens"),
    (dict(max_nnz=70000), "max_nnz"),
    (dict(dense_lines=0), "dense_lines"),
    (dict(sparse_lines=65), "sparse_lines"),
    (dict(data_width=96), "power of two"),
    (dict(data_width=32), "multiple of 8 \\* macs"),
    (dict(head_dim=16, data_width=512), "divide 8 \\* head_dim = 128 .* at most 2 x that, 256"),
    (dict(decoder_heads=0), "decoder_heads"),
])
def test_init_wrong_value(params, match):
    with pytest.raises(ValueError, match=match):
        VitcodConfig(**params)


def test_init_wrong_config_kind():
    with pytest.raises(TypeError, match="VitcodConfig"):
        VitcodAccelerator(dict(head_dim=64))


def test_derived_widths():
    cfg = VitcodConfig(head_dim=64, macs=8, dense_lines=3, sparse_lines=5, data_width=128)
    assert (cfg.words_per_token, cfg.chunks_per_word, cfg.chunks_per_token, cfg.indices_per_word) == (4, 2, 8, 8)
    assert cfg.total_macs == 64 and cfg.score_width == 22  # 64 products of int8 x int8
    # the largest reciprocal (a non-empty row's smallest sum, 2**EXP_BITS) needs exactly recip_width bits
    assert cfg.recip_width == reciprocal(1 << EXP_BITS).bit_length() == 26
    # score groups: the largest power of two dividing the lines and the 8 chunks of a token
    assert [cfg.score_split(n) for n in (1, 2, 3, 4, 6, 8, 32)] == [1, 2, 1, 4, 2, 8, 8]
    assert (cfg.qkv_word_chunks, cfg.qkv_beats_per_word, cfg.qkv_words_per_token) == (2, 1, 4)   # 3 + 5 lines: S = 1
    narrow = VitcodConfig(head_dim=64, macs=8, dense_lines=4, sparse_lines=4, data_width=64)
    assert (narrow.qkv_word_chunks, narrow.qkv_beats_per_word, narrow.qkv_words_per_token) == (4, 4, 2)
    # a beat of two token rows is one Q/K/V word of two tokens
    wide = VitcodConfig(head_dim=16, max_tokens=65, macs=8, dense_lines=1, sparse_lines=1, data_width=256)
    assert (wide.tokens_per_beat, wide.words_per_token, wide.qkv_word_chunks, wide.qkv_tokens_per_word,
            wide.qkv_words_per_token, wide.qkv_bank_words) == (2, 1, 4, 2, 1, 64)


@pytest.mark.parametrize("cfg", [
    VitcodConfig(head_dim=16, max_tokens=20, max_nnz=100, macs=8, dense_lines=1, sparse_lines=3, data_width=64),
    pytest.param(VitcodConfig(head_dim=32, max_tokens=33, max_nnz=300, macs=4, dense_lines=2, sparse_lines=1,
                              data_width=128, decoder=True, decoder_heads=3), marks=pytest.mark.full),  # 18 s
    pytest.param(VitcodConfig(head_dim=16, max_tokens=20, max_nnz=100, macs=8, dense_lines=1, sparse_lines=2,
                              data_width=64, tiles=3), marks=pytest.mark.full),     # make test time
    # two token rows per data beat (the output beat's upper lanes constant zero)
    pytest.param(VitcodConfig(head_dim=16, max_tokens=20, max_nnz=100, macs=8, dense_lines=1, sparse_lines=2,
                              data_width=256), marks=pytest.mark.full),
], ids=["d16", "d32-decoder", "d16-tiles3", "d16-w256"])
def test_verilog_is_lint_clean(cfg, tmp_path):
    path = write_verilog(VitcodAccelerator(cfg), "vitcod", tmp_path / "vitcod.v")
    result = lint_verilog(path, "vitcod")
    assert result.clean, "\n".join(result.messages[:20])


def test_generator_does_not_import_torch():
    code = ("import sys; import attnforge.hw.vitcod, attnforge.hw.vitcod.host, attnforge.hw.designs; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_host_layer_and_head_streams():
    """The host's stream layout with the decoder: a layer load of compressed Q/K, then heads of key orders."""
    import numpy as np

    from attnforge.hw.vitcod.host import HeadJob, LayerJob

    cfg = VitcodConfig(head_dim=16, max_tokens=8, max_nnz=64, macs=8, dense_lines=1, sparse_lines=1, data_width=64,
                       decoder=True, decoder_heads=2)
    qc = np.arange(2 * 3 * 16, dtype=np.int64).reshape(2, 3, 16).astype(np.int8)
    kc = -qc[:, :2]
    layer = LayerJob(qc, kc)
    cmd = layer.command(cfg)
    assert (cmd["layer"], cmd["nq"], cmd["nk"], cmd["hc"]) == (1, 3, 2, 2)
    beats = layer.data_beats(cfg)
    # per 8-byte word of each token row, one beat per compressed head
    assert len(beats) == (3 + 2) * 2 * 2
    assert beats[1] == int.from_bytes(qc[1, 0, :8].tobytes(), "little")
    assert beats[2] == int.from_bytes(qc[0, 0, 8:].tobytes(), "little")
    q = np.zeros((3, 16), np.int8)
    k = np.zeros((2, 16), np.int8)
    head = HeadJob(q, k, k, 1, np.array([0, 1, 1, 1]), np.array([1]), 1, 0, 1, 0, qc=qc, kc=kc,
                   wq=np.array([1, 2]), wk=np.array([3, 4]), key_order=np.array([1, 0]))
    hb = head.data_beats(cfg)
    assert hb[0] == 1 | (0 << 16)            # the key order: polarized position 0 is model token 1
    # order, V, row pointers (2 Nq + 1 = 7, four per beat), column indices
    assert len(hb) == 1 + 2 * 2 + 2 + 1
    assert head.command(cfg)["layer"] == 0 and head.layer().matches(layer)
    with pytest.raises(ValueError, match="decoder takes 1..2"):
        LayerJob(np.zeros((3, 3, 16), np.int8), np.zeros((3, 2, 16), np.int8)).command(cfg)
    with pytest.raises(ValueError, match="key order of shape"):
        HeadJob(q, k, k, 1, np.array([0, 1, 1, 1]), np.array([1]), 1, 0, 1, 0, key_order=np.array([0])).data_beats(cfg)
    with pytest.raises(ValueError, match="decoder=True"):
        layer.command(VitcodConfig(head_dim=16, max_tokens=8, max_nnz=64, macs=8, dense_lines=1, sparse_lines=1,
                                   data_width=64))
