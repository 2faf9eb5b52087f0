"""Which jaw a sample's landmarks follow, and 300-W's silhouette jaw moved to the 3D contour.

Two conventions for the 17 jaw points meet in face alignment data:

* ``2d`` (300-W's iBUG annotation): the jaw follows the *visible silhouette* of the face. On a turned face
  the far cheek's outline is annotated, not the jaw line behind it.
* ``2d-3d`` (AFLW2000-3D's re-annotation, LS3D-W, 300W-LP's ``pt3d_68``; what Super-FAN's paper tests on):
  the jaw is where the 3D jaw contour projects, also where the cheek hides it.

They agree on near-frontal faces and part more the further a face turns (0.10-0.20 of the face's size per
jaw point beyond ~20 degrees). A model trained on one and scored in the other loses accuracy it does not
lack, so superfan trains and scores in ``2d-3d``, the paper's, and records each sample's convention.
:func:`jaw_to_2d3d` places a ``2d`` jaw on the fitted 3D face (what 300W-LP's ``pts_3d`` does with a fitted
3DMM), for ``python -m shards pack 300w --jaw 2d-3d``.
"""

from __future__ import annotations

import numpy as np

from superfan.pose import Camera, fit_camera

#: The two conventions (a sample's json ``landmark_convention``); ``2d-3d-fitted``: a ``2d`` jaw moved by
#: :func:`jaw_to_2d3d`, an estimate of the 3D contour, not an annotation of it.
TWO_D = "2d"
TWO_D_3D = "2d-3d"
TWO_D_3D_FITTED = "2d-3d-fitted"
CONVENTIONS = (TWO_D, TWO_D_3D, TWO_D_3D_FITTED)

#: Below this |yaw| (degrees) both conventions put the jaw on the same outline: nothing moves.
SAME_BELOW = 10.0
#: From this |yaw| on, the far-side jaw points take the mirrored near side fully (a linear ramp between).
FULL_FROM = 25.0
#: Weight of the mirrored point for far-side jaw points 0..7 counted from the ear (the chin, 8, is shared;
#: the points next to it stay visible up to large turns and keep most of their annotation).
_FROM_EAR = np.clip((8 - np.arange(8)) / 4.0, 0.0, 1.0)
#: The camera is fitted to the 51 inner points: the jaw is what is in question.
INNER_ONLY = np.where(np.arange(68) < 17, 0.0, 1.0)


def jaw_to_2d3d(landmarks: np.ndarray, camera: Camera | None = None) -> np.ndarray:
    """68 points with a ``2d`` (silhouette) jaw -> the same points with the far side's jaw on the 3D contour.

    The face is fitted with the template camera of :mod:`superfan.pose` (on the inner points; ``camera``
    overrides the fit) and lifted to 3D, each point
    projecting exactly onto its annotation. The *near* side's jaw is visible, so its silhouette is its
    contour; the far side's contour is taken as the mirror image of the near side's (the head's symmetry
    plane is the template's ``x = 0``) and projected with the fitted camera. Only the far side moves, and
    only on faces turned past :data:`SAME_BELOW` degrees; points near the chin move least.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    if not np.isfinite(pts).all():
        return pts.copy()
    cam = camera or fit_camera(pts, weights=INNER_ONLY)
    ramp = float(np.clip((abs(cam.yaw) - SAME_BELOW) / (FULL_FROM - SAME_BELOW), 0.0, 1.0))
    out = pts.copy()
    if ramp == 0.0:
        return out
    head = cam.lift(pts)
    # Positive yaw turns the nose to the image left: the subject's right cheek (jaw 0-7) turns away.
    far = np.arange(8) if cam.yaw > 0 else 16 - np.arange(8)
    mirrored = head[16 - far] * np.array([-1.0, 1.0, 1.0])
    moved = cam.project(mirrored)
    w = (ramp * _FROM_EAR)[:, None]
    out[far] = (1.0 - w) * pts[far] + w * moved
    return out
