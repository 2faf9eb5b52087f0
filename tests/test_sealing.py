"""A bucket write is never code execution: the sweep state Tune unpickles on ``--resume`` is sealed (HMAC-SHA256,
keyed outside the bucket) and checked before it is read (sweeps/sealing.py).

The attack, as issue 29 ran it: a pickle of ``os.system(...)`` planted as ``tuner.pkl`` and as the searcher's
state, on local storage and on SeaweedFS, then ``sweeps/loss_weights.py --resume``: one line, exit 2, and the
command inside the pickle never runs. The planted files need no sweep run first: the check runs before Ray
starts. tests/test_sweeps.py's kill-and-resume test is the sealed state's round trip through real Tune.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "loss_weights.py"
SESSION = "2026-01-01_00-00-00"


class _Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _evil(marker: Path) -> bytes:
    return pickle.dumps(_Evil(marker))


def _plant(put: object, experiment: str, marker: Path, with_wrong_seal: bool = False) -> None:
    """What an attacker with write access to the bucket leaves: Tune's state files, each a pickle that runs
    a command (the experiment state JSON with a cloudpickle entry, as Tune's own decoder would load it)."""
    evil = _evil(marker)
    fallback = json.dumps({"_type": "CLOUDPICKLE_FALLBACK", "value": evil.hex()})
    state = ('{"trial_data": [], "runner_data": ' + fallback + ', "stats": {}}').encode()
    files = {"tuner.pkl": evil, f"searcher-state-{SESSION}.pkl": evil, f"search_gen_state-{SESSION}.json": evil,
             f"experiment_state-{SESSION}.json": state}  # fmt: skip
    for name, data in files.items():
        put(f"{experiment}/{name}", data)  # type: ignore[operator]
        if with_wrong_seal:  # a seal made with some other key
            put(f"{experiment}/{name}.hmac", b'{"format": "superfan-seal/1", "hmac_sha256": ["%s"]}' % (b"0" * 64))  # type: ignore[operator]


def _resume(
    storage: str, tmp_path: Path, inputs: dict[str, str], sweep_yaml: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``--resume`` with data and teacher given, so nothing stands between the start and Tune's restore."""
    extra = ["--config", str(sweep_yaml), "--data", inputs["train"], "--val", inputs["val"],
             "--teacher", inputs["teacher"]]  # fmt: skip
    run_env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), RAY_USAGE_STATS_ENABLED="0", **(env or {}))
    run_env.pop("SUPERFAN_SWEEP_KEY", None)
    run_env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--storage", storage, "--name", "victim", "--resume", *extra],
        cwd=REPO, env=run_env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def _one_line_refusal(proc: subprocess.CompletedProcess[str]) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{err[-3000:]}"
    lines = [line for line in err.splitlines() if line.strip() and "warning" not in line.lower()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "resume with --trust-state" in lines[0] and "--name" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("with_wrong_seal", [False, True], ids=["no-seal", "wrong-key-seal"])
def test_planted_pickles_on_local_storage_never_run_on_resume(
    tmp_path: Path, with_wrong_seal: bool, local_inputs: dict[str, str], sweep_yaml: Path
) -> None:
    store = tmp_path / "store"
    marker = tmp_path / "PWNED"

    def put(rel: str, data: bytes) -> None:
        path = store / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    _plant(put, "sweeps/victim", marker, with_wrong_seal)
    line = _one_line_refusal(_resume(str(store), tmp_path, local_inputs, sweep_yaml))
    assert "sweeps/victim/" in line and ("has no seal" in line or "does not match its seal" in line)
    assert not marker.exists(), "the planted pickle ran"


def test_planted_pickles_on_s3_never_run_on_resume(
    s3_env: dict[str, str], tmp_path: Path, local_inputs: dict[str, str], sweep_yaml: Path
) -> None:
    from superfan import storage

    marker = tmp_path / "PWNED"
    root = "s3://superfan/attack"
    _plant(storage.write_bytes, f"{root}/sweeps/victim", marker)
    line = _one_line_refusal(_resume(root, tmp_path, local_inputs, sweep_yaml, s3_env))
    assert f"{root.removeprefix('s3://')}/sweeps/victim/" in line or f"{root}/sweeps/victim/" in line
    assert not marker.exists(), "the planted pickle ran"


# ------------------------------------------------------------ the filesystem Tune reads through, in-process


@pytest.fixture
def armed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from sweeps import sealing

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(sealing.KEY_ENV, raising=False)
    sealing.arm()
    yield sealing
    sealing.disarm()


def test_the_key_file_is_private_and_stays_out_of_what_ray_pickles(armed, tmp_path: Path) -> None:  # noqa: ANN001
    import ray.cloudpickle

    key_file = tmp_path / "config" / "superfan" / "sweep.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    _, fs = armed.sealing_location(str(tmp_path / "sweeps"), None, "x")
    assert key.encode() not in ray.cloudpickle.dumps(fs)


def test_tune_restore_through_the_sealing_fs_refuses_a_swapped_pickle(armed, tmp_path: Path) -> None:  # noqa: ANN001
    """Past the check before Ray (a file swapped after it): the bytes Tune unpickles are the bytes checked."""
    from ray import tune

    sweeps = tmp_path / "sweeps"
    path, fs = armed.sealing_location(str(sweeps), None, "victim")
    fs.create_dir(f"{path}/victim")
    with fs.open_output_stream(f"{path}/victim/tuner.pkl") as f:  # written by "us": sealed
        f.write(pickle.dumps({"ok": 1}))
    assert (sweeps / "victim" / "tuner.pkl.hmac").exists()
    with fs.open_input_stream(f"{path}/victim/tuner.pkl") as f:
        assert pickle.loads(f.readall()) == {"ok": 1}
    marker = tmp_path / "PWNED"
    (sweeps / "victim" / "tuner.pkl").write_bytes(_evil(marker))  # the swap
    with pytest.raises(armed.UnsealedState, match="does not match its seal"):
        tune.Tuner.restore(f"{path}/victim", lambda config: None, storage_filesystem=fs)
    assert not marker.exists()


def test_tunes_download_of_the_searcher_state_is_checked(armed, tmp_path: Path) -> None:  # noqa: ANN001
    """``sync_down_experiment_state`` copies the searcher state to the driver's staging dir before
    ``restore_from_dir`` unpickles it there: the copy goes through the sealing filesystem and is refused."""
    from ray.train._internal.storage import _download_from_fs_path

    sweeps = tmp_path / "sweeps"
    path, fs = armed.sealing_location(str(sweeps), None, "victim")
    (sweeps / "victim").mkdir(parents=True)
    (sweeps / "victim" / f"searcher-state-{SESSION}.pkl").write_bytes(_evil(tmp_path / "PWNED"))
    with pytest.raises(armed.UnsealedState, match="has no seal"):
        _download_from_fs_path(fs=fs, fs_path=f"{path}/victim/searcher-state-{SESSION}.pkl",
                               local_path=str(tmp_path / "staging" / "s.pkl"))  # fmt: skip
    assert not (tmp_path / "staging" / "s.pkl").exists()


def test_a_driver_killed_between_seal_and_file_leaves_a_state_still_accepted(armed, tmp_path: Path) -> None:  # noqa: ANN001
    """The seal is written first and keeps the previous versions' MACs: the old file, still on storage when
    the new one never came, passes; a file no seal ever listed does not."""
    name = "experiment_state-x.json"
    url = str(tmp_path / name)
    armed.write_sealed(url, b"v1")
    armed.seal_file(url, name, b"v2")  # ...killed here, before v2 itself was written
    assert armed.read_checked(url, name) == b"v1"
    Path(url).write_bytes(b"v3")
    with pytest.raises(armed.UnsealedState):
        armed.read_checked(url, name)


def test_trust_state_adopts_old_state_and_seals_it(armed, tmp_path: Path) -> None:  # noqa: ANN001
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"old": True}))
    (exp / "trial_a").mkdir()
    (exp / "trial_a" / "result.json").write_text("{}")  # data, not sealed
    with pytest.raises(armed.UnsealedState):
        armed.check_experiment(str(exp))
    assert armed.check_experiment(str(exp), adopt=True) == 1
    assert armed.check_experiment(str(exp)) == 1  # sealed now
