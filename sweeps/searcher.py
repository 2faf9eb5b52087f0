"""``OptunaSearch`` that survives ``Tuner.restore`` after the driver was killed.

Killing the driver can leave Tune's experiment state one step ahead of the searcher's saved state: a
trial suggested just before the kill is restored and resumed (``resume_errored=True``), but the restored
searcher has no Optuna trial for it, and plain ``OptunaSearch`` then fails the whole sweep with
``KeyError: <trial id>`` on that trial's first result (seen once in tests/test_sweeps.py's kill-and-resume
test). Here the searcher ignores such a trial's intermediate results (Tune, ASHA and the promotion still
see them all) and, when it completes, adds its parameters and final value to the study, so TPE still
learns from it.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._ot_trials or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        self._completed_trials.add(trial_id)
        config = dict((result or {}).get("config") or {})
        if isinstance(self.metric, list):
            value: Any = [(result or {}).get(m) for m in self.metric]
            missing = any(v is None for v in value)
        else:
            value = (result or {}).get(self.metric)
            missing = value is None
        space = self._space if isinstance(self._space, dict) else {}
        params = {k: config[k] for k in space if k in config}
        if error or missing or not space or len(params) != len(space):
            logger.warning("trial %s was restored without searcher state; not added to the Optuna study", trial_id)
            return
        try:
            self.add_evaluated_point(params, value)
        except Exception as exc:  # noqa: BLE001 - the sweep must go on; the trial's result is in Tune anyway
            logger.warning("trial %s: could not add its result to the Optuna study (%s)", trial_id, exc)
