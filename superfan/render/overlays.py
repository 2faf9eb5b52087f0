"""Pictures of faces with landmarks: the evaluation's sample grid, ``superfan enhance``'s overlays and
contact sheet. Drawing only: the caller has already computed every image and point.

Points are in 0-based pixel-centre coordinates of the image they are drawn on (docs/contracts.md).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CHAR_PX, LINE_PX = 6, 12  # PIL's default bitmap font: ~6 px per character, 11 px per line + 1 px gap
MAX_SHEET_FACES = 64
TILE = 96


def wrap_label(label: str, width: int) -> list[str]:
    """Split a column title into lines of at most ``width`` characters, at ``-`` or spaces where it can.

    The variant names (``FAN-Ours-pixel-feature-heatmap``) are longer than a 128 px tile; cutting them
    made two columns read the same.
    """
    lines: list[str] = []
    rest = label
    while len(rest) > width:
        cut = max(rest.rfind("-", 0, width), rest.rfind(" ", 0, width))
        cut = cut + 1 if cut > 0 else width
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [*lines, rest] if rest or not lines else lines


def samples_png(samples: dict[str, np.ndarray], scale: int = 2) -> bytes:
    """Grid: rows = faces; columns LR (nearest) with GT | each method's input image with its landmarks | HR.

    Predicted landmarks are red dots; the ground truth is drawn green on the LR and HR columns. The HR
    column is FAN-HR's input, so it carries FAN-HR's points when that method is present.
    """
    from PIL import Image, ImageDraw

    names = [str(n) for n in samples["methods"]]
    images, points = samples["images"], samples["points"]
    s_count, m_count = images.shape[:2]
    size = images.shape[-1]
    tile = size * scale
    hr_col = names.index("FAN-HR") if "FAN-HR" in names else None
    columns = ["LR (GT)"] + [n for i, n in enumerate(names) if i != hr_col] + ["HR" if hr_col is None else "FAN-HR"]
    titles = [wrap_label(t, max(4, tile // CHAR_PX)) for t in columns]
    header = LINE_PX * max(len(t) for t in titles) + 2
    canvas = Image.new("RGB", (tile * len(columns), header + tile * s_count), "white")
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(titles):
        for i, line in enumerate(lines):
            draw.text((c * tile + 2, 1 + i * LINE_PX), line, fill="black")

    def to_pil(img: np.ndarray) -> Image.Image:
        arr = (np.clip(img.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(arr).resize((tile, tile), Image.NEAREST)

    def dots(col: int, row: int, pts: np.ndarray, colour: str, pts_size: int) -> None:
        f = tile / pts_size
        for x, y in pts:
            if np.isfinite(x) and np.isfinite(y):
                cx, cy = col * tile + (x + 0.5) * f - 0.5, header + row * tile + (y + 0.5) * f - 0.5
                draw.ellipse([cx - 1.2, cy - 1.2, cx + 1.2, cy + 1.2], fill=colour)

    for r in range(s_count):
        lr = samples["lr"][r]
        canvas.paste(to_pil(lr), (0, header + r * tile))
        dots(0, r, samples["gt"][r], "lime", size)
        col = 1
        for m in range(m_count):
            if m == hr_col:
                continue
            canvas.paste(to_pil(images[r, m]), (col * tile, header + r * tile))
            dots(col, r, points[r, m], "red", size)
            col += 1
        canvas.paste(to_pil(samples["hr"][r]), (col * tile, header + r * tile))
        dots(col, r, samples["gt"][r], "lime", size)
        if hr_col is not None:
            dots(col, r, points[r, hr_col], "red", size)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def draw_points(img: Any, points: np.ndarray, radius: float, color: tuple[int, int, int] = (0, 255, 0)) -> None:
    """Draw 68 points on a PIL image in place (points in that image's pixel-centre coordinates)."""
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    for x, y in points:
        if np.isfinite(x) and np.isfinite(y):
            d.ellipse([x + 0.5 - radius, y + 0.5 - radius, x + 0.5 + radius, y + 0.5 + radius], fill=color)


def overlay(
    img: Any, boxes: Sequence[Sequence[float] | None], points: Sequence[np.ndarray], min_side: int = 256
) -> Any:
    """An input image (PIL) with each face's box (red) and landmarks (green), upscaled when it is tiny.

    Tiny crops are unreadable at 1:1, so the image is enlarged (nearest) until its longer side is at least
    ``min_side``; boxes ``(x, y, w, h)`` and points are in the input's pixels and are scaled with it.
    """
    from PIL import Image, ImageDraw

    k = max(1, math.ceil(min_side / max(img.size)))
    if k > 1:
        img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for box, pts in zip(boxes, points, strict=True):
        if box is not None:
            x, y, w, h = (v * k for v in box)
            draw.rectangle([x, y, x + w, y + h], outline=(255, 64, 64))
        size = box[3] * k if box is not None else min(img.size)
        draw_points(img, (np.asarray(pts) + 0.5) * k - 0.5, radius=max(1.0, size / 80))
    return img


def contact_sheet(lr: np.ndarray, sr: np.ndarray, points_sr: np.ndarray, path: Path) -> None:
    """Rows input | bicubic | Super-FAN (with landmarks), one column per face, wrapped into blocks.

    "input" is the 16x16 network input shown with nearest-neighbour pixels, "bicubic" the classic
    upsampling of the same 16x16, so the sheet compares like with like. At most 64 faces.
    """
    from PIL import Image, ImageDraw

    n = min(len(lr), MAX_SHEET_FACES)
    cols = min(n, 8)
    blocks = math.ceil(n / cols)
    label_w, gap = 72, 6
    width = label_w + cols * TILE
    height = blocks * (3 * TILE + gap)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    scale = TILE / 64
    for b in range(blocks):
        top = b * (3 * TILE + gap)
        for r, name in enumerate(("input", "bicubic", "Super-FAN")):
            draw.text((4, top + r * TILE + TILE // 2 - 6), name, fill=(0, 0, 0))
        for c in range(cols):
            i = b * cols + c
            if i >= n:
                break
            x = label_w + c * TILE
            small = Image.fromarray(lr[i])
            sheet.paste(small.resize((TILE, TILE), Image.NEAREST), (x, top))
            sheet.paste(small.resize((TILE, TILE), Image.BICUBIC), (x, top + TILE))
            face = Image.fromarray(sr[i]).resize((TILE, TILE), Image.BICUBIC)
            draw_points(face, (points_sr[i] + 0.5) * scale - 0.5, radius=1.0)
            sheet.paste(face, (x, top + 2 * TILE))
    tmp = path.with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(path)
