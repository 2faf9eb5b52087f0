"""Face profiling at pack time: one annotated face -> views of it turned out of plane, towards +-90 degrees.

This is 300W-LP's answer to the lack of profile faces (Zhu et al., "Face Alignment Across Large Poses: A 3D
Solution", CVPR 2016; the paper's training set holds all 61,225 of its images): fit a 3D face to the
landmarks, mesh the whole image, rotate the face in depth and re-render. Here, for every source face:

1. **Fit**: the weak-perspective camera of :mod:`superfan.pose` (template fit), the 68 landmarks lifted to
   3D (:meth:`~superfan.pose.Camera.lift`), the dense face, skull and neck surface of :mod:`shards.head`.
2. **Mesh the image** (300W-LP's "3D meshing"): a grid of vertices every :data:`GRID_STEP` pixels over the
   working crop. A vertex the head surface covers takes that surface's 3D point (rendered with a z-buffer,
   so each pixel is the front-most surface); the others are the background: they stay where they are at the
   crop's border (300W-LP's boundary anchors) and follow the head's motion near it, fading out with the
   distance to it (its surrounding anchors), so the background between the moved head and the fixed border
   is stretched, as 300W-LP's are ("warping artefacts and all").
3. **Rotate and re-render**: the head's points turn to the target yaw (roll kept; pitch kept, or tilted by
   up to ``ProfileOptions.pitch`` degrees, as real profile photos vary), the mesh is
   rendered with a z-buffer (:mod:`shards.raster`), so the side that turns away is hidden behind the nose
   and cheek rather than smeared over the visible side, and every output pixel samples the source image
   where its surface point came from (bilinear).
4. **Landmarks**: the projections of the rotated 3D landmarks, jaw included where the 3D contour projects,
   also when it is self-occluded (the 2D-3D convention of LS3D-W and of AFLW2000-3D's re-annotation);
   ``visible`` says which are in front in the z-buffer. The pose is the synthesis's own ground truth
   (``pose_source: "synthesized"``).

Views turn further in the direction the face already looks (what was visible stays visible, as in 300W-LP);
a near-frontal face (|yaw| < :data:`BOTH_SIDES_BELOW`) turns both ways. ``mirror`` adds each view flipped
(landmarks relabelled with the 68-point permutation, yaw negated), so both sides are covered.

Simplified against 300W-LP (docs/data.md, "Profiled faces"): a mean-face template instead of a fitted 3DMM
(identity only in the image plane of the source view), a fixed ellipsoid skull and cylinder neck, no
inpainting of revealed background beyond the stretch, no relighting.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from shards.head import head_mesh
from shards.raster import grid_mesh, rasterize
from superfan.landmarks import FLIP_PERMUTATION, flip_points
from superfan.pose import Camera, fit_camera, rotation

#: Pixels between mesh vertices of the working crop (a 320 px crop: ~11k vertices, 22k triangles; the texture
#: is mapped per pixel, only the geometry is linear over 3 px).
GRID_STEP = 3
#: Faces this close to frontal are turned both ways (neither side is hidden yet).
BOTH_SIDES_BELOW = 7.5
#: A view is made only this far beyond the source's own yaw (a 2-degree turn is the source again).
MIN_TURN = 5.0
#: A template fit worse than this (residual / inter-ocular distance) is not a face to profile.
MAX_FIT_RMSE = 0.25
DEFAULT_YAWS = (30.0, 45.0, 60.0, 75.0, 90.0)


@dataclass(frozen=True)
class ProfileOptions:
    """What to synthesise for each face: target |yaw| values (degrees), how many of them per face (None:
    all the eligible ones; a seeded choice by the face's key otherwise), and mirrored copies."""

    yaws: tuple[float, ...] = DEFAULT_YAWS
    views: int | None = None
    mirror: bool = False
    #: Each view also tilts its pitch by up to this many degrees (uniform, seeded by the view's key): real
    #: profile photos look up and down as they turn, while a pure yaw turn keeps the source's pitch.
    pitch: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {"yaws": list(self.yaws), "views": self.views, "mirror": self.mirror, "pitch": self.pitch,
                "method": "300W-LP-style"}  # fmt: skip


@dataclass
class View:
    image: np.ndarray  #: (H, W, 3) uint8, the working crop re-rendered
    landmarks: np.ndarray  #: (68, 2) in its pixels
    visible: list[bool]
    yaw: float
    pitch: float
    roll: float
    tag: str  #: what goes into the key: ``yaw+60`` / ``yaw-60m`` (m: mirrored)
    source_yaw: float = field(default=0.0)


def target_yaws(source_yaw: float, opts: ProfileOptions, key: str) -> list[float]:
    """Signed target yaws for a face: further in its own direction (both ways when near frontal)."""
    sides = (1.0, -1.0) if abs(source_yaw) < BOTH_SIDES_BELOW else (math.copysign(1.0, source_yaw),)
    targets = [side * t for side in sides for t in opts.yaws if t >= abs(source_yaw) + MIN_TURN]
    if opts.views is not None and len(targets) > opts.views:
        targets = sorted(random.Random(key).sample(targets, opts.views), key=lambda y: (abs(y), y))
    return targets


class Profiler:
    """The mesh of one source face, ready to render it at any yaw (:meth:`render`)."""

    def __init__(
        self, image: np.ndarray, landmarks: np.ndarray, camera: Camera | None = None, labels: np.ndarray | None = None
    ) -> None:
        """``landmarks`` shape the head mesh (the outline the image shows); ``labels`` (default the same) are
        the points the views are annotated with, e.g. the jaw on the 3D contour (:mod:`shards.convention`)."""
        self.image = np.ascontiguousarray(image[..., :3])
        self.h, self.w = self.image.shape[:2]
        self.landmarks = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
        self.camera = camera or fit_camera(self.landmarks)
        self.points3 = self.camera.lift(self.landmarks)
        self.labels3 = self.points3 if labels is None else self.camera.lift(np.asarray(labels, dtype=np.float64))
        verts3, tris, _ = head_mesh(self.points3)
        cam = self.camera
        # Which head point each grid vertex of the source shows (attributes = head coordinates, the front-most
        # surface wins). Only the vertices are needed, so the head is rendered at the grid's resolution.
        self.grid, self.grid_tris = grid_mesh(self.h, self.w, GRID_STEP)
        low = (math.ceil(self.h / GRID_STEP) + 1, math.ceil(self.w / GRID_STEP) + 1)
        src = rasterize(cam.project(verts3) / GRID_STEP, cam.scale * (verts3 @ cam.rotation[2]), verts3, tris, low)
        gx, gy = np.rint(self.grid[:, 0] / GRID_STEP).astype(int), np.rint(self.grid[:, 1] / GRID_STEP).astype(int)
        self.on_head = src.triangle[gy, gx].numpy() >= 0
        self.head3 = src.attrs[gy, gx].numpy()[self.on_head]  # (M, 3) head points of the covered vertices
        self._anchor = np.arange(0)
        self._moving = np.ones(len(self.grid_tris), dtype=bool)
        self._weights = self._background_weights()

    def _background_weights(self) -> np.ndarray:
        """How each background vertex follows the head's motion: Shepard weights over the head's outline
        vertices, times a falloff with the distance to the head (1 beside it, 0 far from it; the crop's border
        fixed). Also picks the triangles that can move at all (the rest of the background is rendered as it is)."""
        nx = len(np.unique(self.grid[:, 0]))
        head = self.on_head.reshape(-1, nx)
        edge = head & ~(np.roll(head, 1, 0) & np.roll(head, -1, 0) & np.roll(head, 1, 1) & np.roll(head, -1, 1))
        outline = np.flatnonzero(edge.ravel())
        bg = np.flatnonzero(~self.on_head)
        if not len(outline) or not len(bg):
            self._moving = np.ones(len(self.grid_tris), dtype=bool)
            return np.zeros((len(bg), 0), dtype=np.float32)
        outline = outline[np.linspace(0, len(outline) - 1, min(len(outline), 240)).astype(int)]
        head_index = np.cumsum(self.on_head) - 1  # grid index -> row of head3
        self._anchor = head_index[outline]
        from scipy.spatial.distance import cdist

        d = cdist(self.grid[bg], self.grid[outline]).astype(np.float32) + 1e-3
        face_size = float(np.ptp(self.landmarks[:, 1]))  # brow-to-chin, px
        fall = np.exp(-((d.min(axis=1) / (0.45 * face_size)) ** 2))
        xy = self.grid[bg]
        border = np.minimum.reduce([xy[:, 0], xy[:, 1], self.w - 1 - xy[:, 0], self.h - 1 - xy[:, 1]])
        fall *= np.clip(border / (0.1 * self.w), 0.0, 1.0)
        wgt = d**-3
        wgt *= (fall / wgt.sum(axis=1))[:, None]
        moves = np.ones(len(self.grid), dtype=bool)
        moves[bg] = fall > 1e-3  # a vertex that follows by less than ~0.1 px stays put
        self._moving = moves[self.grid_tris].any(axis=1)
        return wgt.astype(np.float32)

    def rotation_to(self, yaw: float, pitch: float | None = None) -> np.ndarray:
        cam = self.camera
        p = cam.pitch if pitch is None else pitch
        return rotation(math.radians(p), math.radians(yaw), math.radians(cam.roll))

    def render(self, yaw: float, pitch: float | None = None) -> tuple[np.ndarray, np.ndarray, list[bool]]:
        """``(image, landmarks, visible)`` of the face turned to ``yaw`` degrees (and ``pitch``, default the
        source's; roll kept)."""
        cam, r = self.camera, self.rotation_to(yaw, pitch)
        xy = self.grid.copy()
        z = np.full(len(xy), -1e9)
        moved = cam.project(self.head3, r)
        if len(self.head3):
            motion = moved - self.grid[self.on_head]
            xy[self.on_head] = moved
            z[self.on_head] = cam.scale * (self.head3 @ r[2])
            xy[~self.on_head] += self._weights @ motion[self._anchor].astype(np.float32)
            z[~self.on_head] = float(z[self.on_head].min()) - 50.0 * cam.scale
        # Only triangles that can move are rendered; every pixel none of them covers shows the background as
        # it was (its own source position): the far, static part of the mesh is the identity.
        out = rasterize(xy, z, self.grid, self.grid_tris[self._moving], (self.h, self.w))
        covered = out.triangle.numpy() >= 0
        coords = out.attrs.numpy()
        yy, xx = np.mgrid[0 : self.h, 0 : self.w]
        coords[~covered] = np.stack([xx, yy], -1)[~covered]
        image = _sample(self.image, coords, np.ones_like(covered))
        landmarks = cam.project(self.labels3, r)
        depth = cam.scale * (self.labels3 @ r[2])
        visible = []
        for (x, y), d in zip(landmarks, depth, strict=True):
            xi, yi = int(round(x)), int(round(y))
            inside = 0 <= xi < self.w and 0 <= yi < self.h
            visible.append(bool(inside and d >= float(out.depth[yi, xi]) - 4.0 * cam.scale))
        return image, landmarks, visible


def _sample(image: np.ndarray, coords: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at per-pixel source coordinates ``(H, W, 2)``; uncovered pixels black."""
    h, w = image.shape[:2]
    src = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).float()
    grid = torch.from_numpy(coords).float().clone()
    grid[..., 0] = grid[..., 0] * 2 / max(w - 1, 1) - 1
    grid[..., 1] = grid[..., 1] * 2 / max(h - 1, 1) - 1
    out = torch.nn.functional.grid_sample(src, grid.unsqueeze(0), mode="bilinear", align_corners=True)
    arr = out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    arr[~covered] = 0
    return arr


def view_pitch(source_pitch: float, opts: ProfileOptions, key: str, yaw: float) -> float:
    """The pitch of one view: the source's, tilted by up to ``opts.pitch`` degrees (seeded by key and yaw)."""
    if not opts.pitch:
        return source_pitch
    return source_pitch + random.Random(f"{key}/{yaw:+.0f}/pitch").uniform(-opts.pitch, opts.pitch)


def profile_views(
    image: np.ndarray, landmarks: np.ndarray, opts: ProfileOptions, key: str, labels: np.ndarray | None = None
) -> list[View]:
    """The views of one face (see the module docstring); ``[]`` when its template fit is too poor to trust.
    ``labels``: the points to annotate the views with, when they differ from the ``landmarks`` that shape
    the mesh (a silhouette jaw moved to the 3D contour)."""
    camera = fit_camera(landmarks)
    if not camera.rmse <= MAX_FIT_RMSE:
        return []
    targets = target_yaws(camera.yaw, opts, key)
    if not targets:
        return []
    prof = Profiler(image, landmarks, camera, labels)
    views = []
    for yaw in targets:
        pitch = view_pitch(camera.pitch, opts, key, yaw)
        img, pts, vis = prof.render(yaw, pitch)
        views.append(View(img, pts, vis, yaw, pitch, camera.roll, f"yaw{yaw:+.0f}", camera.yaw))
        if opts.mirror:
            views.append(mirrored(views[-1]))
    return views


def mirrored(view: View) -> View:
    """The view flipped left-right: landmarks relabelled (68-point permutation), yaw and roll negated."""
    width = view.image.shape[1]
    return View(
        np.ascontiguousarray(view.image[:, ::-1]),
        flip_points(view.landmarks, width),
        [view.visible[i] for i in FLIP_PERMUTATION],
        -view.yaw,
        view.pitch,
        -view.roll,
        f"yaw{-view.yaw:+.0f}m",
        -view.source_yaw,
    )
