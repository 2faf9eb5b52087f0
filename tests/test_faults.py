"""Faults a user meets, with real processes: user errors as one line before Ray starts, and SIGTERM to a
``superfan train`` with embedded Ray ends that whole cluster and leaves a resumable run.

Each subprocess runs in its own session with a bounded timeout, and its Ray temp dir is its own, so the
test can find (and, on failure, kill) exactly the processes its cluster started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from superfan.stagekinds import NEEDS_TEACHER

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUPERFAN = str(BIN / "superfan")
SMALL = ["model.fan.features=16", "model.fan.hourglass_depth=2", "data.batch_size=4", "data.samples_per_epoch=64",
         "data.val_samples=16"]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def _one_line_error(cmd: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "Started a local Ray instance" not in out, out
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, out
    return lines[0]


def test_user_errors_are_one_line_before_ray_starts(local_inputs: dict[str, str], tmp_path: Path) -> None:
    train, sweep = [SUPERFAN, "train", "fan"], [sys.executable, "sweeps/loss_weights.py"]
    data = ["--data", local_inputs["train"]]
    s = ["--storage", str(tmp_path / "s")]
    pipe = ("refusing a pipe: URL, reading it would run the rest of the URL as a shell command; use a local path "
            "or s3://, or set SUPERFAN_ALLOW_PIPE_URLS=1 if you trust where it came from")  # fmt: skip
    cases = [
        ([*train, "--data", "/no/such/dir"], "superfan train: error: /no/such/dir/manifest.json: not found"),
        ([SUPERFAN, "train", "superfan", *data], f"superfan train: error: {NEEDS_TEACHER}"),
        (
            [SUPERFAN, "train", "superfan", *data, "--teacher", "/no/t"],
            "superfan train: error: teacher: /no/t: no checkpoint.pt there (give a checkpoint directory or its "
            "checkpoint.pt)",
        ),
        (
            [*train, *data, "data.batch_size=-1"],
            "superfan train: error: command-line override: data.batch_size: Input should be greater than 0 (got -1)",
        ),
        ([*train, "--data", "pipe:touch /tmp/x"], f"superfan train: error: pipe:touch /tmp/x: {pipe}"),
        ([*train, "--data", "pipe:cat /tmp/x.tar"], f"superfan train: error: pipe:cat /tmp/x.tar: {pipe}"),
        (
            [*train, "--data", str(tmp_path / "a-{000000..000001}.tar")],
            f"superfan train: error: {tmp_path}/a-000000.tar: not found",
        ),
        (
            [*train, *data, "--epochs", "-1"],
            "superfan train: error: --epochs: stages.0.epochs: Input should be greater than 0 (got -1)",
        ),
        (
            [*train, *data, "--epochs", "0"],
            "superfan train: error: --epochs: stages.0.epochs: Input should be greater than 0 (got 0)",
        ),
        (
            [*train, *data, "optimizer.eps=.inf"],
            "superfan train: error: command-line override: optimizer.eps: Input should be a finite number (got inf)",
        ),
        (
            [*train, *data, "train.cpus_per_worker=.nan"],
            "superfan train: error: command-line override: train.cpus_per_worker: Input should be a finite number "
            "(got nan)",
        ),
        (
            [
                SUPERFAN,
                "evaluate",
                "--data",
                "/no/such/val",
                "--fan",
                local_inputs["teacher"],
                "--out",
                str(tmp_path / "eval"),
            ],
            "superfan evaluate: error: /no/such/val/manifest.json: not found",
        ),
        (
            [*sweep, "--data", "/no/such", "--val", "/no/val", *s],
            "sweeps/loss_weights.py: error: /no/such/manifest.json: not found",
        ),
        (
            [*sweep, *s, "--epochs", "0"],
            "sweeps/loss_weights.py: error: --epochs: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            [*sweep, *s, "--epochs", "-1"],
            "sweeps/loss_weights.py: error: --epochs: Input should be greater than or equal to 1 (got -1)",
        ),
        (
            [*sweep, *s, "--max-concurrent", "-3"],
            "sweeps/loss_weights.py: error: --max-concurrent: Input should be greater than or equal to 1 (got -3)",
        ),
        (
            [*sweep, *s, "--budget-hours", "inf"],
            "sweeps/loss_weights.py: error: --budget-hours: Input should be a finite number (got inf)",
        ),
        (
            [*sweep, *s, "train.memory_per_worker_gb=.inf"],
            "sweeps/loss_weights.py: error: command-line override: train.memory_per_worker_gb: Input should be a "
            "finite number (got inf)",
        ),
        (
            [*sweep, *s, "augment.scale=[.inf, .inf]"],
            "sweeps/loss_weights.py: error: command-line override: augment.scale.0: Input should be a finite number "
            "(got inf) (+1 more)",
        ),
    ]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # independent processes, mostly imports
        lines = list(pool.map(lambda case: _one_line_error(case[0]), cases))
    for (cmd, expected), line in zip(cases, lines, strict=True):
        assert line == expected, (cmd, line)


def test_s3_user_errors_are_one_line(s3_server: object, local_inputs: dict[str, str]) -> None:
    env = _env(**s3_server.env())  # type: ignore[attr-defined]
    line = _one_line_error([SUPERFAN, "train", "fan", "--data", "s3://no-such-bucket/shards/train"], env)
    assert "s3://no-such-bucket/shards/train/manifest.json" in line
    env.pop("AWS_ACCESS_KEY_ID")
    env.pop("AWS_SECRET_ACCESS_KEY")
    line = _one_line_error([SUPERFAN, "train", "fan", "--data", "s3://superfan/shards/train"], env)
    assert "s3://superfan/shards/train" in line and "credentials" in line


def _ray_processes(temp: str) -> list[int]:
    """Processes whose command line names this cluster's temp dir (raylet, GCS, workers, dashboard...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if temp.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_sigterm_ends_the_embedded_ray_cluster_and_the_run_resumes(
    local_inputs: dict[str, str], tmp_path: Path
) -> None:
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's unix sockets live under it
    env = _env(RAY_TMPDIR=temp)
    store = tmp_path / "runs"
    cmd = [SUPERFAN, "train", "fan", "--config", "tiny", "--data", local_inputs["train"], "--val", local_inputs["val"],
           "--storage", str(store), "--name", "sigterm", "--epochs", "5", *SMALL]  # fmt: skip
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not list(store.glob("sigterm/checkpoint_*")):
            time.sleep(0.5)
        assert proc.poll() is None, f"the run ended before the signal:\n{log.read_text()[-3000:]}"
        assert list(store.glob("sigterm/checkpoint_*")), f"no checkpoint in time:\n{log.read_text()[-3000:]}"
        time.sleep(3)  # into the next epoch
        assert _ray_processes(temp), "the embedded cluster's processes were not found"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _ray_processes(temp) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _ray_processes(temp), f"Ray processes left 30 s after SIGTERM:\n{log.read_text()[-3000:]}"
        assert proc.returncode == 130 and "interrupted" in log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _ray_processes(temp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    done = sorted(p.name for p in store.glob("sigterm/checkpoint_*"))
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert '"resumed_from_step": 0' not in again.stdout and '"resumed_from_step"' in again.stdout, done
    assert '"epoch": 5' in again.stdout


def test_a_bad_data_stop_is_one_line_on_the_driver_with_no_worker_traceback(tmp_path: Path) -> None:
    """Through real Ray Train (the tiny profile retries failed runs once): 3 of 48 faces damaged at the default
    1% limit. The workers report the stop instead of raising it, so nothing is retried, no worker prints a
    traceback, and the driver ends with the one line; each bad face is warned about once, not twice."""
    from test_bad_data import _pack, _rewrite, _zero_jpegs

    data = _pack(tmp_path, 48)
    damaged = _rewrite(data, _zero_jpegs({5, 17, 29}))
    cmd = [SUPERFAN, "train", "fan", "--config", "tiny", "--data", str(data), "--storage", str(tmp_path / "runs"),
           "--name", "bad", "--epochs", "1", "data.samples_per_epoch=48", *SMALL[:3]]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-4000:]
    assert "Traceback" not in out and "Error in training function" not in out, out[-4000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("superfan train: error: training stopped: "), last
    assert "3 of " in last and " distinct samples read could not be used (above data.max_bad_fraction 0.01" in last
    for key in damaged:
        assert out.count(f"skipped bad sample {key} ") == 1, out[-4000:]
