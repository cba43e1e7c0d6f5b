"""A linearized LM generating with every attention step on the decode datapath's RTL
(``attnforge linear generate --rtl``, attnforge/flows/linear_cosim.py, tb/linear_gen_tb.py): the tokens equal
the integer-attention model's own greedy tokens, every RTL output equals the golden model's, and a
flipped output bit is caught; ``attnforge linear speculate --rtl`` (``cosim_speculate``): the RTL's verify
blocks and commits give the golden speculative run's tokens and accepted proposals. Models are small and untrained (created here); the real model's run is
in docs/linear-hw.md."""

import math

import pytest
import torch

from attnforge.algo.linear.data import load_corpus
from attnforge.algo.linear.model import LinearLM, LMConfig
from attnforge.algo.linear.train import save_checkpoint
from attnforge.cli import main
from attnforge.flows.linear_cosim import cosim_generate, cosim_speculate
from attnforge.tb.mutants import FlipOutputBit


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(100_000, 20_000)


def _checkpoint(path, **kw):
    torch.manual_seed(0)
    cfg = dict(attention="relu", augment=True, chunk=0, n_layer=2, n_head=2, d_model=16, block_size=24, conv_kernel=2)
    cfg.update(kw)
    save_checkpoint(path, LinearLM(LMConfig(**cfg)).eval())
    return path


def _check(out, prompts, tokens, layers=2, heads=2):
    assert out["bit_exact"] and out["mismatches"] == 0, out["first_mismatches"]
    assert out["tokens_identical"], (out["tokens"], out["reference_tokens"])
    assert [len(t) for t in out["tokens"]] == [tokens] * len(prompts)
    positions = sum(len(p) + tokens - 1 for p in prompts)
    assert out["positions"] == positions and out["outputs"] == positions * layers * heads
    # a layer's position: the heads' passes at least (ideal), plus beats, commits and the pipeline
    assert all(c > out["ideal_cycles_per_token"] / layers for c in out["cycles_per_token_by_layer"])


def test_generation_on_the_rtl_equals_the_integer_model_icarus(tmp_path, corpus):
    ck = _checkpoint(tmp_path / "lm.pt")
    prompts = [b"def", b"x"]
    out = cosim_generate(ck, prompts, 5, corpus, simulator="icarus", calib_windows=4, build_root=tmp_path / "b")
    _check(out, prompts, 5)
    assert out["configs"][0]["feature_map"] == "relu_norm" and out["simulator"] == "icarus"


@pytest.mark.full
def test_a_flipped_output_bit_is_caught(tmp_path, corpus):
    ck = _checkpoint(tmp_path / "lm.pt", n_layer=1)
    out = cosim_generate(ck, [b"ab"], 3, corpus, simulator="icarus", calib_windows=4, build_root=tmp_path / "b",
                         wrap=lambda s: FlipOutputBit(s, path=("l0", "o", "payload")))
    assert not out["bit_exact"] and out["mismatches"] > 0


@pytest.mark.full
@pytest.mark.parametrize("normalize", [True, False], ids=["relu_norm", "relu"])
def test_generation_on_the_rtl_verilator(tmp_path, corpus, normalize):
    ck = _checkpoint(tmp_path / "lm.pt", d_model=32, block_size=48, conv_kernel=3, variant_kwargs={"normalize": normalize})
    prompts = [b"def ", b"import ", b"class "]
    out = cosim_generate(ck, prompts, 24, corpus, simulator="verilator", calib_windows=4, eval_windows=2,
                         build_root=tmp_path / "b")
    _check(out, prompts, 24)
    # the evaluation ran on the asked windows and gave numbers (no claim on their values: an untrained model)
    assert out["eval_windows"] == 2 and all(math.isfinite(out[k]) for k in ("float_ppl", "integer_ppl", "ppl_ratio"))


def test_cli_refuses_what_the_rtl_does_not_compute(tmp_path, capsys):
    soft = tmp_path / "soft.pt"
    torch.manual_seed(0)
    save_checkpoint(soft, LinearLM(LMConfig(attention="softmax", n_layer=1, n_head=2, d_model=16, block_size=24)))
    assert main(["linear", "generate", str(soft), "--rtl", "--tokens", "3", "--train-bytes", "50000",
                 "--val-bytes", "10000"]) == 2
    assert "not the decode datapath's variant" in capsys.readouterr().err
    ck = _checkpoint(tmp_path / "lm.pt")
    assert main(["linear", "generate", str(ck), "--rtl", "--tokens", "30", "--train-bytes", "50000",
                 "--val-bytes", "10000"]) == 2
    assert "block_size=24" in capsys.readouterr().err
    assert main(["linear", "generate", str(ck), "--rtl", "--temperature", "0.5"]) == 2
    assert "greedily" in capsys.readouterr().err


def _check_speculation(out, prompts, tokens, k, layers=2, heads=2):
    assert out["bit_exact"] and out["mismatches"] == 0, out["first_mismatches"]
    assert out["tokens_identical"] and out["accepted_identical"], (out["tokens"], out["reference_tokens"])
    assert [len(t) for t in out["tokens"]] == [tokens] * len(prompts)
    assert len(out["configs"]) == layers * heads and all(c["heads"] == 1 for c in out["configs"])
    for acc, prop in zip(out["accepted_per_verify"], out["proposed_per_verify"]):
        assert sum(acc) + len(acc) == tokens and all(0 <= a <= p <= k for a, p in zip(acc, prop))
    # every verified token of every head came back: the blocks' sizes are 1 + proposals
    blocks = sum(len(p) - 1 for p in prompts) + sum(sum(p) + len(p) for p in out["proposed_per_verify"])
    assert out["outputs"] == blocks * layers * heads
    assert out["generated_tokens"] == tokens * len(prompts) and out["attention_cycles_per_token"] > 0


def test_speculation_on_the_rtl_equals_the_golden_speculation_icarus(tmp_path, corpus):
    ck = _checkpoint(tmp_path / "lm.pt", n_layer=1)
    prompts = [b"abab"]
    out = cosim_speculate(ck, prompts, 8, corpus, k=3, simulator="icarus", calib_windows=4, build_root=tmp_path / "b")
    _check_speculation(out, prompts, 8, 3, layers=1)
    # multi-token verify blocks ran: the n-gram draft's proposals on a repetitive prompt depend on the text
    # only (how many are accepted depends on the model's floats, so that is not asserted)
    assert sum(map(sum, out["proposed_per_verify"])) > 0


@pytest.mark.full
def test_speculation_on_the_rtl_verilator_and_a_flipped_bit_is_caught(tmp_path, corpus):
    ck = _checkpoint(tmp_path / "lm.pt", d_model=32, block_size=48, conv_kernel=3)
    prompts = [b"def ", b"import ", b"abcabc"]
    out = cosim_speculate(ck, prompts, 24, corpus, k=3, simulator="verilator", calib_windows=4,
                          build_root=tmp_path / "b")
    _check_speculation(out, prompts, 24, 3)
    bad = cosim_speculate(ck, prompts[:1], 6, corpus, k=3, simulator="verilator", calib_windows=4,
                          build_root=tmp_path / "b", wrap=lambda s: FlipOutputBit(s, path=("l1", "o", "payload")))
    assert not bad["bit_exact"] and bad["mismatches"] > 0


def test_cli_speculate_rtl_refuses_what_the_rtl_does_not_verify(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "lm.pt")
    small = ["--train-bytes", "50000", "--val-bytes", "10000"]
    assert main(["linear", "speculate", str(ck), "--rtl", "--k", "8", "--tokens", "5", *small]) == 2
    assert "t_max=8" in capsys.readouterr().err
    assert main(["linear", "speculate", str(ck), "--rtl", "--temperature", "0.5", *small]) == 2
    assert "greedily" in capsys.readouterr().err
    assert main(["linear", "speculate", str(ck), "--prompt", "a", "--prompt", "b", "--tokens", "3", *small]) == 2
    assert "one prompt" in capsys.readouterr().err
