"""A sweep's trials as stored, and the one row per trial that the sweep's table and the report both show.

Read from what Tune leaves under ``<storage>/sweeps/<name>/`` (local or ``s3://``, through
:mod:`superfan.storage`): ``sweep.json`` (the resolved sweep), one ``trial_<id>/`` per trial with
``params.json`` and ``result.json`` (one report per line), and ``experiment_state-*.json`` (the trials'
statuses; one file per driver run, the newest wins). Nothing here needs Ray, so a report can be made of a
finished, a resumed or a still-running sweep, from any machine that reaches the storage.

:func:`trial_status` and :func:`table_row` are also what ``sweeps/results.py`` prints at the end of a sweep.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from superfan import storage
from superfan.errors import StorageError

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
#: What a trial ended as, beyond Tune's own statuses (TERMINATED, ERROR, RUNNING, PENDING, PAUSED).
DIVERGED = "DIVERGED"
BAD_DATA = "BAD DATA"
STOPPED = "STOPPED (ASHA)"
FINISHED = "TERMINATED"
ERROR = "ERROR"


def short_name(key: str) -> str:
    """``losses.pixel.weight`` -> ``pixel.weight``: the column name of a searched parameter."""
    parts = key.split(".")
    return ".".join(parts[-2:]) if len(parts) > 1 else key


def finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def best_record(records: Sequence[Mapping[str, Any]], metric: str, mode: str = "max") -> Mapping[str, Any] | None:
    """The report with the best finite ``metric`` (the earliest among equals), or None."""
    best = None
    for rec in records:
        value = rec.get(metric)
        if not finite(value):
            continue
        if best is None or (value > best[metric] if mode == "max" else value < best[metric]):
            best = rec
    return best


def last_epoch(records: Sequence[Mapping[str, Any]]) -> int:
    epochs = [int(r["global_epoch"]) for r in records if finite(r.get("global_epoch"))]
    return max(epochs, default=0)


def trial_status(records: Sequence[Mapping[str, Any]], tune_status: str, total_epochs: int | None) -> str:
    """What the table says about a trial: ``DIVERGED`` (it reported ``diverged``), ``BAD DATA`` (it stopped on
    its data: ``data_error``), ``STOPPED (ASHA)`` (Tune ended it before its last epoch), else Tune's status
    (``TERMINATED``, ``ERROR``, ``RUNNING``, ...)."""
    if any(r.get("diverged") is True for r in records):
        return DIVERGED
    if any(isinstance(r.get("data_error"), str) for r in records):
        return BAD_DATA
    if tune_status == FINISHED and total_epochs and records and last_epoch(records) < total_epochs:
        return STOPPED
    return tune_status


def table_row(
    trial_id: str,
    status: str,
    records: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    space: Sequence[str],
    metric: str,
    mode: str = "max",
) -> dict[str, Any]:
    """One trial's row: id, status, searched parameters (short names), epochs run, the best report's
    metrics (by ``metric``), wall time (Tune's ``time_total_s``) and device-hours when reported."""
    row: dict[str, Any] = {"trial": trial_id, "status": status, "reports": len(records), "epochs": last_epoch(records)}
    row.update({short_name(k): params[k] for k in space if k in params})
    best = best_record(records, metric, mode)
    if best is not None:
        row.update({k: best.get(k) for k in REPORT_KEYS if k in best})
    if records:
        last = records[-1]
        if finite(last.get("time_total_s")):
            row["wall_s"] = float(last["time_total_s"])
        hours = [r["device_hours"] for r in records if finite(r.get("device_hours"))]
        if hours:
            row["device_hours"] = float(max(hours))
    return row


# ---------------------------------------------------------------------------------------- from storage


@dataclass
class Trial:
    trial_id: str
    params: dict[str, Any]
    records: list[dict[str, Any]]  #: result.json, in order
    tune_status: str  #: from experiment_state (RUNNING when the state does not list it yet)
    status: str  #: :func:`trial_status`
    error: str | None = None  #: the last line of error.txt, when Tune wrote one


@dataclass
class Experiment:
    url: str
    sweep: dict[str, Any]  #: sweep.json
    trials: list[Trial] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.sweep.get("name") or self.url.rstrip("/").rsplit("/", 1)[-1])

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.sweep.get("settings") or {})

    @property
    def metric(self) -> str:
        return str(self.settings.get("metric") or "val_auc_balanced")

    @property
    def mode(self) -> str:
        return str(self.settings.get("mode") or "max")

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        return dict(self.sweep.get("space") or {})

    @property
    def storage_root(self) -> str:
        """``<storage>`` of ``<storage>/sweeps/<name>`` (from the URL: sweep.json may name another machine's path)."""
        return self.url.rstrip("/").rsplit("/", 2)[0]

    @property
    def total_epochs(self) -> int | None:
        stages = self.sweep.get("stages") or []
        by_name = {s["name"]: s["epochs"] for s in (self.sweep.get("config") or {}).get("stages", [])}
        try:
            return sum(int(by_name[n]) for n in stages) or None
        except (KeyError, TypeError, ValueError):  # an unknown stage name, or a damaged count: no total
            return None

    def rows(self) -> list[dict[str, Any]]:
        return [
            table_row(t.trial_id, t.status, t.records, t.params, list(self.space), self.metric, self.mode)
            for t in self.trials
        ]


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line being written as we read
                continue
    return out


def _tune_trials(url: str, files: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """trial id -> (status, params) from the newest ``experiment_state-*.json`` (one per driver run)."""
    states = sorted(f for f in files if "/" not in f and f.startswith("experiment_state-") and f.endswith(".json"))
    for name in reversed(states):
        try:
            state = json.loads(storage.read_text(storage.join(url, name)))
            trials = [json.loads(t[0]) for t in state["trial_data"]]
        except (StorageError, ValueError, KeyError, TypeError, IndexError):
            continue  # caught mid-write: an older state is better than none
        return {str(t["trial_id"]): (str(t.get("status") or "PENDING"), dict(t.get("config") or {})) for t in trials}
    return {}


def _read_trial(url: str, d: str, files: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """``(params, reports, last line of error.txt)`` of the trial directory ``d``."""
    base = storage.join(url, d)
    params: dict[str, Any] = {}
    if f"{d}/params.json" in files:
        try:
            params = json.loads(storage.read_text(storage.join(base, "params.json")))
        except ValueError:  # being written
            params = {}
    records = []
    if f"{d}/result.json" in files:
        records = _json_lines(storage.read_text(storage.join(base, "result.json")))
    error = None
    if f"{d}/error.txt" in files:
        lines = storage.read_text(storage.join(base, "error.txt")).strip().splitlines()
        error = lines[-1][:300] if lines else "error"
    return params, records, error


#: sweep.json fields the report reads, and the JSON type each must have
_SWEEP_FIELDS: dict[str, type] = {"name": str, "settings": dict, "space": dict, "config": dict, "stages": list}
_JSON_NAMES = {str: "string", dict: "object", list: "array"}


def _read_sweep_json(sweep_url: str) -> dict[str, Any]:
    """``sweep.json`` as an object; damage (not JSON, not an object, a field of the wrong type) is one line."""
    try:
        sweep = json.loads(storage.read_text(sweep_url))
    except ValueError as err:
        reason = f"{err.msg} at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else str(err)
        raise StorageError(f"{sweep_url}: damaged, not valid JSON ({reason}); is this a sweep's directory?") from None
    if not isinstance(sweep, dict):
        raise StorageError(f"{sweep_url}: damaged, expected a JSON object, got {type(sweep).__name__}")
    for key, kind in _SWEEP_FIELDS.items():
        if sweep.get(key) is not None and not isinstance(sweep[key], kind):
            raise StorageError(f"{sweep_url}: damaged, {key!r} is not a JSON {_JSON_NAMES[kind]}")
    if not all(isinstance(name, str) for name in sweep.get("stages") or []):
        raise StorageError(f"{sweep_url}: damaged, 'stages' is not a list of stage names")
    if not all(isinstance(spec, dict) for spec in (sweep.get("space") or {}).values()):
        raise StorageError(f"{sweep_url}: damaged, 'space' is not an object of search specs")
    stages = (sweep.get("config") or {}).get("stages", [])
    if not isinstance(stages, list) or not all(isinstance(s, dict) and "name" in s and "epochs" in s for s in stages):
        raise StorageError(f"{sweep_url}: damaged, 'config.stages' is not a list of stages")
    return sweep


def read_experiment(url: str) -> Experiment:
    """Everything about a sweep's trials that is on storage (``url`` = ``<storage>/sweeps/<name>``)."""
    url = url.rstrip("/")
    sweep_url = storage.join(url, "sweep.json")
    if not storage.exists(sweep_url):
        raise StorageError(f"{url}: no sweep there (no sweep.json; give <storage>/sweeps/<name>)")
    exp = Experiment(url=url, sweep=_read_sweep_json(sweep_url))
    files = storage.list_files(url)
    tune = _tune_trials(url, files)
    trial_files = ("/params.json", "/result.json")
    dirs = sorted({f.split("/", 1)[0] for f in files if f.count("/") == 1 and f.endswith(trial_files)})
    seen = set()
    for d in dirs:
        params, records, error = _read_trial(url, d, files)
        first_id = records[0].get("trial_id") if records else None
        trial_id = str(first_id) if first_id else d.removeprefix("trial_")
        seen.add(trial_id)
        tune_status = tune[trial_id][0] if trial_id in tune else (ERROR if error else "RUNNING")
        status = trial_status(records, tune_status, exp.total_epochs)
        exp.trials.append(Trial(trial_id, params, records, tune_status, status, error))
    for trial_id, (status, params) in tune.items():  # listed by Tune, no directory yet
        if trial_id not in seen:
            exp.trials.append(Trial(trial_id, params, [], status, status))
    return exp
