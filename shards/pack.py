"""``pack``: raw dataset -> cropped, annotated samples -> tar shards + manifest at DEST.

The main process lists the dataset (cheap, deterministic), shuffles it with ``--seed`` (so each shard mixes
sub-sets and a ``--limit`` subset is a random sample rather than the first folder), and hands items to
``--workers`` processes that read annotations, decode images fully, fit poses, crop and JPEG-encode.
Results come back in order (``imap``), so the same inputs and seed give byte-identical shards. The main
process alone writes shards and the manifest (see :mod:`shards.writer`).

Bad input never stops a pack: each bad face is skipped and counted by reason (manifest ``rejected``, with
a few ``rejected_examples``, and the printed summary). The pack fails (one line, non-zero exit) only when
DEST is unusable or nothing at all was packed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from shards.crop import DEFAULT_CONTEXT, DEFAULT_SIZE, crop_face
from shards.profile import ProfileOptions
from shards.readers import REASONS, RawRecord, Reader, Rejection, make_reader
from shards.writer import FORMAT, ShardWriter, manifest_url, read_manifest, write_manifest
from superfan import storage
from superfan.errors import StorageError, UserError
from superfan.landmarks import landmark_box
from superfan.records import now_iso

JPEG_QUALITY = 95
MAX_EXAMPLES_PER_REASON = 10
#: A face box must overlap the photo by at least this fraction of its area ("face outside image").
MIN_INSIDE = 0.5


@dataclass
class PackOptions:
    format: str
    src: str
    dest: str
    split: str = "train"
    shard_size: int = 1000
    workers: int = 0  #: 0 = one per CPU
    limit: int | None = None
    overwrite: bool = False
    crop_size: int = DEFAULT_SIZE
    context: float = DEFAULT_CONTEXT
    min_face: float = 16.0
    seed: int = 0
    dataset: str | None = None
    pose_file: str | None = None
    pose_source: str | None = None
    progress: bool = True
    jpeg_quality: int = JPEG_QUALITY
    #: keep only faces whose key hashes into [lo, hi) (see :func:`key_fraction`): a stable train/val split
    hash_range: tuple[float, float] | None = None
    #: pack profiled views of each face instead of the face (:mod:`shards.profile`); None: the faces as they are
    profile: ProfileOptions | None = None
    #: "2d-3d": a silhouette ("2d") jaw is moved to the fitted 3D contour (:mod:`shards.convention`);
    #: "as-annotated": landmarks as the dataset gives them. Either way each sample records its convention.
    jaw: str = "as-annotated"


@dataclass
class PackResult:
    manifest: dict[str, Any]
    url: str
    seconds: float
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def samples(self) -> int:
        return int(self.manifest["samples"])


# ------------------------------------------------------------------------------------------ worker side

_READER: Reader | None = None
_OPTS: PackOptions | None = None


def _init_worker(reader: Reader, opts: PackOptions) -> None:
    """Pool initializer: the reader and options are pickled once per worker, not once per item."""
    global _READER, _OPTS
    _READER, _OPTS = reader, opts
    if opts.profile is not None:  # the renderer's torch ops: one thread per packing process, not one per core
        import torch

        torch.set_num_threads(1)
    storage.reset_clients()  # a forked child must not reuse the parent's boto3 connection pool


def _load_image(image: str | bytes | np.ndarray) -> Image.Image:
    """Fully decoded RGB image; raises ``_Reject`` for missing or truncated/corrupt files."""
    if isinstance(image, np.ndarray):
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if isinstance(image, str):
        try:
            image = storage.read_bytes(image)
        except UserError:
            raise _Reject(REASONS["no_image"]) from None
    try:
        img = Image.open(io.BytesIO(image))
        img.load()  # decode everything now: truncated files fail here, not in training
        return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise _Reject(REASONS["bad_image"]) from None


class _Reject(Exception):  # noqa: N818
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def make_sample(rec: RawRecord, image: Image.Image, opts: PackOptions) -> tuple[bytes, dict[str, Any]]:
    """Validate, pose, crop and encode one face -> (JPEG bytes, the sample's json); raises ``_Reject``."""
    if rec.landmarks is not None:
        if not np.isfinite(rec.landmarks).all():
            raise _Reject(REASONS["nan"])
        box = landmark_box(rec.landmarks)
    elif rec.box is not None:
        box = tuple(float(v) for v in rec.box)  # type: ignore[assignment]
        if not all(math.isfinite(v) for v in box):
            raise _Reject(REASONS["nan"])
    else:
        raise _Reject(REASONS["bad_annotation"])
    x0, y0, x1, y1 = box
    if max(x1 - x0, y1 - y0) < opts.min_face:
        raise _Reject(REASONS["small"])
    w, h = image.size
    area = max(x1 - x0 + 1, 1e-6) * max(y1 - y0 + 1, 1e-6)
    inside = max(0.0, min(x1 + 1, w) - max(x0, 0)) * max(0.0, min(y1 + 1, h) - max(y0, 0))
    if inside / area < MIN_INSIDE:
        raise _Reject(REASONS["outside"])

    pitch, yaw, roll, pose_source = rec.pitch, rec.yaw, rec.roll, rec.pose_source
    if yaw is None and rec.landmarks is not None:
        from superfan.pose import fit_pose

        try:
            fit = fit_pose(rec.landmarks)
            pitch, yaw, roll, pose_source = fit["pitch"], fit["yaw"], fit["roll"], "estimated"
        except ValueError:
            pass

    crop, pts, cbox = crop_face(image, box, rec.landmarks, opts.crop_size, opts.context)  # type: ignore[arg-type]
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=opts.jpeg_quality)

    def r(v: float | None) -> float | None:
        return None if v is None else round(float(v), 3)

    meta = {
        "landmarks": None if pts is None else [[round(float(x), 3), round(float(y), 3)] for x, y in pts],
        "landmark_convention": None if pts is None else rec.landmark_convention,
        "visible": rec.visible,
        "yaw": r(yaw),
        "pitch": r(pitch),
        "roll": r(roll),
        "pose_source": pose_source if yaw is not None else None,
        "dataset": rec.dataset,
        "bbox": [round(v, 3) for v in cbox],
        **(rec.extra or {}),
    }
    return buf.getvalue(), meta


#: ("ok", key, jpg, json bytes) | ("rej", source, reason, None) | ("out", key, None, None): outside hash_range
Outcome = tuple[str, str, Any, Any]


def key_fraction(key: str) -> float:
    """A sample key's stable position in [0, 1): the same on every machine, run and worker count, so
    ``--hash-range 0:0.8`` and ``--hash-range 0.8:1`` split a dataset into disjoint train/val packs."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def process_item(item: Any) -> list[Outcome]:
    """Worker entry: one dataset item -> samples and rejections, in the reader's order."""
    assert _READER is not None and _OPTS is not None
    out: list[Outcome] = []
    images: dict[int | str, Image.Image] = {}
    try:
        records = list(_READER.read(item))
    except Exception as err:  # noqa: BLE001 - a reader failing on odd input must not stop the pack
        return [("rej", repr(item)[:200], f"{REASONS['bad_annotation']} ({type(err).__name__})", None)]
    for rec in records:
        if isinstance(rec, Rejection):
            out.append(("rej", rec.source, rec.reason, None))
            continue
        if _OPTS.hash_range is not None and not _OPTS.hash_range[0] <= key_fraction(rec.key) < _OPTS.hash_range[1]:
            out.append(("out", rec.key, None, None))
            continue
        if rec.landmarks is not None and rec.landmark_convention is None:
            rec.landmark_convention = _READER.landmark_convention
        try:
            ref = rec.image if isinstance(rec.image, str) else id(rec.image)
            if ref not in images:
                images[ref] = _load_image(rec.image)
            faces = _profiled(rec, images[ref], _OPTS) if _OPTS.profile else [(_with_jaw(rec, _OPTS), images[ref])]
            samples = [(face.key, make_sample(face, image, _OPTS)) for face, image in faces]
        except _Reject as rej:
            out.append(("rej", rec.source, rej.reason, None))
            continue
        out += [("ok", key, jpg, json.dumps(meta, separators=(",", ":")).encode()) for key, (jpg, meta) in samples]
    return out


def _with_jaw(rec: RawRecord, opts: PackOptions) -> RawRecord:
    """``rec`` with its silhouette jaw on the fitted 3D contour when ``--jaw 2d-3d`` asks for it."""
    from shards.convention import TWO_D, TWO_D_3D_FITTED, jaw_to_2d3d

    if opts.jaw != "2d-3d" or rec.landmark_convention != TWO_D or rec.landmarks is None:
        return rec
    if not np.isfinite(rec.landmarks).all():
        return rec  # make_sample rejects it, naming the reason
    try:
        moved = jaw_to_2d3d(rec.landmarks)
    except ValueError:
        return rec
    return dataclasses.replace(rec, landmarks=moved, landmark_convention=TWO_D_3D_FITTED)


#: Context of the working crop a face is profiled in (wider than the packed crop's 2.4: a face turned to 90
#: degrees moves its landmark box, and the packed crop is then cut around the new box).
PROFILE_CONTEXT = 3.0


def _profiled(rec: RawRecord, image: Image.Image, opts: PackOptions) -> list[tuple[RawRecord, Image.Image]]:
    """The profiled views of one face, each a record of its own (key ``<id>__yaw+60``, ``...m`` when mirrored),
    rendered at the packed crop's scale. Needs landmarks; raises ``_Reject`` when no view can be made."""
    from shards.profile import profile_views

    if rec.landmarks is None:
        raise _Reject(REASONS["bad_annotation"])
    if not np.isfinite(rec.landmarks).all():
        raise _Reject(REASONS["nan"])
    size = int(round(opts.crop_size / opts.context * PROFILE_CONTEXT))
    crop, pts, _ = crop_face(image, landmark_box(rec.landmarks), rec.landmarks, size, PROFILE_CONTEXT)
    assert pts is not None and opts.profile is not None
    # A rendered view's landmarks are projected 3D points (2D-3D): a silhouette jaw is first put on the
    # fitted 3D contour, or its far side would be rendered where the source's cheek outline was.
    labels = None
    if rec.landmark_convention == "2d":
        from shards.convention import jaw_to_2d3d

        labels = jaw_to_2d3d(pts)
    views = profile_views(np.array(crop), pts, opts.profile, rec.key, labels=labels)
    if not views:
        from superfan.pose import fit_camera

        fit_ok = fit_camera(pts).rmse <= 0.25
        raise _Reject(REASONS["profile_none" if fit_ok else "profile_fit"])
    out = []
    for v in views:
        extra = {"profile": {"source_key": rec.key, "source_yaw": round(v.source_yaw, 3), "view": v.tag}}
        face = dataclasses.replace(
            rec, id=f"{rec.id}__{v.tag}", image=v.image, landmarks=v.landmarks, box=None, yaw=v.yaw,
            pitch=v.pitch, roll=v.roll, pose_source="synthesized", visible=v.visible, extra=extra,
            landmark_convention="2d-3d" if labels is None else "2d-3d-fitted",
        )  # fmt: skip
        out.append((face, Image.fromarray(v.image)))
    return out


# ------------------------------------------------------------------------------------------ main side


def _select(reader: Reader, items: list[Any], seed: int, limit: int | None) -> list[Any]:
    items = list(items)
    random.Random(seed).shuffle(items)
    if limit is None:
        return items
    out, total = [], 0
    for item in items:
        if total >= limit:
            break
        n = reader.item_size(item)
        if total + n > limit:
            item = reader.truncate(item, limit - total)
            n = limit - total
        out.append(item)
        total += n
    return out


def _check_dest(opts: PackOptions) -> dict[str, Any] | None:
    """Fail early with one line if DEST is unusable or already packed; return an old manifest to replace.
    A short retry window: an unreachable or misconfigured destination is a user error, not an outage."""
    with storage.retry_window(5.0):
        return _check_dest_now(opts)


def _check_dest_now(opts: PackOptions) -> dict[str, Any] | None:
    murl = manifest_url(opts.dest)
    if storage.exists(murl):
        if not opts.overwrite:
            raise UserError(f"{murl} already exists; pass --overwrite to replace this pack")
        try:
            return read_manifest(opts.dest)
        except UserError:
            return {"shards": []}
    try:
        storage.check_writable(opts.dest)
    except StorageError as err:
        raise StorageError(f"cannot write to {opts.dest}: {err}") from None
    return None


#: One pack per destination at a time: created exclusively (``O_EXCL`` locally, a conditional PUT on S3)
#: before anything is checked or written, removed when the pack ends.
CLAIM = ".superfan-pack-claim"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: Where a pack writes its shards until it publishes them (``DEST/.superfan-pack-<claim token>/``): the old
#: pack stays whole and readable until the new one is complete, and a killed pack leaves nothing under names
#: a reader or a brace pattern would take for data.
STAGING_PREFIX = ".superfan-pack-"
_STAGING_NAME = re.compile(re.escape(STAGING_PREFIX) + r"[0-9a-f]{32}")


def _remove_prefix(url: str) -> None:
    """Remove a staging prefix (every object under it; locally the directory)."""
    if storage.is_s3(url):
        for rel in storage.list_files(url):
            storage.delete(storage.join(url, rel))
    else:
        import shutil

        shutil.rmtree(url, ignore_errors=True)


def _claim(dest: str) -> tuple[str, bytes, str]:
    """Claim ``dest`` for this pack, or one line naming the pack that holds it. A claim left by a pack that
    died on this machine (its process is gone) is taken over; one from another machine is the user's call."""
    import socket
    import uuid

    url = storage.join(dest, CLAIM)
    token = uuid.uuid4().hex
    mine = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "started": now_iso(),
            "staging": f"{STAGING_PREFIX}{token}"}  # fmt: skip
    data = (json.dumps(mine) + "\n").encode()
    try:
        if storage.create_exclusive(url, data):
            return url, data, mine["staging"]
        try:
            other = json.loads(storage.read_text(url))
        except (StorageError, ValueError):
            other = {}
        other = other if isinstance(other, dict) else {}
        pid = other.get("pid")
        if other.get("host") == mine["host"] and isinstance(pid, int) and not _pid_alive(pid):
            # Its pack was killed: nothing of it runs any more. Its staged shards (the exact name it
            # recorded) go with its claim; the published pack, if any, was never touched by it.
            staged = other.get("staging")
            if isinstance(staged, str) and _STAGING_NAME.fullmatch(staged):
                _remove_prefix(storage.join(dest, staged))
            storage.delete(url)
            if storage.create_exclusive(url, data):
                return url, data, mine["staging"]
    except StorageError as err:
        raise StorageError(f"cannot write to {dest}: {err}") from None
    raise UserError(
        f"{dest}: another pack is writing there (pid {other.get('pid')} on {other.get('host')}, since "
        f"{other.get('started')}); wait for it to end, or, if it is dead, delete {url} (nothing changed)"
    )


def _release(url: str, data: bytes) -> None:
    """Remove our claim (only ours: a claim taken over from us after we were presumed dead stays)."""
    import contextlib

    with contextlib.suppress(StorageError):
        if storage.exists(url) and storage.read_bytes(url) == data:
            storage.delete(url)


def pack(opts: PackOptions) -> PackResult:
    """Pack ``opts.src`` into shards at ``opts.dest``; returns the manifest written. See the module doc.
    Only one pack writes a destination at a time (:data:`CLAIM`); a second is refused with one line."""
    made = _missing_dirs(opts.dest)
    with storage.retry_window(5.0):
        claim_url, claim_data, staging = _claim(opts.dest)
    try:
        return _pack(opts, storage.join(opts.dest, staging))
    finally:
        with storage.retry_window(5.0):
            _release(claim_url, claim_data)
        for path in made:  # a refused pack leaves no empty DEST behind (rmdir removes empty directories only)
            try:
                os.rmdir(path)
            except OSError:
                break


def _missing_dirs(dest: str) -> list[str]:
    """The local directories, deepest first, that writing ``dest`` creates (none on S3)."""
    if storage.is_s3(dest):
        return []
    out, path = [], os.path.abspath(dest)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        out.append(path)
        path = os.path.dirname(path)
    return out


def _pack(opts: PackOptions, stage: str) -> PackResult:
    try:
        return _pack_staged(opts, stage)
    finally:  # published or failed: nothing is left under the staging prefix
        with storage.retry_window(5.0):
            _remove_prefix(stage)


def _pack_staged(opts: PackOptions, stage: str) -> PackResult:
    t0 = time.perf_counter()
    old = _check_dest(opts)
    reader = make_reader(
        opts.format, opts.src, opts.dataset, seed=opts.seed, split=opts.split, pose_file=opts.pose_file,
        pose_source=opts.pose_source, render_size=opts.crop_size,
    )  # fmt: skip
    all_items = reader.items()
    items = _select(reader, all_items, opts.seed, opts.limit)
    faces = sum(reader.item_size(i) for i in items)
    if not items:
        raise UserError(f"{opts.src}: nothing to pack (no {opts.format} annotations found)")
    workers = opts.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(items)))

    rejected: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    per_reason: Counter[str] = Counter()
    pose_sources: Counter[str] = Counter()
    conventions: Counter[str] = Counter()
    outside_range = 0
    pool = None
    if workers > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(reader, opts))
        chunk = max(1, min(32, len(items) // (workers * 16)))
        results = pool.imap(process_item, items, chunksize=chunk)
    else:
        _init_worker(reader, opts)
        results = map(process_item, items)
    # The writer's upload threads start after the fork: forking a process with threads can deadlock.
    writer = ShardWriter(stage, opts.split, opts.shard_size)  # staged: the old pack stays whole meanwhile
    from tqdm import tqdm

    bar = tqdm(total=faces, unit="face", desc=f"pack {opts.format}", disable=not opts.progress,
               file=sys.stderr, mininterval=0.5, dynamic_ncols=True)  # fmt: skip
    try:
        seen_keys: set[str] = set()
        for item, outcomes in zip(items, results, strict=True):
            for kind, a, b, c in outcomes:
                if kind == "ok" and a in seen_keys:  # two sources sanitised to one key: keep the first only
                    kind, a, b = "rejected", a, REASONS["duplicate_key"]
                if kind == "ok":
                    seen_keys.add(a)
                    writer.add(a, {"hr.jpg": b, "json": c})
                    meta = json.loads(c)
                    pose_sources[meta.get("pose_source") or "none"] += 1
                    conventions[meta.get("landmark_convention") or "none"] += 1
                elif kind == "out":
                    outside_range += 1
                else:
                    rejected[b] += 1
                    if per_reason[b] < MAX_EXAMPLES_PER_REASON:
                        per_reason[b] += 1
                        examples.append({"source": a, "reason": b})
            bar.update(reader.item_size(item))  # source faces (a profiled face gives several samples)
            bar.set_postfix(packed=writer.samples, rejected=sum(rejected.values()), refresh=False)
        shards = writer.close()
    except BaseException:
        writer.abort()
        if pool is not None:
            pool.terminate()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()

    samples = sum(s["samples"] for s in shards)
    if samples == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in rejected.most_common())
        raise UserError(f"{opts.src}: nothing packed, all {sum(rejected.values())} faces rejected ({reasons})")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "split": opts.split,
        "created": now_iso(),
        "sources": [{
            "format": opts.format, "dataset": reader.dataset, "url": str(opts.src), "items": len(all_items),
            "faces_considered": faces, "limit": opts.limit, "seed": opts.seed, "min_face": opts.min_face,
            "pose_file": opts.pose_file, "pose_sources": dict(pose_sources),
            "hash_range": None if opts.hash_range is None else list(opts.hash_range),
            "outside_hash_range": outside_range,
            "profile": None if opts.profile is None else opts.profile.to_json(),
            "jaw": opts.jaw, "landmark_conventions": dict(conventions),
        }],
        "crop": {"size": opts.crop_size, "context": opts.context, "jpeg_quality": opts.jpeg_quality},
        "shards": shards,
        "samples": samples,
        "rejected": dict(rejected.most_common()),
        "rejected_examples": examples,
    }  # fmt: skip
    # Publish: the old manifest goes first (readers never pair it with new shards: for a moment they find no
    # pack), the staged shards move into place (renames; server-side copies on S3), then the new manifest.
    if old is not None:
        storage.delete(manifest_url(opts.dest))
    for shard in shards:
        storage.move(storage.join(stage, shard["name"]), storage.join(opts.dest, shard["name"]))
    url = write_manifest(opts.dest, manifest)
    if old is not None:  # old shards the new manifest does not list (the new pack has fewer)
        keep = {s["name"] for s in shards}
        for s in old.get("shards", []):
            if s.get("name") not in keep:
                storage.delete(storage.join(opts.dest, s["name"]))
    return PackResult(manifest, url, time.perf_counter() - t0, rejected)


def summary(result: PackResult, opts: PackOptions) -> str:
    m = result.manifest
    n_rej = sum(result.rejected.values())
    rate = m["samples"] / max(result.seconds, 1e-9)
    lines = [
        f"packed {m['samples']} samples into {len(m['shards'])} shards at {opts.dest} "
        f"in {result.seconds:.1f} s ({rate:.0f} samples/s); rejected {n_rej}",
    ]
    lines += [f"  rejected  {reason}: {count}" for reason, count in result.rejected.most_common()]
    lines.append(f"  pose      {json.dumps(m['sources'][0]['pose_sources'])}")
    if opts.hash_range is not None:
        lo, hi = opts.hash_range
        lines.append(f"  split     keys hashing into [{lo}, {hi}); {m['sources'][0]['outside_hash_range']} outside")
    lines.append(f"  manifest  {result.url}")
    return "\n".join(lines)
