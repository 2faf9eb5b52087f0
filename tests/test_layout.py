"""The layout's one rule that code can check: data flows one way, so the library ``superfan`` never imports
the tools built on it (``shards``, ``sweeps``). Every module is imported in a fresh interpreter."""

from __future__ import annotations

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
        if (err.name or "").split(".")[0] in {"superfan", "shards", "sweeps"}:
            raise
        failed.append(info.name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {"shards", "sweeps"})
print("IMPORTED", len([m for m in sys.modules if m.startswith("superfan")]), "OPTIONAL", failed, "BAD", bad)
"""


def test_the_library_never_imports_shards_or_sweeps() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO / "tests", capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.endswith("BAD []"), line
    assert int(line.split()[1]) > 40  # every module really was imported
