"""Shared fixtures: the real face data beside the repo, and a real S3 server (SeaweedFS) on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FACES_300W = SHARED_DATA / "faces-300w"
WIDERFACE = SHARED_DATA / "widerface-samples"


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
    from superfan.s3server import SeaweedServer

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
