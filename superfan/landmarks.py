"""68-point face geometry shared by packing, the data stream, training, evaluation and inference.

Conventions used everywhere in superfan:

* Points are ``(x, y)`` in pixels, 0-based, with integer coordinates at pixel *centres*
  (iBUG ``.pts`` files are 1-based and are converted on reading). Missing points are NaN.
* The point order is the iBUG 68-point scheme: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
  mouth 48-67. "Right"/"left" are the subject's, as in iBUG.
* A heatmap of size ``h`` over an image of size ``s`` puts pixel centre ``x`` at ``(x + 0.5) * h / s - 0.5``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

NUM_LANDMARKS = 68

#: Index groups of the iBUG 68-point scheme (0-based), used by flip tests, overlays and pose estimation.
GROUPS: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)),
    "right_brow": tuple(range(17, 22)),
    "left_brow": tuple(range(22, 27)),
    "nose_bridge": tuple(range(27, 31)),
    "nose_base": tuple(range(31, 36)),
    "right_eye": tuple(range(36, 42)),
    "left_eye": tuple(range(42, 48)),
    "outer_mouth": tuple(range(48, 60)),
    "inner_mouth": tuple(range(60, 68)),
}


#: The groups every evaluation reports an error for, beside AUC (``superfan evaluate``'s landmark-group
#: table). The jaw is apart because datasets disagree on it: 300-W's 2D convention follows the visible
#: silhouette of a turned cheek, AFLW2000-3D's re-annotation and LS3D-W (2D-3D) the projected 3D contour.
SCORE_GROUPS: dict[str, tuple[int, ...]] = {
    "jaw": GROUPS["jaw"],
    "brows": GROUPS["right_brow"] + GROUPS["left_brow"],
    "nose": GROUPS["nose_bridge"] + GROUPS["nose_base"],
    "eyes": GROUPS["right_eye"] + GROUPS["left_eye"],
    "mouth": GROUPS["outer_mouth"] + GROUPS["inner_mouth"],
}
#: The 51 inner points (jaw left out): the set 300-W's 51-point protocol scores, and the one no jaw
#: convention can move.
INNER_POINTS: tuple[int, ...] = tuple(range(17, 68))


def _flip_permutation() -> tuple[int, ...]:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip
    perm = list(range(NUM_LANDMARKS))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


#: ``flipped[i] = points[FLIP_PERMUTATION[i]]`` relabels points after a horizontal mirror.
FLIP_PERMUTATION: tuple[int, ...] = _flip_permutation()


def flip_points(points: np.ndarray, width: float) -> np.ndarray:
    """Mirror ``(..., 68, 2)`` points horizontally in an image ``width`` pixels wide and relabel them."""
    out = np.asarray(points, dtype=np.float64)[..., FLIP_PERMUTATION, :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


# ------------------------------------------------------------------------------------------- boxes, crops


def landmark_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of the finite points; the NME normaliser uses its ``sqrt(w * h)``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        raise ValueError("no finite landmarks")
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def crop_matrix(
    box: tuple[float, float, float, float],
    out_size: int = 64,
    face_height: float = 50.0,
    scale: float = 1.0,
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """2x3 affine map from source pixels to an ``out_size`` window with the face ``face_height`` px tall.

    The face box's centre goes to the window centre and its height to ``face_height * scale`` (section
    4.5: "cropped ... such that the face height is 50 px"). Rotation is about the window centre,
    positive = counter-clockwise on screen. ``flip`` mirrors the window afterwards; the caller must
    relabel points with :data:`FLIP_PERMUTATION` (see :func:`transform_points`).
    """
    x0, y0, x1, y1 = box
    height = max(y1 - y0, 1e-6)
    s = face_height * scale / height
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    c = (out_size - 1) / 2.0
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta) * s, math.sin(theta) * s
    # y points down, so a counter-clockwise on-screen rotation is [[cos, sin], [-sin, cos]].
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    m[:, 2] = np.array([c, c]) - m[:, :2] @ np.array([cx, cy])
    if flip:
        m[0] = -m[0]
        m[0, 2] += out_size - 1
    return m


def transform_points(points: np.ndarray, matrix: np.ndarray, flip: bool = False) -> np.ndarray:
    """Apply a 2x3 affine to ``(..., 68, 2)`` points; relabel with the flip permutation when mirrored."""
    pts = np.asarray(points, dtype=np.float64)
    out = pts @ matrix[:, :2].T + matrix[:, 2]
    if flip:
        out = out[..., FLIP_PERMUTATION, :]
    return out


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


# ------------------------------------------------------------------------------------------- heatmaps


def _to_heatmap_coords(points: torch.Tensor, image_size: int, heatmap_size: int) -> torch.Tensor:
    return (points + 0.5) * (heatmap_size / image_size) - 0.5


def points_to_heatmaps(
    points: torch.Tensor, image_size: int = 64, heatmap_size: int = 32, sigma: float = 1.0
) -> torch.Tensor:
    """Unnormalised Gaussians (peak 1) at ``(..., K, 2)`` points -> ``(..., K, h, h)``; NaN points give zeros.

    Vectorised over the whole batch so the data pipeline builds targets in one call per batch.
    """
    pts = torch.as_tensor(points, dtype=torch.float32)
    uv = _to_heatmap_coords(pts, image_size, heatmap_size)
    grid = torch.arange(heatmap_size, dtype=torch.float32, device=uv.device)
    dx = grid - uv[..., 0:1]  # (..., K, h) along x
    dy = grid - uv[..., 1:2]  # (..., K, h) along y
    # NaN points -> zero profiles, cleaned on the (..., K, h) vectors rather than the h-times larger maps
    gx = torch.nan_to_num(torch.exp(-(dx * dx) / (2 * sigma * sigma)), nan=0.0)
    gy = torch.nan_to_num(torch.exp(-(dy * dy) / (2 * sigma * sigma)), nan=0.0)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)  # (..., K, h_y, h_x)


def heatmaps_to_points(heatmaps: torch.Tensor, image_size: int = 64) -> torch.Tensor:
    """``(..., K, h, h)`` heatmaps -> ``(..., K, 2)`` points in image pixels, with sub-pixel refinement.

    The argmax is refined by fitting a parabola to the log of the heatmap at the peak and its two
    neighbours on each axis. For a Gaussian that fit is exact, so points survive a points -> heatmaps ->
    points round trip to well under 0.1 px; FAN's usual +-0.25 px nudge towards the larger neighbour
    cannot do better than ~0.25 px. Values are clamped to a small positive floor first, so
    network outputs with negative or zero neighbours still give a finite, bounded offset.
    """
    hm = heatmaps.detach().float()
    *lead, k, h, w = hm.shape
    flat = hm.reshape(-1, h * w)
    idx = flat.argmax(dim=1)
    py, px = idx // w, idx % w
    rows = torch.arange(flat.shape[0], device=hm.device)
    hm2 = hm.reshape(-1, h, w)
    eps = 1e-6

    def offset(center: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        lc, ll, lh = center.clamp_min(eps).log(), lo.clamp_min(eps).log(), hi.clamp_min(eps).log()
        denom = ll - 2 * lc + lh
        off = 0.5 * (ll - lh) / torch.where(denom.abs() < 1e-12, torch.full_like(denom, -1e12), denom)
        return off.clamp(-0.5, 0.5)

    c = hm2[rows, py, px]
    xl, xr = (px - 1).clamp(0, w - 1), (px + 1).clamp(0, w - 1)
    yu, yd = (py - 1).clamp(0, h - 1), (py + 1).clamp(0, h - 1)
    ox = offset(c, hm2[rows, py, xl], hm2[rows, py, xr])
    oy = offset(c, hm2[rows, yu, px], hm2[rows, yd, px])
    ox = torch.where((px == 0) | (px == w - 1), torch.zeros_like(ox), ox)
    oy = torch.where((py == 0) | (py == h - 1), torch.zeros_like(oy), oy)
    u = px.float() + ox
    v = py.float() + oy
    scale = image_size / w
    pts = torch.stack([(u + 0.5) * scale - 0.5, (v + 0.5) * scale - 0.5], dim=-1)
    return pts.reshape(*lead, k, 2)


# ------------------------------------------------------------------------------------------- pose


#: Lower edges of the paper's yaw bins (section 3): [0, 30), [30, 60), [60, 90+].
POSE_BIN_EDGES: tuple[float, ...] = (0.0, 30.0, 60.0)
POSE_BIN_NAMES: tuple[str, ...] = ("[0,30)", "[30,60)", "[60,90]")


def pose_bin(yaw_deg: float | np.ndarray, edges: tuple[float, ...] = POSE_BIN_EDGES) -> np.ndarray:
    """Index of the yaw bin of ``|yaw|`` (degrees); -1 where yaw is unknown (NaN)."""
    yaw = np.abs(np.asarray(yaw_deg, dtype=np.float64))
    bins = np.searchsorted(np.asarray(edges[1:]), yaw, side="right")
    return np.where(np.isfinite(yaw), bins, -1)


def pose_bin_names(edges: tuple[float, ...] = POSE_BIN_EDGES) -> list[str]:
    """Human names of the bins, e.g. ``[0,30)``; the last bin is closed and open-ended."""
    names = [f"[{edges[i]:g},{edges[i + 1]:g})" for i in range(len(edges) - 1)]
    names.append(f"[{edges[-1]:g},90]")
    return names
