"""What a command asks dbt to build (``Selection``) and which nodes that build runs, resolved
on dbt's own graph of the last parse (``target/manifest.json``), so ``builds.py`` can tell
whether they are already up to date.

Just enough of dbt's node selection for the selectors pacs2xnat uses: a space-separated union
of terms, each an intersection (``a,b``) of atoms; an atom is a model or seed name or
``source:``, ``tag:``, ``resource_type:``, ``path:`` with a value, with ``+`` before (and its
ancestors) or after (and its descendants). Then dbt's indirect selection of tests ("cautious":
a test whose every parent is selected; "empty": none) and the resource types left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILT = ("model", "seed", "test")


@dataclass(frozen=True)
class Selection:
    """What a command needs built: dbt's ``--select``/``--exclude`` (empty select: every
    model), whether data tests run, whether unit tests run."""

    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tests: bool = True
    unit_tests: bool = False
    #: which tests come with the selected models: "cautious" (those whose every parent is
    #: selected) or "empty" (only the tests the selectors name themselves)
    indirect: str = "cautious"

    @property
    def is_everything(self) -> bool:
        return not self.select and not self.exclude

    def dbt_args(self) -> list[str]:
        """``dbt build`` always (``dbt run`` would not load the seeds the models read)."""
        args = ["build"]
        if self.select:
            args += ["--select", *self.select]
        if self.exclude:
            args += ["--exclude", *self.exclude]
        if not self.is_everything and self.tests:
            # "cautious": a test runs only when every model it reads is selected, so a partial
            # build never runs a test on a model it did not build.
            args += ["--indirect-selection", self.indirect]
        if not self.tests:
            args += ["--exclude-resource-type", "test", "unit_test"]
        elif not self.unit_tests:
            args += ["--exclude-resource-type", "unit_test"]
        return args

    def describe(self) -> str:
        what = " ".join(self.select) if self.select else "every model"
        if self.exclude:
            what += f" except {' '.join(self.exclude)}"
        tests = "unit and data tests" if self.unit_tests else "data tests" if self.tests else ""
        return f"{what}{' with ' + tests if tests else ''}"


@dataclass(frozen=True)
class Resolved:
    """The nodes a build of a selection runs, and whether they are all live: views (or
    ephemeral models) and seeds, whose content follows the raw tables as they change (a view
    is a query, a seed is the project's CSV), so only the project and the vars can make what
    a build made of them stale. A table or a test holds a result of the data it ran on."""

    nodes: set[str]
    live: bool


def resolve(selection: Selection, project_dir: Path) -> Resolved | None:
    """The models, seeds and tests (unit tests too, if asked) the build runs; None when there
    is no parsed graph to read."""
    try:
        with open(Path(project_dir) / "target" / "manifest.json", encoding="utf-8") as f:
            graph = Graph(json.load(f))
    except (OSError, ValueError):
        return None
    nodes = graph.resolve(selection)
    return Resolved(nodes, bool(nodes) and all(graph.is_live(n) for n in nodes))


class Graph:
    def __init__(self, manifest: dict[str, Any]) -> None:
        self.nodes: dict[str, dict[str, Any]] = {
            k: v for k, v in manifest.get("nodes", {}).items() if v["resource_type"] in BUILT
        }
        self.sources: dict[str, dict[str, Any]] = manifest.get("sources", {})
        self.unit_tests: dict[str, dict[str, Any]] = manifest.get("unit_tests", {})
        self.parents: dict[str, list[str]] = manifest.get("parent_map", {})
        self.children: dict[str, list[str]] = manifest.get("child_map", {})

    def resolve(self, selection: Selection) -> set[str]:
        if selection.select:
            chosen = set().union(*(self._term(t) for t in selection.select))
        else:
            chosen = set(self.nodes)
        for term in selection.exclude:
            chosen -= self._term(term)
        sources = {n for n in chosen if n in self.sources}
        chosen = {n for n in chosen if n in self.nodes}
        models = {n for n in chosen if self.nodes[n]["resource_type"] != "test"}
        tests = {n for n in chosen if self.nodes[n]["resource_type"] == "test"}
        if selection.select and selection.indirect == "cautious":
            tests |= {
                t
                for t, node in self.nodes.items()
                if node["resource_type"] == "test"
                and (deps := set(node.get("depends_on", {}).get("nodes", [])))
                and deps <= (models | sources)
                and not any(t in self._term(e) for e in selection.exclude)
            }
        out = models | (tests if selection.tests else set())
        if selection.unit_tests:
            out |= {
                u
                for u, node in self.unit_tests.items()
                if set(node.get("depends_on", {}).get("nodes", [])) & models
            }
        return out

    def is_live(self, unique_id: str) -> bool:
        node = self.nodes.get(unique_id)
        if node is None:  # a unit test
            return False
        if node["resource_type"] == "seed":
            return True
        materialized = node.get("config", {}).get("materialized")
        return node["resource_type"] == "model" and materialized in ("view", "ephemeral")

    def _term(self, term: str) -> set[str]:
        result: set[str] | None = None
        for atom in term.split(","):
            found = self._atom(atom)
            result = found if result is None else result & found
        return result or set()

    def _atom(self, atom: str) -> set[str]:
        up, down = atom.startswith("+"), atom.endswith("+")
        method, _, value = atom.strip("+").rpartition(":")
        everything = {**self.nodes, **self.sources}
        if method == "source":
            found = {k for k, v in self.sources.items() if v["source_name"] == value}
        elif method == "tag":
            found = {k for k, v in self.nodes.items() if value in v.get("tags", [])}
        elif method == "resource_type":
            found = {k for k, v in everything.items() if v["resource_type"] == value}
        elif method == "path":
            found = {
                k
                for k, v in everything.items()
                if str(v.get("original_file_path", "")).startswith(value.rstrip("/"))
            }
        else:
            found = {k for k, v in self.nodes.items() if v["name"] == value}
        if up:
            found |= self._walk(found, self.parents)
        if down:
            found |= self._walk(found, self.children)
        return found

    @staticmethod
    def _walk(start: set[str], edges: dict[str, list[str]]) -> set[str]:
        seen: set[str] = set()
        todo = list(start)
        while todo:
            for nxt in edges.get(todo.pop(), []):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
