"""The lean tar reader gives exactly what webdataset's tarfile-based expander gives, on every tar flavour;
it bounds what a header can make it read, and refuses command-running URLs."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from pathlib import Path

import pytest
import webdataset as wds

from superfan.data.tarstream import (
    MAX_MEMBER_ENV,
    OversizedMember,
    TarFormatError,
    TruncatedTar,
    iter_members,
    tar_samples,
)
from superfan.errors import BadSample, ConfigError, UnsafeURLError


def _write_tar(path: Path, members: list[tuple[str, bytes]], fmt: int) -> None:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        dir_info = tarfile.TarInfo("some/dir")
        dir_info.type = tarfile.DIRTYPE
        tar.addfile(dir_info)


def _reference(url: str) -> list[dict]:
    return [
        {k: v for k, v in s.items() if k != "__local_path__"}
        for s in wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())
    ]


MEMBERS = [
    ("300w/afw__1051618982_1.hr.jpg", b"\xff\xd8jpeg" * 100),
    ("300w/afw__1051618982_1.json", b'{"yaw": 1.5}'),
    ("a/" + "very_long_directory_name/" * 8 + "face_0001.hr.jpg", b"x" * 513),  # > 100 chars: pax/GNU
    ("a/" + "very_long_directory_name/" * 8 + "face_0001.json", b"{}"),
    ("celeba/000001.HR.JPG", b""),  # empty file, upper-case extension
    ("noext", b"dropped"),
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_same_samples_as_webdataset(tmp_path: Path, fmt: int) -> None:
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [m for m in MEMBERS if len(m[0]) < 100]
    path = tmp_path / "shard.tar"
    _write_tar(path, members, fmt)
    ours = list(tar_samples([{"url": str(path)}]))
    assert ours == _reference(str(path))
    assert ours[0]["__key__"] == "300w/afw__1051618982_1" and set(ours[0]) >= {"hr.jpg", "json"}


def test_webdataset_tarwriter_output(tmp_path: Path) -> None:
    path = tmp_path / "w.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(5):
            sink.write({"__key__": f"ds/{i:04d}", "hr.jpg": bytes([i]) * (100 * i + 1), "json": b"{}"})
    assert list(tar_samples([{"url": str(path)}])) == _reference(str(path))


def test_corrupt_and_truncated_streams_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "shard.tar"
    _write_tar(path, MEMBERS[:2], tarfile.PAX_FORMAT)
    raw = path.read_bytes()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(raw[:100] + b"X" + raw[101:])  # a byte of the first header changed
    with pytest.raises(TarFormatError, match=r"bad\.tar: bad tar header checksum"):
        list(tar_samples([{"url": str(bad)}]))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[:700])  # header + part of the data
    with pytest.raises(TarFormatError, match="truncated"):
        list(tar_samples([{"url": str(cut)}]))
    with pytest.raises(TarFormatError, match="checksum"):
        list(iter_members(io.BytesIO(b"not a tar file at all" * 40)))


# ------------------------------------------------------------------------------------------ bounded reads


def _header(name: str, size: int) -> bytes:
    """A valid ustar header (checksum and all) claiming ``size`` bytes, as a hostile shard would hold."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)  # GNU base-256 for sizes >= 8 GiB


@pytest.mark.parametrize("claimed", [100 << 20, 1 << 40])
def test_a_huge_member_header_is_a_bad_sample_without_allocating_it(tmp_path: Path, claimed: int) -> None:
    path = tmp_path / "evil.tar"
    path.write_bytes(_header("300w/x.hr.jpg", claimed) + b"\xff\xd8" * 100)
    tracemalloc.start()
    try:
        with pytest.raises(OversizedMember) as info:
            list(tar_samples([{"url": str(path)}]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"allocated {peak} bytes for a header claiming {claimed}"
    err = info.value
    assert isinstance(err, BadSample) and isinstance(err, ValueError)
    assert err.url == str(path) and err.member == "300w/x.hr.jpg"
    msg = str(err)
    assert msg.startswith(f"{path}: ") and "'300w/x.hr.jpg'" in msg and str(claimed) in msg and "\n" not in msg


def test_the_member_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "shard.tar"
    _write_tar(path, [("k/a.hr.jpg", b"x" * 5000), ("k/a.json", b"{}")], tarfile.PAX_FORMAT)
    assert len(list(tar_samples([{"url": str(path)}]))) == 1
    with pytest.raises(OversizedMember, match="above the 4096-byte limit"):
        list(tar_samples([{"url": str(path)}], max_member=4096))
    monkeypatch.setenv(MAX_MEMBER_ENV, "4096")
    with pytest.raises(OversizedMember):
        list(iter_members(path.open("rb")))
    monkeypatch.setenv(MAX_MEMBER_ENV, "lots")
    with pytest.raises(ConfigError, match=MAX_MEMBER_ENV):
        list(tar_samples([{"url": str(path)}]))


def test_a_handler_skips_the_oversized_sample_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "shard.tar"
    members = [("d/a.hr.jpg", b"a" * 100), ("d/a.json", b"{}"), ("d/b.json", b"{}"), ("d/b.hr.jpg", b"b" * 9000),
               ("d/b.txt", b"t"), ("d/c.hr.jpg", b"c" * 100), ("d/c.json", b"{}")]  # fmt: skip
    _write_tar(path, members, tarfile.PAX_FORMAT)
    seen: list[BaseException] = []
    out = list(tar_samples([{"url": str(path)}], max_member=4096, handler=lambda e: seen.append(e) or True))
    assert [s["__key__"] for s in out] == ["d/a", "d/c"]  # all of b dropped, not a b without its image
    assert len(seen) == 1 and isinstance(seen[0], OversizedMember) and seen[0].member == "d/b.hr.jpg"


def test_truncated_tars_are_bad_samples_naming_shard_and_member(tmp_path: Path) -> None:
    path = tmp_path / "shard.tar"
    members = [("d/a.hr.jpg", b"a" * 1000), ("d/a.json", b"{}"), ("d/b.hr.jpg", b"b" * 3000), ("d/b.json", b"{}")]
    _write_tar(path, members, tarfile.USTAR_FORMAT)
    raw = path.read_bytes()
    with tarfile.open(path) as tar:
        offsets = [(m.offset, m.offset_data, m.name) for m in tar]
    b_jpg = next(o for o in offsets if o[2] == "d/b.hr.jpg")
    cut_in_data = tmp_path / "cut-data.tar"
    cut_in_data.write_bytes(raw[: b_jpg[1] + 1000])
    cut_at_member = tmp_path / "cut-member.tar"  # ends cleanly between members, without the end block
    cut_at_member.write_bytes(raw[: b_jpg[0]])
    cut_in_header = tmp_path / "cut-header.tar"
    cut_in_header.write_bytes(raw[: b_jpg[0] + 200])
    for cut, member in ((cut_in_data, "d/b.hr.jpg"), (cut_at_member, "d/a.json"), (cut_in_header, "d/a.json")):
        with pytest.raises(TruncatedTar) as info:
            list(tar_samples([{"url": str(cut)}]))
        assert isinstance(info.value, BadSample) and isinstance(info.value, TarFormatError)
        msg = str(info.value)
        assert msg.startswith(f"{cut}: truncated tar") and repr(member) in msg and "\n" not in msg, msg
        assert info.value.url == str(cut) and info.value.member == member
    # With a handler: the samples before the cut are kept, the cut one dropped, the next shard read.
    seen: list[BaseException] = []
    urls = [{"url": str(cut_in_data)}, {"url": str(path)}]
    out = list(tar_samples(urls, handler=lambda e: seen.append(e) or True))
    assert [(s["__url__"], s["__key__"]) for s in out] == [
        (str(cut_in_data), "d/a"), (str(path), "d/a"), (str(path), "d/b")
    ]  # fmt: skip
    assert len(seen) == 1 and isinstance(seen[0], TruncatedTar)


def test_an_empty_stream_is_an_empty_shard() -> None:
    assert list(iter_members(io.BytesIO(b""))) == []


def test_pipe_urls_are_refused_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERFAN_ALLOW_PIPE_URLS", raising=False)
    path = tmp_path / "shard.tar"
    _write_tar(path, MEMBERS[:2], tarfile.PAX_FORMAT)
    marker = tmp_path / "ran"
    url = f"pipe:touch {marker}; cat {path}"
    with pytest.raises(UnsafeURLError, match="shell command"):
        list(tar_samples([{"url": url}]))
    assert not marker.exists()
    monkeypatch.setenv("SUPERFAN_ALLOW_PIPE_URLS", "1")  # the explicit opt-in
    assert [s["__key__"] for s in tar_samples([{"url": url}])] == ["300w/afw__1051618982_1"]
    assert marker.exists()
