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
   parser than :mod:`tarfile`), reading through :mod:`superfan.storage` (local files, ``s3://`` GETs), so
   there is no local copy. Every shard the manifest lists with a sha256 is checked against it as it is read
   (``data.verify``): ``error`` (default) stops the run with one line naming the shard, ``skip`` leaves that
   shard out with a warning, ``off`` streams without checking. The shard is read whole into memory (one
   GET), hashed, then parsed, so no sample of a shard that fails the check is ever yielded.
3. **Shuffle buffer** (training only) -- ``cfg.data.shuffle_buffer`` samples, seeded.
4. **Per sample** (the only per-sample Python work): JSON parse, JPEG decode at reduced size (draft mode),
   one affine warp to 64x64 with flip/scale/rotation composed in, landmarks through the same matrix
   (:mod:`superfan.data.augment`).
   Any exception while decoding a sample (bad JSON, an image PIL cannot open, a header claiming more pixels
   than a crop of the pack's size can have, wrong landmark shapes...) makes it a bad sample: skipped, warned
   about once and counted once by ``(shard, key)`` (:mod:`superfan.data.badsamples`), never a crash.
5. **Per batch** (vectorised torch): colour/brightness/contrast jitter, degradation to 16x16 with the
   real-world mode when enabled (:mod:`superfan.data.degrade`), heatmaps at ``cfg.model.fan.heatmap_size`` /
   ``sigma`` via :func:`superfan.landmarks.points_to_heatmaps`.

   With ``data.augment_on: device`` (training streams only) steps 4 and 5 make the same random draws but no
   pixels: each face is its JPEG bytes, warp matrix and landmarks, each batch carries its degradation draws,
   and :class:`superfan.data.device_augment.DeviceAugment` makes the batch on the training device.

Determinism: every random draw comes from generators seeded by ``(seed, epoch, rank, worker)``, and the
DataLoader returns worker batches round-robin, so the same seed, epoch, rank and worker count give the same
batches. A horizontally flipped face has its yaw negated (yaw is signed: nose towards the image left).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import math
import random
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO, Any

import numpy as np
import torch

from superfan import storage
from superfan.config import Config
from superfan.data import badsamples
from superfan.data.augment import IDENTITY, apply_color_jitter, collate_face_fields, sample_params, warp_face
from superfan.data.degrade import SCALE, degrade, sample_degrade
from superfan.data.device_augment import collate_handover, handover_face
from superfan.data.manifest import ShardSet, resolve_dataset
from superfan.data.tarstream import tar_samples
from superfan.errors import BadData, BadSample, ConfigError, IntegrityError, UserError
from superfan.landmarks import NUM_LANDMARKS, points_to_heatmaps, pose_bin

log = logging.getLogger(__name__)
#: Largest shard read whole for its sha256 check (a 1,000-face shard of 256 px crops is ~25 MB).
MAX_VERIFIED_SHARD_BYTES = 1 << 30
#: Pixels a stored crop's image may claim in its header, per pixel of the pack's crop (decompression bombs).
MAX_PIXELS_PER_CROP_PIXEL = 16


def resolve_shards(urls: str | Iterable[str]) -> list[str]:
    """The shard URLs of :func:`superfan.data.manifest.resolve_dataset`."""
    return resolve_dataset(urls).shards


def batches_per_epoch(cfg: Config, world_size: int, urls: str | Iterable[str] | ShardSet | None = None) -> int:
    """Training batches (= optimiser steps) per epoch on *every* rank; the LR schedule is planned from it.

    ``data.samples_per_epoch`` is per rank. Without it an epoch is one pass over the train set
    (``urls``, default ``cfg.data.train``) shared by the ranks: the manifests' sample count split over
    ``world_size``, rounded down to whole batches.
    """
    n = cfg.data.samples_per_epoch
    if n is None:
        found = urls if isinstance(urls, ShardSet) else resolve_dataset(cfg.data.train if urls is None else urls)
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


def _yaw_of(sample: dict[str, Any]) -> float | None:
    """A raw sample's yaw for the validation cap's pose bins (None: unknown or unreadable; the sample is
    judged later, in :meth:`FaceStream.faces`)."""
    try:
        yaw = json.loads(sample["json"]).get("yaw")
        return None if yaw is None or not math.isfinite(float(yaw)) else float(yaw)
    except Exception:  # noqa: BLE001 - any malformed json member: unknown yaw here, a bad sample later
        return None


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _worker_init(_: int) -> None:
    """A forked DataLoader worker must not reuse the parent's boto3 connection pool."""
    storage.reset_clients()


class FaceStream:
    """The per-reader pipeline stages, bound to one config; a ``webdataset.DataPipeline`` chains them."""

    def __init__(
        self, found: ShardSet, cfg: Config, *, train: bool, rank: int, world_size: int, seed: int,
        epoch: int, real_world: bool, resample: bool, repeat: bool = False, limit: int | None = None,
    ) -> None:  # fmt: skip
        self.found, self.shards, self.cfg, self.train = found, found.shards, cfg, train
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.real_world, self.resample, self.repeat, self.limit = real_world, resample, repeat, limit
        # data.augment_on: device -> hand over JPEG bytes and draws; the training device makes the batch.
        self.handover = train and cfg.data.augment_on == "device"
        self.max_pixels = MAX_PIXELS_PER_CROP_PIXEL * found.crop_size**2
        self._sample_slot: tuple[int, int] | None = None
        self._capacity: int | None = None  # distinct samples this reader can read (from the manifests)
        self._yielded = 0
        # Distinct-sample accounting of this reader (superfan.data.badsamples): a sample drawn twice counts once.
        self._good: set[tuple[str, str]] = set()
        self._bad: dict[tuple[str, str], str] = {}
        self._pending: list[tuple[str, str, str]] = []  # bad samples not yet reported with a batch
        self._skipped_shards: set[str] = set()

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
            declared = [self.found.entry(u).samples for u in mine]
            self._capacity = None if None in declared else sum(declared)  # type: ignore[arg-type]
        else:
            mine = list(self.shards)
            self._sample_slot = (slot, slots)
            declared = [self.found.entry(u).samples for u in mine]
            self._capacity = None if None in declared else sum((n - slot + slots - 1) // slots for n in declared)  # type: ignore[operator]
        if not self.train:
            yield from ({"url": u} for u in mine)
            return
        rng = random.Random(repr(self._seed("shards")))
        drawn: set[str] = set()
        for _ in itertools.count() if self.repeat or self.resample else range(1):
            before = self._yielded
            if self.resample:  # a "pass" of as many draws (with replacement) as the reader has shards
                order = [mine[rng.randrange(len(mine))] for _ in mine]
            else:
                order = list(mine)
                rng.shuffle(order)
            for url in order:
                drawn.add(url)
                yield {"url": url}
            if self._yielded == before and drawn >= set(mine) and (not self.resample or self._yielded == 0):
                # Every shard was read and gave nothing: repeating would spin forever.
                why = "were all skipped (data.verify: skip)" if self._skipped_shards >= set(mine) else "hold no samples"
                raise UserError(f"rank {self.rank} (loader worker {wid}): its shards {mine} {why}")

    def split_samples(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Sample-level split when there are too few shards for a shard-level one (see the plan): every
        ``slots``-th sample *of each shard* by its index in the shard, so the readers stay disjoint whatever
        order each of them reads the shards in."""
        for sample in src:
            if self._sample_slot is None or sample["__index__"] % self._sample_slot[1] == self._sample_slot[0]:
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
            yaw = _yaw_of(sample)
            b = -1 if yaw is None else int(pose_bin(yaw, edges))
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
            where = (str(s.get("__url__", "?")), str(s.get("__key__", "?")))
            if where in self._bad:
                continue  # drawn again by a resampled stream: skipped, but warned about and counted once
            params = sample_params(rng, self.cfg.augment) if self.train else IDENTITY
            try:
                face = self._face(s, params)
            except Exception as err:  # noqa: BLE001 - whatever decoding a sample raises, it is one bad sample
                self._bad_sample(*where, err)
                continue
            self._good.add(where)
            face["bad_samples"], self._pending = self._pending, []
            yield face

    def _face(self, s: dict[str, Any], params: Any) -> dict[str, Any]:
        """Decode and warp one sample; any defect raises (and the sample is skipped and counted)."""
        if "hr.jpg" not in s:
            found = sorted(k for k in s if not k.startswith("__"))
            raise KeyError(f"no hr.jpg member (found {', '.join(found) or 'nothing'})")
        if "json" not in s:
            raise ValueError("no json member")
        meta = json.loads(s["json"])
        if not isinstance(meta, dict):
            raise ValueError(f"the json member is not an object (got {type(meta).__name__})")
        lm = meta.get("landmarks")
        pts = None if lm is None else np.asarray(lm, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
        if pts is not None and not np.isfinite(pts).all():
            raise ValueError("landmarks hold NaN/inf")
        box = tuple(float(v) for v in meta["bbox"])
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"bbox must be 4 finite numbers x0 < x1, y0 < y1 (got {meta['bbox']!r})")
        if self.handover:
            face = handover_face(s["hr.jpg"], box, pts, params, self.cfg.augment, max_pixels=self.max_pixels)
        else:
            img, out_pts = warp_face(s["hr.jpg"], box, pts, params, self.cfg.augment, max_pixels=self.max_pixels)
            face = {"img": img, "landmarks": np.full((NUM_LANDMARKS, 2), np.nan) if out_pts is None else out_pts}
        yaw = meta.get("yaw")
        yaw = math.nan if yaw is None else float(yaw)
        if not math.isfinite(yaw) and meta.get("yaw") is not None:
            raise ValueError(f"yaw {meta.get('yaw')!r} is not a finite number")
        return {
            **face,
            "jitter": params.jitter,
            "yaw": -yaw if params.flip else yaw,
            "pose_source": meta.get("pose_source") if isinstance(meta.get("pose_source"), str) else None,
            "key": s["__key__"],
            "url": s.get("__url__", "?"),
        }

    def _bad_sample(self, url: str, key: str, err: BaseException) -> bool:
        """Skip one bad sample: a warning naming shard and key, counted once (``skipped_samples`` travels with
        the next batch), and a stop once this reader alone shows the data is bad (:func:`badsamples.too_bad`
        over the distinct samples it read; the training loop makes the same check over all readers)."""
        why = badsamples.reason(err)
        self._bad[(url, key)] = why
        self._pending.append((url, key, why))
        log.warning("skipped bad sample %s in %s: %s", key, url, why)
        bad, total = len(self._bad), len(self._bad) + len(self._good)
        limit = self.cfg.data.max_bad_fraction
        read_all = self._capacity is not None and total >= self._capacity  # the whole share: no sampling error
        enough = total >= badsamples.MIN_SAMPLES
        if (read_all and bad > limit * total) or (enough and badsamples.too_bad(bad, total, limit)):
            (first_url, first_key), first_why = next(iter(self._bad.items()))
            raise BadData(badsamples.stop_message(bad, total, limit, f"{first_key} in {first_url}: {first_why}"))
        return True  # webdataset's handler convention: go on

    def read_tar(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Tar expansion; an oversized or truncated member is one bad sample, not a failed run."""

        def handler(err: BaseException) -> bool:
            if not isinstance(err, BadSample):
                return False
            member = getattr(err, "member", "") or "(the start of the shard)"
            return self._bad_sample(getattr(err, "url", "") or "?", member, err)

        for item in src:
            for index, sample in enumerate(tar_samples([item], handler=handler, opener=self._open_shard)):
                sample["__index__"] = index
                yield sample

    def _open_shard(self, url: str) -> IO[bytes] | None:
        """A shard to read: checked against its manifest's sha256 and size first (``data.verify``), or
        ``None`` to leave it out (``skip``). Shards the manifest says nothing about stream unchecked."""
        from superfan.data.tarstream import open_shard

        entry = self.found.entry(url)
        mode = self.cfg.data.verify
        if mode == "off" or entry.sha256 is None or entry.bytes is None:
            return open_shard(url)
        if url in self._skipped_shards:
            return None
        if entry.bytes > MAX_VERIFIED_SHARD_BYTES:
            raise ConfigError(
                f"{url}: {entry.bytes} bytes, above the {MAX_VERIFIED_SHARD_BYTES} a shard may have to be "
                "checked in memory; repack with a smaller --shard-size, or set data.verify: off"
            )
        with open_shard(url) as f:
            data = f.read(entry.bytes + 1)  # one byte more than promised is enough to see a longer file
        digest = hashlib.sha256(data).hexdigest()
        if len(data) == entry.bytes and digest == entry.sha256:
            return io.BytesIO(data)
        msg = (
            f"{url}: does not match its manifest (sha256 {digest[:12]}..., {len(data)} bytes; the manifest "
            f"says {entry.sha256[:12]}..., {entry.bytes} bytes): the shard changed after it was packed"
        )
        if mode == "skip":
            self._skipped_shards.add(url)
            log.warning("skipped shard %s (data.verify: skip)", msg)
            return None
        raise IntegrityError(f"{msg}; repack it, or set data.verify: skip to train without it")

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        imgs = torch.from_numpy(np.stack([s["img"] for s in samples]))
        lms = torch.from_numpy(np.stack([s["landmarks"] for s in samples]).astype(np.float32))
        return {
            "hr": imgs.permute(0, 3, 1, 2).float().div_(255.0),
            "landmarks": lms,
            "has_landmarks": torch.isfinite(lms).all(dim=2).all(dim=1),
            **collate_face_fields(samples),
        }

    # 5. per batch: jitter, degradation, heatmaps
    def batches(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng(self._seed("degrade"))
        fan = self.cfg.model.fan
        size = self.cfg.augment.hr_size
        for b in src:
            if self.handover:  # the same draws as degrade() below makes; the device applies them
                lr_hw = (size // SCALE, size // SCALE)
                b["degrade"] = sample_degrade(rng, len(b["key"]), lr_hw, self.cfg.degrade, self.real_world)
                yield b
                continue
            jitter = b.pop("jitter")
            hr = apply_color_jitter(b["hr"], jitter) if self.train else b["hr"]
            lr = degrade(hr, self.cfg.degrade, rng, real_world=self.real_world)
            heat = points_to_heatmaps(b["landmarks"], size, fan.heatmap_size, fan.sigma)
            yield {"hr": hr, "lr": lr, "landmarks": b["landmarks"], "heatmaps": heat,
                   "has_landmarks": b["has_landmarks"], "yaw": b["yaw"], "pose_source": b["pose_source"],
                   "key": b["key"], "url": b["url"], "bad_samples": b["bad_samples"]}  # fmt: skip

    def pipeline(self, batches_per_worker: int | None) -> Any:
        import webdataset as wds

        collate = collate_handover if self.handover else self.collate
        stages = [
            self.shard_urls,
            self.read_tar,
            self.split_samples,
            self.cap,
            self.shuffle,
            self.faces,
            wds.batched(self.cfg.data.batch_size, collation_fn=collate, partial=not self.train),
            self.batches,
        ]
        pipe = wds.DataPipeline(*stages)
        if batches_per_worker is not None:
            pipe = pipe.with_epoch(batches_per_worker)
        return pipe


def _worker_message(err: BaseException) -> str:
    """The original one-line message of an error a DataLoader worker raised (torch wraps it as "Caught X in
    DataLoader worker process 0. Original Traceback ... X: message")."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    name = type(err).__name__
    for line in reversed(text.strip().splitlines()):
        head, sep, rest = line.partition(": ")
        if sep and head.rsplit(".", 1)[-1] == name:
            return rest
    return text.strip().splitlines()[-1]


class Loader:
    """An iterable of contract batches: a torch DataLoader over the pipeline, cut to an exact batch count."""

    def __init__(self, loader: torch.utils.data.DataLoader, batches: int | None) -> None:
        self.loader, self.batches = loader, batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = iter(self.loader)
        try:
            yield from (it if self.batches is None else islice(it, self.batches))
        except UserError as err:  # from a DataLoader worker: torch re-raises it with the worker's traceback inside
            raise type(err)(_worker_message(err)) from None

    def __len__(self) -> int:
        if self.batches is None:
            raise TypeError("an un-cut stream (one pass over the shards) has no known length")
        return self.batches


def make_loader(
    urls: str | Iterable[str] | ShardSet,
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
    ``cfg.data.val_samples``. ``num_workers`` overrides ``cfg.data.num_workers``. ``urls`` may be a
    :class:`~superfan.data.manifest.ShardSet` already resolved, so a run reads each manifest once.
    """
    found = urls if isinstance(urls, ShardSet) else resolve_dataset(urls)
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside world_size {world_size}")
    seed = cfg.data.seed if seed is None else int(seed)
    nw = cfg.data.num_workers if num_workers is None else int(num_workers)
    resample = train and cfg.data.samples_per_epoch is not None
    total: int | None = None
    if train and (resample or found.samples or world_size > 1):
        total = batches_per_epoch(cfg, world_size, found)
    per_worker = None if total is None else math.ceil(total / max(nw, 1))
    rw = (cfg.degrade.real_world if train else False) if real_world is None else bool(real_world)
    stream = FaceStream(
        found, cfg, train=train, rank=rank, world_size=world_size, seed=seed, epoch=epoch, real_world=rw,
        resample=resample, repeat=total is not None, limit=None if train else cfg.data.val_samples,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        stream.pipeline(per_worker), batch_size=None, num_workers=nw, worker_init_fn=_worker_init,
        persistent_workers=False, prefetch_factor=4 if nw > 0 else None,
        multiprocessing_context="fork" if nw > 0 and sys.platform == "linux" else None,
    )  # fmt: skip
    return Loader(loader, total)
