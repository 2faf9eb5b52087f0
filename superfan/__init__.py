"""superfan: Super-FAN face super-resolution and alignment, trained and swept on Ray.

The public surface is small, in the spirit of face-alignment::

    from superfan import Enhancer
    result = Enhancer.from_checkpoint("./champion").enhance(faces)

Heavy modules (torch, Ray) are imported lazily so ``superfan --help`` and config tools stay fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Enhancer", "__version__", "code_version"]


def code_version() -> str:
    """``__version__`` plus the commit (or the sources' digest): see :mod:`superfan.provenance`."""
    from superfan.provenance import code_version as version

    return version()


def __getattr__(name: str) -> Any:
    if name == "Enhancer":
        from superfan.infer import Enhancer

        return Enhancer
    raise AttributeError(f"module 'superfan' has no attribute {name!r}")
