"""Paths and URLs: what kind a URL is, joining, making it mean the same in every process, and refusing URLs
that would make webdataset's ``gopen`` run a program. Pure string work plus the environment: no I/O, so
every other part of :mod:`superfan.storage` can use it."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from superfan.errors import StorageError, UnsafeURLError

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
