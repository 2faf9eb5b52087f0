"""Super-resolve real low-resolution faces and find their 68 landmarks with a trained champion.

The networks only ever saw one geometry in training: a 64x64 window with the face box centred and the
face ~50 px tall (section 4.5), downsampled x4 to 16x16. Everything here exists to put a real face into
that geometry and to carry the landmarks back out of it exactly:

* :meth:`Enhancer.enhance` takes face *crops* of any small size. Each crop is padded to a square (black,
  like the training crops beyond a photo's edge) and resized to 16x16 with an antialiased bicubic kernel
  (the training degradation's kernel). For good results the face should fill the crop the way it fills
  the training window: face height about 50/64 of the crop side, centred.
* :meth:`Enhancer.enhance_boxes` takes a full photo and face boxes (x, y, w, h). It cuts the square window
  that makes each box 50/64 of it (:func:`superfan.landmarks.crop_matrix`) at the photo's own resolution, so no
  resampling happens before the single antialiased resize to 16x16.

Each face gets a 2x3 affine from its input's pixels to the 64x64 SR frame; landmarks found on the SR face
are mapped back through its exact inverse, so ``landmarks`` are in the input image's (or photo's) pixels.

Which champion: for real photos (WIDER FACE, CCTV, old scans) use one trained with
``degrade.real_world: true`` - section 5.3 found models trained on clean bicubic downsampling give
blurry, detail-less results on real faces. :attr:`Enhancer.real_world` says how a champion was trained.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from superfan import storage
from superfan.errors import UserError
from superfan.landmarks import crop_matrix, heatmaps_to_points, invert_affine, transform_points

LR_SIZE = 16
HR_SIZE = 64
FACE_HEIGHT = 50.0

ImageLike = Any  # np.ndarray (H, W, 3) uint8 | PIL.Image.Image | torch.Tensor (3, H, W)


@dataclass
class EnhanceResult:
    """Outputs for B faces, in input order.

    ``sr``: (B, 64, 64, 3) uint8 RGB (float32 in [0, 1] when ``float_output=True``).
    ``landmarks_sr``: (B, 68, 2) in the 64x64 SR frame (0-based pixel centres, iBUG order).
    ``landmarks``: (B, 68, 2) in each input's own pixels (the crop, or the photo for ``enhance_boxes``).
    ``lr``: (B, 16, 16, 3) uint8, the exact network input (for the bicubic baseline and contact sheets).
    ``matrices``: (B, 2, 3) affine from each input's pixels to the SR frame.
    ``heatmaps``: (B, 68, h, h) float32 of FAN's last stack, only when ``return_heatmaps=True``.
    """

    sr: np.ndarray
    landmarks_sr: np.ndarray
    landmarks: np.ndarray
    lr: np.ndarray
    matrices: np.ndarray
    heatmaps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sr)


@dataclass
class Enhancer:
    """A generator (16 -> 64 px) and the FAN that localises on its output, ready for inference.

    The FAN is the champion's own (jointly trained in the ``end2end`` stage); a checkpoint without one
    falls back to the teacher FAN it names, which is what localised on SR faces before end-to-end training.
    """

    generator: torch.nn.Module
    fan: torch.nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    #: "auto": bf16 autocast and channels_last on CUDA, fp32 elsewhere; or "fp32" / "bf16".
    precision: str = "auto"
    real_world: bool | None = None
    source: str | None = None
    fan_source: str = "checkpoint"
    manifest: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.generator = self.generator.to(self.device).eval()
        self.fan = self.fan.to(self.device).eval()
        if self._use_bf16():
            self.generator = self.generator.to(memory_format=torch.channels_last)
            self.fan = self.fan.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------------------------ loading

    @classmethod
    def from_checkpoint(
        cls,
        path_or_url: str | os.PathLike[str],
        device: str | torch.device | None = None,
        *,
        batch_size: int = 64,
        precision: str = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Enhancer:
        """Load a champion (verified like ``superfan pull``) or a plain checkpoint, local or ``s3://``.

        * a directory with ``manifest.json`` is a champion: every file is checked against its sha256 first;
        * a remote champion (a version, or a sweep's champion root with ``latest``) is pulled and verified
          into ``cache_dir`` (default ``~/.cache/superfan/champions``);
        * a checkpoint directory or ``checkpoint.pt`` (local or ``s3://``) loads directly.
        """
        from superfan.checkpoint import load_checkpoint, models_from_checkpoint

        dev = resolve_device(device)
        src = str(path_or_url)
        manifest: dict[str, Any] | None = None
        local_dir = _local_champion_dir(src, cache_dir)
        if local_dir is not None:
            from superfan.champion import verify_champion

            manifest = verify_champion(local_dir)
            src_to_load = str(local_dir)
        else:
            if not storage.exists(src if src.endswith(".pt") else storage.join(src, "checkpoint.pt")):
                raise UserError(
                    f"{src}: no checkpoint.pt or manifest.json there (give a champion or checkpoint directory)"
                )
            src_to_load = src
        payload = load_checkpoint(src_to_load)
        models = models_from_checkpoint(payload, "cpu")
        if models["generator"] is None:
            raise UserError(
                f"{src}: a FAN-only checkpoint (stage {payload.get('stage')!r}); enhance needs one with a "
                "generator (a Super-FAN stage or a promoted champion)"
            )
        fan, fan_source = models["fan"], f"checkpoint ({payload.get('stage_kind')} stage)"
        if payload.get("stage_kind") == "end2end":
            fan_source = "jointly trained (end2end)"
        if fan is None:
            teacher = payload.get("teacher")
            if not teacher:
                raise UserError(f"{src}: the checkpoint has no FAN and names no teacher FAN checkpoint")
            fan = models_from_checkpoint(load_checkpoint(teacher), "cpu")["fan"]
            if fan is None:
                raise UserError(f"{teacher}: teacher checkpoint has no FAN weights")
            fan_source = f"teacher {teacher}"
        cfg = models["config"]
        return cls(
            generator=models["generator"],
            fan=fan,
            device=dev,
            batch_size=batch_size,
            precision=precision,
            real_world=bool(cfg.degrade.real_world),
            source=src,
            fan_source=fan_source,
            manifest=manifest,
            metrics=dict(payload.get("metrics") or {}),
        )

    # ------------------------------------------------------------------------------------ inference

    def _use_bf16(self) -> bool:
        if self.precision == "bf16":
            return True
        return self.precision == "auto" and self.device.type == "cuda"

    @torch.inference_mode()
    def run_lr(self, lr: torch.Tensor, return_heatmaps: bool = False) -> tuple[torch.Tensor, ...]:
        """(B, 3, 16, 16) in [0, 1] -> SR (B, 3, 64, 64) unclamped, landmarks (B, 68, 2) in SR pixels.

        Batched by ``batch_size``. FAN sees the unclamped generator output, as in training.
        """
        srs, pts, hms = [], [], []
        bf16 = self._use_bf16()
        for start in range(0, len(lr), max(1, self.batch_size)):
            x = lr[start : start + self.batch_size].to(self.device, non_blocking=True).float()
            if bf16:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                sr = self.generator(x)
                heat = self.fan(sr)[-1]
            heat = heat.float()
            srs.append(sr.float())
            pts.append(heatmaps_to_points(heat, HR_SIZE))
            if return_heatmaps:
                hms.append(heat)
        out: tuple[torch.Tensor, ...] = (torch.cat(srs), torch.cat(pts))
        if return_heatmaps:
            out = (*out, torch.cat(hms))
        return out

    def enhance(
        self,
        images: Sequence[ImageLike] | torch.Tensor,
        *,
        float_output: bool = False,
        return_heatmaps: bool = False,
    ) -> EnhanceResult:
        """Super-resolve face crops of any small size and find 68 landmarks on each.

        ``images``: a list of HxWx3 uint8 arrays or PIL images (sizes may differ), or a (B, 3, h, w) tensor
        (float in [0, 1] or uint8). Each crop is padded to a square and resized to 16x16 (antialiased
        bicubic); the face should fill it like the training window (face height ~50/64 of the side).
        """
        if isinstance(images, torch.Tensor) and images.ndim == 4 and len(images):
            # One size for all: pad and resize the whole batch at once, on the model's device.
            t = images.detach().to(self.device)
            t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
            if t.shape[1] != 3:
                raise UserError(f"expected a (B, 3, h, w) tensor of face crops, got shape {tuple(t.shape)}")
            lr, m = crop_to_lr(t)
            return self._finish(lr, np.repeat(m[None], len(t), axis=0), float_output, return_heatmaps)
        crops = _as_tensors(images)
        if not crops:
            raise UserError("no images to enhance")
        lrs, mats = [], []
        for crop in crops:
            lr, m = crop_to_lr(crop)
            lrs.append(lr)
            mats.append(m)
        return self._finish(torch.stack(lrs), np.stack(mats), float_output, return_heatmaps)

    def enhance_boxes(
        self,
        photo: ImageLike,
        boxes: Iterable[Sequence[float]],
        *,
        float_output: bool = False,
        return_heatmaps: bool = False,
    ) -> EnhanceResult:
        """Enhance the faces at ``boxes`` (x, y, w, h in photo pixels) of a full photo (array, PIL or path).

        Each face's window is the square that makes its box height 50/64 of it, centred on the box, cut
        at the photo's resolution (black beyond the photo's edges); ``landmarks`` come back in photo pixels.
        Bad boxes raise :class:`BoxError` naming the box; use :func:`check_box` to filter first.
        """
        if isinstance(photo, str | os.PathLike):
            from PIL import Image

            with Image.open(photo) as im:
                photo = np.asarray(im.convert("RGB"))
        img = _as_tensors([photo])[0]
        height, width = img.shape[-2:]
        lrs, mats = [], []
        for box in boxes:
            x, y, w, h = check_box(box, width, height)
            window = crop_matrix((x, y, x + w, y + h), out_size=HR_SIZE, face_height=FACE_HEIGHT)
            lr, _ = window_to_lr(img, window)
            lrs.append(lr)
            mats.append(window)
        if not lrs:
            raise UserError("no boxes to enhance")
        return self._finish(torch.stack(lrs), np.stack(mats), float_output, return_heatmaps)

    def _finish(self, lr: torch.Tensor, mats: np.ndarray, float_output: bool, return_heatmaps: bool) -> EnhanceResult:
        outs = self.run_lr(lr, return_heatmaps=return_heatmaps)
        sr, pts_sr = outs[0], outs[1]
        pts_sr_np = pts_sr.cpu().double().numpy()
        back = np.stack([transform_points(p, invert_affine(m)) for p, m in zip(pts_sr_np, mats, strict=True)])
        sr_img = sr.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return EnhanceResult(
            sr=sr_img.astype(np.float32) if float_output else to_uint8(sr_img),
            landmarks_sr=pts_sr_np,
            landmarks=back,
            lr=to_uint8(lr.permute(0, 2, 3, 1).cpu().numpy()),
            matrices=mats,
            heatmaps=outs[2].cpu().numpy() if return_heatmaps else None,
        )


# ------------------------------------------------------------------------------------------- geometry


class BoxError(UserError):
    """A face box that cannot be enhanced (negative, zero-size, non-finite or outside the image)."""


def check_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Validate an (x, y, w, h) box against a ``width`` x ``height`` image; one-line :class:`BoxError` if bad.

    A box may stick out of the image (faces at the edge are common in group photos) but must overlap it.
    """
    try:
        if isinstance(box, str | bytes) or any(isinstance(v, bool) for v in box):
            raise TypeError
        vals = [float(v) for v in box]
    except (TypeError, ValueError):
        raise BoxError(f"box {str(box)[:60]}: expected 4 numbers x, y, w, h") from None
    if len(vals) != 4:
        raise BoxError(f"box {vals}: expected 4 numbers x, y, w, h, got {len(vals)}")
    x, y, w, h = vals
    if not all(math.isfinite(v) for v in vals):
        raise BoxError(f"box {vals}: not finite")
    if w <= 0 or h <= 0:
        raise BoxError(f"box {_fmt(vals)}: zero or negative size (w={w:g}, h={h:g})")
    if x < 0 or y < 0:
        raise BoxError(f"box {_fmt(vals)}: negative coordinates")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise BoxError(f"box {_fmt(vals)}: outside the {width}x{height} image")
    if max(w, h) > MAX_BOX_FACTOR * max(width, height):
        raise BoxError(
            f"box {_fmt(vals)}: more than {MAX_BOX_FACTOR}x the {width}x{height} image's longer side, not a face in it"
        )
    return x, y, w, h


#: A face box may reach past the image's edges, but no side of it may exceed this many times the image's
#: longer side: the crop window around it is sized from the box (a 20000-pixel box on a 300x200 photo tried
#: 5 GB allocations), and checked here before anything is allocated.
MAX_BOX_FACTOR = 2


def _fmt(vals: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in vals) + "]"


def pixel_resize_matrix(src_size: float, dst_size: float) -> np.ndarray:
    """Affine between square frames of ``src_size`` and ``dst_size`` pixels (0-based pixel centres)."""
    s = dst_size / src_size
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer`` after ``inner`` for 2x3 affines."""
    a = np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]])
    return a[:2]


def crop_to_lr(crop: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """(3, h, w) or (B, 3, h, w) float crop(s) -> 16x16 LR and the affine from crop pixels to the SR frame.

    A non-square crop is padded with black, centred, to its longer side, so the face keeps its aspect.
    """
    h, w = crop.shape[-2:]
    side = max(h, w)
    left, top = (side - w) // 2, (side - h) // 2
    if h != w:
        crop = F.pad(crop, (left, side - w - left, top, side - h - top))
    shift = np.array([[1.0, 0.0, left], [0.0, 1.0, top]])
    return resize_lr(crop), compose(pixel_resize_matrix(side, HR_SIZE), shift)


def resize_lr(square: torch.Tensor) -> torch.Tensor:
    """Antialiased bicubic resize of (3, s, s) or (B, 3, s, s) float images to 16x16, clamped to [0, 1]."""
    if square.shape[-1] == LR_SIZE and square.shape[-2] == LR_SIZE:
        return square.clone()
    batch = square if square.ndim == 4 else square[None]
    out = F.interpolate(batch, size=(LR_SIZE, LR_SIZE), mode="bicubic", antialias=True, align_corners=False)
    out = out.clamp(0.0, 1.0)
    return out if square.ndim == 4 else out[0]


def window_to_lr(photo: torch.Tensor, window: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the 64-frame ``window`` (2x3, photo -> 64x64) out of a (3, H, W) photo and make its 16x16 LR.

    The window is sampled at N >= its size in photo pixels (bilinear, never downsampling), then one
    antialiased resize makes the LR, so a large face is not aliased and a tiny one is not blurred twice.
    Returns (LR, the N x N crop).
    """
    scale = math.hypot(window[0, 0], window[1, 0])  # photo px -> 64-frame px
    n = max(LR_SIZE, math.ceil(HR_SIZE / scale))
    to_crop = compose(pixel_resize_matrix(HR_SIZE, n), window)  # photo -> N crop
    inv = invert_affine(to_crop)  # N crop -> photo
    _, height, width = photo.shape
    coords = torch.arange(n, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    inv_t = torch.as_tensor(inv)
    px = inv_t[0, 0] * gx + inv_t[0, 1] * gy + inv_t[0, 2]
    py = inv_t[1, 0] * gx + inv_t[1, 1] * gy + inv_t[1, 2]
    # grid_sample, align_corners=False: pixel centre i sits at (2i + 1) / size - 1.
    grid = torch.stack([(2 * px + 1) / width - 1, (2 * py + 1) / height - 1], dim=-1).float()[None]
    crop = F.grid_sample(photo[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return resize_lr(crop), crop


# ------------------------------------------------------------------------------------------- helpers


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; a one-line error for names torch does not know or lacks."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available here")
    return dev


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _as_tensors(images: Sequence[ImageLike] | torch.Tensor) -> list[torch.Tensor]:
    """Everything becomes a list of (3, h, w) float32 tensors in [0, 1]."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise UserError(f"expected a (B, 3, h, w) tensor of face crops, got shape {tuple(images.shape)}")
        t = images.detach().cpu()
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        return list(t)
    out = []
    for i, img in enumerate(images):
        if isinstance(img, torch.Tensor):
            out.extend(_as_tensors(img if img.ndim == 4 else img[None]))
            continue
        arr = np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)  # PIL or array
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise UserError(f"image {i}: expected HxWx3 RGB, got shape {arr.shape}")
        arr = arr[:, :, :3]
        t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
        t = t.float() / 255.0 if arr.dtype == np.uint8 else t.float()
        out.append(t)
    return out


def _local_champion_dir(src: str, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """The local directory of a champion (a remote one is pulled first); None for plain checkpoints.

    A champion is recognised by its ``manifest.json`` (a version directory) or a ``latest`` pointer (a
    sweep's ``champions/<name>`` root), the same way ``superfan pull`` resolves it.
    """
    markers = (storage.join(src, "manifest.json"), storage.join(src, "latest"))
    if not any(storage.exists(m) for m in markers):
        return None
    from superfan.champion import pull, resolve

    if not storage.is_s3(src):
        return Path(resolve(src))
    root = Path(cache_dir or Path.home() / ".cache" / "superfan" / "champions")
    dest = root / hashlib.sha256(src.rstrip("/").encode()).hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    pull(src, dest, quiet=True)  # downloads, verifies every sha256, then moves into place
    return dest
