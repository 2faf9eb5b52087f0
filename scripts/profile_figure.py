"""The profiling figure of docs/results/: validation faces turned to yaw 0, 30, 45, 60, 75, 90 with their landmarks.

    python scripts/profile_figure.py ../shared/data/faces-300w docs/results/profiles.png [--faces 8]

The faces are the first of the validation split (key hash in [0.8, 1), as scripts/acceptance_300w.sh packs
them), each rendered as the packer does (a working crop at 3x its landmark box, then the packed crop) and
turned in its own direction (yaw 0: turned back to frontal). Landmarks: green where the z-buffer shows them,
red where they are self-occluded (2D-3D convention: the 3D point's projection, also when hidden).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from shards.crop import crop_face
from shards.pack import PROFILE_CONTEXT, key_fraction
from shards.profile import Profiler
from shards.readers import make_key
from superfan.landmarks import landmark_box
from superfan.pose import read_pts

YAWS = (0, 30, 45, 60, 75, 90)
TILE = 160


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faces_300w", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--faces", type=int, default=8)
    args = parser.parse_args(argv)
    picked = []
    for pts_file in sorted(args.faces_300w.rglob("*.pts")):
        rel = pts_file.relative_to(args.faces_300w).with_suffix("")
        if 0.8 <= key_fraction(make_key("300w", str(rel))) < 1.0:
            picked.append(pts_file)
    rows = []
    for pts_file in picked[:: max(1, len(picked) // args.faces)][: args.faces]:
        image = Image.open(pts_file.with_suffix(".jpg")).convert("RGB")
        pts = read_pts(pts_file)
        crop, crop_pts, _ = crop_face(image, landmark_box(pts), pts, 320, PROFILE_CONTEXT)
        prof = Profiler(np.array(crop), crop_pts)
        side = 1.0 if prof.camera.yaw >= 0 else -1.0
        tiles = []
        for yaw in YAWS:
            img, lm, vis = prof.render(side * yaw)
            final, final_pts, _ = crop_face(Image.fromarray(img), landmark_box(lm), lm, 256, 2.4)
            k = TILE / 256
            tile = final.resize((TILE, TILE), Image.Resampling.LANCZOS)
            draw = ImageDraw.Draw(tile)
            for (x, y), v in zip(final_pts * k, vis, strict=True):
                draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(40, 230, 40) if v else (240, 40, 40))
            draw.text((4, 3), f"yaw {side * yaw:+.0f}", fill=(255, 255, 0))
            tiles.append(np.asarray(tile))
        rows.append(np.concatenate(tiles, 1))
        print(f"{pts_file.relative_to(args.faces_300w)}: source yaw {prof.camera.yaw:+.1f} (template fit)")
    sheet = np.concatenate(rows, 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out, optimize=True)
    print(f"wrote {args.out} ({len(rows)} faces x {len(YAWS)} yaws; {math.prod(sheet.shape[:2]) // 1000} kpx)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
