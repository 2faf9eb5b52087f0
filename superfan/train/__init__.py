"""Training: the teacher FAN and the Super-FAN stages, distributed with Ray Train (Train V2).

``superfan.train.trainer.build_trainer`` returns a ``TorchTrainer`` around
``superfan.train.loop.train_loop_per_worker``; ``superfan.train.stages`` says what each stage kind
trains and holds the step function shared by the loop and ``superfan bench train``. Submodules are
imported lazily so ``import superfan.train`` does not pull in Ray.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_trainer", "train_loop_per_worker", "run_training", "STAGE_SPECS"]


def __getattr__(name: str) -> Any:
    if name == "build_trainer":
        from superfan.train.trainer import build_trainer

        return build_trainer
    if name in {"train_loop_per_worker", "run_training"}:
        from superfan.train import loop

        return getattr(loop, name)
    if name == "STAGE_SPECS":
        from superfan.train.stages import STAGE_SPECS

        return STAGE_SPECS
    raise AttributeError(name)
