"""The super-resolution network of section 4.1: N1-N2-N3 residual blocks at 16, 32 and 64 px.

Layout (Fig. 3a)::

    conv3x3(3->C) + ReLU                                     16x16
    N1 x ResidualBlock                                       16x16
    conv3x3(C->4C) -> PixelShuffle(2) -> ReLU                -> 32x32
    N2 x ResidualBlock                                       32x32
    conv3x3(C->4C) -> PixelShuffle(2) -> ReLU                -> 64x64
    N3 x ResidualBlock                                       64x64
    conv3x3(C->3)                                            64x64, no activation (images in [0, 1])

Residual block = conv3x3-BN-ReLU-conv3x3-BN + identity, the block of [9] that [20] and the paper use.

Choices where the paper is silent (each is what its references do):

* Upsampling is SRResNet's [20] sub-pixel block (conv to 4C, PixelShuffle x2, activation), with ReLU
  instead of PReLU because the paper found "no improvements" from PReLU and uses ReLU throughout.
  ``upsample="resize"`` (the ``tiny`` profile's) is bilinear x2 then conv3x3 (Odena et al. 2016,
  "Deconvolution and checkerboard artifacts"): the same FLOPs, no per-sub-pixel weights. A trained
  sub-pixel generator's four sub-kernels differ, its features carry a period-2/4 grid that the later
  layers learn to cancel under the pixel loss, and any other loss undoes the cancellation: on faces-300w
  (tiny, 64 heatmap-stage steps) the grid artefact went from 0.16x to 4.1x HR's; with resize from 0.06x
  to 0.09x, and the pixel stage reached 26.37 dB instead of 25.13 dB (640 steps, with a warm-up).
* Head and output convolutions are 3x3 (SRResNet uses 9x9). Keeping every conv 3x3 makes the 12-3-2 vs
  SRResNet comparison differ only in where the blocks sit, which is what section 4.1 studies.
* Convolutions followed by BN have no bias (BN's shift makes it redundant, as in torchvision's ResNets);
  the head, upsampling and output convolutions have one.
* ``long_skip=True`` (A1.3, "with skip") wraps every non-empty resolution group in SRResNet's long skip:
  ``x + BN(conv3x3(blocks(x)))``, the conv-BN that SRResNet puts after its residual trunk.
* Initialisation: Kaiming-normal (fan_in, ReLU gain; BasicSR's ``default_init_weights``) for the
  convolutions, a linear-gain Kaiming for the output conv, zero biases, BN weight 1 / bias 0, except
  the last BN of every residual branch (and of each long skip), which starts at 0: torchvision's
  ``zero_init_residual``. Every block is then the identity at initialisation. Without that the residual
  stream doubles its variance per block and a fresh 12-3-2 outputs values of std ~1000 for [0, 1]
  inputs, which wastes the first steps and makes float32 results batch-size dependent. BasicSR's
  alternative, scaling branch weights by 0.1, is for BN-free blocks: BN in train mode undoes it.
* ``residual="bicubic"`` (not in the paper; the ``tiny`` profile's choice) adds the bicubic upsampling of
  the 16x16 input to the output: VDSR's global residual learning (Kim et al. 2016, "Accurate image
  super-resolution using very deep convolutional networks"). The output conv then starts at zero, so a
  fresh generator *is* bicubic upsampling and training only adds detail. Measured on faces-300w (tiny
  generator, 2 CPU cores, pixel loss, 2e-3 -> 5e-5 over 640 steps, 383 validation faces): 25.00 dB with
  it, 22.75 dB without (bicubic 24.61 dB; that experiment used torch's a = -0.75 kernel). The paper's 60
  epochs on a GPU do not need it, so the ``paper`` profile keeps Fig. 3a as drawn. The kernel is
  :func:`bicubic_upsample`'s, the one the evaluation's bicubic baseline uses.
* Sub-pixel convolutions get ICNR (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"):
  the conv before each ``PixelShuffle(r)`` starts with the ``r * r`` sub-kernels of every output channel
  equal, copies of one Kaiming-initialised kernel. Conv + shuffle is then exactly nearest-neighbour
  upsampling of a conv3x3 at the low resolution, so the shuffles add no period-2 (and, two of them, no
  period-4) grid of their own; with independent sub-kernels every output pixel of a 2x2 cell is computed
  by a different random filter: a checkerboard that training must first undo, and that short trainings
  leave visible. ICNR keeps Kaiming's fan-in scale, so nothing else changes. ``metrics.grid_artefact``
  measures it: on real faces a fresh generator is near HR's level with ICNR (median over seeds ~1; the
  random convs after the upsamplers still see 2x2 blocks, up to ~5x for some seeds), ~800x without.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from superfan.errors import ConfigError

RESIDUALS = ("none", "bicubic")


def bicubic_upsample(lr: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Keys a = -0.5 bicubic (MATLAB ``imresize``, PIL ``BICUBIC``: torch's antialiased path), unclamped."""
    return torch.nn.functional.interpolate(lr, size=size, mode="bicubic", align_corners=False, antialias=True)


def _conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the identity ([9]; the paper's Fig. 3a block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class ResolutionGroup(nn.Module):
    """``n`` residual blocks at one resolution, optionally inside SRResNet's long skip (A1.3).

    An empty group (``n == 0``) is the identity, with or without ``long_skip``: there is nothing to skip.
    """

    def __init__(self, n: int, channels: int, long_skip: bool) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(n)))
        self.fuse: nn.Module | None = None
        if long_skip and n > 0:
            self.fuse = nn.Sequential(_conv3x3(channels, channels, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(x)
        return x + self.fuse(y) if self.fuse is not None else y


UPSAMPLERS = ("subpixel", "resize")


def _upsampler(channels: int, kind: str = "subpixel") -> nn.Sequential:
    """A x2 block with ReLU: SRResNet's sub-pixel one (conv3x3 to 4C at the low resolution, PixelShuffle), or
    ``resize``: bilinear x2 then conv3x3 at the high resolution (Odena et al. 2016, "Deconvolution and
    checkerboard artifacts"), which has no per-sub-pixel weights to drift apart."""
    if kind == "resize":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _conv3x3(channels, channels),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(_conv3x3(channels, 4 * channels), nn.PixelShuffle(2), nn.ReLU(inplace=True))


def icnr_(weight: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """ICNR init (Aitken et al. 2017) of a conv weight ``(C * scale**2, Cin, k, k)`` that feeds ``PixelShuffle``.

    ``PixelShuffle(r)`` sends conv channel ``c * r * r + s`` to sub-pixel ``s`` of output channel ``c``, so
    each output channel's ``r * r`` sub-kernels are the consecutive rows ``c * r * r ... c * r * r + r * r - 1``.
    They all become copies of one kernel drawn with Kaiming-normal (fan_in = Cin * k * k, ReLU gain), the
    init the rest of the generator uses: the shuffle then equals nearest-neighbour upsampling of that
    kernel's output, free of the checkerboard that independent sub-kernels produce. In place; returns it.
    """
    out_ch = weight.shape[0]
    if out_ch % (scale * scale):
        raise ValueError(f"ICNR needs output channels divisible by scale**2 = {scale * scale}, got {out_ch}")
    sub = torch.empty(out_ch // (scale * scale), *weight.shape[1:], dtype=weight.dtype, device=weight.device)
    nn.init.kaiming_normal_(sub, mode="fan_in", nonlinearity="relu")
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale * scale, dim=0))
    return weight


def sub_pixel_convs(module: nn.Module) -> list[tuple[nn.Conv2d, nn.PixelShuffle]]:
    """Every ``(conv, shuffle)`` pair of ``module`` where a ``Conv2d`` directly precedes a ``PixelShuffle``."""
    pairs = []
    for seq in module.modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq)
            for a, b in zip(kids[:-1], kids[1:], strict=True):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.PixelShuffle):
                    pairs.append((a, b))
    return pairs


class Generator(nn.Module):
    """``(B, 3, 16, 16) -> (B, 3, 64, 64)``; output unclamped (clamp only for metrics and display).

    ``layout = (N1, N2, N3)`` residual blocks at 16, 32 and 64 px; any N >= 0 works, (0, 0, 0) included.
    """

    def __init__(
        self,
        layout: tuple[int, int, int] | list[int] = (12, 3, 2),
        channels: int = 64,
        long_skip: bool = False,
        residual: str = "none",
        upsample: str = "subpixel",
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLERS:
            raise ConfigError(f"generator upsample must be one of {', '.join(UPSAMPLERS)}, got {upsample!r}")
        self.upsample = upsample
        if residual not in RESIDUALS:
            raise ConfigError(f"generator residual must be one of {', '.join(RESIDUALS)}, got {residual!r}")
        self.residual = residual
        layout = tuple(int(n) for n in layout)
        if len(layout) != 3 or any(n < 0 for n in layout):
            raise ConfigError(f"generator layout must be three counts >= 0 (N1, N2, N3), got {layout}")
        if channels <= 0:
            raise ConfigError(f"generator channels must be > 0, got {channels}")
        self.layout: tuple[int, int, int] = layout  # type: ignore[assignment]
        self.channels = int(channels)
        self.long_skip = bool(long_skip)
        n1, n2, n3 = layout
        c = self.channels
        self.head = nn.Sequential(_conv3x3(3, c), nn.ReLU(inplace=True))
        self.body16 = ResolutionGroup(n1, c, self.long_skip)
        self.up32 = _upsampler(c, upsample)
        self.body32 = ResolutionGroup(n2, c, self.long_skip)
        self.up64 = _upsampler(c, upsample)
        self.body64 = ResolutionGroup(n3, c, self.long_skip)
        self.tail = _conv3x3(c, 3)
        self.reset_parameters()

    def reset_parameters(self, icnr: bool = True) -> None:
        """Kaiming init that keeps the residual stream at its input's scale, ICNR for the sub-pixel convs.

        ``icnr=False`` leaves the sub-pixel convolutions plain Kaiming (independent sub-kernels): only for
        measuring what ICNR buys (see the module docstring).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # torchvision's zero_init_residual: every residual branch starts at zero
            if isinstance(m, ResidualBlock):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, ResolutionGroup) and m.fuse is not None:
                nn.init.zeros_(m.fuse[1].weight)
        nn.init.kaiming_normal_(self.tail.weight, mode="fan_in", nonlinearity="linear")
        if self.residual != "none":  # a fresh residual generator is exactly its upsampling
            nn.init.zeros_(self.tail.weight)
        if icnr:
            for conv, shuffle in sub_pixel_convs(self):
                icnr_(conv.weight, shuffle.upscale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body16(self.head(x))
        y = self.body32(self.up32(y))
        y = self.tail(self.body64(self.up64(y)))
        return y + bicubic_upsample(x, y.shape[-1]) if self.residual == "bicubic" else y

    @classmethod
    def srresnet(cls, channels: int = 64) -> Generator:
        """The 16-1-1 SRResNet baseline of [20]: 16 residual blocks at 16 px inside one long skip.

        How "16-1-1" maps onto SRResNet: [20] has 16 residual blocks at the input resolution, then two
        sub-pixel upsampling blocks, one producing 32 px and one producing 64 px, then the output conv.
        Section 4.1 counts those two upsampling blocks as the "1 block at 32x32 and another 1 at 64x64".
        Our generator always has those two upsampling blocks, so SRResNet is ``layout=(16, 0, 0)`` with
        ``long_skip=True`` (the skip from the head to after the trunk's conv-BN, exactly [20]'s). It is
        therefore expressible in ``GeneratorConfig`` and rebuilt from checkpoints like any layout.
        ``layout=(16, 1, 1)`` in a config is a different network: 18 residual blocks, one after each
        upsampler. Differences from [20] kept on purpose: ReLU not PReLU and 3x3 not 9x9 head/output
        convs (see the module docstring), so the comparison isolates the block distribution.
        """
        return cls(layout=(16, 0, 0), channels=channels, long_skip=True)

    @classmethod
    def from_config(cls, cfg: Any) -> Generator:
        """From ``cfg.model.generator`` (:class:`superfan.config.GeneratorConfig`)."""
        return cls(
            layout=tuple(cfg.layout),
            channels=cfg.channels,
            long_skip=cfg.long_skip,
            residual=cfg.residual,
            upsample=cfg.upsample,
        )

    def extra_repr(self) -> str:
        return (
            f"layout={self.layout}, channels={self.channels}, long_skip={self.long_skip}, "
            f"residual={self.residual}, upsample={self.upsample}"
        )
