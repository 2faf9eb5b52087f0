"""Property tests (Hypothesis) over every kind of input a user or a damaged store can hand superfan.

Over 1,000 generated malformed inputs per run of the suite, derandomised so that CI sees the same ones:

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
  text): a box, a one-line ``BoxError``, or one ``UserError`` line.

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
            "champion_manifests": 300, "pull_paths": 200, "boxes": 1000, "boxes_files": 500}  # fmt: skip
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


def test_the_suite_ran_over_three_thousand_inputs() -> None:
    if not all(RAN.values()):
        pytest.skip("counts only when every property of this file ran in this session")
    assert sum(RAN.values()) >= 3000, RAN
