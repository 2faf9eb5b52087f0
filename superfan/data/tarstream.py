"""Streaming tar -> WebDataset samples, without :mod:`tarfile`'s per-member overhead.

Why not ``webdataset.tarfile_to_samples``: it walks the stream with :mod:`tarfile`, whose header parsing
(``TarInfo.frombuf``, every field decoded) cost ~0.1 ms per sample in the stream's profile, a tenth of
the whole per-sample budget (``superfan bench data``). Shards need only name, size and type, so this
reader parses just those, from the same byte stream (a local file or an ``s3://`` GET, :mod:`superfan.storage`).

It reads POSIX ustar, pax (``x`` records override ``path``/``size``; ``g`` global records are skipped)
and GNU long names (``L``), i.e. what :mod:`tarfile` (pax by default), GNU tar and webdataset's own
``TarWriter`` write. Each header's checksum is verified, so a corrupt or non-tar stream is an error naming
the URL, never silently misread samples. Grouping into samples follows webdataset: files with the same
key (the path up to the first dot of its last component) that follow each other form one sample;
``__key__`` and ``__url__`` are added.

Reads are bounded: a member whose header claims more than ``max_member`` bytes (``MAX_MEMBER_BYTES``,
64 MiB, or ``SUPERFAN_MAX_TAR_MEMBER_BYTES``; a face crop is ~100 KB) raises :class:`OversizedMember`
before anything is allocated, and a stream that ends inside a member, or without the end-of-archive
block after its members, raises :class:`TruncatedTar`; both are :class:`~superfan.errors.BadSample` errors
naming the shard and the member. With a ``handler`` (webdataset's convention: return ``True`` to go on),
:func:`tar_samples` drops the sample concerned and continues (after an oversized member, with the next
one; after a truncation or a corrupt header, with the next shard). Every URL passes
:func:`superfan.storage.check_url` first, so a config cannot make a reader run a command (``pipe:``);
shards are read through :mod:`superfan.storage`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from superfan import storage
from superfan.errors import BadSample, ConfigError

BLOCK = 512
REGULAR = (b"0", b"\0", b"7")
SKIPPED = (b"1", b"2", b"3", b"4", b"5", b"6", b"g", b"K", b"V")

#: Largest tar member read into memory (far above any face crop; shards hold ~100 KB JPEGs and JSON).
MAX_MEMBER_BYTES = 64 << 20
MAX_MEMBER_ENV = "SUPERFAN_MAX_TAR_MEMBER_BYTES"
#: Largest pax (``x``) or GNU long-name (``L``) record: a path and a few keys, never near this.
MAX_EXTENDED_BYTES = 1 << 20
_CHUNK = 1 << 20

Handler = Callable[[BaseException], bool]


class TarFormatError(BadSample):
    """The stream is not a tar archive we can read (checksum, bad number, unsupported header): nothing after
    the fault can be read, so, like a truncation, it ends the shard (and is one bad sample to a handler)."""


class OversizedMember(BadSample):
    """A tar member's header claims more bytes than the limit; nothing of that size was allocated."""


class TruncatedTar(TarFormatError):
    """The stream ended inside a member, or without the end-of-archive block after its members."""


def max_member_bytes() -> int:
    """The member size limit: ``SUPERFAN_MAX_TAR_MEMBER_BYTES`` when set, else :data:`MAX_MEMBER_BYTES`."""
    raw = os.environ.get(MAX_MEMBER_ENV, "").strip()
    if not raw:
        return MAX_MEMBER_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{MAX_MEMBER_ENV}={raw!r}: expected a positive number of bytes")
    return value


def _where(url: str) -> str:
    return f"{url}: " if url else ""


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarFormatError(f"bad number {digits[:12]!r} in a tar header (not a tar file, or corrupt)") from None


def _checksum_ok(header: bytes) -> bool:
    """POSIX: the unsigned byte sum with the checksum field read as spaces (old tars: signed bytes)."""
    try:
        stored = _octal(header[148:156])
    except TarFormatError:
        return False
    if stored == sum(header[:148]) + 8 * 32 + sum(header[156:]):
        return True
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 32
    return stored == signed


def _read_upto(fileobj: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the stream (raw streams may return short reads)."""
    data = fileobj.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = fileobj.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_exact(fileobj: IO[bytes], n: int, what: str, url: str = "", member: str = "") -> bytes:
    data = _read_upto(fileobj, n)
    if len(data) != n:
        raise TruncatedTar(
            f"{_where(url)}truncated tar stream in {what} (expected {n} bytes, got {len(data)})",
            url=url, member=member,
        )  # fmt: skip
    return data


def _skip(fileobj: IO[bytes], n: int, what: str, url: str = "", member: str = "") -> None:
    """Discard ``n`` bytes in bounded chunks (never one allocation of what a header claims)."""
    left = n
    while left > 0:
        chunk = fileobj.read(min(left, _CHUNK))
        if not chunk:
            raise TruncatedTar(
                f"{_where(url)}truncated tar stream in {what} (expected {n} bytes, got {n - left})",
                url=url, member=member,
            )  # fmt: skip
        left -= len(chunk)


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    try:
        while pos < len(data):
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            if length <= 0:
                raise ValueError(length)
            key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
            out[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError:  # also UnicodeDecodeError
        raise TarFormatError("malformed pax extended header (corrupt tar)") from None
    return out


def iter_members(fileobj: IO[bytes], *, url: str = "", max_member: int | None = None) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` for every regular file of a tar stream, in order.

    Raises :class:`OversizedMember` for a member above ``max_member`` bytes (default
    :func:`max_member_bytes`) and :class:`TruncatedTar` when the stream ends early; ``url`` only labels
    the messages.
    """
    for name, data in _members(fileobj, url, max_member_bytes() if max_member is None else max_member, None):
        assert data is not None
        yield name, data


def _members(fileobj: IO[bytes], url: str, limit: int, handler: Handler | None) -> Iterator[tuple[str, bytes | None]]:
    """:func:`iter_members`; an oversized member the ``handler`` accepts is skipped as ``(name, None)``."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    last_name, last = "", "the start of the stream"  # the last regular member, for messages
    seen = False
    while True:
        header = _read_upto(fileobj, BLOCK)
        if len(header) < BLOCK or header == b"\0" * BLOCK:
            if header and header.strip(b"\0"):
                raise TruncatedTar(f"{_where(url)}truncated tar header after {last}", url=url, member=last_name)
            if not header and seen:  # members, then the end of the stream, but no end-of-archive block
                raise TruncatedTar(
                    f"{_where(url)}truncated tar stream after {last} (no end-of-archive block)",
                    url=url, member=last_name,
                )  # fmt: skip
            return
        seen = True
        if not _checksum_ok(header):
            why = f"{_where(url)}bad tar header checksum after {last} (not a tar file, or corrupt)"
            raise TarFormatError(why, url=url, member=last_name)
        try:
            size = _octal(header[124:136])
            kind = header[156:157]
            if kind in (b"x", b"L"):
                if size > MAX_EXTENDED_BYTES:
                    raise TarFormatError(f"an extended header claims {size} bytes (corrupt tar)")
                data = _read_exact(fileobj, size, f"the extended header after {last}", url, last_name)
                _read_exact(fileobj, -size % BLOCK, f"the extended header after {last}", url, last_name)
                if kind == b"L":
                    long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                else:
                    pax = _pax_records(data)
                continue
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    size = -1
                if size < 0:
                    raise TarFormatError(f"bad pax size {pax['size'][:20]!r} (corrupt tar)")
        except TruncatedTar:
            raise
        except TarFormatError as err:
            raise TarFormatError(f"{_where(url)}{err} after {last}", url=url, member=last_name) from None
        if kind in REGULAR:
            if long_name is not None:
                name = long_name
            elif "path" in pax:
                name = pax["path"]
            else:
                name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
                if prefix:
                    name = prefix.decode("utf-8", "surrogateescape") + "/" + name
            last_name, last = name, repr(name)
            if size > limit:
                err = OversizedMember(
                    f"{_where(url)}tar member {name!r} claims {size} bytes, above the {limit}-byte limit "
                    f"({MAX_MEMBER_ENV}); corrupt or not a face shard",
                    url=url, member=name,
                )  # fmt: skip
                if handler is None or not handler(err):
                    raise err
                _skip(fileobj, size + (-size % BLOCK), f"member {last}", url, name)
                yield name, None
            else:
                data = _read_exact(fileobj, size, f"member {last}", url, name)
                _read_exact(fileobj, -size % BLOCK, f"member {last}", url, name)
                yield name, data
        elif kind in SKIPPED:
            _skip(fileobj, size + (-size % BLOCK), f"a type {kind!r} entry after {last}", url, last_name)
        else:
            why = f"{_where(url)}unsupported tar member type {kind!r} after {last}"
            raise TarFormatError(why, url=url, member=last_name)
        long_name, pax = None, {}


def _split_key(name: str) -> tuple[str, str] | None:
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1:
        return None
    return name[:dot], name[dot + 1 :]


def open_shard(url: str) -> IO[bytes]:
    """Open one shard for reading, after :func:`superfan.storage.check_url` (no command-running URLs, also
    after ``GOPEN_REWRITE``): local paths and ``s3://`` through :func:`superfan.storage.open_read` (S3 reads
    resume after a cut connection); other schemes only when the user opted in to them
    (``SUPERFAN_ALLOW_PIPE_URLS=1``), through ``webdataset.gopen``, which knows how to run them."""
    storage.check_url(url)
    scheme = url.split(":", 1)[0].lower() if ":" in url.split("/", 1)[0] else ""
    if scheme in storage.COMMAND_SCHEMES:
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    return storage.open_read(url.removeprefix("file://") if scheme == "file" else url)


def tar_samples(
    src: Iterable[dict[str, Any]],
    *,
    max_member: int | None = None,
    handler: Handler | None = None,
    opener: Callable[[str], IO[bytes] | None] = open_shard,
) -> Iterator[dict[str, Any]]:
    """WebDataset stage: ``{"url": ...}`` items -> samples ``{"__key__", "__url__", ext: bytes, ...}``.

    ``opener`` opens a shard (default :func:`open_shard`); returning ``None`` leaves the shard out (the
    stream's sha256 check under ``data.verify: skip``).

    A :class:`~superfan.errors.BadSample` (oversized member, truncated or corrupt stream) raises, unless
    ``handler`` returns ``True`` for it: then the sample it belongs to is dropped (the handler's call is the
    one count of it) and the stream goes on, with the next shard after a truncated or corrupt one.
    """
    limit = max_member_bytes() if max_member is None else max_member
    for item in src:
        url = item["url"]
        stream = opener(url)
        if stream is None:
            continue
        try:
            current: dict[str, Any] | None = None
            bad_key: str | None = None
            for name, data in _members(stream, url, limit, handler):
                split = _split_key(name)
                if split is None or split[0].rsplit("/", 1)[-1].startswith("__"):
                    continue  # no extension, or webdataset metadata (__*__)
                key, ext = split[0], split[1].lower()
                if bad_key is not None and key != bad_key:
                    bad_key = None
                if data is None:  # an oversized member the handler skipped: drop its whole sample
                    if current is not None and current["__key__"] == key:
                        current = None
                    bad_key = key
                    continue
                if key == bad_key:
                    continue
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__url__": url}
                current[ext] = data
            if current is not None:
                yield current
        except BadSample as err:
            if handler is None or not handler(err):
                raise
            # Truncated: nothing after the cut can be read. The sample being read is kept only if the cut
            # fell in a later sample's member (then all of it came before); otherwise it may lack members.
            split = _split_key(err.member) if err.member else None
            if current is not None and split is not None and split[0] != current["__key__"]:
                yield current
        finally:
            stream.close()
