"""The small conventions of every JSON record superfan writes beside data and weights (shard manifests,
checkpoints' ``metrics.json``, champion manifests, evaluation results): one timestamp format, one
JSON-safe conversion, one file digest. No torch or Ray here: ``superfan pull`` and the packer use it too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
from collections.abc import Mapping
from typing import Any


def now_iso() -> str:
    """UTC, seconds, ISO 8601: ``2026-12-01T20:45:40+00:00``."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def json_safe(obj: Any, *, nan_as_none: bool = False) -> Any:
    """A copy made of dicts, lists, str, int, float, bool and None: tensors and numpy scalars (anything
    with ``.item()``) become Python numbers, one-element-or-more tensors lists. ``nan_as_none`` turns
    non-finite floats into ``null`` for records that strict JSON readers must parse (champion manifests)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v, nan_as_none=nan_as_none) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v, nan_as_none=nan_as_none) for v in obj]
    if isinstance(obj, float):
        return None if nan_as_none and not math.isfinite(obj) else obj
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    numel = getattr(obj, "numel", None)
    if callable(numel) and numel() != 1:
        return json_safe(obj.tolist(), nan_as_none=nan_as_none)
    if hasattr(obj, "item"):
        return json_safe(obj.item(), nan_as_none=nan_as_none)
    return str(obj)


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """``(hex digest, size in bytes)`` of a local file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
