"""Tar shards and the manifest: built locally, published whole, manifest last.

Why this order: readers (``superfan.data.stream``) trust ``manifest.json``; it is written only after every
shard it lists has been published, so a reader never sees a manifest that points at a missing or partial
shard. Each shard is built in a local temporary directory and published with
:func:`superfan.storage.upload_file` (atomic locally via rename; an S3 object is only visible once its
upload completes), so a half-written shard is never visible under its final name either.

Tar members are ``{key}.hr.jpg`` and ``{key}.json`` with fixed metadata (mtime 0, mode 0444, no owner), so
the same input packs to byte-identical shards and identical sha256 sums.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from superfan import storage
from superfan.data.manifest import FORMAT, MANIFEST, manifest_url, parse_manifest
from superfan.errors import IntegrityError, StorageError, UserError
from superfan.records import sha256_file

__all__ = ["FORMAT", "MANIFEST", "ShardWriter", "manifest_url", "read_manifest", "verify", "write_manifest"]


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o444
    info.uname = info.gname = ""
    return info


#: The writer's local temp directory: ``superfan-shards-<pid>-<random>`` under the system temp dir.
TEMP_PREFIX = "superfan-shards-"


def _clean_dead_temp_dirs() -> list[str]:
    """Remove the temp directories of packs that were killed on this machine (SIGKILL runs no cleanup): ours
    (same user), named with a pid that no longer runs. Any other entry is left alone. The ones removed."""
    import re
    import shutil

    base = tempfile.gettempdir()
    pattern = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-[A-Za-z0-9_]+")
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if not found or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
        except OSError:
            continue
    return removed


@dataclass
class ShardWriter:
    """Append samples; every ``shard_size`` samples a shard is closed, hashed and published in background."""

    dest: str
    split: str
    shard_size: int = 1000
    upload_threads: int = 2
    before_first_publish: Callable[[], None] | None = None  #: e.g. drop the old manifest on --overwrite
    shards: list[dict[str, Any]] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _tar: tarfile.TarFile | None = None
    _path: str | None = None
    _count: int = 0
    _index: int = 0
    _pool: ThreadPoolExecutor | None = None
    _pending: list[tuple[dict[str, Any], Future[None], str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise UserError(f"--shard-size must be at least 1, got {self.shard_size}")
        _clean_dead_temp_dirs()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        self._pool = ThreadPoolExecutor(max_workers=self.upload_threads, thread_name_prefix="shard-upload")

    @property
    def samples(self) -> int:
        return sum(s["samples"] for s in self.shards) + self._count

    def add(self, key: str, files: dict[str, bytes]) -> None:
        """Write one sample: ``files`` maps extension (``hr.jpg``, ``json``) to bytes."""
        if self._tar is None:
            assert self._tmp is not None
            self._path = os.path.join(self._tmp.name, shard_name(self.split, self._index))
            self._tar = tarfile.open(self._path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        for ext, data in files.items():
            self._tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
        self._count += 1
        if self._count >= self.shard_size:
            self._finish_shard()

    def _finish_shard(self) -> None:
        if self._tar is None or self._path is None:
            return
        self._tar.close()
        name = os.path.basename(self._path)
        info = {"name": name, "samples": self._count, "sha256": sha256_file(self._path)[0],
                "bytes": os.path.getsize(self._path)}  # fmt: skip
        url = storage.join(self.dest, name)
        assert self._pool is not None
        if self._index == 0 and self.before_first_publish is not None:
            self.before_first_publish()
        fut = self._pool.submit(self._publish, self._path, url)
        self._pending.append((info, fut, url))
        self.shards.append(info)
        self._tar, self._path, self._count = None, None, 0
        self._index += 1
        self._reap(block=False)

    @staticmethod
    def _publish(path: str, url: str) -> None:
        try:
            storage.upload_file(path, url)
        finally:
            os.unlink(path)

    def _reap(self, block: bool) -> None:
        keep = []
        for info, fut, url in self._pending:
            if block or fut.done():
                fut.result()  # re-raises StorageError from the upload thread
            else:
                keep.append((info, fut, url))
        self._pending = keep

    def close(self) -> list[dict[str, Any]]:
        """Finish the last shard and wait until every shard is published; returns the shard list."""
        if self._count:
            self._finish_shard()
        try:
            self._reap(block=True)
        finally:
            self.abort()
        return self.shards

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def write_manifest(dest: str, manifest: dict[str, Any]) -> str:
    url = manifest_url(dest)
    storage.write_text(url, json.dumps(manifest, indent=1) + "\n")
    return url


def read_manifest(url: str) -> dict[str, Any]:
    """A pack's manifest, validated by the library's reader (:mod:`superfan.data.manifest`), as a dict."""
    murl = manifest_url(url)
    text = storage.read_text(murl)
    manifest = parse_manifest(text, murl)
    if manifest.format != FORMAT:
        raise IntegrityError(f"{murl}: format {manifest.format!r}, expected {FORMAT!r}")
    return json.loads(text)


class _HashingReader(io.RawIOBase):
    """Wraps a byte stream, hashing and counting everything read through it (one pass: hash + tar walk)."""

    def __init__(self, raw: Any):
        self.raw, self.sha, self.n = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.n += n
        return n


def verify(url: str) -> dict[str, Any]:
    """Re-hash every shard listed in the manifest at ``url`` (a prefix or the manifest's URL).

    Checks sha256, byte size and the number of samples in each tar. Returns a report dict; raises
    :class:`~superfan.errors.IntegrityError` naming the first shard that does not match.
    """
    manifest = read_manifest(url)
    base = manifest_url(url).rsplit("/", 1)[0] if storage.is_s3(url) else os.path.dirname(manifest_url(url)) or "."
    total = 0
    nbytes = 0
    for shard in manifest.get("shards", []):
        surl = storage.join(base, shard["name"])
        try:
            raw = storage.open_read(surl)
        except StorageError as err:
            raise IntegrityError(f"{surl}: listed in the manifest but cannot be read ({err})") from None
        reader = _HashingReader(raw)
        keys: set[str] = set()
        try:
            with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|") as tar:
                for member in tar:
                    base_name = member.name.rsplit("/", 1)
                    stem = base_name[-1].split(".", 1)[0]
                    keys.add((base_name[0] + "/" if len(base_name) > 1 else "") + stem)
            while reader.readinto(bytearray(1 << 20)):
                pass
        except tarfile.TarError as err:
            raise IntegrityError(f"{surl}: not a valid tar ({err})") from None
        finally:
            raw.close()
        if reader.sha.hexdigest() != shard["sha256"] or reader.n != shard["bytes"]:
            raise IntegrityError(f"{surl}: sha256/size does not match the manifest (corrupted or modified)")
        if len(keys) != shard["samples"]:
            raise IntegrityError(f"{surl}: {len(keys)} samples, manifest says {shard['samples']}")
        total += len(keys)
        nbytes += reader.n
    if total != manifest.get("samples"):
        raise IntegrityError(
            f"{manifest_url(url)}: shards hold {total} samples, manifest says {manifest.get('samples')}"
        )
    nshards = len(manifest.get("shards", []))
    return {"url": manifest_url(url), "shards": nshards, "samples": total, "bytes": nbytes, "ok": True}
