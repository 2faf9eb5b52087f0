"""Rendering (``superfan.render``): column titles that stay distinct, grids of the right size, overlays."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from superfan.render.overlays import CHAR_PX, overlay, samples_png, wrap_label


def test_wrap_label_breaks_at_dashes_and_keeps_every_character() -> None:
    name = "FAN-Ours-pixel-feature-heatmap"
    lines = wrap_label(name, 21)
    assert lines == ["FAN-Ours-pixel-", "feature-heatmap"]
    assert "".join(lines) == name
    assert wrap_label("HR", 21) == ["HR"]
    assert all(len(x) <= 8 for x in wrap_label("abcdefghijklmnopqrstu", 8))  # no dash: a hard cut


def _samples(names: list[str], s: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    m = len(names)
    return {
        "methods": np.array(names),
        "lr": rng.random((s, 3, 16, 16), dtype=np.float32),
        "hr": rng.random((s, 3, 64, 64), dtype=np.float32),
        "gt": rng.uniform(10, 50, (s, 68, 2)).astype(np.float32),
        "images": rng.random((s, m, 3, 64, 64), dtype=np.float32),
        "points": rng.uniform(10, 50, (s, m, 68, 2)).astype(np.float32),
    }


def test_sample_grid_has_one_column_per_method_and_a_header_tall_enough_for_long_names() -> None:
    short = Image.open(io.BytesIO(samples_png(_samples(["FAN-bilinear", "FAN-HR"]))))
    names = ["FAN-Ours-pixel-feature", "FAN-Ours-pixel-feature-heatmap", "FAN-HR"]
    long = Image.open(io.BytesIO(samples_png(_samples(names))))
    assert short.width == 3 * 128 and long.width == 4 * 128  # LR | methods without FAN-HR | FAN-HR
    assert (long.height - 2 * 128) > (short.height - 2 * 128)  # the long names wrap onto a second line
    assert max(len(x) for n in names for x in wrap_label(n, 128 // CHAR_PX)) <= 128 // CHAR_PX


def test_overlay_upscales_tiny_images_and_draws_on_them() -> None:
    img = Image.new("RGB", (32, 24), "black")
    pts = np.full((68, 2), 12.0)
    out = overlay(img, [[4, 4, 20, 16]], [pts])
    assert out.size == (32 * 8, 24 * 8)
    arr = np.asarray(out)
    assert (arr[..., 1] == 255).any() and (arr[..., 0] == 255).any()  # green points, red box
