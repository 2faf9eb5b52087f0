"""Tables 1 and 2 of the paper as Markdown, from an evaluation's results dict (``superfan.evaluate``).

Rendering only: every number is already in the results, so ``superfan report`` can re-render an old
``results.json`` without the models or the data.
"""

from __future__ import annotations

import math
from typing import Any


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _faces_note(results: dict[str, Any], landmarks: bool) -> str:
    keys, names = results["pose_bins"]["keys"], results["pose_bins"]["names"]
    faces = results["faces"]
    counts = faces["with_landmarks"] if landmarks else {**faces["per_bin"], "unknown_yaw": faces["unknown_yaw"]}
    per = ", ".join(f"{n} {counts.get(k, 0)}" for k, n in zip(keys, names, strict=True))
    what = "faces with landmarks" if landmarks else "faces"
    unknown = counts.get("unknown_yaw", 0)
    note = f"{what} per |yaw| bin: {per}; unknown yaw (in no bin, not in balanced): {unknown}"
    src = results.get("pose_sources") or {}
    if src:
        note += "; yaw source: " + ", ".join(f"{k} {v}" for k, v in sorted(src.items()))
    return note


def table1_markdown(results: dict[str, Any]) -> str:
    """Table 1 laid out like the paper's: rows = image sources, PSNR then SSIM per yaw bin + balanced.

    A last column, not in the paper, gives the grid artefact (``metrics.grid_artefact``, all faces; "–" in
    results written before it existed).
    """
    keys, names = results["pose_bins"]["keys"], results["pose_bins"]["names"]
    cols = [*keys, "balanced"]
    header = ["Method"] + [f"PSNR {n}" for n in [*names, "balanced"]] + [f"SSIM {n}" for n in [*names, "balanced"]]
    header.append("grid artefact")
    rows = []
    for row in results["table1"]:
        label = f"{row['method']} upsample (baseline)" if row.get("baseline") else row["method"]
        rows.append(
            [label]
            + [_fmt(row["psnr"].get(k), ".2f") for k in cols]
            + [_fmt(row["ssim"].get(k), ".4f") for k in cols]
            + [_fmt(row.get("grid_artefact"), ".2f")]
        )
    title = (
        "Table 1: PSNR (dB) and SSIM on RGB of the super-resolved 64x64 faces, per |yaw| bin; grid artefact = "
        "share of spectral power at the 2- and 4-px periods relative to HR's (1.00 = HR's level, above = a "
        "sub-pixel grid texture, below = less fine detail than HR), all faces."
    )
    return f"{title}\n\n{_md_table(header, rows)}\n\n{_faces_note(results, landmarks=False)}.\n"


def table2_markdown(results: dict[str, Any]) -> str:
    """Table 2 laid out like the paper's: rows = methods, AUC@threshold (%) per yaw bin + balanced."""
    keys, names = results["pose_bins"]["keys"], results["pose_bins"]["names"]
    header = ["Method", *names, "balanced"]
    rows = [[row["method"], *_auc_cells(row["auc"], keys)] for row in results["table2"]]
    thr = results["threshold"]
    title = (
        f"Table 2: AUC of the CED curve up to NME {thr:g} (normaliser sqrt(w*h) of the ground-truth "
        "landmark box), per |yaw| bin; balanced = mean of the non-empty bins."
    )
    text = f"{title}\n\n{_md_table(header, rows)}\n\n{_faces_note(results, landmarks=True)}.\n"
    return text + _inner_and_groups_markdown(results)


def _inner_and_groups_markdown(results: dict[str, Any]) -> str:
    """Beside Table 2 (not in the paper): its AUC on the 51 inner points, and the mean NME of each landmark
    group per yaw bin, so an error of one group (a jaw annotated in another convention) shows by name
    instead of hiding in the average. Empty for results written before these existed."""
    rows2 = [r for r in results["table2"] if r.get("auc_inner")]
    if not rows2:
        return ""
    keys, names = results["pose_bins"]["keys"], results["pose_bins"]["names"]
    inner = [[r["method"], *_auc_cells(r["auc_inner"], keys)] for r in rows2]
    groups = list(rows2[0].get("nme_groups") or {})
    parts = [
        "\nTable 2 on the 51 inner points (the 17 jaw points left out; same normaliser, all 68 points' box).\n",
        _md_table(["Method", *names, "balanced"], inner),
    ]
    for k, n in [*zip(keys, names, strict=True), ("all", "all faces")]:
        cells = [[r["method"], *(_fmt(_pct(r["nme_groups"][g].get(k)), ".2f") for g in groups)] for r in rows2]
        if all(c == "–" for row in cells for c in row[1:]):
            continue
        title = f"\nMean NME (% of sqrt(w*h)) per landmark group, |yaw| {n}.\n"
        parts += [title, _md_table(["Method", *groups], cells)]
    return "\n".join(parts) + "\n"


def _auc_cells(auc: dict[str, float | None], keys: list[str]) -> list[str]:
    """One Table 2 row's cells: AUC in % per yaw bin, then balanced; "–" for an empty bin."""
    return ["–" if auc.get(k) is None else f"{100 * auc[k]:.1f}%" for k in [*keys, "balanced"]]


def _pct(v: float | None) -> float | None:
    return None if v is None else 100.0 * v
