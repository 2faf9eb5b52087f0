"""Test-only fault injection: one documented hook, driven by one environment variable.

The chaos tests need real crashes at exact points (a promoter killed after its first file, a pull killed
between its renames, a Train worker killed mid-epoch). Production code marks such a point with one call,
:func:`kill_point`, which does nothing unless ``SUPERFAN_DEBUG_FAULTS`` arms it::

    SUPERFAN_DEBUG_FAULTS='{"kill": {"pull.after_swap": "/tmp/marker"}}'

The marker file makes it one-shot: the first process to reach the point creates it and SIGKILLs itself
(what the OOM killer or a lost node does: no cleanup at all); a rerun passes. The loop's own hooks
(``crash_at_step``, ``nan_at_step``) travel in the same variable (see :mod:`superfan.train.loop`).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

ENV = "SUPERFAN_DEBUG_FAULTS"


def armed() -> dict[str, Any]:
    """The faults this process was asked to inject (empty: none, the normal case)."""
    raw = os.environ.get(ENV)
    if not raw:
        return {}
    data = json.loads(raw)
    return data if isinstance(data, dict) else {}


def first_time(marker: str) -> bool:
    """Create ``marker``; True only for the first caller ever (across processes)."""
    try:
        with open(marker, "x") as f:
            f.write(f"fault injected by pid {os.getpid()}\n")
    except FileExistsError:
        return False
    return True


def kill_point(name: str) -> None:
    """SIGKILL this process here, once, if ``SUPERFAN_DEBUG_FAULTS`` arms ``name``."""
    marker = (armed().get("kill") or {}).get(name)
    if marker and first_time(str(marker)):
        os.kill(os.getpid(), signal.SIGKILL)
