"""Our own log lines (``superfan.*`` loggers: skipped bad samples, storage retries) on stderr, one line each.

Library modules only create loggers; the entry points that own a process (the CLI and sweep drivers via
:func:`superfan.train.session.ray_session`, and every Ray Train worker) call :func:`show_warnings` once, so a
retry or a skipped sample is visible where a person reads the run (Ray forwards workers' stderr).
"""

from __future__ import annotations

import logging

_MARK = "_superfan_handler"


def show_warnings(level: int = logging.WARNING, *, propagate: bool = True) -> None:
    """Idempotent: one stderr handler on the ``superfan`` logger. ``propagate=False`` in processes whose root
    logger already prints (a Ray Train worker's does): otherwise every line would appear twice."""
    log = logging.getLogger("superfan")
    if not any(getattr(h, _MARK, False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        setattr(handler, _MARK, True)
        log.addHandler(handler)
    log.setLevel(min(log.level or level, level))
    log.propagate = propagate
