"""The command line shared by the sweep scripts: options, resolving a sweep (:func:`plan`), and running it.

``main`` maps every user error to one line and exit 2; :func:`plan` and the preflight find the errors
that need no Ray (sweep file, config, storage, data, teacher) before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Importing superfan.train.driver (through superfan.train.session) sets Ray's defaults (Train V2 inside
# Tune, Train runs visible in the dashboard, no usage reporting) before Ray is imported anywhere in this
# process: the in-process cluster and all its workers inherit them.
from superfan import storage
from superfan.cliargs import HelpFormatter, add_output_flags, add_version, deprecated, examples, info, output_flags
from superfan.errors import ConfigError, UserError, run_command
from superfan.redact import redact, remember, reveal
from superfan.stagekinds import default_stages
from superfan.train.driver import raise_data_error
from sweeps import sealing
from sweeps.inputs import ensure_data, ensure_teacher
from sweeps.results import failure_line, print_results, promote_best, trial_rows, write_report
from sweeps.settings import Sweep, read_sweep_file
from sweeps.space import fixed_values, resolve_space, trial_config
from sweeps.tuner import build_tuner, can_resume, restore_tuner

SWEEPS_DIR = Path(__file__).resolve().parent
CONFIGS_DIR = SWEEPS_DIR / "configs"
DEFAULT_STORAGE = "./.superfan"
#: The Optuna storage and MLflow URIs from the environment (when the options are not given): a URI with a
#: password belongs here rather than on a command line, which ``ps`` and Ray's job records show.
OPTUNA_STORAGE_ENV = "SUPERFAN_OPTUNA_STORAGE"
MLFLOW_URI_ENV = "SUPERFAN_MLFLOW_URI"


def sweep_config(value: str) -> str:
    """``--config``: a sweep file path, or the name of one in sweeps/configs/ (``tiny``, ``paper``)."""
    named = CONFIGS_DIR / f"{value}.yaml"
    return str(named) if "/" not in value and not value.endswith((".yaml", ".yml")) and named.is_file() else value


def build_parser(kind: str, description: str) -> argparse.ArgumentParser:
    script = f"python sweeps/{kind}.py"
    p = argparse.ArgumentParser(
        prog=f"sweeps/{kind}.py", description=description, formatter_class=HelpFormatter,
        epilog=examples(
            f"{script}                      # embedded Ray, synthetic faces, ./.superfan/",
            f"{script} --config tiny --data shards/train --val shards/val --name mine",
            f"ray job submit --working-dir . -- {script} --config paper --storage s3://bucket/sweeps \\",
            "    --data s3://bucket/shards/train --val s3://bucket/shards/val model.perceptual_weights=URL",
        ),
    )  # fmt: skip
    add_version(p)
    p.add_argument(
        "--config",
        type=sweep_config,
        default=str(CONFIGS_DIR / "tiny.yaml"),
        help="sweep file: a name in sweeps/configs/ (tiny, paper) or a YAML path (base profile + sweep: + "
        "search:); default tiny",
    )
    p.add_argument("--samples", type=int, default=None, help="trials (default: the file's sweep.samples)")
    p.add_argument("--train-workers", dest="workers_per_trial", type=int, default=None, metavar="N",
                   help="Ray Train workers (DDP ranks) per trial (default: sweep.workers_per_trial)")  # fmt: skip
    p.add_argument("--workers-per-trial", dest="workers_per_trial", type=int, action=deprecated("--train-workers"))
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials at once (default: sweep.max_concurrent, else every GPU trial at once so an "
                        "autoscaler sees them, and as many CPU trials as the cluster's CPUs fit)")  # fmt: skip
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="local directory or s3://bucket/prefix")
    p.add_argument("--data", action="append", default=None, help="train shards: URL, brace pattern or manifest")
    p.add_argument("--val", action="append", default=None, help="validation shards (the promotion metric)")
    p.add_argument("--teacher", default=None, help="teacher FAN checkpoint (default: train/reuse one)")
    p.add_argument("--name", default=None, help=f"sweep name (default {kind.replace('_', '-')}-<profile>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this name")
    p.add_argument("--trust-state", action="store_true",
                   help="resume even if the sweep's state on storage is not sealed by this machine's sweep key "
                        "(a sweep from before sealing): its pickles are unpickled as is, then sealed")  # fmt: skip
    p.add_argument("--budget-hours", type=float, default=None, metavar="H",
                   help="start no new trial once the sweep has spent H device-hours (sweep.budget_hours)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="searcher seed (sweep.seed)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every selected stage (sweep.epochs)")
    p.add_argument("--multi-objective", action="store_true", help="Optuna on AUC and PSNR (Pareto TPE)")
    p.add_argument("--optuna-storage", default=None, metavar="URL",
                   help="the Optuna study's storage, what optuna-dashboard opens: sqlite:///PATH.db, postgresql://..., "
                        "mysql://... or journal:PATH (default: optuna.db beside the local storage, else "
                        "~/.superfan/optuna.db)")  # fmt: skip
    p.add_argument(
        "--mlflow",
        default=None,
        metavar="URI",
        help="log trials to this MLflow tracking URI, register the champion (pip install -e '.[mlflow]')",
    )
    p.add_argument("overrides", nargs="*", help="config overrides for every trial, e.g. data.batch_size=8")
    add_output_flags(p)
    return p


def plan(kind: str, args: argparse.Namespace) -> Sweep:
    """Resolve the sweep file, command line and data into a :class:`Sweep` (no Ray, no training)."""
    sweep_file = read_sweep_file(args.config)
    for option, env in (("optuna_storage", OPTUNA_STORAGE_ENV), ("mlflow", MLFLOW_URI_ENV)):
        if getattr(args, option) is None and os.environ.get(env):  # a URI with a password: better here than argv
            setattr(args, option, os.environ[env])
    options = ("samples", "workers_per_trial", "max_concurrent", "seed", "epochs", "budget_hours", "optuna_storage",
               "mlflow")  # fmt: skip
    settings = sweep_file.sweep.with_options({name: getattr(args, name) for name in options})
    if args.multi_objective:
        settings.multi_objective = True
    section = sweep_file.section(kind)
    cfg = sweep_file.load_config(args.overrides)
    if settings.workers_per_trial:
        cfg.train.workers = settings.workers_per_trial
    cfg.train.report_every_steps = 0  # one report per epoch: the curves and ASHA's rungs are per epoch
    # Trials build their trainers in Ray actors that do not run in this directory: local paths must be
    # absolute before they leave the driver (build_trainer would resolve them against the actor's).
    if args.data:
        cfg.data.train = [storage.absolute(u) for u in args.data]
    if args.val:
        cfg.data.val = [storage.absolute(u) for u in args.val]
    if cfg.data.train and not cfg.data.val:
        raise ConfigError("no validation data: pass --val URL (the promotion metric is validation AUC)")
    stages = settings.stages or default_stages(cfg)
    unknown = sorted(set(settings.promote_stages or []) - set(stages))
    if unknown:
        raise ConfigError(f"{args.config}: sweep.promote_stages: {unknown} are not among the stages run {stages}")
    stale = sorted(set(settings.epochs) - set(stages)) if isinstance(settings.epochs, dict) else []
    if stale:  # a budget for a stage the profile no longer has would be ignored silently
        raise ConfigError(f"{args.config}: sweep.epochs: names {stale}, which are not among the stages run {stages}")
    for stage_name in stages:
        stage = cfg.stage(stage_name)
        epochs = settings.epochs.get(stage_name) if isinstance(settings.epochs, dict) else settings.epochs
        if epochs is not None:  # validated >= 1 by SweepSettings
            stage.epochs = int(epochs)
    fixed = fixed_values(section)
    base = trial_config(cfg.to_dict(), fixed) if fixed else cfg
    from superfan.train.driver import absolute_perceptual

    absolute_perceptual(base)  # like the data: the trials' actors do not run in this directory
    specs = resolve_space(section, base, f"{args.config}: search.{kind}")
    from superfan.names import check_name

    name = check_name(args.name or f"{kind.replace('_', '-')}-{cfg.profile}")
    if redact(args.storage) != args.storage:
        raise ConfigError(f"--storage {redact(args.storage)}: no credentials in a storage URL (they would be "
                          "written with it): use the AWS variables or a profile")  # fmt: skip
    root = storage.absolute(args.storage)
    storage.check_directory(root, "--storage")
    from sweeps.searcher import check_storage_url, default_storage

    # From here on the settings hold the URIs as they may be written (passwords masked): the real ones stay
    # in this process (superfan.redact) and reach Optuna and MLflow only when they connect.
    settings.optuna_storage = remember(check_storage_url(settings.optuna_storage or default_storage(root)))
    if settings.mlflow:
        from sweeps.tracking import check_mlflow

        check_mlflow(redact(settings.mlflow))
        settings.mlflow = remember(settings.mlflow)
    return Sweep(
        kind=kind,
        name=name,
        storage=root,
        config=base,
        space=specs,
        settings=settings,
        stages=stages,
        teacher=storage.absolute(args.teacher) if args.teacher else None,
        config_file=str(args.config),
    )


def main(kind: str, description: str, argv: list[str] | None = None) -> int:
    """Entry point shared by the sweep scripts; user errors print one line and exit 2."""
    args = build_parser(kind, description).parse_args(argv)
    # On Ctrl-C or SIGTERM (superfan.train.session) Ray is already shut down: the sweep can be resumed.
    with output_flags(args):
        return run_command(
            f"sweeps/{kind}.py", lambda: _main(kind, args, argv), interrupted="interrupted; continue with --resume"
        )


def _main(kind: str, args: argparse.Namespace, argv: list[str] | None) -> int:
    sweep = plan(kind, args)
    embedded_default = not (argv if argv is not None else sys.argv[1:])
    _preflight(sweep)
    trust = args.trust_state or os.environ.get(sealing.TRUST_ENV) == "1"
    sealing.arm(trust=trust)  # from here on, the sweep state this process writes is sealed, and reads are checked
    if args.resume or embedded_default:  # nothing Tune would unpickle is read before its seal is checked
        sealing.check_experiment(sweep.experiment_url, adopt=trust)
        state_url = storage.join(sweep.experiment_url, "sweep.json")
        if storage.exists(state_url):  # a password it was started with is not in it: it must be given again
            stored = Sweep.from_json(sealing.read_checked(state_url, "sweep.json").decode("utf-8"))
            reveal(stored.settings.optuna_storage, "--optuna-storage")
            reveal(stored.settings.mlflow, "--mlflow")
    from superfan.train.session import ray_session

    with ray_session(verbose_logs=args.verbose):
        return _run(kind, sweep, args, embedded_default)


def _run(kind: str, sweep: Sweep, args: argparse.Namespace, embedded_default: bool) -> int:
    state_url = storage.join(sweep.experiment_url, "sweep.json")
    resuming = False
    if can_resume(sweep):
        if not (args.resume or embedded_default):
            raise UserError(
                f"sweep {sweep.name!r} already exists at {sweep.experiment_url}: pass --resume to "
                "continue it, or --name for a new sweep"
            )
        if storage.exists(state_url):  # the settings it started with (sealed: it names the endpoints used)
            sweep = Sweep.from_json(sealing.read_checked(state_url, "sweep.json").decode("utf-8"))
        resuming = True
    elif args.resume:
        info(f"sweep {sweep.name}: nothing to resume at {sweep.experiment_url}; starting it", flush=True)
    ensure_data(sweep)
    teacher = ensure_teacher(sweep)
    sweep.teacher = teacher
    if not resuming:
        sealing.write_sealed(state_url, sweep.to_json().encode("utf-8"))
    tuner = restore_tuner(sweep, teacher) if resuming else build_tuner(sweep, teacher)
    t0 = time.perf_counter()
    results = tuner.fit()
    rows, candidates = trial_rows(results, sweep)
    count = {s: sum(1 for r in rows if r["status"] == s) for s in ("ERROR", "DIVERGED", "BAD DATA")}
    bad_data = f", {count['BAD DATA']} stopped on bad data" if count["BAD DATA"] else ""
    print(
        f"\nsweep {sweep.name}: {len(results)} trials in {time.perf_counter() - t0:.0f} s "
        f"({count['ERROR']} errored, {count['DIVERGED']} diverged{bad_data}); experiment {sweep.experiment_url}"
    )
    stopped = [(r.metrics or {}) for r in results if isinstance((r.metrics or {}).get("data_error"), str)]
    if stopped and len(stopped) == len(results):  # every trial read the same bad data: say it once, exit 2
        print_results(rows, sweep)
        raise_data_error(stopped[0], f"all {len(results)} trials")
    failed = [r for r in results if r.error is not None]
    if failed and len(failed) == len(results):  # not one trial ran to its end: never a success, never a champion
        print_results(rows, sweep)
        print(
            f"sweeps/{kind}.py: error: all trials failed ({len(failed)} of {len(results)}; the first: "
            f"{failure_line(failed[0].error)}); nothing promoted, the trial logs are under {sweep.experiment_url}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    champ = promote_best(candidates, sweep)
    print_results(rows, sweep, champ)
    _print_cost(results, sweep)
    write_report(sweep)
    return 0 if champ is not None else 1


def _print_cost(results: Any, sweep: Sweep) -> None:
    """Per trial and total device-hours (GPU-hours on GPUs, CPU core-hours otherwise), and the budget."""
    spent = {str((r.metrics or {}).get("trial_id")): (r.metrics or {}).get("device_hours") for r in results}
    spent = {t: float(h) for t, h in spent.items() if isinstance(h, int | float)}
    kinds = {(r.metrics or {}).get("device_kind") for r in results} - {None}
    unit = "GPU-hours" if kinds == {"GPU"} else "CPU core-hours" if kinds == {"CPU"} else "device-hours"
    per = ", ".join(f"{t} {h:.3f}" for t, h in sorted(spent.items()))
    budget, total = sweep.settings.budget_hours, sum(spent.values())
    note = ""
    if budget:
        note = f" of a {budget:g} h budget" + (" (reached: no new trials started)" if total >= budget else "")
    info(f"cost: {total:.3f} {unit}{note} ({per})", flush=True)


def _preflight(sweep: Sweep) -> None:
    """The user errors findable before Ray starts (storage, data, teacher), one line each; without data
    URLs the synthetic faces are packed under the storage once Ray is up."""
    from superfan.train.driver import preflight

    cfg = sweep.config
    preflight(cfg, teacher=sweep.teacher, storage_url=sweep.storage, data=bool(cfg.data.train), stages=sweep.stages)
    _warn_random_perceptual(sweep, cfg)


def _warn_random_perceptual(sweep: Sweep, cfg: Any) -> None:
    """Say once per sweep, not once per trial, that Eq. 2 runs on random features; trials stay quiet.
    Only when the weights are unset, as ``PerceptualNet`` warns: ``random`` is the user's explicit choice."""
    from superfan.models.perceptual import RANDOM_FEATURES_WARNING, WARNED_ENV
    from superfan.stagekinds import STAGE_SPECS

    if cfg.model.perceptual_weights is not None:
        return
    if any(STAGE_SPECS[cfg.stage(n).kind].needs_perceptual for n in sweep.stages):
        print(f"sweep {sweep.name}: warning: {RANDOM_FEATURES_WARNING} (every trial)", file=sys.stderr, flush=True)
        os.environ[WARNED_ENV] = "1"  # inherited by an embedded Ray's workers; forwarded to a cluster's


def entry(kind: str, description: str) -> Callable[[list[str] | None], int]:
    """``main`` bound to a sweep kind, for the thin scripts."""

    def _run(argv: list[str] | None = None) -> int:
        return main(kind, description, argv)

    return _run
