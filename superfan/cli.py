"""The ``superfan`` command.

Each subcommand is a module of :mod:`superfan.commands` that exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches, so ``superfan --help`` stays fast (no torch or Ray
import), and user errors print one line instead of a traceback (:func:`superfan.errors.run_command`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("superfan.commands.train", "train the teacher FAN or Super-FAN stages on Ray Train"),
    "evaluate": ("superfan.commands.evaluate", "Tables 1 and 2 of the paper (PSNR/SSIM, AUC per pose) for checkpoints"),
    "report": ("superfan.commands.evaluate", "re-render tables and figures from an evaluation JSON"),
    "enhance": ("superfan.commands.enhance", "super-resolve faces and find 68 landmarks with a champion"),
    "pull": ("superfan.commands.pull", "download and verify a promoted champion checkpoint"),
    "sweep": ("superfan.commands.sweep", "sweep report EXPERIMENT_URL: a sweep's trials, figures and champion"),
    "bench": ("superfan.commands.bench", "measure speed and memory: models | data | train | enhance"),
    "config": ("superfan.commands.config", "print a resolved config profile as YAML"),
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
    from superfan.errors import run_command

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
    return run_command(f"superfan {name}", lambda: module.run(args))


def _takes_name(module: object) -> bool:
    import inspect

    return len(inspect.signature(module.add_arguments).parameters) == 2  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
