"""``superfan sweep report EXPERIMENT_URL``: (re)write a sweep's report from what is on storage."""

from __future__ import annotations

import argparse

from superfan.cliargs import HelpFormatter, examples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    rep_help = "write report.md and its figures for a sweep (finished or running)"
    rep = sub.add_parser(
        "report",
        help=rep_help,
        description=rep_help,
        formatter_class=HelpFormatter,
        epilog=examples(
            "superfan sweep report ./.superfan/sweeps/loss-weights-tiny",
            "superfan sweep report s3://bucket/superfan/sweeps/loss-weights-paper --no-faces",
        ),
    )
    rep.add_argument("experiment", metavar="EXPERIMENT_URL", help="<storage>/sweeps/<name>, local or s3://")
    rep.add_argument("--out", default=None, help="report directory (default EXPERIMENT_URL/report)")
    rep.add_argument("--no-faces", action="store_true", help="skip champion.png (no validation data read)")


def run(args: argparse.Namespace) -> int:
    from superfan import storage
    from superfan.sweep_report import write_report

    report = write_report(storage.absolute(args.experiment), args.out, faces=not args.no_faces)
    print(f"sweep report: {report.markdown} ({len(report.files)} files, {report.seconds:.1f} s)")
    return 0
