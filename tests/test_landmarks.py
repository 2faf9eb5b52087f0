"""Face geometry: flip permutation, heatmap round trip, crops and pose bins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superfan import landmarks


def test_flip_permutation_is_an_involution() -> None:
    perm = np.array(landmarks.FLIP_PERMUTATION)
    assert sorted(perm) == list(range(68))
    assert (perm[perm] == np.arange(68)).all()


@pytest.mark.parametrize(
    ("a", "b"),
    [("right_eye", "left_eye"), ("right_brow", "left_brow")],
)
def test_flip_swaps_paired_features(a: str, b: str) -> None:
    perm = landmarks.FLIP_PERMUTATION
    assert {perm[i] for i in landmarks.GROUPS[a]} == set(landmarks.GROUPS[b])


def test_flip_mirrors_a_face_onto_itself() -> None:
    """A left-right symmetric face must map onto itself under mirror + relabel."""
    rng = np.random.default_rng(0)
    half = rng.uniform(0, 30, size=(68, 2))
    pts = np.zeros((68, 2))
    perm = landmarks.FLIP_PERMUTATION
    for i in range(68):
        j = perm[i]
        if i == j:
            pts[i] = [31.5, half[i, 1]]  # on the midline of a 64 px image
        elif i < j:
            pts[i] = half[i]
            pts[j] = [63 - half[i, 0], half[i, 1]]
    np.testing.assert_allclose(landmarks.flip_points(pts, 64), pts, atol=1e-9)
    # Relabelling keeps each feature on its side: the subject's right eye is on the image left before
    # and after mirroring a face that is not centred.
    shifted = pts + [[-5.0, 0.0]]
    for before in (shifted, landmarks.flip_points(shifted, 64)):
        right, left = before[list(landmarks.GROUPS["right_eye"]), 0], before[list(landmarks.GROUPS["left_eye"]), 0]
        assert right.max() < left.min()
    np.testing.assert_allclose(landmarks.flip_points(landmarks.flip_points(pts, 64), 64), pts, atol=1e-9)


def test_heatmap_round_trip_is_sub_tenth_pixel() -> None:
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(8, 68, 2, generator=gen) * 54 + 5
    for size, sigma in [(32, 1.0), (64, 2.0), (16, 1.0)]:
        hm = landmarks.points_to_heatmaps(pts, image_size=64, heatmap_size=size, sigma=sigma)
        assert hm.shape == (8, 68, size, size)
        back = landmarks.heatmaps_to_points(hm, image_size=64)
        assert (back - pts).norm(dim=-1).max() < 0.1


def test_missing_points_give_empty_heatmaps() -> None:
    pts = torch.full((1, 68, 2), float("nan"))
    assert landmarks.points_to_heatmaps(pts).abs().sum() == 0


def test_crop_puts_the_face_50px_tall_and_centred() -> None:
    box = (100.0, 80.0, 180.0, 200.0)  # 120 px tall
    m = landmarks.crop_matrix(box, out_size=64, face_height=50)
    corners = landmarks.transform_points(np.array([[100.0, 80.0], [180.0, 200.0]]), m)
    assert corners[1, 1] - corners[0, 1] == pytest.approx(50.0)
    assert corners.mean(axis=0) == pytest.approx([31.5, 31.5])
    inv = landmarks.invert_affine(m)
    np.testing.assert_allclose(landmarks.transform_points(corners, inv), [[100, 80], [180, 200]], atol=1e-9)


def test_crop_rotation_and_flip() -> None:
    box = (0.0, 0.0, 50.0, 50.0)
    m = landmarks.crop_matrix(box, out_size=64, face_height=50, rotation_deg=90)
    # A point right of the centre goes above it after a counter-clockwise (on screen) rotation.
    p = landmarks.transform_points(np.array([[35.0, 25.0]]), m)[0]
    assert p == pytest.approx([31.5, 21.5])
    mf = landmarks.crop_matrix(box, out_size=64, face_height=50, flip=True)
    q = landmarks.transform_points(np.array([[35.0, 25.0]]), mf)[0]
    assert q == pytest.approx([21.5, 31.5])


@pytest.mark.parametrize(
    ("yaw", "expected"),
    [(0, 0), (29.9, 0), (30, 1), (-45, 1), (59.99, 1), (60, 2), (-90, 2), (95, 2), (float("nan"), -1)],
)
def test_pose_bins(yaw: float, expected: int) -> None:
    assert int(landmarks.pose_bin(yaw)) == expected


def test_landmark_box_ignores_missing_points() -> None:
    pts = np.array([[1.0, 2.0], [np.nan, np.nan], [5.0, 10.0]])
    assert landmarks.landmark_box(pts) == (1.0, 2.0, 5.0, 10.0)
