"""The sweep report: ``superfan sweep report EXPERIMENT_URL``, also written when a sweep ends.

Everything is read from storage (``<storage>/sweeps/<name>``, local or ``s3://``): ``sweep.json``, each
trial's ``params.json`` and ``result.json``, Tune's ``experiment_state-*.json`` and the champion
(``<storage>/champions/<name>/latest`` and that version's ``manifest.json``), so it works on a finished,
a resumed or a still-running sweep, and without Ray. Written into ``<experiment>/report/``, one file at a
time through :mod:`superfan.storage` (each write atomic):

* ``report.md``: settings, search space, trial table, the champion with its lineage, the figures;
* ``curves.png`` (:mod:`.curves`), ``pareto.png`` (:mod:`.pareto`), ``importance.png`` and
  ``parallel.png`` (:mod:`.importance`), ``champion.png`` (:mod:`.faces`, with the champion's evaluation
  on the validation faces in ``champion/``).

A figure that cannot be drawn (too few trials, no validation data reachable) is a labelled placeholder
and a note in ``report.md``, never an error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from superfan import storage
from superfan.errors import StorageError, UserError
from superfan.sweep_report.trials import REPORT_KEYS, Experiment, read_experiment, table_row, trial_status

__all__ = ["REPORT_DIR", "REPORT_KEYS", "Report", "read_experiment", "table_row", "trial_status", "write_report"]

REPORT_DIR = "report"


@dataclass(frozen=True)
class Report:
    url: str  #: the report directory
    markdown: str  #: URL of report.md
    files: tuple[str, ...]
    seconds: float


def read_champion(exp: Experiment) -> tuple[dict[str, Any] | None, str | None]:
    """The champion's manifest and version URL via ``<storage>/champions/<name>/latest``, or (None, None)."""
    root = storage.join(exp.storage_root, "champions", exp.name)
    latest = storage.join(root, "latest")
    try:
        if not storage.exists(latest):
            return None, None
        url = storage.join(root, storage.read_text(latest).strip())
        return json.loads(storage.read_text(storage.join(url, "manifest.json"))), url
    except (StorageError, ValueError):
        return None, None


def _champion_faces(exp: Experiment, champion_url: str | None, out: str) -> tuple[bytes, str | None]:
    """champion.png and a note for report.md (None when the figure is the real one)."""
    from superfan.sweep_report.champion_sheet import champion_png, evaluate_champion
    from superfan.sweep_report.plots import placeholder

    title = "The champion on validation faces"
    if champion_url is None:
        return placeholder(title, "no champion promoted yet"), None
    try:
        val = ((exp.sweep.get("config") or {}).get("data") or {}).get("val") or None
        results = evaluate_champion(champion_url, storage.join(out, "champion"), val)
        from superfan.evaluate import load_samples

        samples = load_samples(storage.join(out, "champion", "samples.npz"))
        if samples is None:
            raise UserError("no validation face with landmarks")
    except (UserError, OSError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        return (
            placeholder(title, f"validation data not usable: {why[:90]}"),
            f"The champion could not be shown on validation faces: {why}",
        )
    edges = tuple(results["pose_bins"]["edges"])
    table = storage.read_text(storage.join(out, "champion", "table2.md"))
    note = (
        f"On the validation faces ({results['faces']['all']} faces, `champion/`: [Table 1](champion/table1.md), "
        f"[Table 2](champion/table2.md)):\n\n{table.strip()}"
    )
    return champion_png(samples, edges), note


def write_report(experiment_url: str, out: str | None = None, *, faces: bool = True) -> Report:
    """Write the report of the sweep at ``experiment_url`` into ``out`` (default ``<experiment>/report``)."""
    from superfan.sweep_report.curves import curves_png
    from superfan.sweep_report.importance import importance_png, parallel_png
    from superfan.sweep_report.markdown import report_markdown
    from superfan.sweep_report.pareto import pareto_png

    t0 = time.perf_counter()
    exp = read_experiment(experiment_url)
    out = out or storage.join(exp.url, REPORT_DIR)
    champion, champion_url = read_champion(exp)
    notes: dict[str, str] = {}
    importance, why = importance_png(exp.trials, exp.space, exp.metric, exp.mode)
    if why:
        notes["importance.png"] = why
    figures = {
        "curves.png": curves_png(exp.trials, exp.total_epochs),
        "pareto.png": pareto_png(exp.trials, (champion or {}).get("metrics")),
        "importance.png": importance,
        "parallel.png": parallel_png(exp.trials, exp.space, exp.metric, exp.mode),
    }
    faces_note = None
    if faces:
        figures["champion.png"], faces_note = _champion_faces(exp, champion_url, out)
    else:
        from superfan.sweep_report.plots import placeholder

        figures["champion.png"] = placeholder("The champion on validation faces", "not drawn (--no-faces)")
    for name, data in figures.items():
        storage.write_bytes(storage.join(out, name), data)
    seconds = time.perf_counter() - t0
    footer = f"Made {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} in {seconds:.1f} s from what is on storage."
    md = report_markdown(exp, champion, champion_url, faces_note, notes, footer)
    md_url = storage.join(out, "report.md")
    storage.write_text(md_url, md)
    return Report(out, md_url, (*figures, "report.md"), time.perf_counter() - t0)
