"""Ray Tune's ``MLflowLoggerCallback`` without the tracking URI's secret in what Ray pickles.

The callback is part of the ``RunConfig`` that Tune pickles into ``tuner.pkl`` (and its state into the
experiment directory): pickled, it holds the redacted URI (:mod:`superfan.redact`); it connects with the
real one, which only the driver's memory holds, when Tune sets it up.
"""

from __future__ import annotations

from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from superfan.redact import redact, reveal


class RedactedMLflowLoggerCallback(MLflowLoggerCallback):
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("tracking_uri", "registry_uri"):
            if isinstance(state.get(name), str):
                state[name] = redact(state[name])
        return state

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.tracking_uri = reveal(self.tracking_uri, "--mlflow")
        self.registry_uri = reveal(self.registry_uri, "--mlflow")
        try:
            super().setup(*args, **kwargs)
        finally:  # the live object keeps only what may be written, too (Tune may pickle it again)
            self.tracking_uri = redact(self.tracking_uri) if self.tracking_uri else self.tracking_uri
            self.registry_uri = redact(self.registry_uri) if self.registry_uri else self.registry_uri
