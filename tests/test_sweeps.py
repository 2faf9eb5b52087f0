"""End to end: the sweep scripts as users run them, on real Ray, Optuna and a real S3 server.

* a 2-trial, 2-epoch sweep with all storage on SeaweedFS (synthetic shards packed, teacher trained, trials,
  champion) ends with a champion that ``pull`` downloads and verifies, and that holds the best report;
* ``--resume`` after the driver is killed mid-sweep finishes only the trials that had not finished;
* the same sweep submitted with ``ray job submit`` to a ``ray start --head`` cluster succeeds, and the
  dashboard's HTTP API lists the job as SUCCEEDED.

Models are tiny (1-1-1 generator, 8 channels) and epochs are 16 faces, so each sweep takes a minute or
two on 2 CPU cores; the drivers run as subprocesses, exactly as ``python sweeps/loss_weights.py`` would.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "loss_weights.py"
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def _sweep(args: list[str], env: dict[str, str], log: Path, timeout: float = 420) -> str:
    """Run the sweep script to completion; its combined output (and the log file on failure)."""
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)  # fmt: skip
    text = log.read_text()
    assert proc.returncode == 0, f"sweep failed (rc {proc.returncode}):\n{text[-6000:]}"
    return text


def _experiment_trials(experiment: Path) -> dict[str, str]:
    """trial id -> status from the newest experiment_state file Tune wrote (what --resume reads)."""
    # One file per driver run, named by its start time; a restored run writes a newer one.
    files = sorted(glob.glob(str(experiment / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        state = json.loads(Path(files[-1]).read_text())
    except ValueError:  # caught mid-write
        return {}
    trials = [json.loads(t[0]) for t in state["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def _result_rows(trial_dirs: list[str], read: Any) -> list[dict[str, Any]]:
    rows = []
    for d in trial_dirs:
        rows += [json.loads(line) for line in read(d).splitlines() if line.strip()]
    return rows


# -------------------------------------------------------------------------------------------------- S3


def _leaks(data: bytes, secrets: list[str]) -> list[str]:
    """Which of ``secrets`` appear in ``data``: raw, or hex-encoded as cloudpickle's state files write them."""
    found = []
    for secret in secrets:
        raw = secret.encode()
        forms = (raw, raw.hex().encode(), raw.hex().upper().encode())
        if any(form in data for form in forms):
            found.append(secret[:4] + "...")
    return found


def test_sweep_on_s3_promotes_a_verified_champion(s3_env: dict[str, str], sweep_yaml: Path, tmp_path: Path) -> None:
    from superfan import storage
    from superfan.champion import pull, verify_champion
    from superfan.checkpoint import load_checkpoint

    store = "s3://superfan/sweeps-test"
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's unix sockets live under it
    out = _sweep(["--config", str(sweep_yaml), "--storage", store, "--name", "s3-sweep", "--seed", "3"],
                 _env(**s3_env, RAY_TMPDIR=ray_tmp), tmp_path / "s3.log")  # fmt: skip
    # As an attacker with read access to the bucket or the machine would: every object of the bucket and
    # every file Ray left under its temp dir, read back byte for byte; no key id, no secret, raw or hex.
    secrets = [s3_env["AWS_ACCESS_KEY_ID"], s3_env["AWS_SECRET_ACCESS_KEY"]]
    leaked = {}
    for rel in storage.list_files("s3://superfan"):
        if found := _leaks(storage.read_bytes(f"s3://superfan/{rel}"), secrets):
            leaked[f"s3://superfan/{rel}"] = found
    scanned = 0
    for path in Path(ray_tmp).rglob("*"):
        if path.is_file() and not path.is_symlink():
            scanned += 1
            with contextlib.suppress(OSError):
                if found := _leaks(path.read_bytes(), secrets):
                    leaked[str(path)] = found
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert scanned > 20 and not leaked, leaked
    state = [p for p in storage.list_files(f"{store}/sweeps/s3-sweep") if "experiment_state" in p or "tuner.pkl" in p]
    assert state, "Tune's pickled state was not found in the bucket: the scan above proves nothing"
    assert "packing 32 synthetic faces" in out and "teacher FAN: training 1 epochs" in out
    assert "AUC [0,30)" in out and "AUC balanced" in out  # the results table
    # Quiet logs: Train's per-report dumps stay off without --verbose (they print every metric of every epoch)
    assert "Reporting training result" not in out and "TrainingReport(" not in out and "PreemptionWatcher" not in out
    assert out.count("RANDOM ResNet-50 features") == 1  # said once by the driver, not once per trial
    champ_url = f"{store}/champions/s3-sweep/v0001"
    assert f"champion: {champ_url}" in out
    assert storage.read_text(f"{store}/champions/s3-sweep/latest").strip() == "v0001"
    assert storage.exists(f"{store}/sweeps/s3-sweep/sweep.json")
    assert [p for p in storage.list_files(f"{store}/teachers") if p.endswith(".json")]

    manifest = verify_champion(champ_url)  # in place, on S3
    pulled = pull(f"{store}/champions/s3-sweep", tmp_path / "champion")
    assert pulled == manifest
    for key in ("val_auc_balanced", "val_auc_0_30", "val_auc_30_60", "val_auc_60_90", "val_psnr", "val_ssim"):
        assert isinstance(manifest["metrics"][key], float)
    assert manifest["config"]["profile"] == "tiny" and manifest["source"].startswith(f"{store}/trials/s3-sweep/")
    # Lineage: what a reader needs to reproduce the champion, and what it cost.
    lin = manifest["lineage"]
    (train_digest,) = lin["train_manifests"].values()
    assert len(train_digest) == 64 and len(next(iter(lin["val_manifests"].values()))) == 64
    assert len(lin["teacher_sha256"]) == 64 and lin["teacher"].startswith(f"{store}/runs/teacher-")
    assert lin["versions"]["ray"] == "2.60.0" and lin["versions"]["torch"].startswith("2.14")
    assert lin["device_kind"] == "CPU" and lin["device_hours"] > 0 and lin["wall_hours"] > 0
    assert manifest["stage"] == "heatmap" and lin["seeds"]["train"] == 0
    from superfan.provenance import source_sha256

    for who in (lin["code"], lin["promoted_by"]):  # the workers' code and the driver's: this checkout's
        assert who["source_sha256"] == source_sha256() and who["commit_source"] == "git" and len(who["commit"]) == 40
    payload = load_checkpoint(tmp_path / "champion")
    assert payload["stage_kind"] == "heatmap" and payload["generator"] is not None

    # The champion is the best report of all reports that carried a checkpoint, in every trial.
    results = [p for p in storage.list_files(f"{store}/sweeps/s3-sweep") if p.endswith("/result.json")]
    assert len(results) == 2
    rows = _result_rows([f"{store}/sweeps/s3-sweep/{p}" for p in results], storage.read_text)
    scored = [r for r in rows if r.get("checkpoint_path")]
    best = max(r["val_auc_balanced"] for r in scored)
    assert manifest["metrics"]["val_auc_balanced"] == pytest.approx(best)
    assert manifest["trial_id"] in {r["trial_id"] for r in rows}

    # The pulled directory is what users hand to `superfan evaluate` and to Enhancer.from_checkpoint.
    import numpy as np

    from superfan import Enhancer
    from superfan.cli import main as superfan_main

    val = f"{store}/data/synthetic-16-val/manifest.json"
    assert superfan_main(["evaluate", "--data", val, "--fan", payload["teacher"], str(tmp_path / "champion"),
                          "--out", str(tmp_path / "eval"), "--no-progress"]) == 0  # fmt: skip
    table2 = (tmp_path / "eval" / "table2.md").read_text()
    assert "FAN-bilinear" in table2 and "FAN-HR" in table2 and len(table2.splitlines()) >= 6
    res = Enhancer.from_checkpoint(tmp_path / "champion").enhance([np.zeros((20, 20, 3), np.uint8)] * 2)
    assert res.sr.shape == (2, 64, 64, 3) and res.landmarks.shape == (2, 68, 2)


# ---------------------------------------------------------------------------------------------- resume


def test_resume_after_killing_the_driver_finishes_only_the_rest(
    local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    args = ["--config", str(sweep_yaml), "--storage", str(store), "--name", "resume", "--samples", "3",
            "--max-concurrent", "1", "--data", local_inputs["train"], "--val", local_inputs["val"],
            "--teacher", local_inputs["teacher"]]  # fmt: skip
    experiment = store / "sweeps" / "resume"
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        # Own session: the kill takes the driver and the in-process Ray cluster it started, like a crash.
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=REPO, env=_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                if "TERMINATED" in _experiment_trials(experiment).values():
                    break
                time.sleep(0.5)
            assert proc.poll() is None, f"the driver ended before the kill:\n{log.read_text()[-4000:]}"
            before = _experiment_trials(experiment)
            assert "TERMINATED" in before.values(), f"no trial finished in time:\n{log.read_text()[-4000:]}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    time.sleep(2)  # let the killed cluster's processes go
    finished = {t for t, s in before.items() if s == "TERMINATED"}
    assert len(finished) < 3
    done_dirs = {t: glob.glob(str(experiment / f"*{t}*" / "result.json"))[0] for t in finished}
    rows_before = {t: Path(p).read_text() for t, p in done_dirs.items()}

    out = _sweep([*args, "--resume"], _env(), tmp_path / "resume.log")
    assert "resuming from" in out
    after = _experiment_trials(experiment)
    assert len(after) == 3, f"the resumed sweep should end with 3 trials, got {after}"
    assert set(before) <= set(after) and set(after.values()) == {"TERMINATED"}
    for t, p in done_dirs.items():  # finished trials were not run again
        assert Path(p).read_text() == rows_before[t]
    # The searcher carried on: the config's point was evaluated once, not again after the restore.
    params = [json.loads(Path(p).read_text()) for p in glob.glob(str(experiment / "*" / "params.json"))]
    assert len(params) == 3
    assert sum(1 for p in params if p["losses.pixel.weight"] == 1.0) == 1
    assert (store / "champions" / "resume" / "latest").read_text().strip() == "v0001"


# -------------------------------------------------------------------------------------------- ray job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _auth_headers() -> dict[str, str]:
    """Ray 2.60 turns on token auth when ~/.ray/auth_token exists; clients then send the token."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if not token and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _get(url: str) -> Any:
    req = urllib.request.Request(url, headers=_auth_headers())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A real ``ray start --head`` (2 CPUs, dashboard on loopback) in its own temp dir and session, exporting
    Prometheus metrics (``METRICS_URL`` in the env it yields) every second.

    ``--block`` keeps ``ray start`` as the parent of the head's processes, so teardown ends exactly this
    cluster (its process group) rather than every Ray process of the user, as ``ray stop`` would.
    """
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix sockets live under it
    dash, agent, metrics = _free_port(), _free_port(), _free_port()
    mode = "token" if _auth_headers() else "disabled"
    env = _env(RAY_AUTH_MODE=mode)
    log = open(Path(temp) / "ray-start.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
         "--port", str(_free_port()), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--dashboard-agent-listen-port", str(agent), "--metrics-export-port", str(metrics),
         "--system-config", json.dumps({"metrics_report_interval_ms": 1000}),
         "--temp-dir", temp, "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                # The dashboard answers before its job agent; `ray job submit` needs both.
                _get(f"{address}/api/jobs/")
                agent_url = f"http://127.0.0.1:{agent}/api/local_raylet_healthz"
                urllib.request.urlopen(urllib.request.Request(agent_url, headers=_auth_headers()), timeout=10).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray start failed:\n{(Path(temp) / 'ray-start.log').read_text()}") from None
                time.sleep(1)
        yield address, {**env, "METRICS_URL": f"http://127.0.0.1:{metrics}/metrics"}
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers (workers) of this cluster only
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_succeeds_and_dashboard_lists_it(
    ray_cluster: tuple[str, dict[str, str]], local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path
) -> None:
    address, env = ray_cluster
    store = tmp_path / "store"
    job_id = f"sweep-{uuid.uuid4().hex[:8]}"
    commit = "0123456789abcdef0123456789abcdef01234567"  # what the submitting machine's `git rev-parse HEAD` says
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--submission-id", job_id,
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"env_vars": {"SUPERFAN_GIT_COMMIT": commit}}),
           "--",
           "python", "sweeps/loss_weights.py", "--config", str(sweep_yaml), "--storage", str(store),
           "--name", "job-sweep", "--data", local_inputs["train"], "--val", local_inputs["val"],
           "--teacher", local_inputs["teacher"]]  # fmt: skip
    metrics_url = env.pop("METRICS_URL")
    log = tmp_path / "job.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        # The trials' gauges live while their Train workers do: read Ray's metrics export as a Prometheus
        # scrape would, while the job runs.
        samples = _scrape_while(proc, metrics_url, "ray_superfan_", timeout=480)
    output = log.read_text()
    assert proc.returncode == 0, output[-6000:]
    assert "champion:" in output and "AUC balanced" in output
    jobs = _get(f"{address}/api/jobs/")
    job = next((j for j in jobs if j.get("submission_id") == job_id), None)
    assert job is not None, f"job {job_id} not listed by the dashboard: {jobs}"
    assert job["status"] == "SUCCEEDED", job
    assert (store / "champions" / "job-sweep" / "latest").read_text().strip() == "v0001"
    # The uploaded working dir has no .git: the commit comes from the submitter, the package URI from Ray.
    lineage = json.loads((store / "champions" / "job-sweep" / "v0001" / "manifest.json").read_text())["lineage"]
    for who in (lineage["code"], lineage["promoted_by"]):
        assert who["commit"] == commit and who["commit_source"] == "SUPERFAN_GIT_COMMIT", who
        assert who["ray_working_dir"].startswith("gcs://_ray_pkg_") and len(who["source_sha256"]) == 64, who
    # The driver turned on Train state tracking for the job, so the dashboard lists each trial's Train run.
    runs = _get(f"{address}/api/train/v2/runs/v1")["train_runs"]
    assert job.get("job_id"), job
    trial_runs = [r for r in runs if r.get("status") == "FINISHED" and r.get("job_id") == job.get("job_id")]
    assert len(trial_runs) >= 2, runs
    # ... each under the sweep's name as well as its trial id, as a user sees it in the Train view.
    trial_ids = set(_experiment_trials(store / "sweeps" / "job-sweep"))
    assert {r["name"] for r in trial_runs} == {f"job-sweep-{t}" for t in trial_ids}, (trial_runs, trial_ids)
    # Every trial's per-epoch figures reached Ray's metrics export, tagged with sweep, trial, stage and pose bin.
    auc = [tags for name, tags in samples if name == "ray_superfan_val_auc"]
    assert {t["trial"] for t in auc if t.get("sweep") == "job-sweep"} == {f"job-sweep-{t}" for t in trial_ids}, auc
    assert {"0_30", "30_60", "60_90", "balanced"} <= {t["pose_bin"] for t in auc} and all(t["stage"] for t in auc)
    names = {name for name, _ in samples}
    for gauge in ("val_nme", "val_psnr", "images_per_second", "skipped_samples", "device_hours", "global_epoch"):
        assert f"ray_superfan_{gauge}" in names, names


def _scrape_while(proc: subprocess.Popen[bytes], url: str, prefix: str, timeout: float) -> list[tuple[str, dict]]:
    """Every ``(metric name, tags)`` series starting with ``prefix`` seen at ``url`` (Prometheus text format)
    while ``proc`` runs; ends ``proc``'s process group if it outlives ``timeout``."""
    seen: set[tuple[str, Any]] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"the job ran past {timeout} s")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
            for line in text.splitlines():
                if line.startswith(prefix):
                    name, _, rest = line.partition("{")
                    tags = dict(kv.split("=", 1) for kv in _split_labels(rest.rsplit("}", 1)[0]))
                    seen.add((name, tuple(sorted((k, v.strip('"')) for k, v in tags.items()))))
        time.sleep(0.5)
    return [(name, dict(tags)) for name, tags in seen]


def _split_labels(text: str) -> list[str]:
    """``a="x",b="y,z"`` -> ``['a="x"', 'b="y,z"']`` (commas inside quoted values kept)."""
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in [*out, cur] if p]


# --------------------------------------------------------------------------------- at cluster scale


def test_docs_paper_command_with_prefix_urls_trains(
    s3_env: dict[str, str], local_inputs: dict[str, str], tmp_path: Path
) -> None:
    """docs/cluster.md's paper-scale command shape: sweeps/configs/paper.yaml, shard *prefixes* on S3 (no
    manifest.json in the URL), one-pass epochs (samples_per_epoch null). Tiny sizes by overrides only."""
    from shards.pack import PackOptions, pack
    from superfan import storage

    root = "s3://superfan/paper-cmd"
    for split, n in (("train", 24), ("val", 12)):
        pack(PackOptions(format="synthetic", src=str(n), dest=f"{root}/shards/{split}", split=split, workers=1,
                         progress=False))  # fmt: skip
    shrink = ["train.use_gpu=false", "train.cpus_per_worker=1", "model.generator.layout=[1,1,1]",
              "model.generator.channels=8", "model.critic.channels=8", "model.perceptual_weights=random",
              "losses.perceptual.layers=[layer1]", "data.batch_size=4", "data.num_workers=0"]  # fmt: skip
    out = _sweep(["--config", str(REPO / "sweeps" / "configs" / "paper.yaml"), "--storage", f"{root}/sweeps",
                  "--data", f"{root}/shards/train", "--val", f"{root}/shards/val", "--teacher", local_inputs["teacher"],
                  "--samples", "1", "--epochs", "1", "--name", "paper-cmd", *shrink],
                 _env(**s3_env), tmp_path / "paper.log")  # fmt: skip
    assert "1 trials, 8 at a time, 3 epochs each" in out
    # 24 faces, batch 4, one pass: 6 steps in each of heatmap, gan and end2end.
    assert "[end2end] epoch 1/1 | step 18 |" in out
    assert storage.read_text(f"{root}/sweeps/champions/paper-cmd/latest").strip() == "v0001"


def _trial_rows(experiment: Path) -> list[list[dict[str, Any]]]:
    return [_result_rows([p], lambda d: Path(d).read_text()) for p in sorted(experiment.glob("*/result.json"))]


def test_asha_counts_epochs_across_a_train_restart(
    local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path
) -> None:
    """A worker killed in epoch 2, before any checkpoint (every 2 epochs): Train restarts the run from scratch
    and re-reports epoch 1, so Tune's report count runs one ahead of the epochs; ASHA keyed on the epoch the
    loop reports lets the trial reach its last epoch and checkpoint (keyed on reports it hit max_t early)."""
    store = tmp_path / "store"
    marker = tmp_path / "crashed"
    env = _env(SUPERFAN_DEBUG_FAULTS=json.dumps({"crash_at_step": 6, "crash_marker": str(marker)}))
    out = _sweep(["--config", str(sweep_yaml), "--storage", str(store), "--name", "restart", "--samples", "1",
                  "--epochs", "3", "--data", local_inputs["train"], "--val", local_inputs["val"],
                  "--teacher", local_inputs["teacher"], "train.max_failures=1", "train.checkpoint_every_epochs=2"],
                 env, tmp_path / "restart.log")  # fmt: skip
    assert marker.exists(), "the worker was never killed"
    (rows,) = _trial_rows(store / "sweeps" / "restart")
    epochs = [r["global_epoch"] for r in rows]
    assert epochs == [1, 1, 2, 3], epochs  # epoch 1 twice: the restart re-reported it
    assert rows[-1]["training_iteration"] == 4 and rows[-1]["global_epoch"] == 3
    assert rows[-1].get("checkpoint_path"), "the last epoch's checkpoint was not registered"
    # TensorBoard: every trial's epoch metrics as events under the sweep (tensorboard --logdir <storage>/sweeps/<name>).
    (events,) = (store / "sweeps" / "restart").glob("*/events.out.tfevents.*")
    assert b"ray/tune/val_auc_balanced" in events.read_bytes() and b"ray/tune/device_hours" in events.read_bytes()
    assert "champion:" in out


def test_a_diverging_trial_ends_once_and_another_is_promoted(
    local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path
) -> None:
    """Also the trackers a user watches a sweep in: the live Optuna study (through Optuna's API and
    optuna-dashboard's own WSGI app, while the sweep runs and after), and MLflow (a run per trial with its
    params and per-epoch metrics; the champion a registered model version with the alias ``champion``)."""
    store = tmp_path / "store"
    marker = tmp_path / "nan"
    study_url, mlflow_url = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    env = _env(SUPERFAN_DEBUG_FAULTS=json.dumps({"nan_at_step": 1, "nan_marker": str(marker)}))
    args = ["--config", str(sweep_yaml), "--storage", str(store), "--name", "nan", "--max-concurrent", "1",
            "--data", local_inputs["train"], "--val", local_inputs["val"], "--teacher", local_inputs["teacher"],
            "--optuna-storage", study_url, "--mlflow", mlflow_url, "train.max_failures=2"]  # fmt: skip
    log = tmp_path / "nan.log"
    with open(log, "w") as stdout:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, stdout=stdout,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        live = _dashboard_trials_while(proc, study_url, "nan", timeout=420)
    out = log.read_text()
    assert proc.returncode == 0, out[-6000:]
    assert live, "optuna-dashboard never showed a trial of the running sweep"
    assert marker.exists()
    _check_trackers(study_url, mlflow_url, store)
    assert "(0 errored, 1 diverged)" in out and "DIVERGED" in out
    trials = _trial_rows(store / "sweeps" / "nan")
    diverged = [rows for rows in trials if rows[-1].get("diverged")]
    assert len(diverged) == 1 and len(diverged[0]) == 1, "the diverged trial was retried or reported twice"
    assert math.isnan(diverged[0][0]["val_auc_balanced"])
    manifest = json.loads((store / "champions" / "nan" / "v0001" / "manifest.json").read_text())
    assert manifest["trial_id"] != diverged[0][0]["trial_id"]


def _dashboard_get(study_url: str, path: str, query: str = "") -> Any:
    """GET ``path`` from optuna-dashboard's own WSGI app over ``study_url`` (what ``optuna-dashboard URL``
    serves)."""
    from wsgiref.util import setup_testing_defaults

    import optuna_dashboard

    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD="GET")
    status: list[str] = []
    body = b"".join(optuna_dashboard.wsgi(study_url)(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:500])
    return json.loads(body)


def _dashboard_study(study_url: str, name: str) -> dict[str, Any] | None:
    summaries = _dashboard_get(study_url, "/api/studies")["study_summaries"]
    study = next((s for s in summaries if s["study_name"] == name), None)
    return None if study is None else _dashboard_get(study_url, f"/api/studies/{study['study_id']}", "after=0")


def _dashboard_trials_while(proc: subprocess.Popen[bytes], study_url: str, name: str, timeout: float) -> list:
    """The study's trials as optuna-dashboard showed them at the first look with a trial, while ``proc`` ran."""
    deadline = time.monotonic() + timeout
    seen: list = []
    while proc.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"the sweep ran past {timeout} s")
        if not seen and Path(study_url.removeprefix("sqlite:///")).exists():
            with contextlib.suppress(Exception):  # the driver may be creating the schema right now
                seen = (_dashboard_study(study_url, name) or {}).get("trials") or []
        time.sleep(1)
    return seen


def _check_trackers(study_url: str, mlflow_url: str, store: Path) -> None:
    """After the 2-trial sweep ``nan`` (one diverged): the Optuna study and the MLflow records."""
    import optuna
    from mlflow.tracking import MlflowClient

    study = optuna.load_study(study_name="nan", storage=study_url)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "PRUNED"], states  # the diverged trial is pruned, not a finished score
    space = {f"losses.{k}.weight" for k in ("pixel", "perceptual", "heatmap", "adversarial")}
    assert all(set(t.params) == space for t in study.trials), study.trials
    shown = _dashboard_study(study_url, "nan")
    assert shown is not None and sorted(t["state"] for t in shown["trials"]) == ["Complete", "Pruned"], shown
    client = MlflowClient(tracking_uri=mlflow_url)
    exp = client.get_experiment_by_name("nan")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2, runs
    for run in runs:
        assert run.data.tags["superfan.sweep"] == "nan" and space <= set(run.data.params), run.data
    finished = next(r for r in runs if math.isfinite(r.data.metrics.get("val_auc_balanced", math.nan)))
    history = client.get_metric_history(finished.info.run_id, "val_auc_balanced")
    assert len(history) >= 2, history  # one point per epoch
    manifest = json.loads((store / "champions" / "nan" / "v0001" / "manifest.json").read_text())
    version = client.get_model_version_by_alias("nan", "champion")
    assert version.source == f"{store}/champions/nan/v0001" and version.run_id == finished.info.run_id
    assert version.tags["superfan.trial"] == manifest["trial_id"] and version.tags["superfan.version"] == "v0001"


def test_multi_objective_sweep_stops_at_its_budget(
    local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path
) -> None:
    """--multi-objective (AUC and PSNR through Optuna's Pareto TPE) end to end, and --budget-hours: with a
    budget smaller than one epoch's cost, the first trial runs to the end and no other trial starts."""
    store = tmp_path / "store"
    out = _sweep(["--config", str(sweep_yaml), "--storage", str(store), "--name", "mo", "--samples", "3",
                  "--max-concurrent", "1", "--multi-objective", "--budget-hours", "0.000001",
                  "--data", local_inputs["train"], "--val", local_inputs["val"], "--teacher", local_inputs["teacher"]],
                 _env(), tmp_path / "mo.log")  # fmt: skip
    trials = _experiment_trials(store / "sweeps" / "mo")
    assert len(trials) == 1 and set(trials.values()) == {"TERMINATED"}, trials
    assert "no new trials" in out and "(reached: no new trials started)" in out
    assert "CPU core-hours" in out and "champion:" in out
    settings = json.loads((store / "sweeps" / "mo" / "sweep.json").read_text())["settings"]
    assert settings["multi_objective"] is True and settings["budget_hours"] == 0.000001
