"""``--budget-hours``: stop starting new trials once the sweep has spent that many device-hours.

Every report carries the trial's cumulative ``device_hours`` (GPU-hours on GPUs, CPU core-hours
otherwise; superfan.train.loop). :class:`BudgetLimiter` wraps the sweep's searcher (outside Tune's
``ConcurrencyLimiter``): it keeps each trial's latest figure and, once their sum reaches the budget,
answers ``Searcher.FINISHED`` instead of a new configuration. Running trials finish (their checkpoints and
reports are worth having); nothing new starts.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search import Searcher


class BudgetLimiter(Searcher):
    def __init__(self, searcher: Searcher, hours: float) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.hours = searcher, float(hours)
        self.spent: dict[str, float] = {}
        self.stopped_at: float | None = None  #: device-hours spent when it refused its first new trial

    @property
    def total(self) -> float:
        return sum(self.spent.values())

    def _record(self, trial_id: str, result: dict[str, Any] | None) -> None:
        value = (result or {}).get("device_hours")
        if isinstance(value, int | float) and math.isfinite(value):
            self.spent[trial_id] = max(float(value), self.spent.get(trial_id, 0.0))

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.total >= self.hours:
            if self.stopped_at is None:
                self.stopped_at = self.total
                print(f"sweep budget: {self.total:.3f} of {self.hours:g} device-hours spent; no new trials", flush=True)
            return Searcher.FINISHED
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._record(trial_id, result)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:
        return {"spent": dict(self.spent), "stopped_at": self.stopped_at, "searcher": self.searcher.get_state()}

    def set_state(self, state: dict) -> None:
        self.spent, self.stopped_at = dict(state.get("spent") or {}), state.get("stopped_at")
        self.searcher.set_state(state.get("searcher") or {})

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
