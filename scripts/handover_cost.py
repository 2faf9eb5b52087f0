"""CPU time per face of making training batches, by data path, with no training step and no DataLoader workers:

    python scripts/handover_cost.py MANIFEST [--batch 64] [--batches 6]

* ``loader``: today's stream (decode, warp, jitter, degradation, heatmaps per DataLoader worker);
* ``device on CPU``: the hand-over stream plus :class:`superfan.data.device_augment.DeviceAugment` on the CPU
  (what a CPU-only run with ``data.augment_on: device`` pays);
* ``hand-over alone``: the CPU's share of ``data.augment_on: device`` when the device is a GPU.

Process CPU time (``time.process_time``) with one torch thread, so a busy machine changes the figures less
than wall time would. Each row is measured twice, after one warm-up batch.
"""

from __future__ import annotations

import argparse
import time

import torch

from superfan.config import Config
from superfan.data.device_augment import DeviceAugment
from superfan.data.stream import make_loader


def per_face_ms(manifest: str, path: str, real_world: bool, batch: int, batches: int, augment: bool) -> float:
    cfg = Config()
    cfg.data.batch_size, cfg.data.samples_per_epoch, cfg.data.shuffle_buffer = batch, batch * (batches + 1), batch
    cfg.data.augment_on, cfg.degrade.real_world = path, real_world
    aug = DeviceAugment(cfg, "cpu")
    stream = iter(make_loader(manifest, cfg, train=True, seed=0, num_workers=0))
    first = next(stream)
    if path == "device" and augment:
        aug(first)
    t0, n = time.process_time(), 0
    for b in stream:
        n += len((aug(b) if path == "device" and augment else b)["key"])
    return 1000 * (time.process_time() - t0) / max(n, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=6)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [("loader", "loader", True), ("device on CPU", "device", True), ("hand-over alone", "device", False)]
    for real in (False, True):
        for name, path, augment in rows:
            ms = [per_face_ms(args.manifest, path, real, args.batch, args.batches, augment) for _ in range(2)]
            print(f"real_world={str(real):<5} {name:<16} {ms[0]:.2f}, {ms[1]:.2f} ms CPU per face")


if __name__ == "__main__":
    main()
