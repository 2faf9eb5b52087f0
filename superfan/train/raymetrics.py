"""Each epoch's figures as Ray metrics, so they appear where a Ray user watches a cluster: the dashboard's
Metrics view (Grafana) and any Prometheus that scrapes the nodes' metrics export port.

Gauges (``ray.util.metrics``, exported by every node as ``ray_superfan_<name>``), tagged with the sweep, the
trial (for ``superfan train``: the run's name), the stage and, for AUC, the pose bin:

* ``superfan_val_auc{pose_bin="0_30"|"30_60"|"60_90"|"balanced"}`` (the configured ``eval.pose_bins``),
  ``superfan_val_nme``, ``superfan_val_psnr``, ``superfan_val_ssim``;
* ``superfan_images_per_second``, ``superfan_skipped_samples`` (distinct bad samples so far),
  ``superfan_device_hours``, ``superfan_global_epoch``.

Rank 0 of each Train run exports them once per epoch (every rank reports the same validation). Setting a
gauge is cheap and never fails a run: outside a Ray worker it does nothing.
"""

from __future__ import annotations

import math
from typing import Any

TAGS = ("sweep", "trial", "stage")
_AUC_PREFIX = "val_auc_"  # val_auc_<bin> for the configured pose bins (superfan.metrics.bin_keys), and _balanced
_GAUGES = {
    "val_nme": "Validation NME (landmark error / sqrt(w*h) of the box)",
    "val_psnr": "Validation PSNR of the super-resolved faces (dB)",
    "val_ssim": "Validation SSIM of the super-resolved faces",
    "images_per_s": "Training images per second of this run's rank 0",
    "skipped_samples": "Distinct bad samples skipped so far in this run",
    "device_hours": "Device-hours (GPU-hours, or CPU core-hours) spent by this run so far",
    "global_epoch": "Epochs finished over all stages of this run",
}
_NAMES = {"images_per_s": "images_per_second"}


class EpochMetrics:
    """The gauges of one Train run (created once per process, as Ray asks)."""

    def __init__(self, sweep: str, trial: str) -> None:
        from ray.util.metrics import Gauge

        self.base = {"sweep": sweep, "trial": trial}
        self.auc = Gauge("superfan_val_auc", "Validation AUC at NME 0.1, per pose bin", tag_keys=(*TAGS, "pose_bin"))
        self.gauges = {
            key: Gauge(f"superfan_{_NAMES.get(key, key)}", text, tag_keys=TAGS) for key, text in _GAUGES.items()
        }

    def export(self, metrics: dict[str, Any]) -> None:
        tags = {**self.base, "stage": str(metrics.get("stage", ""))}
        for key, value in metrics.items():
            if key.startswith(_AUC_PREFIX) and _finite(value):
                self.auc.set(float(value), tags={**tags, "pose_bin": key[len(_AUC_PREFIX) :]})
        for key, gauge in self.gauges.items():
            value = metrics.get(key)
            if _finite(value):
                gauge.set(float(value), tags=tags)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
