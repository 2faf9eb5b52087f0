"""A finished sweep's results: one row per trial (its best report), the printed table, and the promotion.

Every checkpointed report of a promotable stage (``sweep.promote_stages``, default the last stage run) is
a candidate; the best by the sweep's metric is promoted to ``<storage>/champions/<name>/``
(:mod:`superfan.champion`). A trial that reported ``diverged`` is ``DIVERGED`` in its row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sweeps.settings import Sweep
from sweeps.space import decode

#: Reported keys shown in the results table and written into the champion's manifest.
REPORT_KEYS = (
    "val_auc_balanced",
    "val_auc_0_30",
    "val_auc_30_60",
    "val_auc_60_90",
    "val_nme",
    "val_psnr",
    "val_ssim",
    "global_epoch",
    "stage",
)


def _short(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[-2:]) if len(parts) > 1 else key


def trial_rows(results: Any, sweep: Sweep) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per trial: its best report (by the metric) for the table; and every checkpointed report as a
    promotion candidate."""
    from superfan.champion import Candidate
    from superfan.train.trainer import checkpoint_url

    metric, mode = sweep.settings.metric, sweep.settings.mode
    promotable = set(sweep.settings.promote_stages or sweep.stages[-1:])
    rows, candidates = [], []
    for result in results:
        df = result.metrics_dataframe
        cfg = dict(result.config or {})
        trial_id = (result.metrics or {}).get("trial_id") or Path(str(result.path)).name
        records = [] if df is None else df.to_dict("records")
        status = "ERROR" if result.error else "TERMINATED"
        if any(rec.get("diverged") is True for rec in records):
            status = "DIVERGED"
        row: dict[str, Any] = {"trial": trial_id, "status": status, "reports": 0}
        row.update({_short(k): decode(cfg[k]) for k in sweep.space if k in cfg})
        row["reports"] = len(records)
        best = None
        for rec in records:
            value = rec.get(metric)
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            if best is None or (value > best[metric] if mode == "max" else value < best[metric]):
                best = rec
            ckpt = rec.get("checkpoint_path")
            if isinstance(ckpt, str) and ckpt and rec.get("stage") in promotable:
                params = {k: cfg[k] for k in sweep.space if k in cfg}
                metrics = {k: rec.get(k) for k in REPORT_KEYS if k in rec}
                metrics["training_iteration"] = rec.get("training_iteration")
                candidates.append(Candidate(checkpoint_url(ckpt, sweep.storage), metrics, str(trial_id), params))
        if best is not None:
            row.update({k: best.get(k) for k in REPORT_KEYS if k in best})
        rows.append(row)
    return rows, candidates


def print_results(rows: list[dict[str, Any]], sweep: Sweep) -> None:
    from superfan.champion import metrics_table

    first = [("trial", "trial"), ("status", "status"), ("reports", "epochs")]
    first += [(_short(k), _short(k)) for k in sweep.space]
    print(f"\nsweep {sweep.name}: best report of each trial (by {sweep.settings.metric})")
    print(metrics_table(rows, first=first))


def promote_best(candidates: list[Any], sweep: Sweep) -> Any:
    from superfan.champion import metrics_table, promote

    champ = promote(
        candidates,
        sweep.storage,
        sweep.name,
        metric=sweep.settings.metric,
        mode=sweep.settings.mode,
        extra={
            "sweep": {
                "kind": sweep.kind,
                "config_file": sweep.config_file,
                "settings": sweep.settings.model_dump(mode="json"),
                "space": sweep.space,
            }
        },
    )
    if champ is None:
        print(
            f"\nsweep {sweep.name}: no trial produced a checkpoint with a finite {sweep.settings.metric}; "
            "nothing promoted"
        )
        return None
    m = champ.manifest
    print(f"\nchampion: {champ.url}")
    print(f"  trial {m['trial_id']}, epoch {m['metrics'].get('global_epoch')}, source {m['source']}")
    print(metrics_table([m["metrics"]]))
    return champ
