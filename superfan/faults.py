"""Test-only fault injection: one documented hook, driven by one environment variable.

The chaos tests need real crashes at exact points (a promoter killed after its first file, a pull killed
between its renames, a Train worker killed mid-epoch). Production code marks such a point with one call,
:func:`kill_point`, which does nothing unless ``SUPERFAN_DEBUG_FAULTS`` arms it::

    SUPERFAN_DEBUG_FAULTS='{"kill": {"pull.after_swap": "/tmp/marker"}}'

The marker file makes it one-shot: the first process to reach the point creates it and SIGKILLs itself
(what the OOM killer or a lost node does: no cleanup at all); a rerun passes.

A training run's faults (``crash_at_step``, ``nan_at_step``) travel in its loop config's ``debug`` dict
(a sweep copies ``SUPERFAN_DEBUG_FAULTS`` into it for every trial) and act through
:func:`crash_at_step` and :func:`poison_at_step`, one call each in the loop and the stage runner.
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


def crash_at_step(debug: dict[str, Any], global_step: int, rank: int, world_size: int) -> None:
    """SIGKILL the last rank once at ``debug["crash_at_step"]`` (the ``crash_marker`` file: first attempt only),
    after Ray Train has registered the checkpoint reported just before, so the restart has one to use."""
    at, marker = debug.get("crash_at_step"), debug.get("crash_marker")
    if at is None or marker is None or global_step != int(at) or rank != world_size - 1:
        return
    if os.path.exists(marker):
        return
    try:
        import ray.train

        ray.train.get_all_reported_checkpoints(timeout_s=60)
    except Exception:  # noqa: BLE001 - outside a Train worker (unit tests) there is nothing to wait for
        pass
    if first_time(str(marker)):
        os.kill(os.getpid(), signal.SIGKILL)


def poison_at_step(debug: dict[str, Any], step_in_stage: int) -> bool:
    """Whether this step's loss should be made NaN (``debug["nan_at_step"]``) to exercise the divergence
    path; with ``nan_marker`` (a file path) only the first run to get there diverges (one trial of a sweep)."""
    at = debug.get("nan_at_step")
    if at is None or int(at) != step_in_stage:
        return False
    marker = debug.get("nan_marker")
    return not marker or first_time(str(marker))
