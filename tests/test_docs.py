"""The documentation runs: every docstring example of the library (as a doctest) and the README's
Python API example."""
from __future__ import annotations

import ast
import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("planner", "strategies", "experiments")


def modules_with_examples() -> list[str]:
    """The library's modules whose source holds a ``>>>`` prompt (found without importing any,
    so modules that act on import, such as ``planner/cli/__main__.py``, are never loaded)."""
    names = []
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8"):
                name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                names.append(name.removesuffix(".__init__"))
    return names


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_of_the_library_run(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has a >>> prompt that doctest does not find in a docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def readme_python_api_example() -> str:
    """The ```python block under the README's "## Python API" heading, whatever it says now."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Python API' section"
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "the README's Python API section has no ```python block"
    return block.group(1)


def test_readme_python_api_example_imports_what_exists():
    """The example's imports resolve (a fast check beside the full run below)."""
    tree = ast.parse(readme_python_api_example())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imports
    exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), {})


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    """The example as written, in a fresh folder: its caches and outputs land there."""
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_api_example(), "README.md", "exec"), {"__name__": "__readme__"})
