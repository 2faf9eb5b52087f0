"""The jaw's landmark convention: recorded per sample, and 300-W's silhouette jaw moved to the 3D contour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from shards.convention import jaw_to_2d3d
from shards.profile import ProfileOptions, profile_views
from superfan import pose
from tests.test_shards import pack_local, read_samples, write_image, write_pts


def test_a_jaw_on_the_3d_contour_does_not_move() -> None:
    """Points projected from the 3D template already follow the 3D contour, at any yaw."""
    for yaw in (0.0, 20.0, -45.0, 70.0):
        pts = pose.project(pitch=8.0, yaw=yaw, roll=-4.0, scale=0.8, center=(120, 110))
        np.testing.assert_allclose(jaw_to_2d3d(pts), pts, atol=1e-6)


def _silhouette_jaw(yaw: float) -> np.ndarray:
    """The template at ``yaw`` with its far-side jaw pushed out to where a cheek's outline would be."""
    pts = pose.project(pitch=0.0, yaw=yaw, roll=0.0, scale=1.0, center=(128, 128))
    far = np.arange(8) if yaw > 0 else 16 - np.arange(8)
    centre_x = pts[27:36, 0].mean()
    pts[far, 0] += np.sign(pts[far, 0] - centre_x) * 12.0 * (8 - np.arange(8)) / 8
    return pts


@pytest.mark.parametrize("yaw", [35.0, -35.0])
def test_a_silhouette_jaw_moves_back_onto_the_contour_on_the_far_side_only(yaw: float) -> None:
    src = _silhouette_jaw(yaw)
    truth = pose.project(pitch=0.0, yaw=yaw, roll=0.0, scale=1.0, center=(128, 128))
    out = jaw_to_2d3d(src)
    far = np.arange(8) if yaw > 0 else 16 - np.arange(8)
    near = np.setdiff1d(np.arange(68), far)
    np.testing.assert_array_equal(out[near], src[near])
    before = np.linalg.norm(src[far] - truth[far], axis=1).mean()
    after = np.linalg.norm(out[far] - truth[far], axis=1).mean()
    assert after < 0.25 * before, (before, after)


def test_near_frontal_faces_keep_their_annotation() -> None:
    src = _silhouette_jaw(6.0)
    np.testing.assert_array_equal(jaw_to_2d3d(src), src)


def test_packs_record_each_samples_convention_and_jaw_2d3d_moves_300w(tmp_path: Path) -> None:
    turned = _silhouette_jaw(35.0) * 0.5 + np.array([16.0, 20.0])
    write_image(tmp_path / "w" / "a.jpg")
    write_pts(tmp_path / "w" / "a.pts", turned)
    as_is = pack_local("300w", tmp_path / "w", tmp_path / "as-is")
    moved = pack_local("300w", tmp_path / "w", tmp_path / "moved", jaw="2d-3d")
    assert as_is["sources"][0]["landmark_conventions"] == {"2d": 1}
    assert moved["sources"][0]["landmark_conventions"] == {"2d-3d-fitted": 1}
    assert moved["sources"][0]["jaw"] == "2d-3d"
    a = np.array(next(iter(read_samples(tmp_path / "as-is").values()))["json"]["landmarks"])
    b = np.array(next(iter(read_samples(tmp_path / "moved").values()))["json"]["landmarks"])
    # The crop follows the landmark box, so compare shapes: the inner points keep their places around the
    # nose tip, the far side of the jaw moves.
    a, b = a - a[30], b - b[30]
    assert np.abs(a[17:] - b[17:]).max() < 0.05 and np.abs(a[:8] - b[:8]).max() > 1.0

    pts = pose.project(pitch=0.0, yaw=-40.0, roll=0.0, scale=0.7, center=(80, 84))
    write_image(tmp_path / "m" / "image00002.jpg")
    scipy.io.savemat(tmp_path / "m" / "image00002.mat", {"pt3d_68": np.vstack([(pts + 1).T, np.zeros((1, 68))])})
    mat = pack_local("mat", tmp_path / "m", tmp_path / "mat", jaw="2d-3d")
    assert mat["sources"][0]["landmark_conventions"] == {"2d-3d": 1}  # annotated on the contour: left alone


def test_profiled_views_tilt_their_pitch_when_asked_and_carry_the_labels_given() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(30, 220, size=(200, 200, 3), dtype=np.uint8)
    pts = pose.project(pitch=2.0, yaw=10.0, roll=0.0, scale=0.55, center=(100, 104))
    flat = profile_views(image, pts, ProfileOptions(yaws=(60.0,)), "k")
    tilted = profile_views(image, pts, ProfileOptions(yaws=(60.0,), pitch=15.0), "k")
    again = profile_views(image, pts, ProfileOptions(yaws=(60.0,), pitch=15.0), "k")
    assert len(flat) == len(tilted) == 1
    assert abs(tilted[0].pitch - flat[0].pitch) > 0.1 and abs(tilted[0].pitch - flat[0].pitch) <= 15.0
    assert tilted[0].pitch == again[0].pitch  # seeded by the key: the same pack twice is the same pack
    labels = pts.copy()
    labels[:3] += 5.0
    relabelled = profile_views(image, pts, ProfileOptions(yaws=(60.0,)), "k", labels=labels)
    np.testing.assert_array_equal(relabelled[0].image, flat[0].image)  # the mesh follows the landmarks
    assert np.abs(relabelled[0].landmarks[:3] - flat[0].landmarks[:3]).max() > 1.0
    # (the lift takes depth from the labelled face's width, so the inner points may move a little)
    np.testing.assert_allclose(relabelled[0].landmarks[17:], flat[0].landmarks[17:], atol=0.5)
