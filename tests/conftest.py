"""Shared fixtures: the real face data beside the repo, a real S3 server (SeaweedFS) on loopback, small
sweep inputs, and one finished 2-trial sweep (``swept``) for the tests that read a sweep's results."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FACES_300W = SHARED_DATA / "faces-300w"
WIDERFACE = SHARED_DATA / "widerface-samples"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests first: under ``pytest -n`` (``make test``) the minutes-long runs start at once and
    the second-long unit tests fill the gaps, instead of one long run holding up the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def faces_300w() -> Path:
    if not FACES_300W.is_dir():
        pytest.skip(f"real faces not found at {FACES_300W} (only present beside the repo in development/CI)")
    return FACES_300W


@pytest.fixture(scope="session")
def widerface_dir() -> Path:
    if not WIDERFACE.is_dir():
        pytest.skip(f"WIDER FACE samples not found at {WIDERFACE}")
    return WIDERFACE


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One SeaweedFS ``weed mini`` for the session, bucket ``superfan``, its own credentials."""
    from devtools.s3server import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), buckets=("superfan",)).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: object, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process (and child processes, e.g. Ray workers) at the test S3 server."""
    env = s3_server.env()  # type: ignore[attr-defined]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


# ------------------------------------------------------------------------------- small sweeps

#: A sweep file small enough for 2 CPU cores: tiny networks, 16-face epochs (tests/test_sweeps.py and others).
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
train: {max_failures: 0, cpus_per_worker: 1}   # trials side by side on 2 cores
sweep: {samples: 2, synthetic_train: 32, synthetic_val: 16, grace_period: 2}
search:
  loss_weights:
    losses.pixel.weight: {type: loguniform, around: 10}
    losses.perceptual.weight: {type: loguniform, around: 10}
    losses.heatmap.weight: {type: loguniform, around: 10}
    losses.adversarial.weight: {type: loguniform, around: 10}
"""


@pytest.fixture(scope="session")
def sweep_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweepcfg") / "sweep.yaml"
    path.write_text(SWEEP_YAML)
    return path


@pytest.fixture(scope="session")
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


@pytest.fixture(autouse=True)
def _random_perceptual_warning_not_yet_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep driver run in-process marks the random-features warning as given (for its trials); tests
    that expect the warning must not inherit that from an earlier test."""
    monkeypatch.delenv("SUPERFAN_WARNED_RANDOM_PERCEPTUAL", raising=False)


@pytest.fixture(scope="session")
def swept(local_inputs: dict[str, str], sweep_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished 2-trial sweep ``rep`` on local storage, its output and its experiment directory.

    One sweep for the whole ``pytest -n`` run (pytest-xdist's recipe for a session fixture that runs once:
    the first worker to need it runs it under a file lock in the run's shared temp root, the other reads
    it); the tests only read it or copy it.
    """
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "swept-report"
    with FileLock(f"{shared}.lock"):
        if not (shared / "out.json").exists():
            store = shared / "store"
            args = ["--config", str(sweep_yaml), "--storage", str(store), "--name", "rep",
                    "--data", local_inputs["train"], "--val", local_inputs["val"],
                    "--teacher", local_inputs["teacher"]]  # fmt: skip
            env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
            env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
            env.pop("RAY_ADDRESS", None)
            proc = subprocess.run([sys.executable, str(REPO / "sweeps" / "loss_weights.py"), *args], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=480, check=False)  # fmt: skip
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
            (shared / "out.json").write_text(json.dumps({"stdout": proc.stdout, "stderr": proc.stderr}))
    out = json.loads((shared / "out.json").read_text())
    store = shared / "store"
    experiment = store / "sweeps" / "rep"
    trials = sorted(d.name.removeprefix("trial_") for d in experiment.glob("trial_*"))
    return {"out": out["stdout"] + out["stderr"], "stdout": out["stdout"], "store": store, "experiment": experiment,
            "trials": trials}  # fmt: skip
