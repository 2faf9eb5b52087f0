"""What a training run reports each epoch, and where the reports go when no Ray is involved.

Every report carries the same keys (docs/contracts.md); a run that stops itself (divergence, bad data)
reports every validation key as NaN, so a scheduler or searcher keyed on any of them gets a value and
promotion never picks it. :class:`LocalReporter` is the loop's reporter outside Ray (tests, scripts);
Ray's is :class:`superfan.train.worker.RayReporter`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol

from superfan import storage
from superfan.errors import TrainingDiverged, UserError

#: Validation keys every report carries; a stopped run reports them as NaN.
DIVERGED_NAN_KEYS = ("val_auc_balanced", "val_auc_0_30", "val_auc_30_60", "val_auc_60_90", "val_auc", "val_nme",
                     "val_psnr", "val_ssim")  # fmt: skip


#: Written by rank 0 into the run's directory when the run stops itself (bad data, divergence): Train's
#: ``Result.metrics`` only carries checkpointed reports, and a stop has no checkpoint.
STOP_FILE = "stopped.json"


class Reporter(Protocol):
    def __call__(self, metrics: dict[str, Any], payload: dict[str, Any] | None) -> None: ...


def checkpoint_dir_name(payload: dict[str, Any]) -> str:
    """``checkpoint_<global epoch>_<stage>``: sorts by time, and says which stage wrote it."""
    return f"checkpoint_{payload['global_epoch']:04d}_{payload['stage']}"


class LocalReporter:
    """Saves each checkpoint to ``<root>/checkpoint_<global_epoch>_<stage>`` and keeps every report."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root)
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[str] = []

    def __call__(self, metrics: dict[str, Any], payload: dict[str, Any] | None) -> None:
        from superfan.checkpoint import save_checkpoint

        self.reports.append(dict(metrics))
        if payload is not None:
            d = storage.join(self.root, checkpoint_dir_name(payload))
            save_checkpoint(d, payload)
            self.checkpoints.append(d)


def epoch_line(m: dict[str, Any], epochs: int) -> str:
    """One readable line per epoch for the driver's log (Ray's own report lines print the whole dict)."""
    parts = [f"[{m['stage']}] epoch {m['epoch']}/{epochs}", f"step {m['step']}", f"lr {m['lr']:.2e}"]
    total = m.get("train_loss_total")
    if isinstance(total, float):
        parts.append(f"loss {total:.4g}")
    for key, label in (("val_auc_balanced", "val AUC bal"), ("val_auc", "val AUC"), ("val_nme", "NME"),
                       ("val_psnr", "PSNR"), ("val_ssim", "SSIM")):  # fmt: skip
        if isinstance(m.get(key), float) and math.isfinite(m[key]):
            parts.append(f"{label} {m[key]:.4f}")
    parts.append(f"{m['images_per_s']:.0f} img/s")
    return " | ".join(parts)


def diverged_metrics(err: TrainingDiverged) -> dict[str, Any]:
    """The report of a diverged run: its counters where it stopped, every validation metric NaN (Optuna
    records the trial as failed, promotion never picks it), ``diverged`` set and the reason."""
    out: dict[str, Any] = {k: math.nan for k in DIVERGED_NAN_KEYS}
    for k, v in dict(getattr(err, "metrics", None) or {"diverged": True, "diverged_reason": str(err)}).items():
        out[k] = math.nan if k.startswith("val_") else v
    return out


def data_error_metrics(err: UserError) -> dict[str, Any]:
    """The report of a run stopped by its data (too many bad samples, a shard that fails its sha256):
    every validation metric NaN (never promoted) and ``data_error``, the one line the driver shows."""
    return {**{k: math.nan for k in DIVERGED_NAN_KEYS}, "data_error": str(err), "data_error_kind": type(err).__name__}
