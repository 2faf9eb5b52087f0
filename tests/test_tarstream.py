"""The lean tar reader gives exactly what webdataset's tarfile-based expander gives, on every tar flavour."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from superfan.data.tarstream import TarFormatError, iter_members, tar_samples


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
