"""``champion.png``: the champion on validation faces, LR | bicubic | SR with landmarks | HR, per pose bin.

The champion is scored by ``superfan.evaluate.evaluate_models`` on the sweep's validation data (the faces
and LR degradation its trial validated on, at most ``data.val_samples`` faces), with three Table 2 rows:
FAN-bicubic, the champion's SR (its own FAN after end-to-end training, else the teacher) and FAN-HR. That
evaluation's files (tables, CED, sample faces) land in ``report/champion/``; the figure is its
``samples_png`` grid (red: predicted landmarks, green: ground truth) with each row's yaw and pose bin
written on the left. Faces are picked round-robin over the yaw bins.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from superfan import storage
from superfan.errors import UserError

#: Faces shown per pose bin.
PER_BIN = 2


def _methods(champion_url: str, payload: dict[str, Any]) -> list[Any]:
    from superfan.checkpoint import load_checkpoint, models_from_checkpoint
    from superfan.evaluate import Method

    nets = models_from_checkpoint(payload, "cpu")
    teacher = None
    if payload.get("teacher") and storage.exists(storage.join(str(payload["teacher"]), "checkpoint.pt")):
        teacher = models_from_checkpoint(load_checkpoint(str(payload["teacher"])), "cpu")["fan"]
    own = nets["fan"] if payload.get("stage_kind") == "end2end" else None
    ref = teacher or nets["fan"]
    if nets["generator"] is None or ref is None:
        raise UserError(f"{champion_url}: the champion has no generator or no FAN to localise with")
    sr = (  # column titles are cut at a tile's width: keep them short (the variant is in report.md)
        Method("SR, own FAN", own, nets["generator"], "superfan", source="SR")
        if own is not None
        else Method("SR (champion)", ref, nets["generator"], "sr", source="SR")
    )
    return [Method("bicubic", ref, None, "bicubic"), sr, Method("FAN-HR", ref, None, "hr")]


def evaluate_champion(champion_url: str, out_dir: str, val: list[str] | None = None) -> dict[str, Any]:
    """Evaluate the champion on ``val`` (the sweep's ``config.data.val``; default its own config's) with
    its config's LR degradation; writes ``out_dir`` (results.json, tables, samples); returns the results.
    Raises ``UserError`` (incl. storage errors) when it cannot."""
    from superfan.checkpoint import load_checkpoint
    from superfan.config import from_dict
    from superfan.data.stream import make_loader
    from superfan.evaluate import evaluate_models

    payload = load_checkpoint(champion_url)
    cfg = from_dict(payload["config"], source="champion config")
    urls = list(val or cfg.data.val or [])
    if not urls:
        raise UserError("no validation data (config.data.val is empty)")
    methods = _methods(champion_url, payload)
    loader = make_loader(urls, cfg, train=False)
    meta = {"champion": champion_url, "data": urls}
    return evaluate_models(
        methods,
        loader,
        cfg,
        out_dir,
        max_faces=cfg.data.val_samples,
        samples=PER_BIN * len(cfg.eval.pose_bins),
        meta=meta,
    )


def champion_png(samples: Mapping[str, Any], edges: tuple[float, ...] = (0.0, 30.0, 60.0)) -> bytes:
    """The evaluation's sample grid with a left column naming each face's yaw and pose bin (``edges``: the
    lower edges of the yaw bins, ``cfg.eval.pose_bins``)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from superfan.landmarks import pose_bin, pose_bin_names
    from superfan.render.overlays import samples_png

    bins = pose_bin(np.asarray(samples["yaw"], dtype=float), tuple(edges))
    order = np.argsort(np.where(bins < 0, len(edges), bins), kind="stable")  # by pose bin, unknown yaw last
    samples = {k: (v if k == "methods" else np.asarray(v)[order]) for k, v in samples.items()}
    bins = bins[order]
    grid = Image.open(io.BytesIO(samples_png(samples, scale=3))).convert("RGB")
    rows = len(samples["yaw"])
    header, tile = 14, (grid.height - 14) // max(rows, 1)
    names = pose_bin_names(tuple(edges))
    margin = 92
    canvas = Image.new("RGB", (grid.width + margin, grid.height), "white")
    canvas.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 1), "pose", fill="black")
    for r in range(rows):
        yaw = float(samples["yaw"][r])
        b = int(bins[r])
        name = names[b] if 0 <= b < len(names) else "yaw unknown"
        y = header + r * tile + tile // 2 - 12
        draw.text((4, y), f"|yaw| {name}", fill="black")
        draw.text((4, y + 14), f"yaw {yaw:+.0f} deg" if np.isfinite(yaw) else "", fill="#444")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
