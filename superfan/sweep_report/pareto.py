"""``pareto.png``: balanced AUC against PSNR for every report of every trial, the Pareto front, the champion.

The paper's point (section 5): PSNR and landmark accuracy disagree, so the report a sweep promotes (best
AUC) is rarely the one with the best PSNR. Both objectives are maximised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from superfan.sweep_report.plots import colour, figure, placeholder, png
from superfan.sweep_report.trials import Trial, finite

X_KEY, Y_KEY = "val_psnr", "val_auc_balanced"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (both maximised), by increasing x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(set(points), key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


def pareto_png(trials: Sequence[Trial], champion: Mapping[str, Any] | None = None) -> bytes:
    """``champion``: the champion manifest's ``metrics`` (None: no champion yet)."""
    pts_by_trial = [
        [(float(r[X_KEY]), float(r[Y_KEY])) for r in t.records if finite(r.get(X_KEY)) and finite(r.get(Y_KEY))]
        for t in trials
    ]
    every = [p for pts in pts_by_trial for p in pts]
    if not every:
        return placeholder("AUC against PSNR", "no report with a finite AUC and PSNR yet")
    fig = figure(7.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    for i, (t, pts) in enumerate(zip(trials, pts_by_trial, strict=True)):
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color=colour(i), alpha=0.8, label=t.trial_id)
    front = pareto_front(every)
    ax.step([p[0] for p in front], [p[1] for p in front], where="pre", color="black", linewidth=1.2,
            linestyle="--", label=f"Pareto front ({len(front)})")  # fmt: skip
    ax.scatter([p[0] for p in front], [p[1] for p in front], s=60, facecolors="none", edgecolors="black")
    if champion and finite(champion.get(X_KEY)) and finite(champion.get(Y_KEY)):
        ax.scatter([champion[X_KEY]], [champion[Y_KEY]], marker="*", s=320, color="gold", edgecolors="black",
                   zorder=5, label="champion")  # fmt: skip
    ax.set_xlabel("validation PSNR (dB)")
    ax.set_ylabel("validation AUC balanced (NME 0.1)")
    ax.set_title(f"Every report of every trial ({len(every)} reports): landmark accuracy vs PSNR", fontsize=10)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > 14:  # many trials: keep the legend to the front and the champion
        keep = [i for i, lab in enumerate(labels) if lab.startswith("Pareto") or lab == "champion"]
        handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
    ax.legend(handles, labels, fontsize=8, loc="best")
    fig.tight_layout()
    return png(fig)
