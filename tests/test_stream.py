"""The WebDataset stream: contract batches from small shards written here (local), and from SeaweedFS."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from superfan import storage
from superfan.config import Config
from superfan.data.stream import make_loader, resolve_shards
from superfan.data.synthetic import render_face
from superfan.landmarks import landmark_box

N_SHARDS, PER_SHARD, NO_LANDMARKS = 3, 8, {"synthetic/0_0000005", "synthetic/0_0000017"}


def _write_shards(dest: Path) -> list[str]:
    """Shards in the contract's format (hr.jpg + json), two faces without landmarks; plus manifest.json."""
    dest.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(N_SHARDS):
        name = f"train-{s:06d}.tar"
        with wds.TarWriter(str(dest / name)) as sink:
            for j in range(PER_SHARD):
                i = s * PER_SHARD + j
                img, pts, pose = render_face(np.random.default_rng([0, i]), size=256)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=95)
                key = f"synthetic/0_{i:07d}"
                meta = {"landmarks": pts.tolist(), "visible": [True] * 68, **pose,
                        "pose_source": "ground-truth",
                        "dataset": "synthetic", "bbox": list(landmark_box(pts))}  # fmt: skip
                if key in NO_LANDMARKS:
                    meta.update(landmarks=None, visible=None, yaw=None, pitch=None, roll=None, pose_source=None)
                sink.write({"__key__": key, "hr.jpg": buf.getvalue(), "json": json.dumps(meta).encode()})
        shards.append({"name": name, "samples": PER_SHARD})
    manifest = {
        "format": "superfan-shards/1",
        "split": "train",
        "shards": shards,
        "samples": N_SHARDS * PER_SHARD,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return [str(dest / s["name"]) for s in shards]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    _write_shards(d)
    return d


def _cfg(**data: object) -> Config:
    cfg = Config()
    cfg.data.batch_size = 4
    cfg.data.shuffle_buffer = 10
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def _keys(loader: object) -> list[str]:
    return [k for b in loader for k in b["key"]]  # type: ignore[attr-defined]


def test_resolve_shards(shard_dir: Path) -> None:
    want = [str(shard_dir / f"train-{i:06d}.tar") for i in range(N_SHARDS)]
    assert resolve_shards(str(shard_dir / "manifest.json")) == want
    assert resolve_shards(str(shard_dir)) == want
    assert resolve_shards(str(shard_dir / "train-{000000..000002}.tar")) == want
    assert resolve_shards(want[:1]) == want[:1]


@pytest.mark.parametrize("workers", [0, 2])
def test_train_batches_follow_the_contract(shard_dir: Path, workers: int) -> None:
    cfg = _cfg(samples_per_epoch=40)
    cfg.degrade.real_world = True
    loader = make_loader(str(shard_dir / "manifest.json"), cfg, train=True, seed=1, num_workers=workers)
    batches = list(loader)
    assert len(batches) == len(loader) == 10
    b = batches[0]
    assert set(b) == {
        "hr",
        "lr",
        "landmarks",
        "heatmaps",
        "has_landmarks",
        "yaw",
        "pose_source",
        "key",
        "url",
        "bad_samples",
    }
    h = cfg.model.fan.heatmap_size
    assert b["hr"].shape == (4, 3, 64, 64) and b["hr"].dtype == torch.float32
    assert b["lr"].shape == (4, 3, 16, 16) and b["lr"].dtype == torch.float32
    assert b["landmarks"].shape == (4, 68, 2) and b["heatmaps"].shape == (4, 68, h, h)
    assert b["has_landmarks"].dtype == torch.bool and b["yaw"].shape == (4,)
    assert isinstance(b["key"], list) and len(b["pose_source"]) == 4
    for b in batches:
        assert b["hr"].min() >= 0 and b["hr"].max() <= 1 and b["lr"].min() >= 0 and b["lr"].max() <= 1
        for i, key in enumerate(b["key"]):
            if key in NO_LANDMARKS:
                assert not b["has_landmarks"][i] and torch.isnan(b["landmarks"][i]).all()
                assert (b["heatmaps"][i] == 0).all() and math.isnan(b["yaw"][i]) and b["pose_source"][i] is None
            else:
                assert b["has_landmarks"][i] and b["pose_source"][i] == "ground-truth"
                assert b["heatmaps"][i].amax(dim=(1, 2)).min() > 0.3
                assert abs(float(b["yaw"][i])) <= 90


def test_validation_is_one_ordered_unaugmented_pass(shard_dir: Path) -> None:
    cfg = _cfg()
    for workers in (0, 2):
        loader = make_loader(str(shard_dir / "manifest.json"), cfg, train=False, num_workers=workers)
        keys = _keys(loader)
        assert sorted(keys) == [f"synthetic/0_{i:07d}" for i in range(N_SHARDS * PER_SHARD)]
    b = next(iter(make_loader(str(shard_dir), cfg, train=False, num_workers=0)))
    assert b["key"] == [f"synthetic/0_{i:07d}" for i in range(4)]
    faces = b["landmarks"][b["has_landmarks"]]
    height = faces[..., 1].amax(1) - faces[..., 1].amin(1)
    assert torch.allclose(height, torch.full_like(height, 50.0), atol=1e-3)  # no scale jitter
    capped = _cfg(val_samples=6)
    assert len(_keys(make_loader(str(shard_dir), capped, train=False, num_workers=0))) == 6


def test_stream_is_deterministic_under_a_seed(shard_dir: Path) -> None:
    cfg = _cfg(samples_per_epoch=24)
    urls = str(shard_dir / "manifest.json")

    def run(seed: int, epoch: int = 0) -> tuple[list[str], torch.Tensor]:
        batches = list(make_loader(urls, cfg, train=True, seed=seed, epoch=epoch, num_workers=2))
        return [k for b in batches for k in b["key"]], torch.cat([b["lr"] for b in batches])

    a, b, c, d = run(3), run(3), run(4), run(3, epoch=1)
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert a[0] != c[0] and a[0] != d[0]


def test_ranks_read_disjoint_samples(shard_dir: Path) -> None:
    urls = str(shard_dir / "manifest.json")
    for train, workers, ws in ((False, 0, 2), (False, 2, 2), (True, 0, 2), (False, 1, 5)):
        cfg = _cfg(samples_per_epoch=16 if train else None)
        per_rank = [
            set(_keys(make_loader(urls, cfg, train=train, rank=r, world_size=ws, num_workers=workers)))
            for r in range(ws)
        ]
        for i in range(ws):
            for j in range(i + 1, ws):
                assert not per_rank[i] & per_rank[j], (train, workers, ws)
        if not train:  # validation: together the ranks see every face exactly once
            assert sum(map(len, per_rank)) == len(set().union(*per_rank)) == N_SHARDS * PER_SHARD


@pytest.mark.slow
def test_stream_from_s3(shard_dir: Path, s3_env: dict[str, str]) -> None:
    prefix = "s3://superfan/test-stream"
    for f in sorted(shard_dir.iterdir()):
        storage.upload_file(f, f"{prefix}/{f.name}")
    assert resolve_shards(f"{prefix}/manifest.json")[0] == f"{prefix}/train-000000.tar"
    cfg = _cfg()
    local = list(make_loader(str(shard_dir), cfg, train=False, num_workers=0))
    for workers in (0, 2):
        remote = list(make_loader(f"{prefix}/manifest.json", cfg, train=False, num_workers=workers))
        assert sorted(k for b in remote for k in b["key"]) == sorted(k for b in local for k in b["key"])
    remote = list(make_loader(f"{prefix}/train-{{000000..000002}}.tar", cfg, train=False, num_workers=0))
    assert torch.equal(torch.cat([b["hr"] for b in remote]), torch.cat([b["hr"] for b in local]))
    train = list(make_loader(f"{prefix}/manifest.json", _cfg(samples_per_epoch=32), train=True, num_workers=2))
    assert len(train) == 8 and all(b["lr"].shape == (4, 3, 16, 16) for b in train)


@pytest.mark.slow
def test_validation_cap_is_pose_stratified(faces_300w: Path, tmp_path: Path) -> None:
    """300-W is mostly frontal: the first N faces would be too. The cap takes equal counts per yaw bin where
    the bins have them and fills the rest from the bins that have more."""
    import numpy as np

    from shards.pack import PackOptions, pack
    from superfan.landmarks import pose_bin

    dest = str(tmp_path / "val")
    pack(PackOptions(format="300w", src=str(faces_300w), dest=dest, split="val", limit=400, workers=1,
                     progress=False))  # fmt: skip
    everything = list(make_loader(dest, _cfg(), train=False, num_workers=0))
    available = np.bincount(pose_bin(torch.cat([b["yaw"] for b in everything]).numpy()), minlength=3)
    assert available[0] > 3 * available[2]  # the skew the cap must undo
    for workers in (0, 2):
        capped = list(make_loader(dest, _cfg(val_samples=30), train=False, num_workers=workers))
        counts = np.bincount(pose_bin(torch.cat([b["yaw"] for b in capped]).numpy()), minlength=3)
        assert counts.sum() == 30
        share = 30 // 3 if workers == 0 else 15 // 3  # per reader: ceil(30 / readers) split over 3 bins
        want = np.minimum(available, share * max(workers, 1))
        assert (counts >= want).all() and counts[2] == min(available[2], share * max(workers, 1)), (counts, available)


def test_a_resampled_stream_draws_every_face_equally_often(tmp_path: Path) -> None:
    """A 40-face pack and a 10-face pack streamed together: shards are drawn uniformly and read whole, so every
    face is equally likely and ~80% of the samples come from the big pack (the share of its faces)."""
    from shards.pack import PackOptions, pack

    for name, n in (("big", 40), ("small", 10)):
        pack(PackOptions(format="synthetic", src=str(n), dest=str(tmp_path / name), split=name, seed=len(name),
                         workers=1, progress=False))  # fmt: skip
    cfg = _cfg(samples_per_epoch=2000, shuffle_buffer=0, num_workers=0, batch_size=50)
    urls = [str(tmp_path / "big"), str(tmp_path / "small")]
    shards = [u for b in make_loader(urls, cfg, train=True, seed=3) for u in b["url"]]
    share = sum("big" in u for u in shards) / len(shards)
    assert len(shards) == 2000 and 0.7 < share < 0.9, share
