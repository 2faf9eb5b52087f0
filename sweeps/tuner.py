"""The Tune side of a sweep: the trainable, its resources, the searcher, ASHA, and building or restoring the Tuner.

A sweep is ``ray.tune.Tuner`` over a function trainable; each trial builds one ``TorchTrainer`` (Train V2,
:func:`superfan.train.build_trainer`) from the base config plus the trial's parameters and fits it, with
``TuneReportCallback`` forwarding every Train report (and its checkpoint path) to Tune. The trial itself
asks for no CPU: the Train workers hold the real resources, and a :class:`ConcurrencyLimiter` sized from
the cluster keeps trials from queueing for workers they cannot get. Search: Optuna TPE
(:class:`sweeps.searcher.ResumableOptunaSearch`, seeded; the config's own values are the first point),
optionally multi-objective (AUC and PSNR). Scheduling: ``ASHAScheduler`` on ``val_auc_balanced`` per epoch.
"""

from __future__ import annotations

import json
import os
from typing import Any

from superfan import storage
from superfan.cliargs import info, output
from sweeps.settings import TIME_ATTR, Sweep, SweepSettings
from sweeps.space import default_point, trial_config, tune_space
from sweeps.tracking import mlflow_callback

#: Test-only fault injection (JSON, the ``debug`` dict of superfan.train.loop.run_training) for every trial.
DEBUG_ENV = "SUPERFAN_DEBUG_FAULTS"


def concurrency(settings: SweepSettings, workers: int, cpus_per_worker: float, use_gpu: bool) -> int:
    """Trials at once: ``max_concurrent`` when given. Otherwise GPU trials are not limited by what the cluster
    has now (an autoscaled cluster has no GPU until pending requests ask for one); CPU trials get what the
    cluster's CPUs fit, so queued trials do not each hold a Train controller while they wait."""
    if settings.max_concurrent:
        return max(1, settings.max_concurrent)
    if use_gpu:
        return max(1, settings.samples)
    import ray

    fit = int(ray.cluster_resources().get("CPU", 0) // max(workers * cpus_per_worker, 1e-9))
    return max(1, min(fit, settings.samples))


def run_trial(params: dict[str, Any], setup: dict[str, Any]) -> None:
    """One trial = one Train run over all selected stages of the trial's config.

    The Train run's name is ``<sweep>-<trial id>`` (what the Ray dashboard's Train view lists, so runs of
    several sweeps on one cluster say whose they are), under the sweep's ``trials/`` storage: a trial restarted by
    ``--resume`` (or after a failure) re-runs the same name and Train continues from its own latest
    checkpoint. Checkpoints are kept by the promotion metric so the best report's weights survive.
    """
    import ray.train
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from superfan.train.driver import build_trainer

    cfg = trial_config(setup["config"], params)
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = build_trainer(
        cfg,
        name=f"{setup['sweep']}-{trial_id}",
        sweep=setup["sweep"],
        storage=setup["trials_url"],
        stages=setup["stages"],
        teacher=setup["teacher"],
        callbacks=[TuneReportCallback()],
        debug=setup.get("debug"),
    )
    # build_trainer keeps the most recent checkpoints; a sweep needs the best ones (Train always keeps
    # its latest too, for its own resume).
    trainer.run_config.checkpoint_config = ray.train.CheckpointConfig(
        num_to_keep=setup["keep_checkpoints"],
        checkpoint_score_attribute=setup["metric"],
        checkpoint_score_order=setup["mode"],
    )
    trainer.fit()


def _trainable(sweep: Sweep, teacher: str) -> Any:
    from ray import tune

    from superfan.raycompat import keep_credentials_out_of_tune_runtime_env

    keep_credentials_out_of_tune_runtime_env()  # trials resolve credentials where they run (see there)

    setup = {
        "sweep": sweep.name,
        "config": sweep.config.to_dict(),  # the one place the config becomes a dict: Ray's trial arguments
        "stages": sweep.stages,
        "teacher": teacher,
        "trials_url": sweep.trials_url,
        "keep_checkpoints": sweep.settings.keep_checkpoints,
        "metric": sweep.settings.metric,
        "mode": sweep.settings.mode,
        "debug": json.loads(os.environ[DEBUG_ENV]) if os.environ.get(DEBUG_ENV) else None,
    }
    # CPU 0: the trial actor only drives its TorchTrainer; the Train workers hold the real resources, and a
    # trial holding a CPU would take it from its own workers on a small cluster.
    memory = int(sweep.settings.trial_memory_gb * 2**30)
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"CPU": 0, "memory": memory})


def trial_dirname(trial: Any) -> str:
    """``trial_<id>``: Tune's default puts every parameter in the name, too long for S3 keys and eyes."""
    return f"trial_{trial.trial_id}"


def _budgeted(searcher: Any, hours: float | None) -> Any:
    if not hours:
        return searcher
    from sweeps.budget import BudgetLimiter

    return BudgetLimiter(searcher, hours)


def build_tuner(sweep: Sweep, teacher: str) -> Any:
    """The ``Tuner``: Optuna TPE (config values first) under a concurrency limit, ASHA on the metric."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from superfan.train.driver import use_gpu
    from sweeps.searcher import ResumableOptunaSearch  # imports Ray: not before a command needs it

    s = sweep.settings
    cfg = sweep.config
    if s.multi_objective:
        metric: str | list[str] = [s.metric, s.secondary_metric]
        mode: str | list[str] = [s.mode, "max"]
    else:
        metric, mode = s.metric, s.mode
    searcher = ResumableOptunaSearch(
        metric=metric,
        mode=mode,
        samples=s.samples,
        seed=s.seed,
        total_epochs=sweep.total_epochs,
        points_to_evaluate=[default_point(sweep.space, cfg)],
        storage_url=s.optuna_storage,
        study_name=sweep.name,
    )
    gpu = use_gpu(cfg)
    limit = concurrency(s, cfg.train.workers, cfg.train.cpus_per_worker, gpu)
    # Time is the epoch the loop reports (global_epoch), not Tune's count of reports: after a Train restart
    # the resumed run re-reports epochs since its last checkpoint, and a report count would run ahead.
    # max_t one past the last epoch: ASHA stops a trial at max_t, and stopping it on its final report
    # would kill the Train run while it registers its last checkpoint.
    scheduler = ASHAScheduler(
        metric=s.metric,
        mode=s.mode,
        time_attr=TIME_ATTR,
        max_t=sweep.total_epochs + 1,
        grace_period=min(s.grace_period, sweep.total_epochs),  # a sweep shortened by --epochs keeps working
        reduction_factor=s.reduction_factor,
    )
    path, fs = _sweeps_location(sweep)
    device = f"{cfg.train.gpus_per_worker:g} GPU" if gpu else f"{cfg.train.cpus_per_worker:g} CPU"
    info(
        f"sweep {sweep.name}: {s.samples} trials, {limit} at a time, {sweep.total_epochs} epochs each, "
        f"{cfg.train.workers} worker(s) x {device} per trial, searching {', '.join(sweep.space)}\n"
        f"sweep {sweep.name}: Optuna study {sweep.name!r} in {s.optuna_storage} (watch it: optuna-dashboard "
        f"{s.optuna_storage})" + (f"; MLflow experiment {sweep.name!r} at {s.mlflow}" if s.mlflow else ""),
        flush=True,
    )
    return tune.Tuner(
        _trainable(sweep, teacher),
        param_space=tune_space(sweep.space),
        tune_config=tune.TuneConfig(
            search_alg=_budgeted(ConcurrencyLimiter(searcher, max_concurrent=limit), s.budget_hours),
            scheduler=scheduler,
            num_samples=s.samples,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sweep.name,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[cb for cb in (mlflow_callback(sweep),) if cb is not None],
            verbose=None if output().progress else 0,  # --no-progress, --quiet: no trial status tables
        ),
    )


def _sweeps_location(sweep: Sweep) -> tuple[str, Any]:
    """Where Tune keeps the experiment, through :class:`sweeps.sealing.SealingFS`: every pickle it writes
    there is sealed, and checked before it is read back (the driver has called ``sealing.arm``)."""
    from superfan.train.driver import storage_location
    from sweeps.sealing import sealing_location

    path, fs = storage_location(storage.join(sweep.storage, "sweeps"))
    return sealing_location(path, fs, sweep.name)


def _experiment_path(sweep: Sweep) -> tuple[str, Any]:
    path, fs = _sweeps_location(sweep)
    return f"{path}/{sweep.name}", fs


def can_resume(sweep: Sweep) -> bool:
    from ray import tune

    path, fs = _experiment_path(sweep)
    return tune.Tuner.can_restore(path, storage_filesystem=fs)


def restore_tuner(sweep: Sweep, teacher: str) -> Any:
    """``Tuner.restore``: finished trials and the searcher's state (Optuna study, points given) are kept;
    unfinished and errored trials continue (their Train runs resume from their own checkpoints)."""
    from ray import tune

    path, fs = _experiment_path(sweep)
    info(f"sweep {sweep.name}: resuming from {sweep.experiment_url}", flush=True)
    return tune.Tuner.restore(path, _trainable(sweep, teacher), resume_errored=True, storage_filesystem=fs)
