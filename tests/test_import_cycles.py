"""The package's modules import each other without a cycle, and policy.py stays pure.

Every import statement counts, those inside functions included: a cycle hidden in a function body
is still a cycle (it only fails later, and in an order-dependent way).
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "jupyterhub_dataaccess"


def package_modules() -> dict[str, str]:
    """Module name -> file, for every .py file of the package (packages as their __init__)."""
    modules = {}
    root = os.path.join(REPO, PACKAGE)
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "labextension", "node_modules")]
        for name in files:
            if not name.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(folder, name), REPO)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = os.path.join(folder, name)
    return modules


def imports_of(module: str, path: str, modules: dict[str, str]) -> set[str]:
    """The package modules that `module` imports, anywhere in its file."""
    is_package = path.endswith("__init__.py")
    here = module if is_package else module.rpartition(".")[0]
    found = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import audit` names a module; `from .catalog import Dataset` does not
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` loads a.b.c; keep the module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def test_when_the_package_is_read_then_no_module_imports_itself_back(graph):
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_when_a_cycle_exists_then_the_check_names_it():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_when_relative_imports_are_read_then_they_resolve_to_package_modules(graph):
    assert f"{PACKAGE}.catalog" in graph[f"{PACKAGE}.sources.readers"]  # from ..catalog import
    assert f"{PACKAGE}.config_files" in graph[f"{PACKAGE}.service.app"]  # from ..config_files


def test_when_policy_is_read_then_it_imports_only_the_catalogue_model(graph):
    assert graph[f"{PACKAGE}.policy"] == {f"{PACKAGE}.catalog"}
    assert f"{PACKAGE}.config_files" not in graph[f"{PACKAGE}.catalog"]
