"""The training data stream: procedural faces, augmentation (section 4.5), degradation to 16x16 (incl. the
real-world mode of section 5.3) and a WebDataset loader from local or s3:// shards to contract batches.

Imports are lazy so ``import superfan.data.synthetic`` (used by the packer) does not pull in torch or
webdataset.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_loader", "render_face", "resolve_shards"]


def __getattr__(name: str) -> Any:
    if name in {"make_loader", "resolve_shards"}:
        from superfan.data import stream

        return getattr(stream, name)
    if name == "render_face":
        from superfan.data.synthetic import render_face

        return render_face
    raise AttributeError(name)
