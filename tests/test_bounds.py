"""Bounded work for any input (issue 29 items 7 and 10): every size a user controls has a documented upper
bound, checked when it is read, before any allocation or Ray start; a bound crossed is one line."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from superfan.config import load_config
from superfan.errors import ConfigError
from superfan.infer import BoxError, check_box
from sweeps.settings import SweepSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("override", "expect"),
    [
        ("data.batch_size=1000000000000", "less than or equal to 4096"),
        ("data.batch_size=true", "not a boolean"),
        ("stages.0.epochs=1000000000000000", "less than or equal to 100000"),
        ("stages.0.lr_start=1e300", "less than or equal to 10"),
        ("model.fan.hourglass_depth=40", "less than or equal to 6"),
        ("optimizer.critic_lr=1e300", "less than or equal to 10"),
    ],
)
def test_training_sizes_have_upper_bounds(override: str, expect: str) -> None:
    with pytest.raises(ConfigError, match=expect):
        load_config("tiny", [override])


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        ({"seed": -1}, "--seed"),
        ({"samples": 10**12}, "--samples"),
        ({"epochs": 10**15}, "--epochs"),
        ({"synthetic_train": 10**12}, "--synthetic-train"),
        ({"grace_period": 10**9}, "--grace-period"),
        ({"samples": True}, "--samples"),
    ],
)
def test_sweep_settings_have_bounds(options: dict[str, object], expect: str) -> None:
    with pytest.raises(ConfigError, match=expect):
        SweepSettings().with_options(options)


@pytest.mark.parametrize(
    "box",
    [None, 1, "1 2 3 4", [1, 2, 3], [True, 2, 3, 4], [10, 10, 20000, 20000], [0, 0, math.inf, 5]],
)
def test_a_box_that_is_not_a_face_in_the_photo_is_refused_before_any_allocation(box: object) -> None:
    with pytest.raises(BoxError):
        check_box(box, 300, 200)  # type: ignore[arg-type]
    assert check_box([10, 10, 500, 400], 300, 200) == (10, 10, 500, 400)  # reaching past the edges is fine


@pytest.mark.parametrize(
    ("flag", "value", "expect"),
    [("--crop-size", "0", "expected 64 to 1024"), ("--crop-size", "6000", "expected 64 to 1024"),
     ("--context", "0", "from 1 to 8"), ("--context", "nan", "from 1 to 8"), ("--context", "-1", "from 1 to 8"),
     ("--context", "inf", "from 1 to 8")],
)  # fmt: skip
def test_pack_crop_bounds_are_one_line(flag: str, value: str, expect: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shards", "pack", "synthetic", "4", str(tmp_path / "out"), "--split", "train",
         "--no-progress", flag, value],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and expect in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
