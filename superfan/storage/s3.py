"""The S3 side of every operation, through one cached boto3 client per environment.

botocore retries each request itself (``SUPERFAN_S3_RETRY_MODE``); around that each operation runs in
:func:`superfan.storage.retry._retrying`'s time-bounded loop, and :class:`_S3Reader` resumes a stream cut
mid-object. Functions here take an ``s3://bucket/key`` URL; :mod:`superfan.storage` picks this module or
:mod:`superfan.storage.local` by the URL. The client cache lives here only (:func:`reset_clients`).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import os
from typing import Any

from superfan.errors import StorageError
from superfan.storage.retry import _error_code, _Retry, _retrying, _storage_failure
from superfan.storage.urls import endpoint, split_s3

#: botocore's retry mode for every request: "standard" (default) or "adaptive" (adds client-side rate limiting).
RETRY_MODE_ENV = "SUPERFAN_S3_RETRY_MODE"
#: Attempts botocore makes per call (first try included) before our time-bounded loop takes over.
BOTOCORE_MAX_ATTEMPTS = 3


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


def reset_clients() -> None:
    """Forget the cached clients: a forked child (a DataLoader or packing worker) must not reuse the parent's
    boto3 connection pool. Call it first thing in the child."""
    _client.cache_clear()


def _s3_call(url: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return _retrying(url, lambda: fn(*args, **kwargs))


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
        return obj["Body"]  # botocore's StreamingBody: a cut stream raises a (transient) botocore error

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


# ------------------------------------------------------------------------------------------ operations


def read_bytes(url: str) -> bytes:
    bucket, key = split_s3(url)
    return _retrying(url, lambda: s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())


def open_read(url: str) -> _S3Reader:
    bucket, key = split_s3(url)
    return _S3Reader(url, bucket, key)


def exists(url: str) -> bool:
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


def list_files(url: str) -> list[str]:
    bucket, key = split_s3(url)
    prefix = key.rstrip("/") + "/" if key else ""

    def keys() -> list[str]:  # a fresh listing per attempt
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])]

    return sorted(_retrying(url, keys))


def write_bytes(url: str, data: bytes) -> None:
    bucket, key = split_s3(url)
    _s3_call(url, s3_client().put_object, Bucket=bucket, Key=key, Body=data)


def upload_file(local: str | os.PathLike[str], url: str) -> None:
    bucket, key = split_s3(url)
    _s3_call(url, s3_client().upload_file, str(local), bucket, key)


def create_exclusive(url: str, data: bytes) -> bool:
    """A conditional PUT (``If-None-Match: *``); a retried PUT that finds the object reads it back, and a
    match means the earlier attempt was ours and succeeded (its response was lost)."""
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


def download_file(url: str, local: str | os.PathLike[str]) -> None:
    bucket, key = split_s3(url)
    _s3_call(url, s3_client().download_file, bucket, key, str(local))


def move(src: str, dst: str) -> None:
    """Server-side copy, then delete the source (objects up to 5 GB: a shard, a checkpoint file)."""
    sb, sk = split_s3(src)
    db, dk = split_s3(dst)
    _s3_call(dst, s3_client().copy_object, Bucket=db, Key=dk, CopySource={"Bucket": sb, "Key": sk})
    _s3_call(src, s3_client().delete_object, Bucket=sb, Key=sk)


def delete(url: str) -> None:
    bucket, key = split_s3(url)
    _s3_call(url, s3_client().delete_object, Bucket=bucket, Key=key)
