"""The package's layering holds (issue 22): no import circle between jaxmem's modules, no
module importing another's private ``_name``, no module over 500 lines. Read from the source
with ``ast`` (nothing is imported), so a regression names the modules at fault."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxmem"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = f
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ``jaxmem.a.b.c`` (a module itself, or the package holding the name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Every module's jaxmem imports (module -> modules), and the private names imported
    across modules as (importer, module, name)."""
    edges, private = {m: set() for m in MODULES}, []
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (
                    node.module or "").split(".")[0] == "jaxmem":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in MODULES else _owner(node.module)
                    if target and target != mod:
                        edges[mod].add(target)
                        if alias.name.startswith("_") and full not in MODULES:
                            private.append((mod, target, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    target = _owner(alias.name) if alias.name.startswith("jaxmem") else None
                    if target and target != mod:
                        edges[mod].add(target)
    return edges, private


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checks_can_fail():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert circles(imports()[0]) == []


def test_no_private_names_imported_across_modules():
    assert imports()[1] == []


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_module_over_500_lines(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[mod]} has {n} lines; split it by what it holds"
