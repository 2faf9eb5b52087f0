"""Bad samples are skipped and counted once each, never fatal; too many of them stop the run with one line;
a shard that changed after packing is refused (or left out) by its manifest's sha256.

Real shards (the packer's synthetic faces) get some members replaced (``_rewrite``: the manifest is
re-hashed, as if the pack had been made from damaged files), and the real training loop (``run_training``,
the code inside every Ray Train worker) reads them through the real stream.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from superfan.config import Config, load_config
from superfan.data import badsamples
from superfan.data.manifest import parse_manifest, resolve_dataset
from superfan.data.stream import make_loader
from superfan.errors import BadData, IntegrityError
from superfan.records import sha256_file
from superfan.train.loop import run_training
from superfan.train.reports import LocalReporter


def _pack(tmp: Path, n: int, shard_size: int = 1000) -> Path:
    from shards.pack import PackOptions, pack

    dest = tmp / "train"
    pack(PackOptions(format="synthetic", src=str(n), dest=str(dest), split="train", workers=1, progress=False,
                     shard_size=shard_size))  # fmt: skip
    return dest


def _rewrite(shard_dir: Path, change: Callable[[int, str, bytes], bytes | None], rehash: bool = True) -> list[str]:
    """Rewrite the first shard's members through ``change(sample index, member name, data)`` (None: keep);
    with ``rehash`` the manifest is updated to the new bytes (a pack made from damaged files), without it
    the shard no longer matches its manifest (a shard edited after packing). Returns the changed keys."""
    shard = sorted(shard_dir.glob("*.tar"))[0]
    out, keys, changed = io.BytesIO(), [], []
    with tarfile.open(shard) as src, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            key = member.name.split(".", 1)[0]
            if key not in keys:
                keys.append(key)
            new = change(len(keys) - 1, member.name, data)
            if new is not None:
                data = new
                member.size = len(data)
                changed.append(key)
            dst.addfile(member, io.BytesIO(data))
    shard.write_bytes(out.getvalue())
    if rehash:
        manifest = json.loads((shard_dir / "manifest.json").read_text())
        entry = next(s for s in manifest["shards"] if s["name"] == shard.name)
        entry["sha256"], entry["bytes"] = sha256_file(shard)
        (shard_dir / "manifest.json").write_text(json.dumps(manifest))
    return sorted(set(changed))


def _zero_jpegs(which: set[int]) -> Callable[[int, str, bytes], bytes | None]:
    return lambda i, name, data: bytes(len(data)) if name.endswith(".hr.jpg") and i in which else None


def _bomb_jpeg() -> bytes:
    """A tiny JPEG whose header claims 30000 x 30000 pixels (PIL's own limit would let it decode)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 90, 60)).save(buf, format="JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") + (30000).to_bytes(2, "big")
    return bytes(data)


def _cfg(fraction: float | None = None, samples: int = 40, **extra: object) -> Config:
    over = ["model.fan.features=16", "model.fan.hourglass_depth=2", "data.batch_size=4",
            f"data.samples_per_epoch={samples}", "data.shuffle_buffer=0", "data.num_workers=0"]  # fmt: skip
    if fraction is not None:
        over.append(f"data.max_bad_fraction={fraction}")
    over += [f"{k}={v}" for k, v in extra.items()]
    return load_config("tiny", over)


def _train(cfg: Config, data: Path, out: Path) -> LocalReporter:
    cfg.data.train = [str(data)]
    cfg.stage("teacher").epochs = 1
    rep = LocalReporter(out)
    run_training({"config": cfg.to_dict(), "stages": ["teacher"]}, rank=0, world_size=1, device=torch.device("cpu"),
                 report=rep)  # fmt: skip
    return rep


def _warnings(caplog: pytest.LogCaptureFixture, what: str = "skipped bad sample") -> list[str]:
    return [r.getMessage() for r in caplog.records if what in r.getMessage()]


# ---------------------------------------------------------------------------------------------- the rule


def test_the_stop_rule_counts_confidence_not_luck() -> None:
    assert not badsamples.too_bad(1, 32, 0.01)  # one early bad face in a big set: not a verdict
    assert not badsamples.too_bad(3, 1000, 0.01) and not badsamples.too_bad(3, 48, 0.1)
    assert badsamples.too_bad(30, 48, 0.01) and badsamples.too_bad(3, 48, 0.01)
    assert badsamples.too_bad(40, 1000, 0.01)  # 4% of a big set
    # A set exactly at the limit is stopped by chance at most 1 time in 1,000 (the 99.9% bound).
    rng = np.random.default_rng(0)
    stops = sum(badsamples.too_bad(int(rng.binomial(n, 0.01)), n, 0.01) for n in rng.integers(32, 5000, 2000))
    assert stops <= 6
    ledger = badsamples.SampleLedger()
    batch = {"url": ["a.tar"] * 2, "key": ["k1", "k2"], "bad_samples": [("a.tar", "k3", "x")]}
    ledger.add(batch)
    ledger.add(batch)  # the same samples drawn again by a resampled stream
    assert ledger.counts == (1, 3) and ledger.first() == "k3 in a.tar: x"


# ------------------------------------------------------------------------------------------- in training


@pytest.mark.slow
def test_three_damaged_jpegs_are_counted_once_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """48 faces, 3 damaged, 48 samples per epoch: the resampled stream reads the bad ones more than once
    (the old rule said "5 of 48"); each is warned about and counted once, and at a 10% limit the run ends."""
    data = _pack(tmp_path, 48)
    damaged = _rewrite(data, _zero_jpegs({5, 17, 29}))
    rep = _train(_cfg(0.1, samples=48), data, tmp_path / "run")
    (report,) = rep.reports
    assert report["skipped_samples"] == 3 and report["epoch_steps"] == 12
    warned = _warnings(caplog)
    assert len(warned) == 3 and all(any(k in w for k in damaged) for w in warned), warned
    assert all(".tar" in w and "not a decodable image" in w and " at 0x" not in w for w in warned)


@pytest.mark.slow
def test_three_of_48_at_the_default_limit_stops_with_one_line(tmp_path: Path) -> None:
    data = _pack(tmp_path, 48)
    _rewrite(data, _zero_jpegs({5, 17, 29}))
    with pytest.raises(BadData) as err:
        _train(_cfg(samples=48), data, tmp_path / "run")  # data.max_bad_fraction: the default 0.01
    message = str(err.value)
    assert "\n" not in message and "3 of 48 distinct samples read could not be used" in message
    assert "above data.max_bad_fraction 0.01" in message and ".tar: not a decodable image" in message


@pytest.mark.slow  # packs and streams 1,000 faces (~17 s)
def test_three_of_a_thousand_at_the_default_limit_go_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _pack(tmp_path, 1000)
    damaged = _rewrite(data, _zero_jpegs({100, 500, 900}))
    cfg = _cfg(samples=1000, **{"data.batch_size": 50})
    bad = [b for batch in make_loader(str(data), cfg, train=True) for b in batch["bad_samples"]]
    assert sorted(k for _, k, _ in bad) == damaged and len(_warnings(caplog)) == 3


@pytest.mark.slow
def test_mostly_damaged_data_stops_with_one_line(tmp_path: Path) -> None:
    data = _pack(tmp_path, 48)
    _rewrite(data, _zero_jpegs(set(range(30))))
    with pytest.raises(BadData) as err:
        _train(_cfg(0.01), data, tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and "the data is bad, not a sample" in message and ".tar" in message


# --------------------------------------------------------------------------------------- any exception


@pytest.mark.parametrize(
    ("member", "payload", "reason"),
    [
        ("json", b"[1, 2]", "the json member is not an object (got list)"),
        ("json", b"null", "the json member is not an object (got NoneType)"),
        ("json", b'{"landmarks": null, "yaw": 10}', "missing field 'bbox'"),
        ("json", b'{"landmarks": [[1, 2]], "bbox": [0, 0, 9, 9]}', "cannot reshape"),
        ("json", b'{"landmarks": null, "bbox": [0, 0, 9, 9], "yaw": "left"}', "could not convert"),
        ("json", b'{"landmarks": null, "bbox": [9, 9, 0, 0]}', "bbox must be 4 finite numbers"),
        ("json", b"\xc3\x28 not utf-8", "UnicodeDecodeError"),
        ("json", b"{", "Expecting property name"),
        ("hr.jpg", None, "image header claims 900000000 pixels"),
        ("hr.jpg", b"GIF89a", "not a decodable image"),
    ],
)
def test_any_decoding_error_is_one_counted_skip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, member: str, payload: bytes | None, reason: str
) -> None:
    data = _pack(tmp_path, 8)
    payload = payload if payload is not None else _bomb_jpeg()
    (key,) = _rewrite(data, lambda i, name, d: payload if i == 3 and name.endswith("." + member) else None)
    cfg = _cfg(0.5, samples=8, **{"data.batch_size": 1})
    batches = list(make_loader(str(data), cfg, train=True))
    assert len(batches) == 8 and key not in {k for b in batches for k in b["key"]}
    (bad,) = [b for batch in batches for b in batch["bad_samples"]]
    assert bad[1] == key and reason in bad[2], bad
    (warned,) = _warnings(caplog)
    assert reason in warned and "Traceback" not in warned


# ----------------------------------------------------------------------------------- shards vs manifest


def test_a_shard_edited_after_packing_is_refused_with_one_line(tmp_path: Path) -> None:
    data = _pack(tmp_path, 16, shard_size=8)
    _rewrite(data, _zero_jpegs({2}), rehash=False)
    cfg = _cfg(samples=16)
    with pytest.raises(IntegrityError) as err:
        list(make_loader(str(data), cfg, train=True))
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(data / "train-000000.tar") + ": does not match its manifest")
    assert "data.verify: skip" in message


def test_verify_skip_leaves_the_edited_shard_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _pack(tmp_path, 16, shard_size=8)
    _rewrite(data, _zero_jpegs({2}), rehash=False)
    cfg = _cfg(samples=16, **{"data.verify": "skip"})
    keys = {k for b in make_loader(str(data), cfg, train=True) for k in b["key"]}
    assert keys and all(url.endswith("train-000001.tar") for b in make_loader(str(data), cfg, train=True)
                        for url in b["url"])  # fmt: skip
    assert len(_warnings(caplog, "skipped shard")) >= 1
    cfg.data.verify = "off"  # streams unchecked: the damaged JPEG is then one bad sample
    bad = [b for batch in make_loader(str(data), cfg, train=True) for b in batch["bad_samples"]]
    assert len({k for _, k, _ in bad}) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[]", "not a shard manifest (a JSON object with 'shards'; got list)"),
        ('{"shards": [{"samples": 3}]}', "shards.0.name: Field required"),
        ('{"shards": [{"name": "a.tar", "samples": "many"}]}', "shards.0.samples: Input should be a valid integer"),
        ('{"shards": [{"name": "../../etc/x.tar", "samples": 1}]}', "must be a relative path inside the pack"),
        ('{"shards": [{"name": "a.tar", "samples": 1}], "samples": -1}', "samples: Input should be greater than"),
        ('{"shards": "a.tar"}', "shards: Input should be a valid list"),
        ("{", "not a JSON manifest"),
    ],
)
def test_a_malformed_manifest_is_one_line_naming_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "pack" / "manifest.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(IntegrityError) as err:
        resolve_dataset(str(path.parent))
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(IntegrityError):
        parse_manifest(text, "m.json")
