"""It keeps the import rules of docs/architecture.md: no cycles, each package importing only
what it may, the PACS and XNAT sides apart, only the command line importing the cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from connectors import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "connectors"
#: Shared by every package: they import nothing of ours but each other.
CORE = {"connectors", "errors", "config", "clock", "console", "files", "seams", "windows"}
#: package -> the packages it may import (besides itself and the core).
ALLOWED: dict[str, set[str]] = {
    "seams": set(),
    "warehouse": set(),
    "admin": {"warehouse"},
    "outputs": {"warehouse"},
    "pacs": {"warehouse"},
    "xnat": {"warehouse"},
    "load": {"warehouse", "pacs", "xnat"},
    "testbed": {"warehouse", "pacs"},
    "app": {"warehouse", "admin", "outputs", "pacs", "xnat", "load", "testbed"},
}
MAX_LINES = 400
#: Longer on purpose: tables of synthetic test-bed data and handlers, not pipeline code.
LONGER = {"connectors.testbed.pacs_scp": 420}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PROJECT_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Our modules imported anywhere in the file (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("connectors")
        ):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("connectors")}
    return found


GRAPH = {m: _imports(p) & set(MODULES) for m, p in MODULES.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "connectors"


def test_there_are_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_what_its_package_may(module: str) -> None:
    pkg = _package(module)
    may = CORE | {pkg} | ALLOWED.get(pkg, set())
    if pkg in CORE and pkg != "connectors":
        may = CORE  # the core imports only the core
    wrong = sorted(t for t in GRAPH[module] if _package(t) not in may)
    assert wrong == [], f"{module} ({pkg}) may not import {wrong}"


def test_the_pacs_and_xnat_sides_never_import_each_other() -> None:
    for module, targets in GRAPH.items():
        sides = {_package(module), *(_package(t) for t in targets)}
        assert not {"pacs", "xnat"} <= sides or _package(module) not in ("pacs", "xnat"), module


def test_only_the_command_line_imports_the_cycle_and_the_demo() -> None:
    for guarded in ("connectors.app.cycle", "connectors.testbed.demo"):
        importers = sorted(m for m, targets in GRAPH.items() if guarded in targets)
        assert importers == ["connectors.app.cli"], (guarded, importers)


def test_no_module_is_over_400_lines() -> None:
    long = {
        m: n
        for m, p in MODULES.items()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > LONGER.get(m, MAX_LINES)
    }
    assert long == {}


def test_one_name_for_one_thing() -> None:
    """No two modules define a top-level class of the same name (three ``Outcome`` once)."""
    seen: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        if _package(module) == "testbed":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(module)
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_private_attributes_of_libraries_are_touched_only_in_seams() -> None:
    """``x._name`` on anything but ``self``/``cls`` (ours), and ``import ..._private``, live in
    ``connectors/seams/`` only, each checked by ``tests/seams``."""
    offenders = []
    for module, path in MODULES.items():
        if _package(module) in ("seams", "testbed"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        ours = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if any(_private(p) for p in node.module.split(".")):
                    offenders.append(f"{module}: from {node.module}")
                offenders += [
                    f"{module}: import {a.name} from {node.module}"
                    for a in node.names
                    if _private(a.name) and not node.module.startswith("connectors")
                ]
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
                and not (isinstance(node.value, ast.Name) and node.value.id in ours)
                and not (isinstance(node.value, ast.Name) and node.value.id == "os")  # os._exit
            ):
                offenders.append(f"{module}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_the_commands_start_without_the_heavy_imports_they_may_not_need() -> None:
    """psycopg (~0.2 s) only when the warehouse is PostgreSQL, dbt (~1.5-3 s) only when dbt
    runs: importing the command line and the query, retrieval and load code pulls in neither
    (a fresh interpreter, so nothing else has imported them first)."""
    import subprocess
    import sys

    code = (
        "import sys, connectors.app.cli, connectors.pacs.query, connectors.pacs.retrieve, "
        "connectors.load.runner, connectors.load.direct; "
        "print(sorted(m for m in ('psycopg', 'dbt') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
