"""``curves.png``: every trial's validation AUC (balanced and per pose bin) and PSNR against ``global_epoch``.

Stage boundaries (where a trial's reported ``stage`` changes) are dotted vertical lines named by the stage
that starts there; a trial stopped by ASHA ends in a cross, a diverged one in a triangle at its last epoch.
A Train restart re-reports epochs since its last checkpoint: the last report of each epoch is drawn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from superfan.sweep_report.plots import colour, figure, placeholder, png
from superfan.sweep_report.trials import DIVERGED, STOPPED, Trial, finite

_BIN = re.compile(r"val_auc_(\d+)_(\d+)$")


def bin_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """``val_auc_<lo>_<hi>`` keys reported, in yaw order."""
    keys = {k for r in records for k in r if _BIN.match(k)}
    return sorted(keys, key=lambda k: int(_BIN.match(k).group(1)))  # type: ignore[union-attr]


def bin_label(key: str) -> str:
    m = _BIN.match(key)
    if not m:
        return key
    lo, hi = m.groups()
    return f"[{lo},{hi}]" if hi == "90" else f"[{lo},{hi})"


def per_epoch(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last report of each ``global_epoch``, by epoch."""
    by_epoch: dict[int, Mapping[str, Any]] = {}
    for r in records:
        if finite(r.get("global_epoch")):
            by_epoch[int(r["global_epoch"])] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


def stage_starts(records: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
    """``(x, stage)`` where a new stage begins: between its first epoch and the previous one."""
    out, prev = [], None
    for r in per_epoch(records):
        stage = r.get("stage")
        if prev is not None and stage != prev:
            out.append((int(r["global_epoch"]) - 0.5, str(stage)))
        prev = stage
    return out


def curves_png(trials: Sequence[Trial], total_epochs: int | None = None) -> bytes:
    all_records = [r for t in trials for r in t.records]
    if not all_records:
        return placeholder("Learning curves", "no trial has reported an epoch yet")
    panels = [("val_auc_balanced", "AUC balanced")]
    panels += [(k, f"AUC {bin_label(k)}") for k in bin_keys(all_records)]
    panels.append(("val_psnr", "PSNR (dB)"))
    cols = 3
    rows = -(-(len(panels) + 1) // cols)  # one cell for the legend
    fig = figure(4.2 * cols, 3.0 * rows + 0.4)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(panels))]
    boundaries: dict[float, str] = {}
    for t in trials:
        for x, stage in stage_starts(t.records):
            boundaries.setdefault(x, stage)
    handles = []
    for i, t in enumerate(trials):
        pts = per_epoch(t.records)
        if not pts:
            continue
        said = {"TERMINATED": "", STOPPED: "stopped by ASHA"}.get(t.status, t.status.lower())
        label = f"{t.trial_id} ({said})" if said else t.trial_id
        for ax, (key, _) in zip(axes, panels, strict=True):
            xs = [int(r["global_epoch"]) for r in pts if finite(r.get(key))]
            ys = [float(r[key]) for r in pts if finite(r.get(key))]
            (line,) = ax.plot(xs, ys, "-o", color=colour(i), markersize=3, linewidth=1.4, label=label)
            if t.status in (STOPPED, DIVERGED) and xs:
                marker = "X" if t.status == STOPPED else "v"
                ax.plot(xs[-1], ys[-1], marker, color=colour(i), markersize=9, markeredgecolor="black")
            if ax is axes[0]:
                handles.append(line)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for x, stage in sorted(boundaries.items()):
            ax.axvline(x, color="#888", linestyle=":", linewidth=1)
            ax.text(x, 1.0, f" {stage}", transform=ax.get_xaxis_transform(), fontsize=7, color="#555", va="top")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch (global_epoch)", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if total_epochs:
            ax.set_xlim(0.5, total_epochs + 0.5)
        if key.startswith("val_auc"):  # AUC is a fraction: keep 0 in view, leave room above the best
            top = max([float(r[key]) for r in all_records if finite(r.get(key))], default=0.0)
            ax.set_ylim(-0.02, min(1.02, max(0.1, top * 1.15)))
        ax.xaxis.get_major_locator().set_params(integer=True)
    legend = fig.add_subplot(rows, cols, len(panels) + 1)
    legend.set_axis_off()
    from matplotlib.lines import Line2D

    marks = [
        Line2D([], [], marker="X", linestyle="", color="#666", markeredgecolor="black", markersize=9,
               label="stopped by ASHA"),
        Line2D([], [], marker="v", linestyle="", color="#666", markeredgecolor="black", markersize=9,
               label="diverged"),
        Line2D([], [], linestyle=":", color="#888", label="stage boundary"),
    ]  # fmt: skip
    shown = handles[:24]
    legend.legend(handles=shown + marks, loc="center", fontsize=8, title="trial", frameon=False,
                  ncol=2 if len(shown) > 12 else 1)  # fmt: skip
    fig.suptitle("Validation curves of every trial", fontsize=12)
    fig.tight_layout()
    return png(fig)
