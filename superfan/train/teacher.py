"""The frozen HR teacher FAN: loaded by the driver (its architecture fixes the integrated FAN's) and by each
worker (its heatmaps are Eq. 4's target), and the check that a run continues against the same teacher."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from superfan.checkpoint import load_checkpoint, models_from_checkpoint, state_fingerprint
from superfan.errors import ConfigError


class Teacher(NamedTuple):
    """The frozen HR teacher FAN, its config (the integrated FAN must share its architecture), the
    fingerprint of its weights (recorded in every checkpoint trained against it) and its RMSprop state
    (end2end's FAN, a copy of the teacher, continues it)."""

    fan: nn.Module
    fan_config: dict[str, Any]
    sha256: str
    optimizer: dict[str, Any] | None


def load_teacher(ref: str, device: torch.device) -> Teacher:
    payload = load_checkpoint(ref)
    fan = models_from_checkpoint(payload, device)["fan"]
    if fan is None:
        raise ConfigError(f"{ref}: checkpoint holds no FAN; the teacher comes from `superfan train fan`")
    optimizer = (payload.get("optimizers") or {}).get("fan")
    return Teacher(fan, payload["config"]["model"]["fan"], state_fingerprint(payload["fan"]), optimizer)


def check_same_teacher(start: dict[str, Any], where: str, teacher_ref: str | None, teacher_sha: str | None) -> None:
    """Refuse to continue a checkpoint trained against another teacher: its generator (and joint FAN) learnt
    the old teacher's heatmaps, and mixing two targets in one run is silent and wrong."""
    theirs = start.get("teacher_sha256")
    if not theirs or not teacher_sha or theirs == teacher_sha:
        return
    raise ConfigError(
        f"{where} was trained against teacher {start.get('teacher')} (sha256 {theirs[:12]}), but this run's "
        f"teacher is {teacher_ref} (sha256 {teacher_sha[:12]}): pass the same --teacher, or start a new run"
    )
