"""``superfan bench loop``: the training step fed by its real data stream, for each stage kind, batch size and
data path, against the compute-only step in the same process.

What ``bench train`` leaves out. For every (stage kind, batch, ``data.augment_on``) it builds the stage's
networks and :class:`~superfan.train.stages.StageRunner` (the step the Ray loop runs), then times

* **loop**: ``next(stream)`` (the shard stream of :func:`superfan.data.make_loader`, with its DataLoader
  workers), the device-side batch for ``augment_on: device`` (:class:`superfan.data.device_augment.
  DeviceAugment`, as :class:`superfan.train.loop.EpochData` runs it) and ``runner.step``;
* **compute**: ``runner.step`` on one of those batches, already made, the same number of times.

It prints images/s of both, their ratio (1.0 = the stream keeps the device busy), the share of the loop's
time spent waiting for data (getting and making the batch; CUDA is synchronised before each clock read, so
device-side augmentation counts as data), and peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the
training process's RSS on CPU (DataLoader workers are apart). Each timed window runs at least ``--steps``
steps and ``--seconds`` seconds after ``--warmup-steps`` untimed ones, so the total time is bounded; with
``--json-out`` the rows are rewritten after each one, so a run cut short keeps what it measured.

Shards come from ``--data`` or are packed here (``--faces`` synthetic faces, the packer's command line).
On CUDA the step runs in bf16 autocast with channels_last when the profile says so (``train.bf16``,
``train.channels_last``), and compiled with ``--compile`` (``train.compile``; the warm-up steps then include
the compilation, so give ``--warmup-steps`` 2 or more).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = ("heatmap", "end2end")
PATHS = ("loader", "device")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="profile", default="tiny", help="config profile (tiny, paper) or YAML path")
    parser.add_argument("--stages", default=",".join(KINDS), help="comma-separated stage kinds")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default: the profile's)")
    parser.add_argument("--augment-on", dest="augment_on", default=",".join(PATHS),
                        help="comma-separated data paths: loader (CPU workers) and/or device")  # fmt: skip
    parser.add_argument("--loader-workers", dest="workers", type=int, default=None,
                        help="DataLoader workers (default: the profile's data.num_workers)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=5, help="least timed steps per window")
    parser.add_argument("--seconds", type=float, default=0.0, help="least timed seconds per window")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first (allocations, autotune)")
    parser.add_argument("--data", default=None, help="shard URLs / manifest (default: pack --faces synthetic faces)")
    parser.add_argument("--faces", type=int, default=256, help="synthetic faces to pack when --data is not given")
    parser.add_argument("--trial-faces", type=int, default=60_000,
                        help="faces per epoch when pricing one trial (about as many as 300W LP holds)")  # fmt: skip
    parser.add_argument("--real-world", action="store_true", help="enable the section 5.3 degradations")
    parser.add_argument("--compile", action="store_true", help="train.compile: torch.compile the networks (CUDA)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--json-out", dest="json", default=None, metavar="PATH",
                        help="also write the rows as JSON here")  # fmt: skip


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(kind: str, cfg: Any, device: Any) -> Any:
    import torch

    from superfan.config import StageConfig
    from superfan.models import FAN
    from superfan.train.stages import StageRunner, build_nets

    torch.manual_seed(0)
    teacher = None if kind == "fan" else FAN.from_config(cfg.model.fan)
    nets = build_nets(cfg, [kind], device, teacher=teacher)
    return StageRunner(StageConfig(name=kind, kind=kind, epochs=1), cfg, nets, total_steps=10**6, device=device)


def _window(step: Any, steps: int, seconds: float, device: Any) -> tuple[int, float, float]:
    """Run ``step()`` (returns its data-wait seconds) until ``steps`` and ``seconds`` are both reached;
    returns (steps, elapsed s, data-wait s)."""
    _sync(device)
    n, wait, t0 = 0, 0.0, time.perf_counter()
    while n < steps or time.perf_counter() - t0 < seconds:
        wait += step()
        n += 1
    _sync(device)
    return n, time.perf_counter() - t0, wait


def measure(kind: str, path: str, batch: int, base: Any, urls: str, args: argparse.Namespace, device: Any
            ) -> dict[str, Any]:  # fmt: skip
    """One row: the loop and the compute-only step of ``kind`` at ``batch`` with data path ``path``."""
    import torch

    from superfan.bench.train import _PeakRSS
    from superfan.data.device_augment import DeviceAugment, is_handover
    from superfan.data.stream import make_loader

    cfg = base.model_copy(deep=True)
    cfg.data.batch_size, cfg.data.augment_on = batch, path
    cfg.data.samples_per_epoch = batch * 100_000  # resampled shards: the stream never runs dry
    if args.workers is not None:
        cfg.data.num_workers = args.workers
    runner = _runner(kind, cfg, device)
    augment = DeviceAugment(cfg, device)
    last: dict[str, Any] = {"stream": iter(make_loader(urls, cfg, train=True, seed=0))}

    def loop_step() -> float:
        t0 = time.perf_counter()
        b = next(last["stream"])
        b = augment(b) if is_handover(b) else b
        _sync(device)
        waited = time.perf_counter() - t0
        last["batch"] = b
        runner.step(b)
        return waited

    def compute_step() -> float:
        runner.step(last["batch"])
        return 0.0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with _PeakRSS() as rss:
        for _ in range(max(1, args.warmup_steps)):
            loop_step()
        n, dt, wait = _window(loop_step, args.steps, args.seconds, device)
        cn, cdt, _ = _window(compute_step, args.steps, args.seconds, device)
    last.clear()  # drops the stream: its DataLoader workers stop
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
    loop_ips, compute_ips = n * batch / dt, cn * batch / cdt
    return {
        "stage": kind, "augment_on": path, "batch": batch, "images_per_s": loop_ips, "step_ms": 1000 * dt / n,
        "data_wait_share": wait / dt, "compute_images_per_s": compute_ips, "ratio_vs_compute": loop_ips / compute_ips,
        "steps": n, "peak_memory_mb": peak / 2**20,
        "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss_peak",
    }  # fmt: skip


def trial_hours(rows: list[dict[str, Any]], cfg: Any, faces: int) -> dict[str, Any] | None:
    """Device-hours of one trial of ``cfg``'s Super-FAN stages over ``faces`` faces per epoch, from the best
    measured loop rate of each stage kind (any batch, any path); the ``fan`` teacher, trained once per sweep,
    is left out. A kind not measured takes the rate of the slowest measured kind (stated in ``assumed``),
    which over-counts ``gan`` when only ``end2end`` was measured. None when nothing was measured."""
    best: dict[str, float] = {}
    for r in rows:
        best[r["stage"]] = max(best.get(r["stage"], 0.0), r["images_per_s"])
    if not best:
        return None
    slowest = min(best, key=best.__getitem__)
    terms, assumed, hours = [], {}, 0.0
    for stage in cfg.stages:
        if stage.kind == "fan":
            continue
        kind = stage.kind if stage.kind in best else slowest
        if kind != stage.kind:
            assumed[stage.kind] = kind
        hours += stage.epochs * faces / best[kind] / 3600
        terms.append(f"{stage.epochs} x {faces} / {best[kind]:.0f}")
    return {"faces": faces, "hours": hours, "arithmetic": f"({' + '.join(terms)}) / 3600 = {hours:.2f} h",
            "assumed": assumed}  # fmt: skip


def _header(cfg: Any, device: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    return {
        "profile": cfg.profile,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "loader_workers": cfg.data.num_workers if args.workers is None else args.workers,
        "bf16": device.type == "cuda" and cfg.train.bf16,
        "channels_last": device.type == "cuda" and cfg.train.channels_last,
        "real_world": cfg.degrade.real_world,
        "compile": device.type == "cuda" and cfg.train.compile,
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from superfan.bench.data import _pack_synthetic
    from superfan.bench.models import _device
    from superfan.config import load_config
    from superfan.errors import UserError

    cfg = load_config(args.profile, for_training=False)  # speed does not depend on the perceptual weights
    cfg.degrade.real_world = cfg.degrade.real_world or args.real_world
    cfg.train.compile = cfg.train.compile or args.compile
    device = _device(args.device or "auto")
    kinds, paths = _csv(args.stages), _csv(args.augment_on)
    bad = [p for p in paths if p not in PATHS]
    if bad:
        raise UserError(f"--augment-on {','.join(bad)}: expected loader and/or device")
    batches = [int(b) for b in _csv(args.batches)] if args.batches else [cfg.data.batch_size]
    header, rows = _header(cfg, device, args), []
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    print(f"{'stage':<9} {'path':<7} {'batch':>6} {'images/s':>10} {'compute':>10} {'ratio':>6} {'data wait':>10} "
          f"{'peak MB':>9}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="superfan-bench-loop-") as tmp:
        urls = args.data
        if urls is None:
            _pack_synthetic(Path(tmp) / "train", args.faces)
            urls = str(Path(tmp) / "train" / "manifest.json")
        for kind, batch, path in itertools.product(kinds, batches, paths):
            r = measure(kind, path, batch, cfg, urls, args, device)
            rows.append(r)
            print(f"{r['stage']:<9} {r['augment_on']:<7} {r['batch']:>6} {r['images_per_s']:>10.1f} "
                  f"{r['compute_images_per_s']:>10.1f} {r['ratio_vs_compute']:>6.2f} "
                  f"{100 * r['data_wait_share']:>9.1f}% {r['peak_memory_mb']:>9.0f}", flush=True)  # fmt: skip
            trial = trial_hours(rows, cfg, args.trial_faces)
            if args.json:
                Path(args.json).write_text(json.dumps({**header, "rows": rows, "trial": trial}, indent=2) + "\n")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"peak memory: {rows[0]['memory_kind'] if rows else '-'}; ratio = loop images/s / compute-only images/s")
    trial = trial_hours(rows, cfg, args.trial_faces)
    if trial is not None:
        kind = "GPU" if device.type == "cuda" else "CPU process"
        extra = "".join(f"; {k} at {v}'s rate" for k, v in trial["assumed"].items())
        print(f"one trial, {args.trial_faces} faces per epoch, best rate per stage: {trial['arithmetic']} "
              f"({kind}-hours{extra})")  # fmt: skip
    return 0
