"""Worktree isolation for the checkout's venv (``make setup``: an editable install of the checkout).

The editable install maps attnforge.hw/.sim/.algo/.tb/.fpga to the main checkout's top-level folders
through a meta-path finder, so ``PYTHONPATH=<worktree>`` alone still imports the main checkout's hw/.
Copied to a worktree's root as ``sitecustomize.py`` (with the worktree on ``PYTHONPATH``), this file
points that finder's mapping at the worktree instead (scripts/vitcod_cycles_compare.py uses it to run
an older commit's cycle model).
"""
import os
import sys

_root = os.path.dirname(os.path.abspath(__file__))
for _finder in sys.meta_path:
    _mod = sys.modules.get(getattr(_finder, "__module__", "") or "")
    _mapping = getattr(_mod, "MAPPING", None)
    if isinstance(_mapping, dict) and "attnforge.hw" in _mapping:
        for _name, _path in list(_mapping.items()):
            _mapping[_name] = os.path.join(_root, os.path.basename(_path))
