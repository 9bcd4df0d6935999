"""The layering of ARCHITECTURE.md, enforced: family modules import only the public SDK
(genzoo.family, genzoo.nn), torch and third-party libraries; the core's import graph has no cycle
and never reaches up into plugins, the API or the CLI."""
import ast
import importlib
from pathlib import Path

import pytest

import genzoo

PKG = Path(genzoo.__file__).parent
# Modules under genzoo/plugins that are not families: the built-in plugin's hooks (it names
# family code lazily, as `module:attr` strings) and dataset loaders.
NOT_FAMILIES = {"__init__"}
PUBLIC = ("genzoo.family", "genzoo.nn", "genzoo.errors")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from genzoo import api` names a module too
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                      if node.module in ("genzoo", "genzoo.plugins", "genzoo.core")]
    return found


def family_modules() -> list[Path]:
    return sorted(p for p in (PKG / "plugins").rglob("*.py") if p.stem not in NOT_FAMILIES)


@pytest.mark.parametrize("path", family_modules(), ids=lambda p: p.stem)
def test_family_modules_import_only_the_public_sdk(path):
    bad = [f"{path.name}:{line} imports {mod}" for line, mod in imports_of(path)
           if mod.startswith("genzoo") and not mod.startswith(PUBLIC) and mod != "genzoo"]
    assert not bad, "family code must import only genzoo.family / genzoo.nn:\n" + "\n".join(bad)


def test_nn_modules_import_no_family_and_nothing_above():
    bad = []
    for path in sorted((PKG / "nn").rglob("*.py")):
        for line, mod in imports_of(path):
            if mod.startswith(("genzoo.plugins", "genzoo.api", "genzoo.cli", "genzoo.commands")):
                bad.append(f"nn/{path.relative_to(PKG / 'nn')}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def core_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((PKG / "core").rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        name = "genzoo." + ".".join(p for p in rel.parts if p != "__init__")
        graph[name] = {mod for _, mod in imports_of(path) if mod.startswith("genzoo")}
    return graph


def test_core_never_imports_upward():
    bad = [f"{mod} imports {dep}" for mod, deps in core_graph().items() for dep in deps
           if dep.startswith(("genzoo.plugins", "genzoo.api", "genzoo.cli", "genzoo.commands",
                              "genzoo.family", "genzoo.nn"))
           or dep == "genzoo"]  # genzoo/__init__ is the API facade
    assert not bad, "\n".join(bad)


def test_core_import_graph_is_acyclic():
    graph = core_graph()
    edges = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle in genzoo/core: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_cycle_detector_sees_a_cycle(monkeypatch):
    # the acyclicity test must fail on a real cycle, not pass vacuously
    fake = {"genzoo.core.a": {"genzoo.core.b"}, "genzoo.core.b": {"genzoo.core.a"}}
    monkeypatch.setitem(globals(), "core_graph", lambda: fake)
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_core_import_graph_is_acyclic()


def test_public_surface_is_documented():
    family = importlib.import_module("genzoo.family")
    missing = [n for n in family.__all__ if not family.DOCS.get(n)]
    assert not missing, f"genzoo.family names without a docstring line: {missing}"
    for name in family.__all__:
        assert hasattr(family, name), name
    for path in sorted((PKG / "nn").glob("*.py")):
        if path.stem == "__init__":
            continue
        mod = importlib.import_module(f"genzoo.nn.{path.stem}")
        assert mod.__doc__, f"genzoo.nn.{path.stem} has no module docstring"
        assert getattr(mod, "__all__", None), f"genzoo.nn.{path.stem} has no __all__"
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj):
                assert obj.__doc__, f"genzoo.nn.{path.stem}.{name} has no docstring"
