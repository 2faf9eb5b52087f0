"""``superfan config [PROFILE|PATH] [KEY=VALUE ...]``: show exactly what a run would use."""

from __future__ import annotations

import argparse

from superfan.config import load_config, profile_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help=f"profile ({', '.join(profile_names())}) or YAML")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. losses.heatmap.weight=0.05")


def run(args: argparse.Namespace) -> int:
    print(load_config(args.config, args.overrides).to_yaml(), end="")
    return 0
