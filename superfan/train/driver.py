"""The driver side of a Train run: preflight, resources, GPU use, storage, checkpoint URLs and
``build_trainer``, a ``ray.train.torch.TorchTrainer`` (Train V2) around the worker entry point
(:func:`superfan.train.worker.train_loop_per_worker`). Nothing here runs on a Train worker.

Everything a run needs travels in ``train_loop_config`` as plain data (the resolved config dict, the
stage names, the teacher and start checkpoint URLs), so a Tune trial can build a trainer per trial from
its own config and the workers rebuild the exact same ``Config``.

Storage: a local directory or ``s3://bucket/prefix``; for S3 we hand Ray a ``pyarrow.fs.S3FileSystem``
built from ``AWS_ENDPOINT_URL`` (``superfan.storage.pyarrow_fs``) so SeaweedFS/MinIO work like AWS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from superfan import storage
from superfan.config import RANDOM_PERCEPTUAL_WEIGHTS, Config, is_checkpoint_ref
from superfan.errors import ConfigError, StorageError, UserError
from superfan.stagekinds import default_stages, require_teacher
from superfan.storage import absolute as absolute_url
from superfan.train.reports import STOP_FILE
from superfan.train.session import FORWARD_ENV, verbose

#: Retry window of the pre-flight checks (seconds): long enough for a blip, short for a typo.
PREFLIGHT_RETRY_S = 5.0


def resolve_stages(cfg: Config, stages: list[str] | None, resume_from: str | None = None) -> list[str]:
    names = list(stages) if stages else default_stages(cfg)
    if not names:
        raise ConfigError("no stages selected (the config has only teacher stages; use `superfan train fan`)")
    for n in names:
        cfg.stage(n)  # one-line ConfigError for an unknown name
    kinds = {cfg.stage(n).kind for n in names}
    if "fan" in kinds and len(kinds) > 1:
        raise ConfigError("a run trains either the teacher FAN (kind 'fan') or Super-FAN stages, not both")
    first = cfg.stage(names[0])
    ref = first.init_from
    if ref and not is_checkpoint_ref(ref) and not resume_from:
        raise ConfigError(
            f"stage {first.name!r} starts from stage {ref!r}, which this run does not include: "
            f"add it to the stages or pass its checkpoint (--init CHECKPOINT)"
        )
    return names


def use_gpu(cfg: Config) -> bool:
    """``train.use_gpu``; when unset, whether the cluster has GPUs right now (fixed clusters only: an
    autoscaled one has none until a pending GPU request makes it start a GPU node)."""
    if cfg.train.use_gpu is not None:
        return cfg.train.use_gpu
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def backend(cfg: Config, gpu: bool) -> str:
    """NCCL when each worker holds whole GPUs; gloo on CPU and for fractional GPUs (ranks may share one)."""
    if cfg.train.backend != "auto":
        return cfg.train.backend
    return "nccl" if gpu and cfg.train.gpus_per_worker >= 1 else "gloo"


def worker_resources(cfg: Config, gpu: bool) -> dict[str, float]:
    """What one Train worker asks Ray for: its placement-group bundle, which an autoscaler reads."""
    resources: dict[str, float] = {"CPU": cfg.train.cpus_per_worker}
    if gpu:
        resources["GPU"] = cfg.train.gpus_per_worker
    if cfg.train.memory_per_worker_gb:
        resources["memory"] = cfg.train.memory_per_worker_gb * 2**30
    return resources


def absolute_perceptual(cfg: Config) -> None:
    """Make a local ``model.perceptual_weights`` path absolute in ``cfg`` (Ray's workers run elsewhere)."""
    src = cfg.model.perceptual_weights
    if src and src != RANDOM_PERCEPTUAL_WEIGHTS and "://" not in src:
        cfg.model.perceptual_weights = absolute_url(src)


def check_perceptual_file(cfg: Config, stages: list[str]) -> None:
    """One line now, not a failed trial later, when the stages run need the ResNet-50 and its local file or
    ``s3://`` object is missing (the scheme was checked when the config was read; an ``http(s)://`` URL is
    fetched by the workers, not probed here)."""
    from superfan.stagekinds import STAGE_SPECS

    src = cfg.model.perceptual_weights
    if src in (None, RANDOM_PERCEPTUAL_WEIGHTS) or src.startswith(("http://", "https://")):
        return
    if not any(STAGE_SPECS[cfg.stage(n).kind].needs_perceptual for n in stages):
        return
    found = storage.exists(src) if storage.is_s3(src) else Path(src.removeprefix("file://")).expanduser().is_file()
    if not found:
        raise ConfigError(f"model.perceptual_weights {src!r}: no such file")


def preflight(cfg: Config, *, teacher: str | None = None, resume_from: str | None = None,
              storage_url: str | None = None, workers: int | None = None, data: bool = True,
              stages: list[str] | None = None) -> None:  # fmt: skip
    """Every user error that can be found before Ray starts, each as one line: train and val data reachable
    with a manifest or shards (and a known size for one-pass epochs), the teacher and start checkpoints
    present, the perceptual weights of ``stages`` present, the storage writable. ``data=False``: the data is
    packed later (a sweep's synthetic faces). ``superfan train`` and the sweep drivers call it."""
    from superfan.checkpoint import require_file
    from superfan.data.manifest import resolve_dataset
    from superfan.data.stream import batches_per_epoch

    if data and not cfg.data.train:
        raise ConfigError("no training data: pass --data URL (shards, brace pattern, prefix or manifest.json)")
    # A missing bucket, endpoint or credential is a user error now, not an outage to ride out.
    with storage.retry_window(PREFLIGHT_RETRY_S):
        if data:
            for urls in (cfg.data.train, cfg.data.val):
                found = resolve_dataset(urls) if urls else None
                for url in [] if found is None else [u for u in found.shards if u not in found.entries]:
                    if not storage.exists(url):  # a bare .tar URL (no manifest vouches for it)
                        raise StorageError(f"{url}: not found")
            batches_per_epoch(cfg, workers or cfg.train.workers)
        for what, ref in (("teacher", teacher), ("start checkpoint", resume_from)):
            if ref:
                try:
                    require_file(ref)
                except UserError as err:
                    raise type(err)(f"{what}: {err}") from None
        check_perceptual_file(cfg, stages or [])
        if storage_url:
            storage.check_writable(storage_url)


def storage_location(url: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for ``RunConfig``; local paths get no filesystem."""
    if storage.is_s3(url):
        fs, path = storage.pyarrow_fs(url)
        return path, fs
    _, path = storage.pyarrow_fs(url)
    return path, None


def run_url(storage_root: str, name: str) -> str:
    """Where Train keeps the run ``name`` (its checkpoints, and :data:`STOP_FILE`)."""
    return storage.join(absolute_url(storage_root), name)


def read_stop(url: str) -> dict[str, Any] | None:
    """The stop report of the run at ``url``, if it stopped itself."""
    import json

    stop = storage.join(url, STOP_FILE)
    return json.loads(storage.read_text(stop)) if storage.exists(stop) else None


def clear_stop(url: str) -> None:
    storage.delete(storage.join(url, STOP_FILE))


def raise_data_error(metrics: dict[str, Any] | None, what: str = "training") -> None:
    """A run that stopped on its data (``data_error`` in its last report; the workers do not raise, so
    there is no traceback and no retry) or diverged becomes the driver's one-line error."""
    from superfan.errors import BadData, IntegrityError, TrainingDiverged

    metrics = metrics or {}
    message = metrics.get("data_error")
    if isinstance(message, str):
        kind = IntegrityError if metrics.get("data_error_kind") == "IntegrityError" else BadData
        raise kind(f"{what} stopped: {message}")
    if metrics.get("diverged") is True:
        raise TrainingDiverged(f"{what} diverged: {metrics.get('diverged_reason')}")


def checkpoint_url(path: str, storage_root: str) -> str:
    """Ray reports S3 checkpoint paths without the scheme; give users a URL they can pass back in."""
    return f"s3://{path}" if storage.is_s3(storage_root) and not path.startswith("s3://") else path


def build_trainer(
    cfg: Config,
    *,
    name: str,
    storage: str | None = None,
    stages: list[str] | None = None,
    teacher: str | None = None,
    callbacks: list[Any] | None = None,
    resume_from: str | None = None,
    debug: dict[str, Any] | None = None,
    sweep: str = "",
) -> Any:
    """A TorchTrainer that runs ``stages`` (default: all non-teacher stages) of ``cfg`` as one Train run.

    ``teacher`` (or ``cfg.train.teacher``) is the HR FAN checkpoint; ``resume_from`` a checkpoint to start
    from (continues its stage/epoch/step/LR if its stage is selected, else only its weights). Ray's own
    checkpoints take precedence after a worker failure (``max_failures``) and when the same ``name`` is
    re-run on the same storage. ``debug`` is fault injection for the test suite only. ``sweep`` (the sweep's
    name, empty for ``superfan train``) tags the run's Ray metrics (superfan.train.raymetrics) beside ``name``.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from superfan.train.teacher import check_same_teacher, load_teacher
    from superfan.train.worker import train_loop_per_worker

    names = resolve_stages(cfg, stages, resume_from)
    # The workers do not run in this process's directory: local paths they read must be absolute.
    cfg = cfg.model_copy(deep=True)
    cfg.data.train = [absolute_url(u) for u in cfg.data.train]
    cfg.data.val = [absolute_url(u) for u in cfg.data.val]
    absolute_perceptual(cfg)
    teacher = teacher or cfg.train.teacher
    teacher = absolute_url(teacher) if teacher else None
    resume_from = absolute_url(resume_from) if resume_from else None
    require_teacher(cfg, names, teacher)
    if teacher:
        import torch

        from superfan.checkpoint import load_checkpoint

        loaded = load_teacher(teacher, torch.device("cpu"))
        if loaded.fan_config != cfg.model.fan.model_dump(mode="json"):
            # The integrated FAN is a copy of the teacher, so its architecture is the teacher's.
            cfg.model.fan = type(cfg.model.fan).model_validate(loaded.fan_config)
        if resume_from:
            check_same_teacher(load_checkpoint(resume_from), resume_from, teacher, loaded.sha256)
    gpu = use_gpu(cfg)
    resources = worker_resources(cfg, gpu)
    root = storage or cfg.train.storage
    storage_path, fs = storage_location(root)
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    url = run_url(root, name)
    clear_stop(url)  # a stop of an earlier run of this name is not this one's
    loop_config = {
        "run_url": url,
        "config": cfg.to_dict(),
        "stages": names,
        "teacher": teacher,
        "init_from": resume_from,
        "debug": dict(debug or {}),
        "metric_tags": {"sweep": sweep, "trial": name},
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=backend(cfg, gpu)),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.workers, use_gpu=gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=list(callbacks or []),
            # Quiet unless --verbose: Train's INFO lines print every report's whole metrics dict.
            logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose() else "WARNING"),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
    )
