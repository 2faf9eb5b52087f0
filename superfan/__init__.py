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
    """``__version__`` plus the git commit when running from a checkout (best effort), so checkpoints,
    reports and champions say which code made them."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return __version__
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def __getattr__(name: str) -> Any:
    if name == "Enhancer":
        from superfan.infer import Enhancer

        return Enhancer
    raise AttributeError(f"module 'superfan' has no attribute {name!r}")
