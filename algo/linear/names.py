"""Names shared by the linear-attention modules and the CLI, in a module that imports nothing heavy.

``attnforge --help`` builds every command group's parser; keeping the variant
names here means it does not import torch for the ``linear`` group (as
``algo/tickets/names.py`` does for ``tickets``). ``variants.VARIANTS`` maps the
same names, in the same order, to their classes (a test checks it).
"""

__all__ = ["VARIANT_NAMES"]

#: The attention variants of ``variants.VARIANTS``: softmax, then the linear ones.
VARIANT_NAMES = ("softmax", "relu", "elu", "performer", "cosformer", "transnormer", "flash", "yoso", "linformer")
