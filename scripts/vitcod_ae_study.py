"""The ViTCoD study's 90 % arm with the Q/K auto-encoder settings that meet its claim (issue 16 item 5).

``attnforge.benchmarks.vitcod_algo.run`` at 90 % sparsity only, seeds 0-2, the auto-encoder started from
the PCA of each layer's Q/K (``--ae-init pca``), reconstruction weight 0.1, ``--ae-epochs`` of
auto-encoder training and ``--ft-epochs`` of fine-tuning with the masks (both arms). Each seed's dense
model is kept in ``--dense-cache`` and reused by later runs (the same settings train the same model).

Run: ``nice .venv/bin/python scripts/vitcod_ae_study.py [--ae-epochs 8] [--ft-epochs 10]
[--out build/vitcod/study_ae_pca_ft10] [--dense-cache build/vitcod/dense_cache]`` (about 50 minutes on
the shared 2-core machine with the dense models cached; docs/vitcod-algo.md quotes its JSON).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnforge.benchmarks.vitcod_algo import StudyConfig, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ae-epochs", type=int, default=8)
    p.add_argument("--ft-epochs", type=int, default=10)
    p.add_argument("--out", default="build/vitcod/study_ae_pca_ft10")
    p.add_argument("--dense-cache", default="build/vitcod/dense_cache")
    args = p.parse_args(argv)
    if args.ae_epochs < 1 or args.ft_epochs < 1:
        p.error(f"--ae-epochs and --ft-epochs must be >= 1, not {args.ae_epochs} and {args.ft_epochs}")
    cfg = StudyConfig(sparsities=(0.9,), ae_init="pca", ae_weight=0.1, ae_epochs=args.ae_epochs,
                      ft_epochs=args.ft_epochs)
    path = run(Path(args.out), config=cfg, dense_cache=Path(args.dense_cache),
               command="python scripts/vitcod_ae_study.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
