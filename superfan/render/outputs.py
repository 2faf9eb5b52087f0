"""The files a person reads beside an evaluation's ``results.json``: Tables 1 and 2, the CED, the sample grid.

Shared by ``superfan evaluate`` (which computes the results, ``superfan.evaluate``) and ``superfan report``
(which re-renders them from the JSON and the samples npz); ``out_dir`` may be local or ``s3://``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from superfan import storage
from superfan.render.ced import ced_png
from superfan.render.overlays import samples_png
from superfan.render.tables import table1_markdown, table2_markdown

#: Rendered file names inside ``out_dir``.
FIGURES = {"table1": "table1.md", "table2": "table2.md", "ced": "ced.png", "samples": "samples.png"}


def write_figures(
    results: dict[str, Any], out_dir: str, samples: dict[str, np.ndarray] | None = None
) -> dict[str, str]:
    """Write the tables, the CED and (with ``samples``) the grid; returns ``{kind: file name}``."""
    storage.write_text(storage.join(out_dir, FIGURES["table1"]), table1_markdown(results))
    storage.write_text(storage.join(out_dir, FIGURES["table2"]), table2_markdown(results))
    storage.write_bytes(storage.join(out_dir, FIGURES["ced"]), ced_png(results))
    files = {k: FIGURES[k] for k in ("table1", "table2", "ced")}
    if samples is not None:
        storage.write_bytes(storage.join(out_dir, FIGURES["samples"]), samples_png(samples))
        files["samples"] = FIGURES["samples"]
    return files
