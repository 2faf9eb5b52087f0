"""``superfan enhance CHAMPION INPUT... -o OUT``: super-resolve real faces and find their landmarks.

Three ways in, because real low-resolution faces come three ways:

* face crops of any small size (the default): each INPUT is one face that fills the image;
* full photos with boxes (``--boxes``): a WIDER FACE ``bbx_gt`` text file or JSON
  ``{image: [[x, y, w, h], ...]}``;
  this is the main path for tiny faces, which no classic detector finds;
* full photos with a detector (``--detector dlib``, from the optional ``detector`` extra).

Writes ``OUT/faces/*.png`` (64x64 SR faces), ``OUT/landmarks.json``, ``OUT/overlays/*.png`` (landmarks on
each input) and ``OUT/contact_sheet.png`` (rows: input | bicubic | Super-FAN) for a person to look at.
One bad file or box never stops a batch: it is reported on one line and skipped. The exit status is
non-zero only when nothing at all was enhanced.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
#: Crop mode reads an input as one low-resolution face filling the image. A face a champion is for is tiny
#: (16 px at its input, the 64 px SR window at most 4x that); an input much larger, or far from square, is
#: a photo with faces in it, and shrinking it whole to 16 px would draw 68 landmarks over a group.
MAX_CROP_SIDE = 256
MAX_CROP_ASPECT = 1.6
#: The most pixels an input may have (64 megapixels, e.g. 8192x8192), read from its header before anything is
#: decoded: a full photo is held as 8-bit and float copies (about 20 bytes a pixel, 1.3 GB here).
MAX_INPUT_PIXELS = 8192 * 8192


def crop_problem(width: int, height: int) -> str | None:
    """Why an image is not plausibly a face crop, or None."""
    if max(width, height) > MAX_CROP_SIDE:
        return f"{width}x{height} is much larger than a low-resolution face (crops are at most {MAX_CROP_SIDE} px)"
    if max(width, height) > MAX_CROP_ASPECT * min(width, height):
        return f"{width}x{height} is far from square (a face crop is within {MAX_CROP_ASPECT:g}:1)"
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("champion", help="champion or checkpoint directory (local or s3://), or its checkpoint.pt")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or directories of images")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output directory")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--boxes", type=Path, default=None,
        help="face boxes for full photos: WIDER FACE bbx_gt .txt, or JSON {image: [[x, y, w, h], ...]}",
    )  # fmt: skip
    mode.add_argument(
        "--detector", choices=("dlib",), default=None,
        help="find faces in full photos (pip install -e '.[detector]'; misses faces below ~40 px)",
    )  # fmt: skip
    mode.add_argument(
        "--crops", action="store_true",
        help=f"treat every input as one face crop, even one larger than {MAX_CROP_SIDE} px or far from square",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=64, help="faces per forward pass (default 64)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")


# ------------------------------------------------------------------------------------------- inputs


def warn(msg: str) -> None:
    """One line on stderr that does not tear a running progress bar."""
    from tqdm import tqdm

    tqdm.write(f"superfan enhance: {msg}", file=sys.stderr)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; directories expand to their image files (sorted). Missing paths are reported."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            try:
                found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as err:
                warn(f"skipped {p}: cannot list it ({err.strerror or err})")
                continue
            if not found:
                warn(f"skipped {p}: a directory with no images")
            out.extend(found)
        else:
            out.append(p)
    return out


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB; raises ``OSError``/``ValueError`` with a short reason for unreadable files.

    The pixel count is read from the file's header and checked against :data:`MAX_INPUT_PIXELS` before
    anything is decoded. 16-bit images are scaled to 8 bits (``round(v / 257)``: 65535 is 255, not clipped);
    images of floating-point or 32-bit integer samples are refused (no one scale fits them).
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise OSError("no such file")
    try:
        # PIL's warnings (its pixel limit: ours below is stricter; damaged TIFF tags) would be stray lines:
        # a file is read or skipped with one line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                width, height = im.size
                if width * height > MAX_INPUT_PIXELS:
                    raise ValueError(f"{width}x{height} is {_too_many(width * height)}")
                im.load()
                return _to_rgb8(im)
    except Image.DecompressionBombError as err:  # PIL's own refusal at open, at twice its limit
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise ValueError(f"the image is {_too_many(int(found.group(1)) if found else None)}") from None
    except UnidentifiedImageError:
        raise ValueError("not an image PIL can read") from None
    except (OSError, SyntaxError) as err:  # truncated or corrupt files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"corrupt image ({reason})") from None


def _too_many(pixels: int | None) -> str:
    size = f"{pixels / 1e6:.0f} megapixels" if pixels else "too many pixels"
    return f"{size}, over the {MAX_INPUT_PIXELS / 1e6:.0f} megapixels enhance reads (nothing decoded)"


def _to_rgb8(im: Any) -> np.ndarray:
    """HxWx3 uint8 RGB of a decoded PIL image, its full range kept (PIL's own ``convert`` clips 16-bit
    grey to 255: a 16-bit face would come out white)."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):  # PNG's 16-bit grey reads as I
        wide = np.asarray(im).astype(np.float64)
        grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode in ("I", "F"):
        kind = "floating-point" if im.mode == "F" else "32-bit integer"
        raise ValueError(f"{kind} samples (mode {im.mode}) have no one 8-bit scale: save it as 8- or 16-bit")
    return np.asarray(im.convert("RGB"))


def parse_boxes(path: Path) -> dict[str, list[list[float]]]:
    """Boxes per image from a JSON mapping or a WIDER FACE ``wider_face_*_bbx_gt.txt`` file.

    ``bbx_gt``: an image path line, a count line, then that many ``x y w h blur expression illumination
    invalid occlusion pose`` lines (a count of 0 is followed by one all-zero line). Keys are kept as written;
    :func:`boxes_for` matches them to inputs by path suffix or file name.
    """
    from superfan.errors import UserError

    if not path.is_file():
        raise UserError(f"{path}: boxes file not found")
    text = path.read_text(errors="replace")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise UserError(f"{path}: expected a JSON object {{image: [[x, y, w, h], ...]}}")
        return {str(k): list(v) for k, v in data.items()}
    lines = [ln.strip() for ln in text.splitlines()]
    out: dict[str, list[list[float]]] = {}
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        name = lines[i]
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError):
            raise UserError(f"{path}:{i + 2}: expected the number of faces of {name}") from None
        rows = lines[i + 2 : i + 2 + max(count, 1)]
        if len(rows) < max(count, 1):
            raise UserError(f"{path}: {name}: file ends before its {count} boxes")
        boxes = []
        for j, row in enumerate(rows[:count]):
            try:
                boxes.append([float(v) for v in row.split()[:4]])
            except ValueError:
                raise UserError(f"{path}:{i + 3 + j}: not a box line: {row!r}") from None
        out[name] = boxes
        i += 2 + max(count, 1)
    if not out:
        raise UserError(f"{path}: no boxes found (expected WIDER FACE bbx_gt text or JSON)")
    return out


def boxes_for(path: Path, table: dict[str, list[list[float]]]) -> list[list[float]] | None:
    """The boxes for ``path``: exact key, else a key that is a path suffix of it, else the same file name."""
    posix = path.as_posix()
    if posix in table:
        return table[posix]
    for key, boxes in table.items():
        if posix.endswith("/" + key.lstrip("/")):
            return boxes
    matches = [boxes for key, boxes in table.items() if Path(key).name == path.name]
    return matches[0] if len(matches) == 1 else None


# ------------------------------------------------------------------------------------------- run


@dataclass
class Face:
    """One face to enhance: where it came from and how its input maps to the SR frame."""

    input: Path
    index: int
    box: list[float] | None
    lr: Any  # torch.Tensor (3, 16, 16)
    matrix: np.ndarray
    sr_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def check_out(out: Path, paths: list[Path]) -> None:
    """One line if ``-o OUT`` cannot hold enhance's outputs (a file, under a file, a symlink loop, ``faces``
    or ``overlays`` there not directories) or an input lies where they are written; creates nothing."""
    from superfan.errors import UserError

    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"-o {out}: exists and is not a directory")
        for sub in ("faces", "overlays"):  # what enhance writes into; an input there would be overwritten
            target = out / sub
            if target.exists() and not target.is_dir():
                raise UserError(f"-o {out}: {target} exists and is not a directory")
            where = target.resolve()
            inside = [p for p in paths if _resolved(p).parent == where]
            if inside:
                raise UserError(f"{inside[0]}: an input inside {target}, where enhance writes its outputs; "
                                "move it or choose another -o (nothing written)")  # fmt: skip
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Path.resolve before Python 3.13)
        raise UserError(f"-o {out}: unusable ({getattr(err, 'strerror', None) or err})") from None


def _resolved(path: Path) -> Path:
    """``path`` resolved, or made absolute when it cannot be (a symlink loop: reading it is skipped anyway)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def run(args: argparse.Namespace) -> int:
    """The command; an output that cannot be written under ``-o`` (a directory where a face's PNG or
    ``landmarks.json`` goes) is one line naming it."""
    from superfan.errors import UserError

    try:
        return _run(args)
    except OSError as err:
        name = Path(os.fsdecode(err.filename)) if isinstance(err.filename, str | bytes) else None
        out = _resolved(args.out)
        if name is None or not (_resolved(name) == out or out in _resolved(name).parents):
            raise
        raise UserError(f"-o {args.out}: cannot write {name} ({err.strerror or err})") from None


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from superfan.errors import UserError
    from superfan.infer import BoxError, Enhancer, check_box, crop_to_lr, window_to_lr

    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    table = parse_boxes(args.boxes) if args.boxes else None
    detector = None
    if args.detector:
        from superfan.detectors import get_detector

        detector = get_detector(args.detector)
    paths = expand_inputs(args.inputs)
    if not paths:
        raise UserError("no input images")
    out: Path = args.out
    check_out(out, paths)  # before the champion is loaded: a wrong -o costs nothing
    enhancer = Enhancer.from_checkpoint(args.champion, device=args.device, batch_size=args.batch)
    if enhancer.real_world is False:
        warn(
            "note: this champion was trained on clean bicubic downsampling (degrade.real_world=false); "
            "for real photos a real_world=true champion gives sharper faces (paper 5.3, docs/enhance.md)"
        )
    try:
        (out / "faces").mkdir(parents=True, exist_ok=True)
        (out / "overlays").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"-o {out}: cannot create it ({err.strerror or err})") from None

    faces: list[Face] = []
    skipped: list[dict[str, str]] = []
    photos_mode = table is not None or detector is not None
    stems = _unique_stems(paths)
    progress = not args.no_progress
    for path in tqdm(paths, desc="reading", unit="img", disable=not progress, file=sys.stderr):
        try:
            img = read_image(path)
        except (OSError, ValueError) as err:
            warn(f"skipped {path}: {err}")
            skipped.append({"input": str(path), "reason": str(err)})
            continue
        tensor = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0
        problem = None if photos_mode or args.crops else crop_problem(img.shape[1], img.shape[0])
        if problem:
            raise UserError(
                f"{path}: {problem}, so it looks like a photo, not a face crop: pass --boxes FILE (face boxes) "
                "or --detector dlib to enhance the faces in it, or --crops to treat it as one face anyway"
            )
        if not photos_mode:
            lr, matrix = crop_to_lr(tensor)
            faces.append(Face(path, 0, None, lr, matrix, sr_name=f"{stems[path]}.png"))
            continue
        if table is not None:
            boxes = boxes_for(path, table)
            if boxes is None:
                warn(f"skipped {path}: no boxes for it in {args.boxes}")
                skipped.append({"input": str(path), "reason": "no boxes"})
                continue
        else:
            boxes = [list(b) for b in detector(img)]  # type: ignore[misc]
            if not boxes:
                warn(f"skipped {path}: {args.detector} found no face (it misses faces below ~40 px)")
                skipped.append({"input": str(path), "reason": "no face detected"})
                continue
        height, width = img.shape[:2]
        for k, box in enumerate(boxes):
            try:
                x, y, w, h = check_box(box, width, height)
            except BoxError as err:
                warn(f"skipped face {k} of {path}: {err}")
                skipped.append({"input": str(path), "face": str(k), "reason": str(err)})
                continue
            from superfan.landmarks import crop_matrix

            window = crop_matrix((x, y, x + w, y + h), out_size=64, face_height=50.0)
            lr, _ = window_to_lr(tensor, window)
            faces.append(Face(path, k, [x, y, w, h], lr, window, sr_name=f"{stems[path]}_face{k:03d}.png"))

    if not faces:
        warn("nothing to enhance: every input was skipped")
        _write_json(out, enhancer, [], skipped)
        return 1

    lr_all = torch.stack([f.lr for f in faces])
    srs, pts = [], []
    with tqdm(total=len(faces), desc="enhancing", unit="face", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(faces), args.batch):
            sr, p = enhancer.run_lr(lr_all[start : start + args.batch])
            srs.append(sr.clamp(0, 1).cpu())
            pts.append(p.cpu())
            bar.update(min(args.batch, len(faces) - start))
    sr_all = torch.cat(srs)
    pts_sr = torch.cat(pts).double().numpy()

    from PIL import Image

    from superfan.infer import to_uint8
    from superfan.landmarks import invert_affine, transform_points

    sr_u8 = to_uint8(sr_all.permute(0, 2, 3, 1).numpy())
    records = []
    for face, sr_img, p_sr in zip(faces, sr_u8, pts_sr, strict=True):
        Image.fromarray(sr_img).save(out / "faces" / face.sr_name)
        p_in = transform_points(p_sr, invert_affine(face.matrix))
        face.extra["landmarks"] = p_in
        records.append(
            {
                "input": str(face.input),
                "face": face.index,
                "box": face.box,
                "sr": f"faces/{face.sr_name}",
                "landmarks": np.round(p_in, 3).tolist(),
                "landmarks_sr": np.round(p_sr, 3).tolist(),
            }
        )
    _write_json(out, enhancer, records, skipped)
    _write_overlays(out, faces, stems, progress)
    lr_u8 = to_uint8(lr_all.permute(0, 2, 3, 1).numpy())
    from superfan.render.overlays import contact_sheet

    contact_sheet(lr_u8, sr_u8, pts_sr, out / "contact_sheet.png")
    n_inputs = len({f.input for f in faces})
    print(
        f"enhanced {len(faces)} face(s) from {n_inputs} input(s) into {out} "
        f"(faces/, landmarks.json, overlays/, contact_sheet.png); skipped {len(skipped)}"
    )
    return 0


def _unique_stems(paths: list[Path]) -> dict[Path, str]:
    """Output names from input file names, unique per input: a stem shared by two inputs (``a.jpg``,
    ``a.png``) gets ``-1``, ``-2``... skipping every name already given, another input's own stem included
    (``a-1.png``), compared without case (a case-insensitive filesystem would merge ``A`` and ``a``)."""
    taken = {p.stem.casefold() for p in paths}
    used: set[str] = set()
    out = {}
    for p in paths:
        name, n = p.stem, 0
        while name.casefold() in used or (n > 0 and name.casefold() in taken):
            n += 1
            name = f"{p.stem}-{n}"
        used.add(name.casefold())
        out[p] = name
    return out


def _write_json(out: Path, enhancer: Any, records: list[dict[str, Any]], skipped: list[dict[str, str]]) -> None:
    doc = {
        "champion": enhancer.source,
        "fan": enhancer.fan_source,
        "real_world": enhancer.real_world,
        "coordinates": "0-based pixel centres, iBUG 68-point order; 'landmarks' in the input image's pixels, "
        "'landmarks_sr' in the 64x64 SR face",
        "faces": records,
        "skipped": skipped,
    }
    tmp = out / "landmarks.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "landmarks.json")


def _write_overlays(out: Path, faces: list[Face], stems: dict[Path, str], progress: bool) -> None:
    """One overlay per input: the input with its faces' landmarks (and boxes)."""
    from PIL import Image
    from tqdm import tqdm

    from superfan.render.overlays import overlay

    by_input: dict[Path, list[Face]] = {}
    for f in faces:
        by_input.setdefault(f.input, []).append(f)
    items = tqdm(by_input.items(), desc="overlays", unit="img", disable=not progress, file=sys.stderr)
    for path, group in items:
        img = overlay(Image.fromarray(read_image(path)), [f.box for f in group], [f.extra["landmarks"] for f in group])
        img.save(out / "overlays" / f"{stems[path]}.png")
