"""``attnforge linear ...`` end to end on tiny models, and the linear_algo benchmark in quick mode."""

import json

import pytest
import torch

from attnforge.cli import main

torch.set_num_threads(1)  # small tensors: threads only contend on the shared cores

SMALL = ["--train-bytes", "100000", "--val-bytes", "10000", "--eval-windows", "4"]
TINY = ["--layers", "1", "--heads", "2", "--d-model", "16", "--block", "64", "--batch", "4", "--chunk", "8"]


def test_train_eval_generate_speculate(tmp_path, capsys):
    target, draft = tmp_path / "t.pt", tmp_path / "d.pt"
    assert main(["linear", "train", "--attention", "elu", "--augment", "--steps", "6", *TINY, *SMALL,
                 "-o", str(target), "--json", str(tmp_path / "t.json")]) == 0
    summary = json.loads((tmp_path / "t.json").read_text())
    assert summary["model"]["augment"]
    assert main(["linear", "train", "--attention", "relu", "--steps", "3", *TINY, *SMALL, "-o", str(draft)]) == 0
    capsys.readouterr()
    assert main(["linear", "eval", str(target), *SMALL]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    # the checkpoint holds the trained weights exactly: evaluating it again gives the training run's figures
    assert evaluated["step"] == 6 and evaluated["held_out"] == summary["held_out"]
    assert main(["linear", "generate", str(target), "--prompt", "def ", "--tokens", "10"]) == 0
    assert capsys.readouterr().out.startswith("def ")
    assert main(["linear", "speculate", str(target), str(draft), "--k", "3", "--tokens", "20",
                 "--json", str(tmp_path / "s.json")]) == 0
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["identical_to_greedy"] is True and report["verifies"] >= 1
    assert report["draft"] == "model" and len(report["accepted_per_verify"]) == report["verifies"]
    for extra in ([], ["--temperature", "0.8"]):  # the n-gram draft, greedy and Gumbel sampling
        assert main(["linear", "speculate", str(target), "--draft", "ngram", "--k", "4", "--tokens", "24",
                     "--prompt", "abcabcabc", "--repeats", "2", *extra, "--json", str(tmp_path / "n.json")]) == 0
        report = json.loads((tmp_path / "n.json").read_text())
        assert report["draft"] == "ngram" and report["identical"] is True
        assert report["sequential_tokens_per_second"] > 0 and report["speculative_tokens_per_second"] > 0
        assert report["mode"] == ("gumbel" if extra else "greedy")
    # the corpus draft: a byte n-gram model counted from the (SMALL) training text
    assert main(["linear", "speculate", str(target), "--draft", "corpus", "--order", "3", "--k", "4", "--tokens", "24",
                 "--repeats", "1", "--temperature", "0.8", *SMALL, "--json", str(tmp_path / "c.json")]) == 0
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["draft"] == "corpus" and report["order"] == 3 and report["identical"] is True


def test_bad_inputs_are_named(tmp_path, capsys):
    assert main(["linear", "eval", str(tmp_path / "none.pt")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
    assert main(["linear", "train", "--steps", "0", *SMALL, "-o", str(tmp_path / "x.pt")]) == 2
    assert "steps must be a positive integer, not 0" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("args,message", [
    (["--k", "0"], "--k must be >= 1, not 0"),
    (["--ngram", "0"], "--ngram must be >= 1, not 0"),
    (["--draft", "model"], "--draft model needs a draft checkpoint"),
    (["d.pt", "--draft", "corpus"], "--draft corpus takes no draft checkpoint, got 'd.pt'"),
    (["--draft", "corpus", "--order", "7"], "--order must be in [1, 6], not 7"),
    (["--draft", "corpus", "--rtl"], "--draft corpus is not wired to the RTL run"),
    (["--temperature", "0.5", "--sampling", "topk"], "--sampling must be one of 'gumbel', 'rejection', not 'topk'"),
])
def test_speculate_bad_options_are_named(tmp_path, capsys, args, message):
    # Refused before any checkpoint is read (the target does not exist).
    assert main(["linear", "speculate", str(tmp_path / "none.pt"), *args]) == 2
    assert message in capsys.readouterr().err


def test_speculative_benchmark_quick(tmp_path):
    from attnforge.benchmarks import run_benchmarks

    [path] = run_benchmarks(tmp_path, ["speculative"], quick=True, command="pytest")
    result = json.loads(path.read_text())
    assert result["format"] == "attnforge.bench/1" and result["benchmark"] == "speculative"
    assert {(r["draft"], r["mode"]) for r in result["rows"]} == {("ngram", "greedy"), ("model", "greedy"),
                                                                  ("ngram", "gumbel"), ("corpus", "gumbel")}
    # a perplexity of a smoothed byte model: finite, at least 1 (its value depends on the text, not tested here)
    assert result["corpus_draft"]["order"] == 2 and 1 <= result["corpus_draft"]["held_out_ppl"] < float("inf")
    agreement = result["corpus_draft"]["agreement"]["by_order"]
    assert set(agreement) == {"1", "2"} and all(0 <= a[m] <= 1 for a in agreement.values() for m in a)
    for row in result["rows"]:
        assert row["identical"] is True
        assert row["sequential_tokens_per_second"] > 0 and row["speculative_tokens_per_second"] > 0
        assert all(len(r["accepted_per_verify"]) == r["verifies"] for r in row["runs"])
    assert result["call_costs"]["relative_to_target_step"]["target_step"] == 1.0


def test_linearize_command(tmp_path, capsys):
    transformers = pytest.importorskip("transformers", reason="optional extra attnforge[hf] not installed")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=260, n_positions=64)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
    out = tmp_path / "lin"
    assert main(["linear", "linearize", str(tmp_path / "gpt2"), "--steps", "3", "--block", "32", "--batch", "2",
                 *SMALL, "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["held_out_loss"]) == {"pretrained_softmax", "linearized_before_finetune",
                                            "linearized_after_finetune"}
    assert torch.load(out / "linearized.pt", weights_only=True)["format"] == "attnforge.linearized_gpt2/1"


def test_benchmark_quick(tmp_path):
    from attnforge.benchmarks import run_benchmarks

    [path] = run_benchmarks(tmp_path, ["linear_algo"], quick=True, command="pytest")
    result = json.loads(path.read_text())
    assert result["format"] == "attnforge.bench/1" and result["command"] == "pytest"
    summary = result["perplexity"]["summary"]
    assert set(summary) == {"softmax", "elu", "relu", "elu+aug", "relu+aug"}
    assert all(s["seeds"] == 2 for s in summary.values())
    assert all(r["identical_to_greedy"] for r in result["speculative"]["by_k"])
    rows = result["decode_cost"]["rows"]
    # KV cache bytes grow with the context; the linear state does not.
    assert rows[1]["softmax (KV cache)"]["state_bytes"] > rows[0]["softmax (KV cache)"]["state_bytes"]
    assert rows[1]["elu (linear state)"]["state_bytes"] == rows[0]["elu (linear state)"]["state_bytes"]
    assert (tmp_path / "linear_algo.png").stat().st_size > 1000


def test_speculative_benchmark_refuses_unknown_drafts(tmp_path):
    from attnforge.benchmarks.speculative import run

    with pytest.raises(ValueError, match=r"drafts \['lookahead'\]: the benchmark's drafts are ngram, model, corpus"):
        run(tmp_path, quick=True, drafts=["corpus", "lookahead"])
    assert not any(tmp_path.iterdir())
