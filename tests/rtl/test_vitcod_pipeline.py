"""The whole ViTCoD path: a ViT trained on digits -> masks.npz + per-head int8 tensors (algorithm
pipeline) -> every head of that file on the accelerator RTL, bit for bit against the golden model."""

import json
from pathlib import Path

import pytest

from attnforge.cli import main
from attnforge.formats.head_tensors import load_head_tensors
from attnforge.formats.masks import load_masks

BUILD = Path(__file__).resolve().parents[2] / "build" / "test_sim"


@pytest.mark.full     # 40-50 s of make test's budget; make test-full also runs `vitcod run` and `flow vitcod` on the RTL
def test_algorithm_masks_and_tensors_run_bit_exact_on_the_rtl(tmp_path):
    d = tmp_path
    common = ["--limit", "128", "--no-progress", "--batch-size", "64"]
    # A one-layer ViT with 4 heads of d = 16 on 32x32 digits (65 tokens), pruned to 85 % and polarized.
    assert main(["vitcod", "train", "--depth", "1", "--dim", "64", "--epochs", "1", *common,
                 "-o", str(d / "dense.pt")]) == 0
    assert main(["vitcod", "masks", "--checkpoint", str(d / "dense.pt"), "--sparsity", "0.85",
                 "--max-images", "128", *common, "-o", str(d / "masks.npz")]) == 0
    assert main(["vitcod", "export", "--checkpoint", str(d / "dense.pt"), "--masks", str(d / "masks.npz"),
                 "--image-index", "5", "-o", str(d / "heads.npz")]) == 0
    masks, tensors = load_masks(d / "masks.npz"), load_head_tensors(d / "heads.npz")
    assert masks.keep.shape == (1, 4, 65, 65) and tensors.q.shape[-1] == 16

    out = d / "sim.json"
    assert main(["vitcod", "sim", "--masks", str(d / "masks.npz"), "--tensors", str(d / "heads.npz"),
                 "--all-heads", "--dense-lines", "1", "--sparse-lines", "2", "--build-root", str(BUILD),
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["bit_exact"] is True and len(report["heads"]) == 4
    assert report["speedup"] > 1
