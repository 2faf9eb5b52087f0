"""Small matplotlib helpers shared by the report's figures: an Agg figure, PNG bytes, a labelled placeholder.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas (never ``pyplot``): no display, no
global state, safe in a Ray driver.
"""

from __future__ import annotations

import io
from typing import Any

#: One colour per trial, the same in every figure (matplotlib's tab10, then tab20's light half).
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip


def colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def figure(width: float, height: float, dpi: int = 110) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def placeholder(title: str, why: str, width: float = 6.4, height: float = 3.2) -> bytes:
    """A figure that says why the real one could not be drawn (too few trials, no data, ...)."""
    fig = figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    ax.text(0.5, 0.62, title, ha="center", va="center", fontsize=13, weight="bold", transform=ax.transAxes)
    ax.text(0.5, 0.38, why, ha="center", va="center", fontsize=10, wrap=True, transform=ax.transAxes, color="#444")
    return png(fig)
