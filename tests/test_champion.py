"""Promotion and pull on constructed checkpoints: the best report (not the last) wins, the manifest's
sha256s match, ``latest`` moves only after the copy, pull refuses changed or missing bytes, and promotions
racing for one name get distinct versions (locally and on a real S3 server).

Fast: no Ray, no torch; the checkpoint directories hold arbitrary bytes (promotion copies files verbatim).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import superfan
from superfan import storage
from superfan.champion import Candidate, Champion, promote, pull, rank_candidates, verify_champion
from superfan.errors import IntegrityError, UserError


def _checkpoint(root: Path, name: str, payload: bytes) -> str:
    d = root / name
    d.mkdir(parents=True)
    (d / "checkpoint.pt").write_bytes(payload)
    (d / "config.yaml").write_text(f"profile: tiny\nnote: {name}\n")
    (d / "metrics.json").write_text(json.dumps({"name": name}))
    return str(d)


def _metrics(balanced: float, epoch: int) -> dict[str, float | int]:
    return {
        "val_auc_balanced": balanced,
        "val_auc_0_30": balanced + 0.1,
        "val_auc_30_60": balanced,
        "val_auc_60_90": balanced - 0.1,
        "val_psnr": 20.0 + epoch,
        "val_ssim": 0.5,
        "val_nme": 0.08,
        "global_epoch": epoch,
    }


@pytest.fixture
def history(tmp_path: Path) -> list[Candidate]:
    """Two trials; trial b peaks at epoch 2 and degrades by epoch 3, trial a ends best of its own."""
    runs = tmp_path / "runs"
    out = []
    for trial, scores in (("a", [0.20, 0.30, 0.35]), ("b", [0.25, 0.50, 0.40])):
        for epoch, score in enumerate(scores, start=1):
            ckpt = _checkpoint(runs, f"{trial}-e{epoch}", f"{trial}{epoch}".encode() * 1000)
            out.append(Candidate(ckpt, _metrics(score, epoch), trial, {"losses.pixel.weight": 1.0}))
    return out


def test_best_report_not_the_last_wins(history: list[Candidate]) -> None:
    best = rank_candidates(history)[0]
    assert best is not None and best.trial_id == "b" and best.metrics["global_epoch"] == 2
    last_of_best_trial = [c for c in history if c.trial_id == "b"][-1]
    assert best != last_of_best_trial
    assert rank_candidates(history, mode="min")[0].metrics["val_auc_balanced"] == 0.20


def test_invalid_candidates_are_ignored(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "c", b"x")
    bad = [
        Candidate("", _metrics(0.9, 1), "t"),  # no checkpoint
        Candidate(ckpt, {"val_auc_balanced": float("nan")}, "t"),
        Candidate(ckpt, {"val_psnr": 30.0}, "t"),
    ]
    assert rank_candidates(bad) == []
    assert promote(bad, str(tmp_path / "store"), "sweep") is None
    assert not (tmp_path / "store" / "champions" / "sweep" / "latest").exists()


def test_promote_writes_files_manifest_then_latest(history: list[Candidate], tmp_path: Path) -> None:
    store = tmp_path / "store"
    champ = promote(history, str(store), "loss-weights", extra={"sweep": {"samples": 2}})
    assert champ is not None and champ.version == "v0001"
    root = store / "champions" / "loss-weights"
    assert (root / "latest").read_text().strip() == "v0001"
    manifest = json.loads((root / "v0001" / "manifest.json").read_text())
    assert manifest["trial_id"] == "b" and manifest["metrics"]["global_epoch"] == 2
    assert manifest["source"] == history[4].checkpoint
    assert manifest["config"] == {"profile": "tiny", "note": "b-e2"}
    assert manifest["sweep"] == {"samples": 2} and manifest["code_version"].startswith(superfan.__version__)
    assert {f["path"] for f in manifest["files"]} == {"checkpoint.pt", "config.yaml", "metrics.json"}
    for entry in manifest["files"]:
        data = (root / "v0001" / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert verify_champion(root / "v0001")["version"] == "v0001"
    # The same best again (a resumed sweep that found nothing better) is not copied twice.
    assert promote(history, str(store), "loss-weights").version == "v0001"  # type: ignore[union-attr]
    # A better checkpoint becomes v0002 and moves latest.
    better = _checkpoint(tmp_path / "runs", "c-e1", b"c" * 10)
    champ2 = promote([*history, Candidate(better, _metrics(0.9, 1), "c")], str(store), "loss-weights")
    assert champ2 is not None and champ2.version == "v0002"
    assert (root / "latest").read_text().strip() == "v0002"


def test_latest_is_written_only_after_the_copy(history: list[Candidate], tmp_path: Path) -> None:
    """Record the order of storage writes: every file, then the manifest, then ``latest``."""
    order: list[str] = []
    original_upload, original_write = storage.upload_file, storage.write_bytes

    def upload(local: str, url: str) -> None:
        order.append(Path(url).name)
        original_upload(local, url)

    def write(url: str, data: bytes) -> None:
        order.append(Path(url).name)
        original_write(url, data)

    mp = pytest.MonkeyPatch()
    mp.setattr(storage, "upload_file", upload)
    mp.setattr(storage, "write_bytes", write)
    try:
        promote(history, str(tmp_path / "store"), "s")
    finally:
        mp.undo()
    assert order[-2:] == ["manifest.json", "latest"]
    assert set(order[:-2]) == {"checkpoint.pt", "config.yaml", "metrics.json"}


def test_skips_a_best_whose_checkpoint_was_deleted(history: list[Candidate], tmp_path: Path) -> None:
    for f in Path(history[4].checkpoint).iterdir():
        f.unlink()
    champ = promote(history, str(tmp_path / "store"), "s")
    assert champ is not None and champ.manifest["source"] == history[5].checkpoint  # b epoch 3: 0.40


def test_pull_verifies_and_prints(history: list[Candidate], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    promote(history, str(tmp_path / "store"), "s")
    dest = tmp_path / "pulled"
    manifest = pull(str(tmp_path / "store" / "champions" / "s"), dest)
    assert manifest["version"] == "v0001" and (dest / "checkpoint.pt").read_bytes() == b"b2" * 1000
    out = capsys.readouterr().out
    assert "AUC [0,30)" in out and "0.6000" in out and "PSNR" in out
    # Pulling again replaces the earlier champion; a non-champion directory is refused.
    pull(str(tmp_path / "store" / "champions" / "s" / "v0001"), dest, quiet=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and not a champion pulled there"):
        pull(str(tmp_path / "store" / "champions" / "s"), other)
    assert (other / "notes.txt").read_text() == "mine"


def test_pull_never_replaces_a_directory_it_did_not_fill(history: list[Candidate], tmp_path: Path) -> None:
    """A shard folder holds a manifest.json too: the old pull took it for a champion and deleted the shards."""
    promote(history, str(tmp_path / "store"), "s")
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text('{"format": "superfan-shards/1", "shards": []}')
    (shards / "train-000000.tar").write_bytes(b"precious" * 100)
    with pytest.raises(UserError) as err:
        pull(str(tmp_path / "store" / "champions" / "s"), shards)
    assert str(err.value) == (f"{shards}: not empty and not a champion pulled there (no .superfan-pull.json); "
                              "pull into a new or empty directory (nothing changed)")  # fmt: skip
    assert sorted(p.name for p in shards.iterdir()) == ["manifest.json", "train-000000.tar"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="exists and is not a directory"):
        pull(str(tmp_path / "store" / "champions" / "s"), tmp_path / "afile")
    empty = tmp_path / "empty"
    empty.mkdir()
    pull(str(tmp_path / "store" / "champions" / "s"), empty, quiet=True)
    assert json.loads((empty / ".superfan-pull.json").read_text())["version"] == "v0001"


def _pull_killed_at(point: str, url: str, dest: Path, marker: Path) -> None:
    env = dict(os.environ, SUPERFAN_DEBUG_FAULTS=json.dumps({"kill": {point: str(marker)}}))
    proc = subprocess.run([sys.executable, "-m", "superfan.cli", "pull", url, str(dest), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL and marker.exists(), proc.stderr


@pytest.mark.parametrize(("point", "expect"), [("pull.before_swap", "old"), ("pull.after_swap", "new")])
def test_a_killed_pull_leaves_a_whole_champion_and_the_next_cleans_up(
    history: list[Candidate], tmp_path: Path, point: str, expect: str
) -> None:
    store = tmp_path / "store"
    promote(history[:3], str(store), "s")  # v0001: trial a's best
    promote(history, str(store), "s")  # v0002: trial b's best
    dest = tmp_path / "champion"
    pull(str(store / "champions" / "s" / "v0001"), dest, quiet=True)
    _pull_killed_at(point, str(store / "champions" / "s" / "v0002"), dest, tmp_path / "killed")
    assert verify_champion(dest)["version"] == {"old": "v0001", "new": "v0002"}[expect]
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".champion.pull-")], "the kill left no leftover?"
    pull(str(store / "champions" / "s"), dest, quiet=True)
    assert verify_champion(dest)["version"] == "v0002"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".champion.")], list(tmp_path.iterdir())


def test_a_pull_killed_between_the_fallback_renames_is_put_back(
    history: list[Candidate], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the OS cannot exchange two directories: the old champion sits in the sibling the journal names
    after a death between the two renames, and the next pull puts it back before anything else."""
    from superfan import champion, faults

    store = tmp_path / "store"
    promote(history[:3], str(store), "s")
    promote(history, str(store), "s")
    dest = tmp_path / "champion"
    pull(str(store / "champions" / "s" / "v0001"), dest, quiet=True)

    class Died(BaseException):
        pass

    def die(point: str) -> None:
        if point == "pull.between_renames":
            raise Died

    monkeypatch.setattr(champion, "_exchange", lambda a, b: False)
    monkeypatch.setattr(faults, "kill_point", die)
    with pytest.raises(Died):
        pull(str(store / "champions" / "s" / "v0002"), dest, quiet=True)
    assert not dest.exists()
    journal = json.loads((tmp_path / ".champion.superfan-pull-journal").read_text())
    assert len(journal["olds"]) == 1 and (tmp_path / journal["olds"][0]).is_dir()
    champion._clean_leftovers(dest)
    assert verify_champion(dest)["version"] == "v0001"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_pull_deletes_only_what_it_recorded(history: list[Candidate], tmp_path: Path) -> None:
    """Issue 29: the cleanup built a glob from the destination's name: pulling into ``dir/*`` deleted the
    hidden siblings ``.mail.old-x`` and ``.photos.old-2019`` of the user's. Now leftovers are only the exact
    names a pull recorded in its journal; siblings that merely look like them are never touched."""
    store = tmp_path / "store"
    promote(history, str(store), "s")
    home = tmp_path / "home"
    (home / "dir").mkdir(parents=True)
    siblings = [home / "dir" / ".mail.old-x", home / "dir" / ".photos.old-2019", home / ".champion.old-2019",
                home / ".champion.pull-mine"]  # fmt: skip
    for d in siblings:
        d.mkdir()
        (d / "keep.txt").write_text("precious")
    pull(str(store / "champions" / "s"), home / "dir" / "*", quiet=True)
    assert verify_champion(home / "dir" / "*")["version"] == "v0001"
    pull(str(store / "champions" / "s"), home / "champion", quiet=True)
    pull(str(store / "champions" / "s"), home / "champion", quiet=True)  # over its own: cleans its own only
    for d in siblings:
        assert (d / "keep.txt").read_text() == "precious", d
    assert sorted(p.name for p in home.iterdir()) == [".champion.old-2019", ".champion.pull-mine", "champion", "dir"]


def test_a_second_pull_keeps_the_files_a_user_added(
    history: list[Candidate], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = tmp_path / "store"
    promote(history[:3], str(store), "s")
    promote(history, str(store), "s")
    dest = tmp_path / "champion"
    pull(str(store / "champions" / "s" / "v0001"), dest, quiet=True)
    (dest / "NOTES.txt").write_text("my notes")
    (dest / "eval").mkdir()
    (dest / "eval" / "table.md").write_text("| auc |")
    (dest / "scratch").mkdir()
    capsys.readouterr()
    pull(str(store / "champions" / "s" / "v0002"), dest, quiet=True)
    assert verify_champion(dest)["version"] == "v0002"
    assert (dest / "NOTES.txt").read_text() == "my notes" and (dest / "eval" / "table.md").read_text() == "| auc |"
    assert (dest / "scratch").is_dir()
    assert "kept 3 file(s) you added" in capsys.readouterr().out
    # A user file where the new champion has one of its own: refused, nothing changed.
    (dest / "NOTES.txt").unlink()
    marker = json.loads((dest / ".superfan-pull.json").read_text())
    marker["files"].remove("checkpoint.pt")  # as if the user had put checkpoint.pt there
    (dest / ".superfan-pull.json").write_text(json.dumps(marker))
    with pytest.raises(UserError, match="you added it, and the new champion has a file of that name"):
        pull(str(store / "champions" / "s" / "v0001"), dest, quiet=True)
    assert verify_champion(dest)["version"] == "v0002" and (dest / "eval" / "table.md").exists()


def _pull_cli(url: str, dest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "superfan.cli", "pull", url, dest, "--quiet"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_every_unusable_pull_path_is_one_line(history: list[Candidate], tmp_path: Path) -> None:
    store = tmp_path / "store"
    promote(history, str(store), "s")
    url = str(store / "champions" / "s")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link-to-empty").symlink_to(tmp_path / "empty")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "afile").write_text("x")
    cases = {
        "link-to-empty": "is a symbolic link",
        "dangling": "is a symbolic link",
        "afile/champion": "is not a directory",
        "afile/deeper/champion": "is not a directory",
    }
    for rel, expect in cases.items():
        proc = _pull_cli(url, str(tmp_path / rel))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expect in lines[0], (rel, proc.stderr)
    proc = _pull_cli(url, "/proc/superfan-test/champion")  # a parent nobody, root included, may write
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot pull there" in lines[0], proc.stderr
    assert not any((tmp_path / "empty").iterdir()) and (tmp_path / "afile").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "files",
    ['"checkpoint.pt"', "null", '[{"bytes": 1, "sha256": "x"}]', '[{"path": "a", "sha256": "x"}]', '["a"]',
     '[{"path": "a", "bytes": "1", "sha256": "x"}]'],
)  # fmt: skip
def test_a_malformed_champion_manifest_is_one_line(history: list[Candidate], tmp_path: Path, files: str) -> None:
    store = tmp_path / "store"
    promote(history, str(store), "s")
    mpath = store / "champions" / "s" / "v0001" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["files"] = json.loads(files)
    mpath.write_text(json.dumps(manifest))
    proc = _pull_cli(str(store / "champions" / "s"), str(tmp_path / "dest"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "files" in lines[0], proc.stderr
    assert not (tmp_path / "dest").exists()


def test_latest_must_name_a_version(history: list[Candidate], tmp_path: Path) -> None:
    store = tmp_path / "store"
    promote(history, str(store), "s")
    (tmp_path / "outside").mkdir()
    for bad in ("../../outside", "", "v1", "v0001/../.."):
        (store / "champions" / "s" / "latest").write_text(bad + "\n")
        with pytest.raises(IntegrityError, match="not a champion version"):
            pull(str(store / "champions" / "s"), tmp_path / f"p{len(bad)}")


def test_pull_rejects_a_changed_byte(history: list[Candidate], tmp_path: Path) -> None:
    promote(history, str(tmp_path / "store"), "s")
    pt = tmp_path / "store" / "champions" / "s" / "v0001" / "checkpoint.pt"
    data = bytearray(pt.read_bytes())
    data[100] ^= 0x01
    pt.write_bytes(bytes(data))
    dest = tmp_path / "pulled"
    with pytest.raises(IntegrityError, match=r"checkpoint.pt does not match the manifest"):
        pull(str(tmp_path / "store" / "champions" / "s"), dest)
    assert not dest.exists(), "a refused champion must not be left in place"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pulled")], "temp dir left behind"


def test_pull_rejects_a_missing_file(history: list[Candidate], tmp_path: Path) -> None:
    promote(history, str(tmp_path / "store"), "s")
    (tmp_path / "store" / "champions" / "s" / "v0001" / "config.yaml").unlink()
    with pytest.raises(IntegrityError, match="incomplete champion: config.yaml is missing"):
        pull(str(tmp_path / "store" / "champions" / "s"), tmp_path / "pulled")
    (tmp_path / "store" / "champions" / "s" / "v0001" / "manifest.json").unlink()
    with pytest.raises(UserError, match="no champion there"):
        pull(str(tmp_path / "store" / "champions" / "s" / "v0001"), tmp_path / "pulled")


def test_pull_cli_one_line_error(history: list[Candidate], tmp_path: Path) -> None:
    promote(history, str(tmp_path / "store"), "s")
    (tmp_path / "store" / "champions" / "s" / "v0001" / "metrics.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "superfan.cli", "pull", str(tmp_path / "store" / "champions" / "s"),
         str(tmp_path / "pulled")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "metrics.json does not match the manifest" in lines[0]


# ------------------------------------------------------------------------------------ concurrent promotion


def _promote_concurrently(store: str, runs: Path, n: int) -> tuple[list[Champion], list[str]]:
    """``n`` promotions to one name at once (threads behind a barrier; each its own better checkpoint),
    while a watcher keeps following ``latest``: returns the champions and any moment ``latest`` named a
    version without a complete manifest."""
    cands = [
        Candidate(_checkpoint(runs, f"t{i}", bytes([i]) * (1 << 20)), _metrics(0.5 + i / 100, 1), f"t{i}")
        for i in range(n)
    ]
    root = storage.join(store, "champions", "race")
    barrier = threading.Barrier(n + 1)
    done = threading.Event()
    bad: list[str] = []

    def watch() -> None:
        barrier.wait()
        while not done.is_set():
            latest = storage.join(root, "latest")
            if storage.exists(latest):
                version = storage.read_text(latest).strip()
                if not storage.exists(storage.join(root, version, "manifest.json")):
                    bad.append(version)

    def one(cand: Candidate) -> Champion:
        barrier.wait()
        champ = promote([cand], store, "race")
        assert champ is not None
        return champ

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, c) for c in cands]
        champions = [f.result(timeout=120) for f in futures]
    done.set()
    watcher.join(timeout=30)
    return champions, bad


def _check_race(store: str, champions: list[Champion], bad: list[str]) -> None:
    versions = sorted(c.version for c in champions)
    assert versions == [f"v{i:04d}" for i in range(1, len(champions) + 1)], versions  # distinct, no gaps
    assert not bad, f"latest named incomplete versions {bad}"
    root = storage.join(store, "champions", "race")
    assert storage.read_text(storage.join(root, "latest")).strip() == versions[-1]  # ends on the newest
    for champ in champions:
        manifest = verify_champion(champ.url)  # each version is complete and its own trial's
        assert manifest["version"] == champ.version and manifest["trial_id"] == champ.manifest["trial_id"]
    assert len({c.manifest["trial_id"] for c in champions}) == len(champions)


def test_concurrent_promotions_get_distinct_versions_locally(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    champions, bad = _promote_concurrently(store, tmp_path / "runs", 4)
    _check_race(store, champions, bad)


@pytest.mark.slow
def test_concurrent_promotions_get_distinct_versions_on_s3(s3_env: dict[str, str], tmp_path: Path) -> None:
    """On S3 the claim is a conditional PUT (If-None-Match: *), which SeaweedFS honours."""
    store = f"s3://superfan/test-champion-race-{time.time_ns()}"
    champions, bad = _promote_concurrently(store, tmp_path / "runs", 4)
    _check_race(store, champions, bad)
    pulled = pull(storage.join(store, "champions", "race"), tmp_path / "pulled", quiet=True)
    assert pulled["version"] == "v0004"


def test_a_half_copied_version_of_a_dead_promoter_is_cleaned(history: list[Candidate], tmp_path: Path) -> None:
    import socket

    store = tmp_path / "store"
    root = store / "champions" / "s"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    claims = {
        "v0001": {"host": socket.gethostname(), "pid": gone.pid, "epoch_s": time.time()},  # its process is gone
        "v0002": {"host": "elsewhere", "pid": 1, "epoch_s": time.time() - 2 * 86400},  # stale, another host
        "v0003": {"host": "elsewhere", "pid": 1, "epoch_s": time.time()},  # may still be copying: kept
    }
    for version, claim in claims.items():
        (root / version).mkdir(parents=True)
        (root / version / ".claim").write_text(json.dumps(claim))
        (root / version / "checkpoint.pt").write_bytes(b"half")
    champ = promote(history, str(store), "s")
    assert champ is not None and champ.version == "v0004"
    assert sorted(p.name for p in (root / "v0001").iterdir()) == [".claim"]  # the number stays taken
    assert sorted(p.name for p in (root / "v0002").iterdir()) == [".claim"]
    assert (root / "v0003" / "checkpoint.pt").exists()


def test_a_claim_left_by_a_killed_promoter_only_costs_its_number(history: list[Candidate], tmp_path: Path) -> None:
    store = tmp_path / "store"
    root = store / "champions" / "s"
    (root / "v0001").mkdir(parents=True)
    (root / "v0001" / ".claim").write_text('{"claim": "a promoter that was killed"}')
    champ = promote(history, str(store), "s")
    assert champ is not None and champ.version == "v0002"
    assert (root / "latest").read_text().strip() == "v0002"
    assert verify_champion(root / "v0002")["version"] == "v0002"
