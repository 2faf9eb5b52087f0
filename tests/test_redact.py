"""No secret in any URI is ever written (superfan/redact.py): a real PostgreSQL (pgserver, password auth)
holds the Optuna study and the MLflow store, the sweep's state lives on SeaweedFS, and the password is found
nowhere in the bucket, Ray's session dir, the MLflow store, the study's own database or the sweep's output.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from superfan.errors import ConfigError
from superfan.redact import forget_all, redact, remember, reveal

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "loss_weights.py"


def test_redact_masks_passwords_and_secret_parameters_only() -> None:
    cases = {
        "postgresql://alice:S3cret@host:5432/db": "postgresql://alice:***@host:5432/db",
        "postgresql+psycopg2://alice:pw@/optuna?host=/tmp/x": "postgresql+psycopg2://alice:***@/optuna?host=/tmp/x",
        "https://u:tok@mlflow.example/?token=abc&x=1": "https://u:***@mlflow.example/?token=***&x=1",
        "mysql://bob@h/db?password=zz": "mysql://bob@h/db?password=***",
        "sqlite:////tmp/a.db": "sqlite:////tmp/a.db",
        "journal:/x/y.log": "journal:/x/y.log",
        "mysql://bob@h/db": "mysql://bob@h/db",
    }
    for uri, shown in cases.items():
        assert redact(uri) == shown, uri


def test_reveal_gives_back_only_what_this_process_was_given() -> None:
    forget_all()
    shown = remember("postgresql://alice:S3cret@host/db")
    assert shown == "postgresql://alice:***@host/db" and reveal(shown) == "postgresql://alice:S3cret@host/db"
    forget_all()
    with pytest.raises(ConfigError, match="its secret is never written"):
        reveal(shown, "--optuna-storage")
    assert reveal("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_a_storage_url_with_credentials_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--storage", "s3://AKIAEXAMPLE:TopSecretKey@bucket/p", "--name", "x"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "TopSecretKey" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no credentials in a storage URL" in lines[0], proc.stderr


# ---------------------------------------------------------------------------------- a real PostgreSQL


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """pgserver's PostgreSQL with a user ``alice`` who must give her password (scram-sha-256), and two
    databases of hers: ``optuna`` and ``mlflow``."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg2")
    import psycopg2

    data = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: the server's unix socket lives in it
    server = pgserver.get_server(str(data), cleanup_mode="stop")
    password = "PW" + secrets.token_hex(10)
    server.psql(f"CREATE USER alice WITH PASSWORD '{password}';")
    server.psql("CREATE DATABASE optuna OWNER alice;")
    server.psql("CREATE DATABASE mlflow OWNER alice;")
    hba = data / "pg_hba.conf"
    hba.write_text("local all alice scram-sha-256\n" + hba.read_text())
    server.psql("SELECT pg_reload_conf();")
    socket = str(data)
    with pytest.raises(psycopg2.OperationalError):  # the password is really checked
        psycopg2.connect(dbname="optuna", user="alice", password="wrong", host=socket)
    psycopg2.connect(dbname="optuna", user="alice", password=password, host=socket).close()
    yield {
        "password": password,
        "socket": socket,
        "optuna": f"postgresql+psycopg2://alice:{password}@/optuna?host={socket}",
        "mlflow": f"postgresql+psycopg2://alice:{password}@/mlflow?host={socket}",
    }
    server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


def _leaks(data: bytes, secret: str) -> bool:
    raw = secret.encode()
    return any(form in data for form in (raw, raw.hex().encode(), raw.hex().upper().encode()))


def test_the_optuna_storage_and_mlflow_callback_pickle_without_the_password(postgres: dict[str, str]) -> None:
    import optuna
    import ray.cloudpickle

    from sweeps.mlflow_callback import RedactedMLflowLoggerCallback
    from sweeps.searcher import make_storage

    forget_all()
    shown = remember(postgres["optuna"])
    study = optuna.create_study(storage=make_storage(shown), study_name="pickled", load_if_exists=True)
    study.enqueue_trial({"x": 1.0})
    callback = RedactedMLflowLoggerCallback(tracking_uri=remember(postgres["mlflow"]), experiment_name="e")
    for dump in (pickle.dumps, ray.cloudpickle.dumps):
        assert not _leaks(dump(study), postgres["password"]), dump
    # The callback travels inside tuner.pkl (Ray pickles with cloudpickle; plain pickle cannot: a module)
    assert not _leaks(ray.cloudpickle.dumps(callback), postgres["password"])
    again = pickle.loads(pickle.dumps(study))  # the driver reconnects with the password it holds
    assert len(again.trials) == 1
    forget_all()
    with pytest.raises(ConfigError, match="--optuna-storage postgresql\\+psycopg2://alice:\\*\\*\\*@"):
        pickle.loads(pickle.dumps(study))


def _db_text(url: str) -> str:
    """Every row of every table of a PostgreSQL database, as text."""
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql"))
    out = []
    with conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        for (table,) in cur.fetchall():
            cur.execute(f'SELECT * FROM "{table}"')
            out.append(repr(cur.fetchall()))
    conn.close()
    return "\n".join(out)


@pytest.mark.slow
def test_a_sweep_on_postgres_and_s3_writes_the_password_nowhere(
    postgres: dict[str, str], s3_env: dict[str, str], local_inputs: dict[str, str], sweep_yaml: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    import optuna

    from superfan import storage

    store = "s3://superfan/pg-sweep"
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's unix sockets live under it
    env = dict(os.environ, **s3_env, RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
               XDG_CONFIG_HOME=str(tmp_path / "config"), SUPERFAN_OPTUNA_STORAGE=postgres["optuna"],
               SUPERFAN_MLFLOW_URI=postgres["mlflow"])  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    args = ["--config", str(sweep_yaml), "--storage", store, "--name", "pg", "--data", local_inputs["train"],
            "--val", local_inputs["val"], "--teacher", local_inputs["teacher"], "--max-concurrent", "1"]  # fmt: skip
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # The study is live in PostgreSQL, reached with the password from the environment.
    study = optuna.load_study(study_name="pg", storage=postgres["optuna"])
    assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials), study.trials
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=postgres["mlflow"])
    assert len(client.search_runs([client.get_experiment_by_name("pg").experiment_id])) == 2
    # Recorded, redacted: sweep.json, the champion manifest.
    sweep_json = storage.read_text(f"{store}/sweeps/pg/sweep.json")
    assert "alice:***@/optuna" in sweep_json and "alice:***@/mlflow" in sweep_json
    # The password, raw or hex: nowhere in the bucket, Ray's session dir, the MLflow store, the study's
    # database, the sweep's output.
    secret = postgres["password"]
    leaked = [
        rel for rel in storage.list_files("s3://superfan") if _leaks(storage.read_bytes(f"s3://superfan/{rel}"), secret)
    ]
    scanned = 0
    for path in Path(ray_tmp).rglob("*"):
        if path.is_file() and not path.is_symlink():
            scanned += 1
            with contextlib.suppress(OSError):
                if _leaks(path.read_bytes(), secret):
                    leaked.append(str(path))
    shutil.rmtree(ray_tmp, ignore_errors=True)
    for name in ("mlflow", "optuna"):
        if _leaks(_db_text(postgres[name]).encode(), secret):
            leaked.append(f"database {name}")
    if _leaks(out.encode(), secret):
        leaked.append("the sweep's output")
    assert scanned > 20 and not leaked, leaked
    # Resuming without the password is one line saying where it must come from (before Ray starts).
    env.pop("SUPERFAN_OPTUNA_STORAGE")
    again = subprocess.run([sys.executable, str(SCRIPT), *args, "--resume"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    lines = [line for line in again.stderr.strip().splitlines() if "warning:" not in line]
    assert again.returncode == 2 and len(lines) == 1, again.stderr[-3000:]
    assert "its secret is never written" in lines[0] and secret not in again.stderr + again.stdout


def test_an_unusable_optuna_storage_is_one_line_without_its_password() -> None:
    from sweeps.searcher import check_storage_url

    with pytest.raises(ConfigError, match="--optuna-storage 'sqlite:////proc/superfan-test/x.db': ") as err:
        check_storage_url("sqlite:////proc/superfan-test/x.db")  # a directory nobody may create
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        check_storage_url("oracle://alice:S3cretPW@host/db")
    assert "S3cretPW" not in str(err.value) and "alice:***@host" in str(err.value)
