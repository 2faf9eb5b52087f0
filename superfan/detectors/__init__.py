"""Face detector plug-ins for ``superfan enhance --detector NAME``.

Boxes are the main path for real low-resolution faces: the faces Super-FAN is for (10-40 px, blurry) are
below what classic detectors find, so give boxes from a dataset or a modern detector where you can.
A detector here is a callable object: ``detector(image HxWx3 uint8 RGB) -> list[(x, y, w, h)]``.
Plug-ins are imported lazily so their optional dependencies are only needed when chosen.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from superfan.errors import UserError

#: name -> "module:Class"
DETECTORS: dict[str, str] = {
    "dlib": "superfan.detectors.dlib_hog:DlibHogDetector",
}


class Detector(Protocol):
    name: str

    def __call__(self, image: np.ndarray) -> list[tuple[float, float, float, float]]: ...


def get_detector(name: str, **kwargs: object) -> Detector:
    """Instantiate a registered detector; one-line :class:`UserError` for unknown names or missing extras."""
    if name not in DETECTORS:
        raise UserError(f"unknown detector {name!r} (available: {', '.join(sorted(DETECTORS))})")
    module_name, _, cls_name = DETECTORS[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(**kwargs)
