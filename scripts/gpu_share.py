"""The distributed issue's GPU checks in one run: ranks sharing a GPU, and several trials per GPU.

    python scripts/gpu_share.py /tmp/gs                # on a GPU machine (one GPU is enough)
    python scripts/gpu_share.py /tmp/gs --cpu --steps 4  # the same code on CPU (a smoke run; CI-sized)

(a) Two Train workers on one GPU (``train.gpus_per_worker: 0.5``, gloo over CUDA tensors because NCCL
refuses two ranks on one device) through one-pass epochs on shards of unequal size: both ranks must take
the same number of steps (the loop checks it with an all-reduce and reports ``epoch_steps``).
(b) 1, 2 and 4 concurrent paper-profile trials on the one GPU at ``gpus_per_worker`` 1, 0.5 and 0.25, each
for a fixed number of steps of the heatmap stage: prints each trial's images/s, its speed against the solo
run, and the summed throughput (trial-steps per second), as a Markdown table for docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import time

import ray
import ray.train

from shards.pack import PackOptions, pack
from superfan.checkpoint import save_checkpoint
from superfan.config import load_config
from superfan.models import FAN
from superfan.train.driver import build_trainer


def _config(args: argparse.Namespace, *extra: str) -> object:
    base = [
        f"train.use_gpu={'false' if args.cpu else 'true'}",
        "model.perceptual_weights=random",
        f"data.batch_size={args.batch}",
        "data.num_workers=2",
        "data.val_samples=64",
        "train.max_failures=0",
    ]
    if args.cpu:
        base += [
            "model.generator.layout=[1,1,1]",
            "model.generator.channels=8",
            "model.critic.channels=8",
            "model.fan.features=16",
            "model.fan.hourglass_depth=2",
            "train.cpus_per_worker=0.25",
        ]
    return load_config("paper", [*base, *extra], for_training=False)


@ray.remote(num_cpus=0)
def _fit(cfg: object, name: str, storage: str, stages: list[str], teacher: str | None) -> dict:
    t0 = time.perf_counter()
    result = build_trainer(cfg, name=name, storage=storage, stages=stages, teacher=teacher).fit()
    m = dict(result.metrics or {})
    m["wall_s"] = time.perf_counter() - t0
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--cpu", action="store_true", help="run the same checks on CPU (smoke test)")
    p.add_argument("--steps", type=int, default=200, help="steps per trial in (b)")
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    d = os.path.abspath(args.dir)
    pack(PackOptions(format="synthetic", src="56", dest=f"{d}/uneven", split="train", shard_size=32, workers=2,
                     progress=False))  # fmt: skip
    for split, n in (("train", max(512, args.batch * 8)), ("val", 64)):
        pack(PackOptions(format="synthetic", src=str(n), dest=f"{d}/{split}", split=split, workers=2, progress=False))
    ray.init(log_to_driver=False)

    # (a) two ranks, one GPU, one-pass epochs on shards of 32 and 24 faces, batch 4: 7 steps per rank
    cfg = _config(
        args,
        "train.workers=2",
        "train.gpus_per_worker=0.5",
        "train.cpus_per_worker=1",
        "data.batch_size=4",
        "data.samples_per_epoch=null",
        "data.num_workers=0",
    )
    cfg.data.train, cfg.data.val = [f"{d}/uneven"], [f"{d}/val"]
    cfg.stage("teacher").epochs = 2
    m = ray.get(_fit.remote(cfg, "shared-gpu", f"{d}/runs", ["teacher"], None))
    ok = m.get("epoch_steps") == 7 and m.get("step") == 14
    print(
        f"(a) 2 ranks x 0.5 GPU, one-pass epochs on 32+24 faces: epoch_steps {m.get('epoch_steps')}, "
        f"step {m.get('step')} -> {'OK' if ok else 'FAILED'}",
        flush=True,
    )

    # (b) 1, 2, 4 concurrent trials, heatmap stage, fixed steps
    teacher = f"{d}/teacher"
    tcfg = _config(args)
    save_checkpoint(teacher, {"stage": "teacher", "stage_kind": "fan", "stage_index": 0, "epoch": 1,
                              "global_epoch": 1, "step": 0, "generator": None, "critic": None,
                              "fan": FAN.from_config(tcfg.model.fan).state_dict(), "optimizers": {},
                              "schedulers": {}, "config": tcfg.to_dict(), "metrics": {}})  # fmt: skip
    rows, solo = [], None
    for n, share in ((1, 1.0), (2, 0.5), (4, 0.25)):
        cfg = _config(args, f"train.gpus_per_worker={share}", f"data.samples_per_epoch={args.steps * args.batch}")
        cfg.data.train, cfg.data.val = [f"{d}/train"], [f"{d}/val"]
        cfg.stage("heatmap").epochs = 1
        t0 = time.perf_counter()
        out = ray.get([_fit.remote(cfg, f"share{n}-{i}", f"{d}/runs", ["heatmap"], teacher) for i in range(n)])
        wall = time.perf_counter() - t0
        speeds = [o["images_per_s"] for o in out]
        solo = solo or speeds[0]
        rows.append((n, share, sum(speeds) / n, min(speeds) / solo, n * args.steps / wall, sum(speeds)))
    print(
        "\n| trials on one GPU | GPU each | img/s per trial (mean) | slowest vs solo | trial-steps/s (wall) "
        "| summed img/s |\n|---:|---:|---:|---:|---:|---:|"
    )
    for n, share, mean, rel, sps, total in rows:
        print(f"| {n} | {share:g} | {mean:.0f} | {rel:.2f} | {sps:.2f} | {total:.0f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
