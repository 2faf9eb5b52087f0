"""Fast tests of the packer: every reader on small files written here in the real formats, every bad-input
case, crop geometry, determinism, refusal to overwrite, checksum verification, and the pose estimator."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards import verify
from shards.__main__ import main
from shards.crop import crop_face, crop_matrix
from shards.pack import PackOptions, pack
from shards.readers import REASONS, RawRecord, Rejection, box_from_five, make_reader, parse_pts
from superfan import pose
from superfan.errors import IntegrityError, UserError
from superfan.landmarks import landmark_box, transform_points

# ------------------------------------------------------------------------------------------ writers


def face_points(yaw: float = 10.0, center: tuple[float, float] = (80, 84), scale: float = 0.7) -> np.ndarray:
    """68 plausible 0-based points: the pose template projected at a known yaw."""
    return pose.project(pitch=5.0, yaw=yaw, roll=3.0, scale=scale, center=center)


def write_image(path: Path, size: tuple[int, int] = (160, 160), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(40, 220, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def write_pts(path: Path, pts0: np.ndarray, header: bool = True) -> Path:
    """An iBUG ``.pts`` file (1-based), with or without the version/n_points/{ } header."""
    rows = [f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts0]
    lines = ["version: 1", f"n_points:  {len(rows)}", "{", *rows, "}"] if header else rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_t7(path: Path, array: np.ndarray) -> Path:
    """A Torch7 binary serialisation of a DoubleTensor (what ``torch.save`` in Lua writes).

    Object = type (int32; 4 = torch object), reference index (int32), version string "V 1", class name,
    then the tensor: ndim (int32), sizes and strides (int64 each), storage offset (int64, 1-based), and
    the storage as another torch object: size (int64) followed by the raw doubles. Strings are an int32
    length followed by the bytes.
    """
    arr = np.ascontiguousarray(array, dtype=np.float64)

    def i32(v: int) -> bytes:
        return struct.pack("=i", v)

    def i64(v: int) -> bytes:
        return struct.pack("=q", v)

    def s(b: bytes) -> bytes:
        return i32(len(b)) + b

    strides = [st // arr.itemsize for st in arr.strides]
    out = i32(4) + i32(1) + s(b"V 1") + s(b"torch.DoubleTensor") + i32(arr.ndim)
    out += b"".join(i64(d) for d in arr.shape) + b"".join(i64(d) for d in strides) + i64(1)
    out += i32(4) + i32(2) + s(b"V 1") + s(b"torch.DoubleStorage") + i64(arr.size) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


def records(fmt: str, src: Path | str, **options: object) -> tuple[list[RawRecord], list[Rejection]]:
    reader = make_reader(fmt, str(src), **options)  # type: ignore[arg-type]
    got = list(reader.records())
    return [r for r in got if isinstance(r, RawRecord)], [r for r in got if isinstance(r, Rejection)]


def pack_local(fmt: str, src: Path | str, dest: Path, **kw: object) -> dict:
    opts = PackOptions(format=fmt, src=str(src), dest=str(dest), split="train", workers=1, progress=False)
    for k, v in kw.items():
        setattr(opts, k, v)
    return pack(opts).manifest


def read_samples(dest: Path) -> dict[str, dict]:
    """Every sample of a local pack via webdataset, keyed by ``__key__``."""
    import webdataset as wds

    manifest = json.loads((dest / "manifest.json").read_text())
    urls = [str(dest / s["name"]) for s in manifest["shards"]]
    out = {}
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        out[s["__key__"]] = {"json": json.loads(s["json"]), "img": Image.open(io.BytesIO(s["hr.jpg"]))}
    return out


# ------------------------------------------------------------------------------------------ 300w


def test_pts_both_styles_read_the_same_points(tmp_path: Path) -> None:
    pts = face_points()
    write_image(tmp_path / "a" / "one.jpg")
    write_image(tmp_path / "a" / "two.png", seed=1)
    write_pts(tmp_path / "a" / "one.pts", pts, header=True)
    write_pts(tmp_path / "a" / "two.pts", pts, header=False)
    recs, rej = records("300w", tmp_path)
    assert not rej and len(recs) == 2
    for r in recs:
        np.testing.assert_allclose(r.landmarks, pts, atol=1e-3)  # 1-based on disk -> 0-based here
        assert r.key in {"300w/a__one", "300w/a__two"}
        assert r.yaw is None  # estimated in the worker, never from a yaw_estimated_*.csv


def test_parse_pts_rejects_wrong_counts() -> None:
    pts = "\n".join(f"{i} {i}" for i in range(67))
    with pytest.raises(Exception, match="wrong point count"):
        parse_pts(pts)
    declared = "version: 1\nn_points: 67\n{\n" + "\n".join(f"{i} {i}" for i in range(68)) + "\n}\n"
    with pytest.raises(Exception, match="wrong point count"):
        parse_pts(declared)


def _bad_300w_tree(root: Path) -> dict[str, int]:
    """Two good faces and one of every bad-input case; returns the expected rejection counts."""
    pts = face_points()
    for i in range(2):
        write_image(root / f"good{i}.jpg", seed=i)
        write_pts(root / f"good{i}.pts", pts)
    write_pts(root / "noimage.pts", pts)  # annotation without image
    write_image(root / "count.jpg")
    write_pts(root / "count.pts", pts[:60])  # wrong point count
    write_image(root / "nan.jpg")
    (root / "nan.pts").write_text(
        "version: 1\nn_points: 68\n{\n" + "\n".join(["nan nan"] + ["10 10"] * 67) + "\n}\n"
    )  # NaN coordinates
    good = io.BytesIO()
    Image.fromarray(np.full((160, 160, 3), 128, np.uint8)).save(good, format="JPEG")
    (root / "trunc.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])  # truncated image
    write_pts(root / "trunc.pts", pts)
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # undecodable image
    write_pts(root / "garbage.pts", pts)
    write_image(root / "tiny.jpg")
    write_pts(root / "tiny.pts", face_points(scale=0.08))  # ~10 px face < --min-face 16
    write_image(root / "outside.jpg")
    write_pts(root / "outside.pts", face_points(center=(400, 400)))  # face box off the photo
    (root / "yaw_estimated_x.csv").write_text("pts_file,yaw_deg_estimated\ngood0.pts,99\n")  # ignored
    return {
        REASONS["no_image"]: 1,
        REASONS["point_count"]: 1,
        REASONS["nan"]: 1,
        REASONS["bad_image"]: 2,
        REASONS["small"]: 1,
        REASONS["outside"]: 1,
    }


def test_bad_input_is_skipped_and_counted(tmp_path: Path) -> None:
    expected = _bad_300w_tree(tmp_path / "src")
    manifest = pack_local("300w", tmp_path / "src", tmp_path / "out")
    assert manifest["samples"] == 2
    assert manifest["rejected"] == expected
    assert {e["reason"] for e in manifest["rejected_examples"]} == set(expected)
    samples = read_samples(tmp_path / "out")
    assert set(samples) == {"300w/good0", "300w/good1"}
    meta = samples["300w/good0"]["json"]
    assert meta["pose_source"] == "estimated" and abs(meta["yaw"] - 10.0) < 2.0  # not the CSV's 99
    assert set(meta) == {
        "landmarks",
        "landmark_convention",
        "visible",
        "yaw",
        "pitch",
        "roll",
        "pose_source",
        "dataset",
        "bbox",
    }


def test_cli_summary_and_nothing_packed_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bad_300w_tree(tmp_path / "src")
    args = ["pack", "300w", str(tmp_path / "src"), str(tmp_path / "out"), "--split", "val", "--pack-workers", "2"]
    assert main([*args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "packed 2 samples" in out and "face smaller than min-face: 1" in out
    assert (tmp_path / "out" / "val-000000.tar").exists()
    # Everything rejected: non-zero exit with one line, and no manifest.
    for p in (tmp_path / "src").glob("good*.jpg"):
        p.unlink()
    assert main(["pack", "300w", str(tmp_path / "src"), str(tmp_path / "out2"), "--split", "x", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing packed" in err
    assert not (tmp_path / "out2" / "manifest.json").exists()


# ------------------------------------------------------------------------------------------ mat


def test_mat_reader_300wlp_and_aflw2000_layouts(tmp_path: Path) -> None:
    import scipy.io

    pts = face_points(yaw=-30)
    pose_para = np.array([[0.1, -0.5, 0.05, 0, 0, 0, 0.001]])
    write_image(tmp_path / "AFW_1_0.jpg")
    scipy.io.savemat(tmp_path / "AFW_1_0.mat", {"pt2d": (pts + 1).T, "Pose_Para": pose_para})  # 300W-LP 2x68
    write_image(tmp_path / "image00002.jpg")
    pt3d = np.vstack([(pts + 1).T, np.zeros((1, 68))])
    scipy.io.savemat(tmp_path / "image00002.mat", {"pt3d_68": pt3d, "pt2d": np.zeros((2, 21)), "Pose_Para": pose_para})
    write_image(tmp_path / "rows.jpg")
    scipy.io.savemat(tmp_path / "rows.mat", {"pt2d": pts + 1})  # 68x2, no pose -> estimated later
    write_image(tmp_path / "aflw21.jpg")
    scipy.io.savemat(tmp_path / "aflw21.mat", {"pt2d": np.zeros((2, 21))})  # only AFLW's 21 points
    (tmp_path / "broken.jpg").write_bytes(b"x")
    (tmp_path / "broken.mat").write_bytes(b"MATLAB 5.0 truncated")
    scipy.io.savemat(tmp_path / "AFW_1_0_pts.mat", {"pts_2d": pts})  # 300W-LP landmarks/ copies: not listed
    recs, rej = records("mat", tmp_path)
    by_id = {r.id: r for r in recs}
    assert set(by_id) == {"AFW_1_0", "image00002", "rows"}
    for r in recs:
        np.testing.assert_allclose(r.landmarks, pts, atol=1e-6)
    assert by_id["AFW_1_0"].pose_source == "ground-truth"
    assert by_id["AFW_1_0"].yaw == pytest.approx(np.degrees(-0.5))
    assert by_id["image00002"].pitch == pytest.approx(np.degrees(0.1))
    assert by_id["rows"].yaw is None
    assert sorted(r.reason for r in rej) == sorted([REASONS["point_count"], REASONS["bad_annotation"]])
    manifest = pack_local("mat", tmp_path, tmp_path / "out")
    assert manifest["samples"] == 3 and manifest["sources"][0]["pose_sources"] == {
        "ground-truth": 2,
        "estimated": 1,
    }


# ------------------------------------------------------------------------------------------ ls3dw


def test_t7_reader_with_and_without_pose_file(tmp_path: Path) -> None:
    src = tmp_path / "LS3D-W" / "300W-Testset-3D"
    pts = face_points(yaw=40)
    write_image(src / "indoor_001.png")
    write_t7(src / "indoor_001.t7", pts + 1)
    write_image(src / "indoor_002.jpg")
    write_t7(src / "indoor_002.t7", np.ascontiguousarray((pts + 1).T))  # 2x68 also accepted
    write_image(src / "short.jpg")
    write_t7(src / "short.t7", np.zeros((5, 2)))
    write_image(src / "trunc.jpg")
    (src / "trunc.t7").write_bytes(write_t7(tmp_path / "x.t7", pts).read_bytes()[:100])
    recs, rej = records("ls3dw", tmp_path / "LS3D-W")
    assert len(recs) == 2 and all(r.yaw is None for r in recs)
    for r in recs:
        np.testing.assert_allclose(r.landmarks, pts, atol=1e-9)
    assert sorted(r.reason for r in rej) == sorted([REASONS["point_count"], REASONS["bad_annotation"]])
    pose_csv = tmp_path / "poses.csv"
    pose_csv.write_text("id,yaw,pitch,roll\nindoor_001,41.5,2,3\n")
    recs, _ = records("ls3dw", tmp_path / "LS3D-W", pose_file=str(pose_csv))
    by_id = {r.id: r for r in recs}
    assert by_id["300W-Testset-3D/indoor_001"].yaw == 41.5
    assert by_id["300W-Testset-3D/indoor_001"].pose_source == "ground-truth"
    assert by_id["300W-Testset-3D/indoor_002"].yaw is None
    manifest = pack_local("ls3dw", tmp_path / "LS3D-W", tmp_path / "out", pose_file=str(pose_csv))
    assert manifest["samples"] == 2
    samples = read_samples(tmp_path / "out")
    est = samples["ls3dw/300W-Testset-3D__indoor_002"]["json"]
    assert est["pose_source"] == "estimated" and abs(est["yaw"] - 40) < 2.0


# ------------------------------------------------------------------------------------------ celeba


def _celeba(root: Path, n: int = 4) -> list[np.ndarray]:
    five = []
    lines_lm = [str(n + 1), "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x ..."]
    lines_bb = [str(n + 1), "image_id x_1 y_1 width height"]
    for i in range(n):
        p = np.array([[69, 111], [108, 111], [88, 135], [72, 152], [105, 152]], float) + i
        five.append(p)
        write_image(root / "img_align_celeba" / f"{i + 1:06d}.jpg", size=(178, 218), seed=i)
        lines_lm.append(f"{i + 1:06d}.jpg " + " ".join(str(int(v)) for v in p.ravel()))
        lines_bb.append(f"{i + 1:06d}.jpg 95 71 226 313")  # refers to the in-the-wild image: not used
    lines_lm.append(f"{n + 1:06d}.jpg 69 111 108 111 88 135 72 152 105 152")  # listed, image missing
    lines_bb.append(f"{n + 1:06d}.jpg 95 71 226 313")
    (root / "list_landmarks_align_celeba.txt").write_text("\n".join(lines_lm) + "\n")
    (root / "list_bbox_celeba.txt").write_text("\n".join(lines_bb) + "\n")
    return five


def test_celeba_boxes_from_aligned_points_and_limit(tmp_path: Path) -> None:
    five = _celeba(tmp_path)
    recs, rej = records("celeba", tmp_path)
    assert len(recs) == 4 and [r.reason for r in rej] == [REASONS["no_image"]]
    r0 = next(r for r in recs if r.id == "000001")
    assert r0.landmarks is None and r0.box == pytest.approx(box_from_five(five[0]))
    x0, y0, x1, y1 = r0.box
    assert 0 <= x0 < 69 and x1 > 108 and y1 > 152 and x1 < 178  # inside the aligned image, unlike the bbox
    manifest = pack_local("celeba", tmp_path, tmp_path / "out", limit=2)
    assert manifest["samples"] + sum(manifest["rejected"].values()) == 2
    s = next(iter(read_samples(tmp_path / "out").values()))["json"]
    assert s["landmarks"] is None and s["yaw"] is None and s["pose_source"] is None
    bw = s["bbox"][2] - s["bbox"][0]
    assert bw == pytest.approx(256 / 2.4, rel=0.01)  # the (square-ish) box fills 1/2.4 of the crop


def test_celeba_without_aligned_landmarks_uses_the_alignment_template(tmp_path: Path) -> None:
    _celeba(tmp_path, n=2)
    (tmp_path / "list_landmarks_align_celeba.txt").unlink()
    recs, rej = records("celeba", tmp_path)
    assert len(recs) == 2 and not rej


# ------------------------------------------------------------------------------------------ widerface


def test_widerface_boxes_min_size_and_invalid(tmp_path: Path) -> None:
    root = tmp_path / "wider"
    write_image(root / "WIDER_val" / "images" / "0--Parade" / "a.jpg", size=(320, 240))
    write_image(root / "WIDER_val" / "images" / "1--Handshaking" / "b.jpg", size=(320, 240))
    gt = [
        "0--Parade/a.jpg", "3",
        "10 20 60 70 0 0 0 0 0 0 ",  # good
        "100 100 8 9 2 0 0 0 0 0 ",  # tiny: < 16 px
        "200 30 50 50 0 0 0 1 0 0 ",  # invalid flag
        "1--Handshaking/b.jpg", "0", "0 0 0 0 0 0 0 0 0 0 ",  # no faces
        "9--Missing/c.jpg", "1", "10 10 50 50 0 0 0 0 0 0 ",  # image not on disk
    ]  # fmt: skip
    (root / "wider_face_split").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text("\n".join(gt) + "\n")
    recs, rej = records("widerface", root, split="val")
    assert len(recs) == 2 and recs[0].box == (10, 20, 69, 89)
    assert sorted(r.reason for r in rej) == sorted([REASONS["invalid"], REASONS["no_image"]])
    manifest = pack_local("widerface", root, tmp_path / "out")
    assert manifest["samples"] == 1
    assert manifest["rejected"] == {REASONS["invalid"]: 1, REASONS["no_image"]: 1, REASONS["small"]: 1}
    (key, s), = read_samples(tmp_path / "out").items()  # fmt: skip
    assert key == "widerface/0--Parade__a_face000" and s["json"]["landmarks"] is None
    assert s["img"].size == (256, 256)


# ------------------------------------------------------------------------------------------ crop


def test_crop_maps_points_onto_the_same_pixels() -> None:
    """A bright dot at a landmark ends up where the transformed landmark says, within a pixel."""
    img = np.zeros((300, 400, 3), np.uint8)
    pts = face_points(center=(150, 140), scale=0.9)
    x, y = np.round(pts[30]).astype(int)  # nose tip
    img[y - 1 : y + 2, x - 1 : x + 2] = 255
    crop, cpts, cbox = crop_face(Image.fromarray(img), landmark_box(pts), pts, size=256, context=2.4)
    arr = np.asarray(crop).astype(float).sum(axis=2)
    peak = np.array(np.unravel_index(arr.argmax(), arr.shape)[::-1], float)
    target = transform_points(np.array([[x, y]], float), crop_matrix(landmark_box(pts)))[0]
    assert np.abs(peak - target).max() <= 1.0
    np.testing.assert_allclose(landmark_box(cpts), cbox, atol=1e-6)
    assert (cbox[0] + cbox[2]) / 2 == pytest.approx(127.5) and (cbox[1] + cbox[3]) / 2 == pytest.approx(127.5)
    assert max(cbox[2] - cbox[0], cbox[3] - cbox[1]) == pytest.approx(256 / 2.4)


def test_crop_pads_outside_pixels_black() -> None:
    img = Image.fromarray(np.full((100, 100, 3), 200, np.uint8))
    crop, _, _ = crop_face(img, (0, 0, 60, 60), size=64, context=2.4)  # window reaches far left/up
    arr = np.asarray(crop)
    assert arr[:5, :5].max() == 0 and arr[40, 40].min() > 150


# ------------------------------------------------------------------ manifest, overwrite, integrity


def test_refuses_to_overwrite_without_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    for i in range(3):
        write_image(src / f"f{i}.jpg", seed=i)
        write_pts(src / f"f{i}.pts", face_points(yaw=5 * i))
    out = tmp_path / "out"
    args = ["pack", "300w", str(src), str(out), "--split", "train", "--no-progress", "--shard-size", "1"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [f"train-00000{i}.tar" for i in range(3)]
    before = (out / "manifest.json").read_text()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err and str(out) in err
    assert (out / "manifest.json").read_text() == before
    with pytest.raises(UserError, match="already exists"):
        pack_local("300w", src, out)
    # --overwrite with fewer samples: stale shards from the old pack are removed after the new manifest.
    assert main([*args[:-2], "--shard-size", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train-000000.tar", "train-000001.tar"]
    assert verify(str(out))["samples"] == 3


def test_pack_is_deterministic_and_parallel_equals_serial(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(12):
        write_image(src / f"f{i:02d}.jpg", seed=i)
        write_pts(src / f"f{i:02d}.pts", face_points(yaw=6 * i - 30))
    serial = pack_local("300w", src, tmp_path / "a", shard_size=5)
    parallel = pack_local("300w", src, tmp_path / "b", shard_size=5, workers=2)
    assert [s["sha256"] for s in serial["shards"]] == [s["sha256"] for s in parallel["shards"]]
    assert [s["samples"] for s in serial["shards"]] == [5, 5, 2]
    other = pack_local("300w", src, tmp_path / "c", shard_size=5, seed=1)
    assert [s["sha256"] for s in other["shards"]] != [s["sha256"] for s in serial["shards"]]
    with tarfile.open(tmp_path / "a" / "train-000000.tar") as tar:
        names = tar.getnames()
    assert all(n.startswith("300w/f") and n.endswith((".hr.jpg", ".json")) for n in names)
    assert not [p for p in (tmp_path / "a").iterdir() if "tmp" in p.name]


def test_verify_rejects_a_changed_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    for i in range(4):
        write_image(src / f"f{i}.jpg", seed=i)
        write_pts(src / f"f{i}.pts", face_points())
    out = tmp_path / "out"
    pack_local("300w", src, out, shard_size=2)
    report = verify(str(out))
    assert report == {"url": str(out / "manifest.json"), "shards": 2, "samples": 4, "bytes": report["bytes"],
                      "ok": True}  # fmt: skip
    shard = out / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF  # one flipped byte inside a JPEG
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="train-000001.tar"):
        verify(str(out / "manifest.json"))
    assert main(["verify", str(out)]) == 2
    assert "sha256" in capsys.readouterr().err
    shard.unlink()
    with pytest.raises(IntegrityError, match="cannot be read"):
        verify(str(out))


def test_unusable_local_dest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    write_image(src / "f.jpg")
    write_pts(src / "f.pts", face_points())
    (tmp_path / "afile").write_text("not a directory")
    dest = str(tmp_path / "afile" / "shards")
    assert main(["pack", "300w", str(src), dest, "--split", "train", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and dest in err and "cannot write" in err


def test_unknown_synthetic_count_and_empty_dir_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="number of faces"):
        make_reader("synthetic", "many")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no files"):
        pack_local("300w", tmp_path / "empty", tmp_path / "out")


def test_synthetic_pack(tmp_path: Path) -> None:
    manifest = pack_local("synthetic", "6", tmp_path / "out", workers=2, seed=3)
    assert manifest["samples"] + sum(manifest["rejected"].values()) == 6
    for s in read_samples(tmp_path / "out").values():
        assert s["json"]["pose_source"] == "ground-truth" and len(s["json"]["landmarks"]) == 68


def test_pose_recovers_known_yaw_from_noisy_projections() -> None:
    """Accuracy on faces with known yaw: template projections, 1.5% of face width noise, |yaw| <= 80."""
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(60):
        yaw, pitch, roll = rng.uniform(-80, 80), rng.uniform(-20, 20), rng.uniform(-20, 20)
        pts = pose.project(pitch, yaw, roll, scale=1.2, center=(128, 128))
        pts += rng.normal(0, 0.015 * 1.2 * 140, pts.shape)
        fit = pose.fit_pose(pts)
        errs.append(abs(fit["yaw"] - yaw))
    assert np.mean(errs) < 2.0 and np.max(errs) < 8.0


def test_pose_sign_convention() -> None:
    """Positive yaw = nose towards the image left (the faces-300w yaw_estimated_*.csv convention)."""
    pts = pose.project(yaw=30)
    assert pts[30, 0] < (pts[0, 0] + pts[16, 0]) / 2
    assert pose.estimate_yaw(pts) == pytest.approx(30, abs=0.1)
    assert pose.estimate_yaw(pose.project(yaw=-50, roll=20)) == pytest.approx(-50, abs=0.1)


def test_hash_range_splits_disjointly_and_stably(tmp_path: Path) -> None:
    """``--hash-range 0:0.5`` and ``0.5:1`` partition the faces by key, whatever the worker count."""
    from shards.__main__ import main
    from shards.pack import key_fraction

    train = pack_local("synthetic", "24", tmp_path / "a", seed=3, hash_range=(0.0, 0.5))
    val = pack_local("synthetic", "24", tmp_path / "b", seed=3, hash_range=(0.5, 1.0), workers=2)
    a, b = set(read_samples(tmp_path / "a")), set(read_samples(tmp_path / "b"))
    assert a and b and not a & b and len(a | b) == 24
    assert all(key_fraction(k) < 0.5 for k in a) and all(key_fraction(k) >= 0.5 for k in b)
    assert train["sources"][0]["outside_hash_range"] == len(b) and val["sources"][0]["hash_range"] == [0.5, 1.0]
    assert main(["pack", "synthetic", "4", str(tmp_path / "c"), "--split", "x", "--hash-range", "0.5"]) == 2


def test_sources_that_pack_to_one_key_are_not_merged(tmp_path: Path) -> None:
    """Issue 29: ``dup.a`` and ``dup_a`` sanitise to one sample key; both were written, and the pack's own
    ``verify`` then failed (webdataset merged them). The second is now a counted rejection."""
    src = tmp_path / "src"
    for i, stem in enumerate(("dup.a", "dup_a", "other")):
        write_image(src / f"{stem}.jpg", seed=i)
        write_pts(src / f"{stem}.pts", face_points())
    manifest = pack_local("300w", src, tmp_path / "out", shard_size=10)
    assert manifest["samples"] == 2 and manifest["rejected"] == {REASONS["duplicate_key"]: 1}, manifest["rejected"]
    assert verify(str(tmp_path / "out"))["samples"] == 2
    assert len(read_samples(tmp_path / "out")) == 2
