"""Procedural faces, section 4.5 augmentation and the x4 / real-world degradation (fast, no shards)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageDraw

from superfan.config import AugmentConfig, DegradeConfig
from superfan.data import synthetic
from superfan.data.augment import IDENTITY, AugmentParams, apply_color_jitter, sample_params, warp_face
from superfan.data.degrade import blur, degrade, downsample, gaussian_kernels, sample_blur
from superfan.data.synthetic import render_face
from superfan.landmarks import GROUPS, crop_matrix, landmark_box, transform_points
from superfan.pose import rotation


def _jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ synthetic


def test_render_is_deterministic_and_valid() -> None:
    a = render_face(np.random.default_rng(5))
    b = render_face(np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    for seed in range(20):
        img, pts, pose = render_face(np.random.default_rng(seed), size=256)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert pts.shape == (68, 2) and np.isfinite(pts).all()
        assert -90 <= pose["yaw"] <= 90 and -20 <= pose["pitch"] <= 20 and -20 <= pose["roll"] <= 20
        x0, y0, x1, y1 = landmark_box(pts)
        assert max(x1 - x0, y1 - y0) == pytest.approx(256 / 2.4, rel=1e-6)  # the packed-crop contract
        assert (x0 + x1) / 2 == pytest.approx(127.5) and (y0 + y1) / 2 == pytest.approx(127.5)
    img, pts, pose = render_face(np.random.default_rng(0), size=128, yaw=30.0, pitch=0.0, roll=0.0)
    assert img.shape == (128, 128, 3) and pose == {"yaw": 30.0, "pitch": 0.0, "roll": 0.0}


def test_yaw_sign_and_eye_order() -> None:
    """Frontal: subject's right eye on the image left. Positive yaw moves the nose to the image left."""
    _, pts, _ = render_face(np.random.default_rng(1), yaw=0.0, pitch=0.0, roll=0.0)
    assert pts[list(GROUPS["right_eye"]), 0].mean() < 127.5 < pts[list(GROUPS["left_eye"]), 0].mean()
    _, left, _ = render_face(np.random.default_rng(1), yaw=45.0, pitch=0.0, roll=0.0)
    eyes_mid = (left[36:48, 0].mean() + left[27, 0]) / 2
    assert left[30, 0] < eyes_mid  # nose tip towards the image left


def test_occluded_jaw_points_slide_to_the_silhouette() -> None:
    shape = synthetic._identity(np.random.default_rng(3))
    for yaw in (-75.0, -40.0, 40.0, 75.0):
        r = rotation(0.0, math.radians(yaw), 0.0)
        jaw, visible = synthetic._jaw_on_contour(shape, r)
        assert not visible.all() and visible.any()
        hidden = np.flatnonzero(~visible)
        # Hidden points are on the far side: the subject's right (0-7) when the nose turns image-left (yaw>0).
        assert (hidden < 8).all() if yaw > 0 else (hidden > 8).all()
        a, cz = synthetic._jaw_parallels(shape)
        for i in hidden:
            # On its parallel, and its surface normal is perpendicular to the view: the silhouette.
            phi = math.atan2(jaw[i, 0] / a[i], (jaw[i, 2] - synthetic._JAW_ZC) / cz[i])
            normal = np.array([cz[i] * math.sin(phi), 0.0, a[i] * math.cos(phi)])
            assert abs((r @ normal)[2]) < 1e-6 * np.linalg.norm(normal)


def _crop64(img: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return warp_face(_jpeg(img), landmark_box(pts), pts, IDENTITY, AugmentConfig(), draft=False)


def test_synthetic_faces_are_hard_at_16px() -> None:
    """The 16x16 round trip destroys the local structure at the landmarks and a fixed eye localiser's
    accuracy; a mean-shape predictor is far off because of the pose range (so a FAN must learn)."""
    energy_hr, energy_lr, err_hr, err_lr, crops = [], [], [], [], []
    for seed in range(24):
        img, pts, pose = render_face(np.random.default_rng(100 + seed))
        hr, p64 = _crop64(img, pts)
        crops.append(p64)
        x = torch.from_numpy(hr.copy()).permute(2, 0, 1)[None].float() / 255
        up = F.interpolate(downsample(x), scale_factor=4, mode="bilinear", align_corners=False)
        for t, store in ((x, energy_hr), (up, energy_lr)):
            g = t.mean(1, keepdim=True)
            hp = (g - F.avg_pool2d(g, 5, 1, 2, count_include_pad=False)).abs()[0, 0].numpy()
            for i in list(range(36, 48)) + list(range(48, 68)):
                cx, cy = np.clip(np.round(p64[i]).astype(int), 2, 61)
                store.append(hp[cy - 2 : cy + 3, cx - 2 : cx + 3].mean())
        if abs(pose["yaw"]) < 35:  # fixed localiser: darkest 3x3 spot (the pupil) near each eye
            for eye in (GROUPS["right_eye"], GROUPS["left_eye"]):
                c = p64[list(eye)].mean(0)
                for t, store in ((x, err_hr), (up, err_lr)):
                    g = F.avg_pool2d(t.mean(1, keepdim=True), 3, 1, 1)[0, 0].numpy()
                    x0, y0 = np.clip(np.round(c - 5).astype(int), 0, 53)
                    win = g[y0 : y0 + 11, x0 : x0 + 11]
                    yy, xx = np.unravel_index(win.argmin(), win.shape)
                    store.append(math.hypot(x0 + xx - c[0], y0 + yy - c[1]))
    assert np.mean(energy_lr) < 0.5 * np.mean(energy_hr)
    assert len(err_hr) >= 6 and np.mean(err_lr) > np.mean(err_hr)
    crops_a = np.stack(crops)
    mean_shape = crops_a.mean(0)
    nme = [np.linalg.norm(c - mean_shape, axis=1).mean() / math.sqrt(np.prod(np.ptp(c, 0))) for c in crops_a]
    assert np.mean(nme) > 0.05


# ------------------------------------------------------------------------------------------ augmentation


def test_strength_zero_is_the_crop() -> None:
    cfg = AugmentConfig(strength=0.0)
    rng = np.random.default_rng(0)
    assert all(sample_params(rng, cfg) == IDENTITY for _ in range(20))
    img, pts, _ = render_face(np.random.default_rng(7))
    box = landmark_box(pts)
    jpeg = _jpeg(img)
    out, p64 = warp_face(jpeg, box, pts, IDENTITY, cfg)
    m = crop_matrix(box, 64, 50.0)
    assert np.allclose(p64, transform_points(pts, m))
    y0, y1 = p64[:, 1].min(), p64[:, 1].max()
    assert y1 - y0 == pytest.approx(50.0) and (y0 + y1) / 2 == pytest.approx(31.5)
    # Direct crop: full decode, inverse warp, no draft -> the same pixels up to DCT-scaled decoding.
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    a, b, c = inv[0]
    d, e, f = inv[1]
    direct = Image.open(io.BytesIO(jpeg)).transform(
        (64, 64), Image.Transform.AFFINE,
        (a, b, c - 0.5 * (a + b) + 0.5, d, e, f - 0.5 * (d + e) + 0.5), Image.Resampling.BILINEAR,
    )  # fmt: skip
    full, _ = warp_face(jpeg, box, pts, IDENTITY, cfg, draft=False)
    assert np.array_equal(full, np.asarray(direct))
    assert np.abs(out.astype(float) - np.asarray(direct, dtype=float)).mean() < 4.0


def _marker_face() -> tuple[bytes, np.ndarray]:
    """A 256 px 'face' whose right eye is a red disc, left eye blue, mouth green, at known landmarks."""
    img = Image.new("RGB", (256, 256), (128, 128, 128))
    d = ImageDraw.Draw(img)
    _, pts, _ = render_face(np.random.default_rng(2), yaw=0.0, pitch=0.0, roll=0.0)
    for group, col in (("right_eye", (255, 0, 0)), ("left_eye", (0, 0, 255)), ("outer_mouth", (0, 255, 0))):
        cx, cy = pts[list(GROUPS[group])].mean(0)
        d.ellipse((cx - 9, cy - 9, cx + 9, cy + 9), fill=col)
    return _jpeg(np.asarray(img)), pts


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("rot", [-30.0, 0.0, 25.0])
def test_flip_and_rotation_keep_landmarks_on_their_features(flip: bool, rot: float) -> None:
    jpeg, pts = _marker_face()
    params = AugmentParams(flip=flip, scale=1.1, rotation=rot)
    out, p64 = warp_face(jpeg, landmark_box(pts), pts, params, AugmentConfig())
    want = {"right_eye": 2 if flip else 0, "left_eye": 0 if flip else 2, "outer_mouth": 1}  # dominant channel
    for group, channel in want.items():
        cx, cy = np.round(p64[list(GROUPS[group])].mean(0)).astype(int)
        assert int(np.argmax(out[cy, cx].astype(int))) == channel, (group, out[cy, cx])
    # After a flip the labels follow the subject: the right eye (36-41) is still on the image left.
    assert p64[list(GROUPS["right_eye"]), 0].mean() < p64[list(GROUPS["left_eye"]), 0].mean()
    if rot:
        ang = math.degrees(math.atan2(*(p64[45] - p64[36])[::-1]))
        # Positive rotation = counter-clockwise on screen; the flip (applied after it) mirrors the sense.
        assert ang == pytest.approx(rot if flip else -rot, abs=3.0)


def test_sample_params_ranges_scale_with_strength() -> None:
    rng = np.random.default_rng(0)
    for strength in (0.5, 1.0):
        ps = [sample_params(rng, AugmentConfig(strength=strength)) for _ in range(400)]
        sc = np.array([p.scale for p in ps])
        ro = np.array([p.rotation for p in ps])
        assert sc.min() >= 1 + strength * (0.85 - 1) - 1e-9 and sc.max() <= 1 + strength * 0.15 + 1e-9
        assert np.abs(ro).max() <= 30 * strength + 1e-9 and np.abs(ro).max() > 25 * strength
        assert 0.3 * min(strength, 1) < np.mean([p.flip for p in ps]) < 0.7 * min(strength, 1) + 0.05
        jit = np.array([p.jitter for p in ps])
        assert np.abs(jit - 1).max() <= 0.2 * strength + 1e-9


def test_color_jitter_matches_the_sequential_definition() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    f = 0.8 + 0.4 * torch.rand(4, 3, generator=g)
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    ref = x * f[:, 0, None, None, None]
    m = (ref * w).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    ref = (ref - m) * f[:, 1, None, None, None] + m
    grey = (ref * w).sum(1, keepdim=True)
    ref = ((ref - grey) * f[:, 2, None, None, None] + grey).clamp(0, 1)
    assert torch.allclose(apply_color_jitter(x, f), ref, atol=1e-5)
    assert torch.equal(apply_color_jitter(x, torch.ones(4, 3)), x)


# ------------------------------------------------------------------------------------------ degradation


def test_downsample_shapes_and_range() -> None:
    hr = torch.rand(3, 3, 64, 64)
    for kernel in ("bicubic", "bilinear", "area"):
        lr = downsample(hr, kernel)
        assert lr.shape == (3, 3, 16, 16) and lr.min() >= 0 and lr.max() <= 1
    flat = torch.full((1, 3, 64, 64), 0.3)
    assert torch.allclose(downsample(flat), torch.full((1, 3, 16, 16), 0.3), atol=1e-5)


def test_blur_kernels_are_odd_normalised_and_in_range() -> None:
    cfg = DegradeConfig(blur_prob=0.7)
    sizes, sigmas = sample_blur(np.random.default_rng(0), 2000, cfg)
    used = sizes[sizes > 0]
    assert set(np.unique(used)) == {3, 5, 7} and (used % 2 == 1).all()
    assert 0.6 < len(used) / len(sizes) < 0.8 and sigmas.min() >= 0.5 and sigmas.max() <= 1.5
    k = gaussian_kernels(np.array([3, 7, 0]), np.array([1.0, 1.0, 1.0]), 7)
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(3))
    assert (k[0, 0] == 0).all() and (k[0, 2:5, 2:5] > 0).all()  # 3x3 support inside the 7x7 window
    assert k[2, 3, 3] == 1  # no blur = delta
    img = torch.rand(3, 3, 20, 20)
    out = blur(img, np.array([3, 7, 0]), np.array([1.0, 1.5, 1.0]))
    assert torch.equal(out[2], img[2]) and out[1].std() < img[1].std()
    flat = torch.full((1, 3, 20, 20), 0.6)
    assert torch.allclose(blur(flat, np.array([7]), np.array([1.5])), flat, atol=1e-6)


def test_degrade_is_seeded_and_real_world_changes_the_input() -> None:
    hr = torch.rand(6, 3, 64, 64)
    cfg = DegradeConfig(real_world=True, blur_prob=1.0, jpeg_prob=1.0, color_prob=1.0, noise_prob=1.0)
    a = degrade(hr, cfg, np.random.default_rng(1))
    b = degrade(hr, cfg, np.random.default_rng(1))
    clean = degrade(hr, cfg, np.random.default_rng(1), real_world=False)
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(clean, downsample(hr)) and (a - clean).abs().mean() > 0.01


def test_real_world_blur_applies_to_the_input_by_default_or_to_hr() -> None:
    """Section 5.3 blurs "the input images": blur_on=lr is blur(downsample(hr)), blur_on=hr is
    downsample(blur(hr)); one seed draws the same kernels in both, and the input blur is the stronger."""
    hr = torch.rand(5, 3, 64, 64)
    only_blur = {"real_world": True, "blur_prob": 1.0, "jpeg_prob": 0.0, "color_prob": 0.0, "noise_prob": 0.0}
    assert DegradeConfig().blur_on == "lr"
    sizes, sigmas = sample_blur(np.random.default_rng(4), 5, DegradeConfig(**only_blur))
    assert (sizes >= 3).all()
    on_lr = degrade(hr, DegradeConfig(**only_blur), np.random.default_rng(4))
    on_hr = degrade(hr, DegradeConfig(**only_blur, blur_on="hr"), np.random.default_rng(4))
    assert on_lr.shape == on_hr.shape == (5, 3, 16, 16)
    torch.testing.assert_close(on_lr, blur(downsample(hr), sizes, sigmas))
    torch.testing.assert_close(on_hr, downsample(blur(hr, sizes, sigmas)))
    assert (on_lr - on_hr).abs().mean() > 0.01
    clean = downsample(hr)  # the same kernel removes more of the 16 px detail when it acts at 16 px
    assert (on_lr - clean).abs().mean() > 2 * (on_hr - clean).abs().mean()
    with pytest.raises(ValueError):
        DegradeConfig(blur_on="both")
