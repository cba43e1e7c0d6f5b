"""Robust tickets benchmark: the robust-vs-natural ticket transfer study (``algo/tickets/study.py``).

Writes ``tickets_study.json`` and ``tickets_study_<model>_<scheme>.png`` under
``out_dir``: downstream test accuracy vs sparsity for robust and natural
tickets, per pattern, domain gap and transfer mode, mean ± std over 5 seeds,
with paired robust-minus-natural differences and whether each exceeds the seed
noise. Cells are cached under ``build/tickets/<name>/``, so an interrupted run
resumes. The full study is sized for under an hour on 2 cores; ``quick`` runs
a minutes-long smoke configuration (CNN, 2 seeds) instead.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run"]


def run(out_dir: Path, *, quick: bool = False, command: str = "attnforge bench tickets") -> Path:
    import torch

    from attnforge.algo.tickets.study import full_config, quick_config, run_study

    torch.set_num_threads(1)
    name = "tickets_study_quick" if quick else "tickets_study"
    cfg = quick_config() if quick else full_config()
    path = run_study(Path("build") / "tickets" / name, cfg, workers=2, command=command,
                     report_dir=Path(out_dir), name=name)
    print(f"wrote {path}")
    return path
