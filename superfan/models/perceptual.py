"""Frozen ResNet-50 features for the perceptual loss of Eq. 2 (section 4.1.1).

The paper uses features "after the B1, B2 and B3 blocks of ResNet-50", i.e. torchvision's ``layer1``,
``layer2`` and ``layer3`` (256, 512 and 1024 channels; 16, 8 and 4 px for a 64 px input). The network is
torchvision's ``resnet50`` with its own parameter names, truncated after the deepest requested layer, so
a torchvision-format ImageNet state dict loads directly (``fc``/``layer4`` keys are ignored).

Weights are never downloaded on our own initiative: ``weights`` is a local path, ``file://`` URL, an
``s3://`` URL (read as plain bytes by :mod:`superfan.storage`), or an ``http(s)://`` URL the user chose to
give (torch.hub); always ``torch.load(weights_only=True)``. ``pipe:`` and other schemes are refused
(:func:`superfan.config.check_perceptual_source`), so no value can make the loader run a program.

Without weights the features are random, which makes the "perceptual" loss a random-projection loss.
``weights=None`` (nothing configured) is warned once per process; ``weights="random"``
(``config.RANDOM_PERCEPTUAL_WEIGHTS``, what the paper profile requires to train without weights) is the
same network, chosen knowingly, so it is not warned. Both are recorded
(``pretrained=False``; ``weights_source`` None or ``"random"``) so checkpoints and reports say so. A file
literally named ``random`` is ``./random``.

Input is an image in [0, 1]; ImageNet mean/std normalisation happens inside, as the weights expect.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superfan import storage
from superfan.config import RANDOM_PERCEPTUAL_WEIGHTS, check_perceptual_source
from superfan.errors import ConfigError

LAYERS = ("layer1", "layer2", "layer3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_FEATURES_WARNING = (
    "perceptual loss uses RANDOM ResNet-50 features (no model.perceptual_weights given); set it to a "
    "torchvision ImageNet ResNet-50 state dict for the paper's loss"
)

#: Set by a driver that has already told the user (a sweep says it once, not once per trial process).
WARNED_ENV = "SUPERFAN_WARNED_RANDOM_PERCEPTUAL"
_warned_random = False


def _warn_random_once() -> None:
    global _warned_random
    if not _warned_random and os.environ.get(WARNED_ENV) != "1":
        _warned_random = True
        warnings.warn(RANDOM_FEATURES_WARNING, UserWarning, stacklevel=3)


def _load_state_dict(source: str) -> Mapping[str, torch.Tensor]:
    """A torchvision-format state dict from a path or URL, with ``weights_only=True``; one-line errors."""
    where = f"model.perceptual_weights {source!r}"
    try:
        check_perceptual_source(source)  # the config refused it already; a caller's own string too
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    try:
        if source.startswith(("http://", "https://")):
            state = torch.hub.load_state_dict_from_url(source, map_location="cpu", progress=False, weights_only=True)
        elif storage.is_s3(source):  # plain bytes through our storage layer, never webdataset's gopen
            state = torch.load(io.BytesIO(storage.read_bytes(source)), map_location="cpu", weights_only=True)
        else:
            path = Path(source.removeprefix("file://")).expanduser()
            if not path.is_file():
                raise ConfigError(f"{where}: no such file")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except Exception as err:  # any failure to read is the user's file, reported in one line
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{where}: cannot load a state dict ({type(err).__name__}: {first})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ConfigError(f"{where}: expected a state dict (mapping of tensors), got {type(state).__name__}")
    return state


class PerceptualNet(nn.Module):
    """``(B, 3, H, W)`` in [0, 1] -> features after each of ``layers`` (torchvision's layer1..layer3).

    Always frozen: parameters never require grad and the module stays in eval mode (BN running
    statistics fixed) even when a parent calls ``.train()``. Gradients still flow to the input, which is
    what the generator needs.
    """

    def __init__(self, weights: str | None = None, layers: Sequence[str] = LAYERS) -> None:
        super().__init__()
        import torchvision

        layers = tuple(layers)
        if not layers or any(name not in LAYERS for name in layers):
            raise ConfigError(f"perceptual layers must be a non-empty subset of {LAYERS}, got {layers}")
        self.layers = tuple(name for name in LAYERS if name in layers)
        depth = LAYERS.index(self.layers[-1]) + 1
        net = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        for name in LAYERS[:depth]:
            setattr(self, name, getattr(net, name))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        random_features = weights is None or str(weights) == RANDOM_PERCEPTUAL_WEIGHTS
        self.pretrained = not random_features
        self.weights_source: str | None = str(weights) if weights is not None else None
        if weights is None:
            _warn_random_once()
        elif not random_features:
            self._load(_load_state_dict(str(weights)))
        self.requires_grad_(False)
        super().train(False)

    def _load(self, state: Mapping[str, Any]) -> None:
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(kept))
        if missing:
            raise ConfigError(
                f"model.perceptual_weights {self.weights_source!r}: not a torchvision ResNet-50 state dict "
                f"({len(missing)} keys missing, e.g. {missing[0]!r})"
            )
        try:
            self.load_state_dict(kept, strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[-1].strip() or str(err).splitlines()[0]
            raise ConfigError(f"model.perceptual_weights {self.weights_source!r}: {first}") from None

    def train(self, mode: bool = True) -> PerceptualNet:
        """Ignore ``mode``: the feature extractor is frozen, BN must keep ImageNet statistics."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats: list[torch.Tensor] = []
        for name in LAYERS:
            if not hasattr(self, name):
                break
            x = getattr(self, name)(x)
            if name in self.layers:
                feats.append(x)
        return feats

    def extra_repr(self) -> str:
        return f"layers={self.layers}, pretrained={self.pretrained}, weights_source={self.weights_source!r}"
