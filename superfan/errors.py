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
