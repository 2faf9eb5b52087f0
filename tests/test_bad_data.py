"""Bad samples are skipped and counted, never fatal; too many of them stop the run with one line.

A real shard (the packer's synthetic faces) gets some of its ``hr.jpg`` members overwritten in place (tar
headers intact, sizes unchanged), and the real training loop (``run_training``, the code inside every Ray
Train worker) reads it through the real stream.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from superfan.config import Config, load_config
from superfan.errors import BadData
from superfan.train.loop import LocalReporter, run_training


def _pack(tmp: Path, n: int) -> Path:
    from shards.pack import PackOptions, pack

    dest = tmp / "train"
    pack(PackOptions(format="synthetic", src=str(n), dest=str(dest), split="train", workers=1, progress=False))
    return dest


def _damage(shard_dir: Path, which: set[int]) -> list[str]:
    """Overwrite the JPEG bytes of the samples at positions ``which`` (same length: headers stay valid)."""
    shard = next(shard_dir.glob("*.tar"))
    out, keys, i, damaged = io.BytesIO(), [], -1, []
    with tarfile.open(shard) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            key = member.name.split(".", 1)[0]
            if key not in keys:
                keys.append(key)
                i += 1
            if member.name.endswith(".hr.jpg") and i in which:
                data = bytes(len(data))  # zeros: no JPEG marker left
                damaged.append(key)
            dst.addfile(member, io.BytesIO(data))
    shard.write_bytes(out.getvalue())  # the manifest's sha256 no longer matches; the stream does not check it
    return damaged


def _cfg(fraction: float) -> Config:
    return load_config("tiny", [
        "model.fan.features=16", "model.fan.hourglass_depth=2", "data.batch_size=4", "data.samples_per_epoch=40",
        "data.shuffle_buffer=0", "data.num_workers=0", f"data.max_bad_fraction={fraction}",
    ])  # fmt: skip


def _train(cfg: Config, data: Path, out: Path) -> LocalReporter:
    cfg.data.train = [str(data)]
    cfg.stage("teacher").epochs = 1
    rep = LocalReporter(out)
    run_training({"config": cfg.to_dict(), "stages": ["teacher"]}, rank=0, world_size=1, device=torch.device("cpu"),
                 report=rep)  # fmt: skip
    return rep


@pytest.mark.slow
def test_three_damaged_jpegs_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _pack(tmp_path, 48)
    damaged = _damage(data, {5, 17, 29})
    rep = _train(_cfg(0.1), data, tmp_path / "run")
    (report,) = rep.reports
    assert report["skipped_samples"] == 3 and report["epoch_steps"] == 10
    warned = [r.getMessage() for r in caplog.records if "skipped bad sample" in r.getMessage()]
    assert len(warned) == 3 and all(any(k in w for k in damaged) for w in warned)
    assert all(".tar" in w for w in warned)  # the shard is named


@pytest.mark.slow
def test_mostly_damaged_data_stops_with_one_line(tmp_path: Path) -> None:
    data = _pack(tmp_path, 48)
    _damage(data, set(range(30)))
    with pytest.raises(BadData) as err:
        _train(_cfg(0.01), data, tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and "the data is bad, not a sample" in message and ".tar" in message
