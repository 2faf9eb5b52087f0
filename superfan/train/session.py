"""One way to start, attach to and leave Ray, for ``superfan train`` and the sweep scripts.

Attached (``RAY_ADDRESS`` set, e.g. inside ``ray job submit``): the driver joins that cluster and, on the
way out, only disconnects, so ending it ends its own job (its non-detached actors) and nothing else.
Embedded: ``ray.init()`` starts a cluster in this process, with the dashboard (it is where users watch
runs, and Train's placement-group cleaner polls the state API it serves), and the way out shuts that whole
cluster down. Its processes are told their own cluster's address (:func:`_embedded_job_env`).

"The way out" includes SIGTERM, which is what a scheduler, ``timeout`` or ``kill PID`` sends: its
default action ends the driver at once, without ``finally`` blocks or atexit hooks, and an embedded
cluster's raylet, GCS, TrainController and RayTrainWorker processes kept running (and holding cores) after
the driver was gone. Inside :func:`ray_session` SIGTERM raises ``KeyboardInterrupt`` instead, so it takes
the same path as Ctrl-C: Train and Tune stop, checkpoints already written stay, and Ray is shut down.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: Ray's settings for every superfan process that starts or joins Ray: Train V2 (the default in Ray 2.60,
#: pinned), state tracking for the dashboard's Train view, no usage reporting.
RAY_DEFAULTS = {"RAY_TRAIN_V2_ENABLED": "1", "RAY_TRAIN_ENABLE_STATE_TRACKING": "1", "RAY_USAGE_STATS_ENABLED": "0"}
for _key, _value in RAY_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

#: Driver environment forwarded to the workers: where S3 is (a local Ray cluster's raylet may predate
#: it) and the Train flags. Never credentials: ``runtime_env`` is shown by the dashboard and by
#: ``ray list actors --detail`` to anyone who can reach them. Workers take credentials from their node
#: (IAM role, instance profile, IRSA, or the environment ``ray start`` ran in).
FORWARD_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "RAY_TRAIN_V2_ENABLED",
    "RAY_TRAIN_ENABLE_STATE_TRACKING",
    "RAY_USAGE_STATS_ENABLED",
    "SUPERFAN_VERBOSE",
    "SUPERFAN_PROGRESS",
    "SUPERFAN_WARNED_RANDOM_PERCEPTUAL",
    "SUPERFAN_GIT_COMMIT",
)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _job_env() -> dict[str, str] | None:
    """Non-secret settings (:data:`FORWARD_ENV`) for an attached job's processes, minus the keys the
    submitted job already sets (Ray refuses a conflicting merge)."""
    taken: set[str] = set()
    from superfan.raycompat import JOB_CONFIG_ENV

    job_json = os.environ.get(JOB_CONFIG_ENV)
    if job_json:
        taken = set((json.loads(job_json).get("runtime_env") or {}).get("env_vars") or {})
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ and k not in taken}
    return env or None


@contextlib.contextmanager
def _embedded_job_env() -> Iterator[dict[str, str]]:
    """Pin the embedded cluster's GCS port and hand every process of the job its address as ``RAY_ADDRESS``.

    Ray's own actors that call the state API without an address (Train's placement-group cleaner, every
    run) look for ``RAY_ADDRESS``, then the last ``ray start``, then any GCS process on the machine. With two
    embedded clusters on one machine (two ``superfan train`` runs, a test suite on two cores) they found both,
    printed a ``ConnectionError`` traceback into the user's log and stopped watching. The port is a free one
    the OS gives now; ``ray.init`` binds it a moment later (a clash would fail the start loudly, not quietly).
    """
    import socket

    from ray.util import get_node_ip_address

    from superfan.raycompat import GCS_PORT_ENV

    chosen = os.environ.get(GCS_PORT_ENV)
    if not chosen:
        with socket.socket() as probe:
            probe.bind(("", 0))
            os.environ[GCS_PORT_ENV] = str(probe.getsockname()[1])
    try:
        yield {"RAY_ADDRESS": f"{get_node_ip_address()}:{os.environ[GCS_PORT_ENV]}"}
    finally:  # a later ray.init in this process picks its own port again
        if not chosen:
            os.environ.pop(GCS_PORT_ENV, None)


#: "1" brings Ray's own INFO logs back (``--verbose``); read by build_trainer for Train's LoggingConfig.
VERBOSE_ENV = "SUPERFAN_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


@contextlib.contextmanager
def ray_session(*, verbose_logs: bool = False, **init_kwargs: Any) -> Iterator[bool]:
    """Ray for the duration of the block; yields True when attached to an existing cluster.

    Quiet by default: Ray Train's per-report INFO lines (every ``TrainingReport`` dict) are off through
    ``ray.train.LoggingConfig`` (see :func:`superfan.train.driver.build_trainer`), and deprecation
    warnings inside Ray's own actors are ignored (``PYTHONWARNINGS``, inherited by every Ray process of an
    embedded cluster). Our epoch lines, warnings that concern the user and Tune's status stay.
    ``verbose_logs`` (``--verbose``) brings everything back. ``--no-progress`` and ``--quiet``
    (:func:`superfan.cliargs.output`) reach every process of the run as ``SUPERFAN_PROGRESS=0``: no epoch lines.
    """
    import ray

    from superfan.cliargs import PROGRESS_ENV, output
    from superfan.logs import show_warnings
    from superfan.raycompat import PREEMPTION_WATCHER_ENV

    show_warnings()
    progress_before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "1" if output().progress else "0"
    os.environ[VERBOSE_ENV] = "1" if verbose_logs else os.environ.get(VERBOSE_ENV, "0")
    attached = bool(os.environ.get("RAY_ADDRESS"))
    if not verbose():
        os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
        if not attached:
            # An embedded single-machine Ray has no node that can be drained or preempted; Train's watcher
            # for that only prints a core-worker ERROR line about its constructor arguments at every start.
            os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    main = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = signal.getsignal(signal.SIGTERM)
    owned = not ray.is_initialized()
    try:
        if owned:
            with _embedded_job_env() if not attached else contextlib.nullcontext(_job_env()) as env:
                ray.init(runtime_env={"env_vars": env} if env else None, log_to_driver=True, **init_kwargs)
        if main:  # after ray.init: its core worker installs a SIGTERM handler of its own that aborts
            signal.signal(signal.SIGTERM, _interrupt)
        yield attached
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if owned and ray.is_initialized():
            ray.shutdown()
        if progress_before is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = progress_before
