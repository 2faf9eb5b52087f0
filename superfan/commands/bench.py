"""``superfan bench {models,data,train,loop,enhance}``: speed and memory, measured, with an in-process baseline.

Each benchmark is a module of :mod:`superfan.bench` with ``add_arguments(parser)`` and ``run(args)``; this
command only parses and dispatches. Every one prints what it measured and a ratio against a baseline run in
the same process, so numbers from different machines are comparable by their ratios.
"""

from __future__ import annotations

import argparse
import importlib

from superfan.cliargs import HelpFormatter, examples

EXAMPLES = {
    "models": "superfan bench models --batch 256",
    "data": "superfan bench data --no-s3 --loader-workers 1,2",
    "train": "superfan bench train --config paper --batch 64 --steps 10",
    "loop": "superfan bench loop --config tiny --batches 16 --augment-on loader,device",
    "enhance": "superfan bench enhance --config tiny --batches 1,64",
}

BENCHMARKS = {
    "models": "generator forward images/s, 12-3-2 vs SRResNet 16-1-1 (paper A1.4)",
    "data": "data stream samples/s and peak memory, local shards vs S3, 1 and 2 workers",
    "train": "training images/s per worker for each stage, with peak memory",
    "loop": "the training step fed by its data stream vs compute only, per stage, batch and data path",
    "enhance": "faces/s of Enhancer.enhance (paper: 1,000 faces in 4.6 s on a Titan X)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, help_text in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=examples(EXAMPLES[name]),
                           formatter_class=HelpFormatter)  # fmt: skip
        importlib.import_module(f"superfan.bench.{name}").add_arguments(p)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(f"superfan.bench.{args.bench}").run(args) or 0)
