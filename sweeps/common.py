"""The one sweep driver behind ``sweeps/loss_weights.py``, ``block_layouts.py`` and ``augmentation.py``.

A sweep is ``ray.tune.Tuner`` over a function trainable; each trial builds one ``TorchTrainer`` (Train V2,
:func:`superfan.train.build_trainer`) from the base config plus the trial's parameters and fits it, with
``TuneReportCallback`` forwarding every Train report (and its checkpoint path) to Tune. The trial itself
asks for no CPU: the Train workers hold the real resources, and a :class:`ConcurrencyLimiter` sized from
the cluster keeps trials from queueing for workers they cannot get. Search: ``OptunaSearch`` (TPE, seeded;
the config's own values are the first point), optionally multi-objective (AUC and PSNR). Scheduling:
``ASHAScheduler`` on ``val_auc_balanced`` per epoch. When the sweep ends, the best report of any trial is
promoted to ``<storage>/champions/<name>/`` (:mod:`superfan.champion`).

Sweep files (``sweeps/configs/*.yaml``) are config files with a ``base:`` profile, any config overrides,
a ``sweep:`` block (settings) and a ``search:`` block with one section per sweep kind. See
``sweeps/configs/tiny.yaml`` for the grammar.

Storage layout under ``--storage`` (a directory or ``s3://bucket/prefix``; default ``./.superfan``)::

    data/synthetic-*/            synthetic shards packed when no data is given
    teachers/<key>.json          pointer to the teacher FAN checkpoint for a (FAN, data) combination
    runs/teacher-*/              the teacher's Train run
    sweeps/<name>/               the Tune experiment (restorable with --resume) + sweep.json (settings)
    trials/<name>/<trial id>/    each trial's Train run and checkpoints
    champions/<name>/            promoted versions + the ``latest`` pointer
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Train V2 inside Tune, Train runs visible in the dashboard, no usage reporting. Set before Ray is
# imported anywhere in this process: the in-process cluster and all its workers inherit them.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import yaml  # noqa: E402

from superfan import storage  # noqa: E402
from superfan.config import Config, StageConfig, apply_overrides, load_config  # noqa: E402
from superfan.errors import ConfigError, UserError  # noqa: E402

SWEEPS_DIR = Path(__file__).resolve().parent
CONFIGS_DIR = SWEEPS_DIR / "configs"
DEFAULT_STORAGE = "./.superfan"
METRIC = "val_auc_balanced"
#: ASHA's time attribute: the epoch count the training loop reports (see build_tuner).
TIME_ATTR = "global_epoch"
#: Test-only fault injection (JSON, the ``debug`` dict of superfan.train.loop.run_training) for every trial.
DEBUG_ENV = "SUPERFAN_DEBUG_FAULTS"
#: Reported keys shown in the results table and written into the champion's manifest.
REPORT_KEYS = (
    "val_auc_balanced",
    "val_auc_0_30",
    "val_auc_30_60",
    "val_auc_60_90",
    "val_nme",
    "val_psnr",
    "val_ssim",
    "global_epoch",
    "stage",
)


# ------------------------------------------------------------------------------------------- settings


@dataclass
class SweepSettings:
    """The ``sweep:`` block of a sweep file, after command-line overrides. Saved as ``sweep.json``."""

    samples: int = 4
    metric: str = METRIC
    mode: str = "max"
    multi_objective: bool = False
    secondary_metric: str = "val_psnr"
    stages: list[str] | None = None  #: stage names to run per trial (default: all non-teacher stages)
    epochs: int | dict[str, int] | None = None  #: per selected stage (int) or per name
    teacher_epochs: int | None = None  #: epochs of the teacher stage when the sweep trains the teacher
    grace_period: int = 1
    reduction_factor: int = 2
    workers_per_trial: int | None = None  #: default: the config's train.workers
    #: trials at once. Default: GPU trials all at once (their pending placement groups are what makes an
    #: autoscaler start GPU nodes); CPU trials as many as the cluster's CPUs fit now.
    max_concurrent: int | None = None
    keep_checkpoints: int = 2  #: per trial, the best by ``metric`` (plus Train's latest)
    #: stages whose reports may be promoted (default: the last stage run, so a Super-FAN sweep promotes a
    #: Super-FAN checkpoint, not an earlier stage's that happened to score higher on a small val set)
    promote_stages: list[str] | None = None
    trial_memory_gb: float = 0.25  #: what the (CPU-less) trial actor reserves
    seed: int = 0
    synthetic_train: int = 512
    synthetic_val: int = 128

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str) -> SweepSettings:
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: sweep: unknown setting(s) {', '.join(unknown)} (known: {sorted(known)})")
        return cls(**data)


@dataclass
class Sweep:
    """Everything a sweep needs, resolved once and stored beside the experiment for ``--resume``."""

    kind: str
    name: str
    storage: str
    config: dict[str, Any]  #: base config (with fixed overrides), as ``Config.to_dict()``
    space: dict[str, dict[str, Any]]  #: parameter -> spec (see :func:`tune_space`)
    settings: SweepSettings
    stages: list[str]
    teacher: str | None = None
    config_file: str | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def experiment_url(self) -> str:
        return storage.join(self.storage, "sweeps", self.name)

    @property
    def trials_url(self) -> str:
        return storage.join(self.storage, "trials", self.name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Sweep:
        data = json.loads(text)
        data["settings"] = SweepSettings(**data["settings"])
        return cls(**data)


# ----------------------------------------------------------------------------------------- the space


def _encode(value: Any) -> Any:
    """Optuna categoricals hold only scalars: a list choice (a layout, a range) travels as ``"12-3-2"``."""
    if isinstance(value, list | tuple):
        return "-".join(str(v) for v in value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value and all(p.lstrip("-").replace(".", "", 1).isdigit() for p in value.split("-")):
        parts = value.split("-")
        return [int(p) if p.isdigit() else float(p) for p in parts]
    return value


def layouts(
    total: Sequence[int],
    min_blocks: int = 1,
    max_blocks: Sequence[int] | None = None,
    include: Sequence[Sequence[int]] = (),
) -> list[list[int]]:
    """Generator layouts N1-N2-N3 with ``total[0] <= N1+N2+N3 <= total[1]`` blocks (the budget).

    Blocks at 32 and 64 px cost 4x and 16x a 16 px block, so ``max_blocks`` caps each level to keep the
    categorical small and the compute comparable; ``include`` adds layouts outside the rule (the paper's
    12-3-2 and SRResNet's 16-1-1 are always worth a trial).
    """
    lo, hi = (int(total[0]), int(total[-1]))
    caps = list(max_blocks) if max_blocks else [hi, hi, hi]
    out = [
        [a, b, c]
        for a in range(min_blocks, caps[0] + 1)
        for b in range(min_blocks, caps[1] + 1)
        for c in range(min_blocks, caps[2] + 1)
        if lo <= a + b + c <= hi
    ]
    for extra in include:
        if list(extra) not in out:
            out.append([int(v) for v in extra])
    return out


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise ConfigError(f"search: {dotted!r} is not a config field")
        node = node[key]
    return node


def resolve_space(
    section: Mapping[str, Any], config: dict[str, Any], source: str
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Split a ``search.<kind>`` section into (searched specs, fixed overrides).

    Specs (each a mapping with ``type``): ``loguniform`` with ``low``/``high`` or ``around: F`` (from the
    config's value / F to value * F), ``uniform`` (``low``, ``high``), ``int`` (``low``, ``high``),
    ``choice`` (``values``), ``layouts`` (``total: [lo, hi]``, ``max``, ``min``, ``include``). A plain
    value is fixed for every trial. Each spec is checked against the config's own value, which becomes
    the first point evaluated; a choice that lacks it gains it.
    """
    specs: dict[str, dict[str, Any]] = {}
    fixed: dict[str, Any] = {}
    for key, spec in section.items():
        if not isinstance(spec, Mapping):
            fixed[key] = spec
            continue
        kind = spec.get("type")
        default = _get(config, key)
        where = f"{source}: search: {key}"
        if kind == "loguniform":
            if "around" in spec:
                factor = float(spec["around"])
                if not (isinstance(default, int | float) and default > 0 and factor > 1):
                    raise ConfigError(f"{where}: 'around' needs a positive config value and a factor > 1")
                low, high = default / factor, default * factor
            else:
                low, high = float(spec["low"]), float(spec["high"])
            if not 0 < low < high:
                raise ConfigError(f"{where}: loguniform needs 0 < low < high")
            specs[key] = {"type": "loguniform", "low": low, "high": high}
        elif kind in {"uniform", "int"}:
            low, high = spec["low"], spec["high"]
            specs[key] = {"type": kind, "low": low, "high": high}
        elif kind == "choice":
            values = [_encode(v) for v in spec["values"]]
            specs[key] = {"type": "choice", "values": values}
        elif kind == "layouts":
            found = layouts(spec["total"], int(spec.get("min", 1)), spec.get("max"), spec.get("include", ()))
            specs[key] = {"type": "choice", "values": [_encode(v) for v in found]}
        else:
            raise ConfigError(f"{where}: unknown type {kind!r} (loguniform, uniform, int, choice, layouts)")
        s = specs[key]
        if s["type"] == "choice":
            if _encode(default) not in s["values"]:
                s["values"].insert(0, _encode(default))
        elif not (isinstance(default, int | float) and s["low"] <= default <= s["high"]):
            raise ConfigError(f"{where}: the config's value {default!r} is outside [{s['low']}, {s['high']}]")
    return specs, fixed


def tune_space(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Tune domains for Optuna (converted by ``OptunaSearch`` from the Tuner's ``param_space``)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, s in specs.items():
        if s["type"] == "loguniform":
            out[key] = tune.loguniform(s["low"], s["high"])
        elif s["type"] == "uniform":
            out[key] = tune.uniform(s["low"], s["high"])
        elif s["type"] == "int":
            out[key] = tune.randint(int(s["low"]), int(s["high"]) + 1)
        else:
            out[key] = tune.choice(list(s["values"]))
    return out


def default_point(specs: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's own values of the searched keys: Optuna evaluates this point first."""
    return {key: _encode(_get(config, key)) for key in specs}


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any]) -> Config:
    """The trial's ``Config``: base plus its parameters (decoded list choices), validated."""
    from superfan.config import from_dict

    return from_dict(apply_overrides(dict(base), {k: _decode(v) for k, v in params.items()}), "trial config")


# ------------------------------------------------------------------------------------------ CLI setup


def build_parser(kind: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"sweeps/{kind}.py", description=description)
    p.add_argument(
        "--config",
        default=str(CONFIGS_DIR / "tiny.yaml"),
        help="sweep YAML (base profile + sweep: + search:), default sweeps/configs/tiny.yaml",
    )
    p.add_argument("--samples", type=int, default=None, help="trials (sweep.samples)")
    p.add_argument("--workers-per-trial", type=int, default=None, help="Ray Train workers per trial")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: from the cluster)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="local directory or s3://bucket/prefix")
    p.add_argument("--data", action="append", default=None, help="train shards: URL, brace pattern or manifest")
    p.add_argument("--val", action="append", default=None, help="validation shards (the promotion metric)")
    p.add_argument("--teacher", default=None, help="teacher FAN checkpoint (default: train/reuse one)")
    p.add_argument("--name", default=None, help=f"sweep name (default {kind.replace('_', '-')}-<profile>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this name")
    p.add_argument("--seed", type=int, default=None, help="searcher seed (sweep.seed)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every selected stage (sweep.epochs)")
    p.add_argument("--multi-objective", action="store_true", help="Optuna on AUC and PSNR (Pareto TPE)")
    p.add_argument("overrides", nargs="*", help="config overrides for every trial, e.g. data.batch_size=8")
    return p


def _read_sweep_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep config not found: {path}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def plan(kind: str, args: argparse.Namespace) -> Sweep:
    """Resolve the sweep file, command line and data into a :class:`Sweep` (no Ray, no training)."""
    raw = _read_sweep_file(args.config)
    settings = SweepSettings.from_dict(raw.get("sweep"), args.config)
    section = (raw.get("search") or {}).get(kind)
    if not section:
        raise ConfigError(f"{args.config}: search: has no {kind!r} section")
    for attr, name in (
        ("samples", "samples"),
        ("workers_per_trial", "workers_per_trial"),
        ("max_concurrent", "max_concurrent"),
        ("seed", "seed"),
        ("epochs", "epochs"),
    ):
        if getattr(args, attr) is not None:
            setattr(settings, name, getattr(args, attr))
    if args.multi_objective:
        settings.multi_objective = True
    cfg = load_config(args.config, list(args.overrides or []))
    if settings.workers_per_trial:
        cfg.train.workers = settings.workers_per_trial
    cfg.train.report_every_steps = 0  # one report per epoch: the curves and ASHA's rungs are per epoch
    # Trials build their trainers in Ray actors that do not run in this directory: local paths must be
    # absolute before they leave the driver (build_trainer would resolve them against the actor's).
    if args.data:
        cfg.data.train = [storage.absolute(u) for u in args.data]
    if args.val:
        cfg.data.val = [storage.absolute(u) for u in args.val]
    if cfg.data.train and not cfg.data.val:
        raise ConfigError("no validation data: pass --val URL (the promotion metric is validation AUC)")
    stages = settings.stages or [s.name for s in cfg.stages if s.kind != "fan"]
    unknown = sorted(set(settings.promote_stages or []) - set(stages))
    if unknown:
        raise ConfigError(f"{args.config}: sweep: promote_stages {unknown} are not among the stages run {stages}")
    stale = sorted(set(settings.epochs) - set(stages)) if isinstance(settings.epochs, dict) else []
    if stale:  # a budget for a stage the profile no longer has would be ignored silently
        raise ConfigError(f"{args.config}: sweep: epochs names {stale}, which are not among the stages run {stages}")
    for stage_name in stages:
        stage = cfg.stage(stage_name)
        epochs = settings.epochs.get(stage_name) if isinstance(settings.epochs, dict) else settings.epochs
        if epochs:
            stage.epochs = int(epochs)
    fixed = {k: v for k, v in section.items() if not isinstance(v, Mapping)}
    base = trial_config(cfg.to_dict(), fixed).to_dict() if fixed else cfg.to_dict()
    specs, _ = resolve_space(section, base, args.config)
    name = args.name or f"{kind.replace('_', '-')}-{cfg.profile}"
    root = storage.absolute(args.storage)
    return Sweep(
        kind=kind,
        name=name,
        storage=root,
        config=base,
        space=specs,
        settings=settings,
        stages=stages,
        teacher=storage.absolute(args.teacher) if args.teacher else None,
        config_file=str(args.config),
    )


# ------------------------------------------------------------------------------------------- Ray / data


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


def ensure_data(sweep: Sweep) -> None:
    """Pack synthetic train/val shard sets under ``<storage>/data`` when the config names no data."""
    data = sweep.config["data"]
    if data["train"]:
        return
    from shards.pack import PackOptions, pack

    s = sweep.settings
    for split, n, seed in (("train", s.synthetic_train, 0), ("val", s.synthetic_val, 1)):
        dest = storage.join(sweep.storage, "data", f"synthetic-{n}-{split}")
        manifest = storage.join(dest, "manifest.json")
        if not storage.exists(manifest):
            print(f"packing {n} synthetic faces -> {dest}", flush=True)
            workers = max(1, min(2, os.cpu_count() or 1))
            pack(
                PackOptions(
                    format="synthetic",
                    src=str(n),
                    dest=dest,
                    split=split,
                    seed=seed,
                    workers=workers,
                    progress=False,
                    overwrite=True,
                )
            )
        data[split] = [manifest]


def teacher_key(config: Mapping[str, Any], stage: Mapping[str, Any]) -> str:
    """What the teacher depends on (its FAN, its stage, its data, the face geometry): a changed config
    trains a new teacher, an unchanged one reuses the last."""
    basis = {
        "fan": config["model"]["fan"],
        "stage": stage,
        "data": {k: config["data"][k] for k in ("train", "val", "batch_size", "samples_per_epoch", "seed")},
        "augment": config["augment"],
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:12]


def ensure_teacher(sweep: Sweep) -> str:
    """The teacher FAN checkpoint: ``--teacher``, else one trained earlier for this config, else train it.

    Training is one ``TorchTrainer`` run of the config's ``fan`` stage (the same function as ``superfan
    train fan``); a pointer under ``<storage>/teachers/`` makes the next sweep on the same data reuse it.
    """
    if sweep.teacher:
        return sweep.teacher
    from superfan.config import from_dict
    from superfan.train.trainer import build_trainer, checkpoint_url

    cfg = from_dict(sweep.config, "sweep config")
    fan_stages = [s for s in cfg.stages if s.kind == "fan"]
    stage = fan_stages[0] if fan_stages else StageConfig(name="teacher", kind="fan", epochs=16)
    if sweep.settings.teacher_epochs:
        stage.epochs = sweep.settings.teacher_epochs
    cfg.stages = [stage]
    key = teacher_key(sweep.config, stage.model_dump(mode="json"))
    pointer = storage.join(sweep.storage, "teachers", f"{cfg.profile}-{key}.json")
    if storage.exists(pointer):
        url = json.loads(storage.read_text(pointer))["checkpoint"]
        if storage.exists(storage.join(url, "checkpoint.pt")):
            print(f"teacher FAN: reusing {url}", flush=True)
            return url
    print(f"teacher FAN: training {stage.epochs} epochs (stage {stage.name!r}) ...", flush=True)
    root = storage.join(sweep.storage, "runs")
    import ray.train

    trainer = build_trainer(cfg, name=f"teacher-{cfg.profile}-{key}", storage=root, stages=[stage.name])
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        raise UserError(f"training the teacher FAN failed: {lines[-1] if lines else type(err).__name__}") from None
    if result.checkpoint is None:
        raise UserError("the teacher FAN run finished without a checkpoint")
    url = checkpoint_url(result.checkpoint.path, root)
    m = result.metrics or {}
    nan = float("nan")
    print(f"teacher FAN: {url} (val_auc {m.get('val_auc', nan):.4f}, nme {m.get('val_nme', nan):.4f})")
    storage.write_text(
        pointer,
        json.dumps({"checkpoint": url, "metrics": {k: v for k, v in m.items() if k.startswith("val_")}}),
    )
    return url


# -------------------------------------------------------------------------------------------- trainable


def run_trial(params: dict[str, Any], setup: dict[str, Any]) -> None:
    """One trial = one Train run over all selected stages of the trial's config.

    The Train run's name is the trial id, under the sweep's ``trials/`` storage: a trial restarted by
    ``--resume`` (or after a failure) re-runs the same name and Train continues from its own latest
    checkpoint. Checkpoints are kept by the promotion metric so the best report's weights survive.
    """
    import ray.train
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from superfan.train.trainer import build_trainer

    cfg = trial_config(setup["config"], params)
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = build_trainer(
        cfg,
        name=trial_id,
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

    setup = {
        "config": sweep.config,
        "stages": sweep.stages,
        "teacher": teacher,
        "trials_url": sweep.trials_url,
        "keep_checkpoints": sweep.settings.keep_checkpoints,
        "metric": sweep.settings.metric,
        "mode": sweep.settings.mode,
        "debug": json.loads(os.environ[DEBUG_ENV]) if os.environ.get(DEBUG_ENV) else None,
    }
    memory = int(sweep.settings.trial_memory_gb * 2**30)
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"CPU": 0, "memory": memory})


def trial_dirname(trial: Any) -> str:
    """``trial_<id>``: Tune's default puts every parameter in the name, too long for S3 keys and eyes."""
    return f"trial_{trial.trial_id}"


def _total_epochs(sweep: Sweep) -> int:
    by_name = {s["name"]: s["epochs"] for s in sweep.config["stages"]}
    return sum(int(by_name[n]) for n in sweep.stages)


def build_tuner(sweep: Sweep, teacher: str) -> Any:
    """The ``Tuner``: Optuna TPE (config values first) under a concurrency limit, ASHA on the metric."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from superfan.config import from_dict
    from superfan.train.trainer import storage_location, use_gpu
    from sweeps.searcher import ResumableOptunaSearch

    s = sweep.settings
    cfg = sweep.config
    if s.multi_objective:
        metric: str | list[str] = [s.metric, s.secondary_metric]
        mode: str | list[str] = [s.mode, "max"]
    else:
        metric, mode = s.metric, s.mode
    searcher = ResumableOptunaSearch(
        metric=metric, mode=mode, seed=s.seed, points_to_evaluate=[default_point(sweep.space, cfg)]
    )
    gpu = use_gpu(from_dict(cfg, "sweep config"))
    limit = concurrency(s, int(cfg["train"]["workers"]), float(cfg["train"]["cpus_per_worker"]), gpu)
    # Time is the epoch the loop reports (global_epoch), not Tune's count of reports: after a Train restart
    # the resumed run re-reports epochs since its last checkpoint, and a report count would run ahead.
    # max_t one past the last epoch: ASHA stops a trial at max_t, and stopping it on its final report
    # would kill the Train run while it registers its last checkpoint.
    scheduler = ASHAScheduler(
        metric=s.metric,
        mode=s.mode,
        time_attr=TIME_ATTR,
        max_t=_total_epochs(sweep) + 1,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )
    path, fs = storage_location(storage.join(sweep.storage, "sweeps"))
    device = f"{cfg['train']['gpus_per_worker']:g} GPU" if gpu else f"{cfg['train']['cpus_per_worker']:g} CPU"
    print(
        f"sweep {sweep.name}: {s.samples} trials, {limit} at a time, {_total_epochs(sweep)} epochs each, "
        f"{cfg['train']['workers']} worker(s) x {device} per trial, searching {', '.join(sweep.space)}",
        flush=True,
    )
    return tune.Tuner(
        _trainable(sweep, teacher),
        param_space=tune_space(sweep.space),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=limit),
            scheduler=scheduler,
            num_samples=s.samples,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sweep.name,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def _experiment_path(sweep: Sweep) -> tuple[str, Any]:
    from superfan.train.trainer import storage_location

    path, fs = storage_location(storage.join(sweep.storage, "sweeps"))
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
    print(f"sweep {sweep.name}: resuming from {sweep.experiment_url}", flush=True)
    return tune.Tuner.restore(path, _trainable(sweep, teacher), resume_errored=True, storage_filesystem=fs)


# ---------------------------------------------------------------------------------------------- results


def _short(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[-2:]) if len(parts) > 1 else key


def trial_rows(results: Any, sweep: Sweep) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per trial: its best report (by the metric) for the table; and every checkpointed report as a
    promotion candidate."""
    from superfan.champion import Candidate
    from superfan.train.trainer import checkpoint_url

    metric, mode = sweep.settings.metric, sweep.settings.mode
    promotable = set(sweep.settings.promote_stages or sweep.stages[-1:])
    rows, candidates = [], []
    for result in results:
        df = result.metrics_dataframe
        cfg = dict(result.config or {})
        trial_id = (result.metrics or {}).get("trial_id") or Path(str(result.path)).name
        records = [] if df is None else df.to_dict("records")
        status = "ERROR" if result.error else "TERMINATED"
        if any(rec.get("diverged") is True for rec in records):
            status = "DIVERGED"
        row: dict[str, Any] = {"trial": trial_id, "status": status, "reports": 0}
        row.update({_short(k): _decode(cfg[k]) for k in sweep.space if k in cfg})
        row["reports"] = len(records)
        best = None
        for rec in records:
            value = rec.get(metric)
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            if best is None or (value > best[metric] if mode == "max" else value < best[metric]):
                best = rec
            ckpt = rec.get("checkpoint_path")
            if isinstance(ckpt, str) and ckpt and rec.get("stage") in promotable:
                params = {k: cfg[k] for k in sweep.space if k in cfg}
                metrics = {k: rec.get(k) for k in REPORT_KEYS if k in rec}
                metrics["training_iteration"] = rec.get("training_iteration")
                candidates.append(Candidate(checkpoint_url(ckpt, sweep.storage), metrics, str(trial_id), params))
        if best is not None:
            row.update({k: best.get(k) for k in REPORT_KEYS if k in best})
        rows.append(row)
    return rows, candidates


def print_results(rows: list[dict[str, Any]], sweep: Sweep) -> None:
    from superfan.champion import metrics_table

    first = [("trial", "trial"), ("status", "status"), ("reports", "epochs")]
    first += [(_short(k), _short(k)) for k in sweep.space]
    print(f"\nsweep {sweep.name}: best report of each trial (by {sweep.settings.metric})")
    print(metrics_table(rows, first=first))


def promote_best(candidates: list[Any], sweep: Sweep) -> Any:
    from superfan.champion import metrics_table, promote

    champ = promote(
        candidates,
        sweep.storage,
        sweep.name,
        metric=sweep.settings.metric,
        mode=sweep.settings.mode,
        extra={
            "sweep": {
                "kind": sweep.kind,
                "config_file": sweep.config_file,
                "settings": asdict(sweep.settings),
                "space": sweep.space,
            }
        },
    )
    if champ is None:
        print(
            f"\nsweep {sweep.name}: no trial produced a checkpoint with a finite {sweep.settings.metric}; "
            "nothing promoted"
        )
        return None
    m = champ.manifest
    print(f"\nchampion: {champ.url}")
    print(f"  trial {m['trial_id']}, epoch {m['metrics'].get('global_epoch')}, source {m['source']}")
    print(metrics_table([m["metrics"]]))
    return champ


# ---------------------------------------------------------------------------------------------- main


def main(kind: str, description: str, argv: list[str] | None = None) -> int:
    """Entry point shared by the sweep scripts; user errors print one line and exit 2."""
    args = build_parser(kind, description).parse_args(argv)
    try:
        return _main(kind, args, argv)
    except UserError as err:
        print(f"sweeps/{kind}.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (superfan.raysession): Ray is already shut down
        print(f"sweeps/{kind}.py: interrupted; continue with --resume", file=sys.stderr)
        return 130


def _main(kind: str, args: argparse.Namespace, argv: list[str] | None) -> int:
    sweep = plan(kind, args)
    embedded_default = not (argv if argv is not None else sys.argv[1:])
    _preflight(sweep)
    from superfan.raysession import ray_session

    with ray_session():
        return _run(kind, sweep, args, embedded_default)


def _run(kind: str, sweep: Sweep, args: argparse.Namespace, embedded_default: bool) -> int:
    state_url = storage.join(sweep.experiment_url, "sweep.json")
    resuming = False
    if can_resume(sweep):
        if not (args.resume or embedded_default):
            raise UserError(
                f"sweep {sweep.name!r} already exists at {sweep.experiment_url}: pass --resume to "
                "continue it, or --name for a new sweep"
            )
        if storage.exists(state_url):
            sweep = Sweep.from_json(storage.read_text(state_url))  # the settings it started with
        resuming = True
    elif args.resume:
        print(f"sweep {sweep.name}: nothing to resume at {sweep.experiment_url}; starting it", flush=True)
    ensure_data(sweep)
    teacher = ensure_teacher(sweep)
    sweep.teacher = teacher
    if not resuming:
        storage.write_text(state_url, sweep.to_json())
    tuner = restore_tuner(sweep, teacher) if resuming else build_tuner(sweep, teacher)
    t0 = time.perf_counter()
    results = tuner.fit()
    rows, candidates = trial_rows(results, sweep)
    print(
        f"\nsweep {sweep.name}: {len(results)} trials in {time.perf_counter() - t0:.0f} s "
        f"({sum(1 for r in rows if r['status'] == 'ERROR')} errored, "
        f"{sum(1 for r in rows if r['status'] == 'DIVERGED')} diverged); experiment {sweep.experiment_url}"
    )
    print_results(rows, sweep)
    champ = promote_best(candidates, sweep)
    return 0 if champ is not None else 1


def _preflight(sweep: Sweep) -> None:
    """The user errors findable before Ray starts (storage, data, teacher), one line each."""
    from superfan.config import from_dict
    from superfan.train.trainer import preflight

    cfg = from_dict(sweep.config, "sweep config")
    if cfg.data.train:
        preflight(cfg, teacher=sweep.teacher, storage_url=sweep.storage)
    else:  # synthetic faces are packed under the storage once Ray is up
        with storage.retry_window(5.0):
            storage.check_writable(sweep.storage)
            if sweep.teacher:
                from superfan.checkpoint import require_file

                require_file(sweep.teacher)


def entry(kind: str, description: str) -> Callable[[list[str] | None], int]:
    """``main`` bound to a sweep kind, for the thin scripts."""

    def _run(argv: list[str] | None = None) -> int:
        return main(kind, description, argv)

    return _run
