"""Every place superfan reaches into Ray's private code, in one file, each with a loud test.

Ray 2.60's public API has no switch for these; each function says why it is needed, and
``tests/test_raycompat.py`` fails (naming the Ray module) when an upgrade moves or renames what it uses, so
the change is noticed at once instead of silently (a leaked secret, a log flood).
"""

from __future__ import annotations

#: The AWS variables Ray Tune copies from the driver's environment into every trainable's ``runtime_env``
#: (``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``).
CREDENTIAL_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")

#: Train V2's switch for its preemption watcher (``ray.train.v2._internal.constants``).
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"

#: Where ``ray job submit`` hands the job's config (its ``runtime_env`` included) to the entrypoint
#: (``ray._private.runtime_env.constants``): a job's own env_vars must not be set again by ``ray.init``.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

#: The port a head node started by ``ray.init()`` gives its GCS (``ray._private.ray_constants``); 0 or unset
#: lets Ray pick one, which no process of the cluster can know before it starts.
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"


def keep_credentials_out_of_tune_runtime_env() -> None:
    """Stop Ray Tune from putting the driver's AWS keys into each trial actor's ``runtime_env``.

    Tune does that on purpose (its trainables often read S3), but a ``runtime_env`` is not a secret store: the
    runtime-env agent writes it to ``runtime_env_agent.log`` in Ray's session directory, and the dashboard
    and ``ray list actors --detail`` show it to anyone who can reach them. Trials resolve credentials where
    they run instead (the environment of ``ray start``, which an embedded cluster inherits from the driver;
    an instance profile; IRSA), as pyarrow and boto3 do when no keys are passed.
    """
    from ray.tune.execution import class_cache

    names = class_cache.ENV_VARS_TO_PROPAGATE
    if not isinstance(names, set):
        raise RuntimeError(
            "ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE is no longer a set: review "
            "superfan.raycompat.keep_credentials_out_of_tune_runtime_env for this Ray version"
        )
    names.difference_update(CREDENTIAL_ENV_VARS)


def train_report_logger_names() -> tuple[str, ...]:
    """The loggers of a Train worker that print every report ("Reporting training result ...", "Checkpoint
    successfully created"): Train V2 logs the first through ``logging.getLogger(__file__)`` of its execution
    context, a logger named by a file path that ``LoggingConfig`` does not reach."""
    from ray.train.v2._internal.execution import context

    return ("ray.train", context.__file__)
