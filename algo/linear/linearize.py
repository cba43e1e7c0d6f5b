"""Linearizing a pretrained Hugging Face GPT-2: swap its attention for (augmented) linear attention.

Each block's ``GPT2Attention`` is replaced by ``LinearizedGPT2Attention``,
which keeps the pretrained ``c_attn`` (q, k, v projection) and ``c_proj``
weights and computes attention with a variant of ``variants.py``, by default
wrapped in the causal local augmentation. Then the model is fine-tuned with
the ordinary next-token loss on the stdlib corpus (tokenized with the
checkpoint's own tokenizer when the folder has one, else as bytes).

The checkpoint is read from a local folder only (``local_files_only``): nothing
is downloaded. ``transformers`` is an optional dependency (``pip install
'attnforge[hf]'``). The linearized model is trained and evaluated with full
sequences (no padding mask, no KV cache: ``use_cache`` is switched off).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from attnforge.algo.checkpoint import save_checkpoint_file
from attnforge.algo.linear.augment import AugmentedAttention
from attnforge.algo.linear.variants import causal_mask, make_core

__all__ = ["LinearizedGPT2Attention", "load_gpt2", "linearize_gpt2", "finetune", "heldout_loss",
           "corpus_tokens", "linearize_and_finetune", "LINEARIZED_FORMAT"]

LINEARIZED_FORMAT = "attnforge.linearized_gpt2/1"


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("linearizing a Hugging Face model needs the optional dependency transformers: "
                           "pip install 'attnforge[hf]'") from exc
    return transformers


def load_gpt2(model_dir):
    """A ``GPT2LMHeadModel`` from a local folder (``config.json`` + weights)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"GPT-2 checkpoint folder {model_dir} has no config.json")
    tf = _transformers()
    model = tf.GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager")
    model.config.use_cache = False
    return model


class LinearizedGPT2Attention(nn.Module):
    """Drop-in for ``GPT2Attention`` (self-attention only) with the pretrained projections."""

    def __init__(self, attn, variant: str = "elu", augment: bool = True, conv_kernel: int = 4, chunk: int = 16,
                 seed: int = 0, layer: int = 0, max_len: int = 1024):
        super().__init__()
        self.c_attn, self.c_proj, self.resid_dropout = attn.c_attn, attn.c_proj, attn.resid_dropout
        self.n_head, self.head_dim, self.split_size = attn.num_heads, attn.head_dim, attn.split_size
        core = make_core(variant, self.n_head, self.head_dim, max_len=max_len, seed=seed * 100 + layer)
        self.core = AugmentedAttention(core, conv_kernel, chunk) if augment else core

    def forward(self, hidden_states, *args, encoder_hidden_states=None, **kwargs):
        if encoder_hidden_states is not None:
            raise ValueError("linearized GPT-2 attention does self-attention only (no encoder_hidden_states)")
        b, t, _ = hidden_states.shape
        q, k, v = (x.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
                   for x in self.c_attn(hidden_states).split(self.split_size, dim=2))
        mask = None if self.core.causal else causal_mask(t, device=q.device)
        y = self.core.parallel(q, k, v, mask).transpose(1, 2).reshape(b, t, self.n_head * self.head_dim)
        return self.resid_dropout(self.c_proj(y)), None


def linearize_gpt2(model, variant: str = "elu", augment: bool = True, conv_kernel: int = 4, chunk: int = 16,
                   seed: int = 0):
    """Replace every block's attention in place; returns the model."""
    blocks = model.transformer.h
    for i, block in enumerate(blocks):
        block.attn = LinearizedGPT2Attention(block.attn, variant, augment, conv_kernel, chunk, seed, i,
                                             model.config.n_positions)
    model.config.use_cache = False
    return model


def corpus_tokens(model_dir, corpus, vocab_size: int):
    """Train and held-out token ids: the checkpoint's tokenizer if it has one, else bytes."""
    model_dir = Path(model_dir)
    has_tok = any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.json"))
    if has_tok:
        tok = _transformers().AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        enc = lambda data: torch.tensor(tok(bytes(data.numpy()).decode("utf-8", "replace"))["input_ids"])  # noqa
        return enc(corpus.train), enc(corpus.val), "tokenizer"
    if vocab_size < 256:
        raise ValueError(f"{model_dir}: no tokenizer, and vocab_size={vocab_size} is too small for bytes (>= 256)")
    return corpus.train.long(), corpus.val.long(), "bytes"


@torch.no_grad()
def heldout_loss(model, tokens: torch.Tensor, block: int, windows: int = 16, batch: int = 8) -> float:
    was = model.training
    model.eval()
    n = min(windows, (len(tokens) - 1) // block)
    if n < 1:
        raise ValueError(f"held-out text has {len(tokens)} tokens, too few for one window of {block}")
    x = tokens[: n * block].view(n, block)
    total = 0.0
    for i in range(0, n, batch):
        total += model(input_ids=x[i: i + batch], labels=x[i: i + batch]).loss.item() * len(x[i: i + batch])
    model.train(was)
    return total / n


def finetune(model, tokens: torch.Tensor, steps: int, block: int = 128, batch_size: int = 8, lr: float = 1e-3,
             seed: int = 0, progress: bool = True) -> list:
    """Next-token fine-tuning of all weights (AdamW, linear warmup then constant)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, not {steps}")
    block = min(block, model.config.n_positions)
    if len(tokens) <= block + 1:
        raise ValueError(f"training text has {len(tokens)} tokens, fewer than block+1={block + 1}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    log = []
    for step in tqdm(range(steps), desc="linearize: fine-tune", disable=not progress, leave=False):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / max(1, steps // 10))
        ix = torch.randint(len(tokens) - block - 1, (batch_size,), generator=gen).tolist()
        x = torch.stack([tokens[i: i + block] for i in ix])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"fine-tuning loss became {loss.item()} at step {step}")
        log.append((step, round(loss.item(), 4)))
    model.eval()
    return log


def linearize_and_finetune(model_dir, corpus, out_dir, *, attention: str = "elu", augment: bool = True,
                           conv_kernel: int = 4, chunk: int = 16, steps: int = 200, block: int = 128,
                           batch_size: int = 8, lr: float = 1e-4, eval_windows: int = 64, seed: int = 0) -> dict:
    """Load a local GPT-2, swap its attention for ``attention`` (with the causal augmentation unless
    ``augment`` is False), fine-tune ``steps`` steps, save ``out_dir/linearized.pt`` and return the
    report: held-out loss pretrained, just after the swap, after fine-tuning (the job behind
    ``attnforge linear linearize``)."""
    model = load_gpt2(model_dir)
    train, val, kind = corpus_tokens(model_dir, corpus, model.config.vocab_size)
    block = min(block, model.config.n_positions)
    before = heldout_loss(model, val, block, eval_windows)
    linearize_gpt2(model, attention, augment=augment, conv_kernel=conv_kernel, chunk=chunk, seed=seed)
    swapped = heldout_loss(model, val, block, eval_windows)
    log = finetune(model, train, steps, block, batch_size, lr, seed)
    after = heldout_loss(model, val, block, eval_windows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"attention": attention, "augment": augment, "conv_kernel": conv_kernel, "chunk": chunk, "seed": seed}
    save_checkpoint_file(out / "linearized.pt", {"format": LINEARIZED_FORMAT, "source": str(model_dir),
                                                 "linearization": settings, "state_dict": model.state_dict()})
    return {"source": str(model_dir), "tokens": kind, "linearization": settings, "steps": steps,
            "held_out_loss": {"pretrained_softmax": before, "linearized_before_finetune": swapped,
                              "linearized_after_finetune": after},
            "final_train_loss": log[-1][1] if log else None, "weights": str(out / "linearized.pt")}
