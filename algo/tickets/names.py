"""Names shared by the tickets modules and the CLI, in a module that imports nothing heavy.

``attnforge --help`` builds every command group's parser; keeping these here
means it does not import torch for the ``tickets`` group.
"""

#: Downstream tasks in order of increasing domain gap (each adds a transform to the previous one).
GAPS = ("plain", "rotated", "inverted", "noisy")
#: Sparsity patterns of a ticket and the scopes magnitude ranking can take.
PATTERNS = ("unstructured", "channel", "nm")
SCOPES = ("layer", "global")
#: Transfer modes: full fine-tuning, linear probing.
MODES = ("finetune", "linear")
#: The model family.
MODEL_NAMES = ("cnn", "vit", "vit65")
