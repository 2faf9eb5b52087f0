"""A finished sweep's results: one row per trial (its best report), the printed table, and the promotion.

Every checkpointed report of a promotable stage (``sweep.promote_stages``, default the last stage run) is
a candidate; the best by the sweep's metric is promoted to ``<storage>/champions/<name>/``
(:mod:`superfan.champion`). A trial that reported ``diverged`` is ``DIVERGED`` in its row, one that ASHA
ended before its last epoch ``STOPPED (ASHA)``. The rows are the sweep report's
(:mod:`superfan.sweep_report`), which also reads them back from storage; :func:`write_report` writes it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from superfan.cliargs import info
from superfan.sweep_report.trials import REPORT_KEYS, short_name, table_row, trial_status
from sweeps.settings import Sweep
from sweeps.space import decode


def trial_rows(results: Any, sweep: Sweep) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per trial: its row of the table (:func:`superfan.sweep_report.table_row`, the one the sweep report
    shows: best report by the metric); and every checkpointed report as a promotion candidate."""
    from superfan.champion import Candidate
    from superfan.train.driver import checkpoint_url

    metric, mode = sweep.settings.metric, sweep.settings.mode
    promotable = set(sweep.settings.promote_stages or sweep.stages[-1:])
    rows, candidates = [], []
    for result in results:
        df = result.metrics_dataframe
        cfg = dict(result.config or {})
        trial_id = (result.metrics or {}).get("trial_id") or Path(str(result.path)).name
        records = [] if df is None else df.to_dict("records")
        status = trial_status(records, "ERROR" if result.error else "TERMINATED", sweep.total_epochs)
        params = {k: decode(cfg[k]) for k in sweep.space if k in cfg}
        rows.append(table_row(str(trial_id), status, records, params, list(sweep.space), metric, mode))
        for rec in records:
            ckpt = rec.get("checkpoint_path")
            value = rec.get(metric)
            finite = isinstance(value, int | float) and math.isfinite(value)
            if finite and isinstance(ckpt, str) and ckpt and rec.get("stage") in promotable:
                metrics = {k: rec.get(k) for k in REPORT_KEYS if k in rec}
                metrics["training_iteration"] = rec.get("training_iteration")
                cand_params = {k: cfg[k] for k in sweep.space if k in cfg}
                candidates.append(Candidate(checkpoint_url(ckpt, sweep.storage), metrics, str(trial_id), cand_params))
    return rows, candidates


#: The exception line of a traceback: ``superfan.errors.ConfigError: message`` (the message optional).
_EXCEPTION_LINE = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Diverged|Data|Interrupt))(: .*)?$")


def failure_line(error: BaseException) -> str:
    """Why a trial failed, in one line: the last exception line of its (worker's) traceback, e.g.
    ``superfan.errors.ConfigError: model.perceptual_weights '...': cannot load a state dict (...)``."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    found = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    return (found or lines or [type(error).__name__])[-1]


def print_results(rows: list[dict[str, Any]], sweep: Sweep, champion: Any = None) -> None:
    """The trial table; the champion's trial names the promoted checkpoint (stage@epoch), and one line says
    why that can differ from the trial's best report."""
    from superfan.champion import metrics_table
    from superfan.sweep_report.markdown import PROMOTED_NOTE, champion_cell

    manifest = champion.manifest if champion is not None else None
    rows = [{**r, "promoted": champion_cell(r, manifest)} for r in rows]
    first = [("trial", "trial"), ("status", "status"), ("epochs", "epochs")]
    first += [(short_name(k), short_name(k)) for k in sweep.space]
    first += [("promoted", "champion checkpoint")]
    info(f"\nsweep {sweep.name}: best report of each trial (by {sweep.settings.metric})")
    info(metrics_table(rows, first=first))
    if manifest is not None:
        info(PROMOTED_NOTE.replace("`", "").replace("*", ""))


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
    from sweeps.tracking import register_champion

    version = register_champion(sweep, champ)
    if version is not None:
        info(f"  MLflow: model {sweep.name!r} version {version}, alias 'champion' ({sweep.settings.mlflow})")
    info(f"  trial {m['trial_id']}, epoch {m['metrics'].get('global_epoch')}, source {m['source']}")
    info(metrics_table([m["metrics"]]))
    return champ


def write_report(sweep: Sweep) -> str | None:
    """The sweep report (``<experiment>/report/``, :mod:`superfan.sweep_report`); its report.md URL. A report
    that fails does not fail the sweep: it says why and how to rerun it (``superfan sweep report``)."""
    from superfan.errors import UserError
    from superfan.sweep_report import write_report as write

    try:
        report = write(sweep.experiment_url)
    except (UserError, OSError, ValueError, RuntimeError) as err:
        print(f"\nsweep report failed ({err}); rerun: superfan sweep report {sweep.experiment_url}", flush=True)
        return None
    print(f"\nreport: {report.markdown} (written in {report.seconds:.0f} s; figures beside it)", flush=True)
    return report.markdown
