"""One place that turns a local path or an ``s3://bucket/key`` URL into reads, writes and listings.

Everything that touches data outside the process goes through here, so the S3 endpoint
(``AWS_ENDPOINT_URL``), credentials (the usual ``AWS_*`` variables or an IAM role) and error messages
are the same for packing, streaming, Ray storage, promotion and pull.

Writes are atomic: a reader never sees a half-written object. Locally we write a temporary file in the
same directory and ``os.replace`` it; on S3 a PUT (single or multipart) is only visible once complete.

S3 calls retry transient failures (connection refused/reset/timeouts, 5xx, throttling): botocore's own
retry mode on every request (``SUPERFAN_S3_RETRY_MODE``: ``standard`` or ``adaptive``), and around that a
time-bounded loop with jittered exponential backoff, which also covers what botocore cannot retry (a
connection lost in the middle of an :func:`open_read` stream resumes with a ranged GET at the byte it had
reached, pinned to the object's ETag). The loop gives up ``SUPERFAN_S3_RETRY_SECONDS`` (default 60) after
the first failure with one line naming the URL. Each retry logs one WARNING naming the URL (logger
``superfan.storage``: shown where the application configures logging, e.g. ``logging.basicConfig()``) and
is counted in :func:`retry_stats`; :func:`retry_window` shortens the window for a quick pre-flight check.

URLs that would make webdataset's ``gopen`` run a program (``pipe:`` runs a shell command; ``http:``,
``gs:``, ``ais:``... run curl, gsutil or ais) are refused by :func:`check_url` unless
``SUPERFAN_ALLOW_PIPE_URLS=1``: a config file must not be able to run commands.

The operations below pick the local or the S3 side by the URL; the parts, one job each: :mod:`.urls`
(kinds of URL, joining, refusing command URLs), :mod:`.local` (atomic local files), :mod:`.s3` (the boto3
client, streaming reads that resume), :mod:`.retry` (what is transient, the backoff window, the counters)
and :mod:`.arrow` (the pyarrow filesystem Ray writes through). Callers use ``superfan.storage.X`` only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from superfan.errors import StorageError
from superfan.storage import local as _local
from superfan.storage import s3 as _s3
from superfan.storage.arrow import RetryingArrowFS, _arrow_transient, arrow_error_code, pyarrow_fs
from superfan.storage.local import fsync_dir
from superfan.storage.retry import (
    DEFAULT_RETRY_SECONDS,
    RETRY_SECONDS_ENV,
    retry_seconds,
    retry_stats,
    retry_window,
)
from superfan.storage.s3 import BOTOCORE_MAX_ATTEMPTS, RETRY_MODE_ENV, reset_clients, s3_client
from superfan.storage.urls import (
    ALLOW_COMMAND_URLS_ENV,
    COMMAND_SCHEMES,
    absolute,
    check_url,
    endpoint,
    is_s3,
    join,
    split_s3,
)

__all__ = [
    "ALLOW_COMMAND_URLS_ENV", "BOTOCORE_MAX_ATTEMPTS", "COMMAND_SCHEMES", "DEFAULT_RETRY_SECONDS", "RETRY_MODE_ENV",
    "RETRY_SECONDS_ENV", "RetryingArrowFS", "_arrow_transient", "absolute", "arrow_error_code", "check_directory",
    "check_url", "check_writable", "create_exclusive", "delete", "download_file", "endpoint", "exists", "fsync_dir",
    "is_s3", "join", "list_files", "move", "open_read", "pyarrow_fs", "read_bytes", "read_text", "reset_clients",
    "retry_seconds", "retry_stats", "retry_window", "s3_client", "split_s3", "upload_file", "write_bytes", "write_text",
]  # fmt: skip

# The operations call each other through this module's names (write_text -> write_bytes...), so a test
# that patches ``storage.write_bytes`` sees every write, as it did when storage was one module.

# ------------------------------------------------------------------------------------------ reading


def read_bytes(url: str | os.PathLike[str]) -> bytes:
    url = str(url)
    return _s3.read_bytes(url) if is_s3(url) else _local.read_bytes(url)


def read_text(url: str | os.PathLike[str]) -> str:
    try:
        return read_bytes(url).decode("utf-8")
    except UnicodeDecodeError as err:
        raise StorageError(f"{url}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def open_read(url: str | os.PathLike[str]) -> IO[bytes]:
    """A streaming binary reader (S3 bodies are not buffered whole; webdataset reads tars through this).

    On S3 a connection lost mid-stream is resumed where it stopped (see :class:`.s3._S3Reader`)."""
    url = str(url)
    if is_s3(url):
        return _s3.open_read(url)  # type: ignore[return-value]
    return _local.open_read(url)


def exists(url: str | os.PathLike[str]) -> bool:
    url = str(url)
    return _s3.exists(url) if is_s3(url) else _local.exists(url)


def list_files(url: str | os.PathLike[str]) -> list[str]:
    """Relative paths of all files under a directory or prefix, sorted."""
    url = str(url)
    return _s3.list_files(url) if is_s3(url) else _local.list_files(url)


# ------------------------------------------------------------------------------------------ writing


def write_bytes(url: str | os.PathLike[str], data: bytes) -> None:
    """Atomically create or replace ``url`` with ``data``."""
    url = str(url)
    if is_s3(url):
        _s3.write_bytes(url, data)
    else:
        _local.write_bytes(url, data)


def write_text(url: str | os.PathLike[str], text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def upload_file(local: str | os.PathLike[str], url: str | os.PathLike[str]) -> None:
    """Atomically publish a local file at ``url`` (multipart on S3 for big files)."""
    url = str(url)
    if is_s3(url):
        _s3.upload_file(local, url)
    else:
        _local.upload_file(local, url)


def create_exclusive(url: str | os.PathLike[str], data: bytes) -> bool:
    """Create ``url`` holding ``data`` only if nothing is there yet; ``True`` if this call created it.

    A claim for names several processes race for (champion versions). Locally ``O_CREAT | O_EXCL``; on
    S3 a conditional PUT (``If-None-Match: *``, honoured by AWS S3 since 2024 and by SeaweedFS). Put
    something unique in ``data`` (a random token): when a retried PUT finds the object, it reads it back
    and a match means the earlier attempt was ours and succeeded (its response was lost).
    """
    url = str(url)
    return _s3.create_exclusive(url, data) if is_s3(url) else _local.create_exclusive(url, data)


def download_file(url: str | os.PathLike[str], local: str | os.PathLike[str]) -> None:
    url = str(url)
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    if is_s3(url):
        _s3.download_file(url, local)
    else:
        _local.download_file(url, local)


def move(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move one object or file within one store (S3: server-side copy, then delete; local: rename)."""
    src, dst = str(src), str(dst)
    if is_s3(src) != is_s3(dst):
        raise StorageError(f"{src} -> {dst}: a move stays within one store")
    if is_s3(src):
        _s3.move(src, dst)
    else:
        _local.move(src, dst)


def delete(url: str | os.PathLike[str]) -> None:
    url = str(url)
    if is_s3(url):
        _s3.delete(url)
    else:
        _local.delete(url)


def check_directory(url: str | os.PathLike[str], what: str = "storage") -> None:
    """One line if a local ``url`` cannot be a directory: it, or the nearest part of it that exists, is a
    file (or anything else that is not a directory). S3 prefixes are always fine here."""
    url = str(url)
    if is_s3(url):
        return
    path = Path(url).absolute()
    for part in (path, *path.parents):
        if os.path.lexists(part):
            if not part.is_dir():
                where = "it" if part == path else str(part)
                raise StorageError(f"{what} {url}: cannot write there ({where} exists and is not a directory)")
            return


def check_writable(url: str | os.PathLike[str]) -> None:
    """Fail early, with one line, if ``url`` cannot be written (bucket missing, bad credentials...)."""
    check_directory(url)
    probe = join(url, f".superfan-write-probe-{os.getpid()}")
    write_bytes(probe, b"ok")
    delete(probe)
