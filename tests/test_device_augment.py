"""``data.augment_on: device`` (superfan.data.device_augment) against today's loader path, on CPU.

Both paths make their batches from the same random draws (same generators, same order), so the test compares
them face by face. Tolerances, and why they are not zero:

* **HR crops**: mean absolute difference < 1.5/255 per batch (measured ~0.7/255) and < 3/255 per face:
  ``grid_sample``'s bilinear vs PIL's ``Image.transform`` (same sample points; edge handling differs), and a
  2x2 box filter vs libjpeg's DCT-scaled (draft) decode where the warp shrinks. Single pixels at the crop's
  border differ by up to ~25/255, so no per-pixel bound is stated.
* **Landmarks**: within 1e-3 px (same matrix, float32 vs float64); heatmap peaks decoded within 0.01 px.
* **Degraded LR** (real-world mode: blur, colour, JPEG): mean absolute difference < 3/255 (measured ~1.3/255:
  libjpeg through torchvision vs PIL's encoder on 16x16 images) and per-channel batch mean / std within
  2/255 of each other.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from superfan.config import Config
from superfan.data.augment import AugmentParams, warp_face
from superfan.data.device_augment import DeviceAugment, handover_face, is_handover, warp_points
from superfan.data.stream import make_loader
from superfan.landmarks import FLIP_PERMUTATION, heatmaps_to_points, transform_points

sys.path.insert(0, str(Path(__file__).parent))
from test_stream import _write_shards  # noqa: E402  (the stream tests' shards: hr.jpg + json, 2 without landmarks)

CONTRACT = {"hr", "lr", "landmarks", "heatmaps", "has_landmarks", "yaw", "pose_source", "key", "url", "bad_samples"}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    _write_shards(d)
    return d


def _cfg(device: bool, real_world: bool) -> Config:
    cfg = Config()
    cfg.data.batch_size, cfg.data.shuffle_buffer, cfg.data.samples_per_epoch = 8, 10, 24
    cfg.data.augment_on = "device" if device else "loader"
    cfg.degrade.real_world = real_world
    return cfg


def _both(shard_dir: Path, real_world: bool) -> list[tuple[dict, dict]]:
    loader = list(make_loader(str(shard_dir), _cfg(False, real_world), train=True, seed=3, num_workers=0))
    cfg = _cfg(True, real_world)
    raw = list(make_loader(str(shard_dir), cfg, train=True, seed=3, num_workers=0))
    assert all(is_handover(r) for r in raw) and not any(is_handover(b) for b in loader)
    aug = DeviceAugment(cfg, "cpu")
    return list(zip(loader, (aug(r) for r in raw), strict=True))


@pytest.mark.parametrize("real_world", [False, True])
def test_device_path_makes_the_loader_paths_batches(shard_dir: Path, real_world: bool) -> None:
    for a, b in _both(shard_dir, real_world):
        assert set(b) == CONTRACT and a["key"] == b["key"]
        for k in ("hr", "lr", "landmarks", "heatmaps"):
            assert b[k].shape == a[k].shape and b[k].dtype == torch.float32, k
        assert torch.equal(a["has_landmarks"], b["has_landmarks"]) and torch.equal(a["yaw"].isnan(), b["yaw"].isnan())
        hr = (a["hr"] - b["hr"]).abs()
        assert float(hr.mean()) < 1.5 / 255 and float(hr.mean(dim=(1, 2, 3)).max()) < 3 / 255
        lm = a["has_landmarks"]
        assert torch.allclose(a["landmarks"][lm], b["landmarks"][lm], atol=1e-3)
        assert torch.isnan(b["landmarks"][~lm]).all() and (b["heatmaps"][~lm] == 0).all()
        peaks = heatmaps_to_points(b["heatmaps"][lm]) - heatmaps_to_points(a["heatmaps"][lm])
        assert float(peaks.abs().max()) < 0.01
        lr = (a["lr"] - b["lr"]).abs()
        assert float(lr.mean()) < (3 if real_world else 1.5) / 255
        for stat in (lambda x: x.mean(dim=(0, 2, 3)), lambda x: x.std(dim=(0, 2, 3))):
            assert float((stat(a["lr"]) - stat(b["lr"])).abs().max()) < 2 / 255


def test_flip_relabels_points_like_the_loader_path() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(40, 200, (3, 68, 2))
    m = np.stack([np.array([[0.4, 0.1, -5.0], [-0.1, 0.4, 3.0]])] * 3)
    m[1, 0] = -m[1, 0]
    flip = torch.tensor([False, True, True])
    got = warp_points(torch.from_numpy(pts), torch.from_numpy(m), flip)
    for i in range(3):
        want = transform_points(pts[i], m[i], flip=bool(flip[i]))
        assert torch.allclose(got[i], torch.from_numpy(want).float(), atol=1e-4)
    assert torch.equal(got[2], warp_points(torch.from_numpy(pts[2:]), torch.from_numpy(m[2:]), flip[2:])[0])
    unflipped = warp_points(torch.from_numpy(pts[1:2]), torch.from_numpy(m[1:2]), torch.tensor([False]))[0]
    assert torch.equal(got[1], unflipped[list(FLIP_PERMUTATION)])


def test_a_flipped_face_is_the_mirror_of_the_unflipped_one() -> None:
    from superfan.data.synthetic import render_face

    img, pts, _ = render_face(np.random.default_rng(5), size=256)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    cfg = Config()
    faces = [handover_face(buf.getvalue(), box, pts, AugmentParams(flip=f, rotation=7.0), cfg.augment) for f in (0, 1)]
    aug = DeviceAugment(cfg, "cpu")
    hr = aug.warp([f["payload"] for f in faces], [f["source_hw"] for f in faces], [f["reduce"] for f in faces],
                  torch.from_numpy(np.stack([f["full"] for f in faces])))  # fmt: skip
    assert float((hr[0] - hr[1].flip(-1)).abs().mean()) < 0.5 / 255
    want, _ = warp_face(buf.getvalue(), box, pts, AugmentParams(flip=True, rotation=7.0), cfg.augment)
    assert float((hr[1] * 255 - torch.from_numpy(want.copy()).permute(2, 0, 1).float()).abs().mean()) < 2.0


def test_device_jpeg_round_trip_is_close_to_pils() -> None:
    from superfan.data.degrade import jpeg

    g = torch.Generator().manual_seed(0)
    lr = torch.nn.functional.interpolate(torch.rand(6, 3, 8, 8, generator=g), size=(16, 16), mode="bilinear")
    q = np.array([0, 30, 30, 60, 90, 0])
    got, want = DeviceAugment(Config(), "cpu").jpeg(lr, q), jpeg(lr, q)
    assert torch.equal(got[[0, 5]], lr[[0, 5]])
    assert float((got - want).abs().mean()) < 3 / 255


def test_a_header_claiming_too_many_pixels_is_a_bad_sample_on_the_device_path_too() -> None:
    from superfan.errors import BadSample

    buf = io.BytesIO()
    Image.new("RGB", (300, 300)).save(buf, format="JPEG")
    with pytest.raises(BadSample, match="pixels"):
        handover_face(buf.getvalue(), (0, 0, 10, 10), None, AugmentParams(), Config().augment, max_pixels=256**2)


def test_non_jpeg_crops_are_handed_over_as_pixels() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 10, 10)).save(buf, format="PNG")
    cfg = Config()
    face = handover_face(buf.getvalue(), (32, 32, 96, 96), None, AugmentParams(), cfg.augment)
    assert face["payload"].shape == (3, 128, 128) and face["reduce"] == 1
    full = torch.from_numpy(face["full"][None])
    hr = DeviceAugment(cfg, "cpu").warp([face["payload"]], [face["source_hw"]], [1], full)
    assert abs(float(hr[0, 0, 32, 32]) - 200 / 255) < 1e-6 and float(hr[0, 1:, 32, 32].max()) < 11 / 255


def test_augment_on_is_validated() -> None:
    from superfan.config import load_config
    from superfan.errors import ConfigError

    assert Config().data.augment_on == "loader"
    assert load_config("tiny", ["data.augment_on=device"]).data.augment_on == "device"
    with pytest.raises(ConfigError, match="augment_on"):
        load_config("tiny", ["data.augment_on=gpu"])


def test_the_training_loop_runs_on_the_device_path(shard_dir: Path, tmp_path: Path) -> None:
    """The loop Ray Train runs (run_training), from shards, with ``data.augment_on: device`` on CPU: the
    teacher stage (HR + heatmaps) and a pixel stage (LR) take their batches from DeviceAugment."""
    from test_train import micro_config

    from superfan.train.loop import run_training
    from superfan.train.reports import LocalReporter

    cfg = micro_config("data.augment_on=device", "degrade.real_world=true")
    cfg.data.train = [str(shard_dir / "manifest.json")]
    for s in cfg.stages:
        s.epochs = 1
    cpu = torch.device("cpu")
    teacher = LocalReporter(str(tmp_path / "teacher"))
    run_training({"config": cfg.to_dict(), "stages": ["teacher"]}, rank=0, world_size=1, device=cpu, report=teacher)
    last = run_training({"config": cfg.to_dict(), "stages": ["pixel"], "teacher": teacher.checkpoints[-1]}, rank=0,
                        world_size=1, device=cpu, report=LocalReporter(str(tmp_path / "sr")))  # fmt: skip
    assert last["stage"] == "pixel" and last["epoch_steps"] == 2 and last["global_epoch"] == 1
    assert np.isfinite(last["train_loss_total"]) and last["images_per_s"] > 0


def test_bench_loop_runs_tiny_on_cpu(shard_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``superfan bench loop`` through the CLI parser: both data paths, micro networks (the pixel stage: the
    mechanics are the same for every kind, and it builds no ResNet-50 or FAN)."""
    import json

    from superfan.cli import build_parser
    from superfan.commands import bench

    yaml = tmp_path / "micro.yaml"
    yaml.write_text(
        "base: tiny\nmodel:\n  generator: {layout: [1, 1, 1], channels: 8}\n  critic: {channels: 8}\n"
        "  fan: {stacks: 1, features: 16, hourglass_depth: 2}\nlosses:\n  perceptual: {layers: [layer1]}\n"
    )
    out = tmp_path / "loop.json"
    argv = ["bench", "loop", "--config", str(yaml), "--stages", "pixel", "--batches", "4", "--augment-on",
            "loader,device", "--data", str(shard_dir / "manifest.json"), "--steps", "2", "--real-world",
            "--device", "cpu", "--json-out", str(out)]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert bench.run(args) == 0
    printed = capsys.readouterr().out
    assert "data wait" in printed and "pixel     device" in printed
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["real_world"] is True and result["trial"]["hours"] > 0
    assert "one trial" in printed
    assert [(r["stage"], r["augment_on"], r["batch"]) for r in result["rows"]] == [
        ("pixel", "loader", 4), ("pixel", "device", 4)]  # fmt: skip
    for r in result["rows"]:
        assert r["images_per_s"] > 0 and r["compute_images_per_s"] > 0 and 0 <= r["data_wait_share"] < 1
        assert r["steps"] >= 2 and r["peak_memory_mb"] > 0 and r["memory_kind"] == "process_rss_peak"


def test_train_compile_is_ignored_on_cpu() -> None:
    """CPU CI keeps eager mode: ``train.compile`` only acts on CUDA."""
    from test_train import micro_config

    from superfan.config import StageConfig
    from superfan.train.stages import StageRunner, build_nets

    cfg = micro_config("train.compile=true")
    nets = build_nets(cfg, ["pixel"], torch.device("cpu"))
    StageRunner(StageConfig(name="p", kind="pixel", epochs=1), cfg, nets, total_steps=1)
    assert not getattr(nets.generator, "_superfan_compiled", False)


def test_a_batch_hands_over_one_flat_byte_tensor_and_gets_each_face_back() -> None:
    from superfan.data.device_augment import HANDOVER_KEY, collate_handover, payloads

    cfg, faces = Config(), []
    for fmt in ("JPEG", "PNG", "JPEG"):
        buf = io.BytesIO()
        Image.new("RGB", (96, 96), (9, 99, 199)).save(buf, format=fmt)
        face = handover_face(buf.getvalue(), (16, 16, 80, 80), None, AugmentParams(), cfg.augment)
        faces.append({**face, "yaw": 0.0, "pose_source": None, "key": fmt, "url": "u", "jitter": (1.0, 1.0, 1.0),
                      "bad_samples": []})  # fmt: skip
    batch = collate_handover(faces)
    assert batch[HANDOVER_KEY].dim() == 1 and list(batch["pixels"]) == [1]
    for got, face in zip(payloads(batch), faces, strict=True):
        assert torch.equal(got, face["payload"])


def test_jpegs_that_do_not_decode_are_bad_samples_not_a_failed_run() -> None:
    """A truncated JPEG is refused on the CPU (as PIL refuses it on the loader path); one that passes the header
    check but does not decode on the device leaves the batch and joins its bad samples."""
    from superfan.data.degrade import sample_degrade
    from superfan.data.device_augment import collate_handover
    from superfan.errors import BadSample

    cfg, faces = Config(), []
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(noise, "JPEG")
    with pytest.raises(BadSample, match="truncated"):
        handover_face(noise.getvalue()[:-2000], (16, 16, 80, 80), None, AugmentParams(), cfg.augment)
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (9, 99, 199)).save(buf, format="JPEG")
    junk = torch.frombuffer(bytearray(b"\xff\xd8\xff\xdb" + b"\x07" * 64 + b"\xff\xd9"), dtype=torch.uint8)
    for key in ("a", "broken", "c"):
        face = handover_face(buf.getvalue(), (16, 16, 80, 80), None, AugmentParams(), cfg.augment)
        if key == "broken":
            face["payload"] = junk
        faces.append({**face, "yaw": 0.0, "pose_source": None, "key": key, "url": "u", "jitter": (1.0, 1.0, 1.0),
                      "bad_samples": []})  # fmt: skip
    raw = collate_handover(faces)
    raw["degrade"] = sample_degrade(np.random.default_rng(0), 3, (16, 16), cfg.degrade, real=True)
    out = DeviceAugment(cfg, "cpu")(raw)
    assert out["key"] == ["a", "c"] and out["hr"].shape[0] == out["lr"].shape[0] == 2
    assert [(u, k) for u, k, _ in out["bad_samples"]] == [("u", "broken")] and "decode" in out["bad_samples"][0][2]


def test_hand_over_batches_cross_dataloader_workers(shard_dir: Path) -> None:
    """With DataLoader worker processes the hand-over batches (flat bytes, draws) arrive whole and in the
    loader path's order."""
    loader = make_loader(str(shard_dir), _cfg(False, True), train=True, seed=4, num_workers=2)
    keys = [b["key"] for b in loader]
    cfg = _cfg(True, True)
    aug = DeviceAugment(cfg, "cpu")
    got = [aug(r) for r in make_loader(str(shard_dir), cfg, train=True, seed=4, num_workers=2)]
    assert [b["key"] for b in got] == keys and all(b["lr"].shape == (8, 3, 16, 16) for b in got)


def test_trial_hours_add_each_stage_at_its_best_measured_rate() -> None:
    from superfan.bench.loop import trial_hours
    from superfan.config import load_config

    cfg = load_config("paper", for_training=False)  # heatmap 60, gan 5, end2end 5 epochs; the teacher apart
    rows = [{"stage": "heatmap", "images_per_s": 4000.0}, {"stage": "heatmap", "images_per_s": 1000.0},
            {"stage": "end2end", "images_per_s": 2500.0}]  # fmt: skip
    trial = trial_hours(rows, cfg, 60_000)
    assert trial is not None and trial["assumed"] == {"gan": "end2end"}
    assert trial["hours"] == pytest.approx((60 * 60_000 / 4000 + 10 * 60_000 / 2500) / 3600)
    assert trial["arithmetic"].startswith("(60 x 60000 / 4000 + 5 x 60000 / 2500 + 5 x 60000 / 2500)")
    assert trial_hours([], cfg, 60_000) is None
