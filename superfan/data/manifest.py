"""The read side of the shard contract: ``manifest.json`` parsed as one typed model, and shard URLs resolved.

A manifest is written by ``python -m shards pack`` (:mod:`shards.writer`) and read by everything else: the
stream, the step count, the preflight, ``python -m shards verify``. It is untrusted input (any file a config
names), so it is validated once, here, and a malformed one is one line naming the file and the field
(``.../manifest.json: shards.3.name: Field required``), never a ``TypeError`` deep in the stream. A shard
name must be a relative path inside the pack's prefix: a manifest cannot make a reader open
``../../elsewhere``.

Each shard keeps its ``sha256`` and ``bytes``: the stream checks every shard against them as it reads it
(:mod:`superfan.data.stream`, ``data.verify``), so the manifest digest a champion's lineage records is a
digest of the bytes it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from superfan import storage
from superfan.errors import IntegrityError, UserError

FORMAT = "superfan-shards/1"
MANIFEST = "manifest.json"
#: The crop side assumed for shards whose manifest does not say (bare ``.tar`` URLs): the packer's default.
DEFAULT_CROP = 256


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class ShardEntry(_Entry):
    """One shard as the manifest lists it."""

    name: Annotated[str, Field(min_length=1)]
    samples: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    bytes: Annotated[int, Field(ge=0)] | None = None

    @field_validator("name")
    @classmethod
    def _inside_the_pack(cls, name: str) -> str:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name or "://" in name:
            raise ValueError(f"shard name {name!r} must be a relative path inside the pack")
        return name


class CropEntry(_Entry):
    size: Annotated[int, Field(gt=0)] = DEFAULT_CROP


class Manifest(_Entry):
    """``manifest.json`` of a pack (only the fields a reader needs are checked; the rest is kept)."""

    format: str | None = None
    shards: list[ShardEntry]
    samples: Annotated[int, Field(ge=0)] | None = None
    crop: CropEntry = Field(default_factory=CropEntry)


def manifest_url(url: str) -> str:
    """The manifest of a pack prefix, or ``url`` itself when it names a ``.json`` file."""
    base = url.rstrip("/")
    return base if base.endswith(".json") else storage.join(base, MANIFEST)


def parse_manifest(text: str, url: str) -> Manifest:
    """Validate a manifest's text; any problem is one :class:`IntegrityError` line naming ``url`` and the field."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise IntegrityError(f"{url}: not a JSON manifest ({err})") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{url}: not a shard manifest (a JSON object with 'shards'; got {type(data).__name__})")
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "manifest"
        got = first.get("input")
        got_s = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise IntegrityError(f"{url}: {loc}: {msg}{got_s}") from None


def read_manifest(url: str) -> Manifest:
    """The validated manifest of a pack prefix or manifest URL (local or ``s3://``)."""
    murl = manifest_url(url)
    return parse_manifest(storage.read_text(murl), murl)


@dataclass(frozen=True)
class Shard:
    """One shard URL and what its manifest promises (``None``: a bare ``.tar`` URL, nothing promised)."""

    url: str
    sha256: str | None = None
    bytes: int | None = None
    samples: int | None = None


@dataclass(frozen=True)
class ShardSet:
    """Shard URLs in order, the sample count the manifests declare (None: a bare ``.tar`` URL was given,
    whose count is unknown without reading it), and the largest crop side the packs were made at."""

    shards: list[str]
    samples: int | None
    entries: dict[str, Shard] = field(default_factory=dict)
    crop_size: int = DEFAULT_CROP

    def entry(self, url: str) -> Shard:
        return self.entries.get(url) or Shard(url)


def _expand_braces(url: str) -> list[str]:
    import braceexpand

    return list(braceexpand.braceexpand(url))


def resolve_dataset(urls: str | Iterable[str]) -> ShardSet:
    """Expand shard URLs, brace patterns (``a-{000000..000009}.tar``), ``manifest.json`` URLs and
    directories/prefixes holding a manifest (local or s3://) into a flat list of shard URLs, in order,
    with the sample count the manifests declare. The one place that reads manifests: the stream and the
    step count both come from it, so they cannot disagree. Every URL passes
    :func:`superfan.storage.check_url` (a ``pipe:...tar`` is refused here, before any reader runs)."""
    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    entries: dict[str, Shard] = {}
    samples: int | None = 0
    crop = 0
    for item in items:
        for url in _expand_braces(str(item)):
            storage.check_url(url)
            base = url.rstrip("/")
            if base.endswith(".json") or not base.endswith(".tar"):
                murl = manifest_url(base)
                manifest = read_manifest(murl)
                root = murl.rsplit("/", 1)[0] if "/" in murl else "."
                for s in manifest.shards:
                    shard_url = storage.join(root, s.name)
                    out.append(shard_url)
                    entries[shard_url] = Shard(shard_url, s.sha256, s.bytes, s.samples)
                if samples is not None:
                    declared = manifest.samples
                    samples += declared if declared is not None else sum(s.samples for s in manifest.shards)
                crop = max(crop, manifest.crop.size)
            else:
                out.append(url)
                samples = None
    if not out:
        raise UserError(f"no shards found in {items!r}")
    return ShardSet(out, samples, entries, crop or DEFAULT_CROP)
