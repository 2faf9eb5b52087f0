"""A dense face-and-head surface around 68 lifted landmarks, for face profiling (:mod:`shards.profile`).

300W-LP's profiling (Zhu et al., CVPR 2016, section 3.1) fits a 3D Morphable Model, whose dense mesh covers the
face, and meshes the rest of the image with anchors at estimated depth. No 3DMM can be downloaded here, so the
dense surface is built from what :mod:`superfan.pose` has, the 68-point mean face, in three parts (millimetres,
the template's axes: x right, y down, z towards the camera):

* **the face**: the 68 landmarks lifted to 3D (:meth:`superfan.pose.Camera.lift`: each point exactly where the
  image shows it, its depth from the template) and three rows of forehead points above the brows, triangulated
  in the face's frontal plane; depth between them is linear over the triangles;
* **the skull**: an ellipsoid (half-axes 75 x 105 x 100 mm, a typical adult head), its front surface at the
  forehead just behind the brows, so that forehead, temples, the sides of the head, the ears' region and the
  hair turn with the face;
* **the neck**: the front half of a vertical cylinder (radius 45 mm) under the jaw.

The parts are one triangle list; rendered with a z-buffer, the front-most part wins at every pixel, so the face
stands out of the skull where it is in front of it. What this simplifies, against a fitted 3DMM: the face
between landmarks is piecewise planar, and the skull and neck are the same for every head (scaled with the
face); the residual of each landmark moves nearby skull and forehead points with it (Shepard weights), so the
forehead follows the face's own width.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.spatial import Delaunay

from superfan.pose import TEMPLATE

SKULL_AXES = np.array([75.0, 105.0, 100.0])
#: The skull's centre: above the eyes (the crown ~120 mm above the brows) and 100 mm behind the forehead.
SKULL_CENTRE = np.array([0.0, -70.0, -94.0])
NECK_RADIUS = 45.0
NECK_CENTRE_Z = -50.0
NECK_TOP, NECK_BOTTOM = 30.0, 260.0
FOREHEAD_ROWS = (18.0, 36.0, 54.0)  #: mm above the brow line


def skull_front_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth of the skull ellipsoid's front surface at head coordinates (x, y); NaN outside its outline."""
    ax, ay, az = SKULL_AXES
    cx, cy, cz = SKULL_CENTRE
    q = 1.0 - ((x - cx) / ax) ** 2 - ((y - cy) / ay) ** 2
    return np.where(q >= 0, cz + az * np.sqrt(np.clip(q, 0, None)), np.nan)


def _forehead(landmarks3: np.ndarray) -> np.ndarray:
    """Rows of points above the brows (17-26), their depth blended from the brow's towards the skull's."""
    brows = landmarks3[17:27]
    rows = []
    for k, up in enumerate(FOREHEAD_ROWS):
        x = brows[:, 0] * (1.0 + 0.04 * (k + 1))
        y = brows[:, 1] - up
        skull = skull_front_z(x, y)
        t = (k + 1) / len(FOREHEAD_ROWS)
        z = np.where(np.isfinite(skull), (1 - t) * brows[:, 2] + t * skull, brows[:, 2] - 4.0 * (k + 1))
        rows.append(np.stack([x, y, z], 1))
    return np.concatenate(rows)


@functools.cache
def _skull_mesh(n_lat: int = 24, n_lon: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A latitude-longitude ellipsoid mesh (the whole skull: the z-buffer keeps its front)."""
    lat = np.linspace(0, math.pi, n_lat + 1)
    lon = np.linspace(0, 2 * math.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    unit = np.stack([np.sin(la) * np.sin(lo), -np.cos(la), np.sin(la) * np.cos(lo)], -1).reshape(-1, 3)
    verts = SKULL_CENTRE + unit * SKULL_AXES
    tris = []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = (i + 1) * n_lon + j, (i + 1) * n_lon + (j + 1) % n_lon
            tris += [(a, b, c), (b, d, c)]
    return verts, np.array(tris)


@functools.cache
def _neck_mesh(n_around: int = 24, n_down: int = 12) -> tuple[np.ndarray, np.ndarray]:
    ang = np.linspace(-math.pi / 2, math.pi / 2, n_around + 1)
    ys = np.linspace(NECK_TOP, NECK_BOTTOM, n_down + 1)
    a, y = np.meshgrid(ang, ys, indexing="ij")
    verts = np.stack([NECK_RADIUS * np.sin(a), y, NECK_CENTRE_Z + NECK_RADIUS * np.cos(a)], -1).reshape(-1, 3)
    m = n_down + 1
    tris = []
    for i in range(n_around):
        for j in range(n_down):
            p, q = i * m + j, (i + 1) * m + j
            tris += [(p, q, p + 1), (q, q + 1, p + 1)]
    return verts, np.array(tris)


def _follow(points: np.ndarray, landmarks3: np.ndarray, power: float = 2.0) -> np.ndarray:
    """Move ``points`` by the landmarks' residuals against the template, weighted by inverse distance."""
    residual = landmarks3 - TEMPLATE
    d = np.linalg.norm(points[:, None, :2] - TEMPLATE[None, :, :2], axis=2) + 5.0
    wgt = d**-power
    wgt /= wgt.sum(axis=1, keepdims=True)
    return points + wgt @ residual


def head_mesh(landmarks3: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(vertices (N, 3), triangles (T, 3), face_vertices)``: the face (its first 68 vertices are the
    landmarks, in order), the skull and the neck, in head coordinates (see the module docstring)."""
    face = np.concatenate([landmarks3, _forehead(landmarks3)])
    face_tris = Delaunay(face[:, :2]).simplices
    skull, skull_tris = _skull_mesh()
    neck, neck_tris = _neck_mesh()
    skull, neck = _follow(skull, landmarks3), _follow(neck, landmarks3)
    verts = np.concatenate([face, skull, neck])
    tris = np.concatenate([face_tris, skull_tris + len(face), neck_tris + len(face) + len(skull)])
    return verts, tris, len(face)
