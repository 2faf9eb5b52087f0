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
from pathlib import Path

import pytest

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
    line = _one_line_error([SUPERFAN, "train", "fan", "--data", "/no/such/dir"])
    assert "/no/such/dir/manifest.json: not found" in line
    line = _one_line_error([SUPERFAN, "train", "superfan", "--data", local_inputs["train"]])
    assert "teacher" in line
    line = _one_line_error([SUPERFAN, "train", "superfan", "--data", local_inputs["train"], "--teacher", "/no/t"])
    assert line.startswith("superfan train: error: teacher: /no/t")
    line = _one_line_error([SUPERFAN, "train", "fan", "--data", local_inputs["train"], "data.batch_size=-1"])
    assert "data.batch_size" in line
    line = _one_line_error([SUPERFAN, "train", "fan", "--data", "pipe:touch /tmp/x"])
    assert "pipe:" in line
    line = _one_line_error([SUPERFAN, "evaluate", "--data", "/no/such/val", "--fan", local_inputs["teacher"],
                            "--out", str(tmp_path / "eval")])  # fmt: skip
    assert "/no/such/val" in line
    line = _one_line_error([sys.executable, "sweeps/loss_weights.py", "--data", "/no/such", "--val", "/no/val",
                            "--storage", str(tmp_path / "s")])  # fmt: skip
    assert "/no/such/manifest.json: not found" in line


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
