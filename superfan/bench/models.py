"""``superfan bench models``: generator forward speed, 12-3-2 vs SRResNet 16-1-1 (paper A1.4).

The paper reports 1,000 images in 4.6 s for its 12-3-2 generator vs 4.3 s for SRResNet's 16-1-1 on an
NVIDIA Titan X (ratio 1.07). We time both in the same process on the current device, randomly
initialised (speed does not depend on weights), at batch 256 in ``torch.inference_mode`` after warm-up,
synchronising CUDA before reading the clock; the two models alternate and the median forward is kept.
On CUDA the forward runs in bf16 autocast with channels_last tensors (how ``superfan enhance`` runs it);
on CPU in float32. The ratio of the two times is the number to compare across machines. Parameter
counts of both generators and of FAN-2 (256 features) are printed.

Torch is imported inside :func:`run` so that ``superfan --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from superfan.cliargs import deprecated

PAPER = {"12-3-2": 4.6, "16-1-1": 4.3}  # seconds per 1,000 images, Titan X (A1.4)
PAPER_RATIO = PAPER["12-3-2"] / PAPER["16-1-1"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=256, help="images per forward (default 256, as A1.4)")
    parser.add_argument(
        "--iters", type=int, default=None, help="timed forwards per model (default: 3 on CPU, 20 on CUDA)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first (default 1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (auto: CUDA when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--json-out", dest="json", default=None, metavar="PATH", help="also write the results as JSON here"
    )
    parser.add_argument("--json", dest="json", metavar="PATH", action=deprecated("--json-out"))


def _device(name: str) -> Any:
    import torch

    from superfan.errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: not a torch device (use auto, cpu or cuda[:N])") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: only cpu and cuda are supported")
    return dev


def _inputs(batch: int, device: Any) -> Any:
    import torch

    x = torch.rand(batch, 3, 16, 16, device=device)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def time_forwards(models: dict[str, Any], batch: int, iters: int, warmup: int, device: Any) -> dict[str, float]:
    """Median seconds per forward of ``batch`` LR images for each model.

    Models are timed in alternation, one forward each per round, and the median is kept, so that load
    from other processes on a shared machine hits both models alike instead of skewing the ratio.
    """
    import contextlib
    import statistics

    import torch

    cuda = device.type == "cuda"
    x = _inputs(batch, device)
    times: dict[str, list[float]] = {name: [] for name in models}

    def amp() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    with torch.inference_mode(), amp():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        for _ in range(iters):
            for name, model in models.items():
                if cuda:
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                model(x)
                if cuda:
                    torch.cuda.synchronize(device)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run(args: argparse.Namespace) -> int:
    import torch

    from superfan.errors import UserError
    from superfan.models import FAN, Generator, count_parameters

    if args.batch < 1 or (args.iters is not None and args.iters < 1) or args.warmup < 0:
        raise UserError("--batch and --iters must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    iters = args.iters or (20 if device.type == "cuda" else 3)
    torch.manual_seed(0)
    models = {"12-3-2": Generator(layout=(12, 3, 2)), "16-1-1": Generator.srresnet()}
    for name, model in models.items():
        models[name] = model.to(device).eval()
        if device.type == "cuda":
            models[name] = models[name].to(memory_format=torch.channels_last)
    seconds = time_forwards(models, args.batch, iters, args.warmup, device)
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        sec = seconds[name]
        rows.append(
            {
                "model": name,
                "params": count_parameters(model),
                "images_per_s": args.batch / sec,
                "s_per_1000": 1000 * sec / args.batch,
                "paper_s_per_1000": PAPER[name],
            }
        )
    ratio = rows[0]["s_per_1000"] / rows[1]["s_per_1000"]
    fan_params = count_parameters(FAN(stacks=2, features=256))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    mode = "bf16 autocast, channels_last" if device.type == "cuda" else "float32"

    print(
        f"generator forward, batch {args.batch}, median of {iters} alternating timed iters "
        f"after {args.warmup} warm-up; {where}, {mode}"
    )
    print(f"{'model':<22}{'params':>12}{'images/s':>12}{'s/1000 img':>12}{'paper s/1000':>14}")
    labels = {"12-3-2": "12-3-2 (ours)", "16-1-1": "16-1-1 (SRResNet)"}
    for r in rows:
        print(
            f"{labels[r['model']]:<22}{r['params']:>12,}{r['images_per_s']:>12.1f}{r['s_per_1000']:>12.3f}"
            f"{r['paper_s_per_1000']:>14.1f}"
        )
    print(f"time ratio 12-3-2 / 16-1-1: {ratio:.2f} (paper: {PAPER_RATIO:.2f}, 4.6 s vs 4.3 s on a Titan X)")
    print(
        f"parameters: 12-3-2 {rows[0]['params']:,}; 16-1-1 {rows[1]['params']:,}; FAN-2 (256 features) {fan_params:,}"
    )

    if args.json:
        result = {
            "device": str(device),
            "device_name": where,
            "mode": mode,
            "batch": args.batch,
            "iters": iters,
            "warmup": args.warmup,
            "torch": torch.__version__,
            "models": rows,
            "ratio_12_3_2_over_16_1_1": ratio,
            "paper_ratio": PAPER_RATIO,
            "fan2_params": fan_params,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0
