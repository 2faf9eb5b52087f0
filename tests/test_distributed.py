"""Correct at every world size: collectives on the backend's device, equal steps per rank in one-pass epochs,
GPU requests an autoscaler can see.

* the reduction helpers under a real 2-rank gloo process group (and the device each backend needs);
* two Ray Train workers in one-pass mode on shards of 32 and 24 faces finish every epoch with the same
  number of steps (before the fix the rank with fewer batches left the epoch while the other waited in
  DDP's all-reduce: a hang, hence the timeout);
* a sweep with ``train.use_gpu: true`` on a head without GPUs makes Ray's fake autoscaler launch the GPU
  node type (``ray.cluster_utils.AutoscalingCluster``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from superfan.train.collectives import device_for_backend

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("backend", "device"),
    [("gloo", "cpu"), ("nccl", "cuda"), ("cpu:gloo,cuda:nccl", "cpu"), ("cuda:nccl,cpu:gloo", "cpu"), ("mpi", "cpu")],
)
def test_collectives_use_the_device_the_backend_takes(backend: str, device: str) -> None:
    assert device_for_backend(backend).type == device


def _ranks_body(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from superfan.train import collectives as C

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        seen: list[torch.device] = []
        real = dist.all_reduce

        def spy(t: torch.Tensor, *a: Any, **k: Any) -> Any:  # records, then runs the real collective
            seen.append(t.device)
            return real(t, *a, **k)

        dist.all_reduce = spy
        mean = C.mean_across_ranks({"a": float(rank), "b": 2.0 * rank})
        lo, hi = C.min_max_across_ranks(10 + rank)
        obj = C.broadcast_object({"from": rank} if rank == 0 else None, rank)
        dist.all_reduce = real
        Path(out, f"{rank}.txt").write_text(repr((mean, lo, hi, obj, sorted({d.type for d in seen}))))
    finally:
        dist.destroy_process_group()


def test_collectives_across_two_gloo_ranks(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(
        _ranks_body, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=2, start_method="spawn"
    )
    for rank in (0, 1):
        mean, lo, hi, obj, devices = eval((tmp_path / f"{rank}.txt").read_text())  # noqa: S307 - our own repr
        assert mean == {"a": 0.5, "b": 1.0} and (lo, hi) == (10, 11) and obj == {"from": 0}
        assert devices == ["cpu"]  # gloo's device; under NCCL the same helpers build CUDA tensors (test_gpu)


# ---------------------------------------------------------------------------------- one-pass, 2 ranks


@pytest.fixture
def ray_two_cpus() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_ranks_one_pass_epochs_on_unequal_shards_take_equal_steps(ray_two_cpus: None, tmp_path: Path) -> None:
    from shards.pack import PackOptions, pack
    from superfan.config import load_config
    from superfan.train.driver import build_trainer

    train = str(tmp_path / "train")
    res = pack(PackOptions(format="synthetic", src="56", dest=train, split="train", shard_size=32, workers=1,
                           progress=False))  # fmt: skip
    assert [s["samples"] for s in res.manifest["shards"]] == [32, 24]
    # 2 ranks of 1 CPU fit this test's 2-CPU Ray (the profile asks 2 per worker).
    cfg = load_config("tiny", [
        "model.fan.features=16", "model.fan.hourglass_depth=2", "data.batch_size=4", "data.samples_per_epoch=null",
        "data.shuffle_buffer=8", "train.workers=2", "train.cpus_per_worker=1", "train.max_failures=0",
    ])  # fmt: skip
    cfg.data.train = [train]  # a prefix, as in docs/cluster.md
    cfg.stage("teacher").epochs = 2
    trainer = build_trainer(cfg, name="one-pass", storage=str(tmp_path / "runs"), stages=["teacher"])
    result = trainer.fit()
    # 56 faces over 2 ranks in batches of 4: 7 steps per epoch on each rank (checked equal by a collective).
    assert result.metrics["epoch_steps"] == 7 and result.metrics["step"] == 14 and result.metrics["epoch"] == 2


# ------------------------------------------------------------------------------------- autoscaling


def _gpu_bundles() -> list[dict[str, float]]:
    import ray

    table = ray.util.placement_group_table()
    return [b for pg in table.values() for b in pg.get("bundles", {}).values() if b.get("GPU", 0) > 0]


def _fake_autoscaling_cluster(head: dict[str, float], workers: dict[str, Any]) -> Any:
    """``ray.cluster_utils.AutoscalingCluster`` with its base config written out: it reads
    ``fake_multi_node/example.yaml``, which Ray's wheel does not ship (only its source tree has it)."""
    from ray.cluster_utils import AutoscalingCluster

    class Cluster(AutoscalingCluster):
        def _generate_config(self, head_resources: dict, worker_node_types: dict, autoscaler_v2: bool = False,
                             **kwargs: Any) -> dict[str, Any]:  # fmt: skip
            nodes = {**worker_node_types, "ray.head.default": {"resources": head_resources, "node_config": {},
                                                               "max_workers": 0}}  # fmt: skip
            config: dict[str, Any] = {
                "cluster_name": "superfan-test",
                "max_workers": sum(t["max_workers"] for t in worker_node_types.values()),
                "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                             "disable_launch_config_check": True},
                "available_node_types": nodes, "head_node_type": "ray.head.default", "auth": {}, "docker": {},
                "upscaling_speed": 1.0, "idle_timeout_minutes": 5, "file_mounts": {}, "cluster_synced_files": [],
                "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
                "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
                "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            }  # fmt: skip
            config.update(kwargs)
            return config

    return Cluster(head_resources=head, worker_node_types=workers)


@pytest.mark.slow
@pytest.mark.serial  # AutoscalingCluster.start runs `ray stop --force`: every Ray on the machine ends
@pytest.mark.timeout(420)
def test_gpu_sweep_makes_the_autoscaler_launch_a_gpu_node(
    local_inputs: dict[str, str], sweep_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # it runs `ray start`
    cluster = _fake_autoscaling_cluster(
        {"CPU": 2},
        {
            "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1}
        },  # fmt: skip
    )
    cluster.start()
    proc = None
    try:
        ray.init(address="auto", log_to_driver=False)
        assert ray.cluster_resources().get("GPU", 0) == 0  # nothing to detect when the driver starts
        env = dict(os.environ, RAY_ADDRESS="auto", RAY_USAGE_STATS_ENABLED="0")
        log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "sweeps" / "loss_weights.py"), "--config", str(sweep_yaml),
             "--storage", str(tmp_path / "store"), "--name", "gpu", "--samples", "1", "--data", local_inputs["train"],
             "--val", local_inputs["val"], "--teacher", local_inputs["teacher"], "train.use_gpu=true"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        requested = launched = False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (requested and launched):
            requested = requested or bool(_gpu_bundles())
            launched = launched or any(n["Alive"] and n["Resources"].get("GPU", 0) > 0 for n in ray.nodes())
            time.sleep(1)
        text = (tmp_path / "sweep.log").read_text()
        assert requested, f"no placement group asked for a GPU:\n{text[-4000:]}"
        assert launched, f"the autoscaler did not launch the GPU node type:\n{text[-4000:]}"
        assert "1 GPU per trial" in text or "x 1 GPU" in text
    finally:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        ray.shutdown()
        cluster.shutdown()
