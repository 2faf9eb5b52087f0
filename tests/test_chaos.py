"""Chaos: a sweep that survives faults and loses nothing. Real processes (the sweep script, its embedded Ray,
SeaweedFS on loopback), each fault injected from outside or by a one-shot marker, every wait bounded.

1. SIGKILL of a Train worker mid-epoch: the trial resumes from its last checkpoint (``max_failures``), both
   trials finish, a champion is promoted, and no checkpoint directory is half-written.
2. SeaweedFS stopped for 20 s during a sweep on S3, then restarted on the same port and data directory:
   the sweep finishes; the storage layer's retries carried the trial over the gap.
3. SIGKILL of the sweep driver in the middle of promotion, then ``--resume``: exactly one complete new
   champion version, and ``latest`` never named an incomplete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_sweeps import SCRIPT, _env, _experiment_trials, _sweep

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _complete_checkpoints(root: Path) -> None:
    dirs = [d for d in root.rglob("checkpoint_*") if d.is_dir()]
    assert dirs, f"no checkpoints under {root}"
    for d in dirs:
        assert (d / "checkpoint.pt").is_file(), f"half-written checkpoint directory {d}: {os.listdir(d)}"


def test_sigkill_of_a_train_worker_mid_epoch(local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path) -> None:
    """The worker SIGKILLs itself in epoch 2 of the first trial, once its epoch-1 checkpoint is registered
    (``debug.crash_at_step`` + a marker: the retry does not crash again)."""
    store = tmp_path / "store"
    marker = tmp_path / "killed"
    args = ["--config", str(sweep_yaml), "--storage", str(store), "--name", "kill-worker", "--max-concurrent", "1",
            "--epochs", "3", "--data", local_inputs["train"], "--val", local_inputs["val"],
            "--teacher", local_inputs["teacher"], "train.max_failures=1"]  # fmt: skip
    env = _env(SUPERFAN_DEBUG_FAULTS=json.dumps({"crash_at_step": 6, "crash_marker": str(marker)}))
    _sweep(args, env, tmp_path / "sweep.log")
    assert marker.exists(), "the Train worker was never killed"
    trials = _experiment_trials(store / "sweeps" / "kill-worker")
    assert len(trials) == 2 and set(trials.values()) == {"TERMINATED"}, trials
    assert (store / "champions" / "kill-worker" / "latest").read_text().strip() == "v0001"
    _complete_checkpoints(store / "trials" / "kill-worker")
    rows = [json.loads(line) for p in (store / "sweeps" / "kill-worker").glob("*/result.json")
            for line in p.read_text().splitlines() if line.strip()]  # fmt: skip
    resumed = [r for r in rows if r.get("resumed_from_step", 0) > 0]
    assert resumed and min(r["resumed_from_step"] for r in resumed) == 4, "not resumed from the epoch-1 checkpoint"
    assert sorted(r["global_epoch"] for r in rows) == [1, 1, 2, 2, 3, 3]  # nothing lost, nothing repeated


def test_sweep_survives_a_20s_object_store_outage(
    local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path
) -> None:
    from devtools.s3server import SeaweedServer
    from shards.pack import PackOptions, pack
    from superfan import storage
    from superfan.champion import verify_champion

    server = SeaweedServer(tmp_path / "seaweed", buckets=("superfan",)).start()
    try:
        env = _env(**server.env())
        with contextlib.ExitStack() as stack:
            for k, v in server.env().items():
                stack.enter_context(_setenv(k, v))
            for split, n in (("train", 32), ("val", 16)):
                pack(PackOptions(format="synthetic", src=str(n), dest=f"s3://superfan/chaos/{split}", split=split,
                                 workers=1, progress=False))  # fmt: skip
        store = "s3://superfan/chaos/store"
        args = ["--config", str(sweep_yaml), "--storage", store, "--name", "outage", "--samples", "1",
                "--epochs", "3", "--data", "s3://superfan/chaos/train", "--val", "s3://superfan/chaos/val",
                "--teacher", local_inputs["teacher"]]  # fmt: skip
        outage: dict[str, float] = {}

        trials = f"{store}/trials/outage"

        def first_checkpoint() -> bool:
            try:
                return any("checkpoint_0001" in f and f.endswith("checkpoint.pt") for f in storage.list_files(trials))
            except Exception:  # noqa: BLE001 - not there yet
                return False

        log = tmp_path / "outage.log"

        def retries_logged() -> int:
            return log.read_text(errors="replace").count("; retry ") if log.exists() else 0

        def inject() -> None:  # once the trial has its first checkpoint on S3: 20 s without the object store
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not first_checkpoint():
                time.sleep(0.5)
            before = retries_logged()
            outage["down"] = time.monotonic()
            server.stop()
            while time.monotonic() < outage["down"] + 20:  # watch the sweep's log: does it meet the outage?
                if "first_retry" not in outage and retries_logged() > before:
                    outage["first_retry"] = time.monotonic()
                time.sleep(0.25)
            server.start()
            outage["up"] = time.monotonic()

        with contextlib.ExitStack() as stack:  # the watcher lists the bucket with the server's credentials
            for k, v in server.env().items():
                stack.enter_context(_setenv(k, v))
            thread = threading.Thread(target=inject, daemon=True)
            thread.start()
            out = _sweep(args, env, log, timeout=600)
            ended = time.monotonic()
            thread.join(timeout=120)
        assert outage.get("up", 0) - outage.get("down", 0) >= 20, outage
        assert outage["up"] < ended, "the outage did not happen while the sweep ran"
        # The sweep did I/O during the outage (a retry line appeared while the store was down) and rode it out
        # by retrying: our storage calls and Ray's state writes (storage.RetryingArrowFS) log each retry.
        assert outage["down"] <= outage.get("first_retry", -1) <= outage["up"], (outage, out[-3000:])
        assert out.count("; retry ") >= 2, out[-3000:]
        assert "champion:" in out and "1 trials" in out and "0 errored" in out, out[-3000:]
        with contextlib.ExitStack() as stack:
            for k, v in server.env().items():
                stack.enter_context(_setenv(k, v))
            latest = storage.read_text(f"{store}/champions/outage/latest").strip()
            verify_champion(f"{store}/champions/outage/{latest}")
    finally:
        server.stop()


@contextlib.contextmanager
def _setenv(key: str, value: str):  # noqa: ANN202 - a context manager
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def test_driver_killed_during_promotion_then_resumed(
    local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path
) -> None:
    from superfan.champion import verify_champion

    store = tmp_path / "store"
    marker = tmp_path / "killed-in-promotion"
    args = ["--config", str(sweep_yaml), "--storage", str(store), "--name", "promo", "--samples", "1",
            "--data", local_inputs["train"],
            "--val", local_inputs["val"], "--teacher", local_inputs["teacher"]]  # fmt: skip
    env = _env(SUPERFAN_DEBUG_FAULTS=json.dumps({"kill": {"promotion.after_file": str(marker)}}))
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            proc.wait(timeout=420)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the dead driver's embedded Ray
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and marker.exists(), log.read_text()[-3000:]
    time.sleep(2)
    root = store / "champions" / "promo"
    assert not (root / "latest").exists()  # the killed promotion never published
    _sweep([*args, "--resume"], _env(), tmp_path / "resume.log")
    complete = sorted(d.name for d in root.iterdir() if (d / "manifest.json").is_file())
    assert len(complete) == 1, complete
    assert (root / "latest").read_text().strip() == complete[0]
    verify_champion(str(root / complete[0]))
