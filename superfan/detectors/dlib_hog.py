"""dlib's built-in HOG + linear SVM frontal face detector (``pip install -e '.[detector]'``).

Chosen because it ships inside ``dlib-bin`` with no model download. Its limits matter for this project:
the HOG window is 80x80 px, so with one upsampling pass (the default here) it finds faces down to roughly
40 px and misses smaller ones - i.e. most of WIDER FACE's tiny faces, the very faces Super-FAN is for - and
it is trained on near-frontal faces, so profiles are missed too. Use ``--boxes`` for those.
Its boxes span roughly brows to chin, close to the landmark box the networks were trained to see at 50 px.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from superfan.errors import UserError


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise UserError("the dlib face detector needs dlib: pip install -e '.[detector]' (installs dlib-bin)") from None
    return dlib


class DlibHogDetector:
    """``detector(image) -> [(x, y, w, h), ...]`` in image pixels, clipped to the image."""

    name = "dlib"

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        self._dlib = _import_dlib()
        self._detector = self._dlib.get_frontal_face_detector()
        self.upsample = upsample
        self.threshold = threshold

    def __call__(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[:, :, :3])
        rects, scores, _ = self._detector.run(img, self.upsample, self.threshold)
        h, w = img.shape[:2]
        boxes = []
        for r, _score in zip(rects, scores, strict=True):
            x0, y0 = max(0, r.left()), max(0, r.top())
            x1, y1 = min(w, r.right() + 1), min(h, r.bottom() + 1)
            if x1 > x0 and y1 > y0:
                boxes.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
        return boxes
