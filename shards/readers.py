"""One reader per raw dataset format: cheap ``items()`` in the main process, ``read(item)`` in a worker.

Why two steps: listing and parsing a dataset's index files must happen once, in order, so ``--limit`` and
the shuffle are deterministic; reading annotation files, images and fitting poses is the slow part, so it
runs in the worker processes. ``read`` yields :class:`RawRecord` (a face to crop) or :class:`Rejection`
(a face we cannot use, with a reason from :data:`REASONS`); it never raises for bad input.

Every reader works on a local directory or an ``s3://`` prefix: listings and reads go through
:mod:`superfan.storage`. Coordinates in a :class:`RawRecord` are 0-based pixel centres of the *source*
image (iBUG ``.pts`` and MATLAB ``.mat`` files are 1-based and are converted here).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from superfan import storage
from superfan.errors import UserError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")
#: The most faces ``pack synthetic N`` makes (its list of items is built whole; the sweeps' synthetic sets have
#: the same bound).
MAX_SYNTHETIC_FACES = 1_000_000

#: Stable rejection reasons: the manifest and the summary count by these strings.
REASONS = {
    "no_image": "annotation without image",
    "bad_annotation": "unreadable annotation",
    "point_count": "wrong point count",
    "nan": "NaN coordinates",
    "bad_image": "unreadable image",
    "small": "face smaller than min-face",
    "outside": "face outside image",
    "invalid": "face marked invalid",
    "profile_fit": "template fit too poor to profile",
    "profile_none": "no profile view beyond its own yaw",
    "duplicate_key": "sample key already used by another face (names that differ only in '.', '/' or '_')",
}


@dataclass
class RawRecord:
    """One face as the dataset gives it, before cropping."""

    dataset: str
    id: str
    source: str  #: where it came from (annotation file or image), for messages
    image: str | bytes | np.ndarray  #: URL of the image, its encoded bytes, or decoded HxWx3 uint8 RGB
    landmarks: np.ndarray | None = None  #: 68x2, 0-based, source pixels
    box: tuple[float, float, float, float] | None = None  #: face box (x0, y0, x1, y1) when no landmarks
    pitch: float | None = None
    yaw: float | None = None
    roll: float | None = None
    pose_source: str | None = None
    visible: list[bool] | None = None
    landmark_convention: str | None = None  #: None: the reader's (:attr:`Reader.landmark_convention`)
    extra: dict[str, Any] | None = None  #: more fields for the sample's json (a profiled view's provenance)

    @property
    def key(self) -> str:
        return make_key(self.dataset, self.id)


@dataclass
class Rejection:
    source: str
    reason: str


class BadInput(Exception):  # noqa: N818 - control flow inside read(), never leaves a reader
    def __init__(self, reason_key: str):
        super().__init__(REASONS[reason_key])
        self.reason = REASONS[reason_key]


def make_key(dataset: str, ident: str) -> str:
    """``{dataset}/{id}``; in the id ``/`` -> ``__`` and other unsafe characters (dots) -> ``_``."""
    clean = re.sub(r"[^A-Za-z0-9_\-]", "_", ident.replace("/", "__").replace("\\", "__"))
    ds = re.sub(r"[^A-Za-z0-9_\-]", "_", dataset)
    return f"{ds}/{clean}"


def _stem(rel: str) -> str:
    p = PurePosixPath(rel)
    return str(p.with_suffix("")) if p.suffix else str(p)


def check_points(points: Any) -> np.ndarray:
    """68x2 float array from anything 68x2 or 2x68 (or 3x68: x, y, z), else :class:`BadInput`."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[0] in (2, 3) and arr.shape[1] == 68:
        arr = arr[:2].T
    elif arr.ndim == 2 and arr.shape[0] == 68 and arr.shape[1] in (2, 3):
        arr = arr[:, :2]
    else:
        raise BadInput("point_count")
    if not np.isfinite(arr).all():
        raise BadInput("nan")
    return np.ascontiguousarray(arr)


def parse_pts(text: str) -> np.ndarray:
    """iBUG ``.pts`` text (with or without the ``version/n_points/{ }`` header) -> 68x2, **1-based**."""
    declared = None
    rows: list[list[float]] = []
    body = text.splitlines()
    for raw in body:
        line = raw.strip()
        if not line or line in {"{", "}"}:
            continue
        low = line.lower()
        if low.startswith("version"):
            continue
        if low.startswith("n_points"):
            try:
                declared = int(line.split(":", 1)[1])
            except (IndexError, ValueError):
                raise BadInput("bad_annotation") from None
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise BadInput("bad_annotation")
        try:
            rows.append([float(parts[0]), float(parts[1])])
        except ValueError:
            raise BadInput("bad_annotation") from None
    if declared is not None and declared != len(rows):
        raise BadInput("point_count")
    if len(rows) != 68:
        raise BadInput("point_count")
    return check_points(rows)


class Reader:
    """Base class: ``items()`` lists work units, ``read(item)`` turns one into records or rejections."""

    format = "?"
    default_dataset = "?"
    #: The jaw convention of the format's 68 points (:mod:`shards.convention`); None: no landmarks.
    landmark_convention: str | None = None

    def __init__(self, src: str, dataset: str | None = None, **options: Any):
        self.src = str(src).rstrip("/") if storage.is_s3(src) else str(src)
        self.dataset = dataset or self.default_dataset
        self.options = options

    # -- listing -------------------------------------------------------------------------------------
    def _files(self) -> list[str]:
        if not storage.is_s3(self.src) and not os.path.isdir(self.src):
            raise UserError(f"{self.src}: not a directory ({self.format} expects a dataset tree)")
        files = storage.list_files(self.src)
        if not files:
            raise UserError(f"{self.src}: no files found")
        return files

    def _url(self, rel: str) -> str:
        return storage.join(self.src, rel)

    def items(self) -> list[Any]:
        raise NotImplementedError

    def read(self, item: Any) -> Iterator[RawRecord | Rejection]:
        raise NotImplementedError

    def records(self, items: list[Any] | None = None) -> Iterator[RawRecord | Rejection]:
        """All records of ``items`` (default: all), in order; handy for tests and small sets."""
        for item in self.items() if items is None else items:
            yield from self.read(item)

    @staticmethod
    def item_size(item: Any) -> int:
        """How many faces an item holds (``--limit`` counts faces)."""
        return 1

    @staticmethod
    def truncate(item: Any, n: int) -> Any:
        """The item cut to its first ``n`` faces (only multi-face items need this)."""
        return item


def _pair_with_images(files: list[str], ext: str, skip: tuple[str, ...] = ()) -> list[tuple[str, str | None]]:
    """``(annotation, image or None)`` for every ``*ext`` file, the image being the same stem beside it."""
    by_stem: dict[str, str] = {}
    for f in files:
        if f.endswith(IMAGE_EXTS):
            by_stem.setdefault(_stem(f), f)
    out = []
    for f in files:
        if f.endswith(ext) and not any(f.endswith(s) for s in skip):
            out.append((f, by_stem.get(_stem(f))))
    return out


class PtsReader(Reader):
    """300-W style trees: ``NAME.pts`` (iBUG, 1-based) beside ``NAME.jpg|png``; pose estimated later.

    ``yaw_estimated_*.csv`` files beside the tree are ignored: every pose in a pack comes from
    :mod:`superfan.pose`, so the estimates are consistent across datasets.
    """

    format = "300w"
    default_dataset = "300w"
    landmark_convention = "2d"  # iBUG 300-W: the jaw on the visible silhouette

    def items(self) -> list[tuple[str, str | None]]:
        return _pair_with_images(self._files(), ".pts")

    def read(self, item: tuple[str, str | None]) -> Iterator[RawRecord | Rejection]:
        ann, img = item
        source = self._url(ann)
        try:
            if img is None:
                raise BadInput("no_image")
            try:
                text = storage.read_text(source)
            except (UserError, UnicodeDecodeError):
                raise BadInput("bad_annotation") from None
            pts = parse_pts(text) - 1.0
        except BadInput as err:
            yield Rejection(source, err.reason)
            return
        yield RawRecord(self.dataset, _stem(ann), source, self._url(img), landmarks=pts)


class MatReader(Reader):
    """300W-LP / AFLW2000-3D: ``NAME.mat`` beside ``NAME.jpg``, pose from ``Pose_Para`` (ground truth).

    Landmarks: ``pt3d_68`` (3x68, x/y used) when present, else ``pt2d`` if it has 68 points (AFLW2000-3D's
    ``pt2d`` holds AFLW's 21 points, so ``pt3d_68`` must win). The files come from MATLAB code (3DDFA),
    whose pixel coordinates are 1-based, so 1 is subtracted as for ``.pts``. ``*_pts.mat`` files (300W-LP's
    ``landmarks/`` folder: no image beside them, no pose) are not listed.
    """

    format = "mat"
    landmark_convention = "2d-3d"  # pt3d_68: projected 3D points (300W-LP, AFLW2000-3D's re-annotation)

    def __init__(self, src: str, dataset: str | None = None, **options: Any):
        base = PurePosixPath(str(src).rstrip("/")).name or "mat"
        self.default_dataset = re.sub(r"[^a-z0-9_\-]", "_", base.lower())
        super().__init__(src, dataset, **options)

    def items(self) -> list[tuple[str, str | None]]:
        return _pair_with_images(self._files(), ".mat", skip=("_pts.mat",))

    def read(self, item: tuple[str, str | None]) -> Iterator[RawRecord | Rejection]:
        import scipy.io

        ann, img = item
        source = self._url(ann)
        try:
            if img is None:
                raise BadInput("no_image")
            try:
                mat = scipy.io.loadmat(io.BytesIO(storage.read_bytes(source)))
            except Exception:  # noqa: BLE001 - any parse failure of a user file is "unreadable"
                raise BadInput("bad_annotation") from None
            if "pt3d_68" in mat:
                pts = check_points(mat["pt3d_68"])
            elif "pt2d" in mat:
                pts = check_points(mat["pt2d"])
            else:
                raise BadInput("point_count")
            pts = pts - 1.0
            pose = np.asarray(mat.get("Pose_Para", np.empty(0)), dtype=np.float64).ravel()
        except BadInput as err:
            yield Rejection(source, err.reason)
            return
        rec = RawRecord(self.dataset, _stem(ann), source, self._url(img), landmarks=pts)
        if pose.size >= 3 and np.isfinite(pose[:3]).all():
            rec.pitch, rec.yaw, rec.roll = (math.degrees(float(a)) for a in pose[:3])
            rec.pose_source = "ground-truth"
        yield rec


def load_pose_file(url: str) -> dict[str, tuple[float | None, float | None, float | None]]:
    """A side CSV of poses: columns ``id`` (or ``file``/``image``) and ``yaw`` (degrees), optional ``pitch``,
    ``roll``. Keys are matched by relative path without extension and by bare file stem."""
    out: dict[str, tuple[float | None, float | None, float | None]] = {}
    text = storage.read_text(url)
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.lower().strip(): c for c in reader.fieldnames or []}
    id_col = next((cols[c] for c in ("id", "file", "image", "name", "pts_file") if c in cols), None)
    if id_col is None or "yaw" not in cols:
        raise UserError(f"{url}: a pose file needs an 'id' (or 'file') column and a 'yaw' column in degrees")

    def num(row: dict[str, str], name: str) -> float | None:
        col = cols.get(name)
        if col is None or row.get(col) in (None, ""):
            return None
        return float(row[col])

    for row in reader:
        ident = _stem(row[id_col].strip())
        val = (num(row, "pitch"), num(row, "yaw"), num(row, "roll"))
        out[ident] = val
        out.setdefault(PurePosixPath(ident).name, val)
    return out


class T7Reader(Reader):
    """LS3D-W: images with Torch7 ``.t7`` files holding a 68x2 tensor, read with ``torchfile``.

    LS3D-W was made with Lua Torch (1-based arrays) by re-annotating 1-based iBUG-style points, so 1 is
    subtracted. Pose is estimated from the points unless ``pose_file`` (a CSV, see
    :func:`load_pose_file`) gives it; such poses are marked ``pose_source`` (default "ground-truth").
    """

    format = "ls3dw"
    default_dataset = "ls3dw"
    landmark_convention = "2d-3d"  # LS3D-W

    def __init__(self, src: str, dataset: str | None = None, **options: Any):
        super().__init__(src, dataset, **options)
        pose_file = options.get("pose_file")
        self.poses = load_pose_file(pose_file) if pose_file else {}
        self.pose_label = options.get("pose_source") or "ground-truth"

    def items(self) -> list[tuple[str, str | None]]:
        return _pair_with_images(self._files(), ".t7")

    def _load_t7(self, url: str) -> Any:
        import torchfile

        if not storage.is_s3(url):
            return torchfile.load(url)
        with tempfile.TemporaryDirectory() as tmp:  # torchfile needs a real file (np.fromfile)
            local = os.path.join(tmp, "x.t7")
            storage.download_file(url, local)
            return torchfile.load(local)

    def read(self, item: tuple[str, str | None]) -> Iterator[RawRecord | Rejection]:
        ann, img = item
        source = self._url(ann)
        try:
            if img is None:
                raise BadInput("no_image")
            try:
                obj = self._load_t7(source)
            except Exception:  # noqa: BLE001 - truncated or foreign files are "unreadable"
                raise BadInput("bad_annotation") from None
            if not isinstance(obj, np.ndarray):
                raise BadInput("bad_annotation")
            pts = check_points(np.array(obj, dtype=np.float64)) - 1.0
        except BadInput as err:
            yield Rejection(source, err.reason)
            return
        ident = _stem(ann)
        rec = RawRecord(self.dataset, ident, source, self._url(img), landmarks=pts)
        pose = self.poses.get(ident) or self.poses.get(PurePosixPath(ident).name)
        if pose is not None and pose[1] is not None:
            rec.pitch, rec.yaw, rec.roll = pose
            rec.pose_source = self.pose_label
        yield rec


# Mean CelebA-aligned 5 points (178x218 images): eyes, nose, mouth corners.
CELEBA_ALIGNED_MEAN = np.array([[69.0, 111.0], [108.0, 111.0], [88.0, 135.0], [72.0, 152.0], [105.0, 152.0]])


def box_from_five(points: np.ndarray) -> tuple[float, float, float, float]:
    """Face box (like the 68-point landmark box) from 5 points: eye centres, nose tip, mouth corners.

    Calibrated on the 2,012 faces of ``faces-300w`` (68 points -> their 5 points): with
    ``d = max(inter-ocular distance, eye-to-mouth distance)`` the 68-point box is 2.23 d wide, 2.16 d tall,
    centred 0.165 d below the mean of the 5 points (median ratios; ~8% spread). So CelebA crops match the
    scale of crops from landmark sets.
    """
    p = np.asarray(points, dtype=np.float64).reshape(5, 2)
    eyes, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    d = max(float(np.linalg.norm(p[0] - p[1])), float(np.linalg.norm(eyes - mouth)), 1e-6)
    cx, cy = p.mean(axis=0) + np.array([0.0, 0.165 * d])
    w, h = 2.23 * d, 2.16 * d
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _read_celeba_table(url: str, ncols: int) -> dict[str, list[float]]:
    """CelebA annotation text: a count line, a header line, then ``NAME v1 v2 ...`` rows."""
    try:
        lines = storage.read_text(url).splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{url}: not a CelebA annotation text file") from None
    out: dict[str, list[float]] = {}
    for line in lines[2:]:
        parts = line.split()
        if len(parts) != ncols + 1:
            continue
        try:
            out[parts[0]] = [float(v) for v in parts[1:]]
        except ValueError:
            continue
    return out


class CelebAReader(Reader):
    """CelebA: no 68 points, so landmarks are null; the face box is derived as follows.

    ``list_bbox_celeba.txt`` boxes refer to the *in-the-wild* images (``img_celeba/``), not to the aligned
    and cropped ``img_align_celeba/`` ones, and they are loose (hair, neck). So for the aligned images the
    box comes from their 5 points (``list_landmarks_align_celeba.txt``, same frame) through
    :func:`box_from_five`; without that file, from CelebA's fixed alignment (the mean aligned 5 points),
    never from the bbox file. For ``img_celeba/`` (used only when no aligned folder exists) the 5 in-the-wild
    points of ``list_landmarks_celeba.txt`` give the box, and ``list_bbox_celeba.txt`` is the fallback.
    Annotation files are looked for in SRC and ``SRC/Anno``. ``--limit N`` takes N faces.
    """

    format = "celeba"
    default_dataset = "celeba"

    def _find(self, files: set[str], name: str) -> str | None:
        for cand in (name, f"Anno/{name}", f"anno/{name}"):
            if cand in files:
                return self._url(cand)
        return None

    def items(self) -> list[tuple[str, str | None, tuple[float, float, float, float]]]:
        files = self._files()
        fileset = set(files)
        aligned_dirs = [d for d in ("img_align_celeba", "img_align_celeba_png") if any(
            f.startswith(d + "/") for f in files)]  # fmt: skip
        if aligned_dirs:
            img_dir = aligned_dirs[0]
            lm_url = self._find(fileset, "list_landmarks_align_celeba.txt")
            table = _read_celeba_table(lm_url, 10) if lm_url else {}
            boxes = {k: box_from_five(np.array(v).reshape(5, 2)) for k, v in table.items()}
            if not boxes:
                default = box_from_five(CELEBA_ALIGNED_MEAN)
                names = sorted(PurePosixPath(f).name for f in files if f.startswith(img_dir + "/"))
                boxes = {n: default for n in names}
        elif any(f.startswith("img_celeba/") for f in files):
            img_dir = "img_celeba"
            lm_url = self._find(fileset, "list_landmarks_celeba.txt")
            bb_url = self._find(fileset, "list_bbox_celeba.txt")
            table = _read_celeba_table(lm_url, 10) if lm_url else {}
            boxes = {k: box_from_five(np.array(v).reshape(5, 2)) for k, v in table.items()}
            if bb_url:
                for k, (x, y, w, h) in _read_celeba_table(bb_url, 4).items():
                    boxes.setdefault(k, (x, y, x + w - 1, y + h - 1))
        else:
            raise UserError(f"{self.src}: no img_align_celeba/ or img_celeba/ folder (CelebA layout expected)")
        present = {PurePosixPath(f).stem: f for f in files if f.startswith(img_dir + "/") and f.endswith(IMAGE_EXTS)}
        return [(name, present.get(PurePosixPath(name).stem), box) for name, box in sorted(boxes.items())]

    def read(self, item: tuple[str, str | None, tuple[float, float, float, float]]) -> Iterator[RawRecord | Rejection]:
        name, rel, box = item
        if rel is None:
            yield Rejection(self._url(name), REASONS["no_image"])
            return
        yield RawRecord(self.dataset, PurePosixPath(name).stem, self._url(rel), self._url(rel), box=box)


class WiderFaceReader(Reader):
    """WIDER FACE: ``wider_face_{split}_bbx_gt.txt`` + images; one sample per face box, no landmarks.

    SRC is the ``.txt`` itself or a directory holding it (with several, the one naming ``--split`` wins).
    Images are looked up under ``WIDER_{split}/images/``, ``images/`` beside the file, or SRC. Boxes flagged
    ``invalid`` are rejected; ``--min-face`` drops small ones; ``--limit`` counts faces.
    """

    format = "widerface"
    default_dataset = "widerface"

    def items(
        self,
    ) -> list[tuple[str | None, str, list[tuple[int, tuple[float, float, float, float], bool]]]]:
        """``(image URL or None if missing, name in the .txt, [(index, box, invalid)])`` per image."""
        split = str(self.options.get("split") or "")
        if self.src.endswith(".txt"):
            gt_url = self.src
            root = self.src.rsplit("/", 1)[0] if "/" in self.src else "."
            files = storage.list_files(root)
            base = root
        else:
            files = self._files()
            gts = [f for f in files if re.search(r"wider_face_\w+_bbx_gt\.txt$", f)]
            if not gts:
                raise UserError(f"{self.src}: no wider_face_*_bbx_gt.txt found")
            chosen = [g for g in gts if f"_{split}_" in PurePosixPath(g).name] or gts
            if len(chosen) > 1:
                raise UserError(f"{self.src}: several WIDER FACE annotation files; pass the .txt as SRC")
            gt_url = self._url(chosen[0])
            base = self.src
        fileset = set(files)
        gt_name = PurePosixPath(gt_url).name
        m = re.match(r"wider_face_(\w+)_bbx_gt\.txt", gt_name)
        gsplit = m.group(1) if m else split
        prefixes = [f"WIDER_{gsplit}/images/", "images/", ""]
        lines = storage.read_text(gt_url).splitlines()
        out = []
        i = 0
        while i < len(lines):
            name = lines[i].strip()
            i += 1
            if not name:
                continue
            try:
                n = int(lines[i].strip())
            except (IndexError, ValueError):
                raise UserError(f"{gt_url}: line {i + 1}: expected a face count") from None
            i += 1
            faces = []
            for j, line in enumerate(lines[i : i + max(n, 1)]):
                v = line.split()
                if n == 0 or len(v) < 4:
                    continue
                x, y, w, h = (float(t) for t in v[:4])
                invalid = len(v) >= 8 and v[7] == "1" or w <= 0 or h <= 0
                faces.append((j, (x, y, x + w - 1, y + h - 1), invalid))
            i += max(n, 1)
            rel = next((p + name for p in prefixes if p + name in fileset), None)
            out.append((storage.join(base, rel) if rel else None, name, faces))
        return out

    @staticmethod
    def item_size(item: Any) -> int:
        return len(item[2])

    @staticmethod
    def truncate(item: Any, n: int) -> Any:
        return (item[0], item[1], item[2][:n])

    def read(
        self, item: tuple[str | None, str, list[tuple[int, tuple[float, float, float, float], bool]]]
    ) -> Iterator[RawRecord | Rejection]:
        url, name, faces = item
        if url is None:
            for j, _, _ in faces:
                yield Rejection(f"{name}#face{j}", REASONS["no_image"])
            return
        stem = _stem(name)
        for j, box, invalid in faces:
            if invalid:
                yield Rejection(f"{url}#face{j}", REASONS["invalid"])
                continue
            yield RawRecord(self.dataset, f"{stem}_face{j:03d}", f"{url}#face{j}", url, box=box)


class SyntheticReader(Reader):
    """Procedural faces from :func:`superfan.data.synthetic.render_face`; SRC is the number of faces.

    Face ``i`` is rendered with ``numpy.random.default_rng([seed, i])``, so a pack is reproducible and any
    face can be re-rendered alone. Pose is the renderer's ground truth; the face box is the landmark box.
    """

    format = "synthetic"
    default_dataset = "synthetic"
    landmark_convention = "2d"  # superfan.data.synthetic slides a turned-away jaw point to the silhouette

    def __init__(self, src: str, dataset: str | None = None, **options: Any):
        super().__init__(src, dataset, **options)
        try:
            self.count = int(str(src))
        except ValueError:
            raise UserError(f"synthetic: SRC must be a number of faces, got {src!r}") from None
        if self.count <= 0:
            raise UserError(f"synthetic: SRC must be a positive number of faces, got {src!r}")
        if self.count > MAX_SYNTHETIC_FACES:
            raise UserError(f"synthetic: SRC must be at most {MAX_SYNTHETIC_FACES:,} faces, got {src!r}")
        self.seed = int(options.get("seed") or 0)
        self.render_size = int(options.get("render_size") or 256)

    def items(self) -> list[int]:
        try:
            import superfan.data.synthetic  # noqa: F401
        except ImportError as err:
            raise UserError(f"synthetic: the face renderer superfan.data.synthetic is not available ({err})") from None
        return list(range(self.count))

    def read(self, item: int) -> Iterator[RawRecord | Rejection]:
        from superfan.data.synthetic import render_face

        rng = np.random.default_rng([self.seed, int(item)])
        image, landmarks, pose = render_face(rng, size=self.render_size)
        source = f"synthetic:{self.seed}:{item}"
        try:
            pts = check_points(landmarks)
        except BadInput as err:
            yield Rejection(source, err.reason)
            return
        yield RawRecord(
            self.dataset, f"{self.seed}_{item:07d}", source, np.asarray(image, dtype=np.uint8), landmarks=pts,
            pitch=_opt(pose.get("pitch")), yaw=_opt(pose.get("yaw")), roll=_opt(pose.get("roll")),
            pose_source="ground-truth",
        )  # fmt: skip


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


READERS: dict[str, type[Reader]] = {
    "300w": PtsReader,
    "mat": MatReader,
    "ls3dw": T7Reader,
    "celeba": CelebAReader,
    "widerface": WiderFaceReader,
    "synthetic": SyntheticReader,
}


def make_reader(fmt: str, src: str, dataset: str | None = None, **options: Any) -> Reader:
    try:
        cls = READERS[fmt]
    except KeyError:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(READERS)}") from None
    return cls(src, dataset, **options)


__all__ = [
    "REASONS",
    "RawRecord",
    "Rejection",
    "Reader",
    "make_reader",
    "make_key",
    "parse_pts",
    "box_from_five",
    "load_pose_file",
]
