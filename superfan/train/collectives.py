"""The few collectives the training loop needs, each on the device its process group's backend takes.

NCCL only moves CUDA tensors, gloo moves CPU tensors (and CUDA ones), and a mixed group such as
``cpu:gloo,cuda:nccl`` routes each tensor by its device. A tensor built with ``torch.tensor([...])`` is on
the CPU, so an all-reduce of it works under gloo and fails under NCCL at the end of the first epoch of
every multi-GPU run. Every helper here therefore builds its tensor on :func:`collective_device`, and
outside an initialised process group (world size 1, unit tests) each is the identity.
"""

from __future__ import annotations

from typing import Any

import torch


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def device_for_backend(backend: str) -> torch.device:
    """The device whose tensors ``backend`` can reduce: CPU wherever a CPU backend is part of it."""
    parts = [p.strip().lower() for p in str(backend).split(",") if p.strip()]
    for part in parts:
        dev, _, name = part.rpartition(":")
        if dev == "cpu" or (not dev and name in {"gloo", "mpi", "ucc"}):
            return torch.device("cpu")
    index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return torch.device("cuda", index)


def collective_device() -> torch.device:
    """The device for the default process group's collectives (CPU when there is no group)."""
    dist = _dist()
    return torch.device("cpu") if dist is None else device_for_backend(str(dist.get_backend()))


def world_size() -> int:
    dist = _dist()
    return 1 if dist is None else int(dist.get_world_size())


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (every rank must pass the same keys)."""
    n = world_size()
    return {k: v / n for k, v in sum_across_ranks(values).items()} if n > 1 else values


def min_max_across_ranks(value: float) -> tuple[float, float]:
    """The smallest and largest of one number over the ranks, in one all-reduce."""
    dist = _dist()
    if dist is None:
        return value, value
    t = torch.tensor([-float(value), float(value)], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    lo, hi = t.cpu().tolist()
    return -lo, hi


def broadcast_object(obj: Any, rank: int, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; its byte tensors go through the backend's device)."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj if rank == src else None]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def sum_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over the ranks (every rank must pass the same keys)."""
    dist = _dist()
    if dist is None or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist(), strict=True))


#: What a rank found when it asked its loader for the next batch (:func:`agree_on_batch`).
GOT_BATCH, EXHAUSTED, FAILED = 0, 1, 2


def agree_on_batch(status: int, failure: BaseException | None = None) -> tuple[int, BaseException | None]:
    """Whether every rank got its next batch, decided together: the worst status of any rank, and on
    ``FAILED`` the failure of the lowest failing rank, on every rank.

    A data error on one rank (a bad shard, a stream that found the data bad) must stop all ranks at the
    same step: the others are otherwise left waiting in the next gradient all-reduce, and a rank that
    returns alone leaves them there until the backend's timeout. One all-reduce of one number per step
    (the failure itself travels only when there is one)."""
    dist = _dist()
    if dist is None:
        return status, failure
    t = torch.tensor([float(status)], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    worst = int(t.item())
    if worst != FAILED:
        return worst, None
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, failure)
    return FAILED, next(f for f in gathered if f is not None)
