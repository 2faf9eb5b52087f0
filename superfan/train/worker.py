"""The worker side of a Train run: ``train_loop_per_worker``, what Ray Train runs on every rank.

It plugs Ray into :func:`superfan.train.loop.run_training` (rank and world size from the public
``ray.train.get_context()``, DDP through ``prepare_model``, the checkpoint to resume from
``get_checkpoint()``), reports through :class:`RayReporter`, quiets Train's per-report log lines, and turns
a run's own stop (divergence, bad data) into a report instead of a worker traceback and a retry.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from typing import Any

import torch
from torch import nn

from superfan import storage
from superfan.checkpoint import load_checkpoint, save_checkpoint
from superfan.errors import BadData, IntegrityError, TrainingDiverged
from superfan.train.loop import run_training
from superfan.train.reports import STOP_FILE, Reporter, checkpoint_dir_name, data_error_metrics, diverged_metrics
from superfan.train.session import verbose


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
                checkpoint_dir_name=checkpoint_dir_name(payload),
            )


def quiet_train_logs() -> None:
    """In a Train worker, unless ``--verbose``: Train's per-report INFO lines off (they print every metric).

    ``LoggingConfig(log_level="WARNING")`` does not reach them: Train V2 logs "Reporting training result
    ..." through ``logging.getLogger(__file__)`` of its execution context (a logger named by a path, outside
    ``ray.train``), and "Checkpoint successfully created" from the worker's own ``ray.train`` loggers.
    """
    from superfan.raycompat import train_report_logger_names

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
    torch.set_num_threads(max(1, int(config["config"]["train"]["cpus_per_worker"])))

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
    run's directory for ``superfan train`` (:data:`~superfan.train.reports.STOP_FILE`; a stop has no
    checkpoint, and Train's ``Result.metrics`` only carries checkpointed reports)."""
    from superfan.records import json_safe

    reporter(metrics, None)
    if rank == 0 and url:
        storage.write_text(storage.join(url, STOP_FILE), json.dumps(json_safe(metrics, nan_as_none=True)))
