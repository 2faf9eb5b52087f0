"""The sweep's searcher keeps going when Tune restores a trial its saved state never saw (kill + resume)."""

from __future__ import annotations

import pytest
from ray import tune

from sweeps.searcher import ResumableOptunaSearch

SPACE = {"losses.pixel.weight": tune.loguniform(0.1, 10.0), "model.generator.layout": tune.choice(["12-3-2", "16-0-0"])}


def _searcher() -> ResumableOptunaSearch:
    s = ResumableOptunaSearch(metric="val_auc_balanced", mode="max", seed=0)
    s.set_search_properties("val_auc_balanced", "max", SPACE)
    return s


def test_unknown_trial_is_learned_from_not_fatal() -> None:
    s = _searcher()
    config = {"losses.pixel.weight": 2.0, "model.generator.layout": "16-0-0"}
    s.on_trial_result("restored", {"val_auc_balanced": 0.1, "training_iteration": 1, "config": config})
    s.on_trial_complete("restored", {"val_auc_balanced": 0.3, "training_iteration": 2, "config": config})
    trials = s._ot_study.trials
    assert len(trials) == 1 and trials[0].value == pytest.approx(0.3) and trials[0].params == config


def test_known_trials_behave_as_optuna_search() -> None:
    s = _searcher()
    params = s.suggest("t1")
    assert set(params) == set(SPACE)
    s.on_trial_result("t1", {"val_auc_balanced": 0.2, "training_iteration": 1})
    s.on_trial_complete("t1", {"val_auc_balanced": 0.25, "training_iteration": 2})
    s.on_trial_complete("failed-unknown", None, error=True)  # nothing to learn, nothing raised
    assert [t.value for t in s._ot_study.trials] == [pytest.approx(0.25)]
