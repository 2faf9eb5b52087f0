"""Sealed sweep state: every pickle a sweep leaves on storage carries an HMAC, checked before it is unpickled.

``--resume`` (and the embedded no-argument run of an existing sweep) hands Ray Tune the experiment directory,
and Tune unpickles what it finds there: ``tuner.pkl``, the ``experiment_state-*.json`` files (their
``CLOUDPICKLE_FALLBACK`` entries), the searcher's ``searcher-state-*.pkl`` and a trial's ``error.pkl``.
Unpickling runs code, so anyone who may write the bucket could run code as the user who resumes. Here every
such file is *sealed*: an HMAC-SHA256 of its name and bytes, keyed by a secret that never goes to storage
(:func:`sweep_key`), is written beside it as ``<file>.hmac`` before the file itself, and every read of such a
file is checked against its seal before a byte of it is handed to Tune.

Both happen in one place, :class:`SealingFS`, the ``pyarrow`` filesystem the sweep's ``RunConfig`` writes
and reads the experiment through (around the retried S3 filesystem, or the local one): the bytes checked are
the bytes returned, so a file swapped between a check and a read is still refused. :func:`check_experiment`
checks every sealed file once more before Ray starts, so a bad one is one line and exit 2, not a traceback
from inside Tune. ``sweep.json`` is sealed the same way (it names the Optuna and MLflow endpoints a resumed
sweep connects to).

The key: ``SUPERFAN_SWEEP_KEY`` when set, else ``~/.config/superfan/sweep.key`` (``$XDG_CONFIG_HOME`` when
set), created on first use with 32 random bytes, mode 0600. Only the driver needs it (it alone writes and
reads the sealed files); it never travels in a ``runtime_env`` and is never pickled (the filesystem object
Ray pickles holds no key: it asks this module, in the process that uses it).

A seal keeps the MACs of the last few versions of a file: the seal is written before the file, so a driver
killed between the two leaves the previous version on storage, still accepted. What a seal does not prove:
that the file is the *newest* state (an older sealed version of the same file name can be put back), nor
anything about files it does not cover (progress and result files, which are JSON and CSV read as data).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from superfan.errors import UserError

KEY_ENV = "SUPERFAN_SWEEP_KEY"
#: Resume state whose seal is missing or wrong anyway (a sweep from before sealing, another machine's key).
TRUST_ENV = "SUPERFAN_TRUST_SWEEP_STATE"
SUFFIX = ".hmac"
FORMAT = "superfan-seal/1"
#: MACs kept per file: the newest first; older ones cover a driver killed between a seal and its file.
KEEP = 4

_state: dict[str, Any] = {"key": None, "trust": False}


class UnsealedState(UserError):
    """Sweep state on storage that this driver's key did not seal (missing, changed, or another key's)."""


def key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "superfan" / "sweep.key"


def sweep_key() -> bytes:
    """The secret seals are made with: ``SUPERFAN_SWEEP_KEY``, else the key file (created 0600 if missing)."""
    env = os.environ.get(KEY_ENV)
    if env is not None:
        if len(env.strip()) < 16:
            raise UserError(f"{KEY_ENV}: too short (at least 16 characters; e.g. the output of `openssl rand -hex 32`)")
        return env.strip().encode()
    path = key_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
        text = path.read_text().strip()
    except OSError as err:
        raise UserError(f"sweep key {path}: {err.strerror or err} (or set {KEY_ENV})") from None
    if len(text) < 16:
        raise UserError(f"sweep key {path}: too short or empty (delete it to make a new one, or set {KEY_ENV})")
    return text.encode()


def arm(trust: bool = False) -> None:
    """Seal what this process writes from now on and check what it reads (the sweep driver, before Ray)."""
    _state["key"] = sweep_key()
    _state["trust"] = bool(trust)


def disarm() -> None:
    _state["key"], _state["trust"] = None, False


def mac(key: bytes, name: str, data: bytes) -> str:
    """HMAC-SHA256 of a file's name (relative to the experiment directory) and its bytes."""
    return hmac.new(key, FORMAT.encode() + b"\0" + name.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def is_sealed_name(rel: str) -> bool:
    """What Tune unpickles on a resume: the experiment directory's own ``.pkl`` and ``.json`` files (Tune's
    state and ours), and a trial's ``error.pkl``."""
    if not rel or rel.startswith("/") or ".." in rel.split("/"):
        return False
    if "/" not in rel:
        return rel.endswith((".pkl", ".json"))
    return rel.rsplit("/", 1)[1] == "error.pkl"


def parse_seal(raw: bytes | None) -> list[str]:
    """The MACs a seal file lists (none when it is missing or malformed)."""
    if raw is None:
        return []
    try:
        data = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return []
    macs = data.get("hmac_sha256") if isinstance(data, dict) and data.get("format") == FORMAT else None
    return [m for m in macs if isinstance(m, str)] if isinstance(macs, list) else []


def new_seal(previous: list[str], digest: str) -> bytes:
    macs = [digest, *[m for m in previous if m != digest]][:KEEP]
    return (json.dumps({"format": FORMAT, "hmac_sha256": macs}) + "\n").encode()


def check(name: str, data: bytes, seal: bytes | None, where: str) -> None:
    """Raise :class:`UnsealedState` unless ``data`` is one of the versions the seal lists, under our key."""
    key = _state["key"]
    if key is None or _state["trust"]:
        return
    digest = mac(key, name, data)
    if any(hmac.compare_digest(digest, m) for m in parse_seal(seal)):
        return
    why = "has no seal" if seal is None else "does not match its seal (changed, or sealed with another key)"
    raise UnsealedState(
        f"{where} {why}: resuming would unpickle it, and a pickle runs code. If this sweep's state is yours "
        f"(a sweep from before sealing, or sealed on another machine: set {KEY_ENV} to that machine's key), "
        f"resume with --trust-state; otherwise start a new sweep with --name"
    )


# ------------------------------------------------------------------------------------ the filesystem


def _handler_base() -> type:
    import pyarrow.fs as pafs

    return pafs.FileSystemHandler


class _SealedUpload:
    """A sealed file being written: held until ``close``, then its seal is written, then the file."""

    def __init__(self, fs: Any, path: str, rel: str, metadata: Any) -> None:
        import io

        self._fs, self._path, self._rel, self._metadata = fs, path, rel, metadata
        self._buf = io.BytesIO()
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        return self._buf.write(data)

    def tell(self) -> int:
        return self._buf.tell()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        data = self._buf.getvalue()
        key = _state["key"]
        if key is not None:
            previous = parse_seal(_read(self._fs, self._path + SUFFIX))
            _write(self._fs, self._path + SUFFIX, new_seal(previous, mac(key, self._rel, data)))
        _write(self._fs, self._path, data, self._metadata)


def _read(fs: Any, path: str) -> bytes | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.readall()
    except FileNotFoundError:
        return None


def _write(fs: Any, path: str, data: bytes, metadata: Any = None) -> None:
    with fs.open_output_stream(path, metadata=metadata) as f:
        f.write(data)


class SealingFS(_handler_base()):  # type: ignore[misc]
    """A ``pyarrow.fs.FileSystemHandler`` around the experiment's filesystem that seals the state files the
    sweep driver writes under ``experiment`` and checks them when it reads them (see the module docstring).

    In a process that has not called :func:`arm` (a trial actor) it passes everything through: only the
    driver writes or reads these files. Pickled (Ray pickles the storage filesystem into its state) it is
    the inner filesystem and the experiment path, never the key."""

    def __init__(self, fs: Any, experiment: str) -> None:
        self.fs, self.experiment = fs, experiment.rstrip("/")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SealingFS) and self.experiment == other.experiment and self.fs.equals(other.fs)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, tuple[Any, str]]:
        return (SealingFS, (self.fs, self.experiment))

    def _sealed(self, path: str) -> str | None:
        """``path`` relative to the experiment when it is a sealed file there."""
        prefix = self.experiment + "/"
        if not path.startswith(prefix):
            return None
        rel = path[len(prefix) :]
        return rel if is_sealed_name(rel) else None

    def get_type_name(self) -> str:
        return "superfan-sealing-" + self.fs.type_name

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> Any:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> Any:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        if _state["key"] is not None and self._sealed(dest):
            self.copy_file(src, dest)
            self.fs.delete_file(src)
            return
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        if _state["key"] is not None and self._sealed(dest):
            with self.open_input_stream(src) as f:
                data = f.read()
            with self.open_output_stream(dest, None) as out:
                out.write(data)
            return
        self.fs.copy_file(src, dest)

    def _open_checked(self, path: str) -> Any:
        import pyarrow as pa

        rel = self._sealed(path)
        data = _read(self.fs, path)
        if data is None:
            raise FileNotFoundError(path)
        check(rel or path, data, _read(self.fs, path + SUFFIX), f"sweep state {path}")
        return pa.BufferReader(data)

    def open_input_stream(self, path: str) -> Any:
        if _state["key"] is not None and self._sealed(path):
            return self._open_checked(path)
        return self.fs.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        if _state["key"] is not None and self._sealed(path):
            return self._open_checked(path)
        return self.fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        import pyarrow as pa

        rel = self._sealed(path)
        if _state["key"] is not None and rel:
            return pa.PythonFile(_SealedUpload(self.fs, path, rel, metadata), mode="w")
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.fs.open_append_stream(path, metadata=metadata)


def sealing_location(storage_path: str, fs: Any, name: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for the sweep's ``RunConfig``: ``fs`` (``None``: local) wrapped
    in :class:`SealingFS` for the experiment ``<storage_path>/<name>``."""
    import pyarrow.fs as pafs

    inner = fs if fs is not None else pafs.LocalFileSystem()
    return storage_path, pafs.PyFileSystem(SealingFS(inner, f"{storage_path.rstrip('/')}/{name}"))


# ------------------------------------------------------------------ our own files, and the check before Ray


def seal_file(url: str, name: str, data: bytes) -> None:
    """Write the seal of ``data`` (the file ``name`` of the experiment, at ``url``), keeping older versions'."""
    from superfan import storage

    key = _state["key"] or sweep_key()
    seal_url = url + SUFFIX
    previous = parse_seal(storage.read_bytes(seal_url)) if storage.exists(seal_url) else []
    storage.write_bytes(seal_url, new_seal(previous, mac(key, name, data)))


def write_sealed(url: str, data: bytes) -> None:
    """Write one of the experiment's own top-level files (``sweep.json``) through :mod:`superfan.storage`:
    its seal first, then the file."""
    from superfan import storage

    seal_file(url, url.rstrip("/").rsplit("/", 1)[-1], data)
    storage.write_bytes(url, data)


def read_checked(url: str, name: str) -> bytes:
    """Read one sealed file of the experiment (``name`` relative to it) and check it; the bytes checked."""
    from superfan import storage

    data = storage.read_bytes(url)
    seal_url = url + SUFFIX
    check(name, data, storage.read_bytes(seal_url) if storage.exists(seal_url) else None, url)
    return data


def check_experiment(experiment_url: str, adopt: bool = False) -> int:
    """Check every sealed file of the experiment directory (Tune's top-level state, ``sweep.json``, trials'
    ``error.pkl``) before Ray starts: one line naming the first that fails. ``adopt`` (``--trust-state``):
    check nothing and seal every such file as it is, so later resumes check it. The files seen."""
    from superfan import storage

    names = sorted(f for f in storage.list_files(experiment_url) if is_sealed_name(f))
    for name in names:
        url = storage.join(experiment_url, name)
        if adopt:
            seal_file(url, name, storage.read_bytes(url))
        else:
            read_checked(url, name)
    return len(names)
