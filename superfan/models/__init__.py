"""The three Super-FAN networks (section 4) and the frozen perceptual feature extractor.

``Generator`` (4.1), ``Critic`` (4.2), ``FAN`` (4.3), ``PerceptualNet`` (4.1.1). Each module's docstring
lists the choices made where the paper is silent.
"""

from __future__ import annotations

from torch import nn

from superfan.models.critic import Critic
from superfan.models.fan import FAN
from superfan.models.generator import Generator
from superfan.models.perceptual import PerceptualNet

__all__ = ["FAN", "Critic", "Generator", "PerceptualNet", "count_parameters"]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BN running statistics are buffers and are not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
