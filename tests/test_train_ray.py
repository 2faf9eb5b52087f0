"""Integration: a real 2-worker TorchTrainer (Train V2, gloo on CPU) on shards in the SeaweedFS S3 server,
with Ray storage on S3, a worker killed mid-run and restarted from the last checkpoint (max_failures=1),
and a second run resumed from a checkpoint of the first.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import math
import os
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _template() -> list[tuple[float, float]]:
    """A plausible frontal 68-point layout in a unit face box (iBUG order)."""
    # jaw, ear to ear through the chin
    pts = [(0.5 - 0.5 * math.cos(math.pi * i / 16), 0.35 + 0.65 * math.sin(math.pi * i / 16)) for i in range(17)]
    for cx in (0.3, 0.7):  # brows
        pts += [(cx - 0.12 + 0.06 * k, 0.18 - 0.03 * math.sin(math.pi * k / 4)) for k in range(5)]
    pts += [(0.5, 0.3 + 0.07 * k) for k in range(4)]  # nose bridge
    pts += [(0.42 + 0.04 * k, 0.6 + 0.02 * abs(k - 2) * -1) for k in range(5)]  # nose base
    for cx in (0.32, 0.68):  # eyes
        pts += [(cx + 0.08 * math.cos(a), 0.32 + 0.03 * math.sin(a)) for a in [math.pi * k / 3 for k in range(6)]]
    pts += [(0.5 + 0.17 * math.cos(a), 0.78 + 0.07 * math.sin(a)) for a in [math.pi * (1 - k / 6) for k in range(12)]]
    pts += [(0.5 + 0.1 * math.cos(a), 0.78 + 0.03 * math.sin(a)) for a in [math.pi * (1 - k / 4) for k in range(8)]]
    assert len(pts) == 68
    return pts


def _face(rng: random.Random, size: int = 256) -> tuple[bytes, dict[str, Any]]:
    """A drawn face in a loose crop (the contract's hr.jpg + json), landmarks in crop pixels."""
    from PIL import Image, ImageDraw

    side = size / 2.4 * rng.uniform(0.9, 1.1)
    x0 = size / 2 - side / 2 + rng.uniform(-4, 4)
    y0 = size / 2 - side / 2 + rng.uniform(-4, 4)
    pts = [(x0 + u * side + rng.gauss(0, 1), y0 + v * side + rng.gauss(0, 1)) for u, v in _template()]
    img = Image.new("RGB", (size, size), tuple(rng.randrange(40, 120) for _ in range(3)))
    d = ImageDraw.Draw(img)
    d.ellipse([x0 - 5, y0 - 25, x0 + side + 5, y0 + side + 5], fill=(210, 170, 140))
    for a, b in ((36, 41), (42, 47)):
        d.polygon(pts[a : b + 1], fill=(40, 30, 30))
    d.polygon(pts[48:60], fill=(160, 60, 60))
    d.line(pts[27:31], fill=(150, 110, 90), width=3)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    meta = {
        "landmarks": [list(p) for p in pts],
        "visible": [True] * 68,
        "yaw": rng.uniform(-80, 80),
        "pitch": 0.0,
        "roll": 0.0,
        "pose_source": "ground-truth",
        "dataset": "synthetic",
        "bbox": [min(xs), min(ys), max(xs), max(ys)],
    }
    return buf.getvalue(), meta


def _write_shards(tmp: Path, url: str, split: str, n: int, seed: int) -> str:
    """Tar shards per the contract, uploaded with storage.upload_file, manifest.json written last."""
    import hashlib

    from superfan import storage

    rng = random.Random(seed)
    local = tmp / f"{split}-000000.tar"
    with tarfile.open(local, "w") as tar:
        for i in range(n):
            jpg, meta = _face(rng)
            for ext, data in (("hr.jpg", jpg), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"synthetic__{split}{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    shard_url = storage.join(url, local.name)
    storage.upload_file(local, shard_url)
    manifest = {
        "format": "superfan-shards/1",
        "split": split,
        "created": "test",
        "sources": ["synthetic"],
        "crop": {"size": 256, "context": 2.4},
        "shards": [
            {
                "name": local.name,
                "samples": n,
                "sha256": hashlib.sha256(local.read_bytes()).hexdigest(),
                "bytes": local.stat().st_size,
            }
        ],
        "samples": n,
        "rejected": {},
        "rejected_examples": [],
    }
    storage.write_text(storage.join(url, "manifest.json"), json.dumps(manifest))
    return shard_url


@pytest.fixture(scope="module")
def ray_local(s3_server: object) -> Iterator[None]:
    """Ray started in an environment that holds the S3 credentials, as on a real node: workers read them
    from their own environment (they never travel in runtime_env)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    saved = {k: os.environ.get(k) for k in s3_server.env()}  # type: ignore[attr-defined]
    os.environ.update(s3_server.env())  # type: ignore[attr-defined]
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_two_worker_run_on_s3_survives_a_killed_worker_and_resumes(
    ray_local: None, s3_env: dict[str, str], tmp_path: Path
) -> None:
    import torch

    from superfan.checkpoint import load_checkpoint, save_checkpoint
    from superfan.config import StageConfig, load_config
    from superfan.train.driver import build_trainer, checkpoint_url

    FAN = importlib.import_module("superfan.models").FAN

    train_url = _write_shards(tmp_path, "s3://superfan/train-test/train", "train", 24, seed=1)
    val_url = _write_shards(tmp_path, "s3://superfan/train-test/val", "val", 8, seed=2)
    cfg = load_config(
        "tiny",
        [
            "model.generator.layout=[1,1,1]",
            "model.generator.channels=8",
            "model.critic.channels=8",
            "model.fan.features=16",
            "model.fan.hourglass_depth=2",
            "losses.perceptual.layers=[layer1]",
            "data.batch_size=4",
            "data.samples_per_epoch=8",
            "data.num_workers=0",
            "data.shuffle_buffer=8",
            "train.workers=2",
            "train.cpus_per_worker=1",
            "train.max_failures=1",
            "train.keep_checkpoints=3",
        ],
    )
    cfg.data.train, cfg.data.val = [train_url], [val_url]
    cfg.stages = [
        StageConfig(name="heatmap", kind="heatmap", epochs=1),
        StageConfig(name="gan", kind="gan", epochs=1, init_from="heatmap"),
        StageConfig(name="end2end", kind="end2end", epochs=1, init_from="gan", lr_decay="constant"),
    ]
    torch.manual_seed(0)
    teacher = tmp_path / "teacher"
    save_checkpoint(
        teacher,
        {
            "stage": "teacher",
            "stage_kind": "fan",
            "stage_index": 0,
            "epoch": 1,
            "global_epoch": 1,
            "step": 0,
            "generator": None,
            "critic": None,
            "fan": FAN.from_config(cfg.model.fan).state_dict(),
            "optimizers": {},
            "schedulers": {},
            "config": cfg.to_dict(),
            "metrics": {},
        },
    )
    storage_root = "s3://superfan/ray-runs"
    marker = tmp_path / "crashed-once"
    # Rank 1 dies with os._exit at global step 3 (first step of the gan stage, after the heatmap checkpoint).
    trainer = build_trainer(
        cfg,
        name="two-workers",
        storage=storage_root,
        teacher=str(teacher),
        debug={"crash_at_step": 3, "crash_marker": str(marker)},
    )
    result = trainer.fit()
    assert marker.exists(), "the fault injection did not fire"
    m = result.metrics
    assert (m["stage"], m["global_epoch"], m["step"]) == ("end2end", 3, 6)
    assert m["resumed_from_step"] == 2, "the restarted attempt should continue from the heatmap checkpoint"
    if cfg.data.val:
        assert "val_auc_balanced" in m and "val_psnr" in m
    final_url = checkpoint_url(result.checkpoint.path, storage_root)
    assert final_url.startswith("s3://superfan/ray-runs/two-workers/")
    final = load_checkpoint(final_url)
    assert final["stage_kind"] == "end2end" and final["step"] == 6

    # A new run resumed from the first run's gan checkpoint trains only the end2end stage.
    gan_ckpt = next(checkpoint_url(c.path, storage_root) for c, cm in result.best_checkpoints if cm["stage"] == "gan")
    trainer2 = build_trainer(cfg, name="resumed", storage=storage_root, teacher=str(teacher), resume_from=gan_ckpt)
    result2 = trainer2.fit()
    m2 = result2.metrics
    assert (m2["stage"], m2["global_epoch"], m2["step"], m2["resumed_from_step"]) == ("end2end", 3, 6, 4)
