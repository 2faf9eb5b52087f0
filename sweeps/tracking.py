"""MLflow for teams that track runs there (``--mlflow URI``; the optional ``mlflow`` extra).

Two things, both off unless asked for:

* every trial is an MLflow run, through Ray Tune's own ``MLflowLoggerCallback``: the trial's searched
  parameters, every epoch's metrics, and the sweep's tags (sweep name, kind, profile);
* the promoted champion is a version of the registered model named after the sweep, its source the
  champion's URL (local or ``s3://``), linked to its trial's run, with the alias ``champion`` moved to it,
  so ``models:/<sweep>@champion`` always names the current champion.
"""

from __future__ import annotations

from typing import Any

from superfan.errors import ConfigError
from sweeps.settings import Sweep

CHAMPION_ALIAS = "champion"


def check_mlflow(uri: str) -> None:
    """Fail before Ray starts, with one line, when MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"--mlflow {uri}: MLflow is not installed; pip install -e '.[mlflow]'") from None


def _tags(sweep: Sweep) -> dict[str, str]:
    return {"superfan.sweep": sweep.name, "superfan.kind": sweep.kind, "superfan.profile": sweep.config.profile}


def mlflow_callback(sweep: Sweep) -> Any:
    """Ray Tune's ``MLflowLoggerCallback`` for this sweep (an experiment named after it), or None when off."""
    if not sweep.settings.mlflow:
        return None
    from sweeps.mlflow_callback import RedactedMLflowLoggerCallback

    return RedactedMLflowLoggerCallback(
        tracking_uri=sweep.settings.mlflow, experiment_name=sweep.name, tags=_tags(sweep), save_artifact=False
    )


def register_champion(sweep: Sweep, champion: Any) -> str | None:
    """The champion as a new version of the registered model ``sweep.name``, alias ``champion``; returns the
    version (None when MLflow is off)."""
    if not sweep.settings.mlflow:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from superfan.redact import reveal

    client = MlflowClient(tracking_uri=reveal(sweep.settings.mlflow, "--mlflow"))
    manifest = champion.manifest
    try:
        client.get_registered_model(sweep.name)
    except MlflowException:
        client.create_registered_model(sweep.name, tags=_tags(sweep), description="superfan sweep champions")
    run_id = _trial_run(client, sweep.name, str(manifest.get("trial_id")))
    metrics = manifest.get("metrics") or {}
    tags = {**_tags(sweep), "superfan.version": str(manifest.get("version")),
            "superfan.stage": str(manifest.get("stage")), "superfan.trial": str(manifest.get("trial_id"))}  # fmt: skip
    scores = {k: v for k, v in metrics.items() if k.startswith("val_") and isinstance(v, float)}
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in scores.items()})
    version = client.create_model_version(sweep.name, source=champion.url, run_id=run_id, tags=tags)
    client.set_registered_model_alias(sweep.name, CHAMPION_ALIAS, version.version)
    return str(version.version)


def _trial_run(client: Any, experiment: str, trial_id: str) -> str | None:
    """The MLflow run Tune's callback made for a trial (its run name holds the trial id), if any."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.runName LIKE '%{trial_id}%'")
    return runs[0].info.run_id if runs else None
