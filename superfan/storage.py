"""One place that turns a local path or an ``s3://bucket/key`` URL into reads, writes and listings.

Everything that touches data outside the process goes through here, so the S3 endpoint
(``AWS_ENDPOINT_URL``), credentials (the usual ``AWS_*`` variables or an IAM role) and error messages
are the same for packing, streaming, Ray storage, promotion and pull.

Writes are atomic: a reader never sees a half-written object. Locally we write a temporary file in the
same directory and ``os.replace`` it; on S3 a PUT (single or multipart) is only visible once complete.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from superfan.errors import StorageError


def is_s3(url: str | os.PathLike[str]) -> bool:
    return str(url).startswith("s3://")


def absolute(url: str) -> str:
    """A URL that means the same in every process: local paths made absolute (Ray's workers run in other
    directories), ``s3://`` and other ``scheme:`` URLs (``pipe:``, ``https://``) unchanged."""
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


@functools.cache
def _client(endpoint_url: str | None, key_id: str | None, secret: str | None) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=cfg)


def s3_client() -> Any:
    """A boto3 client for the current environment (cached per endpoint and credentials)."""
    return _client(endpoint(), os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"))


def _s3_error(url: str, err: Exception) -> StorageError:
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
        return StorageError(f"{url}: S3 error {code} {msg}".rstrip())
    return StorageError(f"{url}: {type(err).__name__}: {err}")


def _s3_call(url: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except (BotoCoreError, ClientError) as err:
        raise _s3_error(url, err) from None


# ------------------------------------------------------------------------------------------ reading


def read_bytes(url: str | os.PathLike[str]) -> bytes:
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        obj = _s3_call(url, s3_client().get_object, Bucket=bucket, Key=key)
        return obj["Body"].read()
    try:
        return Path(url).read_bytes()
    except FileNotFoundError:
        raise StorageError(f"{url}: not found") from None
    except OSError as err:
        raise StorageError(f"{url}: {err.strerror}") from None


def read_text(url: str | os.PathLike[str]) -> str:
    return read_bytes(url).decode("utf-8")


def open_read(url: str | os.PathLike[str]) -> IO[bytes]:
    """A streaming binary reader (S3 bodies are not buffered whole; webdataset reads tars through this)."""
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        obj = _s3_call(url, s3_client().get_object, Bucket=bucket, Key=key)
        return obj["Body"]._raw_stream if hasattr(obj["Body"], "_raw_stream") else obj["Body"]
    try:
        return open(url, "rb")  # noqa: SIM115 - the caller owns the handle
    except FileNotFoundError:
        raise StorageError(f"{url}: not found") from None


def exists(url: str | os.PathLike[str]) -> bool:
    url = str(url)
    if is_s3(url):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(url)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise _s3_error(url, err) from None
        except Exception as err:  # noqa: BLE001 - endpoint/credential problems become one line
            raise _s3_error(url, err) from None
    return Path(url).exists()


def list_files(url: str | os.PathLike[str]) -> list[str]:
    """Relative paths of all files under a directory or prefix, sorted."""
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        prefix = key.rstrip("/") + "/" if key else ""
        out: list[str] = []
        paginator = s3_client().get_paginator("list_objects_v2")

        def pages() -> Iterator[dict[str, Any]]:
            yield from paginator.paginate(Bucket=bucket, Prefix=prefix)

        for page in _s3_call(url, list, pages()):
            out += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
        return sorted(out)
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
    path = Path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise StorageError(f"{url}: cannot write ({err.strerror})") from None


def write_text(url: str | os.PathLike[str], text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def upload_file(local: str | os.PathLike[str], url: str | os.PathLike[str]) -> None:
    """Atomically publish a local file at ``url`` (multipart on S3 for big files)."""
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3(url)
        _s3_call(url, s3_client().upload_file, str(local), bucket, key)
        return
    path = Path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
        os.close(fd)
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise StorageError(f"{url}: cannot write ({err.strerror})") from None


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


def pyarrow_fs(url: str | os.PathLike[str]) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path)`` for Ray's ``RunConfig(storage_path=..., storage_filesystem=...)``."""
    url = str(url)
    import pyarrow.fs as pafs

    if is_s3(url):
        kwargs: dict[str, Any] = {}
        ep = endpoint()
        if ep:
            scheme, _, host = ep.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            kwargs.update(
                access_key=os.environ["AWS_ACCESS_KEY_ID"],
                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                session_token=os.environ.get("AWS_SESSION_TOKEN"),
            )
        kwargs["region"] = os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))
        bucket, key = split_s3(url)
        return pafs.S3FileSystem(**kwargs), f"{bucket}/{key}".rstrip("/")
    path = Path(absolute(url))
    path.mkdir(parents=True, exist_ok=True)
    return pafs.LocalFileSystem(), str(path)
