"""Table rows from checkpoint files, and ``superfan evaluate``'s whole run over a shard set."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from superfan.config import Config
from superfan.errors import UserError
from superfan.evaluate.methods import Method, standard_methods, variant_name
from superfan.evaluate.results import evaluate_models


def _label(path: str, payload: dict[str, Any]) -> str:
    """The paper's variant name of a checkpoint's generator (:func:`variant_name` of its stage kind and its
    config's loss weights), else its stage name, else its directory name."""
    losses = (payload.get("config") or {}).get("losses")
    variant = variant_name(payload.get("stage_kind"), losses if isinstance(losses, dict) else None)
    if variant:
        return variant
    stage = payload.get("stage")
    if stage:
        return str(stage)
    return os.path.basename(str(path).rstrip("/").removesuffix("/checkpoint.pt")) or "checkpoint"


def methods_from_checkpoints(
    teacher_ckpt: str, checkpoints: Sequence[str], device: str | torch.device = "cpu"
) -> tuple[list[Method], dict[str, Any]]:
    """Load the teacher FAN and each checkpoint, and lay out the paper's Table 2 rows for them.

    Returns ``(methods, meta)``; ``meta`` records what was loaded (paths, stages, configs) for the JSON.
    A checkpoint's label is the paper's variant name of its stage kind (``Ours-pixel`` ... ``Super-FAN``,
    :func:`variant_name`), else its stage name, made unique with ``#2``, ``#3``.
    """
    from superfan.checkpoint import load_checkpoint, models_from_checkpoint, require_file

    require_file(teacher_ckpt)
    payload = load_checkpoint(teacher_ckpt)
    teacher = models_from_checkpoint(payload, device)["fan"]
    if teacher is None:
        raise UserError(
            f"{teacher_ckpt}: holds no FAN (stage_kind {payload.get('stage_kind')!r}); "
            "--fan takes the teacher from `superfan train fan`"
        )
    meta: dict[str, Any] = {
        "teacher": {
            "path": str(teacher_ckpt),
            "stage": payload.get("stage"),
            "config": payload.get("config"),
        },
        "checkpoints": [],
    }
    gens: list[tuple[str, nn.Module, nn.Module | None]] = []
    used: Counter = Counter()
    for path in checkpoints:
        require_file(path)
        pl = load_checkpoint(path)
        nets = models_from_checkpoint(pl, device)
        if nets["generator"] is None:
            raise UserError(
                f"{path}: holds no generator (stage_kind {pl.get('stage_kind')!r}); a FAN checkpoint goes to --fan"
            )
        label = _label(path, pl)
        used[label] += 1
        if used[label] > 1:
            label = f"{label}#{used[label]}"
        own = nets["fan"] if pl.get("stage_kind") == "end2end" else None
        gens.append((label, nets["generator"], own))
        meta["checkpoints"].append(
            {
                "path": str(path),
                "label": label,
                "stage": pl.get("stage"),
                "stage_kind": pl.get("stage_kind"),
                "global_epoch": pl.get("global_epoch"),
                "step": pl.get("step"),
                "perceptual_pretrained": pl.get("perceptual_pretrained"),
                "config": pl.get("config"),
            }
        )
    return standard_methods(teacher, gens), meta


def evaluate_methods(
    data_urls: Sequence[str],
    teacher_ckpt: str,
    checkpoints: Sequence[str],
    cfg: Config | None,
    out_dir: str | os.PathLike[str],
    max_faces: int | None = None,
    *,
    device: str | torch.device = "cpu",
    samples: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """``superfan evaluate``: Tables 1 and 2 for a teacher FAN and checkpoints on a shard set.

    ``cfg`` sets the data stream (batch size, LR degradation) and the bins/threshold; None uses the
    config saved in the first checkpoint (else the teacher's), so LR inputs are degraded the way the
    generators were trained. ``cfg.data.val_samples`` is ignored (every face is scored unless
    ``max_faces``).
    """
    from superfan.config import from_dict

    methods, meta = methods_from_checkpoints(teacher_ckpt, checkpoints, device)  # bad paths fail first
    from superfan.data.stream import make_loader

    if cfg is None:
        saved = (meta["checkpoints"][0]["config"] if meta["checkpoints"] else None) or meta["teacher"]["config"]
        cfg = from_dict(saved, source="checkpoint config")
    # The whole test set: the profile's validation cap (for fast in-training validation) does not apply here;
    # --max-faces is the cap.
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val_samples": None})})
    meta["data"] = list(data_urls)
    meta["config"] = cfg.to_dict()
    meta["max_faces"] = max_faces
    loader = make_loader(list(data_urls), cfg, train=False)
    return evaluate_models(
        methods, loader, cfg, out_dir, max_faces=max_faces, samples=samples, progress=progress, meta=meta
    )
