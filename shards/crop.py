"""The loose square crop of the shard contract: side = ``context`` x the face box's max side, box centred.

Why 2.4: the stream later applies scale 0.85-1.15 and rotation +-30 degrees and crops the face 50 px tall
into 64x64; at 2.4 x the box, those windows never reach the crop edge, so augmentation never sees a border
that was not in the photo (docs/contracts.md). Pixels outside the source photo are black.

Coordinates are 0-based pixel centres. PIL's resampling uses corner coordinates (pixel ``i`` spans
``[i, i+1)``), so a point ``p`` maps to ``(p + 0.5 - left) * k - 0.5`` with ``k = size / side``; the face box
centre lands exactly on ``(size - 1) / 2``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from superfan.landmarks import transform_points

DEFAULT_SIZE = 256
DEFAULT_CONTEXT = 2.4


def crop_window(box: tuple[float, float, float, float], context: float = DEFAULT_CONTEXT) -> tuple[float, float, float]:
    """``(left, top, side)`` of the crop in source corner coordinates."""
    x0, y0, x1, y1 = box
    side = context * max(x1 - x0, y1 - y0, 1e-6)
    cx, cy = (x0 + x1) / 2.0 + 0.5, (y0 + y1) / 2.0 + 0.5  # centre in corner coordinates
    return cx - side / 2.0, cy - side / 2.0, side


def crop_matrix(
    box: tuple[float, float, float, float], size: int = DEFAULT_SIZE, context: float = DEFAULT_CONTEXT
) -> np.ndarray:
    """2x3 affine from source pixel centres to crop pixel centres (for landmarks and boxes)."""
    left, top, side = crop_window(box, context)
    k = size / side
    return np.array([[k, 0.0, (0.5 - left) * k - 0.5], [0.0, k, (0.5 - top) * k - 0.5]])


def crop_image(
    image: Image.Image, box: tuple[float, float, float, float], size: int = DEFAULT_SIZE,
    context: float = DEFAULT_CONTEXT,
) -> Image.Image:  # fmt: skip
    """The ``size`` x ``size`` RGB crop: pad with black where the window leaves the photo, then resample.

    An integer-aligned ``Image.crop`` (which fills outside pixels with black) is followed by ``resize``
    with a fractional ``box`` and the bicubic filter, which PIL applies with a proper reduction kernel
    when downscaling (no aliasing, unlike an affine ``transform``).
    """
    left, top, side = crop_window(box, context)
    il, it = math.floor(left), math.floor(top)
    ir, ib = math.ceil(left + side), math.ceil(top + side)
    padded = image.crop((il, it, ir, ib))
    return padded.resize(
        (size, size), Image.Resampling.BICUBIC, box=(left - il, top - it, left - il + side, top - it + side)
    )


def transform_box(box: tuple[float, float, float, float], matrix: np.ndarray) -> list[float]:
    """A source box mapped by the (axis-aligned, scale + shift) crop matrix."""
    pts = transform_points(np.array([[box[0], box[1]], [box[2], box[3]]]), matrix)
    return [float(pts[0, 0]), float(pts[0, 1]), float(pts[1, 0]), float(pts[1, 1])]


def crop_face(
    image: Image.Image,
    box: tuple[float, float, float, float],
    landmarks: np.ndarray | None = None,
    size: int = DEFAULT_SIZE,
    context: float = DEFAULT_CONTEXT,
) -> tuple[Image.Image, np.ndarray | None, list[float]]:
    """Crop ``image`` around ``box``; return the crop, landmarks and box in crop pixels."""
    m = crop_matrix(box, size, context)
    out_pts = None if landmarks is None else transform_points(landmarks, m)
    return crop_image(image, box, size, context), out_pts, transform_box(box, m)
