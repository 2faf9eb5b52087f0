"""Inputs an adversarial user tried that still ended in a traceback: each is now one line (exit 2, or a
file skipped with one line by ``enhance``), nothing written, and no Ray started.

Non-UTF-8 sweep and config files, ``stages: []``, a damaged ``sweep.json`` for ``superfan sweep report``,
``--storage`` a file, a checkpoint without its config (enhance, evaluate, a champion), 16-bit and
oversized PNGs for ``enhance``, a shard whose first tar header is corrupt for ``superfan evaluate``,
``model.perceptual_weights: pipe:...`` (or a missing weights file), and search values the config refuses (a
``choice`` of strings for ``data.batch_size``). All in-process (the real command-line entry points), so a
regression shows its traceback here; one slow test runs a real sweep whose every trial fails (exit 1).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from superfan.errors import ConfigError, IntegrityError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "sweeps" / "configs"


def _superfan(*argv: str) -> int:
    from superfan.cli import main

    return main(list(argv))


def _one_error_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ": note: " not in ln]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    return lines[0]


def tiny_end2end_payload(**over: Any) -> dict[str, Any]:
    """A real checkpoint payload of the tiny profile's freshly initialised networks."""
    from superfan.config import load_config
    from superfan.models import FAN, Generator

    cfg = load_config("tiny")
    torch.manual_seed(0)
    payload = {
        "stage": "end2end", "stage_kind": "end2end", "stage_index": 3, "epoch": 0, "global_epoch": 0, "step": 0,
        "generator": Generator.from_config(cfg.model.generator).state_dict(),
        "fan": FAN.from_config(cfg.model.fan).state_dict(), "critic": None, "optimizers": {}, "schedulers": {},
        "config": cfg.to_dict(), "metrics": {}, "perceptual_pretrained": False, "perceptual_weights": None,
        "teacher": None,
    }  # fmt: skip
    payload.update(over)
    return payload


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``good``: a usable checkpoint; ``no_config``: the same without its config (saved the real way)."""
    from superfan.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(root / "good", tiny_end2end_payload())
    bare = tiny_end2end_payload()
    del bare["config"]
    save_checkpoint(root / "no_config", bare)
    return {"good": root / "good", "no_config": root / "no_config"}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shards.pack import PackOptions, pack

    dest = tmp_path_factory.mktemp("faces") / "pack"
    pack(PackOptions(format="synthetic", src="4", dest=str(dest), split="val", workers=1, progress=False))
    return dest


# ------------------------------------------------------------------------------ sweep and config files


def test_a_sweep_file_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sweeps.cli import main

    path = tmp_path / "sweep.yaml"
    path.write_bytes((CONFIGS / "tiny.yaml").read_bytes() + b'\nnote: "caf\xe9"\n')  # Latin-1, not UTF-8
    assert main("loss_weights", "test", ["--config", str(path), "--storage", str(tmp_path / "st")]) == 2
    line = _one_error_line(capsys, "sweeps/loss_weights.py")
    assert str(path) in line and "not UTF-8" in line
    assert not (tmp_path / "st").exists()


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_bytes(b"profile: tiny\n\xff\xfe: 1\n")
    assert _superfan("config", str(path)) == 2
    line = _one_error_line(capsys, "superfan config")
    assert str(path) in line and "not UTF-8" in line


@pytest.mark.parametrize("where", ["stages", "sweep.stages", "sweep.promote_stages"])
def test_an_empty_list_of_stages_is_one_line_before_anything_runs(where: str, tmp_path: Path) -> None:
    """``stages: []`` planned a sweep that trained a teacher for nothing and then failed an assertion."""
    from sweeps.cli import build_parser, plan

    data = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    node = data
    *parents, last = where.split(".")
    for key in parents:
        node = node[key]
    node[last] = []
    if where == "stages":
        data["sweep"]["epochs"] = 1  # so that only the empty list is wrong
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    args = build_parser("loss_weights", "test").parse_args(["--config", str(path), "--storage", str(tmp_path)])
    with pytest.raises(ConfigError, match=rf"^{path}: {where}: List should have at least 1 item"):
        plan("loss_weights", args)


def test_an_empty_list_of_stages_in_a_config_is_one_line() -> None:
    from superfan.config import load_config

    with pytest.raises(ConfigError, match="stages: List should have at least 1 item"):
        load_config("tiny", ["stages=[]"])


# ------------------------------------------------------------------------------ sweep.json for the report


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "expected a JSON object, got list"),
        (b'{"settings": 5}', "'settings' is not a JSON object"),
        (b'{"stages": [[1]]}', "'stages' is not a list of stage names"),
        (b'{"space": {"a": 3}}', "'space' is not an object of search specs"),
        (b'{"config": {"stages": 3}}', "'config.stages' is not a list of stages"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_a_damaged_sweep_json_is_one_line_for_the_report(
    content: bytes, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "sweeps" / "s"
    exp.mkdir(parents=True)
    (exp / "sweep.json").write_bytes(content)
    assert _superfan("sweep", "report", str(exp), "--out", str(tmp_path / "report")) == 2
    line = _one_error_line(capsys, "superfan sweep")
    assert str(exp / "sweep.json") in line and expect in line
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------------------------ --storage a file


@pytest.mark.parametrize("under", [False, True])
def test_storage_that_is_a_file_is_one_line(
    under: bool, shard_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sweeps.cli import main

    afile = tmp_path / "afile"
    afile.write_text("mine")
    store = afile / "sub" if under else afile
    where = str(afile) if under else "it"
    assert main("loss_weights", "test", ["--storage", str(store)]) == 2
    line = _one_error_line(capsys, "sweeps/loss_weights.py")
    assert line.endswith(f"--storage {store}: cannot write there ({where} exists and is not a directory)"), line
    rc = _superfan("train", "fan", "--data", str(shard_dir), "--storage", str(store), "stages.0.epochs=1")
    assert rc == 2
    line = _one_error_line(capsys, "superfan train")
    assert line.endswith(f"storage {store}: cannot write there ({where} exists and is not a directory)"), line
    assert afile.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# ------------------------------------------------------------------------------ checkpoints without config


def test_a_checkpoint_without_its_config_is_one_line(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from superfan.checkpoint import load_checkpoint

    bad = checkpoints["no_config"]
    with pytest.raises(IntegrityError, match="has no config"):
        load_checkpoint(bad)
    img = tmp_path / "face.png"
    Image.new("RGB", (20, 20), (90, 60, 40)).save(img)
    assert _superfan("enhance", str(bad), str(img), "-o", str(tmp_path / "out"), "--no-progress") == 2
    assert "has no config" in _one_error_line(capsys, "superfan enhance")
    assert not (tmp_path / "out").exists()
    for argv in (["--fan", str(bad), str(checkpoints["good"])], ["--fan", str(checkpoints["good"]), str(bad)]):
        rc = _superfan("evaluate", "--data", str(tmp_path / "none"), *argv, "--out", str(tmp_path / "ev"),
                       "--no-progress")  # fmt: skip
        assert rc == 2
        assert "has no config" in _one_error_line(capsys, "superfan evaluate")
    assert not (tmp_path / "ev").exists()


def test_a_champion_whose_checkpoint_has_no_config_is_one_line(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A promoted champion (its sha256s all match) whose payload lacks ``config``: enhance and the sweep
    report's champion sheet refuse it with one line."""
    from PIL import Image

    from superfan.champion import Candidate, promote
    from superfan.errors import UserError
    from superfan.sweep_report.champion_sheet import evaluate_champion

    champ = promote([Candidate(str(checkpoints["no_config"]), {"val_auc_balanced": 0.5, "global_epoch": 1}, "t", {})],
                    str(tmp_path / "store"), "nc")  # fmt: skip
    assert champ is not None
    img = tmp_path / "face.png"
    Image.new("RGB", (20, 20)).save(img)
    assert _superfan("enhance", champ.url, str(img), "-o", str(tmp_path / "out"), "--no-progress") == 2
    assert "has no config" in _one_error_line(capsys, "superfan enhance")
    with pytest.raises(UserError, match="has no config") as err:
        evaluate_champion(champ.url, str(tmp_path / "sheet"))
    assert "\n" not in str(err.value)


def test_a_checkpoint_with_weights_that_are_not_tensors_is_one_line(tmp_path: Path) -> None:
    from superfan.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "ck", tiny_end2end_payload(fan={"w": [1, 2, 3]}))
    with pytest.raises(IntegrityError, match="its fan weights are not a state dict of tensors"):
        load_checkpoint(tmp_path / "ck")


# ------------------------------------------------------------------------------ enhance inputs


def _png(width: int, height: int, rows: int = 2) -> bytes:
    """A PNG whose header says ``width`` x ``height`` RGB, holding only the first ``rows`` rows of data:
    what a 20000x20000 photo costs a reader that trusts the header, in 300 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"".join(b"\0" + bytes(width * 3) for _ in range(rows)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 9000])  # past PIL's own refusal, and under it but over ours
def test_an_oversized_image_is_refused_from_its_header(
    side: int, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from superfan.commands.enhance import MAX_INPUT_PIXELS, read_image

    big = tmp_path / "big.png"
    big.write_bytes(_png(side, side))
    assert side * side > MAX_INPUT_PIXELS
    megapixels = f"{side * side / 1e6:.0f} megapixels"
    with pytest.raises(ValueError, match=rf"{megapixels}, over the 67 megapixels .*nothing decoded"):
        read_image(big)
    rc = _superfan("enhance", str(checkpoints["good"]), str(big), "-o", str(tmp_path / "out"), "--no-progress",
                   "--crops")  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert [ln for ln in err.splitlines() if "skipped " in ln] == [
        f"superfan enhance: skipped {big}: {'the image' if side == 20000 else f'{side}x{side}'} is "
        f"{side * side / 1e6:.0f} megapixels, over the 67 megapixels enhance reads (nothing decoded)"
    ]


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from superfan.commands.enhance import read_image

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    img = read_image(path)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    expect = np.rint(ramp / 257.0).astype(np.uint8)
    assert (img[..., 0] == expect).all() and (img[..., 2] == expect).all()
    assert img.min() == 0 and img.max() == 255 and abs(float(img.mean()) - 127.5) < 1  # a ramp, not white
    floats = tmp_path / "floats.tif"
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(floats)
    with pytest.raises(ValueError, match="floating-point samples"):
        read_image(floats)
    out = tmp_path / "out"
    assert _superfan("enhance", str(checkpoints["good"]), str(path), "-o", str(out), "--no-progress") == 0
    assert len(json.loads((out / "landmarks.json").read_text())["faces"]) == 1


# ------------------------------------------------------------------------------ a corrupt first tar header


def test_a_shard_whose_first_header_is_corrupt_is_one_line_for_evaluate(
    shard_dir: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was ``KeyError: 'FAN-bilinear'``: the stream skips the shard (one warning line), and evaluating zero
    faces is one line, not empty tables."""
    (shard,) = sorted(shard_dir.glob("*.tar"))
    raw = bytearray(shard.read_bytes())
    raw[148:156] = b"garbage!"  # the first member's header checksum
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(raw))
    ck = str(checkpoints["good"])
    rc = _superfan("evaluate", "--data", str(bad), "--fan", ck, ck, "--out", str(tmp_path / "ev"), "--no-progress")
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("skipped bad sample")]
    assert lines == [f"superfan evaluate: error: no face to evaluate in {bad}: it yielded none (every sample "
                     "damaged or skipped, or no samples at all); nothing written"], err  # fmt: skip
    assert not (tmp_path / "ev").exists()


# ------------------------------------------------------------------------------ pack arguments


@pytest.mark.parametrize(
    ("extra", "dest", "expect"),
    [
        (["--split", "a/b"], "out", "--split 'a/b': expected a plain name"),
        (["--split", "../escaped"], "out", "--split '../escaped': expected a plain name"),
        (["--split", ""], "out", "--split '': expected a plain name"),
        (["--split", "t", "--min-face", "nan"], "out", "--min-face nan: expected a number of pixels from 0"),
        (["--split", "t", "--min-face", "-5"], "out", "--min-face -5: expected a number of pixels from 0"),
        (["--split", "t", "--seed", "-1"], "out", "--seed -1: expected 0 to 4294967295"),
        (["--split", "t", "--pack-workers", "100000"], "out", "--pack-workers 100000: expected 0 (one per CPU) to"),
        (["--split", "t"], "afile", "DEST {tmp}/afile: cannot write there (it exists and is not a directory)"),
        (["--split", "t"], "afile/sub", "DEST {tmp}/afile/sub: cannot write there ({tmp}/afile exists and is not a"),
    ],
)
def test_a_bad_pack_argument_is_one_line_and_writes_nothing(
    extra: list[str], dest: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--split a/b`` was a ``FileNotFoundError`` traceback, ``../escaped`` wrote beside DEST, a file as
    DEST was "another pack is writing there (pid None on None)"; NaN and negative sizes were accepted."""
    from shards.__main__ import main

    (tmp_path / "afile").write_text("mine")
    assert main(["pack", "synthetic", "2", str(tmp_path / dest), "--no-progress", "--pack-workers", "1", *extra]) == 2
    assert f"shards pack: error: {expect.format(tmp=tmp_path)}" in _one_error_line(capsys, "shards pack")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine"


def test_a_refused_pack_leaves_no_empty_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shards.__main__ import main

    dest = tmp_path / "new" / "pack"
    assert main(["pack", "300w", str(tmp_path / "missing"), str(dest), "--split", "t", "--no-progress"]) == 2
    assert "not a directory" in _one_error_line(capsys, "shards pack")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------ perceptual weights

_TINY_SWEEP = ["--config", str(CONFIGS / "tiny.yaml")]


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("pipe:touch {marker}", "a pipe: URL would run a command and is never opened"),
        ("PIPE:touch {marker}", "a pipe: URL would run a command and is never opened"),
        ("gs://bucket/resnet50.pth", "unsupported scheme 'gs:'"),
        ("hf://org/resnet50.pth", "unsupported scheme 'hf:'"),
        ("weights:v2.pth", "a local file named so: ./weights:v2.pth"),
        ("s3://", "a s3:// URL needs a host or bucket and a path"),
    ],
)
def test_perceptual_weights_that_are_not_a_path_s3_or_http_are_one_line(
    value: str, expect: str, shard_dir: Path, checkpoints: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """``model.perceptual_weights: pipe:...`` was accepted by every command (the trial then failed to find a
    file of that name, inside Ray). Now refused when the config is read: ``superfan config``, ``superfan
    train`` and the sweeps, one line, exit 2, before Ray starts; the command never runs."""
    from sweeps.cli import main

    marker = tmp_path / "ran"
    override = f"model.perceptual_weights={value.format(marker=marker)}"
    store = tmp_path / "st"
    assert _superfan("config", "tiny", override) == 2
    line = _one_error_line(capsys, "superfan config")
    assert "model.perceptual_weights: Value error, " in line and expect in line, line
    rc = _superfan("train", "superfan", "--config", "tiny", "--data", str(shard_dir), "--teacher",
                   str(checkpoints["good"]), "--storage", str(store), override)  # fmt: skip
    assert rc == 2
    assert expect in _one_error_line(capsys, "superfan train")
    assert main("loss_weights", "test", [*_TINY_SWEEP, "--storage", str(store), override]) == 2
    assert expect in _one_error_line(capsys, "sweeps/loss_weights.py")
    assert not marker.exists() and not store.exists()


def test_missing_perceptual_weights_are_one_line_before_ray(
    shard_dir: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A local (or ``s3://``) weights file that is not there, for stages that need the ResNet-50: one line
    before Ray starts, not a trial that fails in its worker; ``superfan train fan`` needs no ResNet-50."""
    from sweeps.cli import main

    missing = tmp_path / "resnet50.pth"
    store, weights = tmp_path / "st", f"model.perceptual_weights={missing}"
    rc = _superfan("train", "superfan", "--config", "tiny", "--data", str(shard_dir), "--teacher",
                   str(checkpoints["good"]), "--storage", str(store), weights)  # fmt: skip
    assert rc == 2
    line = _one_error_line(capsys, "superfan train")
    assert line.endswith(f"model.perceptual_weights {str(missing)!r}: no such file"), line
    argv = [*_TINY_SWEEP, "--storage", str(store), "--data", str(shard_dir), "--val", str(shard_dir),
            "--teacher", str(checkpoints["good"]), weights]  # fmt: skip
    assert main("loss_weights", "test", argv) == 2
    line = _one_error_line(capsys, "sweeps/loss_weights.py")
    assert line.endswith(f"model.perceptual_weights {str(missing)!r}: no such file"), line
    assert not any(store.rglob("*"))  # at most the empty folder the plan makes for the Optuna database


# ------------------------------------------------------------------------------ search-space values


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ({"type": "choice", "values": [8, "large"]}, "choice 'large' is not a valid value: data.batch_size: Input "
         "should be a valid integer"),
        ({"type": "choice", "values": ["32"]}, "choice '32' is not a valid value"),
        ({"type": "choice", "values": [8, True]}, "choice True is not a valid value: data.batch_size: Value error, "
         "expected a number, not a boolean"),
        ({"type": "choice", "values": [-4]}, "choice -4 is not a valid value: data.batch_size: Input should be "
         "greater than 0"),
        ({"type": "choice", "values": [4.5]}, "choice 4.5 is not a valid value: data.batch_size: Input should be a "
         "valid integer, got a number with a fractional part"),
        ({"type": "int", "low": 1, "high": 100000}, "high 100000 is not a valid value: data.batch_size: Input should "
         "be less than or equal to 4096"),
        ({"type": "uniform", "low": 1, "high": 64}, "(a uniform or loguniform range gives fractions: use type: int)"),
    ],
)  # fmt: skip
def test_a_search_value_the_config_refuses_is_one_line_before_ray(
    spec: dict[str, Any], expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``choice`` of strings (booleans, negatives, fractions) for ``data.batch_size``: the trial that drew
    one errored inside Ray while the config's own value made a champion, and the sweep exited 0. Every value
    a trial can get is now built into a ``Config`` first: one line naming the parameter and the value."""
    from sweeps.cli import main

    data = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    data["search"]["loss_weights"]["data.batch_size"] = spec
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    store = tmp_path / "st"
    assert main("loss_weights", "test", ["--config", str(path), "--storage", str(store)]) == 2
    line = _one_error_line(capsys, "sweeps/loss_weights.py")
    assert f"{path}: search.loss_weights.data.batch_size: " in line and expect in line, line
    assert not store.exists()


@pytest.mark.slow
def test_a_sweep_whose_every_trial_failed_does_not_exit_0(
    local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path
) -> None:
    """One trial whose ResNet-50 URL cannot be fetched (http:// is fetched by the workers, not probed before):
    it errors, nothing is promoted, and the sweep says so in one line and exits 1."""
    store = tmp_path / "store"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "TORCH_HOME": str(tmp_path)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    args = ["--config", str(sweep_yaml), "--storage", str(store), "--name", "fails", "--samples", "1", "--epochs",
            "1", "--data", local_inputs["train"], "--val", local_inputs["val"], "--teacher", local_inputs["teacher"],
            "model.perceptual_weights=http://127.0.0.1:9/superfan-test-unreachable.pth"]  # fmt: skip
    proc = subprocess.run([sys.executable, str(REPO / "sweeps" / "loss_weights.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-6000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("sweeps/loss_weights.py: error: ")]
    assert len(errors) == 1 and "error: all trials failed (1 of 1; the first: " in errors[0], out[-6000:]
    assert "cannot load a state dict" in errors[0], errors
    assert not (store / "champions").exists()
