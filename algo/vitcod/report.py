"""The picture of a mask set: per layer/head sparsity, G and dense share of work, one head's polarized mask.

Written next to ``masks.npz`` by ``attnforge vitcod masks`` and by the ViTCoD algorithm benchmark.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_mask_report"]


def plot_mask_report(ms, report: dict, path) -> Path:
    """PNG: per layer/head sparsity, G and dense share of work, and one head's polarized mask."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    L, H = ms.n_global.shape
    grid = {k: np.array([[r[k] for r in report["heads"] if r["layer"] == l] for l in range(L)])
            for k in ("sparsity", "n_global", "dense_work_share")}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    titles = {"sparsity": "achieved sparsity", "n_global": "G (global keys)",
              "dense_work_share": "dense share of work"}
    for ax, (k, title) in zip(axes, titles.items()):
        im = ax.imshow(grid[k], aspect="auto", cmap="viridis")
        ax.set(title=title, xlabel="head", ylabel="layer", xticks=range(H), yticks=range(L))
        for (l, h), v in np.ndenumerate(grid[k]):
            ax.text(h, l, f"{v:.2f}" if k != "n_global" else f"{int(v)}", ha="center", va="center",
                    color="w", fontsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)
    l, h = 0, 0
    axes[3].imshow(ms.keep[l, h][:, ms.order[l, h]], cmap="Greys", interpolation="nearest")
    axes[3].axvline(ms.n_global[l, h] - 0.5, color="r", lw=1)
    axes[3].set(title=f"layer {l} head {h}, polarized (G={ms.n_global[l, h]})", xlabel="key (polarized order)",
                ylabel="query")
    fig.suptitle(f"ViTCoD masks: sparsity {report['sparsity']:.3f}, threshold {report['threshold']:.4f}, "
                 f"polarize {report['polarize']['mode']}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
