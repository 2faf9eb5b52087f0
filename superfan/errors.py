"""User-facing errors.

Anything a user can cause (a bad config value, a missing file, an unreachable endpoint, a tampered
checkpoint) raises :class:`UserError` with one line that says what and where. The CLI prints that line
and exits non-zero without a traceback; programming errors keep their tracebacks.
"""

from __future__ import annotations


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
