"""A sweep's inputs when the user gives none: synthetic shards packed once, a teacher FAN trained once.

Both are kept under the sweep's storage (``<storage>/data/synthetic-*``, ``<storage>/teachers/``), so the
next sweep on the same storage and data reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os

from superfan import storage
from superfan.cliargs import info
from superfan.config import Config, StageConfig
from superfan.errors import UserError
from sweeps.settings import Sweep


def ensure_data(sweep: Sweep) -> None:
    """Pack synthetic train/val shard sets under ``<storage>/data`` when the config names no data."""
    data = sweep.config.data
    if data.train:
        return
    from shards.pack import PackOptions, pack

    s = sweep.settings
    for split, n, seed in (("train", s.synthetic_train, 0), ("val", s.synthetic_val, 1)):
        dest = storage.join(sweep.storage, "data", f"synthetic-{n}-{split}")
        manifest = storage.join(dest, "manifest.json")
        if not storage.exists(manifest):
            info(f"packing {n} synthetic faces -> {dest}", flush=True)
            workers = max(1, min(2, os.cpu_count() or 1))
            pack(
                PackOptions(
                    format="synthetic",
                    src=str(n),
                    dest=dest,
                    split=split,
                    seed=seed,
                    workers=workers,
                    progress=False,
                    overwrite=True,
                )
            )
        setattr(data, split, [manifest])


def teacher_key(cfg: Config, stage: StageConfig) -> str:
    """What the teacher depends on (its FAN, its stage, its data, the face geometry): a changed config
    trains a new teacher, an unchanged one reuses the last. Hashed from the JSON form (tuples as lists)."""
    config = cfg.to_dict()
    basis = {
        "fan": config["model"]["fan"],
        "stage": stage.model_dump(mode="json"),
        "data": {k: config["data"][k] for k in ("train", "val", "batch_size", "samples_per_epoch", "seed")},
        "augment": config["augment"],
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:12]


def ensure_teacher(sweep: Sweep) -> str:
    """The teacher FAN checkpoint: ``--teacher``, else one trained earlier for this config, else train it.

    Training is one ``TorchTrainer`` run of the config's ``fan`` stage (the same function as ``superfan
    train fan``); a pointer under ``<storage>/teachers/`` makes the next sweep on the same data reuse it.
    """
    if sweep.teacher:
        return sweep.teacher
    from superfan.train.driver import build_trainer, checkpoint_url, raise_data_error, read_stop, run_url

    cfg = sweep.config.model_copy(deep=True)
    fan_stages = [s for s in cfg.stages if s.kind == "fan"]
    stage = fan_stages[0] if fan_stages else StageConfig(name="teacher", kind="fan", epochs=16)
    if sweep.settings.teacher_epochs:
        stage.epochs = sweep.settings.teacher_epochs
    cfg.stages = [stage]
    key = teacher_key(sweep.config, stage)
    pointer = storage.join(sweep.storage, "teachers", f"{cfg.profile}-{key}.json")
    if storage.exists(pointer):
        url = json.loads(storage.read_text(pointer))["checkpoint"]
        if storage.exists(storage.join(url, "checkpoint.pt")):
            info(f"teacher FAN: reusing {url}", flush=True)
            return url
    info(f"teacher FAN: training {stage.epochs} epochs (stage {stage.name!r}) ...", flush=True)
    root = storage.join(sweep.storage, "runs")
    import ray.train

    trainer = build_trainer(cfg, name=f"teacher-{cfg.profile}-{key}", storage=root, stages=[stage.name])
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        raise UserError(f"training the teacher FAN failed: {lines[-1] if lines else type(err).__name__}") from None
    raise_data_error(read_stop(run_url(root, f"teacher-{cfg.profile}-{key}")), "training the teacher FAN")
    if result.checkpoint is None:
        raise UserError("the teacher FAN run finished without a checkpoint")
    url = checkpoint_url(result.checkpoint.path, root)
    m = result.metrics or {}
    nan = float("nan")
    info(f"teacher FAN: {url} (val_auc {m.get('val_auc', nan):.4f}, nme {m.get('val_nme', nan):.4f})")
    storage.write_text(
        pointer,
        json.dumps({"checkpoint": url, "metrics": {k: v for k, v in m.items() if k.startswith("val_")}}),
    )
    return url
