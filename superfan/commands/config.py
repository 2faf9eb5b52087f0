"""``superfan config [PROFILE|PATH] [KEY=VALUE ...]``: show exactly what a run would use."""

from __future__ import annotations

import argparse
import sys

from superfan.config import check_perceptual_weights, load_config, profile_names
from superfan.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help=f"profile ({', '.join(profile_names())}) or YAML")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. losses.heatmap.weight=0.05")


def run(args: argparse.Namespace) -> int:
    """Print the resolved config; a config that ``superfan train`` would refuse (the paper profile without
    perceptual weights) is still shown, with the refusal as a note on stderr."""
    cfg = load_config(args.config, args.overrides, for_training=False)
    print(cfg.to_yaml(), end="")
    if args.config is not None:
        try:
            check_perceptual_weights(cfg)
        except ConfigError as err:
            print(f"note: superfan train would refuse this config: {err}", file=sys.stderr)
    return 0
