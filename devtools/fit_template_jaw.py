"""Fit the 3D jaw of superfan.pose's mean face to the visible jaw of faces-300w (the table in ``_template``).

    python -m devtools.fit_template_jaw [FACES_300W_DIR]      (default ../shared/data/faces-300w)
    python -m devtools.fit_template_jaw --measure [AFLW2000_DIR]   (default ../shared/data/aflw2000-dev)

``--measure`` scores the mean face against real 2D-3D annotations (never fits to them), for the table in
docs/data.md: per |yaw| bin, the mean distance of the 17 annotated jaw points from the template's jaw posed
on the 51 inner points (% of sqrt(w*h) of the landmark box), and the error of the yaw estimated from all 68
points against the ground truth; for the template in use and for the synthetic faces' ellipse jaw (55 mm
deep at the ears).

Why: the template's jaw sets where every profiled view's jaw is drawn and labelled (the face mesh and the 3D
jaw contour of ``shards.profile`` and ``shards.convention`` take their position from it). With the camera
fitted on the 51 inner points, each jaw point's 3D position is the least-squares solution of
``p = s * R[:2] @ X + t`` over every face's near-side jaw (faces flipped to one side). Only training data is
used (faces-300w); real profile sets are for measuring, never for fitting.

Only x and y are taken from this fit (the outline 300-W annotates, as a frontal view shows it). The depth z
is printed for comparison but not used: 300-W's faces are within ~45 degrees of frontal and its jaw follows
the visible outline, which on a turned face is the occluding contour sliding over the cheek, not fixed 3D
points; the fitted depth comes out ~20 mm shallower than the mandible's (superfan.pose: anthropometric).

Prints the 9 points (ear to chin, subject's right side; the left side mirrors them) in the template's
frame before centring.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from superfan.data.synthetic import DRAWN_FACE
from superfan.landmarks import flip_points
from superfan.pose import TEMPLATE, _template_uncentred, fit_camera, read_pts

#: The camera is fitted on the inner points; the jaw is what is estimated.
INNER_ONLY = np.where(np.arange(68) < 17, 0.0, 1.0)
MAX_YAW = 50.0  # beyond it 300-W's few faces are too sparse to trust
MAX_RMSE = 0.15  # a poor inner-point fit says more about the annotation than about the jaw


def fit(root: Path) -> tuple[np.ndarray, int]:
    """``(points (9, 3) in the centred template frame, faces used)``."""
    systems: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in range(9)]
    used = 0
    for path in sorted(root.rglob("*.pts")):
        pts = read_pts(path)
        cam = fit_camera(pts, weights=INNER_ONLY)
        if abs(cam.yaw) > MAX_YAW or cam.rmse > MAX_RMSE:
            continue
        if cam.yaw > 0:  # positive yaw turns jaw 0-7 away: flip so that 0-8 is the near side
            pts = flip_points(pts, 1000.0)
            cam = fit_camera(pts, weights=INNER_ONLY)
        used += 1
        for i in range(9):
            systems[i][0].append(cam.scale * cam.rotation[:2])
            systems[i][1].append(pts[i] - cam.translation)
    out = np.zeros((9, 3))
    for i, (a, b) in enumerate(systems):
        out[i], *_ = np.linalg.lstsq(np.concatenate(a), np.concatenate(b), rcond=None)
    return out, used


def measure(root: Path, template: np.ndarray) -> tuple[list[float], list[float]]:
    """``(jaw distance %, yaw error degrees)`` per |yaw| bin [0,30), [30,60), [60,90] on ``.mat`` faces."""
    import scipy.io

    import superfan.pose as pose

    saved = pose.TEMPLATE.copy()
    pose.TEMPLATE[:] = template  # fit_camera and project read the module's template
    jaw: list[list[float]] = [[], [], []]
    yaw_err: list[list[float]] = [[], [], []]
    try:
        for path in sorted(root.glob("*.mat")):
            mat = scipy.io.loadmat(path)
            yaw = math.degrees(float(mat["Pose_Para"].ravel()[1]))
            if abs(yaw) > 99:  # two wrapped yaws of AFLW2000-3D (its README)
                continue
            pts = mat["pt3d_68"][:2].T - 1.0
            b = min(int(abs(yaw) // 30), 2)
            cam = fit_camera(pts, weights=INNER_ONLY)
            size = math.sqrt(float(np.ptp(pts[:, 0]) * np.ptp(pts[:, 1])))
            jaw[b].append(float(np.linalg.norm(pts[:17] - cam.project(template)[:17], axis=1).mean()) / size)
            yaw_err[b].append(abs(fit_camera(pts).yaw - yaw))
    finally:
        pose.TEMPLATE[:] = saved
    return [100 * float(np.mean(v)) for v in jaw], [float(np.mean(v)) for v in yaw_err]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--measure"]:
        aflw = Path(argv[1] if len(argv) > 1 else "../shared/data/aflw2000-dev")
        if not aflw.is_dir():
            print(f"fit_template_jaw: {aflw} not found", file=sys.stderr)
            return 2
        for name, template in (("ellipse 55 mm deep", DRAWN_FACE), ("in use", TEMPLATE.copy())):
            jaw, yaw = measure(aflw, template)
            jaws, yaws = " / ".join(f"{v:.1f}%" for v in jaw), " / ".join(f"{v:.1f}" for v in yaw)
            print(f"{name}: jaw {jaws}; yaw error {yaws} degrees")
        return 0
    root = Path(argv[0] if argv else "../shared/data/faces-300w")
    if not root.is_dir():
        print(f"fit_template_jaw: {root} not found", file=sys.stderr)
        return 2
    jaw, used = fit(root)
    offset = _template_uncentred().mean(axis=0)  # the table lives in the frame before centring
    print(f"# fitted on the near-side jaw of {used} faces of {root}")
    print("# ear -> chin (subject's right side), mm, template frame before centring:")
    for i, p in enumerate(jaw + offset):
        print(f"    ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}),  # {i}  (was {np.round(TEMPLATE[i] + offset, 1).tolist()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
