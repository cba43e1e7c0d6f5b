"""Linearizing a Hugging Face GPT-2: a tiny random GPT-2 saved to tmp_path by the test itself."""

import pytest
import torch

import transformers  # the [hf] extra; make setup installs it

from attnforge.algo.linear.data import load_corpus  # noqa: E402
from attnforge.algo.linear.linearize import (corpus_tokens, finetune, heldout_loss, linearize_gpt2,  # noqa: E402
                                             load_gpt2)

torch.set_num_threads(1)  # small tensors: threads only contend on the shared cores


@pytest.fixture()
def gpt2_dir(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=300, n_positions=64,
                                  attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2-tiny")
    return tmp_path / "gpt2-tiny"


def test_one_chunk_of_local_softmax_reproduces_the_pretrained_model(gpt2_dir):
    # With one chunk covering the sequence and no conv, the augmentation is exactly softmax
    # attention: the pretrained weights must have been carried over correctly.
    ref = load_gpt2(gpt2_dir).eval()
    lin = linearize_gpt2(load_gpt2(gpt2_dir), "elu", augment=True, conv_kernel=0, chunk=64).eval()
    x = torch.randint(300, (2, 40))
    with torch.no_grad():
        assert torch.allclose(lin(input_ids=x).logits, ref(input_ids=x).logits, atol=1e-5)
        # A real linearization (small chunks) changes the function.
        lin2 = linearize_gpt2(load_gpt2(gpt2_dir), "elu", augment=True, conv_kernel=4, chunk=8).eval()
        assert not torch.allclose(lin2(input_ids=x).logits, ref(input_ids=x).logits, atol=1e-3)


@pytest.mark.parametrize("variant", ["elu", "linformer"])
def test_linearized_gpt2_is_causal(gpt2_dir, variant):
    model = linearize_gpt2(load_gpt2(gpt2_dir), variant, augment=True, chunk=8).eval()
    x = torch.randint(300, (1, 30))
    y = x.clone()
    y[0, 20:] = (y[0, 20:] + 1) % 300
    with torch.no_grad():
        a, b = model(input_ids=x).logits, model(input_ids=y).logits
    assert torch.allclose(a[:, :20], b[:, :20], atol=1e-6)
    assert not torch.allclose(a[:, 20:], b[:, 20:], atol=1e-6)


def test_finetuning_the_linearized_model_lowers_held_out_loss(gpt2_dir):
    corpus = load_corpus(100_000, 10_000)
    train, val, kind = corpus_tokens(gpt2_dir, corpus, 300)
    assert kind == "bytes"
    model = linearize_gpt2(load_gpt2(gpt2_dir), "elu", augment=True, chunk=8)
    before = heldout_loss(model, val, 64, 8)
    log = finetune(model, train, steps=30, block=64, batch_size=8, lr=3e-3, progress=False)
    after = heldout_loss(model, val, 64, 8)
    assert len(log) == 30 and after < before - 0.5, (before, after)


def test_missing_checkpoint_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_gpt2(tmp_path / "nothing")
