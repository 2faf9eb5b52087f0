"""The CED figure (fraction of faces against NME) of an evaluation's Table 2 methods."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def ced_png(results: dict[str, Any]) -> bytes:
    """CED curves (fraction of faces vs NME) of every Table 2 method, AUC in the legend; PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    t = np.asarray(results["ced"]["thresholds"], dtype=float)
    aucs = {row["method"]: row["auc"].get("all") for row in results["table2"]}
    for name, curve in results["ced"]["curves"].items():
        y = np.array([np.nan if v is None else v for v in curve], dtype=float)
        a = aucs.get(name)
        label = f"{name} (AUC {100 * a:.1f}%)" if a is not None else name
        ax.plot(t, y, label=label, linewidth=1.6, linestyle="--" if name == "FAN-HR" else "-")
    ax.set_xlim(0, float(t[-1]) if len(t) else 0.1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("NME (normalised by sqrt(w*h) of the landmark box)")
    ax.set_ylabel("fraction of faces")
    ax.set_title(f"CED, all faces with landmarks (n={results['faces']['with_landmarks'].get('all', 0)})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
