"""The WGAN-GP critic of section 4.2: DCGAN's [24] 64x64 discriminator without batch normalisation.

``(B, 3, 64, 64) -> (B,)``: four stride-2 4x4 convolutions (C, 2C, 4C, 8C; 64 -> 32 -> 16 -> 8 -> 4 px),
each followed by LeakyReLU(0.2), then a 4x4 valid convolution to one unbounded score (no sigmoid: a
Wasserstein critic outputs a score, not a probability).

Choices where the paper is silent:

* No batch norm anywhere, as the paper says and as [10] requires: the gradient penalty is per sample,
  and BN couples the samples of a batch. Without BN the convolutions keep their biases.
* Initialisation N(0, 0.02), DCGAN's [24].
"""

from __future__ import annotations

import torch
from torch import nn

from superfan.errors import ConfigError


class Critic(nn.Module):
    """DCGAN discriminator without BN; ``channels`` is the first conv's width and doubles per layer."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        if channels <= 0:
            raise ConfigError(f"critic channels must be > 0, got {channels}")
        self.channels = int(channels)
        c = self.channels
        layers: list[nn.Module] = []
        cin = 3
        for cout in (c, 2 * c, 4 * c, 8 * c):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.score = nn.Conv2d(cin, 1, 4, stride=1, padding=0)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (64, 64):
            raise ValueError(f"Critic expects 64x64 images, got {tuple(x.shape[-2:])}")
        return self.score(self.features(x)).flatten()

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
