"""Which code made a checkpoint or a champion, in terms that survive ``ray job submit``.

A commit hash alone is not enough: under ``ray job submit --working-dir .`` the uploaded directory has no
``.git`` (Ray leaves it out), so a job could only record "0.1.0". :func:`code_identity` records, always:

* ``source_sha256``: a digest of the Python sources of ``superfan``, ``shards`` and ``sweeps`` as this
  process imported them (path and bytes of every ``.py`` file), the same on every machine running that code;
* ``ray_working_dir``: the URI of the package Ray shipped (``gcs://_ray_pkg_<content hash>.zip``), read from
  the job's ``runtime_env`` through Ray's public ``get_runtime_context()`` when the process is in a Ray job;

and, when it is known, the git ``commit``: from the checkout itself, or from ``SUPERFAN_GIT_COMMIT``, which
the submitting machine sets (``--runtime-env-json '{"env_vars": {"SUPERFAN_GIT_COMMIT": "'$(git rev-parse
HEAD)'"}}'``; a plain, non-secret setting the job's processes inherit), with ``commit_source`` saying which.
No torch and no Ray import here: ``superfan pull`` and the packer use it too.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The release (pyproject.toml's ``version``); ``superfan.__version__`` re-exports it.
VERSION = "0.1.0"
COMMIT_ENV = "SUPERFAN_GIT_COMMIT"
_ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = ("superfan", "shards", "sweeps")


@functools.cache
def _git() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout this code runs from, or ``(None, None)`` without one."""
    if not (_ROOT / ".git").exists():
        return None, None
    try:
        sha = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "-C", str(_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=False).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (sha, bool(status.strip())) if re.fullmatch(r"[0-9a-f]{40}", sha) else (None, None)


@functools.cache
def source_sha256() -> str:
    """sha256 over the relative path and bytes of every ``.py`` file of the three packages, sorted."""
    h = hashlib.sha256()
    for package in _PACKAGES:
        base = _ROOT / package
        for path in sorted(base.rglob("*.py")) if base.is_dir() else []:
            h.update(str(path.relative_to(_ROOT)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _ray_working_dir() -> str | None:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        working_dir = ray.get_runtime_context().runtime_env.get("working_dir")
    except Exception:  # noqa: BLE001 - provenance is best effort; it never stops a run
        return None
    return str(working_dir) if working_dir else None


def code_identity() -> dict[str, Any]:
    """The identity of the running code (see the module docstring)."""
    commit, dirty = _git()
    source = "git" if commit else None
    given = os.environ.get(COMMIT_ENV, "").strip().lower()
    if commit is None and re.fullmatch(r"[0-9a-f]{7,40}", given):
        commit, source = given, COMMIT_ENV
    return {
        "version": VERSION,
        "commit": commit,
        "commit_source": source,
        "dirty": dirty,
        "source_sha256": source_sha256(),
        "ray_working_dir": _ray_working_dir(),
    }


def code_version() -> str:
    """``__version__`` plus the short commit when known: ``0.1.0+g1a2b3c4`` (or ``0.1.0+src.<digest>``)."""
    ident = code_identity()
    if ident["commit"]:
        return f"{ident['version']}+g{ident['commit'][:7]}"
    return f"{ident['version']}+src.{ident['source_sha256'][:12]}"
