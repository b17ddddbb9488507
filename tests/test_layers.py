"""The house's rules: imports run one way (import-linter's contracts in setup.cfg), no module
imports another that imports it back, and the project's own imports sit in module headers."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("planner", "strategies", "experiments")


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(tree: ast.Module, modules: dict[str, Path]) -> list[tuple[ast.stmt, str]]:
    """Every import of a project module in ``tree`` (functions and TYPE_CHECKING included),
    resolved to the module it loads (``from a import b`` is module ``a.b`` when that exists)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                     else node.module for a in node.names]
        else:
            continue
        found += [(node, n) for n in names if n.split(".")[0] in PACKAGES]
    return found


def test_lint_imports_keeps_every_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "setup.cfg"), "--no-cache"],
                            cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layer_contract(tmp_path):
    """The contract is live: a copy of the tree with one upward import fails lint-imports."""
    for top in PACKAGES:
        subprocess.run(["cp", "-r", str(ROOT / top), str(tmp_path / top)], check=True)
    (tmp_path / "setup.cfg").write_text((ROOT / "setup.cfg").read_text())
    errors = tmp_path / "planner" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom planner.search import plan  # upward\n")
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stdout[-2000:]
    assert "planner.core.errors -> planner.search.plan" in result.stdout


def test_no_import_cycle_among_modules_counting_imports_inside_functions():
    modules = _modules()
    graph = {name: {m for _, m in _imports(ast.parse(path.read_text()), modules)
                    if m in modules and m != name}
             for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how a method registers: not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_project_imports_sit_in_module_headers():
    """Only the CLI imports the library inside functions, so ``specplan --help`` stays fast."""
    modules = _modules()
    inside = []
    for name, path in modules.items():
        if name == "planner.cli" or name.startswith("planner.cli."):
            continue
        tree = ast.parse(path.read_text())
        header = {id(n) for n in tree.body}  # with `if TYPE_CHECKING:` blocks at module level
        header |= {id(n) for block in tree.body if isinstance(block, ast.If) for n in block.body}
        inside += [f"{path.relative_to(ROOT)}:{node.lineno} imports {m}"
                   for node, m in _imports(tree, modules) if id(node) not in header]
    assert not inside, "\n".join(inside)


@pytest.mark.parametrize("package", ["planner", "planner.core"])
def test_importing_the_floor_does_not_load_the_roof(package):
    code = (f"import sys, {package}; roof = [m for m in sys.modules if m.startswith("
            f"('planner.search', 'planner.cli', 'experiments', 'strategies'))]; print(roof)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
