"""Champions: promote the best checkpoint of a sweep, verify it, pull it (:func:`pull`; the command is
``superfan pull URL DIR``, :mod:`superfan.commands.pull`).

A champion is ``<storage>/champions/<sweep name>/<version>/``: the checkpoint's files copied verbatim plus
``manifest.json`` (metrics per pose bin, PSNR/SSIM, the full config, the trial id, the source checkpoint,
sha256 and size of every file, created time, code version). ``<storage>/champions/<sweep name>/latest``
(text: the version) is written only after the manifest, and the manifest only after every file, so a
reader that follows ``latest`` never sees a half-copied champion, on local disk or S3.

Concurrent promotions to one name get distinct versions: a promoter first claims ``<version>/.claim``
with an exclusive create (``O_EXCL`` locally; on S3 a conditional PUT, ``If-None-Match: *``, which AWS S3
and SeaweedFS honour: the test suite checks it against SeaweedFS), taking the next number when another
promoter holds one. After its manifest it points ``latest`` at the newest *complete* version (one with a
manifest) and re-lists until that is stable, so ``latest`` only ever names complete versions and, once
all promoters are done, names the newest. A claim left by a killed promoter only costs its number.

Promotion is a pure function over candidates ``(checkpoint URL, metrics, trial id)`` so the choice can be
tested without Ray: the sweep driver turns every report that carried a checkpoint, in every trial, into a
candidate. The best report wins, not the last report of the best trial: a trial that peaks at epoch 3 and
degrades by epoch 6 is promoted at epoch 3.

This module imports neither torch nor Ray, so ``superfan pull`` stays quick.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superfan import faults, storage
from superfan.errors import IntegrityError, StorageError, UserError
from superfan.provenance import code_identity, code_version
from superfan.records import json_safe, now_iso, sha256_file

FORMAT = "superfan-champion/1"
MANIFEST = "manifest.json"
LATEST = "latest"
CLAIM = ".claim"
_VERSION = re.compile(r"v\d{4,}")
METRIC = "val_auc_balanced"

#: Columns of the metrics table: (metrics key, header). Pose bins first, as Table 2 of the paper.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("val_auc_0_30", "AUC [0,30)"),
    ("val_auc_30_60", "AUC [30,60)"),
    ("val_auc_60_90", "AUC [60,90]"),
    ("val_auc_balanced", "AUC balanced"),
    ("val_nme", "NME"),
    ("val_psnr", "PSNR"),
    ("val_ssim", "SSIM"),
)


@dataclass(frozen=True)
class Candidate:
    """One report that carried a checkpoint: where the checkpoint is, what it scored, which trial."""

    checkpoint: str
    metrics: Mapping[str, Any]
    trial_id: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Champion:
    """A promoted checkpoint: its URL (the version directory) and its manifest."""

    url: str
    version: str
    manifest: dict[str, Any]


# ------------------------------------------------------------------------------------------ selection


def _score(metrics: Mapping[str, Any], metric: str) -> float | None:
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def rank_candidates(candidates: Iterable[Candidate], metric: str = METRIC, mode: str = "max") -> list[Candidate]:
    """Valid candidates (a checkpoint and a finite ``metric``), best first.

    Ties keep the order given (the driver passes trials in order and reports by epoch), so among equal
    scores the earliest report wins: the same quality for less training is the better-generalising pick.
    """
    if mode not in {"max", "min"}:
        raise UserError(f"mode must be 'max' or 'min', got {mode!r}")
    valid = [c for c in candidates if c.checkpoint and _score(c.metrics, metric) is not None]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(valid, key=lambda c: sign * _score(c.metrics, metric))  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------- helpers


def _versions(root: str) -> list[str]:
    """Version names in use (complete, being written, or claimed by a promoter that died), oldest first."""
    names = {p.split("/", 1)[0] for p in storage.list_files(root) if "/" in p}
    return sorted((n for n in names if _VERSION.fullmatch(n)), key=lambda n: int(n[1:]))


def _complete_versions(root: str) -> list[str]:
    """Versions whose manifest is written (so every file is), oldest first."""
    names = {p.split("/", 1)[0] for p in storage.list_files(root) if p.count("/") == 1 and p.endswith("/" + MANIFEST)}
    return sorted((n for n in names if _VERSION.fullmatch(n)), key=lambda n: int(n[1:]))


def _claim_version(root: str, source: str) -> str:
    """The next free ``vNNNN`` under ``root``, claimed exclusively (see the module docstring)."""
    token = json.dumps({"claim": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "at": now_iso(),
                        "epoch_s": time.time(), "source": source})  # fmt: skip
    versions = _versions(root)
    n = int(versions[-1][1:]) + 1 if versions else 1
    for _ in range(10_000):
        version = f"v{n:04d}"
        if storage.create_exclusive(storage.join(root, version, CLAIM), token.encode()):
            return version
        n += 1
    raise StorageError(f"{root}: could not claim a champion version (tried up to v{n:04d})")


#: A claimed version without a manifest whose claim is this old is abandoned even if its promoter's process
#: cannot be checked (another host): no promotion of a checkpoint takes a day.
STALE_CLAIM_S = 24 * 3600.0


def _abandoned(claim: dict[str, Any]) -> bool:
    """Whether the promoter that wrote ``claim`` is gone: its process on this host no longer runs, or the
    claim is older than :data:`STALE_CLAIM_S`."""
    if time.time() - float(claim.get("epoch_s") or 0.0) > STALE_CLAIM_S:
        return True
    if claim.get("host") != socket.gethostname() or not isinstance(claim.get("pid"), int):
        return False
    try:
        os.kill(claim["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def clean_abandoned(root: str) -> list[str]:
    """Remove the files of versions a killed promoter left half-copied (claimed, no manifest, promoter gone).

    The claim itself stays, so the number is never handed out again (a promoter still listing the old
    files could otherwise delete a new one's). Returns the versions cleaned."""
    files = storage.list_files(root)
    by_version: dict[str, list[str]] = {}
    for rel in files:
        version, _, rest = rel.partition("/")
        if rest and _VERSION.fullmatch(version):
            by_version.setdefault(version, []).append(rest)
    cleaned = []
    for version, rels in sorted(by_version.items()):
        if MANIFEST in rels or rels == [CLAIM] or CLAIM not in rels:
            continue
        try:
            claim = json.loads(storage.read_text(storage.join(root, version, CLAIM)))
        except (StorageError, ValueError):
            continue
        if isinstance(claim, dict) and _abandoned(claim):
            for rel in rels:
                if rel != CLAIM:
                    storage.delete(storage.join(root, version, rel))
            cleaned.append(version)
    return cleaned


def _publish_latest(root: str) -> str:
    """Point ``latest`` at the newest complete version; repeat while a newer one appeared meanwhile.

    Every promoter calls this after its own manifest, so whichever writes last has listed after every
    manifest that exists: ``latest`` ends on the newest, and names a complete version at every moment.
    """
    written = None
    for _ in range(100):
        complete = _complete_versions(root)
        if not complete or complete[-1] == written:
            break
        written = complete[-1]
        storage.write_text(storage.join(root, LATEST), written + "\n")
    return written or ""


def _checkpoint_config(checkpoint: str) -> dict[str, Any] | None:
    """The full resolved config stored beside the weights (``config.yaml``), when present."""
    import yaml

    url = storage.join(checkpoint, "config.yaml")
    if not storage.exists(url):
        return None
    data = yaml.safe_load(storage.read_text(url))
    return data if isinstance(data, dict) else None


def _manifest_digests(urls: Sequence[str]) -> dict[str, str | None]:
    """sha256 of each data set's ``manifest.json`` (which itself lists every shard's sha256)."""
    out: dict[str, str | None] = {}
    for url in urls:
        murl = url if url.endswith(".json") else storage.join(url.rstrip("/"), "manifest.json")
        try:
            out[url] = hashlib.sha256(storage.read_bytes(murl)).hexdigest()
        except StorageError:
            out[url] = None  # a bare .tar pattern has no manifest; the URL is still recorded
    return out


def _versions_of(*names: str) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def lineage(checkpoint: str) -> dict[str, Any]:
    """What a reader needs to reproduce a checkpoint, from what is stored beside it: the data (sha256 of the
    train and val manifests), the teacher (sha256 of its weights), seeds, the code and library versions, and
    what the run cost (wall time and device-hours up to this checkpoint)."""
    cfg = _checkpoint_config(checkpoint) or {}
    summary: dict[str, Any] = {}
    with contextlib.suppress(StorageError, ValueError):
        summary = json.loads(storage.read_text(storage.join(checkpoint, "metrics.json")))
    metrics = summary.get("metrics") or {}
    data = cfg.get("data") or {}
    return json_safe(
        {
            "train_manifests": _manifest_digests(list(data.get("train") or [])),
            "val_manifests": _manifest_digests(list(data.get("val") or [])),
            "teacher": summary.get("teacher"),
            "teacher_sha256": summary.get("teacher_sha256"),
            "seeds": {"train": (cfg.get("train") or {}).get("seed"), "data": data.get("seed")},
            "code_version": code_version(),
            "code": summary.get("code"),  # what trained it (the workers' code)
            "promoted_by": code_identity(),  # what promoted it (this driver)
            "versions": _versions_of("superfan", "ray", "torch", "torchvision", "optuna", "webdataset"),
            "cuda": _cuda_version(),
            "created": summary.get("created"),
            "wall_hours": metrics.get("wall_hours"),
            "device_hours": metrics.get("device_hours"),
            "device_kind": metrics.get("device_kind"),
            "step": summary.get("step"),
            "global_epoch": summary.get("global_epoch"),
        },
        nan_as_none=True,
    )


def _cuda_version() -> str | None:
    """The CUDA runtime torch was built with, read from its package metadata (no torch import here)."""
    import sys
    from importlib import metadata

    torch = sys.modules.get("torch")
    if torch is not None:  # the sweep driver has it loaded: the exact runtime
        return getattr(torch.version, "cuda", None)
    with contextlib.suppress(metadata.PackageNotFoundError):
        for req in metadata.requires("torch") or []:
            if req.startswith(("nvidia-cuda-runtime", "cuda-toolkit")):
                return req.split(";")[0].strip()
    return None


# ---------------------------------------------------------------------------------------------- promote


def promote(
    candidates: Sequence[Candidate],
    storage_root: str,
    name: str,
    *,
    metric: str = METRIC,
    mode: str = "max",
    extra: Mapping[str, Any] | None = None,
) -> Champion | None:
    """Copy the best candidate's checkpoint to ``<storage_root>/champions/<name>/<version>/``.

    Candidates whose checkpoint has gone (a Train run keeps only its best few) are skipped for the next
    best. Returns ``None`` when no candidate has a checkpoint and a finite metric. Promoting the same
    source checkpoint twice (a resumed sweep that found nothing better) returns the existing champion.
    Order of writes: the version's claim, every file, then ``manifest.json``, then ``latest``.
    """
    root = storage.join(storage_root, "champions", name)
    for cand in rank_candidates(candidates, metric, mode):
        # Skip S3 "directory" marker objects (pyarrow writes ``prefix/``; they list as "" or "sub/").
        files = [f for f in storage.list_files(cand.checkpoint) if f and not f.endswith("/") and f != MANIFEST]
        if "checkpoint.pt" not in files:
            continue
        done = _promoted(root, cand.checkpoint)
        if done is not None:  # a resumed sweep that found nothing better, or a promoter killed after its manifest
            _publish_latest(root)
            return done
        for gone in clean_abandoned(root):
            print(f"champion {name}: removed {gone}, left half-copied by a promoter that is gone", flush=True)
        version = _claim_version(root, cand.checkpoint)
        dest = storage.join(root, version)
        entries = []
        with tempfile.TemporaryDirectory(prefix="superfan-promote-") as tmp:
            for rel in files:
                local = Path(tmp, "f")
                storage.download_file(storage.join(cand.checkpoint, rel), local)
                digest, size = sha256_file(local)
                storage.upload_file(local, storage.join(dest, rel))
                entries.append({"path": rel, "sha256": digest, "bytes": size})
                local.unlink()
                faults.kill_point("promotion.after_file")
        manifest = {
            "format": FORMAT,
            "name": name,
            "version": version,
            "created": now_iso(),
            "code_version": code_version(),
            "trial_id": cand.trial_id,
            "source": cand.checkpoint,
            "stage": cand.metrics.get("stage"),
            "metric": metric,
            "mode": mode,
            "metrics": json_safe(dict(cand.metrics), nan_as_none=True),
            "params": json_safe(dict(cand.params), nan_as_none=True),
            "config": _checkpoint_config(cand.checkpoint),
            "lineage": lineage(cand.checkpoint),
            "files": entries,
            **json_safe(dict(extra or {}), nan_as_none=True),
        }
        storage.write_text(storage.join(dest, MANIFEST), json.dumps(manifest, indent=2, sort_keys=False))
        _publish_latest(root)
        return Champion(url=dest, version=version, manifest=manifest)
    return None


def _promoted(root: str, source: str) -> Champion | None:
    """The newest complete version already made from ``source``, if any."""
    for version in reversed(_complete_versions(root)):
        url = storage.join(root, version)
        try:
            manifest = json.loads(storage.read_text(storage.join(url, MANIFEST)))
        except (StorageError, ValueError):
            continue
        if manifest.get("source") == source:
            return Champion(url=url, version=version, manifest=manifest)
    return None


# --------------------------------------------------------------------------------------- verify / pull


def _read_manifest(url: str) -> dict[str, Any]:
    murl = storage.join(url, MANIFEST)
    try:
        manifest = json.loads(storage.read_text(murl))
    except StorageError:
        raise IntegrityError(f"{url}: incomplete champion: no {MANIFEST}") from None
    except ValueError as err:
        raise IntegrityError(f"{murl}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "files" not in manifest:
        raise IntegrityError(f"{murl}: not a superfan champion manifest (expected format {FORMAT!r})")
    files = manifest["files"]
    if not isinstance(files, list):
        raise IntegrityError(f"{murl}: files: expected a list of entries, got {type(files).__name__}")
    for i, entry in enumerate(files):
        ok = isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not ok or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise IntegrityError(f"{murl}: files[{i}]: expected {{path, bytes, sha256}}, got {str(entry)[:80]}")
    return manifest


def verify_champion(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file listed in the manifest (presence, size, sha256); returns the manifest.

    Raises :class:`IntegrityError` with one line naming the first missing or changed file.
    """
    url = str(directory)
    manifest = _read_manifest(url)
    for entry in manifest["files"]:
        rel = entry["path"]
        furl = storage.join(url, rel)
        if storage.is_s3(url):
            if not storage.exists(furl):
                raise IntegrityError(f"{url}: incomplete champion: {rel} is missing")
            data = storage.read_bytes(furl)
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
        else:
            if not Path(furl).is_file():
                raise IntegrityError(f"{url}: incomplete champion: {rel} is missing")
            digest, size = sha256_file(furl)
        if size != entry["bytes"] or digest != entry["sha256"]:
            raise IntegrityError(
                f"{url}: {rel} does not match the manifest (sha256 {digest[:12]}..., expected "
                f"{entry['sha256'][:12]}...): tampered or corrupt, refusing it"
            )
    return manifest


def resolve(url: str) -> str:
    """A champion version directory from a version URL or a ``champions/<name>`` URL (via ``latest``)."""
    url = url.rstrip("/")
    if storage.exists(storage.join(url, MANIFEST)):
        return url
    latest = storage.join(url, LATEST)
    if storage.exists(latest):
        version = storage.read_text(latest).strip()
        if not _VERSION.fullmatch(version):
            raise IntegrityError(f"{latest}: names {version[:40]!r}, not a champion version (v0001, v0002, ...)")
        return storage.join(url, version)
    raise StorageError(f"{url}: no champion there (neither {MANIFEST} nor a '{LATEST}' pointer)")


#: Written into every directory ``pull`` fills: only a directory holding it may be replaced by a later pull.
#: It lists the files that pull wrote there; anything else in the directory is the user's and is kept.
PULL_MARKER = ".superfan-pull.json"
#: A pull's journal, beside the destination (``.<name>.superfan-pull-journal``): the exact names of the
#: temporary directories it made, written before each is made, so that the next pull removes exactly those.
JOURNAL_FORMAT = "superfan-pull-journal/1"


def _check_destination(dest: Path) -> None:
    """Refuse (one line, nothing touched) a destination ``pull`` does not own: a symlink, a file, or a
    non-empty directory without :data:`PULL_MARKER` (a dataset, a checkout, a champion copied by hand...)."""
    if dest.is_symlink():
        raise UserError(f"{dest}: is a symbolic link; pull into a real directory (nothing changed)")
    if not dest.exists():
        for parent in dest.parents:  # the nearest existing ancestor must be a directory
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    raise UserError(f"{dest}: {parent} is not a directory (nothing changed)")
                break
        return
    if not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a directory; pull into a new or empty directory (nothing changed)")
    if any(dest.iterdir()) and not (dest / PULL_MARKER).is_file():
        raise UserError(
            f"{dest}: not empty and not a champion pulled there (no {PULL_MARKER}); pull into a new or empty "
            "directory (nothing changed)"
        )


@contextlib.contextmanager
def _pull_lock(dest: Path) -> Iterator[None]:
    """One pull into a parent directory at a time (``flock`` on the parent itself, so no lock file is left):
    under it, the leftovers an earlier pull of ``dest`` recorded belong to a pull that is gone."""
    import fcntl

    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Journal:
    """``.<name>.superfan-pull-journal`` beside ``dest``: the names of the sibling directories this pull is
    about to make (its download, and the old champion during the fallback swap), each recorded (and fsynced)
    before the directory is made. The next pull removes exactly the directories listed; never a name it
    guessed from a pattern, never a file a user made."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.path = dest.parent / f".{dest.name}.superfan-pull-journal"
        self.temps: list[str] = []
        self.olds: list[str] = []

    def load(self) -> _Journal:
        if not self.path.exists() and not self.path.is_symlink():
            return self
        try:
            if self.path.is_symlink() or not self.path.is_file():
                raise ValueError("not a file")
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
                raise ValueError("not a pull journal")
            names = [*data.get("temps", []), *data.get("olds", [])]
            if not all(isinstance(n, str) and self._ours(n) for n in names):
                raise ValueError("names outside this destination's")
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise UserError(
                f"{self.path}: not a journal superfan pull wrote ({err}); move it away and pull again (nothing changed)"
            ) from None
        self.temps, self.olds = list(data.get("temps", [])), list(data.get("olds", []))
        return self

    def _ours(self, name: str) -> bool:
        """A name this pull could have made: a plain sibling name with this destination's prefix."""
        return "/" not in name and name not in {"", ".", ".."} and name.startswith(f".{self.dest.name}.")

    def save(self) -> None:
        if not self.temps and not self.olds:
            self.path.unlink(missing_ok=True)
        else:
            data = {"format": JOURNAL_FORMAT, "dest": self.dest.name, "temps": self.temps, "olds": self.olds}
            storage.write_text(self.path, json.dumps(data, indent=2) + "\n")  # atomic, fsynced
        storage.fsync_dir(self.dest.parent)

    def new_name(self, kind: str) -> Path:
        """A fresh sibling name, recorded (in ``temps`` or ``olds``) before the caller makes it."""
        path = self.dest.parent / f".{self.dest.name}.{kind}-{uuid.uuid4().hex[:12]}"
        (self.olds if kind == "old" else self.temps).append(path.name)
        self.save()
        return path

    def forget(self, path: Path) -> None:
        for names in (self.temps, self.olds):
            if path.name in names:
                names.remove(path.name)
        self.save()


def _remove_tree(path: Path) -> None:
    """Remove a directory this pull made (never following a symlink out of it)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def _clean_leftovers(dest: Path) -> _Journal:
    """What a killed pull of ``dest`` recorded in its journal: its downloads, and, if it died between the two
    renames of the fallback swap, the old champion, which goes back into place. Only recorded names."""
    journal = _Journal(dest).load()
    for name in reversed(journal.olds):
        old = dest.parent / name
        if not dest.exists() and not dest.is_symlink() and old.is_dir() and not old.is_symlink():
            old.rename(dest)
    for name in [*journal.temps, *journal.olds]:
        _remove_tree(dest.parent / name)
        journal.forget(dest.parent / name)
    return journal


def _written_by_pull(dest: Path) -> set[str]:
    """The files an earlier pull wrote into ``dest`` (its marker's list; a marker from before the list: the
    champion's manifest's files), relative paths."""
    written = {PULL_MARKER, MANIFEST}
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        marker = json.loads((dest / PULL_MARKER).read_text())
        if isinstance(marker, dict) and isinstance(marker.get("files"), list):
            return written | {f for f in marker["files"] if isinstance(f, str)}
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        manifest = json.loads((dest / MANIFEST).read_text())
        files = manifest.get("files") if isinstance(manifest, dict) else None
        for entry in files if isinstance(files, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                written.add(entry["path"])
    return written


def _user_files(dest: Path) -> list[str]:
    """Files (and symlinks, and empty directories) in ``dest`` that no pull wrote: the user's."""
    if not dest.is_dir():
        return []
    written = _written_by_pull(dest)
    found = []
    for root, dirs, files in os.walk(dest):
        rel_root = Path(root).relative_to(dest)
        for d in list(dirs):
            p = Path(root) / d
            if p.is_symlink():
                found.append(str(rel_root / d))
                dirs.remove(d)
            elif not any(p.iterdir()):
                found.append(str(rel_root / d))
        found += [str(rel_root / f) for f in files if str(rel_root / f) not in written]
    return sorted(os.path.normpath(f) for f in found)


def _carry_over(user: list[str], dest: Path, new: Path) -> None:
    """Put the user's files into the new download before the swap: hard links where the filesystem allows
    (copies otherwise); the originals stay in ``dest`` until the swap, so a kill at any point loses none."""
    for rel in user:
        src, dst = dest / rel, new / rel
        if dst.exists() or dst.is_symlink():
            raise UserError(
                f"{dest / rel}: you added it, and the new champion has a file of that name; move it away and "
                "pull again (nothing changed)"
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_dir():
            dst.mkdir()
        else:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    platform or filesystem cannot, so the caller falls back to two renames."""
    import ctypes
    import errno

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(new: Path, dest: Path, journal: _Journal) -> None:
    """Put the verified download ``new`` at ``dest`` so that a kill at any point leaves the old or the new
    champion whole at ``dest`` (or, between the fallback's two renames, the old one in a sibling the journal
    names, which the next pull puts back). Afterwards ``new`` holds the old champion, or nothing."""
    if not dest.exists() or not any(dest.iterdir()):
        new.rename(dest)  # rename(2) replaces an empty directory atomically
    elif not _exchange(new, dest):
        old = journal.new_name("old")
        dest.rename(old)
        faults.kill_point("pull.between_renames")
        new.rename(dest)
        _remove_tree(old)
        journal.forget(old)
    storage.fsync_dir(dest.parent)


def pull(url: str, directory: str | os.PathLike[str], *, quiet: bool = False) -> dict[str, Any]:
    """Download a champion into ``directory``, verify every sha256, then swap it into place.

    The download lands in a temporary sibling directory and replaces ``directory`` only after verification
    (an atomic exchange where the OS has one), so ``directory`` is always either the previous champion or the
    new one, whole. ``directory`` must be new, empty, or a champion an earlier ``pull`` put there (it holds
    :data:`PULL_MARKER`); anything else is refused and left untouched. Files a user added to a pulled
    directory are kept (and named). Leftovers of a killed pull are cleaned up by the next one, by the exact
    names its journal recorded. A path it cannot use (a symlink, a path under a file, a parent it cannot
    write) is one line.
    """
    src = resolve(url)
    manifest = _read_manifest(src)
    dest = Path(directory).expanduser().absolute()
    _check_destination(dest)
    try:
        return _pull(src, manifest, dest, quiet)
    except OSError as err:
        where = err.filename or dest
        raise StorageError(f"{dest}: cannot pull there: {where}: {err.strerror or err} (nothing changed)") from None


def _pull(src: str, manifest: dict[str, Any], dest: Path, quiet: bool) -> dict[str, Any]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _pull_lock(dest):
        journal = _clean_leftovers(dest)
        _check_destination(dest)
        tmp = journal.new_name("pull")
        tmp.mkdir()
        kept: list[str] = []
        try:
            for entry in manifest["files"]:
                rel = entry["path"]
                if Path(rel).is_absolute() or ".." in Path(rel).parts or rel == PULL_MARKER:
                    raise IntegrityError(f"{src}: manifest lists an unsafe path {rel!r}")
                try:
                    storage.download_file(storage.join(src, rel), tmp / rel)
                except StorageError:
                    raise IntegrityError(f"{src}: incomplete champion: {rel} is missing") from None
            storage.download_file(storage.join(src, MANIFEST), tmp / MANIFEST)
            verify_champion(tmp)
            files = sorted({e["path"] for e in manifest["files"]} | {MANIFEST})
            marker = {"source": src, "name": manifest.get("name"), "version": manifest.get("version"), "files": files}
            storage.write_text(tmp / PULL_MARKER, json.dumps({**marker, "pulled": now_iso()}, indent=2) + "\n")
            kept = _user_files(dest)
            _carry_over(kept, dest, tmp)
            faults.kill_point("pull.before_swap")
            _swap_in(tmp, dest, journal)
            faults.kill_point("pull.after_swap")
        finally:
            _remove_tree(tmp)
            journal.forget(tmp)
    if not quiet:
        print(pulled_line(manifest, dest))
        print(metrics_table([manifest.get("metrics") or {}]))
        print(lineage_text(manifest))
    if kept:
        shown = ", ".join(kept[:5]) + (f" (+{len(kept) - 5} more)" if len(kept) > 5 else "")
        print(f"kept {len(kept)} file(s) you added to {dest}: {shown}")
    return manifest


def pulled_line(manifest: Mapping[str, Any], dest: Path) -> str:
    """The one line that says what ``pull`` verified and where (all ``superfan pull --quiet`` prints)."""
    return (f"champion {manifest.get('name')}/{manifest.get('version')} (trial {manifest.get('trial_id')}) "
            f"verified: {len(manifest['files'])} files -> {dest}")  # fmt: skip


def lineage_text(manifest: Mapping[str, Any]) -> str:
    """The lineage block as a few readable lines (``superfan pull`` prints it)."""
    lin = manifest.get("lineage") or {}
    if not lin:
        return "lineage: not recorded (champion promoted by an older version)"
    cost = lin.get("device_hours")
    kind = "GPU" if lin.get("device_kind") == "GPU" else "CPU core"
    lines = [f"stage {manifest.get('stage')}, step {lin.get('step')}, global epoch {lin.get('global_epoch')}"]
    for what in ("train_manifests", "val_manifests"):
        for url, digest in (lin.get(what) or {}).items():
            lines.append(f"{what.split('_')[0]} data {url} (manifest sha256 {str(digest)[:12]})")
    lines.append(f"teacher {lin.get('teacher')} (weights sha256 {str(lin.get('teacher_sha256'))[:12]})")
    versions = ", ".join(f"{k} {v}" for k, v in (lin.get("versions") or {}).items() if v)
    lines.append(f"code {lin.get('code_version')}; {versions}; CUDA {lin.get('cuda') or '-'}")
    code = lin.get("code") or lin.get("promoted_by") or {}
    if code:
        commit = f"commit {code['commit']} ({code.get('commit_source')})" if code.get("commit") else "commit unknown"
        shipped = f"; Ray package {code['ray_working_dir']}" if code.get("ray_working_dir") else ""
        lines.append(f"{commit}; sources sha256 {str(code.get('source_sha256'))[:12]}{shipped}")
    if isinstance(cost, int | float):
        wall = lin.get("wall_hours")
        wall_s = f"{wall:.3f} h wall, " if isinstance(wall, int | float) else ""
        lines.append(f"cost to this checkpoint: {wall_s}{cost:.3f} {kind}-hours; seeds {lin.get('seeds')}")
    return "lineage:\n  " + "\n  ".join(lines)


# ------------------------------------------------------------------------------------------------ table


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def metrics_table(rows: Sequence[Mapping[str, Any]], first: Sequence[tuple[str, str]] = ()) -> str:
    """A plain aligned text table: ``first`` columns (e.g. trial, params) then the metric columns."""
    columns = list(first) + list(TABLE_COLUMNS)
    cells = [[header for _, header in columns]]
    cells += [[_fmt(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for r in cells:
        parts = [c.ljust(w) if j < len(first) else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(parts))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
