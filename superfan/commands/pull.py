"""``superfan pull URL DIR``: download a promoted champion, verify every file's sha256, swap it into place.

The work is :func:`superfan.champion.pull`, which imports neither torch nor Ray, so the command stays quick.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="champion URL: <storage>/champions/<sweep> (follows 'latest') or a version")
    parser.add_argument("dir", help="local directory to place the verified champion in")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from superfan.champion import pull, pulled_line

    manifest = pull(args.url, args.dir, quiet=args.quiet)
    if args.quiet:  # the result line only: no metrics table, no lineage
        print(pulled_line(manifest, Path(args.dir).expanduser().absolute()))
    return 0
