"""The paper's evaluation protocol (section 5, Tables 1 and 2), shared by training validation and reports.

One pass over a validation/test loader scores every method on the same faces:

* **Table 1** (super-resolution): PSNR and SSIM (RGB, see :mod:`superfan.metrics`) of each *image source*
  against HR, per yaw bin and balanced, and the grid artefact (``metrics.grid_artefact``: power at the
  2- and 4-px periods relative to HR, all faces). Sources: ``bilinear`` and ``bicubic`` (the baselines)
  and each checkpoint's generator, labelled by the paper's variant name (:func:`variant_name`).
* **Table 2** (landmarks as an indirect quality measure): AUC at NME 0.1 per yaw bin and balanced, for
  ``FAN-bilinear`` / ``FAN-bicubic`` (teacher on the baselines), ``FAN-<variant>`` (teacher on a
  checkpoint's SR image, e.g. ``FAN-Ours-pixel``), ``Super-FAN`` (an end-to-end checkpoint's own jointly
  trained FAN on its own SR image) and ``FAN-HR`` (teacher on the HR image: the upper bound).

Choices where the paper is silent:

* Bilinear upsampling is ``F.interpolate(mode="bilinear", align_corners=False)`` of the 16x16 input.
* Bicubic upsampling is ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)``, clamped to
  [0, 1]: torch's antialiased path uses the Keys a = -0.5 kernel of MATLAB's ``imresize`` and PIL's
  ``BICUBIC`` (equal to PIL to 1e-7; the non-antialiased path is OpenCV's a = -0.75), i.e. the kernel
  ``superfan.data.degrade.downsample`` makes the LR with. It is the usual SR baseline ([20] and after).
* A FAN sees the generator's *unclamped* output, as in training and ``superfan enhance``; PSNR/SSIM and
  the figures use the output clamped to [0, 1]. Bilinear output of [0, 1] input never leaves [0, 1].
* Landmarks come from the last stack via ``faces.heatmaps_to_points`` (sub-pixel refinement).
* Faces without landmarks are skipped for NME/AUC but count for PSNR/SSIM; faces with unknown yaw count
  in the ``all`` columns but in no bin, hence not in ``balanced`` (see ``metrics.auc_by_pose``).
* Everything runs in float32 under ``torch.inference_mode`` (no bf16), so numbers do not depend on the
  device's autocast support.

:func:`evaluate_models` is the core (already-built models, any iterable of contract batches) and is what
the tests exercise; :func:`evaluate_methods` only loads checkpoints and the data stream around it.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from superfan import metrics, storage
from superfan.config import Config
from superfan.errors import UserError
from superfan.faces import heatmaps_to_points, pose_bin, pose_bin_names
from superfan.models.generator import bicubic_upsample
from superfan.render.outputs import FIGURES

RESULTS_FORMAT = "superfan-evaluation/1"
Kind = Literal["bilinear", "bicubic", "sr", "superfan", "hr"]
BASELINES = ("bilinear", "bicubic")  # kinds whose image is an interpolation of the LR, no network

#: Output file names inside ``out_dir``: the data written here, and the figures ``superfan.render.outputs``
#: draws from it (``report`` re-renders those from the JSON + samples npz).
FILES = {"json": "results.json", "samples_npz": "samples.npz", "per_face": "per_face.npz", **FIGURES}


@dataclass
class Method:
    """One row of Table 2: which image a FAN localises on, and which FAN.

    ``kind``: ``bilinear`` / ``bicubic`` (generator None, that upsampling of LR), ``sr`` (a generator + the
    teacher), ``superfan`` (a generator + its own jointly trained FAN), ``hr`` (the HR image itself).
    ``source`` names the image (the Table 1 row): ``bilinear``, ``bicubic``, the checkpoint's label, or
    ``HR``; methods with the same source share one generator pass per batch.
    """

    name: str
    fan: nn.Module
    generator: nn.Module | None = None
    kind: Kind = "sr"
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind in ("sr", "superfan") and self.generator is None:
            raise ValueError(f"method {self.name!r} of kind {self.kind!r} needs a generator")
        if not self.source:
            self.source = {"bilinear": "bilinear", "bicubic": "bicubic", "hr": "HR"}.get(self.kind, self.name)


SUPER_FAN = "Super-FAN"
#: Section 5's word for each loss term (Eq. 5) in the variant names: Ours-pixel-feature-heatmap-GAN.
_TERM_NAMES = {"pixel": "pixel", "perceptual": "feature", "heatmap": "heatmap", "adversarial": "GAN"}


def standard_methods(
    teacher: nn.Module,
    generators: Sequence[tuple[str, nn.Module, nn.Module | None]] = (),
) -> list[Method]:
    """The paper's Table 2 rows: FAN-bilinear, FAN-bicubic, FAN-<label> ..., Super-FAN ..., FAN-HR.

    ``generators`` holds ``(label, generator, own_fan_or_None)``; an own FAN (end-to-end checkpoints only)
    adds a row that localises on the same SR image as ``FAN-<label>`` with that FAN: ``Super-FAN`` (the
    paper's name) when the label is a ``Super-FAN`` variant (``Super-FAN``, ``Super-FAN#2``), else
    ``Super-FAN-<label>``. FAN-bicubic is not in the paper's Table 2; it shows how much of FAN-X's gain over
    FAN-bilinear a better interpolation alone gives.
    """
    rows = [Method("FAN-bilinear", teacher, None, "bilinear"), Method("FAN-bicubic", teacher, None, "bicubic")]
    rows += [Method(f"FAN-{label}", teacher, gen, "sr", source=label) for label, gen, _ in generators]
    rows += [
        Method(label if label.startswith(SUPER_FAN) else f"{SUPER_FAN}-{label}", fan, gen, "superfan", source=label)
        for label, gen, fan in generators
        if fan is not None
    ]
    rows.append(Method("FAN-HR", teacher, None, "hr"))
    return rows


def variant_name(stage_kind: str | None, losses: Any = None) -> str | None:
    """The paper's name (section 5, Tables 1 and 2) of a generator trained by a stage of ``stage_kind``.

    ``pixel`` -> ``Ours-pixel``, ``feature`` -> ``Ours-pixel-feature``, ``heatmap`` ->
    ``Ours-pixel-feature-heatmap``, ``gan`` -> ``Ours-pixel-feature-heatmap-GAN`` (the paper's name for the
    GAN-trained generator whose FAN was *not* trained with it, Table 2's FAN-Ours-pixel-feature-heatmap-GAN),
    ``end2end`` -> ``Super-FAN``. ``None`` for kinds without a generator (``fan``) or unknown ones.

    ``losses`` (a ``LossesConfig`` or its dict, e.g. a checkpoint's ``config["losses"]``) drops the terms
    the run switched off: a ``heatmap`` stage with ``perceptual.weight = 0`` is ``Ours-pixel-heatmap``, not
    the paper's variant, and an ``end2end`` stage short of a term is ``Ours-<terms>-end2end``, not Super-FAN.
    """
    from superfan.train.stages import STAGE_SPECS  # the one table of what each kind trains (no Ray import)

    spec = STAGE_SPECS.get(str(stage_kind))
    if spec is None or "generator" not in spec.trains:
        return None
    terms = tuple(spec.losses)
    if losses is not None:
        weights = losses.model_dump() if hasattr(losses, "model_dump") else dict(losses)
        terms = tuple(t for t in terms if float((weights.get(t) or {}).get("weight", 1.0)) > 0)
        if not terms:
            return None
    name = "Ours-" + "-".join(_TERM_NAMES.get(t, t) for t in terms)
    if "fan" in spec.trains:  # end-to-end: the FAN is trained with the generator
        return SUPER_FAN if terms == tuple(spec.losses) else f"{name}-end2end"
    return name


def upsample_bilinear(lr: torch.Tensor, size: int = 64) -> torch.Tensor:
    """The baseline of both tables: bilinear (half-pixel centres, no antialiasing) upsampling of LR."""
    return F.interpolate(lr, size=(size, size), mode="bilinear", align_corners=False)


def upsample_bicubic(lr: torch.Tensor, size: int = 64) -> torch.Tensor:
    """The standard SR baseline: bicubic upsampling with MATLAB ``imresize``'s kernel, clamped to [0, 1].

    ``antialias=True`` selects torch's Keys a = -0.5 kernel (PIL's ``BICUBIC``, MATLAB's ``imresize``), the
    kernel the LR was made with (``degrade.downsample``); for upsampling it does not widen the kernel.
    Clamped because bicubic overshoots at edges, as ``degrade.downsample`` clamps.
    """
    return bicubic_upsample(lr, size).clamp(0.0, 1.0)


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


def _run(
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
            if len(idx):
                pts = torch.full((len(hr), gt.shape[1], 2), float("nan"))
                pts[idx] = _locate(meth.fan, raw[meth.source][idx.to(device)])
                points[meth.name] = pts
                err[idx.numpy()] = metrics.nme(pts[idx], gt[idx]).numpy()
            out.nme.setdefault(meth.name, []).append(err)

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


def _pick_samples(samples: dict[int, list[dict[str, Any]]], n: int) -> list[dict[str, Any]]:
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


class _Modes:
    """Put modules in eval mode for the duration and restore each one's own train flag afterwards."""

    def __init__(self, *modules: nn.Module | None) -> None:
        self.modules = list({id(m): m for m in modules if m is not None}.values())

    def __enter__(self) -> _Modes:
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
    with _Modes(generator, loc, teacher), torch.inference_mode():
        if teacher is not None and teacher is not loc and not _same_weights(loc, teacher):
            methods.append(Method("teacher", teacher, generator, kind, source="sr"))
        got = _run(methods, loader, cfg.eval.pose_bins, max_faces=cfg.data.val_samples, max_batches=max_batches)
    a = got.arrays()
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
    psnr, ssim = a["psnr"].get("sr", np.zeros(0)), a["ssim"].get("sr", np.zeros(0))
    out["val_psnr"] = float(np.mean(psnr)) if len(psnr) else float("nan")
    out["val_ssim"] = float(np.mean(ssim)) if len(ssim) else float("nan")
    out["val_grid_artefact"] = metrics.grid_ratio(a["grid"].get("sr", np.zeros(0)), a["grid"].get("HR", np.zeros(0)))
    counts = metrics.pose_counts(a["nme"]["val"], a["yaw"], edges)
    out["val_faces"] = len(a["yaw"])
    out["val_faces_landmarks"] = counts["all"]
    for k in keys:
        out[f"val_faces_{k}"] = counts[k]
    out["val_faces_unknown_yaw"] = counts["unknown_yaw"]
    return out


# ------------------------------------------------------------------------------------------ evaluation


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars become floats, NaN/inf become None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def evaluate_models(
    methods: Sequence[Method],
    loader: Iterable[dict[str, Any]],
    cfg: Config,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    max_faces: int | None = None,
    samples: int = 8,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tables 1 and 2, CED curves and sample faces for already-built models; writes files if ``out_dir``.

    Returns the results dict (also ``results.json``): ``table1`` rows (one per non-HR image source, PSNR
    and SSIM per bin, ``balanced`` and ``all``, and ``grid_artefact`` over all faces), ``table2`` rows (one
    per method, AUC and mean NME per bin, ``balanced`` and ``all``), ``ced`` curves on ``[0, threshold]``,
    face counts and pose sources.
    """
    if not methods:
        raise ValueError("evaluate_models needs at least one method")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    edges, thr = tuple(cfg.eval.pose_bins), cfg.eval.auc_threshold
    mods = [m for meth in methods for m in (meth.fan, meth.generator)]
    with _Modes(*mods), torch.inference_mode():
        got = _run(methods, loader, edges, max_faces=max_faces, samples=samples, progress=progress)
    a = got.arrays()
    yaw = a["yaw"]
    keys = metrics.bin_keys(edges)
    bins = pose_bin(yaw, edges)
    grid = np.linspace(0.0, thr, 201)
    table1 = [
        {
            "method": src,
            "psnr": metrics.mean_by_pose(a["psnr"][src], yaw, edges),
            "ssim": metrics.mean_by_pose(a["ssim"][src], yaw, edges),
            "grid_artefact": metrics.grid_ratio(a["grid"][src], a["grid"].get("HR", np.zeros(0))),
            "baseline": src in BASELINES,
        }
        for src in a["psnr"]
    ]
    table2 = []
    for meth in methods:
        e = a["nme"][meth.name]
        row_auc = metrics.auc_by_pose(e, yaw, threshold=thr, edges=edges)
        row_auc["all"] = metrics.auc(e, thr)
        table2.append(
            {
                "method": meth.name,
                "kind": meth.kind,
                "source": meth.source,
                "auc": row_auc,
                "nme": metrics.mean_by_pose(e, yaw, edges),
            }
        )
    first = a["nme"][methods[0].name]
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "threshold": thr,
        "pose_bins": {"edges": list(edges), "keys": keys, "names": pose_bin_names(edges)},
        "faces": {
            "all": len(yaw),
            "per_bin": {k: int(np.sum(bins == i)) for i, k in enumerate(keys)},
            "unknown_yaw": int(np.sum(bins < 0)),
            "with_landmarks": metrics.pose_counts(first, yaw, edges),
        },
        "pose_sources": dict(got.pose_sources),
        "table1": table1,
        "table2": table2,
        "ced": {
            "thresholds": grid.tolist(),
            "curves": {m.name: metrics.ced(a["nme"][m.name], grid).tolist() for m in methods},
        },
        "meta": meta or {},
    }
    from superfan import code_version
    from superfan.records import now_iso

    results["created"], results["code_version"] = now_iso(), code_version()
    results = _clean(results)
    picked = _pick_samples(got.samples, samples)
    sample_arrays = _sample_arrays(picked, names) if picked else None
    if out_dir is not None:
        results["files"] = {"json": FILES["json"], **write_outputs(results, str(out_dir), sample_arrays)}
        _write_npz(
            storage.join(str(out_dir), FILES["per_face"]),
            keys=np.array(got.keys),
            yaw=yaw,
            has_landmarks=a["has_landmarks"],
            **{f"nme/{k}": v for k, v in a["nme"].items()},
            **{f"psnr/{k}": v for k, v in a["psnr"].items()},
            **{f"ssim/{k}": v for k, v in a["ssim"].items()},
            **{f"grid/{k}": v for k, v in a["grid"].items()},
        )
        results["files"]["per_face"] = FILES["per_face"]
        storage.write_text(storage.join(str(out_dir), FILES["json"]), json.dumps(results, indent=2))
    return results


def _sample_arrays(picked: list[dict[str, Any]], names: list[str]) -> dict[str, np.ndarray]:
    return {
        "methods": np.array(names),
        "lr": np.stack([p["lr"] for p in picked]).astype(np.float32),
        "hr": np.stack([p["hr"] for p in picked]).astype(np.float32),
        "gt": np.stack([p["gt"] for p in picked]).astype(np.float32),
        "yaw": np.array([p["yaw"] for p in picked], dtype=np.float64),
        "keys": np.array([p["key"] for p in picked]),
        "images": np.stack([p["images"] for p in picked]).astype(np.float32),  # (S, M, 3, H, W)
        "points": np.stack([p["points"] for p in picked]).astype(np.float32),  # (S, M, 68, 2)
    }


def _write_npz(url: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    storage.write_bytes(url, buf.getvalue())


def write_outputs(
    results: dict[str, Any], out_dir: str, samples: dict[str, np.ndarray] | None = None
) -> dict[str, str]:
    """The rendered tables and figures, and (with ``samples``) the samples npz they are drawn from.

    Returns ``{kind: file name}``; used by ``superfan evaluate`` and ``superfan report``.
    """
    from superfan.render.outputs import write_figures

    files = write_figures(results, out_dir, samples)
    if samples is not None:
        _write_npz(storage.join(out_dir, FILES["samples_npz"]), **samples)
        files["samples_npz"] = FILES["samples_npz"]
    return files


def load_samples(url: str) -> dict[str, np.ndarray] | None:
    """The sample faces saved beside a results JSON (None when absent), for ``superfan report``."""
    if not storage.exists(url):
        return None
    with np.load(io.BytesIO(storage.read_bytes(url)), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# ------------------------------------------------------------------------------------ checkpoints, data


def _label(path: str, payload: dict[str, Any]) -> str:
    """The paper's variant name of a checkpoint's generator (:func:`variant_name` of its stage kind and its
    config's loss weights), else its stage name, else its directory name."""
    losses = (payload.get("config") or {}).get("losses")
    variant = variant_name(payload.get("stage_kind"), losses if isinstance(losses, dict) else None)
    if variant:
        return variant
    stage = payload.get("stage")
    if stage:
        return str(stage)
    return os.path.basename(str(path).rstrip("/").removesuffix("/checkpoint.pt")) or "checkpoint"


def methods_from_checkpoints(
    teacher_ckpt: str, checkpoints: Sequence[str], device: str | torch.device = "cpu"
) -> tuple[list[Method], dict[str, Any]]:
    """Load the teacher FAN and each checkpoint, and lay out the paper's Table 2 rows for them.

    Returns ``(methods, meta)``; ``meta`` records what was loaded (paths, stages, configs) for the JSON.
    A checkpoint's label is the paper's variant name of its stage kind (``Ours-pixel`` ... ``Super-FAN``,
    :func:`variant_name`), else its stage name, made unique with ``#2``, ``#3``.
    """
    from superfan.checkpoint import load_checkpoint, models_from_checkpoint, require_file

    require_file(teacher_ckpt)
    payload = load_checkpoint(teacher_ckpt)
    teacher = models_from_checkpoint(payload, device)["fan"]
    if teacher is None:
        raise UserError(
            f"{teacher_ckpt}: holds no FAN (stage_kind {payload.get('stage_kind')!r}); "
            "--fan takes the teacher from `superfan train fan`"
        )
    meta: dict[str, Any] = {
        "teacher": {
            "path": str(teacher_ckpt),
            "stage": payload.get("stage"),
            "config": payload.get("config"),
        },
        "checkpoints": [],
    }
    gens: list[tuple[str, nn.Module, nn.Module | None]] = []
    used: Counter = Counter()
    for path in checkpoints:
        require_file(path)
        pl = load_checkpoint(path)
        nets = models_from_checkpoint(pl, device)
        if nets["generator"] is None:
            raise UserError(
                f"{path}: holds no generator (stage_kind {pl.get('stage_kind')!r}); a FAN checkpoint goes to --fan"
            )
        label = _label(path, pl)
        used[label] += 1
        if used[label] > 1:
            label = f"{label}#{used[label]}"
        own = nets["fan"] if pl.get("stage_kind") == "end2end" else None
        gens.append((label, nets["generator"], own))
        meta["checkpoints"].append(
            {
                "path": str(path),
                "label": label,
                "stage": pl.get("stage"),
                "stage_kind": pl.get("stage_kind"),
                "global_epoch": pl.get("global_epoch"),
                "step": pl.get("step"),
                "perceptual_pretrained": pl.get("perceptual_pretrained"),
                "config": pl.get("config"),
            }
        )
    return standard_methods(teacher, gens), meta


def evaluate_methods(
    data_urls: Sequence[str],
    teacher_ckpt: str,
    checkpoints: Sequence[str],
    cfg: Config | None,
    out_dir: str | os.PathLike[str],
    max_faces: int | None = None,
    *,
    device: str | torch.device = "cpu",
    samples: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """``superfan evaluate``: Tables 1 and 2 for a teacher FAN and checkpoints on a shard set.

    ``cfg`` sets the data stream (batch size, LR degradation) and the bins/threshold; None uses the
    config saved in the first checkpoint (else the teacher's), so LR inputs are degraded the way the
    generators were trained. ``cfg.data.val_samples`` is ignored (every face is scored unless
    ``max_faces``).
    """
    from superfan.config import from_dict

    methods, meta = methods_from_checkpoints(teacher_ckpt, checkpoints, device)  # bad paths fail first
    from superfan.data.stream import make_loader

    if cfg is None:
        saved = (meta["checkpoints"][0]["config"] if meta["checkpoints"] else None) or meta["teacher"]["config"]
        cfg = from_dict(saved, source="checkpoint config")
    # The whole test set: the profile's validation cap (for fast in-training validation) does not apply here;
    # --max-faces is the cap.
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val_samples": None})})
    meta["data"] = list(data_urls)
    meta["config"] = cfg.to_dict()
    meta["max_faces"] = max_faces
    loader = make_loader(list(data_urls), cfg, train=False)
    return evaluate_models(
        methods, loader, cfg, out_dir, max_faces=max_faces, samples=samples, progress=progress, meta=meta
    )
