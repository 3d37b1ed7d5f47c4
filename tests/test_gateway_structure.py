"""The gateway's modules form a tree, not a tangle: no import cycle between any of them (the
connection and the hub used to import each other), and every module says what it exports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "services" / "gateway" / "src" / "supie_gateway"
MODULES = sorted(p for p in SRC.rglob("*.py"))


def _name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["supie_gateway", *parts])


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _name(path) if path.name == "__init__.py" else _name(path).rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("supie_gateway"):
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("supie_gateway")}
    return found


def test_no_import_cycles_between_gateway_modules() -> None:
    names = {_name(p): p for p in MODULES}
    graph = {
        name: {t for t in _imports(path) if t in names and t != name}
        for name, path in names.items()
    }
    # package __init__ files re-export their children: leave those edges out
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, " -> ".join([*visiting[visiting.index(node) :], node])
        visiting.append(node)
        for nxt in graph[node]:
            visit(nxt)
        visiting.pop()
        done.add(node)

    for node in graph:
        visit(node)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_every_module_has_an_export_list(path: Path) -> None:
    if path.name == "__main__.py":
        return
    assert "__all__" in path.read_text(encoding="utf-8")
