"""Secrets inside URIs are never written: what is recorded is the redacted URI, the real one lives in memory.

A database or tracking URI may carry a password (``postgresql://alice:PASSWORD@host/db``) or a token in its
query (``?password=...``, ``?token=...``). superfan records such URIs in many places: ``sweep.json``, Tune's
``tuner.pkl`` and searcher state (Optuna's storage object, MLflow's callback), the champion manifest, the
sweep report, the driver's log lines, MLflow. Everything recorded holds :func:`redact`'s form
(``postgresql://alice:***@host/db``); the real URI is kept by :func:`remember` in the driver's memory and
handed to Optuna and MLflow when they connect (:func:`reveal`). It comes from the command line or, better,
the environment (``SUPERFAN_OPTUNA_STORAGE``, ``SUPERFAN_MLFLOW_URI``, or the driver's own ``PGPASSWORD``
with a URI that carries no password): a command line is visible to ``ps`` and to Ray's job records.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

from superfan.errors import ConfigError

MASK = "***"
#: Query parameters whose value is a secret (compared in lower case).
SECRET_PARAMS = frozenset({
    "password", "passwd", "pwd", "pass", "secret", "token", "access_token", "auth_token", "api_key", "apikey",
    "key", "sig", "signature", "sslpassword", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
})  # fmt: skip

_real: dict[str, str] = {}


def redact(uri: str) -> str:
    """``uri`` with the password of its user info and the values of secret query parameters masked; any
    other URI unchanged, byte for byte."""
    if not isinstance(uri, str) or "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    out = uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            out = out.replace(f"//{netloc}", f"//{user}:{MASK}@{host}", 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            masked = "&".join(
                f"{quote(k, safe='')}={MASK if k.lower() in SECRET_PARAMS else quote(v, safe='/:')}" for k, v in pairs
            )
            fragment = f"#{parts.fragment}" if parts.fragment else ""
            out = f"{out.split('?', 1)[0]}?{masked}{fragment}"
    return out


def remember(uri: str | None) -> str | None:
    """Keep the real ``uri`` in this process and return what may be written (its redacted form)."""
    if uri is None:
        return None
    shown = redact(uri)
    if shown != uri:
        _real[shown] = uri
    return shown


def reveal(shown: str | None, what: str = "URI") -> str | None:
    """The real URI behind a recorded (redacted) one, from this process's memory; one line when it is not
    there (a resumed sweep whose password was, rightly, not written)."""
    if shown is None or MASK not in shown:
        return shown
    if shown in _real:
        return _real[shown]
    raise ConfigError(
        f"{what} {shown}: its secret is never written, so the sweep's state does not hold it; give the full URI "
        "again (SUPERFAN_OPTUNA_STORAGE / SUPERFAN_MLFLOW_URI in the environment, or the option), or leave the "
        "password out of the URI and set PGPASSWORD (PostgreSQL) for the driver"
    )


def forget_all() -> None:
    """Tests: drop every remembered URI."""
    _real.clear()
