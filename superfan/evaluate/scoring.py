"""One pass that scores every method on every face (PSNR, SSIM, grid power, NME per face), and the
validation figures every training report carries, computed by that same pass."""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from superfan import metrics
from superfan.config import Config
from superfan.errors import UserError
from superfan.evaluate.methods import Kind, Method, upsample_bicubic, upsample_bilinear
from superfan.landmarks import INNER_POINTS, SCORE_GROUPS, heatmaps_to_points, pose_bin

#: Per-face errors kept beside the full NME: one per landmark group, and the 51 inner points.
SUBSETS: dict[str, tuple[int, ...]] = {**SCORE_GROUPS, "inner": INNER_POINTS}


def _device_of(*modules: nn.Module | None) -> torch.device:
    for m in modules:
        if m is None:
            continue
        for t in (*m.parameters(), *m.buffers()):
            return t.device
    return torch.device("cpu")


def _locate(fan: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Landmarks ``(B, 68, 2)`` in image pixels (CPU) from the last stack of a FAN's heatmaps."""
    out = fan(images)
    last = out[-1] if isinstance(out, list | tuple) else out
    return heatmaps_to_points(last.float(), image_size=images.shape[-1]).cpu()


# ----------------------------------------------------------------------------------------------- the pass


@dataclass
class _Collected:
    """Per-face arrays of one pass, in loader order."""

    yaw: list[np.ndarray] = field(default_factory=list)
    has_landmarks: list[np.ndarray] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    pose_sources: Counter = field(default_factory=Counter)
    psnr: dict[str, list[np.ndarray]] = field(default_factory=dict)
    ssim: dict[str, list[np.ndarray]] = field(default_factory=dict)
    nme: dict[str, list[np.ndarray]] = field(default_factory=dict)
    #: method -> subset (:data:`SUBSETS`) -> per-face NME over those points
    nme_subsets: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)
    grid: dict[str, list[np.ndarray]] = field(default_factory=dict)  # metrics.grid_power per source and HR
    samples: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # pose bin -> faces

    def arrays(self) -> dict[str, Any]:
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
        return {
            "yaw": cat(self.yaw),
            "has_landmarks": cat(self.has_landmarks).astype(bool),
            "psnr": {k: cat(v) for k, v in self.psnr.items()},
            "ssim": {k: cat(v) for k, v in self.ssim.items()},
            "nme": {k: cat(v) for k, v in self.nme.items()},
            "nme_subsets": {m: {k: cat(v) for k, v in d.items()} for m, d in self.nme_subsets.items()},
            "grid": {k: cat(v) for k, v in self.grid.items()},
        }


def _batches(loader: Iterable[dict[str, Any]], max_faces: int | None, max_batches: int | None) -> Iterator:
    """The loader's batches, the last one cut so that at most ``max_faces`` faces are seen."""
    seen = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            return
        n = len(batch["hr"])
        if max_faces is not None:
            if seen >= max_faces:
                return
            if seen + n > max_faces:
                k = max_faces - seen
                batch = {key: v[:k] for key, v in batch.items()}
                n = k
        seen += n
        yield batch


def run_pass(
    methods: Sequence[Method],
    loader: Iterable[dict[str, Any]],
    edges: Sequence[float],
    *,
    max_faces: int | None = None,
    max_batches: int | None = None,
    samples: int = 0,
    progress: bool = False,
) -> _Collected:
    """Score every method on every face of the loader (caller sets eval mode and inference mode)."""
    device = _device_of(*(m for meth in methods for m in (meth.fan, meth.generator)))
    out = _Collected()
    sources = {m.source: m for m in methods}  # one generator pass per source and batch
    batches = _batches(loader, max_faces, max_batches)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluate", unit="batch", file=sys.stderr, dynamic_ncols=True)
    per_bin = max(1, math.ceil(samples / len(edges))) if samples else 0
    for batch in batches:
        hr = batch["hr"].to(device, torch.float32)
        lr = batch["lr"].to(device, torch.float32)
        gt = torch.as_tensor(batch["landmarks"]).float().cpu()
        has = torch.as_tensor(batch["has_landmarks"]).bool().cpu() & torch.isfinite(gt).any(dim=(1, 2))
        yaw = torch.as_tensor(batch["yaw"]).double().cpu().numpy().reshape(-1)
        out.yaw.append(yaw)
        out.has_landmarks.append(has.numpy())
        out.keys += list(batch.get("key") or [""] * len(hr))
        out.pose_sources.update(str(s or "none") for s in (batch.get("pose_source") or [None] * len(hr)))

        raw: dict[str, torch.Tensor] = {}  # what a FAN sees (unclamped generator output)
        out.grid.setdefault("HR", []).append(metrics.grid_power(hr).cpu().numpy())
        for name, meth in sources.items():
            if meth.kind == "hr":
                raw[name] = hr
            elif meth.kind == "bilinear":
                raw[name] = upsample_bilinear(lr, hr.shape[-1])
            elif meth.kind == "bicubic":
                raw[name] = upsample_bicubic(lr, hr.shape[-1])
            else:
                raw[name] = meth.generator(lr).float()  # type: ignore[misc]
            if meth.kind != "hr":
                img = raw[name].clamp(0.0, 1.0)
                out.psnr.setdefault(name, []).append(metrics.psnr(img, hr).cpu().numpy())
                out.ssim.setdefault(name, []).append(metrics.ssim(img, hr).cpu().numpy())
                out.grid.setdefault(name, []).append(metrics.grid_power(img).cpu().numpy())

        idx = torch.nonzero(has).flatten()
        points: dict[str, torch.Tensor] = {}
        for meth in methods:
            err = np.full(len(hr), np.nan)
            sub = {k: np.full(len(hr), np.nan) for k in SUBSETS}
            if len(idx):
                pts = torch.full((len(hr), gt.shape[1], 2), float("nan"))
                pts[idx] = _locate(meth.fan, raw[meth.source][idx.to(device)])
                points[meth.name] = pts
                err[idx.numpy()] = metrics.nme(pts[idx], gt[idx]).numpy()
                if gt.shape[1] == 68:
                    for k, which in SUBSETS.items():
                        sub[k][idx.numpy()] = metrics.nme_of_points(pts[idx], gt[idx], which).numpy()
            out.nme.setdefault(meth.name, []).append(err)
            for k, v in sub.items():
                out.nme_subsets.setdefault(meth.name, {}).setdefault(k, []).append(v)

        if per_bin:
            bins = pose_bin(yaw, tuple(edges))
            for i in idx.tolist():
                slot = out.samples.setdefault(int(bins[i]), [])
                if len(slot) >= per_bin:
                    continue
                slot.append(
                    {
                        "lr": lr[i].cpu().numpy(),
                        "hr": hr[i].cpu().numpy(),
                        "gt": gt[i].numpy(),
                        "yaw": float(yaw[i]),
                        "key": out.keys[-len(hr) + i],
                        "images": np.stack([raw[m.source][i].clamp(0, 1).cpu().numpy() for m in methods]),
                        "points": np.stack([points[m.name][i].numpy() for m in methods]),
                    }
                )
    return out


def pick_samples(samples: dict[int, list[dict[str, Any]]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` faces taken round-robin over the yaw bins (unknown yaw last), so every pose shows."""
    order = sorted(k for k in samples if k >= 0) + ([-1] if -1 in samples else [])
    picked: list[dict[str, Any]] = []
    depth = 0
    while len(picked) < n and any(depth < len(samples[k]) for k in order):
        for k in order:
            if depth < len(samples[k]) and len(picked) < n:
                picked.append(samples[k][depth])
        depth += 1
    return picked


class Modes:
    """Put modules in eval mode for the duration and restore each one's own train flag afterwards."""

    def __init__(self, *modules: nn.Module | None) -> None:
        self.modules = list({id(m): m for m in modules if m is not None}.values())

    def __enter__(self) -> Modes:
        self.flags = [m.training for m in self.modules]
        for m in self.modules:
            m.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        for m, flag in zip(self.modules, self.flags, strict=True):
            m.train(flag)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    if a is b:
        return True
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


# ------------------------------------------------------------------------------------------ validation


def validation_metrics(
    generator: nn.Module | None,
    fan: nn.Module | None,
    loader: Iterable[dict[str, Any]],
    cfg: Config,
    teacher: nn.Module | None = None,
    max_batches: int | None = None,
) -> dict[str, float | int]:
    """The keys every training report carries, computed exactly as ``superfan evaluate`` computes them.

    ``fan`` localises on the SR image (``generator(lr)``, or bilinear upsampling when ``generator`` is
    None: the FAN-bilinear baseline); when ``fan`` is None the ``teacher`` does. Keys: ``val_auc_balanced``,
    ``val_auc_<bin>`` (``0_30``, ``30_60``, ``60_90`` with the default bins), ``val_auc`` (all faces with
    landmarks, any yaw), ``val_nme`` (mean over those), ``val_psnr``, ``val_ssim`` (all faces),
    ``val_grid_artefact`` (``metrics.grid_artefact`` of the SR images against HR, all faces),
    ``val_faces``, ``val_faces_landmarks``, ``val_faces_<bin>``, ``val_faces_unknown_yaw``. Empty bins give
    NaN and are left out of the balanced mean.

    When a distinct ``teacher`` is given and ``fan`` no longer has its weights (end-to-end training),
    ``val_teacher_auc_balanced``/``val_teacher_auc_<bin>``/``val_teacher_nme`` also report the teacher on
    the same SR images: the FAN-X row, so a sweep can see what joint training added. Before end-to-end the
    integrated FAN is an untouched copy of the teacher and this second pass is skipped.

    Models are switched to eval mode and each is restored to its own mode afterwards. At most
    ``cfg.data.val_samples`` faces (if set) and ``max_batches`` batches are used.
    """
    loc = fan if fan is not None else teacher
    if loc is None:
        raise UserError("validation needs a FAN to localise landmarks on the SR image (fan or teacher)")
    kind: Kind = "bilinear" if generator is None else "sr"
    methods = [Method("val", loc, generator, kind, source="sr")]
    with Modes(generator, loc, teacher), torch.inference_mode():
        if teacher is not None and teacher is not loc and not _same_weights(loc, teacher):
            methods.append(Method("teacher", teacher, generator, kind, source="sr"))
        got = run_pass(methods, loader, cfg.eval.pose_bins, max_faces=cfg.data.val_samples, max_batches=max_batches)
    a = got.arrays()
    out = _landmark_figures(a, methods, cfg)
    psnr, ssim = a["psnr"].get("sr", np.zeros(0)), a["ssim"].get("sr", np.zeros(0))
    out["val_psnr"] = float(np.mean(psnr)) if len(psnr) else float("nan")
    out["val_ssim"] = float(np.mean(ssim)) if len(ssim) else float("nan")
    out["val_grid_artefact"] = metrics.grid_ratio(a["grid"].get("sr", np.zeros(0)), a["grid"].get("HR", np.zeros(0)))
    return out


def fan_validation_metrics(
    fan: nn.Module, loader: Iterable[dict[str, Any]], cfg: Config, max_batches: int | None = None
) -> dict[str, float | int]:
    """The teacher stage's report: ``fan`` on the HR faces (Table 2's FAN-HR row, the upper bound), scored
    by the same pass and the same configured pose bins as :func:`validation_metrics`; the landmark and face
    count keys only (there is no SR image)."""
    methods = [Method("val", fan, None, "hr")]
    with Modes(fan), torch.inference_mode():
        got = run_pass(methods, loader, cfg.eval.pose_bins, max_faces=cfg.data.val_samples, max_batches=max_batches)
    return _landmark_figures(got.arrays(), methods, cfg)


def _landmark_figures(a: dict[str, Any], methods: Sequence[Method], cfg: Config) -> dict[str, float | int]:
    """AUC per configured pose bin, balanced and over all faces, and mean NME, for each method (``val_`` for
    the first, ``val_teacher_`` for the teacher's row), and how many faces were scored in each bin."""
    edges, thr = cfg.eval.pose_bins, cfg.eval.auc_threshold
    keys = metrics.bin_keys(edges)
    out: dict[str, float | int] = {}
    for meth in methods:
        prefix = "val" if meth.name == "val" else "val_teacher"
        e = a["nme"][meth.name]
        by_pose = metrics.auc_by_pose(e, a["yaw"], threshold=thr, edges=edges)
        out[f"{prefix}_auc_balanced"] = by_pose["balanced"]
        for k in keys:
            out[f"{prefix}_auc_{k}"] = by_pose[k]
        out[f"{prefix}_auc"] = metrics.auc(e, thr)
        out[f"{prefix}_nme"] = float(np.mean(e[~np.isnan(e)])) if np.any(~np.isnan(e)) else float("nan")
    counts = metrics.pose_counts(a["nme"]["val"], a["yaw"], edges)
    out["val_faces"] = len(a["yaw"])
    out["val_faces_landmarks"] = counts["all"]
    for k in keys:
        out[f"val_faces_{k}"] = counts[k]
    out["val_faces_unknown_yaw"] = counts["unknown_yaw"]
    return out
