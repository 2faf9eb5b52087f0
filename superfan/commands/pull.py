"""``superfan pull URL DIR``: download a promoted champion, verify every file's sha256, swap it into place.

The work is :func:`superfan.champion.pull`, which imports neither torch nor Ray, so the command stays quick.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="champion URL: <storage>/champions/<sweep> (follows 'latest') or a version")
    parser.add_argument("dir", help="local directory to place the verified champion in")
    parser.add_argument("--quiet", action="store_true", help="do not print the metrics table")


def run(args: argparse.Namespace) -> int:
    from superfan.champion import pull

    pull(args.url, args.dir, quiet=args.quiet)
    return 0
