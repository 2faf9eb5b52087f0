"""Training: the teacher FAN and the Super-FAN stages, distributed with Ray Train (Train V2).

Split along Ray's own seam, driver apart from worker:

* :mod:`superfan.train.session` -- starting, joining and leaving Ray; the environment Ray's processes get
* :mod:`superfan.train.driver` -- preflight, resources, storage, checkpoint URLs, ``build_trainer``
* :mod:`superfan.train.worker` -- ``train_loop_per_worker``, Ray's reporter, Train's log lines
* :mod:`superfan.train.loop` -- ``run_training``, the stages of one run (no Ray: unit tests run it)
* :mod:`superfan.train.stages` -- one stage: networks, optimisers, schedule, step, checkpoint payload
* :mod:`superfan.train.reports`, :mod:`~superfan.train.teacher`, :mod:`~superfan.train.collectives`,
  :mod:`~superfan.train.raymetrics` -- what a run reports, the teacher, the cross-rank collectives, Ray metrics

Submodules are imported lazily so ``import superfan.train`` does not pull in Ray or torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_trainer", "train_loop_per_worker", "run_training"]


def __getattr__(name: str) -> Any:
    if name == "build_trainer":
        from superfan.train.driver import build_trainer

        return build_trainer
    if name == "train_loop_per_worker":
        from superfan.train.worker import train_loop_per_worker

        return train_loop_per_worker
    if name == "run_training":
        from superfan.train.loop import run_training

        return run_training
    raise AttributeError(name)
