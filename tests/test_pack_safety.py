"""Writers that cannot collide (issue 29 item 5): one pack per destination at a time, through an exclusive
claim (``O_EXCL`` locally, a conditional PUT on S3); a killed pack's temp directory is removed by the next.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shards import verify
from shards.pack import CLAIM, PackOptions, pack
from superfan.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _opts(dest: Path | str, n: int = 6, **kw: object) -> PackOptions:
    opts = PackOptions(format="synthetic", src=str(n), dest=str(dest), split="train", workers=1, progress=False,
                       shard_size=2)  # fmt: skip
    for k, v in kw.items():
        setattr(opts, k, v)
    return opts


def _write_claim(dest: Path, pid: int) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    claim = {"token": "t", "host": socket.gethostname(), "pid": pid, "started": "2026-01-01T00:00:00Z"}
    (dest / CLAIM).write_text(json.dumps(claim))


def test_a_pack_into_a_destination_another_pack_holds_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_claim(dest, holder.pid)
        with pytest.raises(UserError, match=r"another pack is writing there \(pid \d+ on .*\); wait for it"):
            pack(_opts(dest))
        assert sorted(p.name for p in dest.iterdir()) == [CLAIM], "the refused pack wrote something"
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now (killed, as a crash would): its claim is taken over, and ours is removed at the end.
    pack(_opts(dest))
    assert verify(str(dest))["samples"] > 0 and not (dest / CLAIM).exists()


def test_two_packs_at_once_never_publish_a_manifest_that_does_not_match(tmp_path: Path) -> None:
    """Two real processes packing into one destination at once (--overwrite, different seeds): the old code
    let both run and the manifest of one was published over the shards of the other."""
    dest = tmp_path / "out"
    argv = [sys.executable, "-m", "shards", "pack", "synthetic", "300", str(dest), "--split", "train", "--no-progress",
            "--shard-size", "20", "--overwrite", "--pack-workers", "1"]  # fmt: skip
    procs = [subprocess.Popen([*argv, "--seed", str(i)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]  # fmt: skip
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    ok = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] == 2]
    assert len(ok) >= 1 and len(ok) + len(refused) == 2, results
    for _, err in refused:
        assert "another pack is writing there" in err and len(err.strip().splitlines()) == 1, err
    assert verify(str(dest))["ok"] and not (dest / CLAIM).exists()


def test_a_killed_packs_temp_dir_is_removed_by_the_next(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    base = Path(tempfile.gettempdir())
    dead = base / f"superfan-shards-{gone.pid}-abc123"
    alive = base / f"superfan-shards-{os.getpid()}-live99"
    other = base / f"superfan-shards-{gone.pid}-abc123.keep"  # not a name a writer makes
    for d in (dead, alive, other):
        d.mkdir(exist_ok=True)
        (d / "train-000000.tar").write_bytes(b"x")
    try:
        pack(_opts(tmp_path / "out"))
        assert not dead.exists(), "a killed pack's temp dir was left"
        assert alive.exists() and other.exists()
    finally:
        for d in (dead, alive, other):
            if d.exists():
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()


def test_a_killed_overwrite_keeps_the_old_pack_and_the_next_pack_cleans_up(tmp_path: Path) -> None:
    """Shards are staged under ``DEST/.superfan-pack-<token>/`` and moved into place only when the pack is
    complete: a pack SIGKILLed half-way leaves the old pack whole (the old code had already deleted its
    manifest and overwritten its shards), and the next pack removes what the killed one staged."""
    import signal
    import time

    dest = tmp_path / "out"
    pack(_opts(dest, n=6))
    old_manifest = (dest / "manifest.json").read_bytes()
    old = verify(str(dest))
    argv = [sys.executable, "-m", "shards", "pack", "synthetic", "3000", str(dest), "--split", "train", "--no-progress",
            "--shard-size", "2", "--overwrite", "--pack-workers", "1", "--seed", "7"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        staged: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            staged = [p for d in dest.glob(".superfan-pack-*") for p in d.glob("*.tar")]
            if len(staged) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(staged) >= 2, "the pack ended or staged nothing before the kill"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (dest / "manifest.json").read_bytes() == old_manifest
    assert verify(str(dest)) == old, "the killed --overwrite damaged the old pack"
    killed_temp = list(Path(tempfile.gettempdir()).glob(f"superfan-shards-{proc.pid}-*"))
    pack(_opts(dest, n=4, overwrite=True))  # takes over the dead claim, removes its staging
    assert verify(str(dest))["samples"] == 4
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "train-000000.tar", "train-000001.tar"]
    assert not [p for p in killed_temp if p.exists()], "the killed pack's temp dir was left"
