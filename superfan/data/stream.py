"""Shards (local or s3://) -> augmented, degraded batches in the contract of docs/contracts.md.

Pipeline (one ``webdataset.DataPipeline`` per DataLoader worker, all seeded):

1. **Shard plan** -- the shard list is split by Ray Train rank, then by DataLoader worker (node splitter then
   worker splitter). When there are fewer shards than ``world_size * num_workers`` every reader opens all
   shards and keeps every n-th sample instead, so the readers stay disjoint even with one shard.
   Training streams never run dry: with ``samples_per_epoch`` they resample shards with replacement; with
   ``samples_per_epoch=None`` they make shuffled passes over the rank's shards, one after another. Either
   way every rank is cut to exactly :func:`batches_per_epoch` batches, the same number on every rank
   whatever the shard sizes (a rank with fewer samples wraps into its next pass), so DDP ranks never
   disagree on how many gradient all-reduces an epoch has. Validation is one ordered pass.
2. **Tar expansion** -- :func:`superfan.data.tarstream.tar_samples` (webdataset's grouping, a leaner header
   parser than :mod:`tarfile`); URLs open through ``webdataset.gopen``, ``s3://`` through
   :mod:`superfan.storage` (a streaming GET; see :func:`register_s3_handler`), so there is no local copy.
3. **Shuffle buffer** (training only) -- ``cfg.data.shuffle_buffer`` samples, seeded.
4. **Per sample** (the only per-sample Python work): JSON parse, JPEG decode at reduced size (draft mode),
   one affine warp to 64x64 with flip/scale/rotation composed in, landmarks through the same matrix
   (:mod:`superfan.data.augment`).
5. **Per batch** (vectorised torch): colour/brightness/contrast jitter, degradation to 16x16 with the
   real-world mode when enabled (:mod:`superfan.data.degrade`), heatmaps at ``cfg.model.fan.heatmap_size`` /
   ``sigma`` via :func:`superfan.faces.points_to_heatmaps`.

Determinism: every random draw comes from generators seeded by ``(seed, epoch, rank, worker)``, and the
DataLoader returns worker batches round-robin, so the same seed, epoch, rank and worker count give the same
batches. A horizontally flipped face has its yaw negated (yaw is signed: nose towards the image left).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch

from superfan import storage
from superfan.config import Config
from superfan.data.augment import IDENTITY, apply_color_jitter, sample_params, warp_face
from superfan.data.degrade import degrade
from superfan.data.tarstream import tar_samples
from superfan.errors import BadData, BadSample, ConfigError, UserError
from superfan.faces import NUM_LANDMARKS, points_to_heatmaps, pose_bin

log = logging.getLogger(__name__)
#: Samples a reader must have read before the bad fraction can stop it.
BAD_FRACTION_MIN_SAMPLES = 32

# ------------------------------------------------------------------------------------------- URLs, S3


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> Any:
    """webdataset gopen handler: stream an ``s3://`` object through :func:`superfan.storage.open_read`."""
    if mode[0] != "r":
        raise ValueError(f"{url}: the s3 handler only reads")
    return storage.open_read(url)


def register_s3_handler() -> None:
    """Make ``webdataset.gopen`` open ``s3://`` with our storage layer (endpoint/credentials from env)."""

    sys.modules["webdataset.gopen"].gopen_schemes["s3"] = _gopen_s3


def _expand_braces(url: str) -> list[str]:
    import braceexpand

    return list(braceexpand.braceexpand(url))


@dataclass(frozen=True)
class ShardSet:
    """Shard URLs in order, and the number of samples their manifests declare (None: a bare ``.tar``
    URL was given, whose count is unknown without reading it)."""

    shards: list[str]
    samples: int | None


def resolve_dataset(urls: str | Iterable[str]) -> ShardSet:
    """Expand shard URLs, brace patterns (``a-{000000..000009}.tar``), ``manifest.json`` URLs and
    directories/prefixes holding a manifest (local or s3://) into a flat list of shard URLs, in order,
    with the sample count the manifests declare. The one place that reads manifests: the stream and the
    step count (:func:`batches_per_epoch`) both come from it, so they cannot disagree."""
    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    samples: int | None = 0
    for item in items:
        for url in _expand_braces(str(item)):
            base = url.rstrip("/")
            if base.endswith(".json") or not base.endswith(".tar"):
                manifest = base if base.endswith(".json") else storage.join(base, "manifest.json")
                try:
                    data = json.loads(storage.read_text(manifest))
                except json.JSONDecodeError as err:
                    raise UserError(f"{manifest}: not a JSON manifest ({err})") from None
                root = manifest.rsplit("/", 1)[0] if "/" in manifest else "."
                shards = data.get("shards", [])
                out += [storage.join(root, s["name"]) for s in shards]
                if samples is not None:
                    samples += int(data.get("samples", sum(int(s.get("samples", 0)) for s in shards)))
            else:
                out.append(url)
                samples = None
    if not out:
        raise UserError(f"no shards found in {items!r}")
    return ShardSet(out, samples)


def resolve_shards(urls: str | Iterable[str]) -> list[str]:
    """The shard URLs of :func:`resolve_dataset`."""
    return resolve_dataset(urls).shards


def batches_per_epoch(cfg: Config, world_size: int, urls: str | Iterable[str] | None = None) -> int:
    """Training batches (= optimiser steps) per epoch on *every* rank; the LR schedule is planned from it.

    ``data.samples_per_epoch`` is per rank. Without it an epoch is one pass over the train set
    (``urls``, default ``cfg.data.train``) shared by the ranks: the manifests' sample count split over
    ``world_size``, rounded down to whole batches.
    """
    n = cfg.data.samples_per_epoch
    if n is None:
        found = resolve_dataset(cfg.data.train if urls is None else urls)
        if not found.samples:
            raise ConfigError(
                "data.samples_per_epoch is unset and the train set's size is unknown (bare .tar URLs or an "
                "empty manifest): give a manifest or a prefix holding one, or set data.samples_per_epoch"
            )
        n = found.samples // world_size
    return max(1, n // cfg.data.batch_size)


# ------------------------------------------------------------------------------------------- the pipeline


def _round_robin(lists: list[list[Any]]) -> Iterator[Any]:
    """One from each list in turn, skipping lists that ran out: equal shares where the lists allow."""
    for i in range(max((len(x) for x in lists), default=0)):
        for x in lists:
            if i < len(x):
                yield x[i]


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _worker_init(_: int) -> None:
    """A forked DataLoader worker must not reuse the parent's boto3 connection pool."""
    clear = getattr(storage._client, "cache_clear", None)
    if clear is not None:
        clear()


class FaceStream:
    """The per-reader pipeline stages, bound to one config; a ``webdataset.DataPipeline`` chains them."""

    def __init__(
        self, shards: list[str], cfg: Config, *, train: bool, rank: int, world_size: int, seed: int,
        epoch: int, real_world: bool, resample: bool, repeat: bool = False, limit: int | None = None,
    ) -> None:  # fmt: skip
        self.shards, self.cfg, self.train = shards, cfg, train
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.real_world, self.resample, self.repeat, self.limit = real_world, resample, repeat, limit
        self._sample_slot: tuple[int, int] | None = None
        self._yielded = self._count = 0
        self._seen = self._skipped = self._pending = 0  # bad-sample accounting of this reader
        self._first_bad = ""

    def _seed(self, tag: str) -> list[int]:
        wid, _ = _worker()
        return [abs(int(self.seed)), int(self.epoch), int(self.rank), wid, sum(map(ord, tag))]

    # 1. shard plan (node splitter + worker splitter)
    def shard_urls(self) -> Iterator[dict[str, str]]:
        wid, nw = _worker()
        slots, slot = self.world_size * nw, self.rank * nw + wid
        if len(self.shards) >= slots:
            mine = self.shards[self.rank :: self.world_size][wid::nw]
            self._sample_slot = None
        else:
            mine = list(self.shards)
            self._sample_slot = (slot, slots)
        if not self.train:
            yield from ({"url": u} for u in mine)
            return
        rng = random.Random(repr(self._seed("shards")))
        if self.resample:
            while True:
                yield {"url": mine[rng.randrange(len(mine))]}
        for _ in itertools.count() if self.repeat else range(1):
            before, self._count = self._yielded, 0
            order = list(mine)
            rng.shuffle(order)
            yield from ({"url": u} for u in order)
            if self._yielded == before:  # a whole pass gave nothing: repeating would spin forever
                wid, _ = _worker()
                raise UserError(f"rank {self.rank} (loader worker {wid}): its shards {mine} hold no samples")

    def split_samples(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Sample-level split when there are too few shards for a shard-level one (see the plan)."""
        for sample in src:
            count, self._count = self._count, self._count + 1  # restarted by shard_urls at each pass
            if self._sample_slot is None or count % self._sample_slot[1] == self._sample_slot[0]:
                self._yielded += 1
                yield sample

    def cap(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Validation cap (``cfg.data.val_samples``), split evenly over ranks and workers, and stratified by
        pose: equal counts per yaw bin (``cfg.eval.pose_bins``) where the bins have them, the rest filled from
        the bins that have more, faces of unknown yaw last. The first N faces of a reader would be whatever
        pose its first shards hold (300W is mostly frontal), and the balanced AUC the sweeps promote on
        would rest on a handful of profile faces. Memory: at most ``bins x cap`` raw samples per reader."""
        if self.limit is None:
            yield from src
            return
        _, nw = _worker()
        quota = math.ceil(self.limit / (self.world_size * nw))
        edges = tuple(self.cfg.eval.pose_bins)
        per_bin = math.ceil(quota / len(edges))
        buckets: list[list[dict[str, Any]]] = [[] for _ in range(len(edges) + 1)]  # last: unknown yaw
        for sample in src:
            try:
                yaw = json.loads(sample["json"]).get("yaw")
            except (ValueError, KeyError, AttributeError):
                yaw = None
            b = -1 if yaw is None else int(pose_bin(float(yaw), edges))
            bucket = buckets[b]  # -1 = the unknown-yaw bucket
            if len(bucket) < quota:
                bucket.append(sample)
            if all(len(x) >= per_bin for x in buckets[:-1]):
                break  # every bin holds its equal share: the rest of the pass cannot change the pick
        yield from islice(_round_robin(buckets[:-1]), quota)
        taken = min(quota, sum(len(x) for x in buckets[:-1]))
        yield from islice(buckets[-1], max(0, quota - taken))

    def shuffle(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """webdataset's public curried ``shuffle`` filter (a buffer of ``shuffle_buffer`` samples), seeded."""
        import webdataset as wds

        n = self.cfg.data.shuffle_buffer
        if not self.train or n <= 1:
            yield from src
            return
        yield from wds.shuffle(n, initial=min(n, 100), rng=random.Random(repr(self._seed("shuffle"))))(src)

    # 4. per sample: decode + one warp + landmarks
    def faces(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng(self._seed("augment"))
        for s in src:
            params = sample_params(rng, self.cfg.augment) if self.train else IDENTITY
            try:
                face = self._face(s, params)
            except (ValueError, TypeError, KeyError, OSError) as err:  # PIL, json and numpy raise these
                self._bad(s.get("__url__", "?"), s.get("__key__", "?"), err)
                continue
            self._seen += 1
            face["skipped"], self._pending = self._pending, 0
            yield face

    def _face(self, s: dict[str, Any], params: Any) -> dict[str, Any]:
        """Decode and warp one sample; any defect raises (and the sample is skipped and counted)."""
        if "hr.jpg" not in s:
            found = sorted(k for k in s if not k.startswith("__"))
            raise KeyError(f"no hr.jpg member (found {', '.join(found) or 'nothing'})")
        meta = json.loads(s["json"])
        lm = meta.get("landmarks")
        pts = None if lm is None else np.asarray(lm, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
        if pts is not None and not np.isfinite(pts).all():
            raise ValueError("landmarks hold NaN/inf")
        img, out_pts = warp_face(s["hr.jpg"], tuple(meta["bbox"]), pts, params, self.cfg.augment)
        yaw = meta.get("yaw")
        yaw = math.nan if yaw is None else (-float(yaw) if params.flip else float(yaw))
        return {
            "img": img,
            "landmarks": np.full((NUM_LANDMARKS, 2), np.nan) if out_pts is None else out_pts,
            "jitter": params.jitter,
            "yaw": yaw,
            "pose_source": meta.get("pose_source"),
            "key": s["__key__"],
        }

    def _bad(self, url: str, key: str, err: BaseException) -> bool:
        """Skip one bad sample: a warning naming shard and key, a count that travels with the next batch
        (``skipped_samples``), and a stop once more than ``data.max_bad_fraction`` of what this reader read
        was bad (judged after a few dozen samples, so one early bad face does not stop a run)."""
        self._skipped += 1
        self._pending += 1
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.warning("skipped bad sample %s in %s: %s", key, url, reason)
        self._first_bad = self._first_bad or f"{key} in {url}: {reason}"
        total = self._seen + self._skipped
        limit = self.cfg.data.max_bad_fraction
        if total >= BAD_FRACTION_MIN_SAMPLES and self._skipped > limit * total:
            raise BadData(
                f"{self._skipped} of {total} samples read could not be used (above data.max_bad_fraction "
                f"{limit:g}): the data is bad, not a sample; first: {self._first_bad}"
            )
        return True  # webdataset's handler convention: go on

    def read_tar(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Tar expansion; an oversized or truncated member is one bad sample, not a failed run."""

        def handler(err: BaseException) -> bool:
            if not isinstance(err, BadSample):
                return False
            return self._bad(getattr(err, "url", "") or "?", getattr(err, "member", "") or "?", err)

        yield from tar_samples(src, handler=handler)

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        imgs = torch.from_numpy(np.stack([s["img"] for s in samples]))
        lms = torch.from_numpy(np.stack([s["landmarks"] for s in samples]).astype(np.float32))
        return {
            "hr": imgs.permute(0, 3, 1, 2).float().div_(255.0),
            "landmarks": lms,
            "has_landmarks": torch.isfinite(lms).all(dim=2).all(dim=1),
            "yaw": torch.tensor([s["yaw"] for s in samples], dtype=torch.float32),
            "pose_source": [s["pose_source"] for s in samples],
            "key": [s["key"] for s in samples],
            "jitter": torch.tensor([s["jitter"] for s in samples], dtype=torch.float32),
            "skipped_samples": sum(int(s["skipped"]) for s in samples),
        }

    # 5. per batch: jitter, degradation, heatmaps
    def batches(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng(self._seed("degrade"))
        fan = self.cfg.model.fan
        size = self.cfg.augment.hr_size
        for b in src:
            jitter = b.pop("jitter")
            hr = apply_color_jitter(b["hr"], jitter) if self.train else b["hr"]
            lr = degrade(hr, self.cfg.degrade, rng, real_world=self.real_world)
            heat = points_to_heatmaps(b["landmarks"], size, fan.heatmap_size, fan.sigma)
            yield {"hr": hr, "lr": lr, "landmarks": b["landmarks"], "heatmaps": heat,
                   "has_landmarks": b["has_landmarks"], "yaw": b["yaw"], "pose_source": b["pose_source"],
                   "key": b["key"], "skipped_samples": b["skipped_samples"]}  # fmt: skip

    def pipeline(self, batches_per_worker: int | None) -> Any:
        import webdataset as wds

        register_s3_handler()
        stages = [
            self.shard_urls,
            self.read_tar,
            self.split_samples,
            self.cap,
            self.shuffle,
            self.faces,
            wds.batched(self.cfg.data.batch_size, collation_fn=self.collate, partial=not self.train),
            self.batches,
        ]
        pipe = wds.DataPipeline(*stages)
        if batches_per_worker is not None:
            pipe = pipe.with_epoch(batches_per_worker)
        return pipe


class Loader:
    """An iterable of contract batches: a torch DataLoader over the pipeline, cut to an exact batch count."""

    def __init__(self, loader: torch.utils.data.DataLoader, batches: int | None) -> None:
        self.loader, self.batches = loader, batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = iter(self.loader)
        return it if self.batches is None else islice(it, self.batches)

    def __len__(self) -> int:
        if self.batches is None:
            raise TypeError("an un-cut stream (one pass over the shards) has no known length")
        return self.batches


def make_loader(
    urls: str | Iterable[str],
    cfg: Config,
    *,
    train: bool,
    rank: int = 0,
    world_size: int = 1,
    seed: int | None = None,
    epoch: int = 0,
    num_workers: int | None = None,
    real_world: bool | None = None,
) -> Loader:
    """Batches per docs/contracts.md from shard/manifest URLs (see the module docstring for the stages).

    Training: shuffled, augmented, never running dry, cut to :func:`batches_per_epoch` batches, the same
    count on every rank (resampled shards with ``cfg.data.samples_per_epoch``; back-to-back shuffled passes
    over the rank's shards when it is None). A training set of bare ``.tar`` URLs without a sample count
    is one pass of unknown length and is only allowed at ``world_size`` 1. Validation: one ordered pass,
    no augmentation, no real-world degradation unless ``real_world=True``, capped at
    ``cfg.data.val_samples``. ``num_workers`` overrides ``cfg.data.num_workers``.
    """
    found = resolve_dataset(urls)
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside world_size {world_size}")
    seed = cfg.data.seed if seed is None else int(seed)
    nw = cfg.data.num_workers if num_workers is None else int(num_workers)
    resample = train and cfg.data.samples_per_epoch is not None
    total: int | None = None
    if train and (resample or found.samples or world_size > 1):
        total = batches_per_epoch(cfg, world_size, urls)
    per_worker = None if total is None else math.ceil(total / max(nw, 1))
    rw = (cfg.degrade.real_world if train else False) if real_world is None else bool(real_world)
    stream = FaceStream(
        found.shards, cfg, train=train, rank=rank, world_size=world_size, seed=seed, epoch=epoch, real_world=rw,
        resample=resample, repeat=total is not None, limit=None if train else cfg.data.val_samples,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        stream.pipeline(per_worker), batch_size=None, num_workers=nw, worker_init_fn=_worker_init,
        persistent_workers=False, prefetch_factor=4 if nw > 0 else None,
        multiprocessing_context="fork" if nw > 0 and sys.platform == "linux" else None,
    )  # fmt: skip
    return Loader(loader, total)
