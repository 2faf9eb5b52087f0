"""FAN [4] (section 4.3): stacked hourglasses [22] built from the bottleneck block of [3], for 64 px faces.

Architecture, following the FAN authors' ``face-alignment`` code (``ConvBlock``, ``HourGlass``, ``FAN``)
with its parameter names, only with a stem sized for a 64x64 input:

* ``ConvBlock`` ([3], hierarchical, parallel, multi-scale): BN-ReLU-conv3x3 to C/2, BN-ReLU-conv3x3 to
  C/4, BN-ReLU-conv3x3 to C/4, the three outputs concatenated to C, plus the input (through a
  BN-ReLU-conv1x1 projection when the channel counts differ).
* Stem: conv7x7 (3 -> F/4) + BN + ReLU, ConvBlock(F/4 -> F/2), ConvBlock(F/2 -> F/2), ConvBlock(F/2 -> F),
  with F = ``features``; at F = 256 these are exactly [4]'s 64/128/128/256.
* Each stack: HourGlass(depth) -> ConvBlock -> conv1x1 + BN + ReLU (``ll``) -> conv1x1 to 68 heatmaps
  (``l``); between stacks the usual remapping ``x = x + bl(ll) + al(heatmaps)``. Every stack's heatmaps
  are returned (intermediate supervision [22]); the last one is the prediction.

Heatmap resolution (our choice; the paper is silent): [4] takes 256 px input and predicts at 1/4, 64x64.
At 1/4 of a 64 px input the maps would be 16x16, i.e. a heatmap pixel per 4 image pixels for a 50 px face,
too coarse for the structure the heatmap loss is meant to enforce. So by default the stem downsamples by
2 only (the stride-2 7x7 conv, no pooling) and heatmaps are 32x32. ``heatmap_size`` selects the number of
stride-2 operations: 16 = stride-2 conv + 2x2 average pooling ([4]'s stem), 32 = stride-2 conv,
64 = stride-1 conv. The hourglass halves the resolution ``hourglass_depth`` times, so ``heatmap_size``
must be divisible by ``2 ** hourglass_depth``.

Heatmaps are raw conv outputs (no sigmoid), as in [4]; targets come from
:func:`superfan.landmarks.points_to_heatmaps` at the same ``heatmap_size``. Initialisation is PyTorch's
default, as in ``face-alignment``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from superfan.errors import ConfigError


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """The hierarchical, parallel, multi-scale residual block of [3] (``face-alignment``'s ConvBlock)."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        if out_planes % 4:
            raise ConfigError(f"FAN ConvBlock width must be divisible by 4, got {out_planes}")
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample: nn.Module | None = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_planes),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = self.downsample(x) if self.downsample is not None else x
        return torch.cat((out1, out2, out3), 1) + residual


class HourGlass(nn.Module):
    """One hourglass [22] of ``depth`` levels: 2x2 average pooling down, nearest-neighbour x2 up."""

    def __init__(self, depth: int, features: int) -> None:
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
            if level == 1:
                self.add_module(f"b2_plus_{level}", ConvBlock(features, features))
            self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up1 = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        low = self._forward(level - 1, low) if level > 1 else self._modules[f"b2_plus_{level}"](low)
        low = self._modules[f"b3_{level}"](low)
        return up1 + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.depth, x)


class FAN(nn.Module):
    """``(B, 3, 64, 64) -> [(B, landmarks, h, h)] * stacks`` with ``h = heatmap_size``."""

    def __init__(
        self,
        stacks: int = 2,
        landmarks: int = 68,
        features: int = 256,
        hourglass_depth: int = 4,
        heatmap_size: int = 32,
    ) -> None:
        super().__init__()
        if stacks < 1 or landmarks < 1 or hourglass_depth < 1:
            raise ConfigError(
                f"FAN needs stacks, landmarks and hourglass_depth >= 1, got {stacks}, {landmarks}, {hourglass_depth}"
            )
        if heatmap_size not in (16, 32, 64):
            raise ConfigError(f"FAN heatmap_size must be 16, 32 or 64 for a 64 px input, got {heatmap_size}")
        if features % 8:
            raise ConfigError(f"FAN features must be divisible by 8, got {features}")
        if heatmap_size % (2**hourglass_depth):
            raise ConfigError(
                f"FAN heatmap_size {heatmap_size} cannot be halved hourglass_depth={hourglass_depth} times"
            )
        self.stacks, self.landmarks, self.features = stacks, landmarks, features
        self.hourglass_depth, self.heatmap_size = hourglass_depth, heatmap_size
        f = features
        self.conv1 = nn.Conv2d(3, f // 4, kernel_size=7, stride=1 if heatmap_size == 64 else 2, padding=3)
        self.pool_stem = heatmap_size == 16
        self.bn1 = nn.BatchNorm2d(f // 4)
        self.conv2 = ConvBlock(f // 4, f // 2)
        self.conv3 = ConvBlock(f // 2, f // 2)
        self.conv4 = ConvBlock(f // 2, f)
        for i in range(stacks):
            self.add_module(f"m{i}", HourGlass(hourglass_depth, f))
            self.add_module(f"top_m_{i}", ConvBlock(f, f))
            self.add_module(f"conv_last{i}", nn.Conv2d(f, f, kernel_size=1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(f))
            self.add_module(f"l{i}", nn.Conv2d(f, landmarks, kernel_size=1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(f, f, kernel_size=1))
                self.add_module(f"al{i}", nn.Conv2d(landmarks, f, kernel_size=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv2(x)
        if self.pool_stem:
            x = F.avg_pool2d(x, 2, stride=2)
        x = self.conv4(self.conv3(x))
        m = self._modules
        outputs: list[torch.Tensor] = []
        for i in range(self.stacks):
            ll = m[f"top_m_{i}"](m[f"m{i}"](x))
            ll = F.relu(m[f"bn_end{i}"](m[f"conv_last{i}"](ll)))
            heatmaps = m[f"l{i}"](ll)
            outputs.append(heatmaps)
            if i < self.stacks - 1:
                x = x + m[f"bl{i}"](ll) + m[f"al{i}"](heatmaps)
        return outputs

    @classmethod
    def from_config(cls, cfg: Any) -> FAN:
        """From ``cfg.model.fan`` (:class:`superfan.config.FANConfig`; ``sigma`` is the targets' concern)."""
        return cls(
            stacks=cfg.stacks,
            landmarks=cfg.landmarks,
            features=cfg.features,
            hourglass_depth=cfg.hourglass_depth,
            heatmap_size=cfg.heatmap_size,
        )

    def extra_repr(self) -> str:
        return (
            f"stacks={self.stacks}, landmarks={self.landmarks}, features={self.features}, "
            f"hourglass_depth={self.hourglass_depth}, heatmap_size={self.heatmap_size}"
        )
