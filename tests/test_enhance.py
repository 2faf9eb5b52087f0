"""``Enhancer`` and ``superfan enhance`` on real WIDER FACE group photos, with small random models.

The models are freshly initialised at the ``tiny`` profile's size and saved as a real checkpoint (the
contract's format), so loading, geometry, outputs and error handling are tested end to end without a
trained model. Landmarks of an untrained FAN still come from a heatmap argmax, so they always lie inside
the 64x64 SR frame - which is what lets us check that mapping them back lands inside each face's window.
The box annotations in ``tests/data/widerface_boxes.json`` are ours (the samples come without any).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from superfan.landmarks import crop_matrix, invert_affine, points_to_heatmaps, transform_points

REPO = Path(__file__).resolve().parents[1]
BOXES_JSON = REPO / "tests" / "data" / "widerface_boxes.json"


def _payload(generator: Any, fan: Any, cfg: Any, **over: Any) -> dict[str, Any]:
    payload = {
        "stage": "end2end", "stage_kind": "end2end", "stage_index": 3, "epoch": 0, "global_epoch": 0,
        "step": 0,
        "generator": generator.state_dict() if generator is not None else None,
        "fan": fan.state_dict() if fan is not None else None, "critic": None, "optimizers": {},
        "schedulers": {}, "config": cfg.to_dict(), "metrics": {}, "perceptual_pretrained": False,
        "perceptual_weights": None, "teacher": None,
    }  # fmt: skip
    payload.update(over)
    return payload


@pytest.fixture(scope="session")
def tiny_models() -> tuple[Any, Any, Any]:
    from superfan.config import load_config
    from superfan.models import FAN, Generator

    cfg = load_config("tiny")
    torch.manual_seed(0)
    return Generator.from_config(cfg.model.generator), FAN.from_config(cfg.model.fan), cfg


@pytest.fixture(scope="session")
def checkpoint_dir(tiny_models: tuple[Any, Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from superfan.checkpoint import save_checkpoint

    generator, fan, cfg = tiny_models
    out = tmp_path_factory.mktemp("ckpt") / "end2end"
    save_checkpoint(out, _payload(generator, fan, cfg))
    return out


@pytest.fixture(scope="session")
def enhancer(checkpoint_dir: Path) -> Any:
    from superfan.infer import Enhancer

    return Enhancer.from_checkpoint(checkpoint_dir, device="cpu")


@pytest.fixture(scope="session")
def boxes() -> dict[str, list[list[float]]]:
    return json.loads(BOXES_JSON.read_text())


def _cli(*argv: str) -> int:
    from superfan.cli import main

    return main(["enhance", *argv])


def _window_square(box: list[float]) -> tuple[float, float, float, float]:
    """The photo-pixel square covered by the 64x64 SR frame of a box (its pixel edges, -0.5..63.5)."""
    inv = invert_affine(crop_matrix((box[0], box[1], box[0] + box[2], box[1] + box[3]), 64, 50.0))
    corners = transform_points(np.array([[-0.5, -0.5], [63.5, 63.5]]), inv)
    return corners[0, 0], corners[0, 1], corners[1, 0], corners[1, 1]


# ------------------------------------------------------------------------------------- the CLI


def test_enhance_widerface_photos_with_boxes(
    checkpoint_dir: Path, widerface_dir: Path, boxes: dict[str, list[list[float]]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from PIL import Image

    photos = [str(widerface_dir / name) for name in boxes]
    out = tmp_path / "out"
    rc = _cli(str(checkpoint_dir), *photos, "--boxes", str(BOXES_JSON), "-o", str(out), "--no-progress")
    assert rc == 0, capsys.readouterr().err
    n_faces = sum(len(b) for b in boxes.values())

    faces = sorted((out / "faces").glob("*.png"))
    assert len(faces) == n_faces
    for f in faces:
        with Image.open(f) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    overlays = sorted((out / "overlays").glob("*.png"))
    assert [p.stem for p in overlays] == sorted(Path(p).stem for p in photos)
    for name, p in zip(sorted(boxes), overlays, strict=True):
        with Image.open(p) as im, Image.open(widerface_dir / name) as src:
            assert im.size == src.size, "overlays are drawn on the photo itself"
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width >= 3 * 64 and sheet.height >= 3 * 64

    doc = json.loads((out / "landmarks.json").read_text())
    assert len(doc["faces"]) == n_faces and doc["skipped"] == []
    assert doc["real_world"] is False and doc["fan"].startswith("jointly trained")
    for rec in doc["faces"]:
        name = Path(rec["input"]).name
        assert rec["box"] == [float(v) for v in boxes[name][rec["face"]]]
        lm_sr = np.array(rec["landmarks_sr"])
        lm = np.array(rec["landmarks"])
        assert lm.shape == (68, 2) and lm_sr.shape == (68, 2)
        assert np.all((lm_sr >= -0.5) & (lm_sr <= 63.5)), "SR landmarks are inside the 64x64 face"
        x0, y0, x1, y1 = _window_square(rec["box"])
        assert np.all((lm[:, 0] >= x0 - 1e-6) & (lm[:, 0] <= x1 + 1e-6)), (rec["box"], lm[:, 0].min(), x0)
        assert np.all((lm[:, 1] >= y0 - 1e-6) & (lm[:, 1] <= y1 + 1e-6))
        # And exactly the inverse of the crop window (to JSON's 3 decimals).
        b = rec["box"]
        m = crop_matrix((b[0], b[1], b[0] + b[2], b[1] + b[3]), 64, 50.0)
        np.testing.assert_allclose(lm, transform_points(lm_sr, invert_affine(m)), atol=2e-3)


def test_enhance_bbx_gt_format(checkpoint_dir: Path, widerface_dir: Path, tmp_path: Path) -> None:
    from superfan.commands.enhance import parse_boxes

    name = "12_Group_Group_12_Group_Group_12_10.jpg"
    gt = tmp_path / "wider_face_val_bbx_gt.txt"
    gt.write_text(
        f"12--Group/{name}\n2\n82 105 73 85 2 0 0 0 0 0\n540 108 60 75 1 0 0 0 0 0\n"
        "12--Group/empty.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
    )
    table = parse_boxes(gt)
    assert table == {f"12--Group/{name}": [[82, 105, 73, 85], [540, 108, 60, 75]], "12--Group/empty.jpg": []}
    out = tmp_path / "out"
    assert (
        _cli(
            str(checkpoint_dir),
            str(widerface_dir / name),
            "--boxes",
            str(gt),
            "-o",
            str(out),
            "--no-progress",
        )
        == 0
    )
    assert len(json.loads((out / "landmarks.json").read_text())["faces"]) == 2


def test_enhance_face_crops_any_size(checkpoint_dir: Path, widerface_dir: Path, tmp_path: Path) -> None:
    """Crops cut from a real photo at 12, 23 and 41 px (one non-square) go in as files; landmarks map back."""
    from PIL import Image

    photo = Image.open(widerface_dir / "12_Group_Group_12_Group_Group_12_10.jpg").convert("RGB")
    paths = []
    for i, (size, box) in enumerate([((12, 12), (80, 95, 160, 200)), ((23, 23), (530, 95, 610, 190)),
                                     ((41, 30), (895, 125, 985, 230))]):  # fmt: skip
        p = tmp_path / f"crop{i}.png"
        photo.crop(box).resize(size, Image.BICUBIC).save(p)
        paths.append(p)
    out = tmp_path / "out"
    assert _cli(str(checkpoint_dir), *map(str, paths), "-o", str(out), "--no-progress") == 0
    doc = json.loads((out / "landmarks.json").read_text())
    assert [Path(r["input"]).name for r in doc["faces"]] == [p.name for p in paths]
    for rec, p in zip(doc["faces"], paths, strict=True):
        w, h = Image.open(p).size
        side = max(w, h)
        lm = np.array(rec["landmarks"])
        # Inside the (padded-to-square) crop: pixel edges -0.5 .. side - 0.5 around the centred crop.
        left, top = (side - w) // 2, (side - h) // 2
        assert np.all(lm[:, 0] >= -left - 0.5 - 1e-6) and np.all(lm[:, 0] <= side - left - 0.5 + 1e-6)
        assert np.all(lm[:, 1] >= -top - 0.5 - 1e-6) and np.all(lm[:, 1] <= side - top - 0.5 + 1e-6)
        with Image.open(out / "overlays" / f"{p.stem}.png") as ov:
            assert max(ov.size) >= 256, "tiny crops are upscaled for the overlay"
    assert len(list((out / "faces").glob("*.png"))) == 3


def test_bad_files_are_reported_and_skipped(
    checkpoint_dir: Path, widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = widerface_dir / "12_Group_Group_12_Group_Group_12_2.jpg"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:2000])
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    rc = _cli(
        str(checkpoint_dir),
        str(text),
        str(truncated),
        str(missing),
        str(good),
        "-o",
        str(out),
        "--no-progress",
        "--crops",  # the good file is a whole photo: taken as one face on purpose
    )
    err = capsys.readouterr().err
    assert rc == 0
    lines = [ln for ln in err.splitlines() if "skipped" in ln]
    assert len(lines) == 3, err
    assert any(str(text) in ln and "not an image" in ln for ln in lines)
    assert any(str(truncated) in ln and "corrupt" in ln for ln in lines)
    assert any(str(missing) in ln and "no such file" in ln for ln in lines)
    assert "Traceback" not in err
    doc = json.loads((out / "landmarks.json").read_text())
    assert len(doc["faces"]) == 1 and len(doc["skipped"]) == 3

    # Nothing enhanced at all: non-zero exit, still one line per file.
    rc = _cli(str(checkpoint_dir), str(text), str(missing), "-o", str(tmp_path / "none"), "--no-progress")
    assert rc != 0
    assert "nothing to enhance" in capsys.readouterr().err


def test_a_full_photo_is_not_silently_read_as_one_face(
    checkpoint_dir: Path, widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The six WIDER group photos without --boxes or --detector: each is refused with one line naming both
    options (and --crops); nothing is enhanced. --crops takes them as single faces, as asked."""
    for photo in sorted(widerface_dir.glob("*.jpg")):
        rc = _cli(str(checkpoint_dir), str(photo), "-o", str(tmp_path / photo.stem), "--no-progress")
        lines = capsys.readouterr().err.strip().splitlines()
        err = [line for line in lines if not line.startswith("superfan enhance: note: ")]  # the real-world note
        assert rc == 2 and len(err) == 1, lines
        assert err[0].startswith(f"superfan enhance: error: {photo}: 1024x") and "much larger than" in err[0]
        assert "--boxes FILE" in err[0] and "--detector dlib" in err[0] and "--crops" in err[0]
        assert not list((tmp_path / photo.stem).rglob("*.png"))
    wide = tmp_path / "wide.png"
    from PIL import Image

    Image.new("RGB", (60, 20)).save(wide)
    assert _cli(str(checkpoint_dir), str(wide), "-o", str(tmp_path / "w"), "--no-progress") == 2
    assert "far from square" in capsys.readouterr().err
    assert _cli(str(checkpoint_dir), str(wide), "-o", str(tmp_path / "w"), "--no-progress", "--crops") == 0


def test_bad_boxes_are_reported_and_skipped(
    checkpoint_dir: Path, widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "12_Group_Group_12_Group_Group_12_10.jpg"  # 1024 x 681
    bad = {name: [[-5, 10, 30, 30], [100, 100, 0, 20], [100, 100, 20, -3], [2000, 50, 30, 30],
                  [100, 900, 30, 30], [1, 2, 3], [540, 108, 60, 75]]}  # fmt: skip
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(bad))
    out = tmp_path / "out"
    assert (
        _cli(
            str(checkpoint_dir),
            str(widerface_dir / name),
            "--boxes",
            str(path),
            "-o",
            str(out),
            "--no-progress",
        )
        == 0
    )
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "skipped face" in ln]
    assert len(lines) == 6, err
    assert "negative coordinates" in lines[0]
    assert "zero or negative size" in lines[1] and "zero or negative size" in lines[2]
    assert "outside the 1024x681 image" in lines[3] and "outside the 1024x681 image" in lines[4]
    assert "expected 4 numbers" in lines[5]
    doc = json.loads((out / "landmarks.json").read_text())
    assert [r["face"] for r in doc["faces"]] == [6]


def test_bad_boxes_file_is_one_line_error(
    checkpoint_dir: Path, widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(widerface_dir / "12_Group_Group_12_Group_Group_12_10.jpg")
    broken = tmp_path / "boxes.json"
    broken.write_text("{not json")
    assert _cli(str(checkpoint_dir), photo, "--boxes", str(broken), "-o", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not valid JSON" in err
    assert _cli(str(checkpoint_dir), photo, "--boxes", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o")) == 2
    assert "boxes file not found" in capsys.readouterr().err


def test_missing_champion_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (20, 20)).save(img)
    assert _cli(str(tmp_path / "no-champion"), str(img), "-o", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint.pt or manifest.json" in err


def test_detector_without_dlib_names_the_extra(
    checkpoint_dir: Path, widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        import dlib  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("dlib is installed here")
    photo = str(widerface_dir / "12_Group_Group_12_Group_Group_12_10.jpg")
    assert _cli(str(checkpoint_dir), photo, "--detector", "dlib", "-o", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[detector]'" in err


# ------------------------------------------------------------------------------------- the API


def test_enhance_inputs_and_shapes(enhancer: Any) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(16, 16), (20, 31), (64, 64)]]
    res = enhancer.enhance([*arrays, Image.fromarray(arrays[1])])
    assert res.sr.shape == (4, 64, 64, 3) and res.sr.dtype == np.uint8
    assert res.landmarks_sr.shape == (4, 68, 2) and res.landmarks.shape == (4, 68, 2)
    assert res.lr.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(res.lr[0], arrays[0]), "a 16x16 crop is the LR itself"
    np.testing.assert_allclose(res.landmarks[1], res.landmarks[3]), "PIL and array inputs agree"

    batch = torch.rand(5, 3, 24, 24)
    res_t = enhancer.enhance(batch, float_output=True)
    assert res_t.sr.dtype == np.float32 and res_t.sr.shape == (5, 64, 64, 3)
    assert res_t.sr.min() >= 0.0 and res_t.sr.max() <= 1.0
    # The batched tensor path and the per-crop list path give the same answer.
    res_l = enhancer.enhance(list(batch), float_output=True)
    np.testing.assert_allclose(res_t.landmarks, res_l.landmarks, atol=1e-4)
    np.testing.assert_allclose(res_t.sr, res_l.sr, atol=1e-5)
    # Batching does not change results.
    enhancer.batch_size, old = 2, enhancer.batch_size
    try:
        res_b = enhancer.enhance(batch, float_output=True)
    finally:
        enhancer.batch_size = old
    np.testing.assert_allclose(res_t.sr, res_b.sr, atol=1e-5)


class PeakFAN(torch.nn.Module):
    """A real module whose heatmaps peak at fixed SR-frame points: lets a test know where landmarks are."""

    def __init__(self, points: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("heat", points_to_heatmaps(points[None], 64, 32, 1.0)[0])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.heat.expand(len(x), -1, -1, -1)]


def test_landmark_mapping_round_trip_through_a_known_transform(tiny_models: tuple[Any, Any, Any]) -> None:
    """Place a crop into a photo by a known scale and offset; landmarks must map back by exactly that.

    The FAN here puts its 68 peaks at known SR points, so the test knows the answer: via ``enhance`` on the
    crop and via ``enhance_boxes`` on the photo, the points must equal the inverse of each input's window.
    """
    from superfan.infer import Enhancer

    generator, _, _ = tiny_models
    rng = np.random.default_rng(1)
    known = torch.as_tensor(rng.uniform(8, 56, (68, 2)), dtype=torch.float32)
    enh = Enhancer(generator=generator, fan=PeakFAN(known), device="cpu")

    side, scale, ox, oy = 24, 3, 130.0, 57.0
    crop = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    photo = np.zeros((300, 400, 3), np.uint8)
    photo[int(oy) : int(oy) + side * scale, int(ox) : int(ox) + side * scale] = np.kron(
        crop, np.ones((scale, scale, 1), np.uint8)
    )
    res_crop = enh.enhance([crop])
    np.testing.assert_allclose(res_crop.landmarks_sr[0], known.numpy(), atol=0.02)
    # crop frame: x_sr = (x + 0.5) * 64 / side - 0.5, exactly inverted.
    np.testing.assert_allclose(res_crop.landmarks[0], (res_crop.landmarks_sr[0] + 0.5) * side / 64 - 0.5, atol=1e-9)

    # The same square in photo pixels: crop pixel c covers photo [o + scale*c, o + scale*(c+1)).
    face_h = 50 / 64 * side * scale
    cx, cy = ox + side * scale / 2 - 0.5, oy + side * scale / 2 - 0.5
    box = [cx - face_h / 2, cy - face_h / 2, face_h, face_h]  # centred on the square, 50/64 of it
    res_photo = enh.enhance_boxes(photo, [box])
    m = crop_matrix((box[0], box[1], box[0] + box[2], box[1] + box[3]), 64, 50.0)
    np.testing.assert_allclose(res_photo.matrices[0], m)
    np.testing.assert_allclose(res_photo.landmarks[0], transform_points(res_photo.landmarks_sr[0], invert_affine(m)))
    # Known transform crop -> photo: x_photo = scale * (x_crop + 0.5) - 0.5 + offset.
    expected = scale * (res_crop.landmarks[0] + 0.5) - 0.5 + np.array([ox, oy])
    np.testing.assert_allclose(res_photo.landmarks[0], expected, atol=1e-6)
    # And the photo window was cut at the right place: about the same 16x16 LR as from the crop itself
    # (not identical: 72 -> 16 px of a pixel-replicated copy vs 24 -> 16 px; a shift of one LR pixel would
    # give a mean difference of ~60 on this noise).
    diff = np.abs(res_photo.lr[0].astype(int) - res_crop.lr[0].astype(int))
    assert diff.mean() < 6, diff.mean()


def test_window_sampling_is_exact_on_a_linear_image() -> None:
    """Bilinear sampling reproduces a linear ramp exactly: the window cut is where the matrix says."""
    from superfan.infer import window_to_lr

    h, w = 120, 160
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    photo = torch.from_numpy(np.stack([xs / w, ys / h, (xs + ys) / (w + h)])).float()
    box = (40.3, 30.7, 40.3 + 25.0, 30.7 + 31.0)
    window = crop_matrix(box, 64, 50.0)
    _, crop = window_to_lr(photo, window)
    n = crop.shape[-1]
    from superfan.infer import compose, pixel_resize_matrix

    inv = invert_affine(compose(pixel_resize_matrix(64, n), window))
    uv = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="xy"), -1).reshape(-1, 2).astype(np.float64)
    src = transform_points(uv, inv)
    np.testing.assert_allclose(crop[0].numpy().reshape(-1), src[:, 0] / w, atol=1e-5)
    np.testing.assert_allclose(crop[1].numpy().reshape(-1), src[:, 1] / h, atol=1e-5)
    assert n >= math.ceil(64 / (50 / 31.0)), "sampled at no less than the photo's own resolution"


def test_check_box_messages() -> None:
    from superfan.infer import BoxError, check_box

    assert check_box([1, 2, 3, 4], 10, 10) == (1.0, 2.0, 3.0, 4.0)
    assert check_box([8, 8, 10, 10], 10, 10) == (8.0, 8.0, 10.0, 10.0), "may stick out of the image"
    for box, msg in [([0, 0, 0, 5], "zero or negative size"), ([-1, 0, 5, 5], "negative coordinates"),
                     ([10, 0, 5, 5], "outside the 10x10 image"), ([0, 0, float("nan"), 5], "not finite"),
                     (["a", 0, 5, 5], "expected 4 numbers"), (None, "expected 4 numbers")]:  # fmt: skip
        with pytest.raises(BoxError, match=msg):
            check_box(box, 10, 10)


def test_teacher_fallback_and_fan_only_checkpoint(tiny_models: tuple[Any, Any, Any], tmp_path: Path) -> None:
    from superfan.checkpoint import save_checkpoint
    from superfan.errors import UserError
    from superfan.infer import Enhancer

    generator, fan, cfg = tiny_models
    teacher = tmp_path / "teacher"
    save_checkpoint(teacher, _payload(None, fan, cfg, stage="teacher", stage_kind="fan"))
    with pytest.raises(UserError, match="FAN-only"):
        Enhancer.from_checkpoint(teacher)
    heat = tmp_path / "heatmap"
    save_checkpoint(heat, _payload(generator, None, cfg, stage="heatmap", stage_kind="heatmap", teacher=str(teacher)))
    enh = Enhancer.from_checkpoint(heat)
    assert enh.fan_source.startswith("teacher")
    res = enh.enhance([np.zeros((20, 20, 3), np.uint8)])
    assert res.landmarks.shape == (1, 68, 2)


def test_champion_is_verified_before_use(
    checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A promoted champion loads by its version or its sweep root (``latest``); a tampered one is refused."""
    from PIL import Image

    from superfan.champion import Candidate, promote
    from superfan.errors import IntegrityError
    from superfan.infer import Enhancer

    champ = promote([Candidate(str(checkpoint_dir), {"val_auc_balanced": 0.5}, "trial_0")], str(tmp_path), "lw")
    assert champ is not None
    by_root = Enhancer.from_checkpoint(tmp_path / "champions" / "lw", device="cpu")
    assert by_root.manifest is not None and by_root.manifest["version"] == champ.version
    img = tmp_path / "face.png"
    Image.new("RGB", (24, 24), (120, 90, 70)).save(img)
    assert _cli(champ.url, str(img), "-o", str(tmp_path / "ok"), "--no-progress") == 0

    pt = Path(champ.url) / "checkpoint.pt"
    data = bytearray(pt.read_bytes())
    data[-20] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="checkpoint.pt does not match the manifest"):
        Enhancer.from_checkpoint(champ.url)
    capsys.readouterr()
    assert _cli(champ.url, str(img), "-o", str(tmp_path / "bad"), "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tampered" in err


@pytest.mark.slow
def test_checkpoint_and_champion_from_s3(
    tiny_models: tuple[Any, Any, Any], s3_env: dict[str, str], enhancer: Any, tmp_path: Path
) -> None:
    from superfan.checkpoint import save_checkpoint
    from superfan.infer import Enhancer

    generator, fan, cfg = tiny_models
    url = "s3://superfan/tests/enhance/ckpt"
    save_checkpoint(url, _payload(generator, fan, cfg))
    remote = Enhancer.from_checkpoint(url, device="cpu")
    crops = torch.rand(3, 3, 20, 20)
    np.testing.assert_allclose(remote.enhance(crops).landmarks, enhancer.enhance(crops).landmarks)

    # A remote champion is pulled (verified) into the cache, by its sweep root.
    from superfan.champion import Candidate, promote

    promote([Candidate(url, {"val_auc_balanced": 0.4}, "t1")], "s3://superfan/tests/enhance/sweep", "lw")
    champ = Enhancer.from_checkpoint("s3://superfan/tests/enhance/sweep/champions/lw", cache_dir=tmp_path)
    assert champ.manifest is not None and champ.manifest["trial_id"] == "t1"
    assert any(tmp_path.rglob("manifest.json"))
    np.testing.assert_allclose(champ.enhance(crops).landmarks, enhancer.enhance(crops).landmarks)


def test_bench_enhance_reports_faces_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from superfan.bench import enhance as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--config", "tiny", "--batches", "1,8", "--seconds", "0.2", "--device", "cpu", "--json"])
    assert bench.run(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in result["rows"]] == [1, 8]
    assert all(r["enhance_faces_per_s"] > 0 and r["generator_faces_per_s"] > 0 for r in result["rows"])
    assert result["rows"][0]["enhance_vs_batch1"] == pytest.approx(1.0)
    assert "4.6 s" in result["paper_reference"]


def test_bad_device_is_one_line_error(checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (20, 20)).save(img)
    assert _cli(str(checkpoint_dir), str(img), "--device", "gpu", "-o", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown device 'gpu'" in err


def test_enhance_output_names_are_unique_per_input(
    checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29: ``a.jpg``, ``a.png``, ``a-1.png`` gave 3 faces but 2 files; an input inside ``OUT/faces``
    was overwritten; ``-o`` a file was a traceback."""
    from PIL import Image

    from superfan.commands.enhance import _unique_stems

    rng = np.random.default_rng(0)
    paths = [tmp_path / "in" / n for n in ("a.jpg", "a.png", "a-1.png")]
    for p in paths:
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(p)
    out = tmp_path / "out"
    assert _cli(str(checkpoint_dir), *map(str, paths), "-o", str(out), "--no-progress") == 0
    assert len(json.loads((out / "landmarks.json").read_text())["faces"]) == 3
    assert len(list((out / "faces").glob("*.png"))) == 3 and len(list((out / "overlays").glob("*.png"))) == 3
    names = _unique_stems([Path("x/a.jpg"), Path("y/a.jpg"), Path("A.png"), Path("a-1.png")])
    assert len({n.casefold() for n in names.values()}) == 4, names
    # An input where enhance writes: refused, the input untouched.
    inside = out / "faces" / "a.png"
    before = inside.read_bytes()
    capsys.readouterr()
    assert _cli(str(checkpoint_dir), str(inside), "-o", str(out), "--no-progress") == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "note:" not in line]
    assert len(err) == 1 and "where enhance writes its outputs" in err[0] and inside.read_bytes() == before
    (tmp_path / "afile").write_text("x")
    assert _cli(str(checkpoint_dir), str(paths[0]), "-o", str(tmp_path / "afile"), "--no-progress") == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "note:" not in line]
    assert len(err) == 1 and "exists and is not a directory" in err[0]
