"""Cluster configs checked against the real schemas, and ``cluster/local.sh`` run for real.

* ``cluster/aws.yaml`` is validated with Ray's own autoscaler schema (``ray/autoscaler/ray-schema.json``)
  and then with the checks ``ray up`` runs before it contacts AWS (``prepare_config`` + ``validate_config``).
  ``ray up`` has no ``--dry-run`` in Ray 2.60, and bootstrapping needs AWS credentials and network, so this
  is as far as an offline test can go.
* ``cluster/kuberay-rayjob.yaml`` is validated against the fields of KubeRay's ``RayJob`` v1 CRD
  (ray-project/kuberay ``ray-operator/config/crd/bases/ray.io_rayjobs.yaml``, generated from
  ``ray-operator/apis/ray/v1/{rayjob,raycluster}_types.go``), written down below for the fields we use, with
  their types and required lists, so a typo (``workerGroupSpec``, ``shutdownAfterJobFinished``) or a
  wrong type fails here instead of at ``kubectl apply``. No network at test time.
* ``cluster/local.sh`` starts a real SeaweedFS and a real Ray head on non-default ports in a temporary
  directory, so it never collides with a developer's own local cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"

# ------------------------------------------------------------------------------------------------ AWS


def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def test_aws_yaml_matches_ray_autoscaler_schema() -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    jsonschema.validate(config, _ray_schema())
    # What `ray up` does before it talks to AWS: merge the provider defaults, then validate.
    validate_config(prepare_config(config))

    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head runs the driver only"
    gpu = [t for name, t in types.items() if name != config["head_node_type"] and t["resources"].get("GPU")]
    assert gpu, "a GPU worker type"
    assert gpu[0]["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p3.", "p4", "p5."))
    for node_type in types.values():
        assert "IamInstanceProfile" in node_type["node_config"], "S3 by IAM role on every node"
    text = (CLUSTER / "aws.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text
    assert any("pip install" in c and "superfan" in c for c in config["setup_commands"])


def test_aws_yaml_schema_rejects_mistakes() -> None:
    """The schema check has teeth: a fractional GPU count and an unknown top-level key both fail."""
    import jsonschema

    schema = _ray_schema()
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    bad = json.loads(json.dumps(config))
    bad["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(config))
    bad["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# ------------------------------------------------------------------------------------------- KubeRay

_INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_ENV = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "value": {"type": "string"},
            "valueFrom": {"type": "object"},
        },
        "additionalProperties": False,
    },
}
_RESOURCES = {
    "type": "object",
    "properties": {
        "limits": {"type": "object", "additionalProperties": _INT_OR_STRING},
        "requests": {"type": "object", "additionalProperties": _INT_OR_STRING},
    },
    "additionalProperties": False,
}
_CONTAINER = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": _ENV,
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {"containerPort": {"type": "integer"}, "name": {"type": "string"}},
            },
        },
        "resources": _RESOURCES,
        "volumeMounts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["mountPath", "name"],
                "properties": {"mountPath": {"type": "string"}, "name": {"type": "string"}},
            },
        },
    },
    "additionalProperties": False,
}
#: corev1.PodTemplateSpec, the parts we use (the CRD embeds the full core/v1 schema).
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
                "serviceAccountName": {"type": "string"},
                "restartPolicy": {"type": "string"},
                "tolerations": {"type": "array", "items": {"type": "object"}},
                "volumes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                },
                "nodeSelector": _STR_MAP,
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
#: RayJob v1 as in ray.io_rayjobs.yaml: RayJobSpec / RayClusterSpec / HeadGroupSpec / WorkerGroupSpec.
#: Required lists follow the CRD (json fields without ``omitempty``): headGroupSpec needs template and
#: rayStartParams; each worker group needs groupName, minReplicas, maxReplicas, rayStartParams, template.
RAYJOB_V1_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "properties": {
                "activeDeadlineSeconds": _INT32,
                "backoffLimit": _INT32,
                "clusterSelector": _STR_MAP,
                "deletionPolicy": {"enum": ["DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"]},
                "entrypoint": {"type": "string"},
                "entrypointNumCpus": {"type": "number"},
                "entrypointNumGpus": {"type": "number"},
                "entrypointResources": {"type": "string"},
                "jobId": {"type": "string"},
                "managedBy": {"type": "string"},
                "metadata": _STR_MAP,
                "runtimeEnvYAML": {"type": "string"},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
                "submitterConfig": {"type": "object", "properties": {"backoffLimit": _INT32}},
                "submitterPodTemplate": _POD_TEMPLATE,
                "suspend": {"type": "boolean"},
                "ttlSecondsAfterFinished": _INT32,
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "properties": {
                        "autoscalerOptions": {
                            "type": "object",
                            "properties": {
                                "env": _ENV,
                                "idleTimeoutSeconds": _INT32,
                                "image": {"type": "string"},
                                "imagePullPolicy": {"type": "string"},
                                "resources": _RESOURCES,
                                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                            },
                            "additionalProperties": False,
                        },
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "headServiceAnnotations": _STR_MAP,
                        "rayVersion": {"type": "string"},
                        "suspend": {"type": "boolean"},
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["rayStartParams", "template"],
                            "properties": {
                                "enableIngress": {"type": "boolean"},
                                "headService": {"type": "object"},
                                "rayStartParams": _STR_MAP,
                                "serviceType": {"type": "string"},
                                "template": _POD_TEMPLATE,
                            },
                            "additionalProperties": False,
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": [
                                    "groupName",
                                    "maxReplicas",
                                    "minReplicas",
                                    "rayStartParams",
                                    "template",
                                ],
                                "properties": {
                                    "groupName": {"type": "string"},
                                    "replicas": _INT32,
                                    "minReplicas": _INT32,
                                    "maxReplicas": _INT32,
                                    "idleTimeoutSeconds": _INT32,
                                    "numOfHosts": _INT32,
                                    "rayStartParams": _STR_MAP,
                                    "scaleStrategy": {"type": "object"},
                                    "suspend": {"type": "boolean"},
                                    "template": _POD_TEMPLATE,
                                },
                                "additionalProperties": False,
                            },
                        },
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    },
}


def _rayjob() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1
    return jobs[0]


def test_rayjob_matches_crd_fields() -> None:
    import jsonschema

    job = _rayjob()
    jsonschema.validate(job, RAYJOB_V1_SCHEMA)
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python sweeps/loss_weights.py --config sweeps/configs/paper.yaml")
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"]
    assert runtime_env["env_vars"]["RAY_TRAIN_ENABLE_STATE_TRACKING"] == "1"
    assert all(isinstance(v, str) for v in runtime_env["env_vars"].values()), "env var values are strings"

    cluster = spec["rayClusterSpec"]
    workers = cluster["workerGroupSpecs"]
    gpu_groups = [
        g for g in workers for c in g["template"]["spec"]["containers"]
        if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
    ]  # fmt: skip
    assert gpu_groups, "a worker group that asks Kubernetes for nvidia.com/gpu"
    for group in workers:
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]

    # S3 by IRSA: every pod runs as the annotated service account, and no keys are in the manifest.
    pods = [cluster["headGroupSpec"]["template"], spec["submitterPodTemplate"]] + [g["template"] for g in workers]
    accounts = {p["spec"].get("serviceAccountName") for p in pods}
    assert len(accounts) == 1 and None not in accounts
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()))
    sa = [d for d in docs if d and d.get("kind") == "ServiceAccount"]
    assert sa and sa[0]["metadata"]["name"] in accounts
    assert "eks.amazonaws.com/role-arn" in sa[0]["metadata"]["annotations"]
    assert "AWS_SECRET_ACCESS_KEY" not in (CLUSTER / "kuberay-rayjob.yaml").read_text()


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "shutdownAfterJobFinished"), True),  # a typo of the real field
        (("spec", "shutdownAfterJobFinishes"), "true"),  # a string, not a boolean
        (("spec", "rayClusterSpec", "workerGroupSpec"), []),  # singular: not a field
        (("spec", "rayClusterSpec", "headGroupSpec", "rayStartParams", "num-gpus"), 0),  # values are strings
    ],
)
def test_rayjob_schema_rejects_mistakes(path: tuple[str, ...], value: Any) -> None:
    import jsonschema

    job = _rayjob()
    node = job
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, RAYJOB_V1_SCHEMA)


def test_rayjob_worker_group_requires_replica_bounds() -> None:
    import jsonschema

    job = _rayjob()
    del job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"]
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        jsonschema.validate(job, RAYJOB_V1_SCHEMA)


# --------------------------------------------------------------------------------------- local.sh


def _free_port() -> int:
    # Ray reserves 10002-19999 for its workers; the OS's ephemeral range is above that.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 20000:
            return port


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions ``text`` (our unique temp dir): how we prove `down` left nothing."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def local_cluster_env() -> Iterator[dict[str, str]]:
    if shutil.which("setsid") is None:
        pytest.skip("setsid (util-linux) not available")
    # A short path: Ray's unix socket paths under --temp-dir must stay below 107 characters.
    base = Path(tempfile.mkdtemp(prefix="sfcl-"))
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key, None)
    env.update(
        SUPERFAN_CLUSTER_DIR=str(base),
        SUPERFAN_RAY_TEMP_DIR=str(base / "ray"),
        SUPERFAN_DASHBOARD_PORT=str(_free_port()),
        SUPERFAN_RAY_PORT=str(_free_port()),
        SUPERFAN_DASHBOARD_AGENT_PORT=str(_free_port()),
        SUPERFAN_RAY_CLIENT_PORT=str(_free_port()),
        SUPERFAN_S3_PORT=str(_free_port()),
        SUPERFAN_METRICS_PORT=str(_free_port()),
    )
    yield env
    subprocess.run([str(CLUSTER / "local.sh"), "down"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


def _sh(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLUSTER / "local.sh"), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            out[key] = value
    return out


@pytest.mark.slow
def test_local_cluster_up_status_down(local_cluster_env: dict[str, str]) -> None:
    env = local_cluster_env
    base = Path(env["SUPERFAN_CLUSTER_DIR"])

    up = _sh(env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "ray job submit --working-dir ." in up.stdout and "superfan pull" in up.stdout
    assert "sweeps/configs/tiny.yaml" in up.stdout and "s3://superfan/sweeps" in up.stdout
    pids = {name: int((base / ".run" / f"{name}.pid").read_text()) for name in ("s3", "ray")}

    status = _sh(env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "S3 (SeaweedFS): running" in status.stdout and "Ray head: running" in status.stdout

    again = _sh(env, "up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already running") == 2
    assert {name: int((base / ".run" / f"{name}.pid").read_text()) for name in ("s3", "ray")} == pids
    gcs = [p for p in _processes_mentioning(env["SUPERFAN_RAY_TEMP_DIR"]) if _comm(p) == "gcs_server"]
    assert len(gcs) == 1, f"one Ray head, not two: {gcs}"

    dotenv = _read_env(base / ".env")
    assert dotenv["RAY_ADDRESS"] == f"http://127.0.0.1:{env['SUPERFAN_DASHBOARD_PORT']}"
    assert dotenv["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{env['SUPERFAN_S3_PORT']}"
    assert dotenv["RAY_USAGE_STATS_ENABLED"] == "0"
    assert ("RAY_AUTH_MODE" in dotenv) == (Path.home() / ".ray" / "auth_token").exists()
    assert (base / ".env").stat().st_mode & 0o077 == 0, ".env holds credentials: owner-only"

    # S3 answers with the .env credentials (and refuses others), round-tripping an object.
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3", endpoint_url=dotenv["AWS_ENDPOINT_URL"], aws_access_key_id=dotenv["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=dotenv["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
    )  # fmt: skip
    s3.put_object(Bucket="superfan", Key="probe.txt", Body=b"hello")
    assert s3.get_object(Bucket="superfan", Key="probe.txt")["Body"].read() == b"hello"
    wrong = boto3.client(
        "s3", endpoint_url=dotenv["AWS_ENDPOINT_URL"], aws_access_key_id=dotenv["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key="not-the-secret", region_name="us-east-1",
    )  # fmt: skip
    with pytest.raises(ClientError):
        wrong.get_object(Bucket="superfan", Key="probe.txt")

    # The dashboard (and Jobs API) answers on the configured port.
    request = urllib.request.Request(f"{dotenv['RAY_ADDRESS']}/api/version")
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        request.add_header("Authorization", f"Bearer {token.read_text().strip()}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        assert "ray_version" in json.loads(resp.read())

    down = _sh(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (base / ".run" / "s3.pid").exists() and not (base / ".run" / "ray.pid").exists()
    leftovers = _processes_mentioning(env["SUPERFAN_RAY_TEMP_DIR"]) + _processes_mentioning(str(base / ".run"))
    assert not leftovers, f"processes left after down: {leftovers}"
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"{dotenv['RAY_ADDRESS']}/api/version", timeout=3)

    status = _sh(env, "status")
    assert status.returncode != 0 and "not running" in status.stdout


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
