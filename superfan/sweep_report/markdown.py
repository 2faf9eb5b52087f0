"""``report.md``: the sweep's settings, search space, trial table, champion with lineage, and the figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from superfan.sweep_report.curves import bin_keys, bin_label
from superfan.sweep_report.trials import BAD_DATA, DIVERGED, ERROR, FINISHED, STOPPED, Experiment, finite, short_name

FIGURES = (
    ("curves.png", "Learning curves", "validation AUC (balanced and per pose bin) and PSNR of every trial by epoch; "
     "dotted lines: stage boundaries; crosses: stopped by ASHA"),
    ("pareto.png", "AUC against PSNR", "every report of every trial, the Pareto front (dashed), the champion (star)"),
    ("importance.png", "Parameter importance", "Optuna's fANOVA over the finished trials"),
    ("parallel.png", "Parallel coordinates", "each trial's parameters on their search scale, against its best metric"),
    ("champion.png", "The champion on validation faces", "LR (green: ground truth) | bicubic | SR | HR, "
     "red: predicted landmarks; rows: faces by pose bin"),
)  # fmt: skip


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def settings_section(exp: Experiment) -> str:
    s, sweep = exp.settings, exp.sweep
    cfg = sweep.get("config") or {}
    data = cfg.get("data") or {}
    by_name = {st["name"]: st for st in cfg.get("stages", [])}
    stages = ", ".join(f"{n} ({by_name.get(n, {}).get('kind', '?')}, {by_name.get(n, {}).get('epochs', '?')} ep)"
                       for n in sweep.get("stages") or [])  # fmt: skip
    rows = [
        ("kind", sweep.get("kind")),
        ("created", sweep.get("created")),
        ("sweep file", sweep.get("config_file")),
        ("profile", cfg.get("profile")),
        ("trials (samples)", s.get("samples")),
        ("metric", f"{s.get('metric')} ({s.get('mode')})"),
        ("multi-objective", f"{s.get('metric')} + {s.get('secondary_metric')}" if s.get("multi_objective") else "no"),
        ("stages per trial", stages),
        ("epochs per trial", exp.total_epochs),
        ("ASHA", f"grace period {s.get('grace_period')}, reduction factor {s.get('reduction_factor')}"),
        ("workers per trial", (cfg.get("train") or {}).get("workers")),
        ("max concurrent", s.get("max_concurrent") or "from the cluster"),
        ("seed", s.get("seed")),
        ("device-hour budget", _budget(exp)),
        ("train data", data.get("train") or "synthetic"),
        ("validation data", data.get("val") or "synthetic"),
        ("teacher", sweep.get("teacher")),
        ("storage", sweep.get("storage")),
    ]
    return "## Settings\n\n" + table(["setting", "value"], rows)


def _budget(exp: Experiment) -> str:
    budget = exp.settings.get("budget_hours")
    if not budget:
        return "none"
    spent = sum(r.get("device_hours") or 0.0 for r in exp.rows())
    reached = " (reached: no new trials were started after it)" if spent >= float(budget) else ""
    return f"{float(budget):g} h, {spent:.4g} h spent{reached}"


def space_section(exp: Experiment) -> str:
    rows = []
    for key, spec in exp.space.items():
        if spec.get("type") == "choice":
            rng = ", ".join(str(v) for v in spec["values"])
        else:
            rng = f"{fmt(spec.get('low'))} .. {fmt(spec.get('high'))}"
        rows.append((f"`{key}`", spec.get("type"), rng, _config_value(exp.sweep.get("config") or {}, key)))
    if not rows:
        return "## Search space\n\nNothing searched."
    return "## Search space\n\n" + table(["parameter", "type", "range", "config value (first trial)"], rows)


def _config_value(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


#: Why a trial's best report and the champion made from it can differ, said wherever both are shown.
PROMOTED_NOTE = (
    "The champion is the best checkpointed report of the promoted stages (`sweep.promote_stages`, default the "
    "last stage run: a Super-FAN sweep promotes a Super-FAN checkpoint), so the *best at* epoch of its trial, "
    "which ranks every report of every stage, can be another epoch with a higher AUC."
)


def champion_cell(row: Mapping[str, Any], champion: Mapping[str, Any] | None) -> str:
    """``stage@epoch (AUC)`` of the promoted checkpoint in its trial's row, else empty."""
    if not champion or str(champion.get("trial_id")) != str(row.get("trial")):
        return ""
    metrics = champion.get("metrics") or {}
    auc = metrics.get("val_auc_balanced")
    score = f" ({auc:.4f})" if isinstance(auc, float) else ""
    return f"{champion.get('stage')}@{metrics.get('global_epoch')}{score}"


def trials_section(exp: Experiment, champion: Mapping[str, Any] | None = None) -> str:
    rows = exp.rows()
    if not rows:
        return "## Trials\n\nNo trial has started yet."
    bins = bin_keys([r for t in exp.trials for r in t.records]) or ["val_auc_0_30", "val_auc_30_60", "val_auc_60_90"]
    params = [short_name(k) for k in exp.space]
    metrics = [*bins, "val_auc_balanced", "val_nme", "val_psnr", "val_ssim"]
    header = ["trial", "status", *params, "epochs", "best at", *[f"AUC {bin_label(k)}" for k in bins],
              "AUC balanced", "NME", "PSNR", "SSIM", "wall time", "champion checkpoint"]  # fmt: skip
    show_hours = any("device_hours" in r for r in rows)
    if show_hours:
        header.append("device-h")
    body = []
    for r in rows:
        line = [r["trial"], r["status"], *[r.get(p) for p in params], r["epochs"], r.get("global_epoch")]
        line += [r.get(k) for k in metrics] + [_duration(r.get("wall_s")), champion_cell(r, champion)]
        if show_hours:
            line.append(r.get("device_hours"))
        body.append(line)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in (FINISHED, STOPPED, DIVERGED, BAD_DATA, ERROR)}
    running = len(rows) - sum(counts.values())
    bad_data = f" {counts[BAD_DATA]} stopped on bad data," if counts[BAD_DATA] else ""
    summary = (
        f"{len(rows)} trials: {counts[FINISHED]} finished, {counts[STOPPED]} stopped by ASHA, "
        f"{counts[DIVERGED]} diverged,{bad_data} {counts[ERROR]} errored, {running} running or pending."
    )
    wall = sum(r.get("wall_s") or 0.0 for r in rows)
    cost = f" Trial time in all: {_duration(wall)}"
    if show_hours:
        cost += f", {sum(r.get('device_hours') or 0.0 for r in rows):.4g} device-hours"
    errors = [f"- `{t.trial_id}`: {t.error}" for t in exp.trials if t.error]
    note = (
        f"Metrics are each trial's best report by `{exp.metric}` (epoch in *best at*); *epochs* is the last "
        f"epoch reached (of {exp.total_epochs}). STOPPED (ASHA): ended early by the scheduler; DIVERGED: a "
        "non-finite training step (NaN metrics); BAD DATA: stopped by its data (too many bad samples, or a "
        "shard that fails its manifest's sha256). " + PROMOTED_NOTE
    )
    text = f"## Trials\n\n{summary}{cost}.\n\n{table(header, body)}\n\n{note}"
    return text + ("\n\nErrors:\n" + "\n".join(errors) if errors else "")


def champion_section(champion: Mapping[str, Any] | None, url: str | None, faces_note: str | None) -> str:
    if champion is None:
        return "## Champion\n\nNo champion promoted yet (the sweep is running, or no trial produced a checkpoint)."
    m = champion.get("metrics") or {}
    keys = [k for k in m if k.startswith("val_auc_") and k != "val_auc_balanced" and finite(m.get(k))]
    cols = [*keys, "val_auc_balanced", "val_nme", "val_psnr", "val_ssim"]
    metrics = table([f"AUC {bin_label(k)}" for k in keys] + ["AUC balanced", "NME", "PSNR", "SSIM"],
                    [[m.get(k) for k in cols]])  # fmt: skip
    rows = [
        ("version", f"{champion.get('version')} at `{url}`"),
        ("trial", champion.get("trial_id")),
        ("stage, epoch", f"{champion.get('stage')}, global epoch {m.get('global_epoch')}"),
        ("promoted by", f"{champion.get('metric')} ({champion.get('mode')})"),
        ("source checkpoint", f"`{champion.get('source')}`"),
        ("created", champion.get("created")),
        ("code version", champion.get("code_version")),
    ]
    rows += [(f"param `{k}`", v) for k, v in (champion.get("params") or {}).items()]
    lineage = champion.get("lineage") or {}
    for key, value in lineage.items():
        if isinstance(value, Mapping):
            value = "; ".join(f"{k}: {fmt(v)[:16] if 'sha' in key or 'manifest' in key else fmt(v)}"
                              for k, v in value.items())  # fmt: skip
        elif isinstance(value, str) and len(value) == 64:
            value = value[:16] + "…"
        rows.append((f"lineage: {key}", value))
    text = f"## Champion\n\n{metrics}\n\n{table(['', ''], rows)}"
    if faces_note:
        text += f"\n\n{faces_note}"
    return text


def figures_section(notes: Mapping[str, str]) -> str:
    parts = ["## Figures"]
    for name, title, caption in FIGURES:
        parts.append(f"### {title}\n\n![{title}]({name})\n\n{caption}." + (f" {notes[name]}" if name in notes else ""))
    return "\n\n".join(parts)


def report_markdown(
    exp: Experiment,
    champion: Mapping[str, Any] | None,
    champion_url: str | None,
    faces_note: str | None,
    notes: Mapping[str, str],
    footer: str,
) -> str:
    head = f"# Sweep report: {exp.name}\n\nExperiment `{exp.url}`. {footer}"
    parts = [head, settings_section(exp), space_section(exp), trials_section(exp, champion),
             champion_section(champion, champion_url, faces_note), figures_section(notes)]  # fmt: skip
    return "\n\n".join(parts) + "\n"
