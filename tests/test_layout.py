"""The house rules that a reviewer would otherwise check by eye (issue 13).

* no function in ``hw/`` longer than ``MAX_FUNCTION_LINES`` lines;
* every ``wiring.Component`` in ``hw/`` documents its signature (a ``Members``
  section in its docstring);
* every component class in ``hw/`` is exercised by some unit test in ``tests/``
  that runs it in ``amaranth.sim`` or through a testbench (named in a test file).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HW = ROOT / "hw"
MAX_FUNCTION_LINES = 120


def _hw_files():
    return sorted(p for p in HW.rglob("*.py") if p.name != "__init__.py")


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _components(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                "Component" in ast.unparse(base) for base in node.bases):
            yield node


@pytest.mark.parametrize("path", _hw_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_long_functions_in_hw(path):
    tree = ast.parse(path.read_text())
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines, line {f.lineno})"
            for f in _functions(tree) if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions longer than {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("path", _hw_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_components_document_their_signature(path):
    tree = ast.parse(path.read_text())
    undocumented = [c.name for c in _components(tree)
                    if c.name != "ConfiguredComponent" and "Members" not in (ast.get_docstring(c) or "")]
    assert not undocumented, f"{path.name}: components without a 'Members' section: {undocumented}"


def test_every_component_is_named_by_a_test():
    names = {c.name for p in _hw_files() for c in _components(ast.parse(p.read_text()))}
    names.discard("ConfiguredComponent")
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    untested = sorted(n for n in names if n not in tests)
    assert not untested, f"components no test names: {untested}"
