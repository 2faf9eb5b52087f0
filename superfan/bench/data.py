"""``superfan bench data``: samples/s of the full training stream, local shards vs S3, 1 and 2 workers.

What is timed is everything a training step waits for: tar reading (local file or streaming S3 GET), JPEG
decode, the augmentation warp, colour jitter, degradation to 16x16 and heatmaps, delivered through the torch
DataLoader. The clock starts at the first batch (worker start-up and S3 connection set-up are reported
separately as ``first batch s``). Throughput is also given per worker process, and as a ratio against the
baseline (local shards, 1 worker) measured in the same process, so figures from different machines compare
by ratio.

Peak memory is read without psutil: ``VmHWM`` (peak resident set) from ``/proc/<pid>/status`` of the main
process and of each DataLoader worker while it runs, falling back to ``resource.getrusage``.

Shards come from ``--data`` (local path, brace pattern or manifest) or are generated into a temporary
directory with the procedural face renderer. For S3, ``AWS_ENDPOINT_URL`` is used when set (shards are
uploaded under ``--s3-prefix``); otherwise, from a checkout, a SeaweedFS server (``devtools.s3server``) is
started in a temporary directory, and without one the S3 rows are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from superfan.cliargs import deprecated, info, output
from superfan.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="shard URLs / manifest (local); default: generate synthetic shards")
    parser.add_argument("--faces", type=int, default=1000, help="synthetic faces to generate (default 1000)")
    parser.add_argument("--stream-samples", dest="samples", type=int, default=4000, metavar="N",
                        help="samples streamed per measurement")  # fmt: skip
    parser.add_argument("--samples", dest="samples", type=int, action=deprecated("--stream-samples"))
    parser.add_argument("--batch", "--batch-size", dest="batch_size", type=int, default=32, help="faces per batch")
    parser.add_argument("--loader-workers", dest="workers", default="1,2",
                        help="DataLoader worker counts to measure (default 1,2)")  # fmt: skip
    parser.add_argument("--workers", dest="workers", action=deprecated("--loader-workers"))
    parser.add_argument("--real-world", action="store_true", help="enable the section 5.3 degradations")
    parser.add_argument("--no-s3", action="store_true", help="measure local shards only")
    parser.add_argument("--s3-prefix", default="s3://superfan/bench-data", help="where shards go on S3")
    parser.add_argument("--config", default="paper", help="config profile or YAML for augment/degrade/fan")


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _child_pids() -> set[int]:
    """This process's children, from ``/proc`` (Linux): the DataLoader keeps its worker processes private."""
    pids: set[int] = set()
    for f in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in f.read_text().split())
    return pids


def _self_peak_mb() -> float:
    kb = _status_kb(os.getpid(), "VmHWM")
    if not kb:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def measure(urls: str, cfg: Any, workers: int, samples: int) -> dict[str, float]:
    """Stream ``samples`` training samples with ``workers`` DataLoader workers; time from the first batch."""
    from superfan.data.stream import make_loader

    cfg = cfg.model_copy(deep=True)
    cfg.data.samples_per_epoch = samples
    loader = make_loader(urls, cfg, train=True, num_workers=workers, seed=0)
    start = time.perf_counter()
    before = _child_pids()
    it = iter(loader.loader)
    worker_pids = sorted(_child_pids() - before)  # the DataLoader's workers (not, e.g., a SeaweedFS server)
    first = None
    n = 0
    peak_worker_kb = 0
    for i, batch in enumerate(it):
        if first is None:
            first = time.perf_counter()
        else:
            n += batch["hr"].shape[0]
        if i % 10 == 0:
            peak_worker_kb = max([peak_worker_kb] + [_status_kb(p, "VmHWM") for p in worker_pids])
        if i + 1 >= len(loader):
            break
    peak_worker_kb = max([peak_worker_kb] + [_status_kb(p, "VmHWM") for p in worker_pids])
    end = time.perf_counter()
    del it
    rate = n / max(end - (first or end), 1e-9)
    return {
        "samples_s": rate,
        "per_worker": rate / max(workers, 1),
        "first_batch_s": (first or end) - start,
        "main_peak_mb": _self_peak_mb(),
        "worker_peak_mb": peak_worker_kb / 1024,
    }


def _upload(local_dir: Path, prefix: str) -> str:
    from superfan import storage

    for f in sorted(local_dir.iterdir()):
        if f.is_file():
            storage.upload_file(f, storage.join(prefix, f.name))
    return storage.join(prefix, "manifest.json")


def _seaweed_server_class() -> type | None:
    """``devtools.s3server.SeaweedServer`` when running from a checkout, else None: ``devtools`` is a
    development folder, never installed, so the library imports it only when it is there. An editable
    install's ``superfan`` command does not have the checkout on ``sys.path``: it is added then."""
    if importlib.util.find_spec("devtools") is None:
        checkout = Path(__file__).resolve().parents[2]
        if not (checkout / "devtools" / "s3server.py").is_file():
            return None
        sys.path.append(str(checkout))
    try:
        from devtools.s3server import SeaweedServer
    except ImportError:  # some other package named devtools
        return None
    return SeaweedServer


def run(args: argparse.Namespace) -> int:
    from superfan.config import load_config

    cfg = load_config(args.config, for_training=False)  # augment/degrade/fan only: no perceptual loss
    cfg.data.batch_size = args.batch_size
    cfg.degrade.real_world = bool(args.real_world)
    counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    tmp = tempfile.TemporaryDirectory(prefix="superfan-bench-data-")
    server = None
    try:
        if args.data:
            local = args.data
            local_dir = Path(args.data if Path(args.data).is_dir() else Path(args.data).parent)
        else:
            local_dir = Path(tmp.name, "shards")
            t0 = time.perf_counter()
            _pack_synthetic(local_dir, args.faces)
            info(f"generated {args.faces} synthetic faces in {time.perf_counter() - t0:.1f} s -> {local_dir}")
            local = str(local_dir / "manifest.json")
        sources = [("local", local)]
        if not args.no_s3:
            from superfan import storage

            seaweed = None if storage.endpoint() else _seaweed_server_class()
            if seaweed is not None:
                bucket = args.s3_prefix[len("s3://") :].split("/")[0]
                server = seaweed(Path(tmp.name, "seaweed"), buckets=(bucket,)).start()
                os.environ.update(server.env())
                info(f"started SeaweedFS at {server.endpoint}")
            if storage.endpoint():
                prefix = storage.join(args.s3_prefix, f"run-{os.getpid()}")
                sources.append(("s3", _upload(local_dir, prefix)))
            else:
                info("S3 rows skipped: no S3 endpoint is configured (AWS_ENDPOINT_URL)", flush=True)
        rows = []
        for name, urls in sources:
            for w in counts:
                r = measure(urls, cfg, w, args.samples)
                rows.append((name, w, r))
                if output().progress:  # the table below has them all
                    print(f"  {name:5s} workers={w}: {r['samples_s']:8.0f} samples/s", flush=True)
        base = next((r["samples_s"] for n, w, r in rows if n == "local" and w == counts[0]), rows[0][2]["samples_s"])
        print()
        print(f"data stream: batch {args.batch_size}, real_world={cfg.degrade.real_world}, {os.cpu_count()} CPUs")
        head = f"{'source':6s} {'workers':>7s} {'samples/s':>10s} {'per worker':>11s} {'vs base':>8s} "
        head += f"{'first batch s':>13s} {'main peak MB':>12s} {'worker peak MB':>14s}"
        print(head)
        for name, w, r in rows:
            print(
                f"{name:6s} {w:7d} {r['samples_s']:10.0f} {r['per_worker']:11.0f} "
                f"{r['samples_s'] / base:7.2f}x "
                f"{r['first_batch_s']:13.2f} {r['main_peak_mb']:12.0f} {r['worker_peak_mb']:14.0f}"
            )
        print(f"baseline: local, {counts[0]} worker(s) = {base:.0f} samples/s")
        return 0
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()


def _pack_synthetic(dest: Path, n: int) -> None:
    """Synthetic shards through the packer's own command line: the library never imports ``shards`` (the
    tool built on it), so the benchmark runs it as a program, exactly as a user would."""
    cmd = [sys.executable, "-m", "shards", "pack", "synthetic", str(n), str(dest), "--split", "train",
           "--shard-size", "250", "--pack-workers", str(os.cpu_count() or 1), "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"packing synthetic faces failed: {last[0]}")
