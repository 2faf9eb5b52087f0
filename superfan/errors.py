"""User-facing errors.

Anything a user can cause (a bad config value, a missing file, an unreachable endpoint, a tampered
checkpoint) raises :class:`UserError` with one line that says what and where. Every command line
(``superfan``, ``python -m shards``, the sweep scripts) runs its work through :func:`run_command`, which
prints that line and exits 2 without a traceback; programming errors keep their tracebacks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """An error the user can fix; its message is one self-contained line."""


class ConfigError(UserError):
    """A configuration value is missing, mistyped or out of range."""


class StorageError(UserError):
    """A local path or object-store URL could not be read or written."""


class IntegrityError(UserError):
    """A shard, checkpoint or champion does not match its manifest."""


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the last good checkpoint is left untouched."""


class UnsafeURLError(ConfigError):
    """A URL would run a command when opened (webdataset's ``pipe:`` and friends) and the user has not opted in
    (``SUPERFAN_ALLOW_PIPE_URLS=1``)."""


class BadSample(ValueError):
    """One sample of a shard cannot be used: an oversized or truncated tar member, an undecodable image...

    The message names the shard URL and the member or key. A data error, not a user error: the stream skips
    and counts these, and only too many of them stop a run.
    """

    def __init__(self, message: str, *, url: str = "", member: str = "") -> None:
        super().__init__(message)
        self.url, self.member = url, member


class BadData(UserError):
    """Too many samples could not be used (above ``data.max_bad_fraction``): the data is bad, not a sample."""


def run_command(prog: str, fn: Callable[[], int | None], *, interrupted: str = "interrupted") -> int:
    """``fn()``'s exit status (``None`` is 0); a :class:`UserError` prints ``{prog}: error: {message}`` on
    stderr and returns 2, Ctrl-C (or a SIGTERM turned into ``KeyboardInterrupt``) prints ``{prog}: {interrupted}``
    and returns 130. Anything else propagates with its traceback."""
    try:
        return int(fn() or 0)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
