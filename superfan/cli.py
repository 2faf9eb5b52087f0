"""The ``superfan`` command.

Each subcommand lives in the module that owns its work and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches, so ``superfan --help`` stays fast (no torch or Ray
import) and user errors print one line instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("superfan.train.cli", "train the teacher FAN or Super-FAN stages on Ray Train"),
    "evaluate": ("superfan.evaluate_cli", "Tables 1 and 2 of the paper (PSNR/SSIM, AUC per pose) for checkpoints"),
    "report": ("superfan.evaluate_cli", "re-render tables and figures from an evaluation JSON"),
    "enhance": ("superfan.infer_cli", "super-resolve faces and find 68 landmarks with a champion"),
    "pull": ("superfan.champion", "download and verify a promoted champion checkpoint"),
    "sweep": ("superfan.sweep_report.cli", "sweep report EXPERIMENT_URL: a sweep's trials, figures and champion"),
    "bench": ("superfan.bench", "measure speed and memory: models | data | train | enhance"),
    "config": ("superfan.config_cli", "print a resolved config profile as YAML"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superfan", description="Super-FAN: face super-resolution and alignment, trained and swept on Ray."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from superfan.errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        parser = _parser()
        if argv and argv[0] not in {"-h", "--help"}:
            parser.error(f"unknown command {argv[0]!r}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"superfan {name}", description=COMMANDS[name][1])
    module.add_arguments(parser, name) if _takes_name(module) else module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.command = name
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"superfan {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"superfan {name}: interrupted", file=sys.stderr)
        return 130


def _takes_name(module: object) -> bool:
    import inspect

    return len(inspect.signature(module.add_arguments).parameters) == 2  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
