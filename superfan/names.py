"""Names a user gives that become path components (``--name`` of a sweep or a training run): plain names only.

A name is joined under ``sweeps/``, ``trials/``, ``champions/`` and a Train run's storage: ``../escaped``
or ``a/b`` would put an experiment, a champion and its ``latest`` outside them.
"""

from __future__ import annotations

import re

from superfan.errors import ConfigError

#: Letters, digits, ``.``, ``_``, ``-``; not starting with ``.``; at most 100 characters.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_name(name: str, option: str = "--name") -> str:
    """``name`` if it is a plain name, else one line."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise ConfigError(
            f"{option} {name!r}: expected a plain name (letters, digits, '.', '_', '-'; not starting with '.'; "
            "at most 100 characters)"
        )
    return name
