"""The real training loop (shard stream + stages + validation + checkpoints) on one device, without Ray.

    python scripts/loop_throughput.py /tmp/lt [--config paper] [--loader-workers 10]

Packs 4,096 + 512 synthetic faces under DIR, then runs the profile's teacher and Super-FAN stages for 2
epochs of 8,192 faces each and prints the loop's own per-epoch lines: images/s there include data
loading, unlike ``superfan bench train`` (compute only), so the two together show whether the stream
keeps the device busy.
"""

from __future__ import annotations

import argparse
import os

import torch

from shards.pack import PackOptions, pack
from superfan.config import load_config
from superfan.train.loop import run_training
from superfan.train.reports import LocalReporter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--config", "--profile", dest="profile", default="paper", help="config profile or YAML")
    p.add_argument("--loader-workers", "--workers", dest="workers", type=int, default=min(10, os.cpu_count() or 1),
                   help="DataLoader workers")  # fmt: skip
    args = p.parse_args()
    for split, n, seed in (("train", 4096, 0), ("val", 512, 1)):
        pack(PackOptions(format="synthetic", src=str(n), dest=f"{args.dir}/{split}", split=split, seed=seed,
                         workers=os.cpu_count() or 1, progress=False))  # fmt: skip
    # A throughput measurement: speed does not depend on the perceptual weights, so no weights check.
    cfg = load_config(args.profile, ["data.samples_per_epoch=8192", "data.val_samples=512",
                                     "data.batch_size=64", f"data.num_workers={args.workers}"],
                      for_training=False)  # fmt: skip
    cfg.data.train, cfg.data.val = [f"{args.dir}/train/manifest.json"], [f"{args.dir}/val/manifest.json"]
    for s in cfg.stages:
        s.epochs = 2
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher = LocalReporter(f"{args.dir}/teacher")
    run_training({"config": cfg.to_dict(), "stages": [s.name for s in cfg.stages if s.kind == "fan"]},
                 rank=0, world_size=1, device=dev, report=teacher)  # fmt: skip
    stages = [s.name for s in cfg.stages if s.kind != "fan"]
    run_training({"config": cfg.to_dict(), "stages": stages, "teacher": teacher.checkpoints[-1]},
                 rank=0, world_size=1, device=dev, report=LocalReporter(f"{args.dir}/superfan"))  # fmt: skip
    if dev.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
