"""``--name`` is a plain name (superfan/names.py): ``../escaped`` wrote an experiment, a champion and
``latest`` outside ``sweeps/`` (issue 29 item 6); now it is one line, exit 2, before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from superfan.errors import ConfigError
from superfan.names import check_name

REPO = Path(__file__).resolve().parents[1]
BAD = ["../escaped", "a/b", ".hidden", "..", "", "x" * 101, "a b", "name\n", "/abs"]


def test_plain_names_only() -> None:
    for good in ("loss-weights-tiny", "run_1.v2", "A", "0"):
        assert check_name(good) == good
    for bad in BAD:
        with pytest.raises(ConfigError, match="expected a plain name"):
            check_name(bad)


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_an_escaping_name_is_one_line_and_writes_nothing(command: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    argv = {
        "sweep": [sys.executable, "sweeps/loss_weights.py", "--storage", str(store), "--name", "../escaped"],
        "train": [sys.executable, "-m", "superfan.cli", "train", "fan", "--storage", str(store),
                  "--name", "../escaped"],
    }[command]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert "--name '../escaped': expected a plain name" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"] and not any(store.iterdir())
