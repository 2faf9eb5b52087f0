"""superfan: Super-FAN face super-resolution and alignment, trained and swept on Ray.

The public surface is small, in the spirit of face-alignment::

    from superfan import Enhancer
    result = Enhancer.from_checkpoint("./champion").enhance(faces)

Heavy modules (torch, Ray) are imported lazily so ``superfan --help`` and config tools stay fast.
"""

from __future__ import annotations

from typing import Any

from superfan.provenance import VERSION as __version__
from superfan.provenance import code_version

__all__ = ["Enhancer", "__version__", "code_version"]


def __getattr__(name: str) -> Any:
    if name == "Enhancer":
        from superfan.infer import Enhancer

        return Enhancer
    raise AttributeError(f"module 'superfan' has no attribute {name!r}")
