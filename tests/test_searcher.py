"""The sweep's searcher: seeded multivariate TPE sized from the sweep, ASHA stops told to Optuna as pruned,
and a trial Tune restores that its saved state never saw (kill + resume) learned from, not fatal.

No Ray cluster: the searcher's methods are called as Tune would call them. The private ``OptunaSearch``
attributes the searcher relies on (``_ot_study``, ``_ot_trials``, ``_completed_trials``, ``_space``) are used
here too, so a Ray upgrade that renames them fails these tests, not a sweep.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray import tune

from sweeps.searcher import ResumableOptunaSearch, check_storage_url, default_storage, make_storage, startup_trials

SPACE = {"losses.pixel.weight": tune.loguniform(0.1, 10.0), "model.generator.layout": tune.choice(["12-3-2", "16-0-0"])}
METRIC = "val_auc_balanced"


def _searcher(samples: int = 16, seed: int = 0, total_epochs: int | None = 6, multi: bool = False):
    metric = [METRIC, "val_psnr"] if multi else METRIC
    mode = ["max", "max"] if multi else "max"
    s = ResumableOptunaSearch(metric=metric, mode=mode, samples=samples, seed=seed, total_epochs=total_epochs)
    s.set_search_properties(metric, mode, SPACE)
    return s


def test_private_attributes_the_searcher_relies_on_exist() -> None:
    s = _searcher()
    assert isinstance(s._ot_study, optuna.Study) and s._ot_trials == {} and s._completed_trials == set()
    assert set(s._space) == set(SPACE)


def test_sampler_is_seeded_multivariate_tpe_with_constant_liar() -> None:
    s = _searcher(samples=16, seed=3)
    sampler = s._ot_study.sampler
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate is True and sampler._constant_liar is True
    assert sampler._n_startup_trials == startup_trials(16) == 4
    # seeded: the same seed suggests the same (random, startup) points, another seed others
    same, other = _searcher(samples=16, seed=3), _searcher(samples=16, seed=4)
    first = [s.suggest(f"t{i}") for i in range(3)]
    assert [same.suggest(f"t{i}") for i in range(3)] == first
    assert [other.suggest(f"t{i}") for i in range(3)] != first


@pytest.mark.parametrize(("samples", "startup"), [(1, 2), (2, 2), (4, 2), (16, 4), (32, 8), (40, 10), (200, 10)])
def test_startup_trials_are_a_quarter_of_the_sweep_within_2_and_10(samples: int, startup: int) -> None:
    assert startup_trials(samples) == startup


def test_multi_objective_uses_the_same_sampler() -> None:
    s = _searcher(samples=32, multi=True)
    assert isinstance(s._ot_study.sampler, optuna.samplers.TPESampler) and len(s._ot_study.directions) == 2
    assert s._ot_study.sampler._n_startup_trials == 8


def _run(s: ResumableOptunaSearch, trial_id: str, aucs: list[float], **final: object) -> None:
    s.suggest(trial_id)
    for epoch, auc in enumerate(aucs, 1):
        # training_iteration runs ahead of global_epoch, as after a Train restart: the step must be the epoch
        s.on_trial_result(trial_id, {METRIC: auc, "global_epoch": epoch, "training_iteration": epoch + 1})
    last = {METRIC: aucs[-1], "val_psnr": 20.0, "global_epoch": len(aucs), "training_iteration": len(aucs) + 1}
    s.on_trial_complete(trial_id, {**last, **final})


def test_a_trial_stopped_by_asha_is_pruned_at_its_last_rung() -> None:
    s = _searcher(total_epochs=6)
    _run(s, "stopped", [0.2, 0.3])  # ASHA stopped it after epoch 2 of 6
    _run(s, "finished", [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    stopped, finished = s._ot_study.trials
    assert stopped.state == TrialState.PRUNED and stopped.last_step == 2 and stopped.value == pytest.approx(0.3)
    assert stopped.intermediate_values == {1: pytest.approx(0.2), 2: pytest.approx(0.3)}
    assert finished.state == TrialState.COMPLETE and finished.value == pytest.approx(0.7)
    s.on_trial_complete("stopped", {METRIC: 0.3, "global_epoch": 2})  # a second completion: ignored
    assert s._ot_study.trials[0].state == TrialState.PRUNED


def test_an_errored_trial_fails_and_a_multi_objective_stop_is_pruned() -> None:
    s = _searcher(total_epochs=6)
    s.suggest("broken")
    s.on_trial_complete("broken", None, error=True)
    assert s._ot_study.trials[0].state == TrialState.FAIL
    m = _searcher(total_epochs=6, multi=True)
    _run(m, "stopped", [0.2, 0.3])
    _run(m, "finished", [0.2] * 6)
    stopped, finished = m._ot_study.trials
    assert stopped.state == TrialState.PRUNED and stopped.values is None
    assert finished.state == TrialState.COMPLETE and finished.values == [pytest.approx(0.2), pytest.approx(20.0)]


def test_without_total_epochs_every_trial_completes() -> None:
    s = _searcher(total_epochs=None)
    _run(s, "t", [0.2, 0.3])
    assert s._ot_study.trials[0].state == TrialState.COMPLETE


def test_unknown_trial_is_learned_from_not_fatal() -> None:
    s = _searcher(total_epochs=2)
    config = {"losses.pixel.weight": 2.0, "model.generator.layout": "16-0-0"}
    s.on_trial_result("restored", {METRIC: 0.1, "global_epoch": 1, "training_iteration": 1, "config": config})
    s.on_trial_complete("restored", {METRIC: 0.3, "global_epoch": 2, "training_iteration": 2, "config": config})
    trials = s._ot_study.trials
    assert len(trials) == 1 and trials[0].value == pytest.approx(0.3) and trials[0].params == config
    assert trials[0].state == TrialState.COMPLETE


def test_unknown_trial_stopped_early_is_added_as_pruned() -> None:
    s = _searcher(total_epochs=6)
    config = {"losses.pixel.weight": 2.0, "model.generator.layout": "16-0-0"}
    s.on_trial_complete("restored", {METRIC: 0.3, "global_epoch": 2, "training_iteration": 2, "config": config})
    (trial,) = s._ot_study.trials
    assert trial.state == TrialState.PRUNED and trial.intermediate_values == {2: pytest.approx(0.3)}
    m = _searcher(total_epochs=2, multi=True)
    m.on_trial_complete("restored", {METRIC: 0.3, "val_psnr": 21.0, "global_epoch": 2, "config": config})
    assert m._ot_study.trials[0].values == [pytest.approx(0.3), pytest.approx(21.0)]


def test_known_trials_behave_as_optuna_search() -> None:
    s = _searcher()
    params = s.suggest("t1")
    assert set(params) == set(SPACE)
    s.on_trial_result("t1", {METRIC: 0.2, "training_iteration": 1})
    s.on_trial_complete("t1", {METRIC: 0.25, "training_iteration": 2})
    s.on_trial_complete("failed-unknown", None, error=True)  # nothing to learn, nothing raised
    assert [t.value for t in s._ot_study.trials] == [pytest.approx(0.25)]


def test_state_survives_save_and_restore(tmp_path: Path) -> None:
    s = _searcher(samples=16, seed=3, total_epochs=6)
    _run(s, "stopped", [0.2, 0.3])
    s.save(str(tmp_path / "searcher.pkl"))
    restored = ResumableOptunaSearch(metric=METRIC, mode="max", samples=2, seed=0)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored._total_epochs == 6 and restored._ot_study.sampler._n_startup_trials == 4
    _run(restored, "next", [0.4])
    assert [t.state for t in restored._ot_study.trials] == [TrialState.PRUNED, TrialState.PRUNED]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_study_lives_in_its_storage_and_survives_save_and_restore(tmp_path: Path, kind: str) -> None:
    """The live study (--optuna-storage): every trial is in the storage as it happens, named after the sweep,
    so optuna.load_study (and optuna-dashboard) read it; a restored searcher continues the same study."""
    url = check_storage_url(f"sqlite:///{tmp_path}/a/optuna.db" if kind == "sqlite" else f"journal:{tmp_path}/j/log")
    s = ResumableOptunaSearch(
        metric=METRIC, mode="max", samples=4, seed=0, total_epochs=6, storage_url=url, study_name="sw"
    )
    s.set_search_properties(METRIC, "max", SPACE)
    _run(s, "stopped", [0.2, 0.3])
    storage = make_storage(url)
    assert [t.state for t in optuna.load_study(study_name="sw", storage=storage).trials] == [TrialState.PRUNED]
    s.save(str(tmp_path / "searcher.pkl"))
    restored = ResumableOptunaSearch(metric=METRIC, mode="max", samples=4, seed=0)
    restored.restore(str(tmp_path / "searcher.pkl"))
    _run(restored, "done", [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    study = optuna.load_study(study_name="sw", storage=make_storage(url))
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.COMPLETE]
    assert study.trials[1].value == pytest.approx(0.7) and set(study.trials[1].params) == set(SPACE)


def _open_and_count_studies(url: str) -> int:
    return len(make_storage(url).get_all_studies())


def test_processes_opening_one_new_study_database_at_once_all_get_it(tmp_path: Path) -> None:
    """optuna-dashboard started beside a new sweep (what failed a CI run): Optuna makes a new database's
    schema without a lock, and all but the first opener used to fail on a table the other had just made."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for attempt in range(3):
            url = check_storage_url(f"sqlite:///{tmp_path}/{attempt}/optuna.db")
            assert pool.map(_open_and_count_studies, [url] * 4) == [0] * 4


def test_storage_urls_are_checked_before_ray_starts(tmp_path: Path) -> None:
    from superfan.errors import ConfigError

    assert default_storage(str(tmp_path / "store")) == f"sqlite:///{tmp_path}/store/optuna.db"
    assert default_storage("s3://bucket/prefix") == f"sqlite:///{Path.home()}/.superfan/optuna.db"
    assert check_storage_url("postgresql://user@db/optuna") == "postgresql://user@db/optuna"
    assert check_storage_url(f"sqlite:///{tmp_path}/x/y.db") and (tmp_path / "x").is_dir()
    for bad in ("optuna.db", "redis://localhost", "sqlite:optuna.db", "http://host/db"):
        with pytest.raises(ConfigError) as err:
            check_storage_url(bad)
        assert str(err.value) == (
            f"--optuna-storage {bad!r}: expected an Optuna RDB URL (sqlite:///PATH.db, postgresql://..., "
            "mysql://...) or journal:PATH"
        )
