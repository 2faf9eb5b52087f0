"""Bad samples: one count per distinct sample, and when "a few bad faces" becomes "the data is bad".

A resampled stream draws the same shard again and again, so counting draws would count one damaged JPEG
several times (the old rule stopped a 48-face set with 3 bad faces at "5 of 48"). Here a sample is known by
``(shard URL, key)``: the stream warns about it and counts it once, and the fraction is taken over the
distinct samples read.

When to stop: ``data.max_bad_fraction`` is a property of the data set, and a run sees a sample of it. A
plain ``bad / read > limit`` test after a few dozen faces stops a run with 0.5% bad faces whenever two of
them come early. :func:`too_bad` stops only when the bad fraction is above the limit with 99.9% confidence
(the lower end of the Wilson score interval, z = 3.09): it never stops a set whose true fraction is at or
below the limit except by a 1-in-1,000 chance, and a set far above it (30 of 48 bad) stops at once.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: One-sided 99.9% normal quantile of the Wilson bound in :func:`too_bad`.
CONFIDENCE_Z = 3.09
#: Distinct samples a reader must have read before its own backstop may stop it.
MIN_SAMPLES = 32


def wilson_lower(bad: int, total: int, z: float = CONFIDENCE_Z) -> float:
    """Lower end of the Wilson score interval of ``bad / total`` (0 when nothing was read)."""
    if total <= 0:
        return 0.0
    p = bad / total
    denom = 1 + z * z / total
    centre = p + z * z / (2 * total)
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, (centre - margin) / denom)


def too_bad(bad: int, total: int, limit: float) -> bool:
    """Whether ``bad`` of ``total`` distinct samples put the data's bad fraction above ``limit`` (99.9%)."""
    return bad > 0 and bad > limit * total and wilson_lower(bad, total) > limit


def reason(err: BaseException) -> str:
    """One clean line for a decoding error: no ``<_io.BytesIO object at 0x...>`` noise, the type named where
    the message alone would not say what broke."""
    from PIL import UnidentifiedImageError

    from superfan.errors import BadSample

    if isinstance(err, UnidentifiedImageError):
        return "not a decodable image"
    if type(err) is KeyError:
        return f"missing field {err.args[0]!r}" if err.args else "missing field"
    lines = str(err).strip().splitlines()
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<data>", lines[0]) if lines else ""
    if isinstance(err, BadSample) or type(err) is ValueError:
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def stop_message(bad: int, total: int, limit: float, first: str, where: str = "") -> str:
    return (
        f"{where}{bad} of {total} distinct samples read could not be used (above data.max_bad_fraction "
        f"{limit:g} with 99.9% confidence): the data is bad, not a sample; first: {first}"
    )


class SampleLedger:
    """Distinct samples a run has read, and which of them were bad, over all its epochs.

    The training loop feeds it every batch (``url``/``key`` of the good faces, ``bad_samples`` of the bad
    ones met since the previous batch), so the epoch-level check counts each sample once however many
    epochs, DataLoader workers and resampled passes read it.
    """

    def __init__(self) -> None:
        self.good: set[tuple[str, str]] = set()
        self.bad: dict[tuple[str, str], str] = {}

    def add(self, batch: dict[str, Any]) -> None:
        self.good.update(zip(batch.get("url") or [], batch.get("key") or [], strict=False))
        for url, key, why in batch.get("bad_samples") or []:
            self.bad.setdefault((url, key), why)

    @property
    def counts(self) -> tuple[int, int]:
        """``(distinct bad, distinct read)``."""
        return len(self.bad), len(self.good | self.bad.keys())

    def first(self) -> str:
        if not self.bad:
            return ""
        (url, key), why = next(iter(self.bad.items()))
        return f"{key} in {url}: {why}"
