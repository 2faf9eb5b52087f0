"""Pure metrics of the paper's evaluation: PSNR/SSIM (Table 1), NME, CED and AUC per pose (Table 2).

Nothing here runs a network or reads data; :mod:`superfan.evaluate` feeds these functions, and so does the
training loop's validation, so a sweep's ``val_auc_balanced`` and the report's Table 2 are the same numbers.

Definitions (the paper is silent on several; our choices are marked):

* **PSNR / SSIM are computed on RGB** (our choice: section 5.1 does not say RGB or the Y channel of YCbCr;
  SR papers on natural images often use Y, but the paper gives no colour conversion and Table 1's bilinear
  baseline is not reproducible from the text either way). PSNR uses the MSE over all 3 x H x W values of an
  image; SSIM is the mean over the three channels of the per-channel mean SSIM, as scikit-image does with
  ``channel_axis``. Both are per image and expect images in ``[0, data_range]`` (clamp generator output
  first; the metrics do not clamp, so they stay pure).
* **SSIM** follows Wang et al. 2004: 11 x 11 Gaussian window (sigma 1.5, i.e. scikit-image's truncate 3.5
  -> radius 5), K1 = 0.01, K2 = 0.03, population (not sample) covariances, and the mean over the *valid*
  region only (scikit-image crops ``(win - 1) / 2`` px from every border, which makes its ``reflect``
  padding irrelevant). Equal to ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=0)`` to float rounding; computed with one
  grouped ``conv2d`` per statistic so a whole batch is one call.
* **NME** of a face = mean over its usable points of ``||pred - gt||_2`` divided by ``sqrt(w * h)`` of the
  ground-truth landmark box (``faces.landmark_box``: min/max of the finite GT points), as in [4].
* **CED(t)** = fraction of faces with ``NME <= t``. **AUC@T** = ``(1/T) * integral_0^T CED(t) dt`` by the
  trapezoid rule on ``steps + 1`` equally spaced thresholds ``0, T/steps, ..., T`` (as [4]'s evaluation
  code); it lies in [0, 1] and equals ``mean_i max(0, 1 - NME_i / T)`` to within ``1 / (2 * steps)``.
* **Grid artefact** (ours; the paper has no such measure): the generator's two x2 sub-pixel upsamplers can
  leave a periodic texture of period 2 px (from the 32 -> 64 shuffle) and 4 px (16 -> 32), the
  checkerboard of Aitken et al. 2017 / Odena et al. 2016. :func:`grid_power` is the share of an image's
  spectral power at exactly those frequencies, :func:`grid_artefact` its ratio SR / HR (1.0 = HR's level).
  PSNR and SSIM barely see such a texture; this number does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from superfan.landmarks import POSE_BIN_EDGES, pose_bin

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]

# ----------------------------------------------------------------------------------------------- images


def _check_images(sr: torch.Tensor, hr: torch.Tensor) -> None:
    if sr.shape != hr.shape or sr.dim() != 4:
        raise ValueError(
            f"expected two (B, C, H, W) batches of the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}"
        )


def psnr(sr: torch.Tensor, hr: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of ``(B, C, H, W)`` batches on RGB: ``10 log10(R^2 / MSE)``; ``inf`` if equal.

    Computed in float64 so a 64x64 image agrees with scikit-image's ``peak_signal_noise_ratio`` to 1e-6 dB.
    """
    _check_images(sr, hr)
    diff = sr.detach().double() - hr.detach().double()
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """scipy.ndimage's normalised 1-D Gaussian (radius ``int(truncate * sigma + 0.5)``), float64."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(
    sr: torch.Tensor,
    hr: torch.Tensor,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Per-image SSIM (Wang 2004) of ``(B, C, H, W)`` batches on RGB, mean over channels; float64 ``(B,)``.

    The separable Gaussian is applied as two depthwise ``conv2d`` passes without padding, so every
    statistic is evaluated only where the 11 x 11 window fits: the same region scikit-image averages over.
    """
    _check_images(sr, hr)
    x, y = sr.detach().double(), hr.detach().double()
    b, c, h, w = x.shape
    g = _gaussian_window(sigma).to(x.device)
    win = g.numel()
    if h < win or w < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} px, got {h}x{w}")
    gx = g.view(1, 1, 1, win).expand(5 * c, 1, 1, win)
    gy = g.view(1, 1, win, 1).expand(5 * c, 1, win, 1)
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W): one grouped conv for all
    blurred = F.conv2d(F.conv2d(stats, gx, groups=5 * c), gy, groups=5 * c)
    ux, uy, uxx, uyy, uxy = blurred.split(c, dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1)


def _grid_mask(h: int, w: int, periods: Sequence[int]) -> torch.Tensor:
    """FFT bins ``(H, W)`` of every frequency ``(ky/H, kx/W)`` of a pattern periodic with ``periods``, no DC."""
    p = math.lcm(*periods)
    if h % p or w % p:
        raise ValueError(f"grid artefact needs image sides divisible by {p}, got {h}x{w}")
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[:: h // p, :: w // p] = True  # k / p cycles/px along each axis, k = 0 .. p-1
    mask[0, 0] = False
    return mask


def grid_power(images: torch.Tensor, periods: Sequence[int] = (2, 4)) -> torch.Tensor:
    """Per image ``(B,)`` float64: share of its AC spectral power at the sub-pixel grid frequencies.

    * The frequencies are those of a pattern periodic with ``periods`` px in x and y (for 2 and 4:
      0, 1/4, 1/2, 3/4 cycles/px along each axis, i.e. the 15 FFT bins ``(ky, kx)`` in multiples of
      ``H/4``, ``W/4`` except DC). A PixelShuffle(2) checkerboard puts its power at the 1/2 bins, two
      stacked ones (16 -> 32 -> 64 px) at the 1/4 bins too.
    * Per channel (RGB, not luma: colour noise on the grid counts), mean removed, times a 2-D periodic Hann
      window. The window keeps the jump at the border of the FFT's periodic extension from leaking onto the
      axes, and it spreads each bin over its +-1 neighbours (the Hann kernel is ``[-1/4, 1/2, -1/4]`` in
      frequency), so a texture slightly off the exact grid, or modulated by the face, still counts.
    * Normalised by the image's total windowed AC power (all channels): the measure then tracks the
      *shape* of the spectrum, not its scale, so a low-contrast image is not rewarded and a fresh,
      untrained generator (arbitrary output scale) is comparable to HR. A blurred image has little power
      at these high frequencies and scores below HR (bilinear and bicubic upsampling: ~0).
    * A constant image (no AC power) scores 0.
    """
    if images.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got {tuple(images.shape)}")
    x = images.detach().double()
    h, w = x.shape[-2:]
    mask = _grid_mask(h, w, periods).to(x.device)
    wy = torch.hann_window(h, periodic=True, dtype=torch.float64, device=x.device)
    wx = torch.hann_window(w, periodic=True, dtype=torch.float64, device=x.device)
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) * (wy[:, None] * wx[None, :])
    spec = torch.fft.fft2(x).abs().pow(2)  # (B, C, H, W)
    grid = (spec * mask).sum(dim=(1, 2, 3))
    total = spec.sum(dim=(1, 2, 3))
    return torch.where(total > 0, grid / total.clamp_min(1e-300), torch.zeros_like(total))


def grid_ratio(sr_power: ArrayLike, hr_power: ArrayLike) -> float:
    """``mean(sr_power) / mean(hr_power)`` of per-face :func:`grid_power` values; NaN if either is empty.

    A ratio of means (not a mean of ratios): one HR face with almost no fine detail cannot blow it up.
    """
    s, h = _as_numpy(sr_power), _as_numpy(hr_power)
    s, h = s[~np.isnan(s)], h[~np.isnan(h)]
    if not len(s) or not len(h) or not np.mean(h) > 0:
        return float("nan")
    return float(np.mean(s) / np.mean(h))


def grid_artefact(sr: torch.Tensor, hr: torch.Tensor, periods: Sequence[int] = (2, 4)) -> float:
    """Grid-artefact ratio of a batch: :func:`grid_power` of ``sr`` over that of ``hr``, means over the batch.

    1.0 = the SR images have HR's share of power at the 2- and 4-px periods; well above 1 = a visible
    sub-pixel grid; below 1 = less fine detail there than HR (blur). Clamp generator output first, as for
    PSNR.
    """
    _check_images(sr, hr)
    return grid_ratio(grid_power(sr, periods), grid_power(hr, periods))


# ------------------------------------------------------------------------------------------- landmarks


def nme(pred: ArrayLike, gt: ArrayLike, visible: ArrayLike | None = None) -> torch.Tensor:
    """Per-face normalised mean error of ``(B, K, 2)`` points -> float64 ``(B,)`` on the CPU.

    * Points used: those whose GT is finite and, when ``visible`` ``(B, K)`` is given, marked visible.
    * Normaliser: ``sqrt(w * h)`` of the box of *all* finite GT points (a self-occluded point still
      fixes the face's extent), the ``faces.landmark_box`` convention.
    * A face with no usable point or a degenerate box gets NaN (no landmarks: skipped by CED/AUC).
    * A non-finite *prediction* at a usable point makes that face's NME ``inf``: a localiser that gives
      up counts as a failure (never below any CED threshold) rather than silently dropping the point.
    """
    p = torch.as_tensor(pred).detach().to("cpu", torch.float64)
    g = torch.as_tensor(gt).detach().to("cpu", torch.float64)
    if p.shape != g.shape or p.dim() != 3 or p.shape[-1] != 2:
        raise ValueError(f"expected (B, K, 2) predictions and ground truth, got {tuple(p.shape)}, {tuple(g.shape)}")
    finite = torch.isfinite(g).all(dim=-1)  # (B, K)
    use = finite.clone()
    if visible is not None:
        use &= torch.as_tensor(visible).to("cpu", torch.bool)
    big = torch.tensor(float("inf"), dtype=torch.float64)
    lo = torch.where(finite.unsqueeze(-1), g, big).amin(dim=1)
    hi = torch.where(finite.unsqueeze(-1), g, -big).amax(dim=1)
    wh = (hi - lo).prod(dim=-1)  # (B,); -inf * -inf = inf where no finite point, handled below
    norm = torch.sqrt(wh)
    err = torch.linalg.vector_norm(p - torch.where(finite.unsqueeze(-1), g, 0.0), dim=-1)  # (B, K)
    err = torch.where(torch.isfinite(err), err, big)
    n = use.sum(dim=1)
    mean_err = torch.where(use, err, 0.0).sum(dim=1) / n.clamp_min(1)
    ok = (n > 0) & torch.isfinite(norm) & (norm > 0)
    return torch.where(ok, mean_err / torch.where(ok, norm, 1.0), torch.tensor(float("nan"), dtype=torch.float64))


def nme_of_points(pred: ArrayLike, gt: ArrayLike, points: Sequence[int]) -> torch.Tensor:
    """:func:`nme` over a subset of the points (a landmark group, or the 51 inner points), normalised by the
    box of *all* the ground truth as the full NME is, so a group's error reads in the same units."""
    g = torch.as_tensor(gt)
    use = torch.zeros(g.shape[:2], dtype=torch.bool)
    use[:, list(points)] = True
    return nme(pred, gt, visible=use)


def _errors(values: ArrayLike) -> np.ndarray:
    """Float64 numpy copy of per-face NMEs with the NaNs (faces without landmarks) dropped."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[~np.isnan(arr)]


def ced(errors: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """Cumulative error distribution: for each threshold ``t``, the fraction of faces with ``NME <= t``.

    NaN errors (faces without landmarks) are left out of numerator and denominator; ``inf`` errors count
    as failures. With no face left every value is NaN (an empty set has no distribution).
    """
    e = np.sort(_errors(errors))
    t = np.asarray(
        thresholds.detach().cpu() if isinstance(thresholds, torch.Tensor) else thresholds, dtype=np.float64
    ).reshape(-1)
    if len(e) == 0:
        return np.full(t.shape, np.nan)
    return np.searchsorted(e, t, side="right") / len(e)


def auc(errors: ArrayLike, threshold: float = 0.1, steps: int = 1000) -> float:
    """Area under the CED curve from 0 to ``threshold``, divided by ``threshold`` (so 1.0 = every NME is 0).

    ``AUC = trapz(CED(t_i), t_i) / threshold`` with ``t_i = threshold * i / steps``, ``i = 0..steps``: the
    trapezoid rule of [4]'s evaluation. ``CED(0)`` counts errors exactly 0, so perfect predictions give
    exactly 1.0 and errors all above ``threshold`` give exactly 0.0. NaN (no face) when nothing is left.
    """
    if threshold <= 0 or steps < 1:
        raise ValueError(f"auc needs threshold > 0 and steps >= 1, got {threshold}, {steps}")
    t = np.linspace(0.0, threshold, steps + 1)
    curve = ced(errors, t)
    if np.isnan(curve).any():
        return float("nan")
    area = float(np.sum((curve[1:] + curve[:-1]) * np.diff(t)) / 2.0)
    return area / threshold


def bin_keys(edges: Sequence[float] = POSE_BIN_EDGES) -> list[str]:
    """Dictionary keys of the yaw bins, e.g. ``0_30``, ``30_60``, ``60_90``: the ``val_auc_<key>`` suffixes.

    The last bin is open-ended (``|yaw| >= 60`` including beyond 90) but keeps the paper's name ``60_90``.
    """
    keys = [f"{edges[i]:g}_{edges[i + 1]:g}" for i in range(len(edges) - 1)]
    keys.append(f"{edges[-1]:g}_90")
    return keys


def _as_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy().reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def pose_counts(errors: ArrayLike, yaw: ArrayLike, edges: Sequence[float] = POSE_BIN_EDGES) -> dict[str, int]:
    """Faces that enter each bin's AUC (finite-or-inf NME and known yaw), plus ``unknown_yaw`` and ``all``."""
    e, bins = _as_numpy(errors), pose_bin(_as_numpy(yaw), tuple(edges))
    scored = ~np.isnan(e)
    out = {k: int(np.sum(scored & (bins == i))) for i, k in enumerate(bin_keys(edges))}
    out["unknown_yaw"] = int(np.sum(scored & (bins < 0)))
    out["all"] = int(np.sum(scored))
    return out


def auc_by_pose(
    errors: ArrayLike,
    yaw: ArrayLike,
    threshold: float = 0.1,
    edges: Sequence[float] = POSE_BIN_EDGES,
    steps: int = 1000,
) -> dict[str, float]:
    """AUC@``threshold`` per yaw bin of ``|yaw|`` (``faces.pose_bin``) plus ``balanced``.

    * Bins are ``[0,30)``, ``[30,60)``, ``[60,90+]``: yaw exactly 30 is in the middle bin, exactly 60 in
      the last, and the sign of yaw is ignored (left and right profiles are the same difficulty).
    * ``balanced`` = unweighted mean of the AUCs of the non-empty bins: what the paper's test set gives
      by construction (equal faces per bin), whatever the mix of our validation set.
    * An empty bin's AUC is NaN and it is left out of ``balanced``; with all bins empty ``balanced`` is NaN.
    * Faces with unknown yaw (NaN) are in no bin, hence not in ``balanced``; they do count in the
      overall :func:`auc`. Faces with NaN NME (no landmarks) count nowhere.
    """
    e, y = _as_numpy(errors), _as_numpy(yaw)
    if e.shape != y.shape:
        raise ValueError(f"errors and yaw must have one value per face, got {e.shape} and {y.shape}")
    bins = pose_bin(y, tuple(edges))
    out: dict[str, float] = {}
    for i, key in enumerate(bin_keys(edges)):
        sel = e[bins == i]
        out[key] = auc(sel, threshold, steps) if len(_errors(sel)) else float("nan")
    out["balanced"] = balanced(out.values())
    return out


def balanced(values: Any) -> float:
    """Mean of the finite-or-not but non-NaN values (the non-empty bins); NaN when all are NaN."""
    vals = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else float("nan")


def mean_by_pose(values: ArrayLike, yaw: ArrayLike, edges: Sequence[float] = POSE_BIN_EDGES) -> dict[str, float]:
    """Mean of a per-face score (PSNR, SSIM, NME) per yaw bin, ``balanced`` (mean of non-empty bins), ``all``.

    Same binning and empty-bin rule as :func:`auc_by_pose`; ``all`` includes faces with unknown yaw.
    NaN scores are ignored; an ``inf`` PSNR (identical images) makes its mean ``inf``, honestly.
    """
    v, y = _as_numpy(values), _as_numpy(yaw)
    bins = pose_bin(y, tuple(edges))
    ok = ~np.isnan(v)
    out = {
        k: (float(np.mean(v[ok & (bins == i)])) if np.any(ok & (bins == i)) else float("nan"))
        for i, k in enumerate(bin_keys(edges))
    }
    out["balanced"] = balanced(out.values())
    out["all"] = float(np.mean(v[ok])) if np.any(ok) else float("nan")
    return out
