"""``importance.png`` (which searched parameters mattered) and ``parallel.png`` (every trial's parameters
against its metric).

Importance is Optuna's own ``optuna.importance.get_param_importances`` with the fANOVA evaluator, on an
in-memory study rebuilt from the finished trials: each trial's parameters (``params.json``) with the
distributions of the sweep's space (``sweep.json``), and its best value of the sweep's metric (the value
the table shows and promotion ranks). fANOVA needs scikit-learn; without it Optuna's PED-ANOVA is used
and the figure says so. Too few trials (or one parameter) give a placeholder that says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from superfan.sweep_report.plots import figure, placeholder, png
from superfan.sweep_report.trials import DIVERGED, ERROR, FINISHED, STOPPED, Trial, best_record, short_name

#: Trials whose value counts: they ended by themselves or were stopped by ASHA.
ENDED = (FINISHED, STOPPED)


def distribution(spec: Mapping[str, Any]) -> Any:
    """The Optuna distribution of a sweep.json spec (see ``sweeps/space.py``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec["type"]
    if kind == "loguniform":
        return FloatDistribution(float(spec["low"]), float(spec["high"]), log=True)
    if kind == "uniform":
        return FloatDistribution(float(spec["low"]), float(spec["high"]))
    if kind == "int":
        return IntDistribution(int(spec["low"]), int(spec["high"]))
    return CategoricalDistribution(list(spec["values"]))


def scored(trials: Sequence[Trial], space: Mapping[str, Any], metric: str, mode: str) -> list[tuple[dict, float]]:
    """``(params, value)`` of each ended trial with every searched parameter and a finite metric."""
    out = []
    for t in trials:
        if t.status not in ENDED or not all(k in t.params for k in space):
            continue
        best = best_record(t.records, metric, mode)
        if best is not None:
            out.append(({k: t.params[k] for k in space}, float(best[metric])))
    return out


def study(points: Sequence[tuple[dict, float]], space: Mapping[str, Any], mode: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    dists = {k: distribution(spec) for k, spec in space.items()}
    for params, value in points:
        s.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    return s


def importances(
    trials: Sequence[Trial], space: Mapping[str, Any], metric: str, mode: str, seed: int = 0
) -> tuple[dict[str, float] | None, str]:
    """``(parameter -> importance, evaluator name)``, or ``(None, why not)``."""
    points = scored(trials, space, metric, mode)
    if len(space) < 2:
        return None, f"the sweep searches {len(space)} parameter(s): importance needs at least 2"
    if len(points) < 2:
        return None, f"{len(points)} finished trial(s) with a finite {metric}: importance needs at least 2"
    if len({v for _, v in points}) < 2:
        return None, f"every finished trial scored the same {metric}: nothing to attribute"
    import optuna

    try:
        import sklearn  # noqa: F401 - fANOVA's random forest

        evaluator, name = optuna.importance.FanovaImportanceEvaluator(seed=seed), "fANOVA"
    except ImportError:
        evaluator, name = optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA (scikit-learn not installed)"
    try:
        got = optuna.importance.get_param_importances(study(points, space, mode), evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return None, f"Optuna could not compute importances: {str(err).splitlines()[0][:120]}"
    return {k: float(v) for k, v in got.items()}, name


def importance_png(
    trials: Sequence[Trial], space: Mapping[str, Any], metric: str, mode: str
) -> tuple[bytes, str | None]:
    """The figure, and why it is a placeholder (None when it is not)."""
    got, name = importances(trials, space, metric, mode)
    if got is None:
        return placeholder("Parameter importance", name), f"Not computed: {name}."
    n = len(scored(trials, space, metric, mode))
    keys = sorted(got, key=lambda k: got[k])
    fig = figure(6.6, 1.2 + 0.45 * len(keys))
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.barh([short_name(k) for k in keys], [got[k] for k in keys], color="#1f77b4")
    for bar, k in zip(bars, keys, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {got[k]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1e-9, max(got.values())) * 1.18)
    ax.set_xlabel(f"importance for {metric} ({name}, {n} finished trials)", fontsize=9)
    ax.set_title("Which searched parameters mattered", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return png(fig), None


# --------------------------------------------------------------------------------- parallel coordinates


def _axis(values: Sequence[Any], spec: Mapping[str, Any]) -> tuple[list[float], list[tuple[float, str]]]:
    """Values scaled to [0, 1] on the spec's own scale, and (position, label) ticks."""
    kind = spec["type"]
    if kind == "choice":
        choices = [str(v) for v in spec["values"]]
        pos = {c: (i / (len(choices) - 1) if len(choices) > 1 else 0.5) for i, c in enumerate(choices)}
        return [pos.get(str(v), 0.5) for v in values], [(p, c[:10]) for c, p in pos.items()]
    lo, hi = float(spec["low"]), float(spec["high"])
    log = kind == "loguniform"
    f = (lambda v: math.log10(v)) if log else (lambda v: v)  # noqa: E731
    span = (f(hi) - f(lo)) or 1.0
    scaled = [(f(float(v)) - f(lo)) / span for v in values]
    return scaled, [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")]


def parallel_png(trials: Sequence[Trial], space: Mapping[str, Any], metric: str, mode: str) -> bytes:
    """One line per trial through its parameters (each axis on its spec's scale) to its best ``metric``,
    coloured by that value; diverged and errored trials are grey at the bottom of the metric axis."""
    rows = []
    for t in trials:
        if not all(k in t.params for k in space) or not t.params:
            continue
        best = best_record(t.records, metric, mode)
        rows.append((t, None if best is None else float(best[metric])))
    if not space:
        return placeholder("Parallel coordinates", "the sweep searches no parameter")
    if not rows:
        return placeholder("Parallel coordinates", "no trial has started yet")
    keys = list(space)
    cols = []
    ticks = []
    for k in keys:
        scaled, tk = _axis([t.params[k] for t, _ in rows], space[k])
        cols.append(scaled)
        ticks.append(tk)
    values = [v for _, v in rows if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    span = (hi - lo) or 1.0
    metric_col = [((v - lo) / span if v is not None else 0.0) for _, v in rows]
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    cmap, norm = colormaps["viridis"], Normalize(lo, hi if hi > lo else lo + 1e-9)
    fig = figure(max(6.0, 1.9 * (len(keys) + 1)), 4.6)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(keys) + 1))
    order = sorted(range(len(rows)), key=lambda i: -1e18 if rows[i][1] is None else rows[i][1])
    for i in order:  # best drawn last, on top
        t, v = rows[i]
        ys = [c[i] for c in cols] + [metric_col[i]]
        grey = v is None or t.status in (DIVERGED, ERROR)
        ax.plot(xs, ys, "-o", color="#bbbbbb" if grey else cmap(norm(v)), linewidth=2 if not grey else 1,
                markersize=4, alpha=0.9, zorder=1 if grey else 2)  # fmt: skip
    for x, tk in enumerate(ticks):
        ax.axvline(x, color="black", linewidth=0.8)
        for p, label in tk:
            ax.text(x + 0.04, p, label, fontsize=7, va="center", color="#333")
    ax.axvline(len(keys), color="black", linewidth=0.8)
    ax.text(len(keys) + 0.04, 0.0, f"{lo:.3g}", fontsize=7, va="center")
    if hi > lo:
        ax.text(len(keys) + 0.04, 1.0, f"{hi:.3g}", fontsize=7, va="center")
    ax.set_xticks(xs, [short_name(k) for k in keys] + [metric], fontsize=8, rotation=10)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlim(-0.15, len(keys) + 0.5)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{len(rows)} trials: parameters (on their search scale) against the best {metric}", fontsize=10)
    from matplotlib.cm import ScalarMappable

    if hi > lo:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, pad=0.02).ax.tick_params(labelsize=7)
    fig.tight_layout()
    return png(fig)
