"""``--budget-hours``: the sweep starts no new trial once its trials' device-hours reach the budget."""

from __future__ import annotations

from ray.tune.search import ConcurrencyLimiter, Searcher
from test_searcher import SPACE

from sweeps.budget import BudgetLimiter
from sweeps.searcher import ResumableOptunaSearch


def _limited(hours: float) -> BudgetLimiter:
    inner = ResumableOptunaSearch(metric="val_auc_balanced", mode="max", samples=8, seed=0, total_epochs=2)
    limiter = BudgetLimiter(ConcurrencyLimiter(inner, max_concurrent=2), hours)
    limiter.set_search_properties("val_auc_balanced", "max", SPACE)
    return limiter


def test_no_new_trial_after_the_budget_is_spent(capsys) -> None:  # noqa: ANN001 - pytest fixture
    b = _limited(1.0)
    assert isinstance(b.suggest("t1"), dict)
    b.on_trial_result("t1", {"val_auc_balanced": 0.1, "global_epoch": 1, "device_hours": 0.4})
    assert isinstance(b.suggest("t2"), dict)  # 0.4 of 1.0 spent
    b.on_trial_result("t2", {"val_auc_balanced": 0.2, "global_epoch": 1, "device_hours": 0.3})
    b.on_trial_result("t1", {"val_auc_balanced": 0.3, "global_epoch": 2, "device_hours": 0.7})  # cumulative
    b.on_trial_complete("t1", {"val_auc_balanced": 0.3, "global_epoch": 2, "device_hours": 0.7})
    assert b.total == 1.0
    assert b.suggest("t3") == Searcher.FINISHED and b.stopped_at == 1.0
    assert "no new trials" in capsys.readouterr().out
    state = b.get_state()
    again = _limited(1.0)
    again.set_state(state)
    assert again.total == 1.0 and again.suggest("t4") == Searcher.FINISHED


def test_without_reports_of_cost_the_budget_never_stops_the_search() -> None:
    b = _limited(0.001)
    assert isinstance(b.suggest("t1"), dict)
    b.on_trial_result("t1", {"val_auc_balanced": 0.1, "global_epoch": 1})
    assert isinstance(b.suggest("t2"), dict)
