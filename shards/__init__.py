"""Offline packing of raw face datasets into WebDataset tar shards + ``manifest.json`` (docs/contracts.md).

``python -m shards pack FORMAT SRC DEST --split NAME`` (see :mod:`shards.__main__`); from Python,
:func:`shards.pack.pack` with :class:`shards.pack.PackOptions`, and :func:`verify` to re-hash a pack.
"""

from __future__ import annotations

from typing import Any


def verify(url: str) -> dict[str, Any]:
    """Re-hash every shard of the pack at ``url`` against its manifest; raises ``IntegrityError``."""
    from shards.writer import verify as _verify

    return _verify(url)


__all__ = ["verify"]
