"""Which S3 failures are worth retrying, and the time-bounded backoff around them.

Shared by the boto3 side (:mod:`superfan.storage.s3`) and Ray's pyarrow filesystem
(:mod:`superfan.storage.arrow`), so both ride out the same outage (``SUPERFAN_S3_RETRY_SECONDS``), log the
same one WARNING per retry and count into the same :func:`retry_stats`. The process-wide state (the
counters, the :func:`retry_window` override) lives here only.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from superfan.errors import StorageError
from superfan.storage.urls import endpoint

# The package's logger, by its documented name (``superfan.storage``), whichever module logs.
log = logging.getLogger("superfan.storage")
# Library practice: records reach the handlers the application configures (``logging.basicConfig``); with
# none, nothing is printed, so a CLI's one-line error stays one line while it retried.
log.addHandler(logging.NullHandler())
T = TypeVar("T")

#: Seconds after the first failure of an S3 operation during which it keeps retrying.
RETRY_SECONDS_ENV = "SUPERFAN_S3_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0
_BACKOFF_BASE, _BACKOFF_MAX = 0.5, 5.0


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


def _error_code(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or status or "")
