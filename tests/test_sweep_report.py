"""The sweep report (``superfan.sweep_report``), on a real 2-trial sweep run once for the module.

The sweep runs as users run it (``python sweeps/loss_weights.py``, tiny models, 16-face epochs) and must end
by writing ``<storage>/sweeps/<name>/report/``; the other tests rewrite the report from copies of that
experiment: with ``superfan sweep report``, for one trial, for a sweep still running, with the validation
data gone, and on S3 (SeaweedFS).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("curves.png", "pareto.png", "importance.png", "parallel.png", "champion.png")


def _copy(swept: dict[str, Any], dest: Path) -> Path:
    """The sweep's experiment and champions under a new storage root ``dest``, without its report."""
    shutil.copytree(swept["experiment"], dest / "sweeps" / "rep", ignore=shutil.ignore_patterns("report"))
    shutil.copytree(swept["store"] / "champions", dest / "champions")
    return dest / "sweeps" / "rep"


def _check_pngs(report: Path) -> None:
    from PIL import Image

    for name in FIGURES:
        with Image.open(report / name) as img:
            img.verify()
        with Image.open(report / name) as img:
            assert img.width >= 300 and img.height >= 200, (name, img.size)


def _trial_lines(md: str) -> list[str]:
    section = md.split("## Trials", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| trial")]


def test_the_sweep_ends_by_writing_the_report(swept: dict[str, Any]) -> None:
    report = swept["experiment"] / "report"
    tail = "\n".join(swept["stdout"].strip().splitlines()[-3:])  # Ray's own logs go to stderr
    assert f"report: {report / 'report.md'}" in tail, tail
    md = (report / "report.md").read_text()
    assert md.startswith("# Sweep report: rep")
    for heading in ("## Settings", "## Search space", "## Trials", "## Champion", "## Figures"):
        assert heading in md
    rows = _trial_lines(md)
    assert len(rows) == 2 and {r.split("|")[1].strip() for r in rows} == set(swept["trials"])
    assert all("TERMINATED" in r or "STOPPED (ASHA)" in r for r in rows)
    assert "AUC [0,30)" in md and "AUC balanced" in md and "wall time" in md
    # The champion's trial names its promoted checkpoint, and one line says why it can differ from the best.
    champion = json.loads((swept["store"] / "champions" / "rep" / "v0001" / "manifest.json").read_text())
    cell = f"{champion['stage']}@{champion['metrics']['global_epoch']}"
    assert [r.split("|")[1].strip() for r in rows if cell in r] == [champion["trial_id"]], rows
    assert "so the *best at* epoch of its trial" in md
    printed = swept["stdout"].split("best report of each trial", 1)[1]
    assert "champion checkpoint" in printed and cell in printed and "so the best at epoch of its trial" in printed
    assert "`losses.heatmap.weight` | loguniform" in md  # the search space
    assert "| version | v0001 at" in md and "lineage: teacher_sha256" in md
    for name in FIGURES:
        assert f"]({name})" in md
    assert "Table 2" in md  # the champion scored on the validation faces
    assert (report / "champion" / "results.json").is_file()
    _check_pngs(report)


def test_superfan_sweep_report_rewrites_it(swept: dict[str, Any], tmp_path: Path) -> None:
    from superfan.cli import main

    experiment = _copy(swept, tmp_path / "store")
    assert main(["sweep", "report", str(experiment)]) == 0
    md = (experiment / "report" / "report.md").read_text()
    assert len(_trial_lines(md)) == 2
    seconds = float(re.search(r"in ([\d.]+) s from what is on storage", md).group(1))  # type: ignore[union-attr]
    assert seconds < 120
    _check_pngs(experiment / "report")
    before = (experiment / "report" / "curves.png").stat().st_mtime_ns
    assert main(["sweep", "report", str(experiment), "--no-faces"]) == 0
    assert (experiment / "report" / "curves.png").stat().st_mtime_ns > before


def test_one_trial(swept: dict[str, Any], tmp_path: Path) -> None:
    from superfan.sweep_report import write_report

    experiment = _copy(swept, tmp_path / "store")
    champion = json.loads((tmp_path / "store" / "champions" / "rep" / "v0001" / "manifest.json").read_text())
    drop = next(t for t in swept["trials"] if t != champion["trial_id"])
    shutil.rmtree(experiment / f"trial_{drop}")
    for state in experiment.glob("experiment_state-*.json"):
        data = json.loads(state.read_text())
        data["trial_data"] = [t for t in data["trial_data"] if json.loads(t[0])["trial_id"] != drop]
        state.write_text(json.dumps(data))
    report = write_report(str(experiment))
    md = Path(report.markdown).read_text()
    assert len(_trial_lines(md)) == 1 and champion["trial_id"] in md
    assert "Not computed: " in md  # importance needs 2 finished trials
    _check_pngs(experiment / "report")


def test_a_running_sweep_and_unreachable_validation_data(swept: dict[str, Any], tmp_path: Path) -> None:
    """Mid-sweep: one trial has reported one epoch and runs on, no champion yet; and the val data has gone."""
    from superfan.sweep_report import write_report

    experiment = _copy(swept, tmp_path / "store")
    shutil.rmtree(tmp_path / "store" / "champions")
    running = swept["trials"][0]
    result = experiment / f"trial_{running}" / "result.json"
    result.write_text(result.read_text().splitlines()[0] + "\n")
    for state in experiment.glob("experiment_state-*.json"):
        data = json.loads(state.read_text())
        for t in data["trial_data"]:
            trial = json.loads(t[0])
            if trial["trial_id"] == running:
                trial["status"] = "RUNNING"
                t[0] = json.dumps(trial)
        state.write_text(json.dumps(data))
    md = Path(write_report(str(experiment)).markdown).read_text()
    assert next(r for r in _trial_lines(md) if running in r).split("|")[2].strip() == "RUNNING"
    assert "No champion promoted yet" in md
    _check_pngs(experiment / "report")

    # The champion back, the sweep's validation data gone: a placeholder and a note, not a failure.
    shutil.copytree(swept["store"] / "champions", tmp_path / "store" / "champions")
    sweep = json.loads((experiment / "sweep.json").read_text())
    sweep["config"]["data"]["val"] = [str(tmp_path / "gone" / "manifest.json")]
    (experiment / "sweep.json").write_text(json.dumps(sweep))
    md = Path(write_report(str(experiment)).markdown).read_text()
    assert "The champion could not be shown on validation faces" in md and "not found" in md
    _check_pngs(experiment / "report")


def test_on_s3(swept: dict[str, Any], s3_env: dict[str, str]) -> None:
    """Read from and written to SeaweedFS, file by file through superfan.storage."""
    from superfan import storage
    from superfan.cli import main

    root = "s3://superfan/report-test"
    for sub in ("sweeps/rep", "champions/rep"):
        local = swept["store"] / sub
        for path in local.rglob("*"):
            if path.is_file() and "report" not in path.relative_to(local).parts:
                storage.upload_file(path, f"{root}/{sub}/{path.relative_to(local).as_posix()}")
    assert main(["sweep", "report", f"{root}/sweeps/rep"]) == 0
    md = storage.read_text(f"{root}/sweeps/rep/report/report.md")
    assert len(_trial_lines(md)) == 2 and "| version | v0001 at" in md
    files = set(storage.list_files(f"{root}/sweeps/rep/report"))
    assert {"report.md", *FIGURES, "champion/results.json"} <= files
    assert storage.read_bytes(f"{root}/sweeps/rep/report/pareto.png")[:8] == b"\x89PNG\r\n\x1a\n"
