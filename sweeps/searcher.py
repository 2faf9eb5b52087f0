"""The sweep's searcher: Optuna TPE through Ray's ``OptunaSearch``, with what a sweep needs on top.

* **The sampler.** ``TPESampler(multivariate=True, constant_liar=True, n_startup_trials=...)``, seeded:
  multivariate TPE models the loss weights jointly (they trade off against each other), and the constant
  liar counts running trials as pending bad points, so parallel trials do not all sample the same spot.
  ``n_startup_trials`` is sized from the sweep's trials (:func:`startup_trials`).
* **Trials stopped by ASHA are pruned, not complete.** Ray's ``OptunaSearch.on_trial_complete`` tells
  Optuna ``COMPLETE`` with the last reported value whenever there is one, so a trial ASHA stopped at epoch
  2 would look like a finished trial that scored its epoch-2 AUC. Here a trial whose last result has fewer
  epochs (``global_epoch``) than the sweep's total is told ``PRUNED``; Optuna then records its last
  intermediate value, reported at its ``global_epoch`` (its last rung), and TPE ranks pruned trials by how
  far they got. A diverged trial (it ends early with NaN metrics) is pruned the same way.
* **A live study.** The study lives in an Optuna storage (``--optuna-storage``: SQLite by default, any RDB
  URL, or Optuna's journal file), named after the sweep, so ``optuna-dashboard URL`` shows the running sweep
  (history, importance, Pareto front, parallel coordinates) and ``optuna.load_study`` reads it; Tune's
  pickled searcher state reconnects to the same storage on ``--resume``.
* **Resume after a hard kill.** Killing the driver can leave Tune's experiment state one step ahead of the
  searcher's saved state: a trial suggested just before the kill is restored and resumed
  (``resume_errored=True``), but the restored searcher has no Optuna trial for it, and plain
  ``OptunaSearch`` then fails the whole sweep with ``KeyError: <trial id>`` on that trial's first result
  (seen once in tests/test_sweeps.py's kill-and-resume test). Here the searcher ignores such a trial's
  intermediate results (Tune, ASHA and the promotion still see them all) and, when it completes, adds its
  parameters and final value to the study, so TPE still learns from it.

``OptunaSearch`` keeps its study and trials in private attributes (``_ot_study``, ``_ot_trials``,
``_completed_trials``, ``_space``, pinned Ray version); its public API has no hook for a trial's final state
or for a trial it never suggested. tests/test_searcher.py fails loudly if they change.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from sweeps.settings import TIME_ATTR

logger = logging.getLogger(__name__)


def default_storage(storage_root: str) -> str:
    """Where a sweep's study lives unless told (``--optuna-storage``): ``optuna.db`` beside a local storage
    root (the embedded default: ``./.superfan/optuna.db``), else ``~/.superfan/optuna.db`` on the driver's
    machine (a cluster's head node: a job's working directory is deleted when the job ends)."""
    from pathlib import Path

    from superfan import storage

    base = Path(storage_root) if not storage.is_s3(storage_root) else Path.home() / ".superfan"
    return f"sqlite:///{(base / 'optuna.db').absolute()}"


_RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def check_storage_url(url: str) -> str:
    """An Optuna storage URL we can open, checked before Ray starts (one line otherwise); a SQLite file's
    directory is created."""
    from superfan.errors import ConfigError
    from superfan.redact import redact

    shown = redact(url)  # a password in it is never printed either
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    try:
        return _checked_storage_url(url, scheme, shown)
    except OSError as err:
        raise ConfigError(f"--optuna-storage {shown!r}: {err.strerror or err}") from None


def _checked_storage_url(url: str, scheme: str, shown: str) -> str:
    from pathlib import Path

    from superfan.errors import ConfigError

    if scheme == "journal":
        path = Path(url.split(":", 1)[1]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"journal:{path.absolute()}"
    if scheme not in _RDB_SCHEMES or "://" not in url:
        raise ConfigError(
            f"--optuna-storage {shown!r}: expected an Optuna RDB URL (sqlite:///PATH.db, postgresql://..., "
            "mysql://...) or journal:PATH"
        )
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url


def make_storage(url: str, attempts: int = 5) -> optuna.storages.BaseStorage:
    """The Optuna storage of a checked URL (RDB, or Optuna's journal file for a shared filesystem).

    A new database's schema is made by whoever opens it first, without a lock: when two processes open it
    at the same moment (``optuna-dashboard`` started beside a new sweep, two sweeps sharing a study
    database), the slower one fails on a table or version row the other just wrote. The schema is complete
    a moment later, so that opening is tried again (without this, of 4 processes opening one new SQLite
    file at once, 1 to 3 failed in each of 3 tries).
    """
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:") :]))
    from sqlalchemy.exc import IntegrityError, OperationalError

    from superfan.redact import reveal

    real = reveal(url, "--optuna-storage")
    for attempt in range(1, attempts):
        try:
            return RedactedRDBStorage(real, heartbeat_interval=None)
        except (IntegrityError, OperationalError):
            time.sleep(0.2 * attempt)
    return RedactedRDBStorage(real, heartbeat_interval=None)


class RedactedRDBStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` that pickles its URL redacted (Tune pickles the searcher, and with it this
    storage, into ``tuner.pkl`` and the searcher state on storage): unpickled in the driver, it reconnects
    with the real URL from the driver's memory (:mod:`superfan.redact`)."""

    def __getstate__(self) -> dict[str, Any]:
        from superfan.redact import redact

        state = super().__getstate__()
        state["url"] = redact(state["url"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from superfan.redact import reveal

        super().__setstate__({**state, "url": reveal(state["url"], "--optuna-storage")})


def startup_trials(samples: int) -> int:
    """Random trials before TPE models anything: a quarter of the sweep, at least 2, at most Optuna's 10.

    Optuna's default (10) makes a 16-trial sweep mostly random and a 4-trial one entirely so; a quarter
    leaves most of the budget to TPE while it still sees a few spread-out points first. At least 2: the
    config's own point (always trial 0) and one random one. A wave of parallel trials that start before
    any finishes is random whatever this says: TPE only counts finished (complete or pruned) trials.
    """
    return max(2, min(10, samples // 4))


def tpe_sampler(samples: int, seed: int | None) -> optuna.samplers.TPESampler:
    """The sweep's sampler (see the module docstring); TPE handles single- and multi-objective studies."""
    return optuna.samplers.TPESampler(
        multivariate=True, constant_liar=True, n_startup_trials=startup_trials(samples), seed=seed
    )


class ResumableOptunaSearch(OptunaSearch):
    """``OptunaSearch`` with the sweep's TPE sampler, ASHA stops told as pruned, and restored trials learned.

    ``samples``: the sweep's trials (sizes ``n_startup_trials``); ``total_epochs``: a trial's epochs over all
    its stages (a trial that ends before them without an error was stopped early); the other arguments are
    ``OptunaSearch``'s.
    """

    #: A class default too: a searcher pickled before this attribute existed (an older sweep's ``--resume``)
    #: is restored without running ``__init__``, and then completes every trial as before.
    _total_epochs: int | None = None

    def __init__(
        self,
        *,
        samples: int,
        seed: int | None = None,
        total_epochs: int | None = None,
        storage_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        storage = make_storage(storage_url) if storage_url else None
        super().__init__(sampler=tpe_sampler(samples, seed), storage=storage, **kwargs)
        self._total_epochs = total_epochs

    def _stopped_early(self, result: dict[str, Any] | None, error: bool) -> bool:
        epoch = (result or {}).get(TIME_ATTR)
        return (
            not error
            and self._total_epochs is not None
            and isinstance(epoch, int | float)
            and epoch < self._total_epochs
        )

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._ot_trials:
            return
        if TIME_ATTR in result:  # the step is the epoch (ASHA's rungs), not Tune's count of reports
            result = {**result, TRAINING_ITERATION: result[TIME_ATTR]}
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        early = self._stopped_early(result, error)
        if trial_id in self._completed_trials or (trial_id in self._ot_trials and not early):
            super().on_trial_complete(trial_id, result, error)
            return
        if trial_id in self._ot_trials:  # stopped early: pruned at its last reported epoch
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        self._completed_trials.add(trial_id)
        self._add_restored(trial_id, result, error, early)

    def _add_restored(self, trial_id: str, result: dict[str, Any] | None, error: bool, early: bool) -> None:
        """A trial this searcher never suggested (restored after a kill): add it to the study as it ended."""
        config = dict((result or {}).get("config") or {})
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [(result or {}).get(m) for m in metrics]
        space = self._space if isinstance(self._space, dict) else {}
        params = {k: config[k] for k in space if k in config}
        finite = all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        if error or not space or len(params) != len(space) or not (finite or early):
            logger.warning("trial %s was restored without searcher state; not added to the Optuna study", trial_id)
            return
        try:
            if early:  # single-objective: its last value as the intermediate value at its last epoch
                single = len(values) == 1 and finite
                step = int((result or {})[TIME_ATTR])
                trial = optuna.trial.create_trial(
                    state=TrialState.PRUNED,
                    params=params,
                    distributions=space,
                    intermediate_values={step: float(values[0])} if single else None,
                    value=float(values[0]) if single else None,
                )
            else:
                trial = optuna.trial.create_trial(params=params, distributions=space, values=values)
            self._ot_study.add_trial(trial)
        except Exception as exc:  # noqa: BLE001 - the sweep must go on; the trial's result is in Tune anyway
            logger.warning("trial %s: could not add its result to the Optuna study (%s)", trial_id, exc)
