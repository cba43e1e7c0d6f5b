"""Robust tickets (DAC 2023): sparse subnetworks drawn from adversarially robust models.

Files, one idea each:

* ``data.py``     the digits source task and downstream tasks of increasing domain gap;
* ``models.py``   the model family (small CNN, the ViTCoD ViT when present) and which layers are prunable;
* ``attacks.py``  PGD (L-inf, L2, random start) and FGSM;
* ``train.py``    natural and adversarial training, evaluation, checkpoints;
* ``pruning.py``  ticket masks (unstructured, channel, N:M; global or per layer), one-shot and
                  iterative magnitude pruning with rewinding, on ``torch.nn.utils.prune``;
* ``transfer.py`` new head on a downstream task with the ticket's mask held fixed;
* ``export.py``   int8 CSR export of a ticket's weights and the integer sparse-linear golden model;
* ``study.py``    the resumable robust-vs-natural transfer study;
* ``cli.py``      ``attnforge tickets pretrain|draw|transfer|study|export``.
"""
