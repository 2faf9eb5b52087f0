"""The Super-FAN losses (sections 4.1.1-4.4): pixel, perceptual, heatmap, WGAN-GP, and their Eq. 5 sum.

Every loss returns a scalar mean over the batch, so the weights alpha, beta, gamma, zeta mean the same
thing at any batch size. Choices where the paper is silent:

* Eq. 2 (perceptual) normalises by the feature map's size only; we also average over channels (and the
  batch), i.e. ``F.mse_loss`` per level, so the three levels (256, 512, 1024 channels) weigh alike; the
  levels are summed. The HR branch runs under ``no_grad``: it is a target.
* Eq. 4 (heatmap): sum over pixels of each landmark's squared difference, mean over the N landmarks,
  then mean over the batch; with several hourglass stacks the per-stack losses are summed (the
  intermediate supervision of [22]/[4]). A1.2's L1 variant replaces the square by an absolute value.
* Eq. 3 (WGAN-GP [10]): interpolates with one uniform epsilon per sample, the gradient norm over all of
  an image's pixels, penalty weight lambda = 10 (config ``losses.adversarial.gp_lambda``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from superfan.errors import ConfigError

LOSS_TYPES = ("l2", "l1")
TERMS = ("pixel", "perceptual", "heatmap", "adversarial", "landmark")


def _check_type(type: str, what: str) -> None:
    if type not in LOSS_TYPES:
        raise ConfigError(f"losses.{what}.type must be one of {LOSS_TYPES}, got {type!r}")


_BINOMIAL5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def binomial_blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap binomial ``[1 4 6 4 1] / 16`` per channel, reflect-padded; ``(B, C, H, W)``.

    Its response is 0 at the 2-px period and 1/4 (per axis) at the 4-px period, the two periods of the
    generator's sub-pixel grid, and 0.73 at 8 px: it removes the grid and little of a face's structure.
    """
    k = torch.tensor(_BINOMIAL5, dtype=x.dtype, device=x.device) / 16.0
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


class _SmoothGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return binomial_blur(grad)


def smooth_gradient(x: torch.Tensor) -> torch.Tensor:
    """Identity forward; low-passes the gradient flowing back through it (:func:`binomial_blur`).

    Why: a loss *network* (the perceptual ResNet-50, the FAN of Eq. 4, the critic) starts with stride-2
    layers, and the gradient of a strided layer w.r.t. its input is a transposed convolution with a
    period-2 (and, two strides in, period-4) grid. Fed back into the generator, that grid becomes the
    generator's output texture: on faces-300w (tiny profile, ``gamma`` 0.003, 128 steps of the heatmap
    stage) the power at those periods rose from 0.16x HR's to 4.1x HR's. Smoothing the gradient leaves
    every loss value exactly the paper's and takes away only the direction that draws the grid.
    """
    return _SmoothGradient.apply(x)


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, type: str = "l2") -> torch.Tensor:
    """Eq. 1: mean squared (``l2``) or absolute (``l1``, A1.1) error over all pixels and channels."""
    _check_type(type, "pixel")
    return F.mse_loss(sr, hr) if type == "l2" else F.l1_loss(sr, hr)


def perceptual_loss(net: nn.Module, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Eq. 2 summed over the levels ``net`` returns (B1, B2, B3): MSE of features, HR as a fixed target."""
    feats_sr = net(sr)
    with torch.no_grad():
        feats_hr = net(hr)
    total = sr.new_zeros((), dtype=torch.float32)
    for fs, fh in zip(feats_sr, feats_hr, strict=True):
        total = total + F.mse_loss(fs.float(), fh.detach().float())  # detach: a level may be hr itself
    return total


def heatmap_loss(
    pred_stacks: Sequence[torch.Tensor] | torch.Tensor,
    target: torch.Tensor,
    type: str = "l2",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 4 summed over stacks: per landmark the pixel sum of squared (or absolute) differences, mean over
    landmarks and over the batch.

    ``pred_stacks`` is FAN's list (one ``(B, N, h, h)`` tensor per stack) or a single tensor. ``mask``
    (``(B,)`` bool) keeps only those samples (faces with ground-truth landmarks); when it keeps none the
    loss is an exact zero that is still connected to the predictions, so every data-parallel rank
    backpropagates through the same graph.
    """
    _check_type(type, "heatmap")
    preds = [pred_stacks] if isinstance(pred_stacks, torch.Tensor) else list(pred_stacks)
    if not preds:
        raise ValueError("heatmap_loss needs at least one stack of predictions")
    if mask is not None:
        mask = mask.to(device=target.device, dtype=torch.bool)
        if not bool(mask.any()):
            return sum((p.float().sum() * 0.0 for p in preds), target.new_zeros((), dtype=torch.float32))
        preds, target = [p[mask] for p in preds], target[mask]
    total = target.new_zeros((), dtype=torch.float32)
    for p in preds:
        if p.shape != target.shape:
            raise ValueError(f"heatmap_loss: prediction {tuple(p.shape)} vs target {tuple(target.shape)}")
        diff = p.float() - target.float()
        per_landmark = (diff.square() if type == "l2" else diff.abs()).flatten(2).sum(-1)  # (B, N)
        total = total + per_landmark.mean()
    return total


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_lambda: float = 1.0) -> torch.Tensor:
    """Eq. 3's penalty ``gp_lambda * E[(||grad D(x_hat)||_2 - 1)^2]`` on random interpolates.

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per sample ([10]). The gradient
    is taken with ``create_graph=True`` so the penalty itself trains the critic. ``gp_lambda`` defaults
    to 1 so that callers who weight it themselves get the raw expectation; :func:`critic_loss` uses 10.
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    # sqrt(. + 1e-12) instead of .norm(): finite gradient even where the critic's gradient vanishes.
    norm = (grad.float().flatten(1).square().sum(1) + 1e-12).sqrt()
    return gp_lambda * (norm - 1).square().mean()


def critic_loss(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_lambda: float = 10.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 3 for the critic: ``E[D(fake)] - E[D(real)] + lambda * GP``; ``fake`` is detached.

    Stats (detached): ``wasserstein`` = E[D(real)] - E[D(fake)] (the critic's estimate of the
    Wasserstein distance, which should fall as the generator improves), ``gp`` (unweighted penalty),
    ``d_real``, ``d_fake``.
    """
    fake = fake.detach()
    d_real = critic(real).float().mean()
    d_fake = critic(fake).float().mean()
    gp = gradient_penalty(critic, real, fake)
    loss = d_fake - d_real + gp_lambda * gp
    stats = {
        "wasserstein": (d_real - d_fake).detach(),
        "gp": gp.detach(),
        "d_real": d_real.detach(),
        "d_fake": d_fake.detach(),
    }
    return loss, stats


def generator_adversarial_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """The generator's side of Eq. 3: ``-E[D(G(I_LR))]`` (the real term does not depend on G)."""
    return -critic(fake).float().mean()


def loss_weights(losses_cfg: Any) -> dict[str, float]:
    """alpha, beta, gamma, zeta of Eq. 5 (and our eta) from ``cfg.losses`` (or a whole :class:`Config`)."""
    cfg = getattr(losses_cfg, "losses", losses_cfg)
    return {name: float(getattr(cfg, name).weight) for name in TERMS}


def weighted_total(terms: Mapping[str, torch.Tensor], losses_cfg: Any) -> torch.Tensor:
    """Eq. 5: ``alpha*pixel + beta*perceptual + gamma*heatmap + zeta*adversarial`` over the terms given, plus
    ``eta*landmark`` (the joint FAN against ground truth, ``end2end`` only; not in the paper).

    Stages add only the terms they use (a ``pixel`` stage passes only ``pixel``), so absent terms are
    simply not summed; their weights in the config are ignored.
    """
    if not terms:
        raise ValueError("weighted_total needs at least one loss term")
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise KeyError(f"weighted_total: unknown loss terms {unknown} (known: {', '.join(TERMS)})")
    weights = loss_weights(losses_cfg)
    total: torch.Tensor | None = None
    for name in TERMS:
        if name in terms:
            term = weights[name] * terms[name]
            total = term if total is None else total + term
    assert total is not None
    return total
