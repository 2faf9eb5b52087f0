"""End to end on real data and a real S3 server: pack ``../shared/data/faces-300w`` into SeaweedFS with the
CLI, read every sample back, check counts, landmarks and pixels against the original files, and leave an
overlay image for a person to look at. Also: unreachable endpoint / missing credentials fail in one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from devtools.s3server import free_port
from shards import verify
from shards.__main__ import main
from shards.crop import crop_matrix
from superfan import storage
from superfan.landmarks import landmark_box, transform_points
from superfan.pose import read_pts

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def read_back(prefix: str) -> tuple[dict, dict[str, dict]]:
    """The manifest and every sample of an S3 pack, read with webdataset's tar iterators over storage."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    manifest = json.loads(storage.read_text(storage.join(prefix, "manifest.json")))
    samples: dict[str, dict] = {}
    for shard in manifest["shards"]:
        url = storage.join(prefix, shard["name"])
        stream = storage.open_read(url)
        n = 0
        for s in group_by_keys(tar_file_expander([{"url": url, "stream": stream}])):
            assert s["__key__"] not in samples
            samples[s["__key__"]] = {"json": json.loads(s["json"]), "jpg": s["hr.jpg"]}
            n += 1
        stream.close()
        assert n == shard["samples"], shard["name"]
    return manifest, samples


def original_pts(root: Path, key: str) -> Path:
    dataset, ident = key.split("/", 1)
    assert dataset == "300w"
    return root / (ident.replace("__", "/") + ".pts")


def overlay(samples: list[tuple[str, dict]], path: Path) -> Path:
    """A 4x4 grid of crops with their 68 landmarks and face box drawn, for a human check."""
    tiles = []
    for _, s in samples[:16]:
        img = Image.open(io.BytesIO(s["jpg"])).convert("RGB")
        draw = ImageDraw.Draw(img)
        for x, y in s["json"]["landmarks"]:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(0, 255, 0))
        draw.rectangle(s["json"]["bbox"], outline=(255, 0, 0))
        draw.text((4, 4), f"yaw {s['json']['yaw']:+.0f}", fill=(255, 255, 0))
        tiles.append(img)
    size = tiles[0].size[0]
    grid = Image.new("RGB", (4 * size, ((len(tiles) + 3) // 4) * size))
    for i, t in enumerate(tiles):
        grid.paste(t, ((i % 4) * size, (i // 4) * size))
    grid.save(path)
    return path


def test_pack_faces_300w_to_s3_and_read_back(
    faces_300w: Path, s3_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"s3://superfan/test-{uuid.uuid4().hex[:8]}/300w-val"
    args = [
        "pack",
        "300w",
        str(faces_300w),
        prefix,
        "--split",
        "val",
        "--limit",
        "300",
        "--shard-size",
        "128",
    ]
    assert main([*args, "--pack-workers", "2", "--no-progress"]) == 0
    assert "packed 300 samples" in capsys.readouterr().out

    manifest, samples = read_back(prefix)
    assert manifest["format"] == "superfan-shards/1" and manifest["split"] == "val"
    assert manifest["samples"] == len(samples) == 300 and manifest["rejected"] == {}
    assert [s["samples"] for s in manifest["shards"]] == [128, 128, 44]
    assert manifest["crop"]["size"] == 256 and manifest["crop"]["context"] == 2.4
    assert verify(prefix)["samples"] == 300
    listed = storage.list_files(prefix.rsplit("/", 1)[0])
    assert sorted(listed) == sorted(["300w-val/manifest.json"] + [f"300w-val/{s['name']}" for s in manifest["shards"]])

    worst = 0.0
    pixel_errors = []
    for i, (key, s) in enumerate(sorted(samples.items())):
        meta = s["json"]
        pts = read_pts(original_pts(faces_300w, key))  # .pts is 1-based; read_pts returns 0-based
        m = crop_matrix(landmark_box(pts), 256, 2.4)
        expected = transform_points(pts, m)
        worst = max(worst, float(np.abs(np.array(meta["landmarks"]) - expected).max()))
        assert meta["pose_source"] == "estimated" and -90 <= meta["yaw"] <= 90
        assert meta["dataset"] == "300w" and meta["visible"] is None
        if i % 30 == 0:  # pixels: the stored crop equals an independent affine warp of the original photo
            src = Image.open(original_pts(faces_300w, key).with_suffix(".jpg")).convert("RGB")
            inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
            # PIL's affine maps output corner coordinates to input corner coordinates.
            a, b, c = inv[0, 0], inv[0, 1], inv[0, 2] + 0.5 - 0.5 * inv[0, 0]
            d, e, f = inv[1, 0], inv[1, 1], inv[1, 2] + 0.5 - 0.5 * inv[1, 1]
            ref = src.transform((256, 256), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR)
            got = np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("RGB"), dtype=float)
            pixel_errors.append(float(np.abs(got - np.asarray(ref, dtype=float)).mean()))
    assert worst < 0.5, f"landmarks moved by {worst:.3f} px in the round trip"
    assert max(pixel_errors) < 8.0, pixel_errors

    out = overlay(sorted(samples.items())[:16], tmp_path / "shards_overlay.png")
    print(f"\noverlay of 16 packed faces with landmarks: {out}")


def test_full_pack_faces_300w_with_two_workers(faces_300w: Path, s3_env: dict[str, str]) -> None:
    prefix = f"s3://superfan/test-{uuid.uuid4().hex[:8]}/300w-train"
    t0 = time.perf_counter()
    args = ["pack", "300w", str(faces_300w), prefix, "--split", "train", "--pack-workers", "2", "--no-progress"]
    assert main(args) == 0
    seconds = time.perf_counter() - t0
    manifest, samples = read_back(prefix)
    assert manifest["samples"] == len(samples) == 2012
    rate = 2012 / seconds
    print(f"\nfull faces-300w pack to S3: 2012 faces in {seconds:.1f} s ({rate:.0f} faces/s, 2 workers)")
    assert seconds < 120


def _cli(env: dict[str, str], dest: str, src: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "shards", "pack", "300w", str(src), dest, "--split", "x", "--no-progress"]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    return env


def test_unreachable_endpoint_is_one_line(faces_300w: Path) -> None:
    env = _clean_env()
    env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    proc = _cli(env, "s3://superfan/nowhere", faces_300w)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "s3://superfan/nowhere" in lines[0] and "cannot reach" in lines[0]


def test_missing_credentials_is_one_line(faces_300w: Path, s3_server: object) -> None:
    env = _clean_env()
    env["AWS_ENDPOINT_URL"] = s3_server.endpoint  # type: ignore[attr-defined]
    proc = _cli(env, "s3://superfan/nocreds", faces_300w)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "s3://superfan/nocreds" in lines[0] and "credentials" in lines[0]
