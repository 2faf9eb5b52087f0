"""``run_training``: one run executes every selected stage of a config in order, on any rank, without Ray.

It takes the rank, the world size, a ``wrap`` function (DDP) and a ``report`` callable;
:func:`superfan.train.worker.train_loop_per_worker` plugs Ray Train into it and the unit tests plug a
local directory reporter (:class:`superfan.train.reports.LocalReporter`) into the same code, so what they
check (resume, divergence, which weights move) is what runs on the cluster.

The loop stays short because the state lives where it belongs: :class:`Chain` holds what spans the
stages (networks, teacher, carried optimiser states, the position, resume), each
:class:`~superfan.train.stages.StageRunner` its optimisers, schedule and checkpoint payload,
:class:`EpochData` the data side of an epoch (agreed batches, the bad-sample ledger, validation) and
:class:`CostMeter` the device-hours.

Counters: ``epoch`` is the number of finished epochs within the stage, ``global_epoch`` the number of
finished epochs over the whole chain (what ASHA should use as its time attribute), ``step`` the number
of generator/FAN optimiser steps over the whole chain. A checkpoint is written after its epoch's weights
are checked finite, so a divergence never replaces a good checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from superfan.checkpoint import load_checkpoint, strip_ddp
from superfan.cliargs import output
from superfan.config import Config, StageConfig, from_dict, is_checkpoint_ref
from superfan.data import badsamples
from superfan.data.badsamples import SampleLedger
from superfan.data.manifest import ShardSet, resolve_dataset
from superfan.data.stream import batches_per_epoch
from superfan.errors import BadData, IntegrityError, TrainingDiverged, UserError
from superfan.faults import crash_at_step
from superfan.stagekinds import STAGE_SPECS, default_stages, needs_teacher, require_teacher
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
from superfan.train.reports import Reporter, epoch_line
from superfan.train.stages import Nets, StageRunner, build_nets, params_finite
from superfan.train.teacher import check_same_teacher, load_teacher

LoaderFactory = Callable[..., Iterable[dict[str, Any]]]


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
    URL), ``init_from`` (checkpoint URL to start from), ``debug`` (test-only fault injection,
    :mod:`superfan.faults`). ``resume`` is a checkpoint payload to continue from (Ray's ``get_checkpoint()``
    after a failure); it wins over ``init_from``.
    """
    chain = Chain(config, device, resume)
    data = EpochData(chain.cfg, rank, world_size, device, loader_factory, chain.debug)
    cost = CostMeter.resumed(chain.cfg, device, world_size, resume)
    pos, last = chain.position, {}
    runner: StageRunner | None = None

    def mid_epoch(r: StageRunner, losses: dict[str, float]) -> None:  # train.report_every_steps
        report(chain.metrics(r, losses, data.latest_validation(r.stage.kind, chain.nets), partial=True), None)

    try:
        for runner in chain.runners(data.steps, device, wrap):
            while pos.epoch < runner.stage.epochs:
                losses, steps, elapsed = data.train_epoch(runner, pos, mid_epoch)
                if not params_finite(chain.nets):
                    raise TrainingDiverged(
                        f"stage {runner.stage.name!r} epoch {pos.epoch + 1}: weights became NaN/inf; "
                        "stopped before writing a checkpoint, the last good one is untouched"
                    )
                skipped = data.check_bad_fraction(runner.stage.name, pos.epoch + 1)
                val = data.validate(runner.stage.kind, chain.nets)
                pos.epoch, pos.global_epoch = pos.epoch + 1, pos.global_epoch + 1
                metrics = {**chain.metrics(runner, losses, val), **data.epoch_figures(steps, elapsed, skipped)}
                metrics.update(cost.tick())
                # not print(): Train V2 patches it into its logger, which shows each line twice
                if rank == 0 and output().progress:  # --no-progress / --quiet: no epoch lines
                    sys.stdout.write(epoch_line(metrics, runner.stage.epochs) + "\n")
                    sys.stdout.flush()
                due = pos.epoch % chain.cfg.train.checkpoint_every_epochs == 0 or pos.epoch == runner.stage.epochs
                report(metrics, chain.checkpoint(runner, metrics) if due and rank == 0 else None)
                last = metrics
    except TrainingDiverged as err:
        # Where it happened, for the diverged report (train_loop_per_worker) and the logs.
        err.metrics = {**chain.metrics(runner, {}, data.last_val), "diverged": True, "diverged_reason": str(err)}
        raise
    return last


# ------------------------------------------------------------------------------------------- the chain


@dataclass
class Position:
    """Where a run stands over its chain of stages (the counters every report and checkpoint carry)."""

    stage_index: int = 0
    epoch: int = 0
    global_epoch: int = 0
    step: int = 0


class Chain:
    """What one run holds across its stages: the config and selected stages, the networks, the teacher and
    its fingerprint, the optimiser states carried from stage to stage (``optimizer.carry_state``), and the
    :class:`Position`, set from the checkpoint it resumes or starts from."""

    def __init__(self, config: dict[str, Any], device: torch.device, resume: dict[str, Any] | None) -> None:
        self.cfg = cfg = from_dict(config["config"], source="train loop config")
        self.names: list[str] = list(config.get("stages") or default_stages(cfg))
        self.stages: list[StageConfig] = [cfg.stage(n) for n in self.names]
        self.debug: dict[str, Any] = dict(config.get("debug") or {})
        torch.manual_seed(cfg.train.seed)
        self.teacher_ref: str | None = config.get("teacher") or cfg.train.teacher
        self.teacher_sha: str | None = None
        self.carried: dict[str, Any] = {}
        teacher = None
        if needs_teacher(cfg, self.names):
            require_teacher(cfg, self.names, self.teacher_ref)
            loaded = load_teacher(str(self.teacher_ref), device)
            teacher, self.teacher_sha = loaded.fan, loaded.sha256
            self.carried["fan"] = loaded.optimizer
        self.nets: Nets = build_nets(cfg, [s.kind for s in self.stages], device, teacher=teacher)
        perceptual = self.nets.perceptual
        self.lineage = {
            "perceptual_pretrained": bool(getattr(perceptual, "pretrained", False)) if perceptual else False,
            "perceptual_weights": getattr(perceptual, "weights_source", None) if perceptual else None,
        }
        self.position, self.restore = Position(), None
        start = resume
        if start is None and config.get("init_from"):
            start = load_checkpoint(config["init_from"])
        if start is not None:
            self._start_from(start)
        self.resumed_from_step = self.position.step

    def _start_from(self, start: dict[str, Any]) -> None:
        """Take ``start``'s weights and optimiser states; when its stage is one of ours, continue where it
        stopped (mid-stage: its optimisers and schedule too; at a stage's end: the next stage)."""
        check_same_teacher(start, "the checkpoint to resume", self.teacher_ref, self.teacher_sha)
        _load_weights(self.nets, start, ("generator", "critic", "fan"))
        self.carried.update(start.get("optimizers") or {})
        if start.get("stage") not in self.names:
            return
        si = self.names.index(start["stage"])
        pos = self.position = Position(si, int(start["epoch"]), int(start["global_epoch"]), int(start["step"]))
        if pos.epoch >= self.stages[si].epochs:
            pos.stage_index, pos.epoch = si + 1, 0
        else:
            self.restore = start

    def runners(self, steps_per_epoch: int, device: torch.device, wrap: Callable) -> Iterator[StageRunner]:
        """A :class:`StageRunner` for each stage left, ready for its first epoch to train (its init weights
        loaded; resumed mid-stage, or continuing the carried optimiser states)."""
        pos = self.position
        for si in range(pos.stage_index, len(self.stages)):
            stage = self.stages[si]
            resuming = self.restore is not None and si == pos.stage_index
            if stage.init_from and is_checkpoint_ref(stage.init_from) and not resuming:
                init = load_checkpoint(stage.init_from)
                _load_weights(self.nets, init, STAGE_SPECS[stage.kind].trains)
                self.carried.update(init.get("optimizers") or {})
            runner = StageRunner(stage, self.cfg, self.nets, total_steps=stage.epochs * steps_per_epoch,
                                 device=device, wrap=wrap, debug=self.debug)  # fmt: skip
            if resuming:
                runner.resume(self.restore)  # type: ignore[arg-type]
            elif self.cfg.optimizer.carry_state:
                runner.adopt_optimizer_states(self.carried)
            if si != pos.stage_index or not resuming:
                pos.epoch = 0
            pos.stage_index = si
            yield runner
            self.carried.update(runner.state_dict()["optimizers"])

    def metrics(self, runner: StageRunner | None, losses: dict[str, float], val: dict[str, Any],
                partial: bool = False) -> dict[str, Any]:  # fmt: skip
        """The report's counters, learning rate, mean training losses and validation figures."""
        last = self.stages[min(self.position.stage_index, len(self.stages) - 1)]
        stage = runner.stage if runner is not None else last
        m: dict[str, Any] = {"stage": stage.name, "stage_kind": stage.kind, **asdict(self.position),
                             "lr": runner.lr() if runner is not None else math.nan, "partial_epoch": partial,
                             "resumed_from_step": self.resumed_from_step,
                             "perceptual_pretrained": self.lineage["perceptual_pretrained"]}  # fmt: skip
        m.update({f"train_loss_{k}": float(v) for k, v in losses.items()})
        m.update(val)
        return m

    def checkpoint(self, runner: StageRunner, metrics: dict[str, Any]) -> dict[str, Any]:
        teacher = runner.stage.kind != "fan"
        return runner.checkpoint(
            asdict(self.position),
            metrics,
            {**self.lineage, "teacher": self.teacher_ref if teacher else None,
             "teacher_sha256": self.teacher_sha if teacher else None},
        )  # fmt: skip


def _load_weights(nets: Nets, payload: dict[str, Any], names: Iterable[str]) -> list[str]:
    done = []
    for name in names:
        state, net = payload.get(name), getattr(nets, name)
        if state is not None and net is not None:
            net.load_state_dict(strip_ddp(state))
            done.append(name)
    return done


# -------------------------------------------------------------------------------------------- an epoch


class ShardLoaders:
    """The default loader factory: :func:`superfan.data.make_loader` over each split, its manifests read once
    per run (on first use) and shared by the step count and every epoch's stream."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.sets: dict[bool, ShardSet] = {}

    def shard_set(self, train: bool) -> ShardSet:
        if train not in self.sets:
            self.sets[train] = resolve_dataset(self.cfg.data.train if train else self.cfg.data.val)
        return self.sets[train]

    def __call__(self, cfg: Config, *, train: bool, rank: int, world_size: int, epoch: int) -> Iterable[dict]:
        from superfan.data.stream import make_loader

        found = self.shard_set(train)
        return make_loader(found, cfg, train=train, rank=rank, world_size=world_size, seed=cfg.data.seed, epoch=epoch)


class EpochData:
    """The data side of an epoch on one rank: the same number of batches on every rank, the distinct bad
    samples of the whole run, and validation (rank 0 scores the whole set and broadcasts)."""

    def __init__(self, cfg: Config, rank: int, world_size: int, device: torch.device,
                 loader_factory: LoaderFactory | None, debug: dict[str, Any]) -> None:  # fmt: skip
        self.cfg, self.rank, self.world_size, self.device, self.debug = cfg, rank, world_size, device, debug
        if loader_factory is None:
            shards = ShardLoaders(cfg)
            self.loader_factory: LoaderFactory = shards
            self.steps = batches_per_epoch(cfg, world_size, shards.shard_set(True) if cfg.data.train else None)
        else:  # tests: their own batches; the step count from the config (and the manifests, if any)
            self.loader_factory = loader_factory
            self.steps = batches_per_epoch(cfg, world_size)
        self.ledger = SampleLedger()
        self.last_val: dict[str, Any] = {}
        self._augment: Any = None  # superfan.data.device_augment.DeviceAugment, made on first use

    def train_epoch(
        self, runner: StageRunner, pos: Position, partial: Callable[[StageRunner, dict[str, float]], None]
    ) -> tuple[dict[str, float], int, float]:
        """One epoch of ``runner``'s steps; returns the losses averaged over steps and ranks, the steps taken
        and the wall time. ``train.report_every_steps`` also reports the running means mid-epoch."""
        t0, sums, n = time.perf_counter(), {}, 0
        loader = self.loader_factory(self.cfg, train=True, rank=self.rank, world_size=self.world_size,
                                     epoch=pos.global_epoch)  # fmt: skip
        every = self.cfg.train.report_every_steps
        # on_device inside the agreement: a batch that fails there fails on every rank; and before the ledger,
        # so faces that do not decode there are counted as bad samples.
        for i, batch in enumerate(_agreed_batches(loader, self.steps, self.on_device)):
            self.ledger.add(batch)
            for k, v in runner.step(batch).items():
                sums[k] = sums.get(k, 0.0) + v
            n, pos.step = n + 1, pos.step + 1
            crash_at_step(self.debug, pos.step, self.rank, self.world_size)
            if every and pos.step % every == 0 and i + 1 < self.steps:
                partial(runner, {k: v / n for k, v in sums.items()})
        elapsed = time.perf_counter() - t0
        fewest, most = min_max_across_ranks(n)
        if fewest != most:  # batches_per_epoch makes this impossible; a silent mismatch would hang DDP
            raise RuntimeError(f"ranks took {fewest:.0f} to {most:.0f} steps in one epoch (expected {self.steps})")
        return mean_across_ranks({k: v / max(n, 1) for k, v in sums.items()}), n, elapsed

    def on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch the stream handed over (``data.augment_on: device``) made into a contract batch here, on
        the training device; a finished batch as it is."""
        from superfan.data.device_augment import DeviceAugment, is_handover

        if not is_handover(batch):
            return batch
        if self._augment is None:
            self._augment = DeviceAugment(self.cfg, self.device)
        return self._augment(batch)

    def epoch_figures(self, steps: int, elapsed: float, skipped: int) -> dict[str, Any]:
        return {"images_per_s": steps * self.cfg.data.batch_size / max(elapsed, 1e-9), "epoch_steps": steps,
                "skipped_samples": skipped}  # fmt: skip

    def check_bad_fraction(self, stage: str, epoch: int) -> int:
        """The run-level guard of ``data.max_bad_fraction``, over the distinct samples every rank has read so
        far (each reader also stops itself once it alone shows the data is bad); the same decision on every
        rank, from all-reduced counts. Returns the distinct bad samples of the whole run."""
        bad, total = self.ledger.counts
        summed = sum_across_ranks({"bad": float(bad), "total": float(total)})
        bad, total = round(summed["bad"]), round(summed["total"])
        limit = self.cfg.data.max_bad_fraction
        if badsamples.too_bad(bad, total, limit):
            first = self.ledger.first() or "on another rank"
            where = f"stage {stage!r} epoch {epoch}: "
            raise BadData(badsamples.stop_message(bad, total, limit, first, where=where))
        return bad

    def latest_validation(self, kind: str, nets: Nets) -> dict[str, Any]:
        """The last validation figures, validating now if there are none yet (a mid-epoch report)."""
        return self.last_val if self.last_val or not self.cfg.data.val else self.validate(kind, nets)

    def validate(self, kind: str, nets: Nets) -> dict[str, Any]:
        """Rank 0 validates on the whole validation set and broadcasts, so every rank reports the same."""
        if not self.cfg.data.val:
            return self.last_val
        out: dict[str, Any] = {}
        if self.rank == 0:
            loader = self.loader_factory(self.cfg, train=False, rank=0, world_size=1, epoch=0)
            out = _validate(kind, nets, self.cfg, loader)
        self.last_val = broadcast_object(out, self.rank)
        return self.last_val


def _agreed_batches(
    loader: Iterable[dict[str, Any]], steps: int, prepare: Callable[[dict[str, Any]], dict[str, Any]] = lambda b: b
) -> Iterator[dict[str, Any]]:
    """Up to ``steps`` batches of ``loader``, every rank stopping at the same step (see
    :func:`superfan.train.collectives.agree_on_batch`): a data error on any rank is raised on all of them,
    and a loader that runs out (a one-pass set of unknown length, world size 1) ends the epoch. ``prepare``
    finishes each batch (the device data path) inside the same agreement."""
    batches = iter(loader)
    for _ in range(steps):
        batch, failure, status = None, None, GOT_BATCH
        try:
            batch = prepare(next(batches))
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


def _validate(kind: str, nets: Nets, cfg: Config, loader: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The evaluator's own scoring (``superfan.evaluate``), pose bins from the config: the teacher stage
    scores its FAN on HR faces (FAN-HR), the others the generator's SR faces through the integrated FAN."""
    from superfan.evaluate import fan_validation_metrics, validation_metrics

    if kind == "fan":
        out = fan_validation_metrics(nets.get("fan"), loader, cfg)
    else:
        out = validation_metrics(nets.get("generator"), nets.get("fan"), loader, cfg, teacher=nets.teacher)
    return {k: (float(v) if isinstance(v, int | float | torch.Tensor) else v) for k, v in out.items()}


class CostMeter:
    """Device-hours of the whole run so far (GPU-hours on CUDA, CPU core-hours otherwise), all ranks, wall
    time between reports, validation included; a resumed run continues its checkpoint's count."""

    def __init__(self, per_rank: float, world_size: int, kind: str, done: dict[str, Any]) -> None:
        self.per_rank, self.world_size, self.kind = per_rank, world_size, kind
        self.device_hours = float(done.get("device_hours") or 0.0)
        self.wall_hours = float(done.get("wall_hours") or 0.0)
        self.clock = time.perf_counter()

    @classmethod
    def resumed(cls, cfg: Config, device: torch.device, world_size: int, resume: dict[str, Any] | None) -> CostMeter:
        gpu = device.type == "cuda"
        per_rank = cfg.train.gpus_per_worker if gpu else cfg.train.cpus_per_worker
        return cls(per_rank, world_size, "GPU" if gpu else "CPU", (resume or {}).get("metrics") or {})

    def tick(self) -> dict[str, Any]:
        now = time.perf_counter()
        self.device_hours += (now - self.clock) * self.per_rank * self.world_size / 3600.0
        self.wall_hours += (now - self.clock) / 3600.0
        self.clock = now
        return {"device_hours": self.device_hours, "wall_hours": self.wall_hours, "device_kind": self.kind}
