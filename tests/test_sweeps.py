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
import importlib
import json
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

SWEEP_YAML = """
base: tiny
model:
  generator: {layout: [1, 1, 1], channels: 8}
  critic: {channels: 8}
  fan: {stacks: 1, features: 16, hourglass_depth: 2}
losses: {perceptual: {layers: [layer1]}}
stages:
  - {name: teacher, kind: fan, epochs: 1, lr_start: 1.0e-3, lr_end: 1.0e-4}
  - {name: heatmap, kind: heatmap, epochs: 2, lr_start: 1.0e-3, lr_end: 1.0e-4}
data: {batch_size: 4, samples_per_epoch: 16, val_samples: 16, num_workers: 0, shuffle_buffer: 16}
train: {max_failures: 0}
sweep: {samples: 2, synthetic_train: 32, synthetic_val: 16, grace_period: 2}
search:
  loss_weights:
    losses.pixel.weight: {type: loguniform, around: 10}
    losses.perceptual.weight: {type: loguniform, around: 10}
    losses.heatmap.weight: {type: loguniform, around: 10}
    losses.adversarial.weight: {type: loguniform, around: 10}
"""


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


@pytest.fixture(scope="module")
def sweep_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweepcfg") / "sweep.yaml"
    path.write_text(SWEEP_YAML)
    return path


@pytest.fixture(scope="module")
def local_inputs(tmp_path_factory: pytest.TempPathFactory, sweep_yaml: Path) -> dict[str, str]:
    """Synthetic train/val shards and a freshly initialised teacher FAN checkpoint, on local disk.

    The S3 test trains its teacher through the driver; the other tests reuse this one to save a Train run.
    """
    from shards.pack import PackOptions, pack
    from superfan.checkpoint import save_checkpoint
    from superfan.config import load_config

    FAN = importlib.import_module("superfan.models").FAN

    root = tmp_path_factory.mktemp("inputs")
    urls = {}
    for split, n, seed in (("train", 32, 0), ("val", 16, 1)):
        dest = str(root / split)
        pack(PackOptions(format="synthetic", src=str(n), dest=dest, split=split, seed=seed, workers=1, progress=False))
        urls[split] = f"{dest}/manifest.json"
    cfg = load_config(str(sweep_yaml))
    save_checkpoint(
        root / "teacher",
        {"stage": "teacher", "stage_kind": "fan", "stage_index": 0, "epoch": 1, "global_epoch": 1, "step": 0,
         "generator": None, "critic": None, "fan": FAN.from_config(cfg.model.fan).state_dict(),
         "optimizers": {}, "schedulers": {}, "config": cfg.to_dict(), "metrics": {}},
    )  # fmt: skip
    urls["teacher"] = str(root / "teacher")
    return urls


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


def test_sweep_on_s3_promotes_a_verified_champion(s3_env: dict[str, str], sweep_yaml: Path, tmp_path: Path) -> None:
    from superfan import storage
    from superfan.champion import pull, verify_champion
    from superfan.checkpoint import load_checkpoint

    store = "s3://superfan/sweeps-test"
    out = _sweep(["--config", str(sweep_yaml), "--storage", store, "--name", "s3-sweep", "--seed", "3"],
                 _env(**s3_env), tmp_path / "s3.log")  # fmt: skip
    assert "packing 32 synthetic faces" in out and "teacher FAN: training 1 epochs" in out
    assert "AUC [0,30)" in out and "AUC balanced" in out  # the results table
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
    """A real ``ray start --head`` (2 CPUs, dashboard on loopback) in its own temp dir and session.

    ``--block`` keeps ``ray start`` as the parent of the head's processes, so teardown ends exactly this
    cluster (its process group) rather than every Ray process of the user, as ``ray stop`` would.
    """
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix sockets live under it
    dash, agent = _free_port(), _free_port()
    mode = "token" if _auth_headers() else "disabled"
    env = _env(RAY_AUTH_MODE=mode)
    log = open(Path(temp) / "ray-start.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
         "--port", str(_free_port()), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--dashboard-agent-listen-port", str(agent),
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
        yield address, env
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
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--submission-id", job_id,
           "--working-dir", str(REPO), "--",
           "python", "sweeps/loss_weights.py", "--config", str(sweep_yaml), "--storage", str(store),
           "--name", "job-sweep", "--data", local_inputs["train"], "--val", local_inputs["val"],
           "--teacher", local_inputs["teacher"]]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=480, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "champion:" in output and "AUC balanced" in output
    jobs = _get(f"{address}/api/jobs/")
    job = next((j for j in jobs if j.get("submission_id") == job_id), None)
    assert job is not None, f"job {job_id} not listed by the dashboard: {jobs}"
    assert job["status"] == "SUCCEEDED", job
    assert (store / "champions" / "job-sweep" / "latest").read_text().strip() == "v0001"
    # The driver turned on Train state tracking for the job, so the dashboard lists each trial's Train run.
    runs = _get(f"{address}/api/train/v2/runs/v1")["train_runs"]
    assert job.get("job_id"), job
    trial_runs = [r for r in runs if r.get("status") == "FINISHED" and r.get("job_id") == job.get("job_id")]
    assert len(trial_runs) >= 2, runs
