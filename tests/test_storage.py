"""Storage: atomic local writes, the same calls against a real S3 server (SeaweedFS), retries through an
S3 outage (a SeaweedFS of this module's own, stopped and restarted on the same port and data directory),
and the refusal of command-running URLs."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from superfan import storage
from superfan.errors import StorageError, UnsafeURLError


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
    monkeypatch.setenv(storage.RETRY_SECONDS_ENV, "1")
    with pytest.raises(StorageError, match=r"s3://superfan/k: cannot reach .*gave up after \d+ attempts"):
        storage.read_bytes("s3://superfan/k")


def test_absolute_keeps_urls_and_anchors_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(storage.ALLOW_COMMAND_URLS_ENV, raising=False)
    assert storage.absolute("s3://b/p/manifest.json") == "s3://b/p/manifest.json"
    assert storage.absolute("shards/train") == str(tmp_path / "shards" / "train")
    assert storage.absolute(str(tmp_path)) == str(tmp_path)
    assert storage.absolute("file:///data/x.tar") == "file:///data/x.tar"


# ------------------------------------------------------------------------------------------ command URLs


@pytest.mark.parametrize(
    "url", ["pipe:cat x.tar", "PIPE:cat x.tar", " pipe:cat x.tar", "https://host/x.tar", "gs://b/x.tar", "ais://b/x"]
)
def test_command_urls_are_refused_with_one_line(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.ALLOW_COMMAND_URLS_ENV, raising=False)
    with pytest.raises(UnsafeURLError) as info:
        storage.absolute(url)
    msg = str(info.value)
    assert "\n" not in msg and url in msg and storage.ALLOW_COMMAND_URLS_ENV in msg and "would run" in msg
    if url.strip().lower().startswith("pipe:"):
        assert "shell command" in msg


def test_command_urls_allowed_with_the_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(storage.ALLOW_COMMAND_URLS_ENV, "1")
    assert storage.absolute("pipe:cat x.tar") == "pipe:cat x.tar"
    assert storage.check_url("https://host/x.tar") == "https://host/x.tar"
    monkeypatch.setenv(storage.ALLOW_COMMAND_URLS_ENV, "0")
    with pytest.raises(UnsafeURLError):
        storage.check_url("pipe:cat x.tar")


def test_gopen_rewrite_to_a_command_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.ALLOW_COMMAND_URLS_ENV, raising=False)
    monkeypatch.setenv("GOPEN_REWRITE", "/data/=pipe:cat /data/")
    with pytest.raises(UnsafeURLError, match="GOPEN_REWRITE makes it 'pipe:cat /data/x.tar'"):
        storage.check_url("/data/x.tar")


def test_command_schemes_cover_webdatasets_gopen_table() -> None:
    """Every scheme webdataset's gopen dispatches (to a program) is in our refusal list, so a new
    webdataset handler cannot slip through unnoticed."""
    from webdataset.gopen import gopen_schemes

    ours = {"__default__", "s3"}  # gopen_error, and our storage.open_read handler
    assert set(gopen_schemes) - ours <= set(storage.COMMAND_SCHEMES), set(gopen_schemes) - ours


# ------------------------------------------------------------------------------------------ local writes


def test_local_upload_file_fsyncs_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary file's bytes reach the disk before it is renamed into place (as in ``write_bytes``)."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)

    src = tmp_path / "local.bin"
    src.write_bytes(b"abc" * 100_000)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    storage.upload_file(src, tmp_path / "out" / "copy.bin")
    monkeypatch.undo()
    assert (tmp_path / "out" / "copy.bin").read_bytes() == src.read_bytes()
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"] and events[0][1] == events[1][1], events
    assert events[2][1] == str(tmp_path / "out")  # then the directory, so the new name survives a power cut
    assert not list((tmp_path / "out").glob(".*tmp-*"))


def test_local_writes_fsync_the_directory_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename is durable only once its directory is synced: write_bytes and create_exclusive both do it."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    storage.write_bytes(tmp_path / "a" / "x.bin", b"x")
    storage.create_exclusive(str(tmp_path / "b" / ".claim"), b"token")
    monkeypatch.undo()
    assert synced[1] == str(tmp_path / "a") and synced[-1] == str(tmp_path / "b"), synced


def test_create_exclusive_that_cannot_write_leaves_no_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    url = tmp_path / "v0001" / ".claim"
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError) as err:
        storage.create_exclusive(str(url), b"token")
    monkeypatch.undo()
    assert str(err.value) == f"{url}: cannot write (No space left on device)"
    assert not url.exists()  # the next promoter can claim the number


@pytest.mark.parametrize(
    ("message", "code", "transient"),
    [
        (
            "When getting information for key 'x' in bucket 'b': AWS Error NETWORK_CONNECTION during HeadObject "
            "operation: curlCode: 7, Could not connect to server",
            ("NETWORK_CONNECTION", None),
            True,
        ),
        (
            "When reading information for key 'k' in bucket 'b': AWS Error ACCESS_DENIED during HeadObject operation: "
            "No response body.",
            ("ACCESS_DENIED", None),
            False,
        ),
        (
            "When listing objects under key 'p_00500' in bucket 'b': AWS Error UNKNOWN (HTTP status 503) during "
            "ListObjectsV2 operation: Service Unavailable",
            ("UNKNOWN", 503),
            True,
        ),
        (
            "When getting information for key 'k_00500_503' in bucket 'b': AWS Error UNKNOWN (HTTP status 400) during "
            "HeadObject operation: Timeout 500 503",
            ("UNKNOWN", 400),
            False,
        ),
        ("disk says 500 Timeout", (None, None), False),
    ],
)
def test_arrow_errors_are_classified_by_code_not_words(message: str, code: tuple, transient: bool) -> None:
    err = OSError(message)
    assert storage.arrow_error_code(err) == code
    assert storage._arrow_transient(err) is transient
    assert not storage._arrow_transient(FileNotFoundError(2, "Path does not exist 'b/x_00500'. Timeout 503"))


def test_local_create_exclusive(tmp_path: Path) -> None:
    url = str(tmp_path / "v0001" / ".claim")
    assert storage.create_exclusive(url, b"mine")
    assert not storage.create_exclusive(url, b"theirs")
    assert storage.read_bytes(url) == b"mine"


def test_retry_window_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.RETRY_SECONDS_ENV, raising=False)
    assert storage.retry_seconds() >= 30
    monkeypatch.setenv(storage.RETRY_SECONDS_ENV, "2.5")
    assert storage.retry_seconds() == 2.5
    with storage.retry_window(0.5):
        assert storage.retry_seconds() == 0.5
    monkeypatch.setenv(storage.RETRY_SECONDS_ENV, "soon")
    with pytest.raises(StorageError, match="SUPERFAN_S3_RETRY_SECONDS='soon'"):
        storage.retry_seconds()


# ------------------------------------------------------------------------------------------ S3 outages


@pytest.mark.slow
def test_s3_create_exclusive_is_a_conditional_write(s3_env: dict[str, str]) -> None:
    """SeaweedFS honours ``If-None-Match: *``: the second create of one key loses, and the first stays."""
    url = f"s3://superfan/test-storage-claims/{time.time_ns()}"  # outside test_s3_round_trip's listing
    assert storage.create_exclusive(url, b"mine")
    assert not storage.create_exclusive(url, b"theirs")
    assert storage.read_bytes(url) == b"mine"
    assert storage.create_exclusive(url, b"mine")  # a retried create of our own claim is ours


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A SeaweedFS for this module only: the tests stop it, and the session's server must stay up."""
    from devtools.s3server import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-outage"), buckets=("superfan",)).start()
    yield server
    server.stop()


@pytest.fixture
def outage(outage_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if outage_server.proc is None:
        outage_server.start()
    for k, v in outage_server.env().items():
        monkeypatch.setenv(k, v)
    yield outage_server
    if outage_server.proc is None:
        outage_server.start()


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _retry_warnings(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and url in r.getMessage()]


@pytest.mark.slow
def test_s3_reads_and_writes_survive_an_outage(
    outage: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stop the object store, start a write, an upload, a pyarrow (Ray storage) write, a read and a listing,
    a pyarrow copy of a directory (Ray's checkpoint upload), and close a pyarrow stream opened before the
    outage (S3 completes the upload on close: what killed Ray Train's controller on its state snapshot);
    restart the store on the same port and data directory a few seconds later: all of them succeed (none
    hangs), each retry logged once."""
    import pyarrow.fs as pafs

    monkeypatch.setenv(storage.RETRY_SECONDS_ENV, "60")
    caplog.set_level(logging.WARNING, logger="superfan.storage")
    base = f"s3://superfan/outage-{time.time_ns()}"
    storage.write_bytes(f"{base}/before.bin", b"before")
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(200_000))

    arrow, arrow_base = storage.pyarrow_fs(base)  # what Ray Train writes checkpoints through
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for i in range(20):  # more files than pyarrow's I/O pool has threads (8)
        (ckpt / f"part{i:02d}.bin").write_bytes(os.urandom(10_000))
    snapshot = arrow.open_output_stream(f"{arrow_base}/ray/snapshot.json")
    snapshot.write(b'{"state": 1}')

    def work() -> tuple[bytes, bytes]:
        storage.write_bytes(f"{base}/during.bin", b"during")
        storage.upload_file(local, f"{base}/up.bin")
        with arrow.open_output_stream(f"{arrow_base}/ray/checkpoint.bin") as f:
            f.write(b"ray")
        # How Ray uploads a checkpoint directory: pyarrow's I/O pool closes (uploads) the files, one per thread.
        pafs.copy_files(str(ckpt), f"{arrow_base}/ray/ckpt", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=arrow)  # fmt: skip
        return storage.read_bytes(f"{base}/before.bin"), storage.read_bytes(f"{base}/up.bin")

    retries_before = storage.retry_stats()["retries"]
    outage.stop()
    t0 = time.monotonic()
    thread, out = _in_thread(work)
    closing, closed = _in_thread(snapshot.close)
    time.sleep(4)
    assert thread.is_alive() and closing.is_alive(), (out, closed)  # still retrying, not failed
    outage.start()
    thread.join(timeout=90)
    closing.join(timeout=30)
    assert not thread.is_alive() and "error" not in out, out
    assert not closing.is_alive() and "error" not in closed, closed
    before, up = out["value"]
    assert before == b"before" and up == local.read_bytes()
    copied = [f"ray/ckpt/part{i:02d}.bin" for i in range(20)]
    assert storage.list_files(base) == sorted(["before.bin", "during.bin", "ray/checkpoint.bin", *copied,
                                               "ray/snapshot.json", "up.bin"])  # fmt: skip
    assert storage.read_bytes(f"{base}/ray/ckpt/part07.bin") == (ckpt / "part07.bin").read_bytes()
    assert storage.read_bytes(f"{base}/ray/snapshot.json") == b'{"state": 1}'
    assert time.monotonic() - t0 < 90
    for key in ("during.bin", "ray/snapshot.json"):
        warnings = _retry_warnings(caplog, f"{base}/{key}")
        assert warnings and all("retry" in w for w in warnings), caplog.text
    assert storage.retry_stats()["retries"] - retries_before == len(_retry_warnings(caplog, base))


@pytest.mark.slow
def test_s3_stream_resumes_after_the_connection_is_cut(
    outage: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``open_read`` (what the tar stream reads through) loses its connection mid-object when the store
    stops; it reopens at the byte it had reached once the store is back, and the bytes are the object's."""
    monkeypatch.setenv(storage.RETRY_SECONDS_ENV, "60")
    caplog.set_level(logging.WARNING, logger="superfan.storage")
    url = f"s3://superfan/stream-{time.time_ns()}.bin"
    data = os.urandom(48 << 20)  # well above what socket buffers hold, so the cut is felt
    storage.write_bytes(url, data)
    stream = storage.open_read(url)
    head = stream.read(1 << 20)
    outage.stop()
    restart = threading.Timer(3, outage.start)
    restart.start()
    try:
        rest = stream.read(len(data))  # one call: the reader loops internally
        while chunk := stream.read(1 << 20):
            rest += chunk
    finally:
        restart.join()
        stream.close()
    assert hashlib.sha256(head + rest).digest() == hashlib.sha256(data).digest()
    assert any("stream cut at byte" in w for w in _retry_warnings(caplog, url)), caplog.text


@pytest.mark.slow
def test_a_permanent_error_on_a_key_with_500_in_it_fails_at_once(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Ray's storage path (pyarrow through RetryingArrowFS) and ours: a missing key named ``..._00500`` is final."""
    monkeypatch.setenv(storage.RETRY_SECONDS_ENV, "60")
    caplog.set_level(logging.WARNING, logger="superfan.storage")
    arrow, base = storage.pyarrow_fs("s3://superfan/permanent")
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        arrow.open_input_stream(f"{base}/checkpoint_00500/state_503.json")
    with pytest.raises(StorageError, match="checkpoint_00500/x_503.json: not found"):
        storage.read_bytes("s3://superfan/permanent/checkpoint_00500/x_503.json")
    assert time.monotonic() - t0 < 5 and not _retry_warnings(caplog, "00500")


@pytest.mark.slow
def test_s3_gives_up_after_the_window_with_one_line(
    outage: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(storage.RETRY_SECONDS_ENV, "3")
    caplog.set_level(logging.WARNING, logger="superfan.storage")
    url = "s3://superfan/down/k.bin"
    outage.stop()
    for op in (lambda: storage.write_bytes(url, b"x"), lambda: storage.read_bytes(url)):
        t0 = time.monotonic()
        with pytest.raises(StorageError) as info:
            op()
        elapsed = time.monotonic() - t0
        msg = str(info.value)
        assert msg.startswith(f"{url}: ") and "\n" not in msg and "gave up after" in msg, msg
        assert storage.RETRY_SECONDS_ENV in msg and 3 <= elapsed < 20, (elapsed, msg)
    assert _retry_warnings(caplog, url)
