"""The private Ray code superfan relies on (superfan/raycompat.py) is still there and still does what we use.

Each test names the Ray module it checks, so an upgrade that moves one fails here, loudly, not as a leaked
secret or a flood of log lines in production.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from superfan import raycompat


def test_tune_forwards_the_driver_credentials_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.tune.execution import class_cache

    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE) | {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})  # fmt: skip
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")

    class Trainable:
        pass

    def env_of(cache: class_cache._ActorClassCache) -> dict[str, str]:
        remote = cache.get(Trainable)
        return dict(remote._default_options["runtime_env"]["env_vars"])

    assert env_of(class_cache._ActorClassCache())["AWS_SECRET_ACCESS_KEY"] == "wJalrXUtnFEMI"  # Ray's own behaviour
    raycompat.keep_credentials_out_of_tune_runtime_env()
    env = env_of(class_cache._ActorClassCache())
    assert not set(env) & set(raycompat.CREDENTIAL_ENV_VARS), env


def test_train_report_loggers_exist() -> None:
    from ray.train.v2._internal.execution import context

    names = raycompat.train_report_logger_names()
    assert os.path.isfile(names[1]) and names[1] == context.__file__
    assert "Reporting training result" in Path(context.__file__).read_text()  # the line these loggers quiet
    assert all(isinstance(logging.getLogger(n), logging.Logger) for n in names)


def test_preemption_watcher_switch_is_trains() -> None:
    from ray.train.v2._internal import constants

    assert raycompat.PREEMPTION_WATCHER_ENV in vars(constants).values()


def test_job_config_variable_is_rays() -> None:
    from ray._private.runtime_env import constants

    assert constants.RAY_JOB_CONFIG_JSON_ENV_VAR == raycompat.JOB_CONFIG_ENV


def test_the_gcs_port_variable_is_what_ray_init_reads() -> None:
    from ray._private import ray_constants

    assert ray_constants.GCS_PORT_ENVIRONMENT_VARIABLE == raycompat.GCS_PORT_ENV
