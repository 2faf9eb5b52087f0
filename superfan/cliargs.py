"""What every command line of the project shares: the version, the help layout, deprecated spellings.

``superfan``, ``python -m shards`` and the sweep scripts build their parsers with :data:`HelpFormatter`
(descriptions and examples kept as written, defaults shown), :func:`add_version` (the same ``superfan
X.Y.Z`` everywhere) and :func:`deprecated` (an old flag name that still works for one release and says,
in one line on stderr, which name replaced it). Imports nothing heavy: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
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
