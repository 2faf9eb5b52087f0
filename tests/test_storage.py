"""Storage: atomic local writes, and the same calls against a real S3 server (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from superfan import storage
from superfan.errors import StorageError


def test_local_round_trip_and_listing(tmp_path: Path) -> None:
    url = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(url, b"x" * 10)
    assert storage.read_bytes(url) == b"x" * 10
    assert storage.list_files(tmp_path) == ["a/b.bin"]
    assert not list(tmp_path.rglob("*.tmp-*"))
    with pytest.raises(StorageError, match="not found"):
        storage.read_bytes(tmp_path / "missing")


@pytest.mark.slow
def test_s3_round_trip(s3_env: dict[str, str], tmp_path: Path) -> None:
    base = "s3://superfan/test-storage"
    storage.write_text(storage.join(base, "x/y.txt"), "hello")
    assert storage.read_text(f"{base}/x/y.txt") == "hello"
    assert storage.exists(f"{base}/x/y.txt") and not storage.exists(f"{base}/x/z.txt")
    local = tmp_path / "big.bin"
    local.write_bytes(b"0123456789" * 100_000)
    storage.upload_file(local, f"{base}/big.bin")
    storage.download_file(f"{base}/big.bin", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == local.read_bytes()
    assert storage.list_files(base) == ["big.bin", "x/y.txt"]
    with pytest.raises(StorageError, match="bucket does not exist"):
        storage.read_bytes("s3://no-such-bucket/k")


@pytest.mark.slow
def test_s3_bad_credentials_and_unreachable_endpoint(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError, match="access denied|S3 error"):
        storage.write_bytes("s3://superfan/k", b"x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(StorageError, match="cannot reach"):
        storage.read_bytes("s3://superfan/k")


def test_absolute_keeps_urls_and_anchors_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("s3://b/p/manifest.json") == "s3://b/p/manifest.json"
    assert storage.absolute("pipe:cat x.tar") == "pipe:cat x.tar"
    assert storage.absolute("shards/train") == str(tmp_path / "shards" / "train")
    assert storage.absolute(str(tmp_path)) == str(tmp_path)
