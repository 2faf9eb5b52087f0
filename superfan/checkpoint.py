"""Checkpoints: one directory with ``checkpoint.pt``, ``config.yaml`` and ``metrics.json``.

The ``.pt`` payload holds only tensors, numbers, strings, lists and dicts so that it loads with
``torch.load(weights_only=True)``: a checkpoint pulled from shared storage can never execute code.
``checkpoint.pt`` is written last (each file via a temporary name and a rename), so a directory with a
``checkpoint.pt`` is complete; a crash mid-save leaves either the previous checkpoint or no ``.pt`` at all.
``config.yaml`` and ``metrics.json`` are human-readable copies of what the payload already holds.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from typing import Any

import torch

from superfan import storage
from superfan.errors import IntegrityError, StorageError
from superfan.provenance import code_identity, code_version
from superfan.records import json_safe, now_iso

FORMAT = "superfan-checkpoint/1"
PT_NAME = "checkpoint.pt"


def save_checkpoint(directory: str | os.PathLike[str], payload: dict[str, Any]) -> str:
    """Write ``payload`` as a checkpoint directory (local path or ``s3://`` prefix); returns the ``.pt`` URL.

    ``format``, ``created`` and ``code_version`` are filled in when missing. The side files go first and
    ``checkpoint.pt`` last, each atomically, so readers that look for ``checkpoint.pt`` never see a torn one.
    """
    import yaml

    payload = dict(payload)
    payload.setdefault("format", FORMAT)
    payload.setdefault("created", now_iso())
    payload.setdefault("code_version", code_version())
    payload.setdefault("code", code_identity())
    payload["metrics"] = json_safe(payload.get("metrics") or {})
    directory = str(directory)
    buf = io.BytesIO()
    torch.save(payload, buf)
    storage.write_text(
        storage.join(directory, "config.yaml"), yaml.safe_dump(payload.get("config") or {}, sort_keys=False)
    )
    summary = {
        k: payload.get(k)
        for k in (
            "stage",
            "stage_kind",
            "stage_index",
            "epoch",
            "global_epoch",
            "step",
            "teacher",
            "teacher_sha256",
            "created",
            "code",
        )
    }
    summary.update(
        perceptual_pretrained=payload.get("perceptual_pretrained"),
        perceptual_weights=payload.get("perceptual_weights"),
        metrics=payload["metrics"],
    )
    storage.write_text(storage.join(directory, "metrics.json"), json.dumps(summary, indent=2, default=str))
    pt = storage.join(directory, PT_NAME)
    storage.write_bytes(pt, buf.getvalue())
    return pt


def _pt_url(path: str) -> str:
    if path.endswith(".pt"):
        return path
    return storage.join(path, PT_NAME)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint directory, its ``checkpoint.pt``, or an ``s3://`` URL of either, on the CPU.

    Uses ``weights_only=True``: only tensors and plain containers are accepted, never pickled code.
    """
    url = _pt_url(str(path))
    data = storage.read_bytes(url)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a corrupt or foreign file
        raise IntegrityError(f"{url}: not a loadable superfan checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise IntegrityError(f"{url}: not a superfan checkpoint (format {got!r}, expected {FORMAT!r})")
    problem = _payload_problem(payload)
    if problem:
        raise IntegrityError(f"{url}: a damaged superfan checkpoint: {problem}")
    return payload


def _payload_problem(payload: dict[str, Any]) -> str | None:
    """What makes a payload of the right format unusable (its config, a network's weights), or None."""
    if not isinstance(payload.get("config"), dict):
        return "it has no config (the resolved config every checkpoint carries, which its networks are built from)"
    for name in ("generator", "fan", "critic"):
        state = payload.get(name)
        if state is not None and not (
            isinstance(state, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items())
        ):
            return f"its {name} weights are not a state dict of tensors"
    return None


def state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and values: which weights these are, whatever file,
    URL or copy holds them (a checkpoint re-saved elsewhere keeps its fingerprint)."""
    import hashlib

    h = hashlib.sha256()
    bare = strip_ddp(state)
    for key in sorted(bare):
        t = bare[key].detach().cpu()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.contiguous().reshape(-1)  # a 0-d tensor cannot be viewed as bytes
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def strip_ddp(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict without DDP's ``module.`` prefixes, so checkpoints load into bare modules."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def models_from_checkpoint(payload: dict[str, Any], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Rebuild ``generator``, ``fan`` and ``critic`` (eval mode) from a payload; absent ones are ``None``.

    Architectures come from the payload's own resolved config, so a checkpoint is self-describing and
    does not depend on the profile the caller happens to have loaded.
    """
    from superfan.config import from_dict
    from superfan.models import FAN, Critic, Generator

    cfg = from_dict(payload["config"], source="checkpoint config")
    out: dict[str, Any] = {"generator": None, "fan": None, "critic": None, "config": cfg}
    builders = {
        "generator": lambda: Generator.from_config(cfg.model.generator),
        "fan": lambda: FAN.from_config(cfg.model.fan),
        "critic": lambda: Critic(channels=cfg.model.critic.channels),
    }
    for name, build in builders.items():
        state = payload.get(name)
        if state is None:
            continue
        net = build()
        try:
            net.load_state_dict(strip_ddp(state))
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise IntegrityError(f"checkpoint {name} weights do not match its config: {first}") from None
        out[name] = net.to(device).eval()
    return out


def require_file(path: str) -> None:
    """One-line error when a checkpoint path given on the command line does not exist."""
    if not storage.exists(_pt_url(path)):
        raise StorageError(f"{path}: no {PT_NAME} there (give a checkpoint directory or its {PT_NAME})")
