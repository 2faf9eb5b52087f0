"""``superfan train fan|superfan``: train the HR teacher FAN, or the Super-FAN stages, on Ray Train.

``train fan`` runs the config's stages of kind ``fan`` (the packaged profiles call it ``teacher``; a
config without one gets ``StageConfig(name="teacher", kind="fan", epochs=--epochs or 30)``).
``train superfan`` runs the other stages (or ``--stages a,b``) in order as one Train run and needs the
teacher checkpoint. Both attach to ``RAY_ADDRESS`` when set, else start Ray locally, and print the final
metrics and the URL of the last checkpoint (pass it to ``--teacher``, ``--init`` or ``superfan evaluate``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from superfan.cliargs import HelpFormatter, deprecated, examples, info
from superfan.errors import TrainingDiverged, UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    fan_help = "train the HR teacher FAN on ground-truth landmark heatmaps"
    sr_help = "train the Super-FAN stages (needs --teacher)"
    fan = sub.add_parser(
        "fan", help=fan_help, description=fan_help, formatter_class=HelpFormatter,
        epilog=examples("superfan train fan --config tiny --data shards/train --val shards/val --storage runs"),
    )  # fmt: skip
    sr = sub.add_parser(
        "superfan", help=sr_help, description=sr_help, formatter_class=HelpFormatter,
        epilog=examples("superfan train superfan --config tiny --data shards/train --val shards/val "
                        "--teacher TEACHER_CKPT --storage runs"),
    )  # fmt: skip
    for p in (fan, sr):
        p.add_argument("--config", default="tiny", help="profile name (tiny, paper) or YAML path")
        p.add_argument("--data", action="append", default=None, help="train shards: URL, brace pattern or manifest")
        p.add_argument("--val", action="append", default=None, help="validation shards (reported as val_*)")
        p.add_argument("--storage", default=None,
                       help="local dir or s3:// for Ray results (default: the config's train.storage)")  # fmt: skip
        p.add_argument("--out", dest="storage", action=deprecated("--storage"))
        p.add_argument("--name", default=None, help="run name (re-using a name resumes that run)")
        p.add_argument("--train-workers", dest="workers", type=int, default=None,
                       help="Ray Train workers (DDP ranks) (default: the config's train.workers)")  # fmt: skip
        p.add_argument("--workers", dest="workers", type=int, action=deprecated("--train-workers"))
        p.add_argument("--init", default=None, help="checkpoint to start from (continues it if its stage is run)")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.batch_size=32")
    fan.add_argument("--epochs", type=int, default=None, help="epochs of the teacher stage (default: the config's)")
    sr.add_argument("--teacher", default=None, help="teacher FAN checkpoint (from `superfan train fan`)")
    sr.add_argument("--stages", default=None, help="comma-separated stage names (default: all non-teacher)")


def _config(args: argparse.Namespace) -> Any:
    from superfan.config import StageConfig, load_config, revalidated

    overrides = list(args.overrides or [])
    if args.workers is not None:
        overrides.append(f"train.workers={args.workers}")
    cfg = load_config(args.config, overrides, for_training=args.what != "fan")  # the teacher needs no ResNet-50
    if args.data:
        cfg.data.train = args.data
    if args.val:
        cfg.data.val = args.val
    if not cfg.data.train:
        raise UserError("no training data: pass --data URL (shards, brace pattern or manifest.json)")
    if args.what == "fan":
        if not any(s.kind == "fan" for s in cfg.stages):
            cfg.stages = [StageConfig(name="teacher", kind="fan", epochs=30), *cfg.stages]
        if args.epochs is not None:  # validated like the config: 0 or -1 is one line, not ignored

            def set_epochs(data: dict[str, Any]) -> None:
                for stage in data["stages"]:
                    if stage["kind"] == "fan":
                        stage["epochs"] = args.epochs

            cfg = revalidated(cfg, "--epochs", set_epochs)
    return cfg


def _failure_line(err: BaseException) -> str:
    """The root cause of a failed Train run as one line (TrainingDiverged and other user errors)."""
    text = str(err)
    for marker in (TrainingDiverged.__name__, "BadData", "ConfigError", "StorageError", "IntegrityError"):
        if marker in text:
            tail = text[text.rindex(marker) :].splitlines()[0]
            return tail
    return text.strip().splitlines()[-1] if text.strip() else type(err).__name__


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from superfan.names import check_name
    from superfan.stagekinds import require_teacher
    from superfan.train.driver import (
        build_trainer,
        checkpoint_url,
        preflight,
        raise_data_error,
        read_stop,
        resolve_stages,
        run_url,
    )

    if args.name is not None:  # before anything else: a run name becomes a storage path
        check_name(args.name)
    cfg = _config(args)
    stages = None
    if args.what == "fan":
        stages = [s.name for s in cfg.stages if s.kind == "fan"]
    elif args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    name = check_name(args.name or f"{args.what}-{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}")
    root = args.storage or cfg.train.storage
    stages = resolve_stages(cfg, stages, args.init)  # user errors before Ray starts
    teacher = getattr(args, "teacher", None) or cfg.train.teacher
    require_teacher(cfg, stages, teacher)
    preflight(cfg, teacher=teacher, resume_from=args.init, storage_url=root, stages=stages)
    import ray.train

    from superfan.train.session import ray_session

    with ray_session(verbose_logs=args.verbose):
        trainer = build_trainer(
            cfg,
            name=name,
            storage=root,
            stages=stages,
            teacher=getattr(args, "teacher", None),
            resume_from=args.init,
        )
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as err:
            raise UserError(f"training failed: {_failure_line(err)}") from None
    raise_data_error(read_stop(run_url(root, name)) or result.metrics)
    metrics = {k: v for k, v in (result.metrics or {}).items() if not k.startswith("_")}
    info(json.dumps(metrics, indent=2, default=str))  # the checkpoint below is the result
    if result.checkpoint is not None:
        print(f"checkpoint: {checkpoint_url(result.checkpoint.path, root)}")
    return 0
