"""The filesystem Ray Train and Tune write checkpoints and experiment state through (``pyarrow.fs``), built
from the same environment as boto3 and retried over the same window (:mod:`superfan.storage.retry`), whole
calls at a time (an upload completes on close, a download is fetched before it is read): the AWS C++ SDK's
own strategy gives up on a refused connection once its retry quota is spent, which kills Ray Train's
controller."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from superfan.storage.retry import _TRANSIENT_STATUS, _one_line, _Retry
from superfan.storage.urls import absolute, endpoint, is_s3, split_s3

T = TypeVar("T")


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
        # The SDK's own retries stay short: its standard strategy draws every retry from one quota per
        # client, which a 20 s outage empties, after which a refused connection fails "after 0 ms" (it killed
        # Ray Train's controller on a state snapshot). RetryingArrowFS retries each whole call over our window.
        kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=3)
        kwargs["connect_timeout"] = 5.0
        # Uploads in the calling thread: RetryingArrowFS closes (uploads) a stream from pyarrow's I/O pool
        # (``copy_files`` is how Ray uploads a checkpoint), and a background write would queue on that same,
        # then full, pool and wait forever (found hung under an outage).
        kwargs["background_writes"] = False
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


#: What a retried transfer holds in memory before it spills to a temporary file (Ray's state files are
#: kilobytes; a checkpoint can be hundreds of megabytes).
_SPOOL_BYTES = 16 << 20
_CHUNK = 4 << 20


def _download(fs: Any, path: str) -> Any:
    """The whole object, fetched inside the retry window before the caller reads a byte: S3 streams fetch
    lazily, so a stream opened before an outage would fail on its first read during it, past any retry."""
    import pyarrow as pa

    def fetch() -> Any:
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - handed to the reader
        try:
            with fs.open_input_stream(path) as src:
                while chunk := src.read(_CHUNK):
                    spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    return pa.PythonFile(_arrow_call(path, fetch), mode="r")


class _RetriedUpload:
    """What Ray writes, held until ``close`` and then uploaded whole inside the retry window. S3's
    multipart upload completes on close ("CompleteMultipartUpload"): an outage at that moment, past the
    open, killed Ray Train's controller on its state snapshot. Never closed (the writer failed) means
    never uploaded, so no partial object appears."""

    def __init__(self, fs: Any, path: str, metadata: Any) -> None:
        self._fs, self._path, self._metadata = fs, path, metadata
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - closed in close()
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        return self._spool.write(data)

    def tell(self) -> int:
        return self._spool.tell()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            _arrow_call(self._path, self._upload)
        finally:
            self._spool.close()

    def _upload(self) -> None:
        self._spool.seek(0)
        with self._fs.open_output_stream(self._path, metadata=self._metadata) as dst:
            while chunk := self._spool.read(_CHUNK):
                dst.write(chunk)


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
        return _download(self.fs, path)

    def open_input_file(self, path: str) -> Any:
        return _arrow_call(path, lambda: self.fs.open_input_file(path))

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        import pyarrow as pa

        return pa.PythonFile(_RetriedUpload(self.fs, path, metadata), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return _arrow_call(path, lambda: self.fs.open_append_stream(path, metadata=metadata))
