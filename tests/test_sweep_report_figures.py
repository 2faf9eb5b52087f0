"""The sweep report's figures and importance on hand-made trials (fast; the slow module runs a real sweep)."""

from __future__ import annotations

import io
import math
import random

from PIL import Image

from superfan.sweep_report.curves import curves_png, stage_starts
from superfan.sweep_report.importance import distribution, importance_png, importances, parallel_png
from superfan.sweep_report.pareto import pareto_front, pareto_png
from superfan.sweep_report.trials import STOPPED, Trial, table_row, trial_status

SPACE = {
    "losses.perceptual.weight": {"type": "loguniform", "low": 0.001, "high": 0.1},
    "losses.heatmap.weight": {"type": "uniform", "low": 0.0, "high": 1.0},
    "model.generator.layout": {"type": "choice", "values": ["6-2-1", "9-0-0"]},
    "train.seed": {"type": "int", "low": 0, "high": 9},
}


def _trials(n: int, epochs: int = 4) -> list[Trial]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        params = {
            "losses.perceptual.weight": 10 ** rng.uniform(-3, -1),
            "losses.heatmap.weight": rng.random(),
            "model.generator.layout": rng.choice(["6-2-1", "9-0-0"]),
            "train.seed": rng.randint(0, 9),
        }
        last = epochs if i % 3 else 2  # every third trial stopped by ASHA at epoch 2
        records = [
            {"trial_id": f"t{i}", "global_epoch": e, "stage": "heatmap" if e <= 2 else "gan",
             "val_auc_balanced": params["losses.heatmap.weight"] * e / epochs, "val_auc_0_30": 0.5,
             "val_auc_30_60": 0.3, "val_auc_60_90": 0.1, "val_psnr": 20 + e - 3 * params["losses.heatmap.weight"],
             "time_total_s": 10.0 * e, "device_hours": 0.001 * e}
            for e in range(1, last + 1)
        ]  # fmt: skip
        status = trial_status(records, "TERMINATED", epochs)
        out.append(Trial(f"t{i}", params, records, "TERMINATED", status))
    return out


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def test_status_and_row() -> None:
    trials = _trials(3)
    assert trials[0].status == STOPPED and trials[1].status == "TERMINATED"
    assert trial_status([{"global_epoch": 1, "diverged": True}], "TERMINATED", 4) == "DIVERGED"
    row = table_row("t1", trials[1].status, trials[1].records, trials[1].params, list(SPACE), "val_auc_balanced")
    assert row["epochs"] == 4 and row["global_epoch"] == 4 and row["device_hours"] == 0.004 and row["wall_s"] == 40
    assert "perceptual.weight" in row and "generator.layout" in row
    assert stage_starts(trials[1].records) == [(2.5, "gan")]


def test_importance_with_optuna_from_the_sweep_space() -> None:
    assert distribution(SPACE["losses.perceptual.weight"]).log
    got, name = importances(_trials(12), SPACE, "val_auc_balanced", "max")
    assert got is not None and set(got) == set(SPACE) and math.isclose(sum(got.values()), 1.0, abs_tol=1e-6)
    assert name.startswith(("fANOVA", "PED-ANOVA"))
    assert max(got, key=got.get) == "losses.heatmap.weight"  # the metric is made of it
    data, why = importance_png(_trials(12), SPACE, "val_auc_balanced", "max")
    assert why is None and _png_size(data)[0] > 300
    one = {"losses.heatmap.weight": SPACE["losses.heatmap.weight"]}
    for trials, space in ((_trials(1), SPACE), (_trials(5), one)):
        data, why = importance_png(trials, space, "val_auc_balanced", "max")
        assert why and _png_size(data)[0] > 300  # a placeholder that says why


def test_pareto_front_and_figures() -> None:
    assert pareto_front([(1, 1), (2, 0.5), (0.5, 2), (0.4, 0.4), (1, 0.9)]) == [(0.5, 2), (1, 1), (2, 0.5)]
    trials = _trials(6)
    champion = trials[1].records[-1]
    for data in (curves_png(trials, 4), pareto_png(trials, champion), parallel_png(trials, SPACE, "val_auc_balanced",
                                                                                   "max")):  # fmt: skip
        w, h = _png_size(data)
        assert w > 300 and h > 200
    assert _png_size(curves_png([], 4))[0] > 300  # no report yet: a placeholder
