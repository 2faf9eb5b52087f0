"""The layout's rules that code can check: data flows one way, so the library ``superfan`` never imports
the tools built on it (``shards``, ``sweeps``) or the development tools (``devtools``), every module is
imported in a fresh interpreter; and no two of its modules import each other, even lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, pkgutil, sys
import superfan
failed = []
for info in pkgutil.walk_packages(superfan.__path__, "superfan."):
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as err:  # an optional extra (dlib) is not an import of ours
        if (err.name or "").split(".")[0] in {"superfan", "shards", "sweeps", "devtools"}:
            raise
        failed.append(info.name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {"shards", "sweeps", "devtools"})
print("IMPORTED", len([m for m in sys.modules if m.startswith("superfan")]), "OPTIONAL", failed, "BAD", bad)
"""


def test_the_library_never_imports_shards_or_sweeps() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO / "tests", capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.endswith("BAD []"), line
    assert int(line.split()[1]) > 40  # every module really was imported


def _import_graph() -> dict[str, set[str]]:
    """superfan's modules and the superfan modules each imports, at any level (lazy imports included)."""
    files = {}
    for f in (REPO / "superfan").rglob("*.py"):
        parts = f.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, f in files.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                         for a in node.names]  # fmt: skip
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in found if t in files and t != name}
    return graph


def test_no_import_cycles_in_the_library() -> None:
    graph = _import_graph()
    assert len(graph) > 40 and graph["superfan.train.driver"], "the graph was not built"

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == goal:
                    return [*path, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [" -> ".join(c) for m in sorted(graph) if (c := reaches(m, m))]
    assert not cycles, cycles[:5]
