"""Polarization: split each head's mask into a dense part (global key columns) and a sparse part.

A key column is *global* when many queries keep it. ViTCoD orders the global
keys first: the Denser Engine computes every query against all ``G`` of them
(so the mask keeps those columns whole), the Sparser Engine computes the kept
entries of the other columns from CSR (the host moves part of each row's CSR
entries to the Denser Engine, ``hw/vitcod/balance.py``). Two ways to choose G:

* ``mode="fixed"``: ViTCoD's rule, columns kept by more than
  ``global_threshold * Nq`` queries (``global_threshold`` in [0, 1]).
* ``mode="cycles"``: per head, the ``G`` (columns taken by decreasing kept
  count) with the fewest cycles on the accelerator ``accelerator``
  (a :class:`~attnforge.hw.vitcod.VitcodConfig`), by its exact cycle model
  ``attnforge.hw.vitcod.cycles``, which replays the RTL to the cycle. ViTCoD's
  fixed threshold is not tuned to the engines; this picks G for them.

**Objective** (:func:`head_cost`): the cycles of the head in a run of heads
back to back: the second of three copies of the head in
``run_cycles(cfg, [s, s, s])``, a head between two others. The accelerator
loads the next heads while this one computes and overlaps their rows with
its own, so a head costs neither the ``load + compute`` of ``head_cycles`` of
one head alone (which would count the index beats that a larger G saves at
full price) nor its compute alone. Ties go to the smaller G.

**Candidates** (evaluating every G in 0..Nk costs ~13 ms each at N = 197):
G = 0..16, the fixed rule's G (``global_threshold``), and 24, 36, 54, ...
(x1.5) up to Nk, Nk itself; then every G between the best candidate's
neighbours in that list (a refinement where the list is sparse). Each
candidate's cost is bounded below by ``max(load + 2, the Denser Engine's issue
cycles for the G global keys of every row, half of the least issue cycles both
engines need together over any split of each row)`` (each engine issues one
beat per cycle): candidates are evaluated by increasing
bound and the search stops when the bound reaches the best cost found, so the
answer is the exact minimum over the candidates with ~3 exact evaluations per
head. CSR row lengths of a candidate G: each row's kept entries outside the
first G columns (a cumulative sum over the sorted columns). A candidate whose
CSR does not fit the accelerator's 16-bit pointers (more than 65,535 entries)
is left out; G = Nk (no CSR) always fits.

Buffers: the timing depends neither on ``max_tokens`` nor on ``max_nnz``, so
:func:`fit_accelerator` enlarges them to the masks (the report records the
configuration used); Nq or Nk beyond the generator's 4,096 is refused
(``ConfigError``).

Key order: the global columns by decreasing count (ties by index), then the
others in index order.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import torch

from attnforge.errors import ConfigError
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.balance import engine_job_cycles
from attnforge.hw.vitcod.config import INDEX_WIDTH
from attnforge.hw.vitcod.cycles import HeadShape, head_beats, head_cycles, replay_cycles, run_cycles

from .names import POLARIZE_MODES

__all__ = ["polarize", "POLARIZE_MODES", "default_accelerator", "fit_accelerator", "head_cost", "steady_cycles",
           "cycles_g",
           "FIXED_CANDIDATES", "GEOMETRIC_RATIO"]

#: G = 0..FIXED_CANDIDATES are always candidates (real pruned heads keep 1 to 10 global columns).
FIXED_CANDIDATES = 16
#: Beyond them, a geometric sequence 16 * 1.5**k up to Nk.
GEOMETRIC_RATIO = 1.5
#: Largest CSR a head may have (uint16 row pointers).
MAX_NNZ = (1 << INDEX_WIDTH) - 1
#: Largest Nq, Nk a ViTCoD accelerator may be built for.
MAX_TOKENS = 4096


def default_accelerator(head_dim: int) -> VitcodConfig:
    """The accelerator ``vitcod sim`` builds by default for heads of ``head_dim`` channels
    (``VitcodConfig``'s defaults, ``data_width = min(256, 8 * head_dim)``)."""
    return VitcodConfig(head_dim=head_dim, data_width=min(256, 8 * head_dim))


def fit_accelerator(cfg: VitcodConfig, nq: int, nk: int, nnz: int = 1) -> VitcodConfig:
    """``cfg`` with ``max_tokens`` and ``max_nnz`` raised to hold heads of ``nq x nk`` with up to ``nnz``
    CSR entries (at most 65,535; the timing does not depend on them). ``ConfigError`` when the heads
    are longer than any ViTCoD accelerator can take."""
    if not isinstance(cfg, VitcodConfig):
        raise TypeError(f"accelerator must be a VitcodConfig, not {type(cfg).__name__}")
    if max(nq, nk) > MAX_TOKENS:
        raise ConfigError(f"heads of Nq={nq}, Nk={nk} tokens do not fit a ViTCoD accelerator (max_tokens is at "
                          f"most {MAX_TOKENS})")
    return dataclasses.replace(cfg, max_tokens=max(cfg.max_tokens, nq, nk),
                               max_nnz=max(cfg.max_nnz, min(MAX_NNZ, max(1, int(nnz)))))


def head_cost(cfg: VitcodConfig, shape: HeadShape) -> tuple[int, int]:
    """``(steady, alone)``: :func:`steady_cycles` and the cycles of the head alone (``head_cycles``:
    first command to last output beat)."""
    return steady_cycles(cfg, shape), head_cycles(cfg, shape)


def steady_cycles(cfg: VitcodConfig, shape: HeadShape) -> int:
    """Cycles of the head back to back with itself (the objective, see the module docstring), memoized
    per configuration for plain heads (balanced split, ``hc = 1``)."""
    if shape.balance == "balanced" and shape.hc == 1 and shape.good and not shape.layer:
        return _chooser(cfg).cost(shape.nq, shape.nk, shape.g, np.asarray(shape.row_nnz, dtype=np.int64))
    return _steady_cycles(cfg, shape)


def _steady_cycles(cfg: VitcodConfig, shape: HeadShape) -> int:
    # the middle of three copies back to back: a head between two others (the first starts alone, the
    # last has no head after it whose rows share its engines)
    return run_cycles(cfg, [shape] * 3)["heads"][1]["cycles"]


class _Chooser:
    """Cycles-mode G for one accelerator, with the per-G lower-bound tables and the exact costs memoized."""

    def __init__(self, cfg: VitcodConfig):
        self.cfg = cfg
        self._least = {}     # (g, nk) -> least issue cycles of both engines together for a row of n = 0..nk
        self._cost = {}      # (nq, nk, g, row_nnz bytes) -> steady cycles

    def least(self, g: int, nk: int) -> np.ndarray:
        """Per n = 0..nk: the fewest issue cycles both engines together can spend on a row of G global keys
        and n CSR entries, over every split of the entries (whatever split the host then picks)."""
        key = (g, nk)
        if key not in self._least:
            n = np.arange(nk + 1)
            d = np.arange(nk + 1)[None, :]
            both = engine_job_cycles(self.cfg, 0, g + d) + engine_job_cycles(self.cfg, 1, np.maximum(n[:, None] - d, 0))
            self._least[key] = np.where(d <= n[:, None], both, np.iinfo(np.int64).max).min(axis=1)
        return self._least[key]

    def bound(self, nq: int, nk: int, g: int, row_nnz: np.ndarray) -> int:
        """A lower bound of ``head_cost``'s steady cycles: the load, the Denser Engine's G global keys of
        every row, and half of the least issue cycles both engines together need (each engine issues at
        most one beat per cycle, whatever the host's split)."""
        cfg = self.cfg
        dense = int(engine_job_cycles(cfg, 0, np.full(nq, g)).sum())
        both = int(self.least(g, nk)[row_nnz].sum())
        s = HeadShape(nq, nk, g, [int(row_nnz.sum())])
        load = head_beats(cfg, s) + replay_cycles(cfg, s)
        return max(load + 2, dense, -(-both // 2))

    def cost(self, nq: int, nk: int, g: int, row_nnz: np.ndarray) -> int:
        row_nnz = np.ascontiguousarray(row_nnz, dtype=np.int64)
        key = (nq, nk, g, row_nnz.tobytes())
        if key not in self._cost:
            if len(self._cost) > 200_000:
                self._cost.clear()
            self._cost[key] = _steady_cycles(self.cfg, HeadShape(nq, nk, g, row_nnz.tolist()))
        return self._cost[key]

    def choose(self, keep_sorted: np.ndarray, fixed_g: int) -> tuple[int, int]:
        """``(G, steady cycles)`` of one head; ``keep_sorted``: bool ``[Nq, Nk]``, columns by decreasing count."""
        nq, nk = keep_sorted.shape
        outside = keep_sorted.sum(1, dtype=np.int64)[:, None] - np.concatenate(
            [np.zeros((nq, 1), np.int64), np.cumsum(keep_sorted, axis=1, dtype=np.int64)], axis=1)  # [Nq, Nk+1]
        fits = outside.sum(0) <= MAX_NNZ
        cands = _candidates(nk, fixed_g)
        best = self._search(nq, nk, outside, fits, cands, None)
        i = cands.index(best[1])
        lo = cands[i - 1] if i > 0 else 0
        hi = cands[i + 1] if i + 1 < len(cands) else nk
        refine = [g for g in range(lo + 1, hi) if g not in cands]
        if refine:
            best = self._search(nq, nk, outside, fits, refine, best)
        return best[1], best[0]

    def _search(self, nq, nk, outside, fits, cands, best):
        bounds = sorted((self.bound(nq, nk, g, outside[:, g]), g) for g in cands if fits[g])
        for lb, g in bounds:
            if best is not None and lb > best[0]:
                break
            steady = self.cost(nq, nk, g, outside[:, g])
            if best is None or (steady, g) < best:
                best = (steady, g)
        return best


def _candidates(nk: int, fixed_g: int) -> list[int]:
    cands = set(range(min(FIXED_CANDIDATES, nk) + 1)) | {min(int(fixed_g), nk), nk}
    x = float(FIXED_CANDIDATES)
    while x < nk:
        x *= GEOMETRIC_RATIO
        cands.add(min(nk, round(x)))
    return sorted(cands)


def _chooser(cfg: VitcodConfig) -> _Chooser:
    # one chooser (and its memos) per timing: the buffer sizes do not change the cycles
    return _timing_chooser(dataclasses.replace(cfg, max_tokens=MAX_TOKENS, max_nnz=MAX_NNZ))


@lru_cache(maxsize=8)
def _timing_chooser(cfg: VitcodConfig) -> _Chooser:
    return _Chooser(cfg)


def cycles_g(keep, accelerator: VitcodConfig, global_threshold: float = 0.5):
    """Per head of bool ``keep [..., Nq, Nk]``: ``(G, steady cycles)`` of cycles mode (int64 arrays ``[...]``)
    on ``accelerator`` (enlarged by :func:`fit_accelerator`), with columns by decreasing kept count."""
    keep = torch.as_tensor(keep)
    nq, nk = keep.shape[-2:]
    counts = keep.sum(-2)
    by_count = torch.sort(-counts, dim=-1, stable=True).indices
    fixed = (counts > global_threshold * nq).sum(-1)
    return _cycles_g(keep, by_count, fixed, accelerator)


def _cycles_g(keep, by_count, fixed, accelerator):
    nq, nk = keep.shape[-2:]
    cfg = fit_accelerator(accelerator, nq, nk, int(keep.sum((-2, -1)).max()) if keep.numel() else 1)
    chooser = _chooser(cfg)
    k = keep.reshape(-1, nq, nk).numpy()
    bc = by_count.reshape(-1, nk).numpy()
    fx = fixed.reshape(-1).numpy()
    g = np.zeros(k.shape[0], np.int64)
    cyc = np.zeros(k.shape[0], np.int64)
    for i in range(k.shape[0]):
        g[i], cyc[i] = chooser.choose(k[i][:, bc[i]], int(fx[i]))
    shape = tuple(keep.shape[:-2])
    return torch.from_numpy(g.reshape(shape)), torch.from_numpy(cyc.reshape(shape))


def polarize(keep: torch.Tensor, *, mode: str = "fixed", global_threshold: float = 0.5,
             accelerator: VitcodConfig | None = None, n_global=None):
    """Global columns and key order of every head.

    Parameters
    ----------
    keep : bool ``[..., Nq, Nk]``
        The pruned masks (e.g. from :func:`~attnforge.algo.vitcod.pruning.cumulative_mass_keep`).
    mode : ``"fixed"`` or ``"cycles"``
        See the module docstring.
    global_threshold : float
        Fixed mode's fraction of the queries; in cycles mode its G is one of the candidates.
    accelerator : VitcodConfig
        Cycles mode: the accelerator G is chosen for (its buffers are enlarged to the masks).
        Required in cycles mode.
    n_global : int tensor ``[...]``, optional
        Take these G instead of choosing them (the columns are still the most kept ones).

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
    if mode == "cycles" and accelerator is None and n_global is None:
        raise ConfigError("cycles-mode polarization needs the accelerator (a VitcodConfig) to choose G for")
    nq, nk = keep.shape[-2:]
    counts = keep.sum(-2)                                             # [..., Nk] queries keeping each key
    # Columns by decreasing count, ties by index (a stable sort of -count).
    by_count = torch.sort(-counts, dim=-1, stable=True).indices
    if n_global is not None:
        n_global = torch.as_tensor(n_global, dtype=torch.int64).expand(counts.shape[:-1])
    elif mode == "fixed":
        n_global = (counts > global_threshold * nq).sum(-1)
    else:
        n_global, _ = _cycles_g(keep, by_count, (counts > global_threshold * nq).sum(-1), accelerator)
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
