"""Property tests (Hypothesis) over every kind of input a user or a damaged store can hand superfan.

Over 4,000 generated malformed inputs per run of the suite, derandomised so that CI sees the same ones:

* shard members (JSON that is not an object, wrong types, random bytes for the JPEG, bombs, missing and
  stray members) mixed with valid faces: no exception, and every valid face comes out of the stream;
* shard bytes flipped inside members' data (headers intact): no exception, no sample lost;
* shard manifests (random JSON, mutated fields): a ShardSet or one line naming the file;
* sweep files (mutated settings, specs and config sections): a plan or one ``ConfigError`` line;
* config overrides (any field, any value: negative, infinite, NaN, strings, lists): a Config or one line;
* champion manifests (``files`` mutated): ``pull`` places a verified champion or is one line, and never
  touches a file beside the destination;
* ``pull`` destinations (names with glob characters, dots, hidden siblings that look like its leftovers,
  symlinks, files on the way): a champion or one line, and every sibling survives;
* ``enhance`` boxes (any value as a box, against any image size) and ``--boxes`` files (any JSON, any
  text): a box, a one-line ``BoxError``, or one ``UserError`` line;
* ``enhance`` input files (random bytes; real PNG, JPEG, GIF, TIFF and 16-bit files truncated, with bytes
  flipped, or with their PNG header's size, depth and colour type rewritten): an 8-bit RGB array within the
  pixel bound, or one line saying why the file is skipped;
* ``superfan enhance`` runs (the command's ``main``, in-process) with such an input and any ``-o``: a new or
  existing directory, a file, a path under a file, symlinks (to a directory, dangling, a loop), ``faces``
  a file, a directory where an output file goes, an input inside ``faces/``: outputs written, or one line
  (exit 1 when every input was skipped, 2 on a user error), and nothing beside ``-o`` touched;
* ``python -m shards pack`` argument lists (its ``main``, in-process; any split, sizes, seeds, ranges, yaws,
  DEST a file or under one): a pack that ``verify`` accepts, or one line and no shard written.

"No traceback" means: the only exceptions that may escape are superfan's user errors, each one line.
"""

from __future__ import annotations

import io
import json
import math
import random
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from superfan.config import Config, load_config
from superfan.data.manifest import resolve_dataset
from superfan.data.stream import make_loader
from superfan.data.tarstream import tar_samples
from superfan.errors import UserError

#: Examples per property; their sum is the suite's count of malformed inputs (docs/faults.md).
EXAMPLES = {"members": 250, "bytes": 150, "manifests": 200, "sweeps": 200, "overrides": 300,
            "champion_manifests": 300, "pull_paths": 200, "boxes": 1000, "boxes_files": 500,
            "enhance_images": 900, "enhance_runs": 50, "pack_args": 300}  # fmt: skip
#: Inputs each property actually ran on in this session (Hypothesis may stop early on a small space).
RAN = dict.fromkeys(EXAMPLES, 0)


def fuzz(what: str) -> settings:
    """Deterministic (the same inputs on every run), no example database, no deadline on a loaded CI box."""
    return settings(max_examples=EXAMPLES[what], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))  # fmt: skip


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
ODD = st.one_of(
    st.integers(-5, 5), st.floats(), st.sampled_from([math.inf, -math.inf, math.nan, 0, -1, 1e308]),
    st.text(max_size=10), st.lists(st.integers(-3, 300), max_size=4), st.none(), st.booleans(),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip


def _one_line(err: BaseException) -> None:
    assert isinstance(err, UserError), f"{type(err).__name__} escaped: {err}"
    assert str(err).strip() and "\n" not in str(err), repr(str(err))


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict[str, bytes]]]:
    """Six real packed faces (the packer's synthetic ones): key -> members."""
    from shards.pack import PackOptions, pack

    dest = tmp_path_factory.mktemp("fuzz") / "pack"
    pack(PackOptions(format="synthetic", src="6", dest=str(dest), split="train", workers=1, progress=False))
    samples = list(tar_samples([{"url": str(p)} for p in sorted(dest.glob("*.tar"))]))
    return [(s["__key__"], {"hr.jpg": s["hr.jpg"], "json": s["json"]}) for s in samples]


def _tar(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _cfg(**over: Any) -> Config:
    base = {"data.batch_size": 1, "data.num_workers": 0, "data.max_bad_fraction": 1.0, "data.shuffle_buffer": 0}
    return load_config(None, [f"{k}={v}" for k, v in {**base, **over}.items()])


def _mutated_json(data: Any, valid: bytes) -> bytes:
    if isinstance(data, tuple):  # a valid face's json with one field replaced
        field, value = data
        meta = json.loads(valid)
        meta[field] = value
        return json.dumps(meta, allow_nan=True).encode()
    return data if isinstance(data, bytes) else json.dumps(data).encode()


BAD_JSON = st.one_of(
    JSON, st.binary(max_size=40),
    st.tuples(st.sampled_from(["landmarks", "bbox", "yaw", "pose_source", "visible"]), JSON | ODD),
)  # fmt: skip
BAD_JPEG = st.one_of(st.binary(max_size=64), st.sampled_from(["truncated", "zeros", "gif"]))
BAD_SAMPLE = st.fixed_dictionaries(
    {"json": st.none() | BAD_JSON, "jpeg": st.none() | BAD_JPEG | st.just("valid"),
     "stray": st.lists(st.sampled_from(["png", "txt", "json.gz", "hr.jpg.bak", "__meta__"]), max_size=2)}
)  # fmt: skip


@fuzz("members")
@given(bad=st.lists(BAD_SAMPLE, min_size=1, max_size=4), order=st.randoms(use_true_random=False))
def test_malformed_members_are_skipped_and_no_valid_face_is_lost(
    faces: list[tuple[str, dict[str, bytes]]], bad: list[dict[str, Any]], order: random.Random
) -> None:
    RAN["members"] += 1
    valid_jpeg, valid_json = faces[0][1]["hr.jpg"], faces[0][1]["json"]
    samples = list(faces[:4])
    for i, spec in enumerate(bad):
        members: dict[str, bytes] = {}
        if spec["jpeg"] is not None:
            named = {"valid": valid_jpeg, "truncated": valid_jpeg[: len(valid_jpeg) // 3],
                     "zeros": bytes(len(valid_jpeg)), "gif": b"GIF89a" + bytes(20)}  # fmt: skip
            members["hr.jpg"] = named.get(spec["jpeg"], spec["jpeg"])
        if spec["json"] is not None:
            members["json"] = _mutated_json(spec["json"], valid_json)
        for ext in spec["stray"]:
            members[ext] = b"stray"
        samples.append((f"fuzz/bad{i}", members or {"txt": b"nothing"}))
    order.shuffle(samples)
    with tempfile.TemporaryDirectory() as d:
        shard = Path(d, "f.tar")
        shard.write_bytes(_tar(samples))
        out = list(make_loader(str(shard), _cfg(), train=False))
    keys = {k for b in out for k in b["key"]}
    assert {k for k, _ in faces[:4]} <= keys <= {k for k, _ in samples}


@fuzz("bytes")
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=20))
def test_bytes_flipped_inside_members_lose_no_sample(
    faces: list[tuple[str, dict[str, bytes]]], flips: list[tuple[float, int]]
) -> None:
    RAN["bytes"] += 1
    raw = bytearray(_tar(faces))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        spans = [(m.offset_data, m.offset_data + m.size) for m in tar.getmembers() if m.size]
    for where, value in flips:
        lo, hi = spans[int(where * len(spans))]
        raw[lo + int(where * 7919) % (hi - lo)] = value
    seen: list[BaseException] = []
    out = list(tar_samples([{"url": "mem"}], handler=lambda e: seen.append(e) or True,
                           opener=lambda _: io.BytesIO(bytes(raw))))  # fmt: skip
    assert [s["__key__"] for s in out] == [k for k, _ in faces] and not seen


MANIFEST = st.one_of(
    JSON,
    st.fixed_dictionaries({"shards": st.lists(st.dictionaries(
        st.sampled_from(["name", "samples", "sha256", "bytes", "x"]), JSON | ODD, max_size=4), max_size=3)},
        optional={"samples": ODD, "crop": JSON | ODD, "format": ODD}),
    st.binary(max_size=30),
)  # fmt: skip


@fuzz("manifests")
@given(content=MANIFEST)
def test_a_malformed_manifest_is_a_shard_set_or_one_line(content: Any) -> None:
    RAN["manifests"] += 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "manifest.json")
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content, allow_nan=True).encode())
        try:
            found = resolve_dataset(d)
        except Exception as err:  # noqa: BLE001 - what escapes is the property under test
            _one_line(err)
            return
    assert found.shards and all(u.startswith(d) for u in found.shards)


SWEEP_KEYS = [
    "sweep.samples", "sweep.epochs", "sweep.max_concurrent", "sweep.budget_hours", "sweep.stages",
    "sweep.promote_stages", "sweep.teacher_epochs", "sweep.grace_period", "sweep.mode", "sweep.nonsense",
    "search.loss_weights", "search.loss_weights.losses.heatmap.weight", "search.loss_weights.losses.nope",
    "search.loss_weights.losses.perceptual.weight.around", "search.loss_weights.losses.heatmap.weight.type",
    "search.block_layouts.model.generator.layout.total", "search.augmentation.augment.strength.low",
    "model.generator.layout", "data.batch_size", "train.workers", "stages", "base", "unknown_section",
]  # fmt: skip


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


@fuzz("sweeps")
@given(edits=st.lists(st.tuples(st.sampled_from(SWEEP_KEYS), ODD | JSON), min_size=1, max_size=3))
def test_a_mutated_sweep_file_is_a_plan_or_one_line(edits: list[tuple[str, Any]]) -> None:
    RAN["sweeps"] += 1
    from sweeps.cli import CONFIGS_DIR, build_parser, plan

    data = yaml.safe_load((CONFIGS_DIR / "tiny.yaml").read_text())
    for key, value in edits:
        _set(data, key, value)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "sweep.yaml")
        path.write_text(yaml.safe_dump(data))
        args = build_parser("loss_weights", "fuzz").parse_args(["--config", str(path), "--storage", d])
        try:
            plan("loss_weights", args)
        except Exception as err:  # noqa: BLE001 - what escapes is the property under test
            _one_line(err)


def _fields(model: type, prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out += _fields(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


FIELDS = _fields(Config) + ["stages.0.epochs", "model.nope", "data"]


@fuzz("overrides")
@given(key=st.sampled_from(FIELDS), value=ODD | JSON, raw=st.booleans())
def test_any_override_is_a_config_or_one_line(key: str, value: Any, raw: bool) -> None:
    RAN["overrides"] += 1
    text = str(value) if raw else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    try:
        cfg = load_config("tiny", [f"{key}={text}"])
    except Exception as err:  # noqa: BLE001 - what escapes is the property under test
        _one_line(err)
        return
    assert isinstance(cfg, Config)


# ------------------------------------------------------------------------------ pull and enhance


def _champion(root: Path) -> Path:
    """A real promoted champion (superfan.champion.promote) under ``root``: its version directory."""
    from superfan.champion import Candidate, promote

    ckpt = root / "run" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.pt").write_bytes(b"weights" * 100)
    (ckpt / "config.yaml").write_text("profile: tiny\n")
    metrics = {"val_auc_balanced": 0.5, "global_epoch": 1}
    champ = promote([Candidate(str(ckpt), metrics, "t", {})], str(root / "store"), "fz")
    assert champ is not None
    return Path(champ.url)


FILE_ENTRY = st.fixed_dictionaries(
    {}, optional={"path": ODD | st.sampled_from(["checkpoint.pt", "../x", "/etc/passwd", ".superfan-pull.json"]),
                  "bytes": ODD, "sha256": ODD | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)},
)  # fmt: skip


@fuzz("champion_manifests")
@given(files=st.one_of(JSON, ODD, st.lists(FILE_ENTRY | JSON, max_size=3)))
def test_a_mutated_champion_manifest_is_pulled_or_one_line(files: Any) -> None:
    RAN["champion_manifests"] += 1
    from superfan.champion import pull

    with tempfile.TemporaryDirectory() as d:
        version = _champion(Path(d))
        manifest = json.loads((version / "manifest.json").read_text())
        manifest["files"] = files
        (version / "manifest.json").write_text(json.dumps(manifest, allow_nan=True))
        (Path(d) / "neighbour.txt").write_text("mine")
        try:
            pull(str(version), Path(d) / "dest", quiet=True)
        except Exception as err:  # noqa: BLE001 - what escapes is the property under test
            _one_line(err)
        assert (Path(d) / "neighbour.txt").read_text() == "mine"
        assert not [p for p in Path(d).iterdir() if ".pull-" in p.name or ".old-" in p.name]


NAME = st.text(alphabet="ab*?[].-_ ", min_size=1, max_size=8).filter(lambda n: n not in {".", ".."})


@fuzz("pull_paths")
@given(name=NAME, sub=st.sampled_from(["", "afile", "link", "dangling", "sub"]), twice=st.booleans())
def test_any_pull_destination_is_a_champion_or_one_line_and_siblings_survive(name: str, sub: str, twice: bool) -> None:
    RAN["pull_paths"] += 1
    from superfan.champion import pull, verify_champion

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        version = _champion(root / "c")
        home = root / "home"
        home.mkdir()
        (home / "afile").write_text("x")
        (home / "sub").mkdir()
        (home / "link").symlink_to(home / "sub")
        (home / "dangling").symlink_to(home / "nowhere")
        siblings = [home / f".{name}.old-1", home / f".{name}.pull-2", home / "sub" / f".{name}.old-3",
                    home / ".mail.old-x"]  # fmt: skip
        for sib in siblings:
            sib.mkdir(exist_ok=True)
            (sib / "keep").write_text("k")
        dest = home / sub / name if sub else home / name
        for _ in range(2 if twice else 1):
            try:
                pull(str(version), dest, quiet=True)
                assert verify_champion(dest)["name"] == "fz"
            except Exception as err:  # noqa: BLE001 - what escapes is the property under test
                _one_line(err)
        for sib in siblings:
            assert (sib / "keep").read_text() == "k", sib
        assert (home / "afile").read_text() == "x"


BOX = st.one_of(ODD, JSON, st.lists(st.one_of(st.integers(-10**6, 10**6), st.floats(), st.booleans(), st.none(),
                                               st.text(max_size=3)), max_size=6))  # fmt: skip


@fuzz("boxes")
@given(box=BOX, width=st.integers(1, 5000), height=st.integers(1, 5000))
def test_any_box_is_a_box_inside_its_bounds_or_one_line(box: Any, width: int, height: int) -> None:
    RAN["boxes"] += 1
    from superfan.infer import MAX_BOX_FACTOR, BoxError, check_box

    try:
        x, y, w, h = check_box(box, width, height)
    except BoxError as err:
        assert str(err).strip() and "\n" not in str(err)
        return
    assert all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0
    assert max(w, h) <= MAX_BOX_FACTOR * max(width, height) and x < width and y < height


@fuzz("boxes_files")
@given(content=st.one_of(JSON, st.dictionaries(st.text(max_size=6), BOX, max_size=3),
                         st.text(alphabet="0123456789 .-\nab/jpg", max_size=60), st.binary(max_size=40)))  # fmt: skip
def test_a_boxes_file_is_a_table_or_one_line(content: Any) -> None:
    RAN["boxes_files"] += 1
    from superfan.commands.enhance import parse_boxes

    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "boxes.json" if not isinstance(content, str | bytes) else "bbx_gt.txt")
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content, allow_nan=True))
        try:
            table = parse_boxes(path)
        except Exception as err:  # noqa: BLE001 - what escapes is the property under test
            _one_line(err)
            return
        assert isinstance(table, dict) and all(isinstance(v, list) for v in table.values())


# ------------------------------------------------------------------------------ enhance inputs and -o


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    """Small real image files of every kind enhance meets: name -> bytes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    out: dict[str, bytes] = {}
    for name, img, fmt in [
        ("png", rgb, "PNG"), ("jpeg", rgb, "JPEG"), ("gif", rgb.convert("P"), "GIF"), ("bmp", rgb, "BMP"),
        ("rgba", rgb.convert("RGBA"), "PNG"), ("grey", rgb.convert("L"), "PNG"),
        ("png16", Image.fromarray(rng.integers(0, 65536, (24, 24), dtype=np.uint16)), "PNG"),
        ("tiff16", Image.fromarray(rng.integers(0, 65536, (24, 24), dtype=np.uint16)), "TIFF"),
        ("float", Image.fromarray(rng.random((24, 24), dtype=np.float32)), "TIFF"),
    ]:  # fmt: skip
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[name] = buf.getvalue()
    return out


KINDS = ["png", "jpeg", "gif", "bmp", "rgba", "grey", "png16", "tiff16", "float"]
SIDE = st.integers(0, 2**31) | st.sampled_from([1, 8192, 8193, 20000])
FLIPS = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8)
IMAGE = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.just("valid"), st.sampled_from(KINDS)),
    st.tuples(st.just("truncate"), st.sampled_from(KINDS), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.sampled_from(KINDS), FLIPS),
    st.tuples(st.just("ihdr"), SIDE, SIDE, st.sampled_from([0, 1, 2, 4, 8, 16, 255]),
              st.sampled_from([0, 1, 2, 3, 4, 6, 7]), st.booleans()),
)  # fmt: skip


def _image_bytes(spec: Any, images: dict[str, bytes]) -> bytes:
    if isinstance(spec, bytes):
        return spec
    what, kind, *rest = spec
    if what == "ihdr":  # a real PNG whose header claims another size, depth or colour type
        import struct
        import zlib

        width, height, depth, colour, crc_ok = kind, *rest
        raw = bytearray(images["png"])
        data = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
        raw[16:29] = data
        raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + data) if crc_ok else 0)
        return bytes(raw)
    raw = bytearray(images[kind])
    if what == "truncate":
        return bytes(raw[: int(rest[0] * len(raw))])
    if what == "flip":
        for where, value in rest[0]:
            raw[int(where * len(raw))] = value
    return bytes(raw)


@fuzz("enhance_images")
@given(spec=IMAGE, suffix=st.sampled_from([".png", ".jpg", ".tif", ".gif", ".bin"]))
def test_any_image_file_is_8_bit_rgb_within_bounds_or_one_line(
    images: dict[str, bytes], spec: Any, suffix: str
) -> None:
    RAN["enhance_images"] += 1
    from superfan.commands.enhance import MAX_INPUT_PIXELS, read_image

    with tempfile.TemporaryDirectory() as d:
        path = Path(d, f"face{suffix}")
        path.write_bytes(_image_bytes(spec, images))
        try:
            img = read_image(path)
        except (OSError, ValueError) as err:  # a skip, reported on one line
            assert str(err).strip() and "\n" not in str(err), repr(str(err))
            return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert 0 < img.shape[0] * img.shape[1] <= MAX_INPUT_PIXELS


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of the tiny profile's freshly initialised networks."""
    from superfan.checkpoint import save_checkpoint
    from tests.test_one_line_errors import tiny_end2end_payload

    out = tmp_path_factory.mktemp("fuzz-ckpt") / "end2end"
    save_checkpoint(out, tiny_end2end_payload())
    return out


OUT_KINDS = ["new", "existing", "file", "under_file", "symlink_dir", "dangling", "loop", "faces_file",
             "output_is_dir", "landmarks_dir", "input_inside"]  # fmt: skip


def _run_quietly(main: Any, argv: list[str]) -> tuple[int, str]:
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exit_:  # argparse: usage and one error line, exit 2
            rc = exit_.code if isinstance(exit_.code, int) else 2
    return rc, err.getvalue()


@fuzz("enhance_runs")
@given(kind=st.sampled_from(OUT_KINDS), name=NAME, spec=st.one_of(st.tuples(st.just("valid"), st.sampled_from(KINDS)),
       IMAGE), crops=st.booleans())  # fmt: skip
def test_any_enhance_run_writes_its_outputs_or_is_one_line(
    tiny_checkpoint: Path, images: dict[str, bytes], kind: str, name: str, spec: Any, crops: bool
) -> None:
    RAN["enhance_runs"] += 1
    from superfan.cli import main

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "keep.txt").write_text("mine")
        (root / "afile").write_text("mine")
        (root / "real").mkdir()
        out = root / "afile" / name if kind == "under_file" else root / name
        face = root / "in" / "face.png"
        if kind in ("existing", "faces_file", "output_is_dir", "landmarks_dir", "input_inside"):
            out.mkdir()
        if kind == "file":
            out.write_text("mine")
        elif kind == "symlink_dir":
            out.symlink_to(root / "real")
        elif kind == "dangling":
            out.symlink_to(root / "nowhere")
        elif kind == "loop":
            out.symlink_to(root / "loop2")
            (root / "loop2").symlink_to(out)
        elif kind == "faces_file":
            (out / "faces").write_text("mine")
        elif kind == "output_is_dir":
            (out / "faces" / "face.png").mkdir(parents=True)
        elif kind == "landmarks_dir":
            (out / "landmarks.json").mkdir()
        elif kind == "input_inside":
            face = out / "faces" / "face.png"
        face.parent.mkdir(parents=True, exist_ok=True)
        face.write_bytes(_image_bytes(spec, images))
        argv = ["enhance", str(tiny_checkpoint), str(face), "-o", str(out), "--no-progress"] + (["--crops"] * crops)
        rc, err = _run_quietly(main, argv)
        assert "Traceback" not in err, err
        errors = [ln for ln in err.splitlines() if ln.startswith("superfan enhance: error: ")]
        if rc == 2:
            assert len(errors) == 1, err
        else:
            assert not errors, err
            doc = json.loads((out / "landmarks.json").read_text())
            assert len(doc["faces"]) == (1 if rc == 0 else 0) and rc in (0, 1), (rc, err)
        assert (root / "keep.txt").read_text() == "mine" and (root / "afile").read_text() == "mine"
        if kind == "file":
            assert out.read_text() == "mine"


# ------------------------------------------------------------------------------ pack arguments


@pytest.fixture(scope="module")
def old_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shards.pack import PackOptions, pack

    dest = tmp_path_factory.mktemp("fuzz-old") / "pack"
    pack(PackOptions(format="synthetic", src="2", dest=str(dest), split="old", workers=1, progress=False))
    return dest


PACK_OPTION = st.one_of(
    st.tuples(st.just("--split"), st.text(alphabet="ab./*?[] -_\n", min_size=0, max_size=6) | st.just("val")),
    st.tuples(st.just("--shard-size"), st.sampled_from(["-2", "0", "1", "2", "99999999999999999999", "x"])),
    st.tuples(st.just("--crop-size"), st.sampled_from(["-1", "0", "63", "64", "100", "1025", "nan"])),
    st.tuples(st.just("--context"), st.sampled_from(["nan", "inf", "-1", "0.5", "1", "2.4", "8", "9", "x"])),
    st.tuples(st.just("--min-face"), st.sampled_from(["nan", "-inf", "-5", "0", "16", "100001", "1e300"])),
    st.tuples(st.just("--seed"), st.sampled_from(["-1", "0", "7", "4294967296", "1.5"])),
    st.tuples(st.just("--limit"), st.sampled_from(["-1", "0", "1", "2"])),
    st.tuples(st.just("--pack-workers"), st.sampled_from(["-1", "1", "2000", "x"])),
    st.tuples(st.just("--hash-range"), st.text(alphabet="0.51:-na", max_size=7) | st.sampled_from(["0:0.5", "0:1"])),
    st.tuples(st.just("--yaws"), st.sampled_from(["default", "30", "45,90", "nan", "0", "91", "30,x", ""])),
    st.tuples(st.just("--profile-views"), st.sampled_from(["-1", "0", "1", "99999999999"])),
    st.tuples(st.just("--profile-pitch"), st.sampled_from(["nan", "-1", "5", "31"])),
    st.tuples(st.just("--dataset"), st.text(alphabet="ab./_ ", max_size=5)),
    st.tuples(st.just("--jaw"), st.sampled_from(["2d-3d", "sideways"])),
    st.sampled_from([("--overwrite",), ("--profile-mirror",)]),
)  # fmt: skip


@fuzz("pack_args")
@given(fmt=st.sampled_from(["synthetic"] * 4 + ["300w", "widerface", "celeba"]),
       src=st.sampled_from(["1", "2", "3", "0", "-2", "x", "1e3", "99999999999999999999", "missing", "afile"]),
       dest=st.sampled_from(["new", "nested_new", "old_pack", "afile", "under_file"]),
       options=st.lists(PACK_OPTION, max_size=4))  # fmt: skip
def test_any_pack_arguments_make_a_verified_pack_or_one_line(
    old_pack: Path, fmt: str, src: str, dest: str, options: list[tuple[str, ...]]
) -> None:
    RAN["pack_args"] += 1
    import shutil

    from shards.__main__ import main
    from shards.writer import verify

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "afile").write_text("mine")
        target = {"new": root / "pack", "nested_new": root / "a" / "b", "old_pack": root / "old",
                  "afile": root / "afile", "under_file": root / "afile" / "pack"}[dest]  # fmt: skip
        if dest == "old_pack":
            shutil.copytree(old_pack, target)
        source = str(root / src) if src in ("missing", "afile") else src
        argv = ["pack", fmt, source, str(target), "--split", "train", "--no-progress", "--pack-workers", "1"]
        argv += [part for option in options for part in option]
        rc, err = _run_quietly(main, argv)
        assert "Traceback" not in err, err
        lines = err.strip().splitlines()
        if rc == 0:
            assert verify(str(target))["shards"] >= 1
        else:
            assert rc == 2, (rc, err)
            errors = [ln for ln in lines if ": error: " in ln]
            assert len(errors) == 1, err
            if dest in ("new", "nested_new"):
                assert not (root / "pack").exists() and not (root / "a").exists()
            if dest == "old_pack":
                assert verify(str(target))["shards"] >= 1  # the old pack untouched
        assert (root / "afile").read_text() == "mine"
        assert not [p for p in root.iterdir() if p.name.endswith(".tar")]  # nothing written beside DEST


def test_the_suite_ran_over_three_thousand_inputs() -> None:
    if not all(RAN.values()):
        pytest.skip("counts only when every property of this file ran in this session")
    assert sum(RAN.values()) >= 3000, RAN
