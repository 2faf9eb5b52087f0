"""Section 4.5 augmentation: flip, scale 0.85-1.15, rotation +-30 degrees, colour/brightness/contrast jitter.

Why one warp: the shard holds a loose 256 px crop (2.4 x the face box), and the network wants a 64x64 window
with the face 50 px tall. Flip, scale, rotation and the crop are all affine, so they are composed into one
2x3 matrix (:func:`superfan.landmarks.crop_matrix`) and applied once with PIL's ``Image.transform`` (bilinear);
the landmarks go through the same matrix (:func:`superfan.landmarks.transform_points`, which relabels them with
the 68-point flip permutation when mirrored). One resampling means no double blur and little per-sample work.

Why JPEG draft mode: the warp shrinks the 256 px crop by ~2 (a ~107 px face box to 50 px), so decoding at full
size wastes work, and a bilinear affine that shrinks by 2 aliases. ``Image.draft`` asks libjpeg to decode at
1/2 (or 1/4, 1/8) scale via the DCT, which averages pixels (an anti-aliasing prefilter) and is ~2-3x faster
than a full decode (measured by ``superfan bench data``). The draft scale is chosen so that the remaining warp
never enlarges by more than 1.1x. Draft coordinates are mapped exactly: ``x' = (x + 0.5) k - 0.5``.

``strength`` scales every range (0 = none, 1 = the paper's ranges, up to 2): scale ``1 + s (lo - 1) .. 1 + s
(hi - 1)``, rotation ``+-s * rotation_deg``, flip probability ``min(s, 1) * flip_prob``, and the jitter
amplitudes ``s * brightness/contrast/color``. So ``strength=0`` is exactly the crop:
face box centred, 50 px tall.

Colour, brightness and contrast jitter are sampled here per face but *applied per batch* in torch
(:func:`apply_color_jitter`), which is much cheaper than per-image PIL enhancers. Ranges (the paper gives
none; our choice, in :class:`superfan.config.AugmentConfig`): brightness factor ``1 +- 0.2``, contrast
``1 +- 0.2`` about the image's mean grey, saturation ``1 +- 0.2`` about its per-pixel grey.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from superfan.config import AugmentConfig
from superfan.errors import BadSample
from superfan.landmarks import crop_matrix, invert_affine, transform_points


@dataclass(frozen=True)
class AugmentParams:
    """One face's random draw: geometry (applied in the warp) and jitter factors (applied per batch)."""

    flip: bool = False
    scale: float = 1.0
    rotation: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0

    @property
    def jitter(self) -> tuple[float, float, float]:
        return self.brightness, self.contrast, self.saturation


IDENTITY = AugmentParams()


def sample_params(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentParams:
    """Draw one face's augmentation from ``cfg`` scaled by ``cfg.strength`` (see the module docstring)."""
    s = float(cfg.strength)
    if s <= 0:
        return IDENTITY
    lo, hi = cfg.scale
    u = rng.random(6)
    return AugmentParams(
        flip=bool(u[0] < min(s, 1.0) * cfg.flip_prob),
        scale=1.0 + s * ((lo - 1.0) + u[1] * (hi - lo)),
        rotation=s * cfg.rotation_deg * (2 * u[2] - 1),
        brightness=1.0 + s * cfg.brightness * (2 * u[3] - 1),
        contrast=1.0 + s * cfg.contrast * (2 * u[4] - 1),
        saturation=1.0 + s * cfg.color * (2 * u[5] - 1),
    )


def warp_matrix(box: tuple[float, float, float, float], params: AugmentParams, cfg: AugmentConfig) -> np.ndarray:
    """2x3 map from shard-crop pixels to the ``hr_size`` window (face ``face_height`` px tall at scale 1)."""
    return crop_matrix(box, cfg.hr_size, float(cfg.face_height), params.scale, params.rotation, params.flip)


#: Largest enlargement the warp may apply after a DCT-scaled (draft) decode; beyond it we decode larger.
MAX_DRAFT_UPSAMPLE = 1.1


def _draft_scale(image: Image.Image, matrix: np.ndarray, use_draft: bool) -> float:
    """Ask libjpeg for the smallest DCT-scaled decode (1/2, 1/4, 1/8) that the warp enlarges <= 1.1x."""
    if not use_draft or image.format != "JPEG":
        return 1.0
    zoom = math.sqrt(abs(np.linalg.det(matrix[:, :2])))  # output px per source px
    target = zoom / MAX_DRAFT_UPSAMPLE
    if target > 0.5:
        return 1.0
    w, h = image.size
    image.draft("RGB", (max(1, math.ceil(w * target)), max(1, math.ceil(h * target))))
    return image.size[0] / w


def open_image(data: bytes | bytearray | memoryview) -> Image.Image:
    """``Image.open`` (header only); PIL's own decompression-bomb refusal (above ~179 M pixels, raised before
    any decoding) becomes a :class:`BadSample` like every other bad image."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        count = claimed.group(1) if claimed else "too many"
        raise BadSample(f"image header claims {count} pixels (above PIL's limit)") from None


def check_pixels(image: Image.Image, max_pixels: int | None) -> None:
    """Refuse (``BadSample``) an image whose header claims more than ``max_pixels``, before any decoding."""
    if max_pixels is not None and image.size[0] * image.size[1] > max_pixels:
        raise BadSample(
            f"image header claims {image.size[0] * image.size[1]} pixels ({image.size[0]}x{image.size[1]}), above "
            f"the {max_pixels} a crop of this pack may have"
        )


def source_matrix(
    image: Image.Image,
    box: tuple[float, float, float, float],
    params: AugmentParams,
    cfg: AugmentConfig,
    *,
    draft: bool = True,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(m, full, k)``: the crop warp ``m`` (shard-crop pixels -> window), the draft scale ``k`` it asks
    libjpeg for (1 = full size; sets ``image``'s draft mode, decodes nothing) and ``full``, the warp from the
    pixels of that reduced decode. Shared with the device path, which reduces by a box filter instead."""
    m = warp_matrix(box, params, cfg)
    k = _draft_scale(image, m, draft)
    full = m
    if k != 1.0:
        # Draft pixel x' = (x + 0.5) k - 0.5, so source x = (x' + 0.5) / k - 0.5; compose with the crop warp.
        d_inv = np.array([[1 / k, 0.0, 0.5 / k - 0.5], [0.0, 1 / k, 0.5 / k - 0.5]])
        full = m[:, :2] @ d_inv[:, :2]
        full = np.concatenate([full, (m[:, :2] @ d_inv[:, 2] + m[:, 2])[:, None]], axis=1)
    return m, full, k


def warp_face(
    jpeg: bytes | Image.Image,
    box: tuple[float, float, float, float],
    landmarks: np.ndarray | None,
    params: AugmentParams,
    cfg: AugmentConfig,
    *,
    draft: bool = True,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a shard crop and warp it -> ``(uint8 (S, S, 3) window, (68, 2) landmarks in window pixels)``.

    ``box`` is the face box in crop pixels (the json ``bbox``); landmarks may be ``None`` (faces without
    landmarks). Pixels outside the crop are black (the 2.4x context keeps them out at the paper's ranges).
    ``max_pixels`` refuses an image whose header claims more pixels (``BadSample``), before anything is
    decoded: a 691-byte JPEG can claim 30000x30000, and PIL's own limit (89 M pixels) is far above a crop.
    """
    image = open_image(jpeg) if isinstance(jpeg, bytes | bytearray | memoryview) else jpeg
    check_pixels(image, max_pixels)
    m, full, _ = source_matrix(image, box, params, cfg, draft=draft)
    if image.mode != "RGB":
        image = image.convert("RGB")
    # PIL's transform takes output->input coefficients in *corner* coordinates (pixel i spans [i, i+1)):
    # shift by half a pixel on both sides so that pixel centres map as in faces.crop_matrix.
    inv = invert_affine(full)
    a, b, c = inv[0]
    d, e, f = inv[1]
    c = c - 0.5 * (a + b) + 0.5
    f = f - 0.5 * (d + e) + 0.5
    size = cfg.hr_size
    out = image.transform((size, size), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR)
    pts = None if landmarks is None else transform_points(landmarks, m, flip=params.flip)
    return np.asarray(out), pts


def apply_color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation jitter on a ``(B, 3, H, W)`` batch in [0, 1].

    ``factors`` is ``(B, 3)``: brightness (multiply), contrast (blend with the image's mean grey),
    saturation (blend with each pixel's grey), in that order, like torchvision's ``ColorJitter`` with a
    fixed order. Rows of ones are the identity; the result is clamped to [0, 1].
    """
    if images.numel() == 0 or bool((factors == 1).all()):
        return images
    # The three steps are affine in the pixel, so they compose into one 3x3 colour matrix and an offset per
    # image: y = A x + t, A = Sat(s) * c * b, t = (1 - c) * b * mean_grey(x) (Sat preserves grey, so it
    # leaves the offset alone). One batched matmul instead of several full passes over the batch.
    b_, c_, s_ = factors.to(images.device, images.dtype).unbind(1)
    w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
    eye = torch.eye(3, dtype=images.dtype, device=images.device)
    sat = s_.view(-1, 1, 1) * eye + (1 - s_).view(-1, 1, 1) * w.view(1, 1, 3)  # rows: s*e_i + (1-s)*w
    a = sat * (c_ * b_).view(-1, 1, 1)
    n, ch, h, wd = images.shape
    flat = images.reshape(n, ch, h * wd)
    mean_grey = torch.einsum("c,nc->n", w, flat.mean(dim=2))
    t = ((1 - c_) * b_ * mean_grey).view(-1, 1, 1)
    out = torch.baddbmm(t.expand(n, ch, 1), a, flat).reshape(n, ch, h, wd)
    return out.clamp_(0.0, 1.0)


def collate_face_fields(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-face fields every batch carries beside its pixels and points, whichever side augments it (the
    stream's collate and the device path's hand-over): pose, identity, the jitter draw and the bad samples
    met on the way."""
    return {
        "yaw": torch.tensor([s["yaw"] for s in samples], dtype=torch.float32),
        "pose_source": [s["pose_source"] for s in samples],
        "key": [s["key"] for s in samples],
        "url": [s["url"] for s in samples],
        "jitter": torch.tensor([s["jitter"] for s in samples], dtype=torch.float32),
        "bad_samples": [b for s in samples for b in s["bad_samples"]],
    }
