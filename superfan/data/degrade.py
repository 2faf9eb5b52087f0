"""HR 64x64 -> LR 16x16: x4 downsampling, plus the real-world degradations of section 5.3.

Downsampling kernel (``DegradeConfig.kernel``, default ``bicubic``): ``torch.nn.functional.interpolate`` with
``mode="bicubic", antialias=True``, i.e. the bicubic (Keys, a = -0.5) kernel stretched by the factor 4 so it
acts as a low-pass filter, the same as PIL's ``BICUBIC`` resize and MATLAB's ``imresize`` used by SRGAN [20].
``bilinear`` (antialiased triangle) and ``area`` (4x4 box average) are the alternatives. The result is clamped
to [0, 1] since bicubic overshoots.

Real-world mode (``DegradeConfig.real_world``), each step with its own probability and range:

1. Gaussian blur with an odd kernel of 3-7 px (``blur_kernel``) and sigma 0.5-1.5 (``blur_sigma``). Section
   5.3 applies "random Gaussian blur (of kernel size between 3 and 7 px) to the input images", so by default
   (``blur_on="lr"``) the blur acts on the **16x16 input, after downsampling**: the heavily blurred faces of
   WiderFace the paper targets. ``blur_on="hr"`` blurs the 64x64 face **before downsampling** instead (a
   defocused camera seen at low resolution); the x4 downsampling then shrinks the kernel 4x, so the same
   3-7 px blur is far weaker on the input. Both modes draw the same random numbers in the same order, so one
   seed gives the same kernels either way. Kernels are truncated to their odd size and renormalised; reflect
   padding (a 7 px kernel pads 3 px, fine on 16 px); one grouped convolution blurs the whole batch with
   per-image kernels.
2. Colour distortion (``color_prob``, ``color_shift``): per-channel gain ``1 +- shift`` and offset
   ``+- shift/2`` on the LR image (white balance and black level of a cheap sensor).
3. Gaussian noise (``noise_prob``, ``noise_std``; off by default, not in the paper).
4. JPEG artefacts (``jpeg_prob``, ``jpeg_quality``): PIL encode/decode of the 16x16 at a random quality,
   last, as a camera or web pipeline would compress the final image.

Everything is seeded by a ``numpy.random.Generator`` so a stream is reproducible.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from superfan.config import DegradeConfig

SCALE = 4


def downsample(hr: torch.Tensor, kernel: str = "bicubic", factor: int = SCALE) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 3, H/factor, W/factor)`` with an antialiased kernel, clamped to [0, 1]."""
    size = (hr.shape[-2] // factor, hr.shape[-1] // factor)
    if kernel == "area":
        out = F.avg_pool2d(hr, factor)
    elif kernel in {"bicubic", "bilinear"}:
        out = F.interpolate(hr, size=size, mode=kernel, align_corners=False, antialias=True)
    else:
        raise ValueError(f"unknown downsampling kernel {kernel!r}")
    return out.clamp_(0.0, 1.0)


def sample_blur(rng: np.random.Generator, n: int, cfg: DegradeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per image: odd kernel size (0 = no blur) and sigma, drawn with ``cfg.blur_prob``."""
    lo, hi = cfg.blur_kernel
    sizes = lo + 2 * rng.integers(0, (hi - lo) // 2 + 1, n)
    sigmas = rng.uniform(*cfg.blur_sigma, n)
    sizes = np.where(rng.random(n) < cfg.blur_prob, sizes, 0)
    return sizes.astype(np.int64), sigmas


def gaussian_kernels(sizes: np.ndarray, sigmas: np.ndarray, width: int) -> torch.Tensor:
    """``(B, width, width)`` normalised Gaussians truncated to each odd size (size 0 or 1 = identity)."""
    r = width // 2
    ax = torch.arange(-r, r + 1, dtype=torch.float32)
    s = torch.as_tensor(sigmas, dtype=torch.float32).clamp_min(1e-3).view(-1, 1)
    half = torch.as_tensor(sizes, dtype=torch.float32).view(-1, 1) // 2
    g = torch.exp(-(ax * ax) / (2 * s * s)) * (ax.abs() <= half)
    k = g[:, :, None] * g[:, None, :]
    return k / k.sum(dim=(1, 2), keepdim=True)


def blur(images: torch.Tensor, sizes: np.ndarray, sigmas: np.ndarray) -> torch.Tensor:
    """Blur each image of ``(B, C, H, W)`` with its own odd Gaussian kernel; reflect padding at the border."""
    sizes = np.asarray(sizes)
    if images.numel() == 0 or not (sizes > 1).any():
        return images
    b, c, h, w = images.shape
    width = int(sizes.max()) | 1
    k = gaussian_kernels(sizes, sigmas, width).to(images.device, images.dtype)
    weight = k.repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, k, k)
    pad = width // 2
    x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(x, weight, groups=b * c).reshape(b, c, h, w)


def jpeg(images: torch.Tensor, qualities: np.ndarray) -> torch.Tensor:
    """Encode/decode each image with PIL at its JPEG quality (0 = leave as is)."""
    out = images.clone()
    for i, q in enumerate(np.asarray(qualities)):
        if q <= 0:
            continue
        arr = (images[i].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(q))
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out[i] = torch.from_numpy(dec.copy()).permute(2, 0, 1).to(images.dtype) / 255.0
    return out


@dataclass(frozen=True)
class DegradeParams:
    """One batch's random draws of the real-world mode, drawn before any pixel work.

    Why apart from the pixels: the CPU stream draws them (same generator, same order as always) and the
    training device applies them (``data.augment_on: device``, :mod:`superfan.data.device_augment`), so both
    paths degrade a batch from the same numbers. ``real`` False means plain x4 downsampling (no draws).
    """

    real: bool
    sizes: np.ndarray | None = None  #: odd blur kernel per image (0 = no blur)
    sigmas: np.ndarray | None = None
    gain: np.ndarray | None = None  #: (B, 3) colour gain, None when no image is colour-distorted
    shift: np.ndarray | None = None  #: (B, 3) colour offset
    noise: np.ndarray | None = None  #: (B, 3, h, w) float32 Gaussian noise, None when no image is noisy
    qualities: np.ndarray | None = None  #: JPEG quality per image (0 = no JPEG round trip)


def sample_degrade(rng: np.random.Generator, n: int, lr_hw: tuple[int, int], cfg: DegradeConfig, real: bool
                   ) -> DegradeParams:  # fmt: skip
    """The draws :func:`degrade` makes for ``n`` images whose LR is ``lr_hw``, in its historical order (blur,
    colour, noise, JPEG), so a seed gives the same batches as before they were split from the pixel work."""
    if not real:
        return DegradeParams(real=False)
    sizes, sigmas = sample_blur(rng, n, cfg)  # drawn first in both modes: same stream for "lr" and "hr"
    gain = shift = noise = None
    colour = rng.random(n) < cfg.color_prob
    if colour.any():
        gain = 1 + cfg.color_shift * rng.uniform(-1, 1, (n, 3))
        shift = 0.5 * cfg.color_shift * rng.uniform(-1, 1, (n, 3))
        gain[~colour], shift[~colour] = 1.0, 0.0
    noisy = rng.random(n) < cfg.noise_prob
    if noisy.any():
        noise = rng.normal(0, cfg.noise_std, (n, 3, *lr_hw)).astype(np.float32) * noisy[:, None, None, None]
    q = rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, n)
    q = np.where(rng.random(n) < cfg.jpeg_prob, q, 0)
    return DegradeParams(True, sizes, sigmas, gain, shift, noise, q)


JpegFn = Callable[[torch.Tensor, np.ndarray], torch.Tensor]


def apply_degrade(hr: torch.Tensor, p: DegradeParams, cfg: DegradeConfig, jpeg_fn: JpegFn | None = None
                  ) -> torch.Tensor:  # fmt: skip
    """``(B, 3, 64, 64)`` HR -> ``(B, 3, 16, 16)`` LR with the draws ``p``, on ``hr``'s device.

    ``jpeg_fn`` replaces the PIL round trip (:func:`jpeg`) on the device path; everything else is torch."""
    if not p.real:
        return downsample(hr, cfg.kernel)
    assert p.sizes is not None and p.sigmas is not None and p.qualities is not None
    if cfg.blur_on == "hr":
        lr = downsample(blur(hr, p.sizes, p.sigmas), cfg.kernel)
    else:  # "lr": the paper's "blur ... to the input images" (section 5.3); blur of [0, 1] stays in [0, 1]
        lr = blur(downsample(hr, cfg.kernel), p.sizes, p.sigmas)
    if p.gain is not None and p.shift is not None:
        lr = lr * torch.as_tensor(p.gain, dtype=lr.dtype, device=lr.device)[..., None, None]
        lr = (lr + torch.as_tensor(p.shift, dtype=lr.dtype, device=lr.device)[..., None, None]).clamp_(0, 1)
    if p.noise is not None:
        lr = (lr + torch.from_numpy(p.noise).to(lr.device, lr.dtype)).clamp_(0, 1)
    if (p.qualities > 0).any():
        lr = (jpeg_fn or jpeg)(lr, p.qualities)
    return lr


def degrade(hr: torch.Tensor, cfg: DegradeConfig, rng: np.random.Generator, real_world: bool | None = None
            ) -> torch.Tensor:  # fmt: skip
    """``(B, 3, 64, 64)`` HR in [0, 1] -> ``(B, 3, 16, 16)`` LR in [0, 1] (see the module docstring)."""
    real = cfg.real_world if real_world is None else real_world
    lr_hw = (hr.shape[-2] // SCALE, hr.shape[-1] // SCALE)
    return apply_degrade(hr, sample_degrade(rng, hr.shape[0], lr_hw, cfg, real), cfg)


__all__ = [
    "SCALE",
    "DegradeParams",
    "apply_degrade",
    "blur",
    "degrade",
    "downsample",
    "gaussian_kernels",
    "jpeg",
    "sample_blur",
    "sample_degrade",
]
