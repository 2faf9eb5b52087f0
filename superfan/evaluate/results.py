"""Tables 1 and 2, CED curves and sample faces from one scoring pass, and the files they are written to."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from superfan import metrics, storage
from superfan.config import Config
from superfan.errors import BadData
from superfan.evaluate.methods import BASELINES, Method
from superfan.evaluate.scoring import Modes, pick_samples, run_pass
from superfan.landmarks import pose_bin, pose_bin_names
from superfan.render.outputs import FIGURES

RESULTS_FORMAT = "superfan-evaluation/1"

#: Output file names inside ``out_dir``: the data written here, and the figures ``superfan.render.outputs``
#: draws from it (``report`` re-renders those from the JSON + samples npz).
FILES = {"json": "results.json", "samples_npz": "samples.npz", "per_face": "per_face.npz", **FIGURES}


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
    with Modes(*mods), torch.inference_mode():
        got = run_pass(methods, loader, edges, max_faces=max_faces, samples=samples, progress=progress)
    if not got.yaw:  # tables of zero faces are no result: say so instead of writing empty ones
        data = ", ".join(map(str, (meta or {}).get("data") or [])) or "the data"
        raise BadData(f"no face to evaluate in {data}: it yielded none (every sample damaged or skipped, "
                      "or no samples at all); nothing written")  # fmt: skip
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
        subsets = a["nme_subsets"].get(meth.name, {})
        table2.append(
            {
                "method": meth.name,
                "kind": meth.kind,
                "source": meth.source,
                "auc": _auc_row(e, yaw, edges, thr),
                "nme": metrics.mean_by_pose(e, yaw, edges),
                "auc_inner": _auc_row(subsets["inner"], yaw, edges, thr) if "inner" in subsets else None,
                "nme_groups": {k: metrics.mean_by_pose(v, yaw, edges) for k, v in subsets.items() if k != "inner"},
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
    from superfan.provenance import code_version
    from superfan.records import now_iso

    results["created"], results["code_version"] = now_iso(), code_version()
    results = _clean(results)
    picked = pick_samples(got.samples, samples)
    sample_arrays = _sample_arrays(picked, names) if picked else None
    if out_dir is not None:
        results["files"] = {"json": FILES["json"], **write_outputs(results, str(out_dir), sample_arrays)}
        _write_npz(
            storage.join(str(out_dir), FILES["per_face"]),
            keys=np.array(got.keys),
            yaw=yaw,
            has_landmarks=a["has_landmarks"],
            **{f"nme/{k}": v for k, v in a["nme"].items()},
            **{f"nme_{g}/{k}": v for k, d in a["nme_subsets"].items() for g, v in d.items()},
            **{f"psnr/{k}": v for k, v in a["psnr"].items()},
            **{f"ssim/{k}": v for k, v in a["ssim"].items()},
            **{f"grid/{k}": v for k, v in a["grid"].items()},
        )
        results["files"]["per_face"] = FILES["per_face"]
        storage.write_text(storage.join(str(out_dir), FILES["json"]), json.dumps(results, indent=2))
    return results


def _auc_row(errors: np.ndarray, yaw: np.ndarray, edges: Sequence[float], thr: float) -> dict[str, float]:
    """AUC per yaw bin, ``balanced`` and over ``all`` faces: one Table 2 cell row."""
    return {**metrics.auc_by_pose(errors, yaw, threshold=thr, edges=edges), "all": metrics.auc(errors, thr)}


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
