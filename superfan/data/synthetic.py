"""Procedural faces with exact 68-point landmarks and ground-truth pose, for the demo and the tests.

Why procedural: the real datasets of the paper cannot ship with the repository, yet the demo, the tests and
the benchmarks need faces whose landmarks and pose are known exactly, in every yaw bin. Each face is a 3D
68-point face (:data:`DRAWN_FACE`, in :data:`superfan.pose.TEMPLATE`'s axes, so ground-truth yaw has the
same sign convention as the pose estimator: positive yaw turns the nose to the image left) with a random
identity (per-region shape perturbations, eye and mouth opening), posed by random yaw (-90..90), pitch and
roll (-20..20 each, our choice), projected weak-perspectively and drawn with PIL: a Lambert-shaded head
silhouette with neck, shoulders and hair, sclera/iris/pupil, brows, a shaded nose with nostrils, lips and
the mouth cavity, over backgrounds of gradients, low-frequency noise and random shapes, with random skin
tone, light direction and colour cast.

Self-occluded jaw points (0-16) are placed as LS3D-W / 300W-LP do: each jaw point lives on a horizontal
"parallel" of the head, and when the point turns away from the camera it slides along that parallel to the
visible silhouette (the point whose surface normal is perpendicular to the view). Other points are the
projections of their 3D positions, visible or not (3D-style annotation, as LS3D-W).

The face box (the landmark box) is ``size / 2.4`` on its longest side and centred, which is the packed-crop
contract (crop side = 2.4 x face box max side), so the packer's re-crop is close to the identity.

Difficulty: at 16x16 the 50 px face is ~12 px tall, eyes are ~1 px and the iris, lids, nostrils and lip
line vanish; ``tests/test_data.py`` measures that the local structure at the landmarks is destroyed by the
16x16 round trip and that a fixed eye localiser loses accuracy on bilinear upsampling. A mean-shape predictor
has an NME of ~0.1+ because of the pose range, so a FAN must learn to localise.

Render time: ~3-6 ms per 256 px face on one core.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from superfan.pose import _template_uncentred, rotation


def _drawn_face() -> np.ndarray:
    """The pose template's layout with its jaw on an ellipse (half width 70 mm, chin 115 mm below the eyes,
    55 mm deep at the ears), centred. The drawing keeps this jaw, which its parallels below wrap around:
    a synthetic face is its own ground truth, so it need not share the pose template's anthropometric jaw,
    and keeping it keeps the demo's faces and figures as they are."""
    pts = _template_uncentred()
    for i in range(17):
        th = math.pi * i / 16.0
        c, s = math.cos(th), math.sin(th)
        pts[i] = (-70.0 * math.copysign(abs(c) ** 0.85, c), 8.0 + 107.0 * s**1.15, -55.0 * c * c - 2.0 * s)
    return pts - pts.mean(axis=0)


#: The 68x3 face every synthetic identity starts from (mm, centred; see :func:`_drawn_face`).
DRAWN_FACE: np.ndarray = _drawn_face()

#: Azimuth of each jaw point on its horizontal head parallel (radians; -pi/2 = subject's right ear).
_JAW_PHI = np.linspace(-math.pi / 2, math.pi / 2, 17) * 0.98
#: Depth (template z) of the vertical axis the jaw parallels wrap around (roughly the ears' depth).
_JAW_ZC = float(DRAWN_FACE[0, 2])

_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 160], [224, 172, 128], [198, 134, 92], [160, 104, 68], [120, 76, 50],
     [90, 56, 38], [232, 190, 172]], dtype=np.float64,
)  # fmt: skip
_HAIR = np.array([[20, 16, 14], [60, 40, 25], [110, 75, 40], [170, 130, 80], [200, 180, 140], [120, 120, 120],
                  [140, 50, 30]], dtype=np.float64)  # fmt: skip
_IRIS = np.array([[60, 40, 25], [90, 60, 30], [50, 90, 130], [70, 110, 70], [30, 25, 20]], dtype=np.float64)


def _col(c: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(c, 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _identity(rng: np.random.Generator) -> np.ndarray:
    """The template with a random identity: region-wise scales and offsets (mm), eye and mouth opening."""
    pts = DRAWN_FACE.copy()
    width = rng.uniform(0.88, 1.12)
    height = rng.uniform(0.9, 1.1)
    pts[:, 0] *= width
    pts[:, 1] *= height
    eye_gap = rng.uniform(-4, 4)
    pts[36:42, 0] -= eye_gap
    pts[42:48, 0] += eye_gap
    eye_open = rng.uniform(0.4, 1.5)
    for eye in (range(36, 42), range(42, 48)):
        idx = list(eye)
        cy = pts[idx, 1].mean()
        pts[idx, 1] = cy + (pts[idx, 1] - cy) * eye_open
    pts[17:27, 1] += rng.uniform(-5, 4)  # brow height
    nose = rng.uniform(0.8, 1.25)
    pts[27:36, 2] = (pts[27:36, 2] - pts[27, 2]) * nose + pts[27, 2]
    pts[31:36, 0] *= rng.uniform(0.8, 1.3)
    mouth_w = rng.uniform(0.8, 1.25)
    mouth_c = pts[48:68, 0].mean()
    pts[48:68, 0] = mouth_c + (pts[48:68, 0] - mouth_c) * mouth_w
    pts[48:68, 1] += rng.uniform(-4, 4)
    opening = rng.uniform(0, 14) if rng.random() < 0.5 else 0.0
    lower = [55, 56, 57, 58, 59, 65, 66, 67]
    pts[lower, 1] += opening
    pts[[64, 60], 1] += opening * 0.3
    pts[:17, 1] = pts[:17, 1] + np.sin(np.linspace(0, math.pi, 17)) * opening * 0.5  # the jaw drops too
    pts += rng.normal(0, 0.8, pts.shape)  # individual asymmetry
    return pts


def _jaw_parallels(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (A in x, C in z) of each jaw point's horizontal ellipse around the vertical head axis."""
    s, c = np.sin(_JAW_PHI), np.cos(_JAW_PHI)
    a = np.abs(pts[:17, 0]) / np.maximum(np.abs(s), 1e-3)
    a[8] = (a[7] + a[9]) / 2
    cdepth = (pts[:17, 2] - _JAW_ZC) / np.maximum(c, 1e-3)
    cdepth = np.maximum(cdepth, 20.0)
    return a, cdepth


def _jaw_on_contour(pts: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jaw points in 3D, occluded ones moved along their parallel to the silhouette; and visibility."""
    a, cz = _jaw_parallels(pts)
    jaw = pts[:17].copy()
    visible = np.ones(17, dtype=bool)
    for i in range(17):
        phi = _JAW_PHI[i]
        # Outward normal of the parallel x = A sin(phi), z = zc + C cos(phi): (C sin, 0, A cos).
        nz = r[2, 0] * cz[i] * math.sin(phi) + r[2, 2] * a[i] * math.cos(phi)
        if nz >= 0:
            continue
        visible[i] = False
        # Silhouette: r20 C sin + r22 A cos = 0. Of the two solutions take the one nearest phi.
        base = math.atan2(-r[2, 2] * a[i], r[2, 0] * cz[i])
        cands = [base, base + math.pi, base - math.pi]
        star = min(cands, key=lambda p: abs(p - phi))
        jaw[i, 0] = a[i] * math.sin(star)
        jaw[i, 2] = _JAW_ZC + cz[i] * math.cos(star)
    return jaw, visible


def _ellipsoid_outline(
    centre: np.ndarray, axes: np.ndarray, r: np.ndarray, n: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic outline of an axis-aligned (in head coordinates) ellipsoid posed by ``r``: (n, 2) points.

    The silhouette of ``x^T Q x = 1`` seen along z is the ellipse of the Schur complement of ``Q``'s zz
    entry, so no surface sampling or hull is needed. Also returns the projected centre.
    """
    q = r @ np.diag(1.0 / np.asarray(axes, dtype=np.float64) ** 2) @ r.T
    m = q[:2, :2] - np.outer(q[:2, 2], q[2, :2]) / q[2, 2]
    lam, vec = np.linalg.eigh(m)
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 0)
    c2 = (r @ centre)[:2]
    return (vec @ (circle / np.sqrt(lam)[:, None])).T + c2, c2


def _hull(p: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain) of a few dozen 2D points, counter-clockwise."""
    pts = p[np.lexsort((p[:, 1], p[:, 0]))].tolist()

    def half(seq: list[list[float]]) -> list[list[float]]:
        out: list[list[float]] = []
        for q in seq:
            while len(out) >= 2:
                o, a = out[-2], out[-1]
                if (a[0] - o[0]) * (q[1] - o[1]) - (a[1] - o[1]) * (q[0] - o[0]) > 0:
                    break
                out.pop()
            out.append(q)
        return out

    lo, up = half(pts), half(pts[::-1])
    return np.array(lo[:-1] + up[:-1])


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = rng.integers(3)
    if kind == 0:  # linear gradient between two colours
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        ang = rng.uniform(0, 2 * math.pi)
        t = np.linspace(-0.5, 0.5, size)
        ramp = (math.cos(ang) * t[None, :] + math.sin(ang) * t[:, None]) / 1.42 + 0.5
        arr = c0 + ramp[..., None] * (c1 - c0)
        img = Image.fromarray(arr.astype(np.uint8))
    elif kind == 1:  # low-frequency colour noise
        g = int(rng.integers(2, 9))
        small = rng.uniform(0, 255, (g, g, 3)).astype(np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    else:
        img = Image.new("RGB", (size, size), _col(rng.uniform(0, 255, 3)))
    if rng.random() < 0.7:  # clutter: random shapes
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 12))):
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
            w, h = rng.uniform(0.05, 0.5, 2) * size
            col = _col(rng.uniform(0, 255, 3))
            shape = rng.integers(3)
            if shape == 0:
                draw.ellipse((x0, y0, x0 + w, y0 + h), fill=col)
            elif shape == 1:
                draw.rectangle((x0, y0, x0 + w, y0 + h), fill=col)
            else:
                draw.line((x0, y0, x0 + w, y0 + h), fill=col, width=int(rng.integers(1, max(2, size // 40))))
    return img


def _draw_polygon(draw: ImageDraw.ImageDraw, p: np.ndarray, **kw: Any) -> None:
    draw.polygon([(float(x), float(y)) for x, y in p], **kw)


def render_face(
    rng: np.random.Generator,
    size: int = 256,
    yaw: float | None = None,
    pitch: float | None = None,
    roll: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Render one random face -> ``(uint8 HxWx3 image, 68x2 0-based landmarks, {"yaw","pitch","roll"})``.

    Angles are degrees (see :mod:`superfan.pose` for the signs); any left ``None`` is drawn from ``rng``:
    yaw uniform -90..90 (all pose bins equally likely, like LS3D-W balanced), pitch and roll -20..20.
    The same generator state gives the same face, so packs are reproducible.
    """
    yaw = float(rng.uniform(-90, 90)) if yaw is None else float(yaw)
    pitch = float(rng.uniform(-20, 20)) if pitch is None else float(pitch)
    roll = float(rng.uniform(-20, 20)) if roll is None else float(roll)
    r = rotation(math.radians(pitch), math.radians(yaw), math.radians(roll))
    shape = _identity(rng)
    jaw3, _ = _jaw_on_contour(shape, r)
    pts3 = shape.copy()
    pts3[:17] = jaw3
    proj = pts3 @ r[:2].T
    x0, y0 = proj.min(0)
    x1, y1 = proj.max(0)
    scale = (size / 2.4) / max(x1 - x0, y1 - y0)
    centre = (size - 1) / 2.0
    offset = np.array([centre, centre]) - scale * np.array([(x0 + x1) / 2, (y0 + y1) / 2])

    def to_img(p3: np.ndarray) -> np.ndarray:
        return scale * (p3 @ r[:2].T) + offset

    landmarks = to_img(pts3)
    normal_z = r[2]  # z component of rotated vectors: dot with this row

    # ---------------------------------------------------------------------------------- appearance
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.85, 1.1, 3)
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.5), 1.0])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.35, 0.65)
    cast = rng.uniform(0.85, 1.15, 3)

    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    # Shoulders and neck, below the head.
    chin = to_img(np.array([[0.0, pts3[8, 1], _JAW_ZC]]))[0]
    neck_w = scale * 42
    sy = chin[1] + scale * 55
    draw.ellipse((chin[0] - scale * 170, sy, chin[0] + scale * 170, sy + scale * 220),
                 fill=_col(rng.uniform(0, 255, 3)))  # fmt: skip
    draw.rectangle((chin[0] - neck_w, chin[1] - scale * 50, chin[0] + neck_w, sy + scale * 30),
                   fill=_col(skin * cast * ambient * 0.85))  # fmt: skip

    # Head = cranium ellipsoid (hair or skin) + the convex hull of the face's landmarks and forehead (skin).
    top = float(pts3[17:27, 1].min())
    cranium_c = np.array([0.0, top + 10.0, _JAW_ZC + 5.0])
    cranium_ax = np.array([abs(shape[[0, 16], 0]).max() * 1.05, 75.0, 100.0])
    cranium, _ = _ellipsoid_outline(cranium_c, cranium_ax, r)
    cranium = cranium * scale + offset
    hairline = top - rng.uniform(8, 30)
    forehead3 = np.stack([pts3[17:27, 0] * 1.05, np.full(10, hairline), pts3[17:27, 2] - 4.0], 1)
    face = _hull(np.concatenate([landmarks, to_img(forehead3)]))
    bx0, by0 = np.floor(np.minimum(face.min(0), cranium.min(0))).astype(int).clip(0, size - 1)
    bx1, by1 = np.ceil(np.maximum(face.max(0), cranium.max(0))).astype(int).clip(0, size - 1) + 1
    origin = (int(bx0), int(by0))
    crop_wh = (int(bx1 - bx0), int(by1 - by0))

    def local_mask(poly: np.ndarray) -> Image.Image:
        m = Image.new("L", crop_wh, 0)
        ImageDraw.Draw(m).polygon([(float(x - bx0), float(y - by0)) for x, y in poly], fill=255)
        return m

    # Lambert shading with normals of an ellipsoid fitted to the head's outline: cheap per-pixel normals.
    hb = np.concatenate([face, cranium])
    cx, cy = (hb.min(0) + hb.max(0)) / 2
    rx, ry = max(float(np.ptp(hb[:, 0])) / 2, 1.0), max(float(np.ptp(hb[:, 1])) / 2, 1.0)
    nx, ny = np.meshgrid((np.arange(bx0, bx1) - cx) / rx, (np.arange(by0, by1) - cy) / ry)
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0.02, 1))
    lam = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    shade = (ambient + (1 - ambient) * lam)[..., None]
    skin_patch = Image.fromarray((skin * cast * shade).clip(0, 255).astype(np.uint8))
    has_hair = rng.random() < 0.8
    hair = _HAIR[rng.integers(len(_HAIR))]
    if has_hair:
        hair_patch = Image.fromarray((hair * cast * (0.5 + 0.5 * shade)).clip(0, 255).astype(np.uint8))
        img.paste(hair_patch, origin, local_mask(cranium))
    else:
        img.paste(skin_patch, origin, local_mask(cranium))
    img.paste(skin_patch, origin, local_mask(face))
    draw = ImageDraw.Draw(img)

    def tone(rgb: np.ndarray, nvec: tuple[float, float, float] = (0, 0, 1)) -> tuple[int, int, int]:
        n = r @ np.asarray(nvec, dtype=np.float64)
        n /= np.linalg.norm(n)
        return _col(rgb * cast * (ambient + (1 - ambient) * max(float(n @ light), 0.0)))

    def facing(nvec: tuple[float, float, float]) -> float:
        n = np.asarray(nvec, dtype=np.float64)
        return float(normal_z @ (n / np.linalg.norm(n)))

    width_px = max(1, int(round(scale * 3)))
    # Brows.
    brow_col = (hair if has_hair and rng.random() < 0.7 else _HAIR[rng.integers(len(_HAIR))]) * 0.8
    brow_w = max(1, int(round(scale * rng.uniform(3, 6))))
    for idx, side in ((range(17, 22), -1), (range(22, 27), 1)):
        if facing((side * 0.5, -0.2, 1)) > -0.05:
            line = [tuple(map(float, landmarks[i])) for i in idx]
            draw.line(line, fill=tone(brow_col), width=brow_w, joint="curve")
    # Eyes: sclera, iris and pupil clipped to the lids, lid outline.
    iris_col = _IRIS[rng.integers(len(_IRIS))]
    gaze = rng.uniform(-0.25, 0.25, 2)
    for idx, side in ((list(range(36, 42)), -1), (list(range(42, 48)), 1)):
        if facing((side * 0.45, 0, 1)) <= 0.0:
            continue
        eye = landmarks[idx]
        _draw_polygon(draw, eye, fill=tone(np.array([235.0, 232, 225]) * 0.9, (side * 0.45, 0, 1)))
        ic = to_img((pts3[idx].mean(0) + np.array([gaze[0] * 8, gaze[1] * 3, 3.0]))[None])[0]
        rad = scale * 5.2
        rx_ = rad * max(abs(float(r[0, 0])), 0.35)
        ex0, ey0 = np.floor(eye.min(0)).astype(int) - 1
        ex1, ey1 = np.ceil(eye.max(0)).astype(int) + 2
        if ex1 - ex0 < 2 or ey1 - ey0 < 2:
            continue
        ew, eh = int(ex1 - ex0), int(ey1 - ey0)
        lid_mask = Image.new("L", (ew, eh), 0)
        ImageDraw.Draw(lid_mask).polygon([(float(x - ex0), float(y - ey0)) for x, y in eye], fill=255)
        iris = img.crop((int(ex0), int(ey0), int(ex1), int(ey1)))
        idraw = ImageDraw.Draw(iris)
        lx, ly = ic[0] - ex0, ic[1] - ey0
        idraw.ellipse((lx - rx_, ly - rad, lx + rx_, ly + rad), fill=tone(iris_col))
        idraw.ellipse((lx - rx_ * 0.45, ly - rad * 0.45, lx + rx_ * 0.45, ly + rad * 0.45), fill=(8, 8, 8))
        img.paste(iris, (int(ex0), int(ey0)), lid_mask)
        lid = [tuple(map(float, q)) for q in eye] + [tuple(map(float, eye[0]))]
        draw.line(lid[:5], fill=tone(skin * 0.35), width=max(1, int(round(scale * 1.5))))
        draw.line(lid[3:], fill=tone(skin * 0.6), width=max(1, int(round(scale * 0.8))))
    # Nose: a shaded side plane, the ridge, nostrils.
    side_lit = 1 if light[0] > 0 else -1
    nose_side = np.array([landmarks[27], landmarks[30], landmarks[33], landmarks[31 if side_lit > 0 else 35]])
    _draw_polygon(draw, nose_side, fill=tone(skin * 0.8, (-side_lit * 0.8, 0.1, 0.6)))
    nose_base = landmarks[[31, 32, 33, 34, 35, 30]]
    _draw_polygon(draw, nose_base, fill=tone(skin * 0.95, (0, 0.4, 1)))
    draw.line([tuple(map(float, landmarks[i])) for i in (28, 29, 30)], fill=tone(skin * 1.1), width=width_px)
    for n, side in ((32, -1), (34, 1)):
        if facing((side * 0.3, 0.8, 0.6)) > -0.2:
            p = landmarks[n]
            rn = scale * 2.5
            draw.ellipse((p[0] - rn, p[1] - rn * 0.6, p[0] + rn, p[1] + rn * 0.6), fill=tone(skin * 0.25))
    # Mouth: lips, then the cavity when open, then the lip line.
    lip_col = skin * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.8, 1.1)
    _draw_polygon(draw, landmarks[48:60], fill=tone(lip_col))
    inner = landmarks[60:68]
    if np.ptp(inner[:, 1]) > scale * 2:
        _draw_polygon(draw, inner, fill=(40, 15, 15))
        teeth = landmarks[[60, 61, 62, 63, 64]]
        draw.line([tuple(map(float, q)) for q in teeth], fill=tone(np.array([230.0, 225, 210])), width=width_px)
    draw.line(
        [tuple(map(float, landmarks[i])) for i in (60, 61, 62, 63, 64)],
        fill=tone(lip_col * 0.45),
        width=width_px,
    )
    draw.line([tuple(map(float, landmarks[i])) for i in (48, 60)] + [tuple(map(float, landmarks[64])),
              tuple(map(float, landmarks[54]))], fill=tone(lip_col * 0.5), width=1)  # fmt: skip

    # Camera: slight blur (optics and anti-aliasing of PIL's hard polygon edges) and sensor noise.
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.1)))
    arr = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.5:
        arr = arr + rng.normal(0, rng.uniform(1, 5), arr.shape).astype(np.float32)
    image = np.clip(arr, 0, 255).astype(np.uint8)
    return image, landmarks.astype(np.float64), {"yaw": yaw, "pitch": pitch, "roll": roll}
