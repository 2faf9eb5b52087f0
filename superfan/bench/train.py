"""``superfan bench train``: training images/s per worker for each stage kind, with peak memory.

Runs :class:`superfan.train.stages.StageRunner.step` - the step the Ray loop runs - on the current
device without Ray or data loading, so the number is the compute cost of a stage. The teacher is a
freshly initialised FAN of the profile's size (speed does not depend on its weights). Every stage is
also given as a ratio to the ``pixel`` stage measured in the same process, which makes numbers from
different machines comparable. ``end2end`` runs generator, critic, FAN and the ResNet-50 features.

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak process RSS sampled every
5 ms while the stage runs (it includes the Python/torch baseline, so compare stages by difference).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

import torch

from superfan.cliargs import deprecated

KINDS = ("pixel", "fan", "feature", "heatmap", "gan", "end2end")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="profile", default="tiny", help="config profile (tiny, paper) or YAML path")
    parser.add_argument("--profile", dest="profile", action=deprecated("--config"))
    parser.add_argument("--batch", type=int, default=None, help="batch size per worker (default: the profile's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per stage (after 1 warm-up step)")
    parser.add_argument("--stages", default=",".join(KINDS), help="comma-separated stage kinds")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def synthetic_batch(batch: int, cfg: Any) -> dict[str, Any]:
    """A batch with the contract's shapes; faces jittered around a mean 68-point layout."""
    from superfan.landmarks import points_to_heatmaps

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(batch, 3, 64, 64, generator=g)
    lr = torch.nn.functional.interpolate(hr, size=(16, 16), mode="area")
    base = torch.rand(68, 2, generator=g) * 40 + 12
    pts = base + torch.randn(batch, 68, 2, generator=g)
    heat = points_to_heatmaps(pts, 64, cfg.model.fan.heatmap_size, cfg.model.fan.sigma)
    return {
        "hr": hr,
        "lr": lr,
        "landmarks": pts,
        "heatmaps": heat,
        "has_landmarks": torch.ones(batch, dtype=torch.bool),
        "yaw": torch.zeros(batch),
        "pose_source": [None] * batch,
        "key": [f"bench/{i}" for i in range(batch)],
    }


def _rss() -> int:
    """Resident set size in bytes (Linux /proc; psutil is not a dependency)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakRSS:
    """Samples the process RSS in a thread; CPU has no resettable allocator peak like CUDA's."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __enter__(self) -> _PeakRSS:
        self.peak = _rss()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def bench_stage(kind: str, cfg: Any, batch: dict[str, Any], steps: int, device: torch.device) -> dict[str, Any]:
    from superfan.config import StageConfig
    from superfan.models import FAN
    from superfan.train.stages import StageRunner, build_nets

    torch.manual_seed(0)
    teacher = None if kind == "fan" else FAN.from_config(cfg.model.fan)
    nets = build_nets(cfg, [kind], device, teacher=teacher)
    stage = StageConfig(name=kind, kind=kind, epochs=1)
    runner = StageRunner(stage, cfg, nets, total_steps=steps + 1, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with _PeakRSS() as rss:
        runner.step(batch)  # warm-up (allocations, cuDNN autotune)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            runner.step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    n = batch["hr"].shape[0]
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else rss.peak
    return {
        "stage": kind,
        "images_per_s": n * steps / dt,
        "step_ms": 1000 * dt / steps,
        "peak_memory_mb": peak / 2**20,
        "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss_peak",
    }


def run(args: argparse.Namespace) -> int:
    from superfan.config import load_config

    # Speed does not depend on the perceptual weights: random features are fine here, whatever the profile.
    cfg = load_config(args.profile, for_training=False)
    bs = args.batch or cfg.data.batch_size
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch = synthetic_batch(bs, cfg)
    kinds = [k.strip() for k in args.stages.split(",") if k.strip()]
    if "pixel" not in kinds:
        kinds.insert(0, "pixel")
    rows = [bench_stage(k, cfg, batch, args.steps, device) for k in kinds]
    base = next(r for r in rows if r["stage"] == "pixel")["images_per_s"]
    for r in rows:
        r["ratio_vs_pixel"] = r["images_per_s"] / base
    header = {
        "profile": cfg.profile,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "batch": bs,
        "steps": args.steps,
    }
    if args.json:
        print(json.dumps({**header, "stages": rows}, indent=2))
        return 0
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    print(f"{'stage':<9} {'images/s':>10} {'step ms':>9} {'vs pixel':>9} {'peak MB':>9}")
    for r in rows:
        print(
            f"{r['stage']:<9} {r['images_per_s']:>10.1f} {r['step_ms']:>9.1f} "
            f"{r['ratio_vs_pixel']:>9.2f} {r['peak_memory_mb']:>9.0f}"
        )
    print(f"peak memory: {rows[0]['memory_kind']}")
    return 0
