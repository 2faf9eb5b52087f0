"""The training batch made on the training device (``data.augment_on: device``): decode, warp, flip, jitter,
x4 degradation and heatmaps, batched in torch, from what the CPU stream hands over.

Why: with ``augment_on: loader`` (the default) every DataLoader worker decodes JPEGs, warps, degrades and
draws heatmaps on the CPU, per face; on a fast GPU that CPU work, not the networks, sets the step rate. Here
the CPU stream only reads tar members, parses the JSON and the JPEG *header*, and draws every random number
exactly as the loader path does (same generators, same order: :func:`superfan.data.augment.sample_params`
per face, :func:`superfan.data.degrade.sample_degrade` per batch), so the two paths make batches from the
same draws. What crosses to the device per face is the compressed JPEG, the 2x3 warp the loader path would
apply (:func:`superfan.data.augment.source_matrix`), its landmarks and flip flag.

On the device (the same code on CPU, so CPU CI tests it):

1. **Decode**: ``torchvision.io.decode_jpeg(list, device=...)`` (nvJPEG, batched, on CUDA; libjpeg on CPU).
2. **Reduce**: where the loader path asks libjpeg for a 1/2, 1/4 or 1/8 DCT-scaled decode (draft mode, an
   anti-aliasing prefilter before a warp that shrinks), a box filter of the same factor (``avg_pool2d``);
   pixel coordinates map the same way (``x' = (x + 0.5) k - 0.5``), so the same matrix applies.
3. **Warp + flip**: ``F.affine_grid`` / ``F.grid_sample`` (bilinear, zeros outside the crop = PIL's black
   fill) with the inverse of that matrix, one call per group of equally sized crops (a pack's crops all
   share one size); the result is rounded to 1/255 steps like the loader path's uint8. Landmarks go through
   the same matrix and are relabelled with :data:`superfan.landmarks.FLIP_PERMUTATION` when mirrored.
4. **Colour jitter** (:func:`superfan.data.augment.apply_color_jitter`), **degradation**
   (:func:`superfan.data.degrade.apply_degrade`: blur, colour distortion, noise in torch; the JPEG round
   trip through ``torchvision.io.encode_jpeg``/``decode_jpeg``, batched per quality on CUDA, per image on
   CPU) and **heatmaps** (:func:`superfan.landmarks.points_to_heatmaps`, batched).

Differences from the loader path, all sub-pixel or within JPEG noise (tests/test_device_augment.py states
the tolerances): bilinear sampling and border handling of ``grid_sample`` vs PIL's ``Image.transform``, a
box filter vs libjpeg's DCT scaling, libjpeg/nvJPEG vs PIL's encoder for the LR round trip. Validation
streams keep the loader path (no augmentation; one pass).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from superfan.config import AugmentConfig, Config
from superfan.data.augment import AugmentParams, check_pixels, collate_face_fields, open_image, source_matrix
from superfan.data.degrade import apply_degrade
from superfan.errors import BadData, BadSample
from superfan.landmarks import FLIP_PERMUTATION, NUM_LANDMARKS, points_to_heatmaps

log = logging.getLogger(__name__)

#: Marks a batch handed over by the CPU stream that still needs :class:`DeviceAugment`.
HANDOVER_KEY = "payload"


@contextlib.contextmanager
def _quiet_io() -> Iterator[None]:
    """torchvision 0.29 warns that its image codecs move to TorchCodec; they are the ones shipped with the
    pinned torchvision, so the warning (once per call) is silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
        yield


def _decode(payloads: list[torch.Tensor], device: torch.device) -> tuple[list[torch.Tensor], dict[int, str]]:
    """JPEG byte tensors -> ``(3, H, W)`` uint8 on ``device``; entries already decoded (non-JPEG crops,
    decoded by PIL on the CPU) are moved as they are. A batch that fails to decode is decoded again face by
    face; the faces that still fail come back as ``{index: reason}`` (bad samples, not a failed run)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    jpeg_idx = [i for i, p in enumerate(payloads) if p.dim() == 1]
    out: list[torch.Tensor] = [p.to(device, non_blocking=True) if p.dim() == 3 else p for p in payloads]
    failed: dict[int, str] = {}
    if not jpeg_idx:
        return out, failed
    with _quiet_io():
        try:
            decoded = decode_jpeg([payloads[i] for i in jpeg_idx], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = []
            for i in jpeg_idx:
                try:
                    decoded.append(decode_jpeg(payloads[i], mode=ImageReadMode.RGB, device=device))
                except RuntimeError as err:
                    failed[i] = f"JPEG does not decode on {device.type}: {str(err).splitlines()[0][:200]}"
                    decoded.append(torch.zeros(3, 1, 1, dtype=torch.uint8, device=device))
    for i, img in zip(jpeg_idx, decoded, strict=True):
        out[i] = img
    return out, failed


def _without(raw: dict[str, Any], failed: dict[int, str]) -> dict[str, Any]:
    """``raw`` without the faces in ``failed``, which join its ``bad_samples`` (counted by the loop's ledger)."""
    keep = [i for i in range(len(raw["key"])) if i not in failed]
    out = dict(raw)
    for k in ("full", "m", "flip", "points", "yaw", "jitter"):
        out[k] = raw[k][keep]
    for k in ("source_hw", "reduce", "pose_source", "key", "url"):
        out[k] = [raw[k][i] for i in keep]
    p = raw["degrade"]
    arrays = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if isinstance(getattr(p, f.name), np.ndarray)}
    out["degrade"] = dataclasses.replace(p, **{k: v[keep] for k, v in arrays.items()})
    bad = [(raw["url"][i], raw["key"][i], why) for i, why in sorted(failed.items())]
    out["bad_samples"] = list(raw["bad_samples"]) + bad
    for url, key, why in bad:
        log.warning("skipped bad sample %s in %s: %s", key, url, why)
    return out


# -------------------------------------------------------------------------------------- the CPU side


def handover_face(
    data: bytes, box: tuple[float, float, float, float], landmarks: np.ndarray | None, params: AugmentParams,
    cfg: AugmentConfig, *, max_pixels: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What the CPU stream hands over for one face: no pixel is decoded here (JPEG header only).

    The same checks as :func:`superfan.data.augment.warp_face` (a header claiming too many pixels is a
    ``BadSample``), the same warp matrix and draft factor. A crop that is not a plain RGB/grey JPEG is
    decoded here by PIL and handed over as pixels (rare: packs store JPEGs).
    """
    image = open_image(data)
    check_pixels(image, max_pixels)
    w, h = image.size
    plain = image.format == "JPEG" and image.mode in {"RGB", "L"}
    m, full, k = source_matrix(image, box, params, cfg, draft=plain)
    if plain:
        if b"\xff\xd9" not in data[-1024:]:  # PIL refuses a truncated JPEG; libjpeg would fill it in grey
            raise BadSample("truncated JPEG (no end-of-image marker)")
        payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        reduce = 1 if k == 1.0 else max(1, round(w / image.size[0]))
    else:
        rgb = np.asarray(image.convert("RGB"))
        payload, reduce = torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous(), 1
    pts = np.full((NUM_LANDMARKS, 2), np.nan) if landmarks is None else np.asarray(landmarks, dtype=np.float64)
    return {"payload": payload, "source_hw": (h, w), "reduce": reduce, "full": full, "m": m,
            "flip": params.flip, "points": pts}  # fmt: skip


def collate_handover(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the per-face hand-overs. The JPEGs go as one flat byte tensor and their lengths: a DataLoader
    worker passes each tensor through its own shared-memory segment, and a batch of 1,024 small tensors
    would cost 1,024 of them. Faces handed over as pixels (not JPEG) travel apart, by index."""
    jpegs = [s["payload"] for s in samples if s["payload"].dim() == 1]
    return {
        HANDOVER_KEY: torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8),
        "payload_lengths": [int(s["payload"].numel()) if s["payload"].dim() == 1 else 0 for s in samples],
        "pixels": {i: s["payload"] for i, s in enumerate(samples) if s["payload"].dim() != 1},
        "source_hw": [s["source_hw"] for s in samples],
        "reduce": [s["reduce"] for s in samples],
        "full": torch.from_numpy(np.stack([s["full"] for s in samples])),
        "m": torch.from_numpy(np.stack([s["m"] for s in samples])),
        "flip": torch.tensor([s["flip"] for s in samples], dtype=torch.bool),
        "points": torch.from_numpy(np.stack([s["points"] for s in samples])),
        **collate_face_fields(samples),
    }


def is_handover(batch: dict[str, Any]) -> bool:
    return HANDOVER_KEY in batch


def payloads(raw: dict[str, Any]) -> list[torch.Tensor]:
    """A hand-over batch's per-face payloads again: JPEG byte views of the flat tensor, or pixels."""
    lengths = raw["payload_lengths"]
    views = iter(raw[HANDOVER_KEY].split([n for n in lengths if n > 0]))
    return [raw["pixels"][i] if n == 0 else next(views) for i, n in enumerate(lengths)]


# ------------------------------------------------------------------------------------- the device side


def warp_theta(full: torch.Tensor, source_hw: tuple[int, int], out_size: int) -> torch.Tensor:
    """``(B, 2, 3)`` source->window pixel matrices -> ``affine_grid``'s window->source normalised ``theta``.

    Pixel centres at integers (as in :func:`superfan.landmarks.crop_matrix`); ``align_corners=False``
    normalises pixel ``x`` of a ``W`` wide image to ``(2x + 1) / W - 1``.
    """
    b = full.shape[0]
    f = full.double()
    last = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(b, 1, 3)
    inv = torch.linalg.inv(torch.cat([f, last], dim=1))  # window pixels -> source pixels
    h, w = source_hw
    s = out_size
    out_px = torch.tensor([[s / 2, 0, (s - 1) / 2], [0, s / 2, (s - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    src_n = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]], dtype=torch.float64)
    return (src_n @ inv @ out_px)[:, :2].float()


def warp_points(points: torch.Tensor, m: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``(B, 68, 2)`` crop points through ``(B, 2, 3)`` matrices, relabelled where ``flip`` (NaN stays NaN)."""
    out = points.double() @ m[:, :, :2].double().transpose(1, 2) + m[:, None, :, 2].double()
    perm = torch.tensor(FLIP_PERMUTATION, device=out.device)
    return torch.where(flip.view(-1, 1, 1).to(out.device), out[:, perm], out).float()


class DeviceAugment:
    """Turns a hand-over batch into a contract batch (docs/contracts.md) on ``device``; see the module doc."""

    def __init__(self, cfg: Config, device: torch.device | str) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self._cuda_jpeg = self.device.type == "cuda"

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        size = self.cfg.augment.hr_size
        images, failed = _decode(payloads(raw), self.device)
        if failed:
            raw = _without(raw, failed)
            images = [img for i, img in enumerate(images) if i not in failed]
        if not images:
            raise BadData(f"no face of a batch decodes (first: {raw['bad_samples'][-1][2]})")
        hr = self.warp_images(images, raw["reduce"], raw["full"])
        pts = warp_points(raw["points"].to(self.device), raw["m"].to(self.device), raw["flip"])
        hr = apply_color_jitter_device(hr, raw["jitter"])
        lr = apply_degrade(hr, raw["degrade"], self.cfg.degrade, jpeg_fn=self.jpeg)
        fan = self.cfg.model.fan
        heat = points_to_heatmaps(pts, size, fan.heatmap_size, fan.sigma)
        return {"hr": hr, "lr": lr, "landmarks": pts, "heatmaps": heat,
                "has_landmarks": torch.isfinite(pts).all(dim=2).all(dim=1), "yaw": raw["yaw"],
                "pose_source": raw["pose_source"], "key": raw["key"], "url": raw["url"],
                "bad_samples": raw["bad_samples"]}  # fmt: skip

    def warp(self, payloads: list[torch.Tensor], source_hw: list[tuple[int, int]], reduce: list[int],
             full: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Decode and warp (see :meth:`warp_images`); ``source_hw`` is the crops' size from their headers."""
        images, failed = _decode(payloads, self.device)
        if failed:
            raise BadSample(next(iter(failed.values())))
        return self.warp_images(images, reduce, full)

    def warp_images(self, images: list[torch.Tensor], reduce: list[int], full: torch.Tensor) -> torch.Tensor:
        """Decoded crops -> ``(B, 3, S, S)`` float in [0, 1] (1/255 steps), one ``grid_sample`` per group of
        crops with the same size and reduction."""
        size = self.cfg.augment.hr_size
        out = torch.empty(len(images), 3, size, size, device=self.device)
        groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            groups[(int(img.shape[-2]), int(img.shape[-1]), int(reduce[i]))].append(i)
        for (_, _, r), idx in groups.items():
            x = torch.stack([images[i] for i in idx]).float()
            if r > 1:  # libjpeg's draft decode at 1/r, as a box filter (see the module docstring)
                x = F.avg_pool2d(x, r, ceil_mode=True)
            theta = warp_theta(full[idx], (x.shape[-2], x.shape[-1]), size).to(self.device)
            grid = F.affine_grid(theta, [len(idx), 3, size, size], align_corners=False)
            warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out[torch.tensor(idx, device=self.device)] = warped
        return out.clamp_(0, 255).round_().div_(255.0)

    def jpeg(self, lr: torch.Tensor, qualities: np.ndarray) -> torch.Tensor:
        """The LR JPEG round trip at each image's quality (0 = none), on ``lr``'s device; batched per
        quality on CUDA (nvJPEG), per image on CPU. Quantised to uint8 first, as PIL's round trip is."""
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

        out = lr.clone()
        u8 = (lr.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        with _quiet_io():
            for q in sorted({int(v) for v in np.asarray(qualities) if v > 0}):
                idx = [int(i) for i in np.flatnonzero(np.asarray(qualities) == q)]
                encoded = self._encode([u8[i].contiguous() for i in idx], q, encode_jpeg)
                dec = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
                out[torch.tensor(idx, device=lr.device)] = torch.stack(dec).to(lr.dtype) / 255.0
        return out

    def _encode(self, src: list[torch.Tensor], quality: int, encode_jpeg: Any) -> list[torch.Tensor]:
        """Encoded bytes on the CPU (``decode_jpeg`` reads them from there); nvJPEG on CUDA, gathered in one
        copy, and libjpeg if the CUDA encoder refuses (remembered for the run)."""
        if self._cuda_jpeg:
            try:
                enc = encode_jpeg(src, quality=quality)
                lengths = [int(e.numel()) for e in enc]
                return list(torch.cat(enc).cpu().split(lengths))
            except RuntimeError as err:
                warnings.warn(f"nvJPEG encode failed ({err}); LR JPEG round trips run on the CPU", stacklevel=2)
                self._cuda_jpeg = False
        return [encode_jpeg(s.cpu(), quality=quality) for s in src]


def apply_color_jitter_device(hr: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """:func:`superfan.data.augment.apply_color_jitter` with the factors moved to ``hr``'s device."""
    from superfan.data.augment import apply_color_jitter

    return apply_color_jitter(hr, jitter.to(hr.device))


__all__ = ["HANDOVER_KEY", "DeviceAugment", "collate_handover", "handover_face", "is_handover", "payloads",
           "warp_points", "warp_theta"]  # fmt: skip
