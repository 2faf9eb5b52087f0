"""Face profiling (shards/profile.py): the rasteriser, and checks of the profiler itself on real faces.

* rendered at the face's own pose, a profiled view reproduces the input crop (PSNR >= 30 dB inside the face);
* :mod:`superfan.pose` run on a synthesised view's landmarks recovers the synthesised yaw within 5 degrees
  across 0-75;
* a flip of a +60 view matches the -60 view's landmarks under the 68-point permutation;
* the packer's ``--profile`` keeps every view of a face in its source's split (no identity leak).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards.crop import crop_face
from shards.profile import ProfileOptions, Profiler, mirrored, profile_views, target_yaws
from shards.raster import grid_mesh, rasterize
from superfan.landmarks import FLIP_PERMUTATION, flip_points, landmark_box
from superfan.pose import fit_pose, project, read_pts


def _faces(root: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` real faces of faces-300w as the packer profiles them: a 320 px crop at 3x the landmark box."""
    out = []
    for pts_file in sorted(root.glob("*/trainset/*.pts"))[::37][:n]:
        image = Image.open(pts_file.with_suffix(".jpg")).convert("RGB")
        pts = read_pts(pts_file)
        crop, crop_pts, _ = crop_face(image, landmark_box(pts), pts, 320, 3.0)
        out.append((np.array(crop), crop_pts))
    return out


# ------------------------------------------------------------------------------------------- rasteriser


def test_a_grid_mesh_rendered_in_place_is_the_identity_without_cracks() -> None:
    verts, tris = grid_mesh(61, 47, 3)
    out = rasterize(verts, np.zeros(len(verts)), verts, tris, (61, 47))
    yy, xx = np.mgrid[0:61, 0:47]
    assert (out.triangle.numpy() >= 0).all()
    got = out.attrs.numpy()
    assert np.allclose(got[..., 0], xx, atol=1e-4) and np.allclose(got[..., 1], yy, atol=1e-4)


def test_the_z_buffer_keeps_the_front_most_triangle() -> None:
    xy = np.array([[0, 0], [20, 0], [0, 20], [5, 5], [30, 5], [5, 30]], dtype=float)
    z = np.array([0, 0, 0, 1, 1, 1], dtype=float)  # the second triangle is nearer the camera (z towards it)
    attrs = np.array([[1], [1], [1], [2], [2], [2]], dtype=float)
    out = rasterize(xy, z, attrs, np.array([[0, 1, 2], [3, 4, 5]]), (32, 32))
    a = out.attrs[..., 0].numpy()
    assert a[2, 2] == pytest.approx(1) and a[8, 8] == pytest.approx(2) and a[6, 25] == pytest.approx(2)
    assert out.triangle[31, 31] == -1 and out.depth[31, 31] == -np.inf


# --------------------------------------------------------------------------------------- the profiler


@pytest.mark.slow
def test_rendering_at_the_faces_own_pose_reproduces_the_crop(faces_300w: Path) -> None:
    for image, pts in _faces(faces_300w, 12):
        prof = Profiler(image, pts)
        out, lm, _ = prof.render(prof.camera.yaw)
        assert np.abs(lm - pts).max() < 1e-6  # the lifted landmarks project back onto the annotation
        x0, y0, x1, y1 = (int(v) for v in landmark_box(pts))
        inside = (slice(y0, y1 + 1), slice(x0, x1 + 1))
        mse = np.mean((out[inside].astype(float) - image[inside].astype(float)) ** 2)
        psnr = 10 * np.log10(255**2 / max(mse, 1e-10))
        assert psnr >= 30, psnr


def test_pose_recovers_the_synthesised_yaw_within_5_degrees(faces_300w: Path) -> None:
    """81 real faces (every 25th of faces-300w), each turned to 0, 15, ..., 75 degrees in its own direction: the
    template fit of superfan/pose.py finds the yaw the views were rendered at. Measured (docs/data.md): mean error
    1.1 degrees, 95th percentile 3.5, 7 of 486 views above 5 (at most 7.1): faces whose shape is far from the
    mean face, the same limit the estimator has on real faces (3-5 degrees)."""
    import math

    from superfan.pose import fit_camera, rotation

    files = sorted(faces_300w.glob("*/*/*.pts")) + sorted(faces_300w.glob("afw/*.pts"))
    errors = []
    for pts_file in files[::25]:
        pts = read_pts(pts_file)
        cam = fit_camera(pts)
        lifted = cam.lift(pts)  # what Profiler.render projects (its landmarks need no image)
        side = 1.0 if cam.yaw >= 0 else -1.0
        for target in (0, 15, 30, 45, 60, 75):
            r = rotation(math.radians(cam.pitch), math.radians(side * target), math.radians(cam.roll))
            errors.append(abs(fit_pose(cam.project(lifted, r))["yaw"] - side * target))
    err = np.array(errors)
    assert len(err) == 486 and err.mean() < 1.5 and np.percentile(err, 95) < 4.0 and (err <= 5).mean() >= 0.98, (
        err.mean(),
        np.percentile(err, 95),
        (err > 5).sum(),
    )


def test_a_flipped_plus_60_view_is_the_minus_60_view() -> None:
    pts = project(yaw=0.0, scale=1.1, center=(159.5, 150))  # a symmetric face: the template, frontal
    prof = Profiler(np.zeros((320, 320, 3), np.uint8), pts)
    _, plus, vis_plus = prof.render(60)
    _, minus, vis_minus = prof.render(-60)
    assert np.abs(flip_points(plus, 320) - minus).max() < 1e-6
    assert [vis_plus[i] for i in FLIP_PERMUTATION] == vis_minus
    assert fit_pose(plus)["yaw"] == pytest.approx(60, abs=1.0)  # positive yaw: the nose towards the image left
    assert plus[30, 0] < minus[30, 0]


@pytest.mark.slow
def test_views_turn_away_hide_the_far_jaw_and_mirror(faces_300w: Path) -> None:
    image, pts = _faces(faces_300w, 1)[0]
    views = profile_views(image, pts, ProfileOptions(yaws=(45.0, 75.0), mirror=True), "k")
    assert len(views) % 2 == 0 and all(v.image.shape == image.shape for v in views)
    for view, flipped in zip(views[::2], views[1::2], strict=True):
        assert flipped.yaw == -view.yaw and flipped.tag.endswith("m")
        assert np.allclose(mirrored(view).landmarks, flipped.landmarks)
        far = range(0, 8) if view.yaw > 0 else range(9, 17)  # the jaw on the side the nose turns to
        if abs(view.yaw) >= 75:
            assert not all(view.visible[i] for i in far) and all(view.visible[i] for i in (30, 33))


def test_targets_go_further_in_the_faces_own_direction() -> None:
    opts = ProfileOptions(yaws=(30.0, 45.0, 60.0, 75.0, 90.0))
    assert target_yaws(20.0, opts, "a") == [30.0, 45.0, 60.0, 75.0, 90.0]
    assert target_yaws(-50.0, opts, "a") == [-60.0, -75.0, -90.0]
    assert target_yaws(3.0, opts, "a") == [30.0, 45.0, 60.0, 75.0, 90.0, -30.0, -45.0, -60.0, -75.0, -90.0]
    picked = target_yaws(20.0, ProfileOptions(opts.yaws, views=2), "a")
    assert len(picked) == 2 and picked == target_yaws(20.0, ProfileOptions(opts.yaws, views=2), "a")


# ------------------------------------------------------------------------------------------- the packer


@pytest.mark.slow
def test_pack_profile_keeps_every_view_of_a_face_in_its_split(faces_300w: Path, tmp_path: Path) -> None:
    from shards.pack import PackOptions, pack
    from superfan.data.tarstream import tar_samples

    sources: dict[str, set[str]] = {}
    for split, rng in (("train", (0.0, 0.5)), ("val", (0.5, 1.0))):
        dest = tmp_path / split
        pack(PackOptions(format="300w", src=str(faces_300w / "afw"), dest=str(dest), split=split, limit=12,
                         workers=2, progress=False, hash_range=rng,
                         profile=ProfileOptions(yaws=(60.0, 90.0), views=1, mirror=True)))  # fmt: skip
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["sources"][0]["profile"]["yaws"] == [60.0, 90.0]
        samples = list(tar_samples([{"url": str(p)} for p in sorted(dest.glob("*.tar"))]))
        metas = [json.loads(s["json"]) for s in samples]
        assert metas and all(m["pose_source"] == "synthesized" and abs(m["yaw"]) >= 59.9 for m in metas)
        assert all(len(m["visible"]) == 68 for m in metas)
        sources[split] = {m["profile"]["source_key"] for m in metas}
        assert len(samples) == 2 * len(sources[split])  # one view and its mirror per face
    assert sources["train"] and sources["val"] and not sources["train"] & sources["val"]
