"""What every command line of the project shares: the version, the help layout, deprecated spellings.

``superfan``, ``python -m shards`` and the sweep scripts build their parsers with :data:`HelpFormatter`
(descriptions and examples kept as written, defaults shown), :func:`add_version` (the same ``superfan
X.Y.Z`` everywhere), :func:`add_output_flags` (``--no-progress``, ``--quiet`` and ``--verbose``, with one
meaning in every command: :data:`OUTPUT_FLAGS`) and :func:`deprecated` (an old flag name that still works
for one release and says, in one line on stderr, which name replaced it). Imports nothing heavy: ``--help``
stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


def version() -> str:
    """``superfan X.Y.Z`` from the installed package's metadata (``superfan unknown`` outside an install)."""
    from importlib import metadata

    try:
        return f"superfan {metadata.version('superfan')}"
    except metadata.PackageNotFoundError:
        return "superfan unknown"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs (the examples) as written; ``(default: X)`` after every option that has a
    default worth showing and does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
            or isinstance(action, argparse._HelpAction | argparse._VersionAction)
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=version(), help="print the version and exit")


def examples(*lines: str) -> str:
    """An argparse epilog: ``examples:`` and one indented command per line."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def deprecated(new: str) -> type[argparse.Action]:
    """An action for an old spelling of ``new``: stores like ``new`` and warns once, in one line."""

    class _Deprecated(argparse.Action):
        replacement = new  # tests/test_readme.py: the docs must not show an old spelling

        def __init__(self, option_strings: list[str], dest: str, nargs: Any = None, **kwargs: Any) -> None:
            kwargs.setdefault("help", argparse.SUPPRESS)
            kwargs.setdefault("default", argparse.SUPPRESS)  # the new spelling's default stands
            super().__init__(option_strings, dest, nargs=nargs, **kwargs)

        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:  # fmt: skip
            print(f"{parser.prog}: warning: {option_string} is deprecated, use {new}", file=sys.stderr)
            setattr(namespace, self.dest, self.const if self.nargs == 0 else values)

    return _Deprecated


#: The output flags every command accepts (its leaf parser: ``superfan train fan``, ``python -m shards pack``,
#: ``sweeps/loss_weights.py``), with this help everywhere. A command with nothing of a kind to show or hide
#: (no progress bar, no extra detail) accepts the flag all the same and it changes nothing there, so one
#: script line can pass it to every command.
OUTPUT_FLAGS = {
    "--no-progress": "no progress bars and no per-epoch or status lines; everything else as usual",
    "--quiet": "print only the result (what the command exists to print: a table, YAML, JSON, or the line "
    "naming what it wrote), warnings and errors; implies --no-progress",
    "--verbose": "print more: superfan's info log lines (the version and Python first) and, in commands that "
    "run on Ray, Ray's own logs",
}

#: "0" in every process of a run (Ray workers included) started with --no-progress or --quiet.
PROGRESS_ENV = "SUPERFAN_PROGRESS"


@dataclass(frozen=True)
class Output:
    """What the output flags of the command being run asked for (defaults: a library call, no CLI)."""

    progress: bool = True
    quiet: bool = False
    verbose: bool = False


_output = Output()


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``, ``--quiet`` and ``--verbose`` (the last two exclusive), in a group of their own."""
    group = parser.add_argument_group("output (the same flags in every command)")
    group.add_argument("--no-progress", action="store_true", help=OUTPUT_FLAGS["--no-progress"])
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--quiet", action="store_true", help=OUTPUT_FLAGS["--quiet"])
    exclusive.add_argument("--verbose", action="store_true", help=OUTPUT_FLAGS["--verbose"])


def leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers that run something: ``parser`` itself, or each subcommand's leaf."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    for sub in dict.fromkeys(subs[0].choices.values()):  # an alias maps to the same parser
        yield from leaf_parsers(sub)


def output() -> Output:
    """The output flags in force (:func:`output_flags`); in a Ray worker, progress comes from the driver's."""
    if os.environ.get(PROGRESS_ENV) == "0" and _output.progress:
        return Output(progress=False, quiet=_output.quiet, verbose=_output.verbose)
    return _output


@contextlib.contextmanager
def output_flags(args: argparse.Namespace) -> Iterator[Output]:
    """For the duration of a command: ``--quiet`` sets ``args.no_progress``; :func:`output` and :func:`info`
    follow the flags; ``--verbose`` shows superfan's INFO log lines. Restored afterwards (tests run many
    commands in one process)."""
    global _output
    quiet, verbose = bool(getattr(args, "quiet", False)), bool(getattr(args, "verbose", False))
    if quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    previous, log = _output, logging.getLogger("superfan")
    level = log.level
    _output = Output(progress=not getattr(args, "no_progress", False), quiet=quiet, verbose=verbose)
    if verbose:
        from superfan.logs import show_warnings

        show_warnings(logging.INFO)
        log.setLevel(logging.INFO)
        log.info("%s, Python %s on %s", version(), platform.python_version(), platform.platform(terse=True))
    try:
        yield _output
    finally:
        _output = previous
        log.setLevel(level)


def info(*values: object, **kwargs: Any) -> None:
    """``print`` for a line that is not the command's result: silent under ``--quiet``."""
    if not _output.quiet:
        print(*values, **kwargs)
