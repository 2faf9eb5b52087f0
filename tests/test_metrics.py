"""Metrics against scikit-image (PSNR/SSIM) and hand-computed NME/CED/AUC, pose bins and balanced means."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from superfan import metrics
from superfan.landmarks import landmark_box


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0
        )
    )


def _pairs(kind: str, n: int = 3, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed({"random": 1, "structured": 2}[kind])
    if kind == "random":
        hr = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
        sr = (hr + 0.15 * torch.randn(hr.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    else:  # structured: smooth faces-like gradients + edges, and a blurred/shifted reconstruction
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        base = torch.stack([0.5 + 0.4 * torch.sin(3 * xx), 0.5 + 0.4 * torch.cos(2 * yy), (xx * xx + yy * yy < 0.5)])
        hr = torch.stack([base.roll(k * 3, dims=-1) for k in range(n)]).double().clamp(0, 1)
        sr = F.interpolate(F.avg_pool2d(hr, 4), size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    return sr, hr


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_psnr_ssim_match_skimage_per_image_and_batch(kind: str) -> None:
    sr, hr = _pairs(kind)
    p, s = metrics.psnr(sr, hr), metrics.ssim(sr, hr)
    assert p.shape == s.shape == (3,)
    for i in range(3):
        a, b = sr[i].numpy(), hr[i].numpy()
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1), abs=1e-3)
        assert s[i].item() == pytest.approx(_sk_ssim(a, b), abs=1e-3)
        # one image alone gives the same value as inside the batch
        assert metrics.ssim(sr[i : i + 1], hr[i : i + 1]).item() == pytest.approx(s[i].item(), abs=1e-12)
        assert metrics.psnr(sr[i : i + 1], hr[i : i + 1]).item() == pytest.approx(p[i].item(), abs=1e-12)


def test_ssim_float32_inputs_and_identity() -> None:
    sr, hr = _pairs("random", n=2)
    s32 = metrics.ssim(sr.float(), hr.float())
    assert torch.allclose(s32, metrics.ssim(sr, hr), atol=1e-5)
    assert torch.allclose(metrics.ssim(hr, hr), torch.ones(2, dtype=torch.float64))
    assert torch.isinf(metrics.psnr(hr, hr)).all()
    with pytest.raises(ValueError):
        metrics.ssim(hr[:, :, :8, :8], hr[:, :, :8, :8])  # smaller than the 11x11 window
    with pytest.raises(ValueError):
        metrics.psnr(hr, hr[:1])


def test_psnr_hand_value() -> None:
    hr = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    sr = torch.full_like(hr, 0.1)  # MSE 0.01 -> 20 dB
    assert metrics.psnr(sr, hr).item() == pytest.approx(20.0, abs=1e-9)


def _face(w: float = 40.0, h: float = 10.0) -> torch.Tensor:
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(0, w, 68), rng.uniform(0, h, 68)], axis=1)
    pts[0], pts[1] = (0, 0), (w, h)  # the box is exactly w x h
    return torch.tensor(pts + 5.0)


def test_nme_constant_offset_is_d_over_sqrt_wh() -> None:
    gt = _face(40.0, 10.0)
    x0, y0, x1, y1 = landmark_box(gt.numpy())
    assert (x1 - x0, y1 - y0) == pytest.approx((40.0, 10.0))
    d = 3.0
    shift = torch.tensor([d * 0.6, d * 0.8], dtype=torch.float64)  # length d
    e = metrics.nme((gt + shift)[None], gt[None])
    assert e.shape == (1,)
    assert e.item() == pytest.approx(d / math.sqrt(40 * 10), rel=1e-12)


def test_nme_of_points_keeps_the_whole_faces_normaliser() -> None:
    gt = _face(40.0, 10.0)
    pred = gt.clone()
    pred[:17] += torch.tensor([3.0, 4.0])  # the jaw 5 px off, everything else exact
    jaw = metrics.nme_of_points(pred[None], gt[None], range(17)).item()
    assert jaw == pytest.approx(5.0 / math.sqrt(40 * 10))
    assert metrics.nme_of_points(pred[None], gt[None], range(17, 68)).item() == pytest.approx(0.0)
    assert metrics.nme(pred[None], gt[None]).item() == pytest.approx(jaw * 17 / 68)


def test_nme_masks_missing_and_invisible_points_and_failed_predictions() -> None:
    gt = _face(20.0, 20.0)
    pred = gt.clone()
    pred[10] += torch.tensor([4.0, 0.0])  # only point 10 is wrong
    # all points used: 4 / 68 / 20
    assert metrics.nme(pred[None], gt[None]).item() == pytest.approx(4 / 68 / 20)
    # point 10 invisible: perfect
    vis = torch.ones(1, 68, dtype=torch.bool)
    vis[0, 10] = False
    assert metrics.nme(pred[None], gt[None], vis).item() == pytest.approx(0.0)
    # point 10 missing from the GT: perfect too, box from the other points (0 and 1 still span 20x20)
    gt_missing = gt.clone()
    gt_missing[10] = float("nan")
    assert metrics.nme(pred[None], gt_missing[None]).item() == pytest.approx(0.0)
    # no landmarks at all -> NaN; a NaN prediction at a used point -> inf (a failure)
    none = torch.full((68, 2), float("nan"), dtype=torch.float64)
    bad = gt.clone()
    bad[3] = float("nan")
    e = metrics.nme(torch.stack([gt, gt, bad]), torch.stack([gt, none, gt]))
    assert e[0].item() == 0.0 and math.isnan(e[1].item()) and math.isinf(e[2].item())
    # numpy input works too
    assert metrics.nme(pred[None].numpy(), gt[None].numpy()).item() == pytest.approx(4 / 68 / 20)


def test_ced_counts_le_and_drops_nan() -> None:
    e = [0.0, 0.05, 0.1, float("nan"), float("inf")]
    c = metrics.ced(e, [0.0, 0.05, 0.1, 1.0])
    assert c.tolist() == pytest.approx([0.25, 0.5, 0.75, 0.75])
    assert np.isnan(metrics.ced([float("nan")], [0.1])).all()


def test_auc_hand_cases() -> None:
    assert metrics.auc(np.zeros(7)) == 1.0
    assert metrics.auc(np.full(5, 0.2)) == 0.0
    assert metrics.auc(np.full(5, np.inf)) == 0.0
    assert metrics.auc(np.linspace(0, 0.1, 10001)) == pytest.approx(0.5, abs=1e-3)
    # a single error e: area = 1 - e / T (up to the grid's half step)
    assert metrics.auc([0.03], threshold=0.1) == pytest.approx(0.7, abs=1e-3)
    assert metrics.auc([0.03], threshold=0.06) == pytest.approx(0.5, abs=1e-3)
    rng = np.random.default_rng(1)
    e = rng.exponential(0.05, 500)
    closed = np.mean(np.clip(1 - e / 0.1, 0, 1))
    assert metrics.auc(e, 0.1, steps=1000) == pytest.approx(closed, abs=1 / 2000)
    assert math.isnan(metrics.auc([float("nan")]))
    assert metrics.auc(torch.zeros(3)) == 1.0
    with pytest.raises(ValueError):
        metrics.auc([0.1], threshold=0)


def test_pose_bins_edges_sign_and_unknown() -> None:
    #        bin:    0     1     2     1      2      0     -     2
    yaw = np.array([0.0, 30.0, 60.0, -45.0, -90.0, 29.9, np.nan, 120.0])
    err = np.array([0.0, 0.2, 0.05, 0.2, 0.05, 0.0, 0.0, 0.05])
    counts = metrics.pose_counts(err, yaw)
    assert counts == {"0_30": 2, "30_60": 2, "60_90": 3, "unknown_yaw": 1, "all": 8}
    res = metrics.auc_by_pose(err, yaw)
    assert set(res) == {"0_30", "30_60", "60_90", "balanced"}
    assert res["0_30"] == 1.0
    assert res["30_60"] == 0.0
    assert res["60_90"] == pytest.approx(0.5, abs=1e-3)
    assert res["balanced"] == pytest.approx((1.0 + 0.0 + 0.5) / 3, abs=1e-3)
    # the unknown-yaw face is in the overall AUC only
    assert metrics.auc(err) != pytest.approx(res["balanced"])


def test_balanced_skips_empty_bins_and_nan_errors() -> None:
    yaw = np.array([10.0, 10.0, 70.0, 40.0])
    err = np.array([0.0, 0.0, 0.2, np.nan])  # the only 30-60 face has no landmarks
    res = metrics.auc_by_pose(err, yaw)
    assert math.isnan(res["30_60"])
    assert res["balanced"] == pytest.approx((1.0 + 0.0) / 2)
    assert metrics.pose_counts(err, yaw)["30_60"] == 0
    assert math.isnan(metrics.auc_by_pose([np.nan], [10.0])["balanced"])
    # other edges give other keys
    assert list(metrics.auc_by_pose([0.0], [50.0], edges=(0.0, 45.0))) == ["0_45", "45_90", "balanced"]


def test_balanced_is_mean_of_bins_not_of_faces() -> None:
    yaw = np.array([5.0] * 9 + [75.0])
    err = np.array([0.0] * 9 + [0.2])
    res = metrics.auc_by_pose(err, yaw)
    assert res["balanced"] == pytest.approx(0.5)  # bins 1.0 and 0.0; the empty middle bin is skipped
    assert metrics.auc(err) == pytest.approx(0.9)


def test_mean_by_pose() -> None:
    res = metrics.mean_by_pose([20.0, 22.0, 30.0, 40.0], [0.0, 10.0, 35.0, np.nan])
    assert res["0_30"] == 21.0 and res["30_60"] == 30.0 and math.isnan(res["60_90"])
    assert res["balanced"] == pytest.approx(25.5)
    assert res["all"] == pytest.approx(28.0)


# ----------------------------------------------------------------------------------------- grid artefact


def _real_faces(root, n: int = 16) -> torch.Tensor:
    """``n`` 64x64 HR faces of faces-300w (AFW), cropped as the packer does (50 px face, no augmentation)."""
    from PIL import Image

    from superfan.config import AugmentConfig
    from superfan.data.augment import IDENTITY, warp_face
    from superfan.pose import read_pts

    out = []
    for pts_path in sorted((root / "afw").glob("*.pts"))[:n]:
        pts = read_pts(pts_path)
        image = Image.open(pts_path.with_suffix(".jpg")).convert("RGB")
        arr, _ = warp_face(image, landmark_box(pts), pts, IDENTITY, AugmentConfig(), draft=False)
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def _checkerboard(size: int = 64) -> torch.Tensor:
    """+-1 patterns of period 2 (x and y) and period 4 (x): what stacked x2 sub-pixel convs leave."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (-1.0) ** (xx + yy) + torch.cos(math.pi / 2 * xx)


def test_grid_power_is_the_share_at_the_grid_frequencies() -> None:
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    smooth = (0.5 + 0.2 * torch.sin(2 * math.pi * xx / 32) * torch.cos(2 * math.pi * yy / 16)).expand(1, 3, 64, 64)
    period4 = (0.5 + 0.2 * torch.cos(math.pi / 2 * yy)).expand(1, 3, 64, 64)  # all its power at 1/4 cycles/px
    assert metrics.grid_power(smooth).item() < 1e-12  # nothing at the 2- and 4-px periods
    assert metrics.grid_power(period4).item() > 0.3  # the Hann window spreads 1/2 of it onto the +-1 bins
    assert metrics.grid_power(torch.full((2, 3, 64, 64), 0.3)).tolist() == [0.0, 0.0]  # no AC power at all
    assert metrics.grid_power(3 * period4).item() == pytest.approx(metrics.grid_power(period4).item())  # scale-free
    assert metrics.grid_power(period4.transpose(-1, -2)).item() == pytest.approx(metrics.grid_power(period4).item())
    with pytest.raises(ValueError, match="divisible by 4"):
        metrics.grid_power(torch.rand(1, 3, 62, 62))
    assert math.isnan(metrics.grid_ratio([], [1.0])) and math.isnan(metrics.grid_ratio([1.0], [0.0]))


def test_grid_artefact_sees_an_injected_checkerboard_on_real_faces(faces_300w) -> None:
    hr = _real_faces(faces_300w)
    assert metrics.grid_artefact(hr, hr) == pytest.approx(1.0)
    textured = (hr + 0.03 * _checkerboard()).clamp(0, 1)  # a few grey levels: PSNR stays ~29 dB
    assert metrics.psnr(textured, hr).mean() > 28
    assert metrics.grid_artefact(textured, hr) > 10
    # a smooth change of the same faces (contrast, brightness, a low-frequency colour cast) keeps HR's level
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    cast = 0.05 * torch.stack([xx, yy, xx * yy])
    assert metrics.grid_artefact((0.8 * hr + 0.1 + cast).clamp(0, 1), hr) == pytest.approx(1.0, abs=0.1)
    # interpolation from 16 px has almost no power there: a blurred image scores below HR, not at it
    lr = F.interpolate(hr, size=16, mode="bicubic", antialias=True, align_corners=False)
    up = F.interpolate(lr, size=64, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert metrics.grid_artefact(up, hr) < 0.1


def test_fresh_icnr_generator_stays_near_hr_level_and_plain_init_does_not(faces_300w) -> None:
    """A fresh generator on real 16 px faces: ICNR's output has about HR's share of power at the 2- and
    4-px periods (median over seeds <= 1.5); the same generators with independent sub-kernels (plain
    Kaiming) put hundreds of times more there. Measured over 12 seeds: ICNR 0.4-5.2 (median ~1), plain
    750-920. A single seed of ICNR can reach a few times HR because the random 3x3 convs *after* the
    nearest-neighbour-like upsampling see 2x2 blocks; that is not the shuffle's checkerboard. Outputs are
    not clamped here: a fresh generator's scale is arbitrary (std 0.5-3x HR's) and clamping would saturate
    it; trained outputs are clamped, as ``superfan evaluate`` does."""
    from superfan.data.degrade import downsample
    from superfan.models import Generator

    hr = _real_faces(faces_300w)
    lr = downsample(hr)
    icnr, plain = [], []
    for seed in range(6):
        for use_icnr, into in ((True, icnr), (False, plain)):
            torch.manual_seed(seed)
            g = Generator(layout=(6, 2, 1), channels=32)  # the tiny profile's generator
            g.reset_parameters(icnr=use_icnr)
            with torch.no_grad():
                into.append(metrics.grid_artefact(g.eval()(lr), hr))
    assert float(np.median(icnr)) <= 1.5 and max(icnr) < 10
    assert min(plain) > 100 and all(p > 50 * i for p, i in zip(plain, icnr, strict=True))
