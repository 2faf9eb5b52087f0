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

from superfan.cliargs import HelpFormatter, add_output_flags, add_version, examples, leaf_parsers, output_flags

#: name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("superfan.commands.train", "train the teacher FAN or Super-FAN stages on Ray Train"),
    "evaluate": ("superfan.commands.evaluate", "Tables 1 and 2 of the paper (PSNR/SSIM, AUC per pose) for checkpoints"),
    "report": ("superfan.commands.evaluate", "re-render tables and figures from an evaluation JSON"),
    "enhance": ("superfan.commands.enhance", "super-resolve faces and find 68 landmarks with a champion"),
    "pull": ("superfan.commands.pull", "download and verify a promoted champion checkpoint"),
    "sweep": ("superfan.commands.sweep", "a sweep's report: trials, figures and champion, from storage"),
    "bench": ("superfan.commands.bench", "measure speed and memory: models | data | train | enhance"),
    "config": ("superfan.commands.config", "print a resolved config profile as YAML"),
}

#: name -> examples shown under the command's --help
EXAMPLES: dict[str, tuple[str, ...]] = {
    "train": (
        "superfan train fan --config tiny --data shards/train --val shards/val --storage runs",
        "superfan train superfan --config tiny --data shards/train --val shards/val --teacher TEACHER_CKPT",
    ),
    "evaluate": ("superfan evaluate --data shards/val --fan TEACHER_CKPT ./champion --out eval/",),
    "report": ("superfan report eval/results.json --out eval-rerendered/",),
    "enhance": (
        "superfan enhance ./champion crops/*.png -o out/",
        "superfan enhance ./champion group.jpg --boxes boxes.json -o out/",
    ),
    "pull": ("superfan pull s3://bucket/sweeps/champions/loss-weights-paper ./champion",),
    "sweep": ("superfan sweep report ./.superfan/sweeps/loss-weights-tiny",),
    "bench": ("superfan bench models", "superfan bench train --config paper --batch 64 --steps 10"),
    "config": ("superfan config tiny", "superfan config paper losses.heatmap.weight=0.05"),
}


def _parser() -> argparse.ArgumentParser:
    """The top level only (no command module imported): ``superfan --help`` and ``--version``."""
    parser = argparse.ArgumentParser(
        prog="superfan",
        description="Super-FAN: face super-resolution and alignment, trained and swept on Ray.",
        epilog=examples(
            "superfan pull ./.superfan/champions/loss-weights-tiny ./champion",
            "superfan enhance ./champion crops/*.png -o out/",
            "superfan COMMAND --help",
        ),  # fmt: skip
        formatter_class=HelpFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _add_command(name: str, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[name][0])
    module.add_arguments(parser, name) if _takes_name(module) else module.add_arguments(parser)
    for leaf in leaf_parsers(parser):  # the same output flags in every command (superfan.cliargs)
        add_output_flags(leaf)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command (imports that command's module only)."""
    parser = argparse.ArgumentParser(
        prog=f"superfan {name}",
        description=COMMANDS[name][1],
        epilog=examples(*EXAMPLES[name]),
        formatter_class=HelpFormatter,
    )
    return _add_command(name, parser)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line as one parser, every command and subcommand included (for tests and docs:
    ``build_parser().parse_args(["enhance", "./champion", "a.png", "-o", "out"])``)."""
    top = _parser()
    parser = argparse.ArgumentParser(
        prog="superfan", description=top.description, epilog=top.epilog, formatter_class=HelpFormatter
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=examples(*EXAMPLES[name]),
                           formatter_class=HelpFormatter)  # fmt: skip
        _add_command(name, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from superfan.errors import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not argv or argv[0] not in COMMANDS:
        parser = _parser()
        if not argv:
            parser.print_help()
            return 2
        if argv[0].startswith("-"):
            parser.parse_args(argv)  # --help, --version (both exit 0), or an unknown option (exit 2)
            parser.print_help()
            return 2
        parser.error(f"unknown command {argv[0]!r}")
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    args = command_parser(name).parse_args(argv[1:])
    args.command = name
    with output_flags(args):
        return run_command(f"superfan {name}", lambda: module.run(args))


def _takes_name(module: object) -> bool:
    import inspect

    return len(inspect.signature(module.add_arguments).parameters) == 2  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
