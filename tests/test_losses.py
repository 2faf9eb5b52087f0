"""Loss values against hand computation (L1 and L2), the WGAN-GP penalty against its analytic value for a
linear critic, and the Eq. 5 weighting from config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from superfan import losses as L
from superfan.config import Config, load_config
from superfan.errors import ConfigError


class LinearCritic(nn.Module):
    """D(x) = <w, x> + b: its gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.flatten() + self.b


class TwoLevels(nn.Module):
    """A fixed two-level feature extractor: [x, 2x]."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, 2 * x]


@pytest.mark.parametrize(("type", "expected"), [("l2", (1 + 4 + 9 + 0) / 4), ("l1", (1 + 2 + 3 + 0) / 4)])
def test_pixel_loss(type: str, expected: float) -> None:
    hr = torch.zeros(1, 1, 2, 2)
    sr = torch.tensor([1.0, -2.0, 3.0, 0.0]).view(1, 1, 2, 2)
    assert L.pixel_loss(sr, hr, type).item() == pytest.approx(expected)


def test_unknown_loss_type_is_a_config_error() -> None:
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ConfigError, match="pixel"):
        L.pixel_loss(x, x, "huber")
    with pytest.raises(ConfigError, match="heatmap"):
        L.heatmap_loss([x], x, "l3")


def test_perceptual_loss_sums_level_mses_and_only_sr_gets_gradients() -> None:
    sr = torch.tensor([1.0, 2.0, 0.0, 0.0]).view(1, 1, 2, 2).requires_grad_(True)
    hr = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = L.perceptual_loss(TwoLevels(), sr, hr)
    # level 1: (1 + 4) / 4; level 2: (4 + 16) / 4
    assert loss.item() == pytest.approx(5 / 4 + 20 / 4)
    loss.backward()
    assert sr.grad is not None and hr.grad is None


def test_perceptual_loss_with_the_resnet(monkeypatch: pytest.MonkeyPatch) -> None:
    from superfan.models import PerceptualNet
    from superfan.models import perceptual as perceptual_mod

    monkeypatch.setattr(perceptual_mod, "_warned_random", True)
    net = PerceptualNet(layers=("layer1", "layer2"))
    hr = torch.rand(2, 3, 64, 64)
    assert L.perceptual_loss(net, hr.clone(), hr).item() == 0.0
    sr = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss = L.perceptual_loss(net, sr, hr)
    loss.backward()
    assert loss.item() > 0 and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def _heatmaps() -> tuple[torch.Tensor, torch.Tensor]:
    """Target with one non-zero pixel per landmark, value v[b, n]; prediction all zeros."""
    v = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])  # (B=2, N=3)
    target = torch.zeros(2, 3, 4, 4)
    target[:, :, 1, 2] = v
    target[:, :, 3, 0] = v  # two pixels each, so the pixel *sum* matters
    return torch.zeros_like(target), target


@pytest.mark.parametrize(
    ("type", "per_face"),
    [
        ("l2", [2 * (1 + 4 + 9) / 3, 2 * (0.25 + 0 + 1) / 3]),
        ("l1", [2 * (1 + 2 + 3) / 3, 2 * (0.5 + 0 + 1) / 3]),
    ],
)
def test_heatmap_loss_sums_pixels_averages_landmarks_and_faces(type: str, per_face: list[float]) -> None:
    pred, target = _heatmaps()
    one = sum(per_face) / 2
    assert L.heatmap_loss([pred], target, type).item() == pytest.approx(one)
    assert L.heatmap_loss(pred, target, type).item() == pytest.approx(one)  # a bare tensor is one stack
    assert L.heatmap_loss([pred, pred], target, type).item() == pytest.approx(2 * one)  # summed over stacks
    assert L.heatmap_loss([target.clone(), pred], target, type).item() == pytest.approx(one)
    mask = torch.tensor([False, True])
    assert L.heatmap_loss([pred], target, type, mask=mask).item() == pytest.approx(per_face[1])


def test_heatmap_loss_with_no_annotated_face_is_a_connected_zero() -> None:
    pred, target = _heatmaps()
    pred.requires_grad_(True)
    loss = L.heatmap_loss([pred], target, mask=torch.tensor([False, False]))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="target"):
        L.heatmap_loss([pred[:, :2]], target)


@pytest.mark.parametrize("gp_lambda", [1.0, 10.0])
def test_gradient_penalty_matches_analytic_value_for_a_linear_critic(gp_lambda: float) -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4) * 0.3
    critic = LinearCritic(w, 0.7)
    real, fake = torch.rand(6, 3, 4, 4), torch.rand(6, 3, 4, 4)
    gp = L.gradient_penalty(critic, real, fake, gp_lambda)
    expected = gp_lambda * (w.norm() - 1) ** 2
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)
    gp.backward()  # create_graph=True: the penalty trains the critic; d/dw = 2 lambda (||w|| - 1) w / ||w||
    torch.testing.assert_close(critic.w.grad, 2 * gp_lambda * (w.norm() - 1) * w / w.norm())


def test_critic_and_generator_losses_for_a_linear_critic() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4) * 0.3
    critic = LinearCritic(w, -0.2)
    real, fake = torch.rand(6, 3, 4, 4), torch.rand(6, 3, 4, 4)
    d_real = (real.flatten(1) @ w.flatten() - 0.2).mean()
    d_fake = (fake.flatten(1) @ w.flatten() - 0.2).mean()
    gp = (w.norm() - 1) ** 2
    loss, stats = L.critic_loss(critic, real, fake.requires_grad_(True), gp_lambda=10.0)
    assert loss.item() == pytest.approx((d_fake - d_real + 10 * gp).item(), rel=1e-5)
    assert stats["wasserstein"].item() == pytest.approx((d_real - d_fake).item(), rel=1e-5)
    assert stats["gp"].item() == pytest.approx(gp.item(), rel=1e-5)
    loss.backward()
    assert fake.grad is None  # the critic step never trains the generator
    g = L.generator_adversarial_loss(critic, fake)
    assert g.item() == pytest.approx(-d_fake.item(), rel=1e-5)


def test_weighted_total_is_eq5_over_the_terms_present() -> None:
    cfg = load_config(
        None,
        {
            "losses.pixel.weight": 2.0,
            "losses.perceptual.weight": 0.5,
            "losses.heatmap.weight": 0.25,
            "losses.adversarial.weight": 0.1,
        },
    )
    t = {k: torch.tensor(v) for k, v in {"pixel": 1.0, "perceptual": 2.0, "heatmap": 4.0, "adversarial": -3.0}.items()}
    assert L.weighted_total(t, cfg.losses).item() == pytest.approx(2 + 1 + 1 - 0.3)
    assert L.weighted_total(t, cfg).item() == pytest.approx(2 + 1 + 1 - 0.3)  # the whole config works too
    assert L.weighted_total({"pixel": t["pixel"]}, cfg.losses).item() == pytest.approx(2.0)
    assert L.weighted_total({"heatmap": t["heatmap"]}, Config().losses).item() == pytest.approx(4 * 0.01)
    with pytest.raises(KeyError, match="unknown"):
        L.weighted_total({"pixl": t["pixel"]}, cfg.losses)
    with pytest.raises(ValueError):
        L.weighted_total({}, cfg.losses)


def test_smooth_gradient_keeps_the_value_and_removes_the_period_2_grid_from_the_gradient() -> None:
    from superfan.losses import binomial_blur, smooth_gradient

    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    y = smooth_gradient(x)
    assert torch.equal(y, x)
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((-1.0) ** (yy + xx)).expand(2, 3, 16, 16)
    (y * checker).sum().backward()  # d/dx = the checkerboard itself, without the smoothing
    assert x.grad.abs().max() < 1e-6
    flat = torch.ones(1, 1, 8, 8)
    torch.testing.assert_close(binomial_blur(flat), flat)  # DC passes unchanged (reflect padding)
