"""The local-filesystem side of every operation, written so that a reader never sees a half-written file:
a temporary sibling, fsynced, ``os.replace``d over the name, then the directory fsynced (a power cut must
not lose the new name). :mod:`superfan.storage` picks this module or :mod:`superfan.storage.s3` by the URL."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from superfan.errors import StorageError


def read_bytes(url: str) -> bytes:
    try:
        return Path(url).read_bytes()
    except FileNotFoundError:
        raise StorageError(f"{url}: not found") from None
    except OSError as err:
        raise StorageError(f"{url}: {err.strerror}") from None


def open_read(url: str) -> IO[bytes]:
    try:
        return open(url, "rb")  # noqa: SIM115 - the caller owns the handle
    except FileNotFoundError:
        raise StorageError(f"{url}: not found") from None
    except OSError as err:
        raise StorageError(f"{url}: cannot read ({err.strerror or err})") from None


def exists(url: str) -> bool:
    return Path(url).exists()


def list_files(url: str) -> list[str]:
    root = Path(url)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tmp-" not in p.name)


# ------------------------------------------------------------------------------------------ writing


def write_bytes(url: str, data: bytes) -> None:
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


def upload_file(local: str | os.PathLike[str], url: str) -> None:
    def copy(dst: IO[bytes]) -> None:
        try:
            src = open(local, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise StorageError(f"{local}: cannot read ({err.strerror or err})") from None
        with src:
            shutil.copyfileobj(src, dst, 1 << 20)

    _write_local(url, copy)


def move(src: str, dst: str) -> None:
    """``rename(2)``: atomic on one filesystem; the directory synced after."""
    try:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    except OSError as err:
        raise StorageError(f"{src} -> {dst}: cannot move ({err.strerror or err})") from None
    fsync_dir(Path(dst).parent)


def create_exclusive(url: str, data: bytes) -> bool:
    """``O_CREAT | O_EXCL``, then the data synced; a claim that cannot be written is removed again."""
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


def download_file(url: str, local: str | os.PathLike[str]) -> None:
    try:
        shutil.copyfile(url, local)
    except FileNotFoundError:
        raise StorageError(f"{url}: not found") from None
    except OSError as err:
        raise StorageError(f"{url}: cannot copy to {local} ({err.strerror or err})") from None


def delete(url: str) -> None:
    Path(url).unlink(missing_ok=True)
