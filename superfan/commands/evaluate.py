"""``superfan evaluate`` (Tables 1 and 2 for checkpoints on a shard set) and ``superfan report`` (re-render).

Table 1 has the bilinear and bicubic baselines, one row per checkpoint labelled by the paper's variant name
(``superfan.evaluate.variant_name``) and a grid-artefact column; Table 2 the FAN rows on those images.

Both print the Markdown tables to stdout and write them with the figures and ``results.json`` to ``--out``
(local directory or ``s3://`` prefix). ``report`` needs only the JSON (and, for the sample grid, the
``samples.npz`` written beside it), so tables and figures can be restyled without re-running models.
"""

from __future__ import annotations

import argparse
import json
import posixpath
from pathlib import Path

from superfan.cliargs import deprecated
from superfan.errors import UserError


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "report":
        parser.add_argument("results", metavar="RESULTS.json", help="results.json written by `superfan evaluate`")
        parser.add_argument(
            "--out", default=None, help="directory for the re-rendered files (default: beside RESULTS.json)"
        )
        return
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="URL",
        help="test/validation shards: shard URLs, brace patterns or a manifest (repeatable; local or s3://)",
    )
    parser.add_argument(
        "--fan", required=True, metavar="TEACHER", help="teacher FAN checkpoint (from `superfan train fan`)"
    )
    parser.add_argument(
        "checkpoints",
        nargs="*",
        metavar="CHECKPOINT",
        help="Super-FAN stage checkpoints; each adds a Table 1 row named by the paper's variant (Ours-pixel, "
        "Ours-pixel-feature, Ours-pixel-feature-heatmap, Ours-pixel-feature-heatmap-GAN, Super-FAN) and a "
        "FAN-<variant> row to Table 2 (and Super-FAN, its own FAN, for end2end)",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="PROFILE",
        help="profile name or YAML for the data stream and bins (default: the first checkpoint's config)",
    )
    parser.add_argument("--out", default="eval", help="output directory or s3:// prefix (default: ./eval)")
    parser.add_argument("--max-faces", type=int, default=None, metavar="N", help="stop after N faces")
    parser.add_argument("--grid-faces", dest="samples", type=int, default=8, metavar="N",
                        help="faces in the sample grid (samples.png)")  # fmt: skip
    parser.add_argument("--samples", dest="samples", type=int, metavar="N", action=deprecated("--grid-faces"))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here")
    return name


def _print_tables(results: dict, out: str, files: dict) -> None:
    from superfan import storage
    from superfan.render.tables import table1_markdown, table2_markdown

    print(table1_markdown(results))
    print(table2_markdown(results))
    print("files: " + ", ".join(storage.join(out, f) for f in files.values()))


def run(args: argparse.Namespace) -> int:
    if args.command == "report":
        return _report(args)
    from superfan.config import load_config
    from superfan.evaluate import evaluate_methods

    if args.max_faces is not None and args.max_faces < 1:
        raise UserError(f"--max-faces must be >= 1, got {args.max_faces}")
    if args.samples < 0:
        raise UserError(f"--samples must be >= 0, got {args.samples}")
    # only the data stream and bins come from it: no perceptual net here, so no perceptual-weights check
    cfg = load_config(args.config, for_training=False) if args.config else None
    results = evaluate_methods(
        args.data,
        args.fan,
        args.checkpoints,
        cfg,
        args.out,
        args.max_faces,
        device=_device(args.device),
        samples=args.samples,
        progress=not args.no_progress,
    )
    if not results["faces"]["all"]:
        raise UserError(f"{', '.join(args.data)}: no faces in the data")
    _print_tables(results, args.out, results.get("files", {}))
    return 0


def _report(args: argparse.Namespace) -> int:
    from superfan import storage
    from superfan.evaluate import FILES, RESULTS_FORMAT, load_samples, write_outputs

    src = str(args.results)
    try:
        results = json.loads(storage.read_text(src))
    except json.JSONDecodeError as err:
        raise UserError(f"{src}: not JSON ({err})") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise UserError(f"{src}: not a superfan evaluation ({RESULTS_FORMAT}) results file")
    here = posixpath.dirname(src) if storage.is_s3(src) else str(Path(src).parent)
    out = args.out or here
    npz = (results.get("files") or {}).get("samples_npz", FILES["samples_npz"])
    samples = load_samples(storage.join(here, npz))
    files = write_outputs(results, out, samples)
    if out != here:
        results["files"] = {**(results.get("files") or {}), **files}
        results["files"].pop("per_face", None)  # per-face arrays stay with the original evaluation
        storage.write_text(storage.join(out, FILES["json"]), json.dumps(results, indent=2))
    _print_tables(results, out, files)
    return 0
