"""Polarization: split each head's mask into a dense part (global key columns) and a sparse part.

A key column is *global* when many queries keep it. ViTCoD orders the global
keys first: the Denser Engine computes every query against all ``G`` of them
(so the mask keeps those columns whole), the Sparser Engine computes the kept
entries of the other columns from CSR. Two ways to choose the global columns:

* ``mode="fixed"``: ViTCoD's rule, columns kept by more than
  ``global_threshold * Nq`` queries (``global_threshold`` in [0, 1]).
* ``mode="cycles"``: per head, the ``G`` (columns taken by decreasing kept
  count) that minimizes the estimated accelerator cycles of :class:`CycleModel`:
  dense work ``Nq * G`` entries on the Denser Engine against sparse work (kept
  entries outside the G columns) on the Sparser Engine, the two in parallel.
  ViTCoD's fixed threshold is not tuned to the engines; this picks G for them.

Key order: the global columns by decreasing count (ties by index), then the
others in index order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["CycleModel", "polarize", "POLARIZE_MODES"]

POLARIZE_MODES = ("fixed", "cycles")


@dataclass(frozen=True)
class CycleModel:
    """A first-order estimate of one head's cycles on the two engines.

    Each kept score costs ``head_dim`` MACs for ``Q.K^T`` and ``head_dim`` for
    ``P.V``. The Denser Engine has ``dense_macs`` MACs at full use; the Sparser
    Engine ``sparse_macs`` at ``sparse_efficiency`` (index handling and row
    imbalance cost it some). ``parallel``: the engines work side by side (max),
    else one after the other (sum).
    """

    dense_macs: int = 64
    sparse_macs: int = 64
    sparse_efficiency: float = 0.8
    parallel: bool = True

    def __post_init__(self):
        for name in ("dense_macs", "sparse_macs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"CycleModel.{name} must be a positive int, got {v!r}")
        if not 0 < self.sparse_efficiency <= 1:
            raise ValueError(f"CycleModel.sparse_efficiency must be in (0, 1], got {self.sparse_efficiency!r}")

    def work(self, nq, g, nnz_sparse, head_dim: int):
        """``(dense MACs, sparse MACs)`` of a head with ``g`` global columns and ``nnz_sparse`` other kept entries."""
        return 2 * head_dim * nq * g, 2 * head_dim * nnz_sparse

    def cycles(self, nq, g, nnz_sparse, head_dim: int):
        dense, sparse = self.work(nq, g, nnz_sparse, head_dim)
        tc_dense = dense / self.dense_macs
        tc_sparse = sparse / (self.sparse_macs * self.sparse_efficiency)
        if isinstance(tc_dense, torch.Tensor):
            return torch.maximum(tc_dense, tc_sparse) if self.parallel else tc_dense + tc_sparse
        return max(tc_dense, tc_sparse) if self.parallel else tc_dense + tc_sparse

    def to_dict(self):
        return asdict(self)


def polarize(keep: torch.Tensor, *, mode: str = "fixed", global_threshold: float = 0.5,
             cycle_model: CycleModel | None = None, head_dim: int = 64):
    """Global columns and key order of every head.

    Parameters
    ----------
    keep : bool ``[..., Nq, Nk]``
        The pruned masks (e.g. from :func:`~attnforge.algo.vitcod.pruning.cumulative_mass_keep`).

    Returns
    -------
    ``(keep_polarized, order, n_global)``: ``keep`` with the global columns made
    whole (what the hardware computes), int64 ``order [..., Nk]`` (a permutation,
    global keys first) and int64 ``n_global [...]``.
    """
    if mode not in POLARIZE_MODES:
        raise ValueError(f"polarization mode must be one of {POLARIZE_MODES}, got {mode!r}")
    if not isinstance(global_threshold, (int, float)) or not 0 <= global_threshold <= 1:
        raise ValueError(f"global_threshold is a fraction of the queries in [0, 1], got {global_threshold!r}")
    keep = torch.as_tensor(keep)
    if keep.dtype != torch.bool or keep.dim() < 2:
        raise ValueError(f"keep must be a bool [..., Nq, Nk] tensor, got {keep.dtype} {tuple(keep.shape)}")
    nq, nk = keep.shape[-2:]
    counts = keep.sum(-2)                                             # [..., Nk] queries keeping each key
    # Columns by decreasing count, ties by index (a stable sort of -count).
    by_count = torch.sort(-counts, dim=-1, stable=True).indices
    sorted_counts = torch.gather(counts, -1, by_count)
    if mode == "fixed":
        n_global = (counts > global_threshold * nq).sum(-1)
    else:
        cm = cycle_model or CycleModel()
        total = counts.sum(-1, keepdim=True)
        covered = torch.cat([torch.zeros_like(total), sorted_counts.cumsum(-1)], dim=-1)   # [..., Nk+1]
        g = torch.arange(nk + 1)
        cycles = cm.cycles(nq, g.to(torch.float64), (total - covered).to(torch.float64), head_dim)
        n_global = cycles.argmin(-1)                                  # first minimum: the smallest such G
    # order: the first G of by_count, then the remaining columns in index order.
    is_global = torch.zeros_like(counts, dtype=torch.bool)
    ranks = torch.arange(nk).expand_as(by_count)
    is_global.scatter_(-1, by_count, ranks < n_global.unsqueeze(-1))
    rest_key = torch.where(is_global, torch.full_like(counts, -1), torch.arange(nk).expand_as(counts))
    # Sort key: global columns by their rank in by_count, others after them by index.
    rank_of = torch.empty_like(by_count)
    rank_of.scatter_(-1, by_count, ranks.clone())
    sort_key = torch.where(is_global, rank_of, nk + rest_key)
    order = torch.sort(sort_key, dim=-1, stable=True).indices
    keep_polarized = keep | is_global.unsqueeze(-2)
    return keep_polarized, order, n_global
