"""``python -m shards pack FORMAT SRC DEST --split NAME ...`` and ``python -m shards verify URL``.

User errors (unreachable endpoint, missing credentials, an existing pack, an empty dataset) print one line
naming the URL and exit with status 2, without a traceback; programming errors keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from superfan.cliargs import HelpFormatter, add_output_flags, add_version, deprecated, examples, output_flags

FORMATS = ("300w", "mat", "ls3dw", "celeba", "widerface", "synthetic")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shards",
        description="Pack raw face datasets into WebDataset shards (local or s3://), and verify packs.",
        epilog=examples(
            "python -m shards pack 300w ~/data/300W shards/300w-train --split train --hash-range 0:0.9",
            "python -m shards pack mat ~/data/AFLW2000 shards/aflw2000 --split val",
            "python -m shards verify shards/300w-train",
        ),
        formatter_class=HelpFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pack_help = "raw dataset -> WebDataset tar shards + manifest.json"
    p = sub.add_parser(
        "pack", help=pack_help, description=pack_help, formatter_class=HelpFormatter,
        epilog=examples(
            "python -m shards pack synthetic 512 shards/synthetic --split train",
            "python -m shards pack 300w ~/data/300W shards/300w-train --split train --hash-range 0:0.9",
            "python -m shards pack 300w ~/data/300W shards/300w-lp-train --split train --hash-range 0:0.9 "
            "--yaws default --profile-mirror",
        ),
    )  # fmt: skip
    p.add_argument("format", choices=FORMATS, help="dataset format")
    p.add_argument("src", help="dataset root (local or s3://); for 'synthetic', the number of faces")
    p.add_argument("dest", help="output directory or s3://bucket/prefix")
    p.add_argument("--split", required=True, help="shard name prefix, e.g. train or val (see --hash-range)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--pack-workers", dest="workers", type=int, default=0, metavar="N",
                   help="packing processes (default: one per CPU)")  # fmt: skip
    p.add_argument("--workers", dest="workers", type=int, action=deprecated("--pack-workers"))
    p.add_argument("--limit", type=int, default=None, help="pack at most N faces (a seeded random subset)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing pack at DEST")
    p.add_argument("--crop-size", type=int, default=256, help="side of the stored crop in pixels")
    p.add_argument("--context", type=float, default=2.4, help="crop side / face box max side")
    p.add_argument("--min-face", type=float, default=16.0, help="skip faces whose box is smaller (px)")
    p.add_argument("--seed", type=int, default=0, help="shuffle / subset / synthetic seed")
    p.add_argument("--dataset", default=None, help="dataset name in sample keys (default from the format)")
    p.add_argument("--pose-file", default=None, help="ls3dw: CSV with id,yaw[,pitch,roll] in degrees")
    p.add_argument("--pose-source", default=None, choices=("ground-truth", "estimated"),
                   help="ls3dw: how to label poses from --pose-file (default ground-truth)")  # fmt: skip
    p.add_argument(
        "--hash-range",
        default=None,
        metavar="LO:HI",
        help="keep faces whose key hashes into [LO, HI) of [0, 1): e.g. 0:0.8 train, 0.8:1 val",
    )
    p.add_argument(
        "--yaws",
        dest="profile",
        default=None,
        metavar="YAWS",
        help="pack 300W-LP-style profiled views of every face instead of the face: target |yaw| degrees, "
        "e.g. 30,45,60,75,90 ('default' = that list); each face turns further in its own direction "
        "(both ways when near frontal). 68-point formats only (300w, mat, ls3dw, synthetic)",
    )
    p.add_argument("--profile", dest="profile", metavar="YAWS", action=deprecated("--yaws"))
    p.add_argument(
        "--profile-views",
        type=int,
        default=None,
        metavar="N",
        help="with --yaws: N of the eligible yaws per face, chosen by a hash of its key (default all)",
    )
    p.add_argument("--profile-mirror", action="store_true",
                   help="with --yaws: also pack each view mirrored (the other side)")  # fmt: skip
    p.add_argument("--profile-pitch", type=float, default=0.0, metavar="DEG",
                   help="with --yaws: tilt each view's pitch by up to DEG degrees, seeded per view "
                   "(0: the source's pitch)")  # fmt: skip
    p.add_argument("--jaw", choices=("as-annotated", "2d-3d"), default="as-annotated",
                   help="'2d-3d': move a silhouette-annotated jaw (300-W) to the fitted 3D face's jaw contour, "
                   "the convention of AFLW2000-3D and LS3D-W; each sample records its landmark_convention "
                   "either way")  # fmt: skip
    add_output_flags(p)
    verify_help = "re-hash shards against their manifest"
    v = sub.add_parser("verify", help=verify_help, description=verify_help, formatter_class=HelpFormatter,
                       epilog=examples("python -m shards verify s3://faces/shards/300w-train"))  # fmt: skip
    v.add_argument("url", help="pack prefix or manifest.json URL")
    add_output_flags(v)
    return parser


_parser = build_parser


def _hash_range(text: str | None) -> tuple[float, float] | None:
    from superfan.errors import UserError

    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise UserError(f"--hash-range {text!r}: expected LO:HI, e.g. 0:0.8") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise UserError(f"--hash-range {text!r}: need 0 <= LO < HI <= 1")
    return lo, hi


def _profile(args: argparse.Namespace) -> object:
    from shards.profile import DEFAULT_YAWS, ProfileOptions
    from superfan.errors import UserError

    if args.profile is None:
        if args.profile_views is not None or args.profile_mirror or args.profile_pitch:
            raise UserError("--profile-views, --profile-mirror and --profile-pitch need --yaws YAWS")
        return None
    if args.format in {"celeba", "widerface"}:
        raise UserError(f"--yaws needs 68 landmarks per face; format {args.format!r} has none")
    text = args.profile.strip()
    try:
        yaws = DEFAULT_YAWS if text == "default" else tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--yaws {args.profile!r}: expected degrees, comma-separated, e.g. 30,45,60,75,90") from None
    if not yaws or not all(0 < y <= 90 for y in yaws):
        raise UserError(f"--yaws {args.profile!r}: every yaw must be in (0, 90] degrees")
    if args.profile_views is not None and args.profile_views < 1:
        raise UserError(f"--profile-views must be >= 1, got {args.profile_views}")
    if not 0.0 <= args.profile_pitch <= 30.0:
        raise UserError(f"--profile-pitch must be in [0, 30] degrees, got {args.profile_pitch}")
    return ProfileOptions(
        yaws=tuple(sorted(set(yaws))), views=args.profile_views, mirror=args.profile_mirror, pitch=args.profile_pitch
    )


#: Bounds of the stored crop, checked before anything is read or allocated: at least the 64x64 training
#: window; at most 1024 pixels (4 MB a crop decoded); the window around a face, 1 to 8 times its box.
MIN_CROP, MAX_CROP = 64, 1024
MIN_CONTEXT, MAX_CONTEXT = 1.0, 8.0
#: At most this many packing processes (each holds a decoder, a pose fit and a JPEG encoder).
MAX_PACK_WORKERS = 1024
#: A source face box side in pixels: ``--min-face`` past it would reject every face of any photo.
MAX_MIN_FACE = 100_000.0
MAX_SEED = 2**32 - 1


def _check_options(args: argparse.Namespace) -> None:
    """The pack options a user can get wrong, one line each, before anything is read or written."""
    from superfan import storage
    from superfan.errors import UserError
    from superfan.names import check_name

    check_name(args.split, "--split")  # a shard name prefix: 'a/b' or '../x' would leave DEST
    if args.shard_size < 1:
        raise UserError(f"--shard-size must be at least 1, got {args.shard_size}")
    if not 0 <= args.workers <= MAX_PACK_WORKERS:
        raise UserError(f"--pack-workers {args.workers}: expected 0 (one per CPU) to {MAX_PACK_WORKERS}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: expected at least 1")
    if not (math.isfinite(args.min_face) and 0.0 <= args.min_face <= MAX_MIN_FACE):
        raise UserError(f"--min-face {args.min_face:g}: expected a number of pixels from 0 to {MAX_MIN_FACE:g}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed {args.seed}: expected 0 to {MAX_SEED}")
    if not MIN_CROP <= args.crop_size <= MAX_CROP:
        raise UserError(f"--crop-size {args.crop_size}: expected {MIN_CROP} to {MAX_CROP} pixels")
    if not (math.isfinite(args.context) and MIN_CONTEXT <= args.context <= MAX_CONTEXT):
        raise UserError(f"--context {args.context:g}: expected a number from {MIN_CONTEXT:g} to {MAX_CONTEXT:g}")
    storage.check_directory(args.dest, "DEST")


def main(argv: list[str] | None = None) -> int:
    from superfan.errors import run_command

    args = _parser().parse_args(argv)
    with output_flags(args):
        return run_command(f"shards {args.command}", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command == "pack":
        from shards.pack import PackOptions, pack, summary

        _check_options(args)
        opts = PackOptions(
            format=args.format, src=args.src, dest=args.dest, split=args.split,
            shard_size=args.shard_size,
            workers=args.workers, limit=args.limit, overwrite=args.overwrite, crop_size=args.crop_size,
            context=args.context, min_face=args.min_face, seed=args.seed, dataset=args.dataset,
            pose_file=args.pose_file, pose_source=args.pose_source, progress=not args.no_progress,
            hash_range=_hash_range(args.hash_range), profile=_profile(args), jaw=args.jaw,
        )  # fmt: skip
        result = pack(opts)
        print(summary(result, opts))
        return 0
    from shards.writer import verify

    print(json.dumps(verify(args.url)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.exit(main())
