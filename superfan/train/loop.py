"""``train_loop_per_worker``: one Ray Train run executes every selected stage of a config in order.

The loop body is :func:`run_training`, which knows nothing about Ray: it takes the rank, the world size,
a ``wrap`` function (DDP) and a ``report`` callable. :func:`train_loop_per_worker` plugs Ray Train into
it; the unit tests plug a local directory reporter into the same code, so what they check (resume,
divergence, which weights move) is what runs on the cluster.

Counters: ``epoch`` is the number of finished epochs within the stage, ``global_epoch`` the number of
finished epochs over the whole chain (what ASHA should use as its time attribute), ``step`` the number
of generator/FAN optimiser steps over the whole chain. A checkpoint is written after its epoch's weights
are checked finite, so a divergence never replaces a good checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from superfan import storage
from superfan.checkpoint import load_checkpoint, models_from_checkpoint, save_checkpoint, state_fingerprint, strip_ddp
from superfan.config import Config, StageConfig, from_dict, is_checkpoint_ref
from superfan.data import badsamples
from superfan.data.badsamples import SampleLedger
from superfan.data.stream import batches_per_epoch
from superfan.errors import BadData, ConfigError, IntegrityError, TrainingDiverged, UserError
from superfan.train.collectives import (
    EXHAUSTED,
    FAILED,
    GOT_BATCH,
    agree_on_batch,
    broadcast_object,
    mean_across_ranks,
    min_max_across_ranks,
    sum_across_ranks,
)
from superfan.train.stages import NEEDS_TEACHER, STAGE_SPECS, Nets, StageRunner, build_nets, params_finite

LoaderFactory = Callable[..., Iterable[dict[str, Any]]]
#: Validation keys every report carries (docs/contracts.md); a diverged run reports them as NaN, so a
#: scheduler or searcher keyed on any of them gets a value.
DIVERGED_NAN_KEYS = ("val_auc_balanced", "val_auc_0_30", "val_auc_30_60", "val_auc_60_90", "val_auc", "val_nme",
                     "val_psnr", "val_ssim")  # fmt: skip


class Reporter(Protocol):
    def __call__(self, metrics: dict[str, Any], payload: dict[str, Any] | None) -> None: ...


# ---------------------------------------------------------------------------------------------- helpers


def _default_loader(cfg: Config, *, train: bool, rank: int, world_size: int, epoch: int) -> Iterable[dict]:
    from superfan.data import make_loader

    urls = cfg.data.train if train else cfg.data.val
    return make_loader(urls, cfg, train=train, rank=rank, world_size=world_size, seed=cfg.data.seed, epoch=epoch)


class Teacher(NamedTuple):
    """The frozen HR teacher FAN, its config (the integrated FAN must share its architecture), the
    fingerprint of its weights (recorded in every checkpoint trained against it) and its RMSprop state
    (end2end's FAN, a copy of the teacher, continues it)."""

    fan: nn.Module
    fan_config: dict[str, Any]
    sha256: str
    optimizer: dict[str, Any] | None


def load_teacher(ref: str, device: torch.device) -> Teacher:
    payload = load_checkpoint(ref)
    fan = models_from_checkpoint(payload, device)["fan"]
    if fan is None:
        raise ConfigError(f"{ref}: checkpoint holds no FAN; the teacher comes from `superfan train fan`")
    optimizer = (payload.get("optimizers") or {}).get("fan")
    return Teacher(fan, payload["config"]["model"]["fan"], state_fingerprint(payload["fan"]), optimizer)


def check_same_teacher(start: dict[str, Any], where: str, teacher_ref: str | None, teacher_sha: str | None) -> None:
    """Refuse to continue a checkpoint trained against another teacher: its generator (and joint FAN) learnt
    the old teacher's heatmaps, and mixing two targets in one run is silent and wrong."""
    theirs = start.get("teacher_sha256")
    if not theirs or not teacher_sha or theirs == teacher_sha:
        return
    raise ConfigError(
        f"{where} was trained against teacher {start.get('teacher')} (sha256 {theirs[:12]}), but this run's "
        f"teacher is {teacher_ref} (sha256 {teacher_sha[:12]}): pass the same --teacher, or start a new run"
    )


def _load_weights(nets: Nets, payload: dict[str, Any], names: Iterable[str]) -> list[str]:
    done = []
    for name in names:
        state, net = payload.get(name), getattr(nets, name)
        if state is not None and net is not None:
            net.load_state_dict(strip_ddp(state))
            done.append(name)
    return done


# ----------------------------------------------------------------------------------------- validation


@torch.no_grad()
def _validate_fan(fan: nn.Module, cfg: Config, loader: Iterable[dict[str, Any]], device: torch.device) -> dict:
    """Teacher stage: the FAN on HR faces (the upper-bound row of Table 2), same AUC/NME code as evaluate."""
    from superfan.faces import heatmaps_to_points
    from superfan.metrics import auc, auc_by_pose, nme

    errs, yaws = [], []
    for batch in loader:
        mask = batch["has_landmarks"].bool()
        if not mask.any():
            continue
        pred = heatmaps_to_points(fan(batch["hr"].to(device))[-1].float().cpu(), image_size=cfg.augment.hr_size)
        errs.append(torch.as_tensor(nme(pred[mask], batch["landmarks"][mask])).reshape(-1))
        yaws.append(batch["yaw"][mask].reshape(-1))
    if not errs:
        return {}
    e, y = torch.cat(errs), torch.cat(yaws)
    out: dict[str, Any] = {
        "val_nme": float(e.mean()),
        "val_auc": float(auc(e, threshold=cfg.eval.auc_threshold)),
    }
    try:
        by_pose = auc_by_pose(e, y, threshold=cfg.eval.auc_threshold)
        if isinstance(by_pose, dict):
            for k, v in by_pose.items():
                key = k if str(k).startswith("val_") else f"val_auc_{k}"
                out[key] = float(v)
    except TypeError:
        pass
    out.setdefault("val_auc_balanced", out["val_auc"])
    return out


def _validate(
    kind: str, nets: Nets, cfg: Config, loader: Iterable[dict[str, Any]], device: torch.device
) -> dict[str, Any]:
    modes = {n: getattr(nets, n).training for n in ("generator", "fan", "critic") if getattr(nets, n) is not None}
    try:
        for n in modes:
            getattr(nets, n).eval()
        if kind == "fan":
            return _validate_fan(nets.get("fan"), cfg, loader, device)
        from superfan.evaluate import validation_metrics

        out = validation_metrics(nets.get("generator"), nets.get("fan"), loader, cfg, teacher=nets.teacher)
        return {k: (float(v) if isinstance(v, int | float | torch.Tensor) else v) for k, v in out.items()}
    finally:
        for n, training in modes.items():
            getattr(nets, n).train(training)


# ------------------------------------------------------------------------------------------ the loop


def run_training(
    config: dict[str, Any],
    *,
    rank: int,
    world_size: int,
    device: torch.device,
    report: Reporter,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    resume: dict[str, Any] | None = None,
    loader_factory: LoaderFactory | None = None,
) -> dict[str, Any]:
    """Run the selected stages of ``config["config"]`` in order; returns the last reported metrics.

    ``config`` keys: ``config`` (Config dict), ``stages`` (names, in order), ``teacher`` (checkpoint
    URL), ``init_from`` (checkpoint URL to start from), ``debug`` (test-only fault injection).
    ``resume`` is a checkpoint payload to continue from (Ray's ``get_checkpoint()`` after a failure); it
    wins over ``init_from``.
    """
    cfg = from_dict(config["config"], source="train loop config")
    names = list(config.get("stages") or [s.name for s in cfg.stages if s.kind != "fan"])
    stages: list[StageConfig] = [cfg.stage(n) for n in names]
    kinds = [s.kind for s in stages]
    debug: dict[str, Any] = dict(config.get("debug") or {})
    loader_factory = loader_factory or _default_loader
    torch.manual_seed(cfg.train.seed)

    teacher_ref = config.get("teacher") or cfg.train.teacher
    teacher, teacher_sha = None, None
    carried: dict[str, Any] = {}  # optimizer states that continue into the next stage (optimizer.carry_state)
    if any(k != "fan" for k in kinds):
        if not teacher_ref:
            raise ConfigError(NEEDS_TEACHER)
        loaded = load_teacher(teacher_ref, device)
        teacher, teacher_sha = loaded.fan, loaded.sha256
        carried["fan"] = loaded.optimizer
    nets = build_nets(cfg, kinds, device, teacher=teacher)

    start = resume
    if start is None and config.get("init_from"):
        start = load_checkpoint(config["init_from"])
    if start is not None:
        check_same_teacher(start, "the checkpoint to resume", teacher_ref, teacher_sha)
    stage_idx, epoch0, global_epoch, global_step, restore_state = 0, 0, 0, 0, None
    if start is not None:
        _load_weights(nets, start, ("generator", "critic", "fan"))
        carried.update(start.get("optimizers") or {})
        if start.get("stage") in names:
            stage_idx = names.index(start["stage"])
            global_epoch, global_step = int(start["global_epoch"]), int(start["step"])
            if int(start["epoch"]) >= stages[stage_idx].epochs:
                stage_idx, epoch0 = stage_idx + 1, 0
            else:
                epoch0, restore_state = int(start["epoch"]), start

    resumed_from_step = global_step
    # Cost: device-hours of the whole run so far (GPU-hours on CUDA, CPU core-hours otherwise), all ranks,
    # wall time between reports, validation included; a resumed run continues its checkpoint's count.
    per_rank = cfg.train.gpus_per_worker if device.type == "cuda" else cfg.train.cpus_per_worker
    done = (resume or {}).get("metrics") or {}
    device_hours, wall_hours = float(done.get("device_hours") or 0.0), float(done.get("wall_hours") or 0.0)
    clock = time.perf_counter()
    perceptual_pretrained = bool(getattr(nets.perceptual, "pretrained", False)) if nets.perceptual else False
    perceptual_weights = getattr(nets.perceptual, "weights_source", None) if nets.perceptual else None
    spe = batches_per_epoch(cfg, world_size)
    ledger = SampleLedger()  # distinct samples read and bad, over every epoch of this run
    last: dict[str, Any] = {}
    last_val: dict[str, Any] = {}

    stage, si, epoch, runner = stages[min(stage_idx, len(stages) - 1)], stage_idx, epoch0, None
    try:
        for si in range(stage_idx, len(stages)):
            stage = stages[si]
            resuming_here = restore_state is not None and si == stage_idx
            if stage.init_from and is_checkpoint_ref(stage.init_from) and not resuming_here:
                init = load_checkpoint(stage.init_from)
                _load_weights(nets, init, STAGE_SPECS[stage.kind].trains)
                carried.update(init.get("optimizers") or {})
            runner = StageRunner(
                stage, cfg, nets, total_steps=stage.epochs * spe, device=device, wrap=wrap, debug=debug
            )
            if resuming_here:
                runner.load_state_dict(restore_state)  # type: ignore[arg-type]
            elif cfg.optimizer.carry_state:
                runner.adopt_optimizer_states(carried)
            first_epoch = epoch0 if si == stage_idx else 0
            for epoch in range(first_epoch, stage.epochs):
                t0 = time.perf_counter()
                sums: dict[str, float] = {}
                n = 0
                loader = loader_factory(cfg, train=True, rank=rank, world_size=world_size, epoch=global_epoch)
                for i, batch in enumerate(_agreed_batches(loader, spe)):
                    ledger.add(batch)
                    losses = runner.step(batch)
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                    n += 1
                    global_step += 1
                    _maybe_crash(debug, global_step, rank, world_size)
                    every = cfg.train.report_every_steps
                    if every and global_step % every == 0 and i + 1 < spe:
                        if not last_val and cfg.data.val:
                            last_val = _run_validation(stage.kind, nets, cfg, rank, device, loader_factory)
                        mid = {k: v / max(n, 1) for k, v in sums.items()}
                        report(
                            _metrics(stage, si, epoch, global_epoch, global_step, runner, mid, last_val, partial=True),
                            None,
                        )
                elapsed = time.perf_counter() - t0
                if not params_finite(nets):
                    raise TrainingDiverged(
                        f"stage {stage.name!r} epoch {epoch + 1}: weights became NaN/inf; "
                        "stopped before writing a checkpoint, the last good one is untouched"
                    )
                fewest, most = min_max_across_ranks(n)
                if fewest != most:  # batches_per_epoch makes this impossible; a silent mismatch would hang DDP
                    raise RuntimeError(f"ranks took {fewest:.0f} to {most:.0f} steps in one epoch (expected {spe})")
                train = mean_across_ranks({k: v / max(n, 1) for k, v in sums.items()})
                skipped = _check_bad_fraction(cfg, ledger, stage.name, epoch + 1)
                if cfg.data.val:
                    last_val = _run_validation(stage.kind, nets, cfg, rank, device, loader_factory)
                global_epoch += 1
                metrics = _metrics(stage, si, epoch + 1, global_epoch, global_step, runner, train, last_val)
                metrics["images_per_s"] = n * cfg.data.batch_size / max(elapsed, 1e-9)
                metrics["epoch_steps"] = n
                metrics["skipped_samples"] = skipped
                metrics["perceptual_pretrained"] = perceptual_pretrained
                metrics["resumed_from_step"] = resumed_from_step
                now = time.perf_counter()
                device_hours += (now - clock) * per_rank * world_size / 3600.0
                wall_hours += (now - clock) / 3600.0
                clock = now
                metrics["device_hours"], metrics["wall_hours"] = device_hours, wall_hours
                metrics["device_kind"] = "GPU" if device.type == "cuda" else "CPU"
                if rank == 0:  # not print(): Train V2 patches it into its logger, which shows each line twice
                    sys.stdout.write(epoch_line(metrics, stage.epochs) + "\n")
                    sys.stdout.flush()
                payload = None
                due = (epoch + 1) % cfg.train.checkpoint_every_epochs == 0 or epoch + 1 == stage.epochs
                if due and rank == 0:
                    payload = {
                        "stage": stage.name,
                        "stage_kind": stage.kind,
                        "stage_index": si,
                        "epoch": epoch + 1,
                        "global_epoch": global_epoch,
                        "step": global_step,
                        "generator": _state(nets.generator),
                        "fan": _state(nets.fan),
                        "critic": _state(nets.critic),
                        **runner.state_dict(),
                        "config": cfg.to_dict(),
                        "metrics": metrics,
                        "perceptual_pretrained": perceptual_pretrained,
                        "perceptual_weights": perceptual_weights,
                        "teacher": teacher_ref if kinds and stage.kind != "fan" else None,
                        "teacher_sha256": teacher_sha if stage.kind != "fan" else None,
                    }
                report(metrics, payload)
                last = metrics
            carried.update(runner.state_dict()["optimizers"])
    except TrainingDiverged as err:
        # Where it happened, for the diverged report (train_loop_per_worker) and the logs.
        err.metrics = {**_metrics(stage, si, epoch, global_epoch, global_step, runner, {}, last_val),
                       "diverged": True, "diverged_reason": str(err)}  # fmt: skip
        raise
    return last


def _agreed_batches(loader: Iterable[dict[str, Any]], steps: int) -> Iterator[dict[str, Any]]:
    """Up to ``steps`` batches of ``loader``, every rank stopping at the same step (see
    :func:`superfan.train.collectives.agree_on_batch`): a data error on any rank is raised on all of them,
    and a loader that runs out (a one-pass set of unknown length, world size 1) ends the epoch."""
    batches = iter(loader)
    for _ in range(steps):
        batch, failure, status = None, None, GOT_BATCH
        try:
            batch = next(batches)
        except StopIteration:
            status = EXHAUSTED
        except (BadData, IntegrityError, UserError) as err:
            status, failure = FAILED, err
        status, failure = agree_on_batch(status, failure)
        if failure is not None:
            raise failure
        if status == EXHAUSTED or batch is None:
            return
        yield batch


def _check_bad_fraction(cfg: Config, ledger: SampleLedger, stage: str, epoch: int) -> int:
    """The run-level guard of ``data.max_bad_fraction``, over the distinct samples every rank has read so
    far (each reader also stops itself once it alone shows the data is bad); the same decision on every
    rank, from all-reduced counts. Returns the distinct bad samples of the whole run."""
    bad, total = ledger.counts
    summed = sum_across_ranks({"bad": float(bad), "total": float(total)})
    bad, total = round(summed["bad"]), round(summed["total"])
    limit = cfg.data.max_bad_fraction
    if badsamples.too_bad(bad, total, limit):
        first = ledger.first() or "on another rank"
        raise BadData(badsamples.stop_message(bad, total, limit, first, where=f"stage {stage!r} epoch {epoch}: "))
    return bad


def _state(net: nn.Module | None) -> dict[str, torch.Tensor] | None:
    return None if net is None else {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def _run_validation(
    kind: str, nets: Nets, cfg: Config, rank: int, device: torch.device, loader_factory: LoaderFactory
) -> dict[str, Any]:
    """Rank 0 validates on the whole validation set and broadcasts, so every rank reports the same."""
    out: dict[str, Any] = {}
    if rank == 0:
        loader = loader_factory(cfg, train=False, rank=0, world_size=1, epoch=0)
        out = _validate(kind, nets, cfg, loader, device)
    return broadcast_object(out, rank)


def epoch_line(m: dict[str, Any], epochs: int) -> str:
    """One readable line per epoch for the driver's log (Ray's own report lines print the whole dict)."""
    parts = [f"[{m['stage']}] epoch {m['epoch']}/{epochs}", f"step {m['step']}", f"lr {m['lr']:.2e}"]
    total = m.get("train_loss_total")
    if isinstance(total, float):
        parts.append(f"loss {total:.4g}")
    for key, label in (("val_auc_balanced", "val AUC bal"), ("val_auc", "val AUC"), ("val_nme", "NME"),
                       ("val_psnr", "PSNR"), ("val_ssim", "SSIM")):  # fmt: skip
        if isinstance(m.get(key), float) and math.isfinite(m[key]):
            parts.append(f"{label} {m[key]:.4f}")
    parts.append(f"{m['images_per_s']:.0f} img/s")
    return " | ".join(parts)


def _metrics(
    stage: StageConfig,
    stage_index: int,
    epoch: int,
    global_epoch: int,
    step: int,
    runner: StageRunner | None,
    train: dict[str, float],
    val: dict[str, Any],
    partial: bool = False,
) -> dict[str, Any]:
    m: dict[str, Any] = {
        "stage": stage.name,
        "stage_kind": stage.kind,
        "stage_index": stage_index,
        "epoch": epoch,
        "global_epoch": global_epoch,
        "step": step,
        "lr": runner.lr() if runner is not None else math.nan,
        "partial_epoch": partial,
    }
    m.update({f"train_loss_{k}": float(v) for k, v in train.items()})
    m.update(val)
    return m


def _maybe_crash(debug: dict[str, Any], global_step: int, rank: int, world_size: int) -> None:
    """Test hook: SIGKILL the last rank once at ``debug.crash_at_step`` (a marker file = first attempt only)."""
    at, marker = debug.get("crash_at_step"), debug.get("crash_marker")
    if at is None or marker is None or global_step != int(at) or rank != world_size - 1:
        return
    if Path(marker).exists():
        return
    try:  # let Ray Train register the checkpoint reported just before, so the restart has one to use
        import ray.train

        ray.train.get_all_reported_checkpoints(timeout_s=60)
    except Exception:  # noqa: BLE001 - outside a Train worker (unit tests) there is nothing to wait for
        pass
    Path(marker).write_text(f"crashed at step {global_step}\n")
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer or a lost node does: no cleanup at all


# ---------------------------------------------------------------------------------------------- Ray


def diverged_metrics(err: TrainingDiverged) -> dict[str, Any]:
    """The report of a diverged run: its counters where it stopped, every validation metric NaN (Optuna
    records the trial as failed, promotion never picks it), ``diverged`` set and the reason."""
    out: dict[str, Any] = {k: math.nan for k in DIVERGED_NAN_KEYS}
    for k, v in dict(getattr(err, "metrics", None) or {"diverged": True, "diverged_reason": str(err)}).items():
        out[k] = math.nan if k.startswith("val_") else v
    return out


def data_error_metrics(err: UserError) -> dict[str, Any]:
    """The report of a run stopped by its data (too many bad samples, a shard that fails its sha256):
    every validation metric NaN (never promoted) and ``data_error``, the one line the driver shows."""
    return {**{k: math.nan for k in DIVERGED_NAN_KEYS}, "data_error": str(err), "data_error_kind": type(err).__name__}


class RayReporter:
    """``ray.train.report`` from every rank; rank 0 attaches the checkpoint directory and exports the epoch's
    figures as Ray metrics (every rank reports the same validation)."""

    def __init__(self, rank: int, tags: dict[str, str] | None = None) -> None:
        from superfan.train.raymetrics import EpochMetrics

        self.rank = rank
        tags = tags or {}
        self.gauges = EpochMetrics(tags.get("sweep", ""), tags.get("trial", "")) if rank == 0 else None

    def __call__(self, metrics: dict[str, Any], payload: dict[str, Any] | None) -> None:
        import ray.train

        if self.gauges is not None:
            self.gauges.export(metrics)
        if payload is None or self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="superfan-ckpt-") as d:
            save_checkpoint(d, payload)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(d),
                checkpoint_dir_name=f"checkpoint_{payload['global_epoch']:04d}_{payload['stage']}",
            )


class LocalReporter:
    """Saves each checkpoint to ``<root>/checkpoint_<global_epoch>_<stage>`` and keeps every report."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root)
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[str] = []

    def __call__(self, metrics: dict[str, Any], payload: dict[str, Any] | None) -> None:
        self.reports.append(dict(metrics))
        if payload is not None:
            d = storage.join(self.root, f"checkpoint_{payload['global_epoch']:04d}_{payload['stage']}")
            save_checkpoint(d, payload)
            self.checkpoints.append(d)


def quiet_train_logs() -> None:
    """In a Train worker, unless ``--verbose``: Train's per-report INFO lines off (they print every metric).

    ``LoggingConfig(log_level="WARNING")`` does not reach them: Train V2 logs "Reporting training result
    ..." through ``logging.getLogger(__file__)`` of its execution context (a logger named by a path, outside
    ``ray.train``), and "Checkpoint successfully created" from the worker's own ``ray.train`` loggers.
    """
    from superfan.raycompat import train_report_logger_names
    from superfan.raysession import verbose

    if verbose():
        return
    for name in train_report_logger_names():
        logging.getLogger(name).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: rank/world from the Train context, DDP via ``prepare_model``, resume."""
    import ray.train
    import ray.train.torch

    from superfan.logs import show_warnings

    show_warnings(propagate=False)  # skipped samples and storage retries, once each in the driver's log
    quiet_train_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Ray caps OMP threads at the worker's CPUs; torch's intra-op pool follows the CPUs the worker asked for.
    cpus = int(config["config"]["train"]["cpus_per_worker"])
    torch.set_num_threads(max(1, cpus))

    def wrap(m: nn.Module) -> nn.Module:
        if world <= 1:
            return m
        return ray.train.torch.prepare_model(m, move_to_device=False, parallel_strategy="ddp")

    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = load_checkpoint(d)
    reporter = RayReporter(rank, config.get("metric_tags"))
    try:
        run_training(config, rank=rank, world_size=world, device=device, report=reporter, wrap=wrap, resume=resume)
    except TrainingDiverged as err:
        # Deterministic (same data, same weights): a retry under FailureConfig would diverge again. Every
        # rank reaches this together (the decision comes from all-reduced gradients), reports the
        # divergence and returns, so Train ends the run as finished and Tune records the trial as diverged.
        if rank == 0:
            sys.stdout.write(f"diverged: {err}\n")
            sys.stdout.flush()
        _report_stop(reporter, diverged_metrics(err), rank, config.get("run_url"))
    except (BadData, IntegrityError) as err:
        # The data, not the run: a retry reads the same bytes. Every rank gets here at the same step (the
        # loop agrees on every batch, and the bad fraction is decided from all-reduced counts), reports
        # it and returns: no worker traceback, no retry; the driver prints the one line (data_error).
        _report_stop(reporter, data_error_metrics(err), rank, config.get("run_url"))


def _report_stop(reporter: Reporter, metrics: dict[str, Any], rank: int, url: str | None) -> None:
    """Report a deterministic stop (Tune sees it in the trial's results) and, from rank 0, leave it in the
    run's directory for ``superfan train`` (superfan.train.trainer.STOP_FILE; a stop has no checkpoint, and
    Train's ``Result.metrics`` only carries checkpointed reports)."""
    import json

    from superfan.records import json_safe
    from superfan.train.trainer import STOP_FILE

    reporter(metrics, None)
    if rank == 0 and url:
        storage.write_text(storage.join(url, STOP_FILE), json.dumps(json_safe(metrics, nan_as_none=True)))
