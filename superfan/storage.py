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
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import http.client
import io
import logging
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from superfan.errors import StorageError, UnsafeURLError

log = logging.getLogger(__name__)
# Library practice: records reach the handlers the application configures (``logging.basicConfig``); with
# none, nothing is printed, so a CLI's one-line error stays one line while it retried.
log.addHandler(logging.NullHandler())
T = TypeVar("T")

#: Seconds after the first failure of an S3 operation during which it keeps retrying.
RETRY_SECONDS_ENV = "SUPERFAN_S3_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0
#: botocore's retry mode for every request: "standard" (default) or "adaptive" (adds client-side rate limiting).
RETRY_MODE_ENV = "SUPERFAN_S3_RETRY_MODE"
#: Attempts botocore makes per call (first try included) before our time-bounded loop takes over.
BOTOCORE_MAX_ATTEMPTS = 3
_BACKOFF_BASE, _BACKOFF_MAX = 0.5, 5.0

ALLOW_COMMAND_URLS_ENV = "SUPERFAN_ALLOW_PIPE_URLS"
#: Schemes webdataset's ``gopen`` (``webdataset.gopen.gopen_schemes``) opens by running a program, and what
#: it runs. ``s3:`` is ours (``storage.open_read``); ``file:`` and plain paths are opened directly.
#: ``tests/test_storage.py`` checks this covers webdataset's table.
COMMAND_SCHEMES: dict[str, str] = {
    "pipe": "the rest of the URL as a shell command",
    "http": "curl", "https": "curl", "sftp": "curl", "ftps": "curl", "scp": "curl", "htgs": "curl", "hf": "curl",
    "gs": "gsutil",
    "ais": "the ais client",
}  # fmt: skip


def is_s3(url: str | os.PathLike[str]) -> bool:
    return str(url).startswith("s3://")


def _gopen_rewrite(url: str) -> str:
    """``url`` after webdataset's ``GOPEN_REWRITE`` rules (``pattern=replacement;...``), as gopen applies them."""
    import re

    for rule in os.environ.get("GOPEN_REWRITE", "").split(";"):
        if "=" in rule:
            pattern, repl = rule.split("=", 1)
            new = re.sub("^" + pattern, repl, url)
            if new != url:
                return new
    return url


def check_url(url: str) -> str:
    """Refuse a URL that webdataset's ``gopen`` would open by running a program (``pipe:cmd`` runs ``cmd``
    in a shell), unless the user opted in with ``SUPERFAN_ALLOW_PIPE_URLS=1``. Returns ``url``.

    Every URL that reaches a reader passes here: :func:`absolute` (command line, sweep scripts) and
    :func:`superfan.data.tarstream.tar_samples` (every shard, whichever config it came from).
    """
    if os.environ.get(ALLOW_COMMAND_URLS_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return url
    for candidate in dict.fromkeys((url, _gopen_rewrite(url))):
        scheme = urlsplit(candidate).scheme.lower()
        if scheme in COMMAND_SCHEMES:
            via = "" if candidate == url else f" (GOPEN_REWRITE makes it {candidate!r})"
            raise UnsafeURLError(
                f"{url}{via}: refusing a {scheme}: URL, reading it would run {COMMAND_SCHEMES[scheme]}; "
                f"use a local path or s3://, or set {ALLOW_COMMAND_URLS_ENV}=1 if you trust where it came from"
            )
    return url


def absolute(url: str) -> str:
    """A URL that means the same in every process: local paths made absolute (Ray's workers run in other
    directories), ``s3://`` and other ``scheme://`` URLs unchanged. URLs that would run a command
    (``pipe:``) are refused, see :func:`check_url`."""
    check_url(url)
    if "://" in url or url.startswith("pipe:"):
        return url
    return str(Path(url).expanduser().absolute())


def split_s3(url: str) -> tuple[str, str]:
    rest = url[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{url}: an S3 URL needs a bucket, e.g. s3://bucket/prefix")
    return bucket, key


def join(url: str | os.PathLike[str], *parts: str) -> str:
    base = str(url)
    if is_s3(base):
        out = base.rstrip("/")
        for p in parts:
            out = f"{out}/{str(p).strip('/')}"
        return out
    return str(Path(base, *parts))


def endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


_retry_override: contextvars.ContextVar[float | None] = contextvars.ContextVar("superfan_s3_retry", default=None)
_stats_lock = threading.Lock()
_stats = {"retries": 0, "gave_up": 0}


def retry_stats() -> dict[str, int]:
    """Counts for this process: S3 retries made and operations that gave up (for metrics and reports)."""
    with _stats_lock:
        return dict(_stats)


def _count(what: str) -> None:
    with _stats_lock:
        _stats[what] += 1


def retry_seconds() -> float:
    """How long an S3 operation keeps retrying after its first failure (``SUPERFAN_S3_RETRY_SECONDS``)."""
    override = _retry_override.get()
    if override is not None:
        return override
    raw = os.environ.get(RETRY_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise StorageError(f"{RETRY_SECONDS_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


@contextlib.contextmanager
def retry_window(seconds: float) -> Iterator[None]:
    """Use ``seconds`` as the retry window in this thread/context (e.g. a quick pre-flight check)."""
    token = _retry_override.set(float(seconds))
    try:
        yield
    finally:
        _retry_override.reset(token)


def _retry_mode() -> str:
    mode = os.environ.get(RETRY_MODE_ENV, "standard").strip() or "standard"
    if mode not in {"standard", "adaptive", "legacy"}:
        raise StorageError(f"{RETRY_MODE_ENV}={mode!r}: expected 'standard' or 'adaptive'")
    return mode


@functools.cache
def _client(endpoint_url: str | None, key_id: str | None, secret: str | None, mode: str = "standard") -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(
        retries={"max_attempts": BOTOCORE_MAX_ATTEMPTS, "mode": mode},
        connect_timeout=5,
        read_timeout=60,
        tcp_keepalive=True,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=cfg)


def s3_client() -> Any:
    """A boto3 client for the current environment (cached per endpoint, credentials and retry mode)."""
    return _client(
        endpoint(), os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"), _retry_mode()
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _s3_error(url: str, err: BaseException) -> StorageError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(err, NoCredentialsError):
        return StorageError(
            f"{url}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a role)"
        )
    if isinstance(err, EndpointConnectionError):
        return StorageError(f"{url}: cannot reach S3 endpoint {endpoint() or 'AWS default'} ({err})")
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "?")
        msg = err.response.get("Error", {}).get("Message", "")
        if code in {"NoSuchKey", "404", "NotFound"}:
            return StorageError(f"{url}: not found")
        if code == "NoSuchBucket":
            return StorageError(f"{url}: bucket does not exist")
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
            return StorageError(f"{url}: access denied ({code}); check the AWS credentials")
        return StorageError(_one_line(f"{url}: S3 error {code} {msg}".rstrip()))
    return StorageError(_one_line(f"{url}: {type(err).__name__}: {err}"))


_TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
    "RequestThrottled", "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "OperationAborted",
    "ConditionalRequestConflict", "BandwidthLimitExceeded",
})  # fmt: skip
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps (s3transfer's ``last_exception``, ``__cause__``, ``__context__``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "last_exception", None), e.__cause__, e.__context__]


def _storage_failure(err: BaseException) -> bool:
    """Errors of the S3 stack (or the network under it), as opposed to programming errors."""
    import urllib3.exceptions
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import RetriesExceededError, S3UploadFailedError

    kinds = (BotoCoreError, ClientError, Boto3Error, RetriesExceededError, S3UploadFailedError,
             urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)  # fmt: skip
    return isinstance(err, kinds)


def _transient(err: BaseException) -> bool:
    """A failure worth retrying: the network (refused, reset, timed out, cut short), 5xx or throttling."""
    import botocore.exceptions as bce
    import urllib3.exceptions

    for e in _chain(err):
        if isinstance(e, bce.SSLError | bce.NoCredentialsError):
            return False  # a certificate or credentials problem does not heal by waiting
        if isinstance(e, bce.ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
        if isinstance(e, bce.ConnectionError | bce.HTTPClientError | bce.IncompleteReadError):
            return True
        if isinstance(e, urllib3.exceptions.ProtocolError | urllib3.exceptions.TimeoutError):
            return True
        if isinstance(e, ConnectionError | TimeoutError | http.client.IncompleteRead | http.client.HTTPException):
            return True
    return False


def _root_cause(err: BaseException) -> BaseException:
    """The most telling error in ``err``'s chain (the ClientError inside an S3UploadFailedError...)."""
    from botocore.exceptions import BotoCoreError, ClientError

    for e in _chain(err):
        if isinstance(e, ClientError | BotoCoreError):
            return e
    return err


class _Retry:
    """Backoff state for one operation: call :meth:`failed` with each error; it raises the final one-line
    :class:`StorageError` (not transient, or the window is spent) or logs one WARNING and sleeps."""

    def __init__(self, url: str) -> None:
        self.url, self.attempts = url, 0
        self.window = retry_seconds()
        self.started = time.monotonic()
        self.deadline: float | None = None

    def failed(self, err: BaseException, doing: str = "") -> None:
        root = _root_cause(err)
        if not _transient(err):
            raise _s3_error(self.url, root) from None
        if not self.backoff(doing + _one_line(str(_s3_error("", root)).removeprefix(": "))):
            _count("gave_up")
            msg = str(_s3_error(self.url, root))
            raise StorageError(
                f"{msg}; gave up after {self.attempts} attempts over {time.monotonic() - self.started:.0f}s "
                f"({RETRY_SECONDS_ENV}={self.window:g})"
            ) from None

    def backoff(self, reason: str) -> bool:
        """One more attempt: log ``reason`` once and sleep, or False when the window is spent."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.window
        self.attempts += 1
        if now >= self.deadline:
            return False
        delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** (self.attempts - 1)) * random.uniform(0.5, 1.0)
        delay = max(0.0, min(delay, self.deadline - now))
        _count("retries")
        log.warning(
            "%s: %s; retry %d in %.1fs (giving up %.0fs after the first failure)",
            self.url, reason, self.attempts, delay, max(0.0, self.deadline - self.started),
        )  # fmt: skip
        time.sleep(delay)
        return True


def _retrying(url: str, fn: Callable[[], T], *, retry: _Retry | None = None) -> T:
    """``fn()``, retried on transient S3 failures (see the module docstring); other failures of the S3 stack
    become one-line :class:`StorageError`s naming ``url``; programming errors propagate. ``retry``
    continues an earlier operation's window and count (a stream reopening after a cut)."""
    while True:
        try:
            return fn()
        except StorageError:
            raise
        except Exception as err:
            if not _storage_failure(err):
                raise
            retry = retry or _Retry(url)
            retry.failed(err)


def _s3_call(url: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return _retrying(url, lambda: fn(*args, **kwargs))


def _error_code(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or status or "")


class _S3Reader(io.RawIOBase):
    """A streaming GET that survives a lost connection: on a transient error it reopens the object at the
    byte it had reached (``Range``), pinned to the first response's ETag (``IfMatch``), so the bytes are
    one object's even if it is replaced meanwhile (that fails with one line instead)."""

    def __init__(self, url: str, bucket: str, key: str) -> None:
        super().__init__()
        self.url, self._bucket, self._key = url, bucket, key
        self._pos, self._size, self._etag = 0, 0, None
        self._body: Any = None
        self._body = self._open()

    def _open(self, retry: _Retry | None = None) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key}
        if self._etag:
            kwargs["IfMatch"] = self._etag
        if self._pos:
            kwargs["Range"] = f"bytes={self._pos}-"
        def get() -> Any:
            from botocore.exceptions import ClientError

            try:
                return s3_client().get_object(**kwargs)
            except ClientError as err:
                if _error_code(err) in {"PreconditionFailed", "412"}:
                    raise StorageError(f"{self.url}: the object changed while it was being read") from None
                raise

        obj = _retrying(self.url, get, retry=retry)
        if self._etag is None:
            self._etag, self._size = obj.get("ETag"), int(obj.get("ContentLength", 0))
        body = obj["Body"]
        return getattr(body, "_raw_stream", body)

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if n is None or n < 0:
            return self.readall()
        if n == 0 or self._pos >= self._size:
            return b""
        retry: _Retry | None = None
        while True:
            try:
                data = self._body.read(n)
                if not data:  # the server closed the body early without an error
                    raise http.client.IncompleteRead(b"", self._size - self._pos)
                self._pos += len(data)
                return data
            except Exception as err:
                if not _storage_failure(err):
                    raise
                retry = retry or _Retry(self.url)
                retry.failed(err, f"stream cut at byte {self._pos} of {self._size}: ")
                with contextlib.suppress(Exception):
                    self._body.close()
                self._body = self._open(retry)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None
        super().close()


# ------------------------------------------------------------------------------------------ reading


def read_bytes(url: str | os.PathLike[str]) -> bytes:
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        return _retrying(url, lambda: s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    try:
        return Path(url).read_bytes()
    except FileNotFoundError:
        raise StorageError(f"{url}: not found") from None
    except OSError as err:
        raise StorageError(f"{url}: {err.strerror}") from None


def read_text(url: str | os.PathLike[str]) -> str:
    try:
        return read_bytes(url).decode("utf-8")
    except UnicodeDecodeError as err:
        raise StorageError(f"{url}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def open_read(url: str | os.PathLike[str]) -> IO[bytes]:
    """A streaming binary reader (S3 bodies are not buffered whole; webdataset reads tars through this).

    On S3 a connection lost mid-stream is resumed where it stopped (see :class:`_S3Reader`)."""
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        return _S3Reader(url, bucket, key)  # type: ignore[return-value]
    try:
        return open(url, "rb")  # noqa: SIM115 - the caller owns the handle
    except FileNotFoundError:
        raise StorageError(f"{url}: not found") from None
    except OSError as err:
        raise StorageError(f"{url}: cannot read ({err.strerror or err})") from None


def exists(url: str | os.PathLike[str]) -> bool:
    url = str(url)
    if is_s3(url):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(url)

        def head() -> bool:
            try:
                s3_client().head_object(Bucket=bucket, Key=key)
                return True
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return False
                raise

        return _retrying(url, head)
    return Path(url).exists()


def list_files(url: str | os.PathLike[str]) -> list[str]:
    """Relative paths of all files under a directory or prefix, sorted."""
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        prefix = key.rstrip("/") + "/" if key else ""

        def keys() -> list[str]:  # a fresh listing per attempt
            pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])]

        return sorted(_retrying(url, keys))
    root = Path(url)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tmp-" not in p.name)


# ------------------------------------------------------------------------------------------ writing


def write_bytes(url: str | os.PathLike[str], data: bytes) -> None:
    """Atomically create or replace ``url`` with ``data``."""
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        _s3_call(url, s3_client().put_object, Bucket=bucket, Key=key, Body=data)
        return
    _write_local(url, lambda f: f.write(data))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or create in directory ``path`` durable: without it a power cut after ``os.replace``
    can lose the new name even though the file's data was synced (POSIX keeps names in the directory)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a platform or filesystem that cannot open directories (the data itself is synced)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; nothing more can be done there
    finally:
        os.close(fd)


def _write_local(url: str, fill: Callable[[IO[bytes]], Any]) -> None:
    """Write a temporary sibling with ``fill``, fsync it, ``os.replace`` it over ``url``, fsync the directory."""
    path = Path(url)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as err:
        raise StorageError(f"{url}: cannot write ({err.strerror or err})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_text(url: str | os.PathLike[str], text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def upload_file(local: str | os.PathLike[str], url: str | os.PathLike[str]) -> None:
    """Atomically publish a local file at ``url`` (multipart on S3 for big files)."""
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        _s3_call(url, s3_client().upload_file, str(local), bucket, key)
        return

    def copy(dst: IO[bytes]) -> None:
        try:
            src = open(local, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise StorageError(f"{local}: cannot read ({err.strerror or err})") from None
        with src:
            shutil.copyfileobj(src, dst, 1 << 20)

    _write_local(url, copy)


def create_exclusive(url: str | os.PathLike[str], data: bytes) -> bool:
    """Create ``url`` holding ``data`` only if nothing is there yet; ``True`` if this call created it.

    A claim for names several processes race for (champion versions). Locally ``O_CREAT | O_EXCL``; on
    S3 a conditional PUT (``If-None-Match: *``, honoured by AWS S3 since 2024 and by SeaweedFS). Put
    something unique in ``data`` (a random token): when a retried PUT finds the object, it reads it back
    and a match means the earlier attempt was ours and succeeded (its response was lost).
    """
    url = str(url)
    if is_s3(url):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(url)

        def put() -> bool:
            try:
                s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as err:
                if _error_code(err) in {"PreconditionFailed", "412"}:
                    return False
                if _error_code(err) in {"NotImplemented", "501"}:
                    raise StorageError(f"{url}: this S3 server does not support conditional writes") from None
                raise

        return _retrying(url, put) or read_bytes(url) == data
    path = Path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise StorageError(f"{url}: cannot create ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)
    except OSError as err:  # disk full, quota...: the claim is not made, and no empty claim is left behind
        with contextlib.suppress(OSError):
            path.unlink()
        raise StorageError(f"{url}: cannot write ({err.strerror or err})") from None
    return True


def download_file(url: str | os.PathLike[str], local: str | os.PathLike[str]) -> None:
    url = str(url)
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    if is_s3(url):
        bucket, key = split_s3(url)
        _s3_call(url, s3_client().download_file, bucket, key, str(local))
        return
    try:
        shutil.copyfile(url, local)
    except FileNotFoundError:
        raise StorageError(f"{url}: not found") from None
    except OSError as err:
        raise StorageError(f"{url}: cannot copy to {local} ({err.strerror or err})") from None


def delete(url: str | os.PathLike[str]) -> None:
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        _s3_call(url, s3_client().delete_object, Bucket=bucket, Key=key)
        return
    Path(url).unlink(missing_ok=True)


def check_writable(url: str | os.PathLike[str]) -> None:
    """Fail early, with one line, if ``url`` cannot be written (bucket missing, bad credentials...)."""
    probe = join(url, f".superfan-write-probe-{os.getpid()}")
    write_bytes(probe, b"ok")
    delete(probe)


# ------------------------------------------------------------------------------------------ ray / arrow


def _arrow_attempts(window: float) -> int:
    """Attempts for the AWS C++ SDK's standard strategy (delay ``rand[0, 1) * 2**retry`` s, at most 20 s)
    whose expected total backoff covers ``window`` seconds, so Ray's checkpoint I/O rides out the same
    outage as ours."""
    attempts, total = 1, 0.0
    while total < window and attempts < 50:
        total += min(0.5 * 2 ** (attempts - 1), 10.0)
        attempts += 1
    return max(3, attempts)


def pyarrow_fs(url: str | os.PathLike[str]) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path)`` for Ray's ``RunConfig(storage_path=..., storage_filesystem=...)``.

    It holds no credentials (see the comment inside): what Ray pickles of it names the endpoint and region
    only."""
    url = str(url)
    import pyarrow.fs as pafs

    if is_s3(url):
        kwargs: dict[str, Any] = {}
        ep = endpoint()
        if ep:
            scheme, _, host = ep.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        # No keys here: pyarrow pickles explicitly given keys into the filesystem, and Ray pickles the
        # filesystem into tuner.pkl and every experiment-state file it writes to the bucket. Without them,
        # each process (driver, Train controller, workers) resolves its own credentials through the AWS
        # default chain (environment, shared config, instance profile, IRSA), as boto3 does.
        kwargs["region"] = os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))
        kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=_arrow_attempts(retry_seconds()))
        kwargs["connect_timeout"] = 5.0
        bucket, key = split_s3(url)
        return pafs.PyFileSystem(RetryingArrowFS(pafs.S3FileSystem(**kwargs))), f"{bucket}/{key}".rstrip("/")
    path = Path(absolute(url))
    path.mkdir(parents=True, exist_ok=True)
    return pafs.LocalFileSystem(), str(path)


# ------------------------------------------------------------------------------ Ray's filesystem, retried

#: Error names of the AWS C++ SDK (``Aws::Client::CoreErrors`` and ``Aws::S3::S3Errors``, as pyarrow spells
#: them in "AWS Error NAME during OP operation") worth retrying: the endpoint is down, slow or busy.
_ARROW_TRANSIENT_ERRORS = frozenset({
    "NETWORK_CONNECTION", "SERVICE_UNAVAILABLE", "THROTTLING", "SLOW_DOWN", "INTERNAL_FAILURE", "REQUEST_TIMEOUT",
})  # fmt: skip
_ARROW_ERROR = re.compile(r"AWS Error (?P<name>[A-Z_]+)(?: \(HTTP status (?P<status>\d+)\))? during ")


def arrow_error_code(err: BaseException) -> tuple[str | None, int | None]:
    """``(AWS SDK error name, HTTP status)`` of an error pyarrow's S3 filesystem raised, or ``(None, None)``
    when it is not one (pyarrow reports S3 failures as ``OSError``: "AWS Error NETWORK_CONNECTION during
    HeadObject operation: ..."; an unknown one as "AWS Error UNKNOWN (HTTP status 503) during ...")."""
    found = _ARROW_ERROR.search(str(err))
    if found is None:
        return None, None
    status = found.group("status")
    return found.group("name"), int(status) if status else None


def _arrow_transient(err: BaseException) -> bool:
    """By type and error code, never by words anywhere in the message (a key named ``x_00500`` that does not
    exist is a ``FileNotFoundError``, not a 500): missing paths and permissions are final."""
    if not isinstance(err, OSError) or isinstance(err, FileNotFoundError | PermissionError | FileExistsError |
                                                   IsADirectoryError | NotADirectoryError):  # fmt: skip
        return False
    name, status = arrow_error_code(err)
    return name in _ARROW_TRANSIENT_ERRORS or status in _TRANSIENT_STATUS


def _arrow_call(what: str, fn: Callable[[], T]) -> T:
    """``fn()`` with our retry window around it: the SDK's own retry strategy gives up on a refused
    connection at once ("Failed to connect ... after 0 ms"), and then Ray Train's controller dies on its
    next checkpoint-state write. Not-found and permission errors pass through untouched."""
    retry: _Retry | None = None
    while True:
        try:
            return fn()
        except OSError as err:
            if not _arrow_transient(err):
                raise
            retry = retry or _Retry(f"s3://{what}")
            if not retry.backoff(_one_line(str(err))):
                raise


def _handler_base() -> type:
    import pyarrow.fs as pafs

    return pafs.FileSystemHandler


class RetryingArrowFS(_handler_base()):  # type: ignore[misc]
    """A ``pyarrow.fs.FileSystemHandler`` around ``S3FileSystem`` that rides out an object-store outage of up
    to ``SUPERFAN_S3_RETRY_SECONDS`` (what Ray Train and Tune write checkpoints and state through)."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetryingArrowFS) and self.fs.equals(other.fs)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return (RetryingArrowFS, (self.fs,))

    def get_type_name(self) -> str:
        return "superfan-retrying-" + self.fs.type_name

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> Any:
        return _arrow_call(paths[0] if paths else "", lambda: self.fs.get_file_info(paths))

    def get_file_info_selector(self, selector: Any) -> Any:
        return _arrow_call(selector.base_dir, lambda: self.fs.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        _arrow_call(path, lambda: self.fs.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        _arrow_call(path, lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        _arrow_call(path, lambda: self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        _arrow_call("/", lambda: self.fs.delete_dir_contents("/", accept_root_dir=True))

    def delete_file(self, path: str) -> None:
        _arrow_call(path, lambda: self.fs.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        _arrow_call(src, lambda: self.fs.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        _arrow_call(src, lambda: self.fs.copy_file(src, dest))

    def open_input_stream(self, path: str) -> Any:
        return _arrow_call(path, lambda: self.fs.open_input_stream(path))

    def open_input_file(self, path: str) -> Any:
        return _arrow_call(path, lambda: self.fs.open_input_file(path))

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        return _arrow_call(path, lambda: self.fs.open_output_stream(path, metadata=metadata))

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return _arrow_call(path, lambda: self.fs.open_append_stream(path, metadata=metadata))
