"""``superfan bench enhance``: faces/s of :meth:`superfan.infer.Enhancer.enhance` per batch size.

What a user of ``superfan enhance`` waits for: crops in, SR faces and landmarks out (resize to 16x16,
generator, FAN, heatmap decoding, mapping back). The generator alone is timed too, because that is what
the paper's A1.4 reports (1,000 faces in 4.6 s on a Titan X, i.e. ~217 faces/s). Every batch size is also
given as a ratio to batch 1 measured in the same process, so numbers from different machines compare.

Without ``--checkpoint`` the models are randomly initialised at the paper's size (generator 12-3-2,
64 channels; FAN with 2 hourglasses, 256 features): speed does not depend on the weights. On CUDA the
Enhancer runs in bf16 autocast with channels_last tensors.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from superfan.cliargs import deprecated

PAPER_FACES_PER_S = 1000 / 4.6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="champion/checkpoint (default: random paper-size models)")
    parser.add_argument("--config", dest="profile", default="paper", help="config profile for random models")
    parser.add_argument("--profile", dest="profile", action=deprecated("--config"))
    parser.add_argument("--batches", default="1,64,256", help="comma-separated batch sizes (default 1,64,256)")
    parser.add_argument("--crop", type=int, default=32, help="side of the input face crops in px (default 32)")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per batch size")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _enhancer(args: argparse.Namespace, device: torch.device) -> Any:
    from superfan.infer import Enhancer

    if args.checkpoint:
        return Enhancer.from_checkpoint(args.checkpoint, device=device)
    from superfan.config import load_config
    from superfan.models import FAN, Generator

    cfg = load_config(args.profile, for_training=False)  # model sizes only: no perceptual loss
    torch.manual_seed(0)
    return Enhancer(
        generator=Generator.from_config(cfg.model.generator),
        fan=FAN.from_config(cfg.model.fan),
        device=device,
        source=f"random {args.profile}-profile models (generator {tuple(cfg.model.generator.layout)}, "
        f"FAN-{cfg.model.fan.stacks})",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Any, batch: int, device: torch.device, min_seconds: float) -> tuple[float, int]:
    """faces/s of ``fn()`` (one batch per call) after one warm-up call, over >= ``min_seconds``."""
    fn()
    _sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 2:
            return calls * batch / elapsed, calls * batch


def run(args: argparse.Namespace) -> int:
    from superfan.errors import UserError
    from superfan.infer import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batches: expected comma-separated integers, got {args.batches!r}") from None
    if not batches or min(batches) < 1:
        raise UserError("--batches: batch sizes must be >= 1")
    device = resolve_device(args.device)
    enhancer = _enhancer(args, device)
    gen_params = sum(p.numel() for p in enhancer.generator.parameters())
    fan_params = sum(p.numel() for p in enhancer.fan.parameters())
    bf16 = enhancer._use_bf16()
    g = torch.Generator().manual_seed(0)
    rows = []
    for batch in batches:
        enhancer.batch_size = batch
        crops = (torch.rand(batch, 3, args.crop, args.crop, generator=g) * 255).to(torch.uint8)
        lr = torch.rand(batch, 3, 16, 16, generator=g).to(device)
        if bf16:
            lr = lr.contiguous(memory_format=torch.channels_last)

        def generator_only(lr: torch.Tensor = lr) -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                enhancer.generator(lr)

        def full(crops: torch.Tensor = crops) -> None:
            enhancer.enhance(crops)

        gen_fps, _ = _time(generator_only, batch, device, args.seconds)
        full_fps, n = _time(full, batch, device, args.seconds)
        rows.append({"batch": batch, "enhance_faces_per_s": full_fps, "generator_faces_per_s": gen_fps, "faces": n})
    base = next((r for r in rows if r["batch"] == 1), rows[0])
    for r in rows:
        r["enhance_vs_batch1"] = r["enhance_faces_per_s"] / base["enhance_faces_per_s"]
        r["generator_vs_paper"] = r["generator_faces_per_s"] / PAPER_FACES_PER_S
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    )
    result = {
        "device": device_name,
        "precision": "bf16 autocast, channels_last" if bf16 else "fp32",
        "models": enhancer.source,
        "generator_params": gen_params,
        "fan_params": fan_params,
        "crop": args.crop,
        "paper_reference": "generator: 1,000 faces in 4.6 s on a Titan X (217 faces/s), A1.4",
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"superfan bench enhance on {device_name}, {result['precision']}; models: {enhancer.source}")
    print(f"  generator {gen_params / 1e6:.2f} M params, FAN {fan_params / 1e6:.2f} M params; {args.crop}px crops")
    print(f"  paper (A1.4): generator 1,000 faces in 4.6 s on a Titan X = {PAPER_FACES_PER_S:.0f} faces/s")
    print(
        f"  {'batch':>6} {'enhance faces/s':>16} {'vs batch 1':>11} {'generator faces/s':>18} {'1000 faces (gen)':>17}"
    )
    for r in rows:
        secs = 1000 / r["generator_faces_per_s"]
        print(
            f"  {r['batch']:>6} {r['enhance_faces_per_s']:>16.1f} {r['enhance_vs_batch1']:>10.2f}x "
            f"{r['generator_faces_per_s']:>18.1f} {secs:>16.2f}s"
        )
    return 0
