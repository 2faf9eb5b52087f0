"""Head pose (yaw, pitch, roll in degrees) from 68 2D landmarks, by fitting a 3D mean-face template.

Why: the paper bins its results by yaw ([0,30), [30,60), [60,90]), but most landmark sets (300-W, LS3D-W)
ship no pose. We estimate it the usual way: a rigid 68x3 mean face is posed with a weak-perspective
(scaled orthographic) camera, ``p = s * R[:2] @ X + t``, and ``(s, R, t)`` are fitted to the 2D points by
least squares. Faces are small and far from the camera, so perspective effects are negligible next to
annotation noise, and the orthographic model has no focal length to guess.

The template (:data:`TEMPLATE`) cannot be downloaded here, so it is built from an anthropometric layout
(millimetres, adult averages: outer eye corners 90 mm apart, inner 32 mm, mouth 50 mm wide 60 mm below
the eyes, chin 106 mm below the eyes, nose tip ~36 mm in front of the inner eye corners, the jaw contour
300-W's mean outline in the image plane and the mandible's depth from anthropometry, 70 mm back below the
ears: :data:`_JAW_RIGHT`). It is a *mean* face, so individual shape is absorbed as
residual; what matters for yaw is the ratio of nose depth to face width, which this layout gets right.

Axes and signs: camera coordinates with x to the image right, y down, z towards the camera. Angles are
applied as ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``. **Positive yaw turns the nose towards the image
left** (the subject looks to their right), the convention of the yaw estimates shipped with
``faces-300w`` (``yaw_estimated_*.csv``); positive pitch raises the nose (looking up); positive roll is
a clockwise on-screen rotation of the face.

Jaw points (0-16) get a lower weight in the fit: on turned faces, 2D annotations (300-W, LS3D-W) follow
the visible silhouette of the cheek rather than fixed 3D points, so they bias a rigid fit.

Accuracy (measured with this code; reproduce with :func:`compare_with_csv` and the pose tests):

* faces with known pose -- landmarks projected from the template at random yaw -80..80, pitch and roll
  -20..20, plus Gaussian noise of sd 1.5% of the outer-eye-corner distance: mean absolute error yaw 0.3,
  pitch 0.5, roll 0.4 degrees (worst of 300: yaw 1.3). This bounds the fit, not the template's realism.
* the 2,012 real faces of ``faces-300w`` against the shipped ``yaw_estimated_*.csv`` (another template
  fit, itself ~3.5 degrees from ground truth): mean absolute difference 3.0 degrees, median 2.4, 95th
  percentile 8.2, mean signed difference +0.9, correlation 0.986.
* the 1,008 real faces of AFLW2000-dev (2D-3D landmarks, ground-truth yaw): mean absolute error 4.0 /
  6.4 / 4.6 degrees in the [0,30) / [30,60) / [60,90] bins -- ample for the paper's 30-degree pose bins.
* about 2.5 ms per face on one CPU core (LM least squares from an affine initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The right half of the jaw contour, ear (0) to chin (8), mm in the template's frame before centring.
#: x and y: the outline 300-W annotates, fitted to the 2,011 faces of faces-300w with the camera fitted on
#: the inner points (``python -m devtools.fit_template_jaw``). z (depth, which no frontal annotation shows):
#: from adult anthropometric norms (Farkas, *Anthropometry of the Head and Face*, 1994): the outline's
#: upper half is the ramus of the mandible, which stands below the ear, ~70 mm behind the chin (tragion
#: ~118 mm from subnasale, tragion-tragion ~144 mm; gonion ~88 mm from gnathion, gonion-gonion ~94 mm);
#: below the gonion the body of the mandible turns forward to the chin on a parabola in the top view,
#: ``z = -66 (x / 60)^2`` capped at the ramus's -70. Every profiled view is drawn and labelled with this
#: depth, so a jaw too shallow puts a profile's jaw over the cheek instead of towards the ear. Measured on
#: AFLW2000-dev's real faces (ground-truth yaw, never fitted to): the template's jaw, posed by the inner
#: points, lies 7.9% of the face size from the annotated one beyond 60 degrees (16.1% with a 55 mm deep
#: ellipse), and the yaw estimated from all 68 points is 4.0 / 6.4 / 4.6 degrees from the ground truth per
#: bin (5.6 / 8.3 / 4.8). docs/paper.md, "The jaw in depth".
_JAW_RIGHT = (
    (-70.3, -0.2, -70.0),
    (-69.4, 19.2, -70.0),
    (-67.4, 38.3, -70.0),
    (-63.9, 56.8, -70.0),
    (-56.8, 73.1, -59.0),
    (-45.6, 86.4, -38.0),
    (-31.9, 96.9, -18.7),
    (-16.7, 104.7, -5.1),
    (0.0, 106.3, 0.0),
)


def _template_uncentred() -> np.ndarray:
    """68x3 mean face in mm (x right, y down, z towards the camera), iBUG order, before centring."""
    pts = np.zeros((68, 3))
    # Jaw 0-16: from the subject's right ear (image left) under the chin to the left ear; the left side
    # mirrors the right (_JAW_RIGHT).
    for i, (x, y, z) in enumerate(_JAW_RIGHT):
        pts[i] = (x, y, z)
        pts[16 - i] = (-x, y, z)
    # Brows 17-21 (right, outer -> inner) and 22-26 (left, inner -> outer).
    right_brow = [(-56, -17, -24), (-46, -25, -11), (-34, -28, -3), (-22, -27, 1), (-10, -23, 3)]
    # Nose bridge 27-30 (nasion -> tip) and nose base 31-35 (right ala -> left ala).
    nose = [(0, -1, 6), (0, 11, 14), (0, 23, 23), (0, 34, 32)]
    nose_base = [(-15, 40, 9), (-8, 43, 14), (0, 44, 16), (8, 43, 14), (15, 40, 9)]
    # Right eye 36-41: outer corner, two upper lid points, inner corner, two lower lid points.
    right_eye = [(-45, 0, -17), (-37, -5, -10), (-26, -5, -7), (-16, 0, -8), (-26, 4, -8), (-37, 4, -10)]
    # Outer mouth 48-59 (right corner, upper lip to left corner, lower lip back) and inner mouth 60-67.
    outer_mouth = [
        (-25, 62, 1), (-16, 57, 9), (-6, 54, 13), (0, 55, 14), (6, 54, 13), (16, 57, 9),
        (25, 62, 1), (16, 68, 7), (6, 71, 10), (0, 71, 11), (-6, 71, 10), (-16, 68, 7),
    ]  # fmt: skip
    inner_mouth = [(-21, 62, 3), (-6, 60, 10), (0, 60, 11), (6, 60, 10), (21, 62, 3), (6, 63, 10),
                   (0, 63, 11), (-6, 63, 10)]  # fmt: skip
    pts[17:22] = right_brow
    pts[22:27] = [(-x, y, z) for x, y, z in reversed(right_brow)]
    pts[27:31] = nose
    pts[31:36] = nose_base
    pts[36:42] = right_eye
    # Left eye 42-47 mirrors the right: inner corner, upper lid (inner -> outer), outer corner, lower lid.
    re = right_eye
    pts[42:48] = [(-re[3][0], *re[3][1:]), (-re[2][0], *re[2][1:]), (-re[1][0], *re[1][1:]),
                  (-re[0][0], *re[0][1:]), (-re[5][0], *re[5][1:]), (-re[4][0], *re[4][1:])]  # fmt: skip
    pts[48:60] = outer_mouth
    pts[60:68] = inner_mouth
    return pts


def _template() -> np.ndarray:
    pts = _template_uncentred()
    return pts - pts.mean(axis=0)


#: The 68x3 mean face (mm, centred), iBUG point order; see the module docstring for its layout.
TEMPLATE: np.ndarray = _template()

#: Per-point weights of the fit: jaw points follow the visible silhouette on turned faces, so count less.
WEIGHTS: np.ndarray = np.where(np.arange(68) < 17, 0.35, 1.0)


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` for angles in radians, in the module's axis convention."""
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    cr, sr = math.cos(roll), math.sin(roll)
    # Pitch about x: positive raises the nose (z>0 point moves to smaller y, i.e. up on screen).
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    # Yaw about y: positive moves the nose (z>0) to -x, the image left.
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    # Roll about z: positive rotates clockwise on screen (y points down).
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def project(
    pitch: float = 0.0,
    yaw: float = 0.0,
    roll: float = 0.0,
    scale: float = 1.0,
    center: Iterable[float] = (0, 0),
) -> np.ndarray:
    """Weak-perspective projection of :data:`TEMPLATE` posed by angles in **degrees** -> 68x2 points."""
    r = rotation(math.radians(pitch), math.radians(yaw), math.radians(roll))
    return scale * (TEMPLATE @ r[:2].T) + np.asarray(list(center), dtype=np.float64)


def _euler(r: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in radians of a rotation ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``."""
    yaw = math.asin(max(-1.0, min(1.0, r[2, 0])))
    pitch = math.atan2(r[2, 1], r[2, 2])
    roll = math.atan2(r[1, 0], r[0, 0])
    return pitch, yaw, roll


def _similarity(proj: np.ndarray, pts: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Closed-form weighted scale and translation mapping projected template ``proj`` onto ``pts``."""
    sw = w.sum()
    mp = (w[:, None] * proj).sum(0) / sw
    mq = (w[:, None] * pts).sum(0) / sw
    a, b = proj - mp, pts - mq
    s = float((w[:, None] * a * b).sum() / max((w[:, None] * a * a).sum(), 1e-12))
    return s, mq - s * mp


@dataclass(frozen=True)
class Camera:
    """A fitted weak-perspective camera: ``p = scale * rotation[:2] @ X + translation`` for head points ``X``
    (mm, :data:`TEMPLATE`'s frame), angles in degrees, ``rmse`` in units of the face's inter-ocular distance."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    pitch: float
    yaw: float
    roll: float
    rmse: float

    def project(self, points3: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray:
        """``(N, 3)`` head points -> ``(N, 2)`` pixels, with this camera or another ``rotation``."""
        r = self.rotation if rotation is None else rotation
        return self.scale * (np.asarray(points3) @ r[:2].T) + self.translation

    def lift(self, points: np.ndarray) -> np.ndarray:
        """68 image points -> 68 head points that project onto them exactly: each point of the template moved
        within the image plane of this view by its residual (the face's own shape, as this view shows it).

        Depth along the view axis cannot be seen; it is the template's, scaled by the face's own width against
        the template's (a face 10% wider than the mean is taken 10% deeper): the nose-depth to face-width
        ratio, which is what tells yaw apart in :func:`fit_camera`, stays the template's, so this face turned
        to another yaw is estimated at that yaw."""
        pts = np.asarray(points, dtype=np.float64).reshape(68, 2)
        ok = np.isfinite(pts).all(axis=1)
        template = TEMPLATE.copy()
        out = template
        for _ in range(2):  # the width sets the depth, the depth moves the in-plane residual of a turned view
            residual = np.where(ok[:, None], (pts - self.project(template)) / self.scale, 0.0)
            out = template + residual @ self.rotation[:2]
            width = float(out[ok, 0] @ TEMPLATE[ok, 0] / max(TEMPLATE[ok, 0] @ TEMPLATE[ok, 0], 1e-9))
            template = TEMPLATE * np.array([1.0, 1.0, max(0.5, min(2.0, width))])
        return out


def fit_camera(points: np.ndarray, weights: np.ndarray | None = None) -> Camera:
    """Fit the template to 68 2D points (pixels, any origin) with a weak-perspective camera (see the module
    docstring). Points with NaN coordinates are ignored. Raises ``ValueError`` with fewer than 6 finite points.
    """
    from scipy.optimize import least_squares

    pts = np.asarray(points, dtype=np.float64).reshape(68, 2)
    w = (WEIGHTS if weights is None else np.asarray(weights, dtype=np.float64)).copy()
    ok = np.isfinite(pts).all(axis=1)
    if ok.sum() < 6:
        raise ValueError("need at least 6 finite landmarks to fit a pose")
    pts, w, x3 = pts[ok], w[ok], TEMPLATE[ok]

    # Initial rotation from an unconstrained affine camera, orthonormalised (Tomasi-Kanade style).
    sw = w.sum()
    xc = x3 - (w[:, None] * x3).sum(0) / sw
    pc = pts - (w[:, None] * pts).sum(0) / sw
    sq = np.sqrt(w)[:, None]
    m, *_ = np.linalg.lstsq(xc * sq, pc * sq, rcond=None)  # (3, 2): pc ~ xc @ m
    u, _, vt = np.linalg.svd(m.T, full_matrices=False)
    r2 = u @ vt
    r = np.vstack([r2, np.cross(r2[0], r2[1])])
    starts = [np.array(_euler(r))]
    starts += [np.array([0.0, y, 0.0]) for y in (-0.8, 0.8)]
    tol = 0.08 * float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 1])) / 2  # residual a good fit stays under (px)

    def residual(angles: np.ndarray) -> np.ndarray:
        proj = x3 @ rotation(*angles)[:2].T
        s, t = _similarity(proj, pts, w)
        return ((s * proj + t - pts) * sq).ravel()

    best = None
    for a0 in starts:
        sol = least_squares(residual, a0, method="lm", xtol=1e-8, ftol=1e-8)
        if best is None or sol.cost < best.cost:
            best = sol
        if math.sqrt(2 * best.cost / sw) < tol:
            break
    assert best is not None
    # Re-extract canonical angles (least squares may wander outside +-pi).
    pitch, yaw, roll = _euler(rotation(*best.x))
    r = rotation(pitch, yaw, roll)
    s, t = _similarity(x3 @ r[:2].T, pts, w)
    iod_mm = float(np.linalg.norm(TEMPLATE[36] - TEMPLATE[45]))
    rmse = math.sqrt(2 * best.cost / sw) / max(abs(s) * iod_mm, 1e-9)
    return Camera(abs(s), r, t, math.degrees(pitch), math.degrees(yaw), math.degrees(roll), rmse)


def fit_pose(points: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Fit the template to 68 2D points -> ``{"yaw", "pitch", "roll", "scale", "rmse"}`` (see :func:`fit_camera`)."""
    cam = fit_camera(points, weights)
    return {"yaw": cam.yaw, "pitch": cam.pitch, "roll": cam.roll, "scale": cam.scale, "rmse": cam.rmse}


def estimate_yaw(points: np.ndarray) -> float:
    """Yaw in degrees (positive: nose towards the image left) of 68 2D landmarks."""
    return fit_pose(points)["yaw"]


def read_pts(path: str | Path) -> np.ndarray:
    """68x2 0-based points of an iBUG ``.pts`` file (for measurements; the packer has its own reader)."""
    lines = Path(path).read_text().splitlines()
    if "{" in [ln.strip() for ln in lines]:
        start = [ln.strip() for ln in lines].index("{") + 1
        lines = lines[start:]
    rows = [ln.split() for ln in lines if ln.strip() and ln.strip() != "}"]
    return np.array([[float(a), float(b)] for a, b in rows]) - 1.0


def compare_with_csv(root: str | Path) -> dict[str, float]:
    """Mean absolute difference between our yaw and ``yaw_estimated_*.csv`` beside a ``.pts`` tree.

    Used to document accuracy against the shipped estimates of ``../shared/data/faces-300w``.
    """
    import csv

    root = Path(root)
    ours, theirs = [], []
    for csv_path in sorted(root.glob("yaw_estimated_*.csv")):
        with csv_path.open() as f:
            for row in csv.DictReader(f):
                theirs.append(float(row["yaw_deg_estimated"]))
                ours.append(estimate_yaw(read_pts(root / row["pts_file"])))
    a, b = np.array(ours), np.array(theirs)
    diff = np.abs(a - b)
    return {
        "faces": float(len(a)),
        "mean_abs_diff": float(diff.mean()) if len(a) else float("nan"),
        "median_abs_diff": float(np.median(diff)) if len(a) else float("nan"),
        "p95_abs_diff": float(np.percentile(diff, 95)) if len(a) else float("nan"),
        "bias": float((a - b).mean()) if len(a) else float("nan"),
        "corr": float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 else float("nan"),
    }
