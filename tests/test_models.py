"""The Super-FAN networks: shapes for every layout, exact parameter counts, FAN heatmap sizes, the
critic's score, and the frozen perceptual ResNet-50 (random-feature warning, loading a saved state dict).

Widths are tiny wherever the architecture, not the size, is under test, so the file runs in seconds on CPU.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from superfan.config import Config, load_config
from superfan.errors import ConfigError
from superfan.models import FAN, Critic, Generator, PerceptualNet, count_parameters
from superfan.models import perceptual as perceptual_mod


def _generator_params(layout: tuple[int, int, int], c: int, long_skip: bool) -> int:
    """Parameter count from the architecture's definition, to cross-check the module."""
    block = 2 * 9 * c * c + 2 * 2 * c  # two bias-free 3x3 convs + two BNs
    fuse = 9 * c * c + 2 * c  # long skip's conv-BN, only around non-empty groups
    head, up, tail = 9 * 3 * c + c, 9 * c * 4 * c + 4 * c, 9 * c * 3 + 3
    groups = sum(n * block + (fuse if long_skip and n else 0) for n in layout)
    return head + 2 * up + tail + groups


# ------------------------------------------------------------------------------------------- generator


@pytest.mark.parametrize(
    ("layout", "long_skip"),
    [((0, 0, 0), False), ((1, 0, 0), False), ((0, 1, 0), False), ((0, 0, 1), True), ((2, 1, 1), True)],
)
def test_generator_any_layout_maps_16_to_64(layout: tuple[int, int, int], long_skip: bool) -> None:
    g = Generator(layout=layout, channels=8, long_skip=long_skip)
    out = g(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 3, 64, 64)
    assert count_parameters(g) == _generator_params(layout, 8, long_skip)


@pytest.mark.parametrize(
    ("build", "params"),
    [
        (lambda: Generator(layout=(12, 3, 2)), 1_556_675),
        (lambda: Generator(layout=(16, 1, 1)), 1_630_659),
        (lambda: Generator(layout=(12, 3, 2), long_skip=True), 1_667_651),
        (Generator.srresnet, 1_519_683),
    ],
    ids=["12-3-2", "layout-16-1-1", "12-3-2-skip", "srresnet"],
)
def test_paper_generators_shapes_and_parameter_counts(build, params: int) -> None:
    g = build().eval()
    assert count_parameters(g) == params
    with torch.no_grad():
        assert g(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)


def test_srresnet_is_16_blocks_in_one_long_skip_and_round_trips_through_config() -> None:
    g = Generator.srresnet()
    assert (g.layout, g.long_skip) == ((16, 0, 0), True)
    assert g.body16.fuse is not None and g.body32.fuse is None and g.body64.fuse is None
    cfg = load_config(None, {"model.generator.layout": [16, 0, 0], "model.generator.long_skip": True})
    rebuilt = Generator.from_config(cfg.model.generator)
    rebuilt.load_state_dict(g.state_dict())  # same architecture, so a checkpoint rebuilds it


def test_empty_group_with_long_skip_is_the_identity() -> None:
    g = Generator(layout=(0, 0, 0), channels=4, long_skip=True)
    x = torch.rand(1, 4, 16, 16)
    assert torch.equal(g.body16(x), x)


def test_generator_from_config_and_bad_layouts() -> None:
    g = Generator.from_config(Config().model.generator)
    assert (g.layout, g.channels, g.long_skip) == ((12, 3, 2), 64, False)
    tiny = Generator.from_config(load_config("tiny").model.generator)
    assert (tiny.layout, tiny.channels) == ((6, 2, 1), 32)
    with pytest.raises(ConfigError, match="layout"):
        Generator(layout=(1, -1, 0))
    with pytest.raises(ConfigError, match="layout"):
        Generator(layout=(1, 1))  # type: ignore[arg-type]


def test_generator_gradients_reach_every_parameter() -> None:
    g = Generator(layout=(1, 1, 1), channels=8, long_skip=True)
    g(torch.rand(2, 3, 16, 16)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())


def _shuffled_convs(g: nn.Module) -> list[tuple[nn.Module, nn.PixelShuffle]]:
    """(module just before, PixelShuffle) for every PixelShuffle of ``g``, found without the generator's code."""
    out = []
    for seq in g.modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq)
            out += [(kids[i - 1], k) for i, k in enumerate(kids) if isinstance(k, nn.PixelShuffle) and i > 0]
    return out


@pytest.mark.parametrize("build", [lambda: Generator(layout=(2, 1, 1), channels=8), Generator.srresnet])
def test_fresh_generator_sub_pixel_convs_are_icnr(build) -> None:
    """ICNR (Aitken et al. 2017): the r*r sub-kernels of every shuffled output channel start equal, so
    conv + PixelShuffle is nearest-neighbour upsampling of one conv: no checkerboard at initialisation."""
    torch.manual_seed(0)
    g = build()
    shuffles = _shuffled_convs(g)
    assert len(shuffles) == 2 == sum(isinstance(m, nn.PixelShuffle) for m in g.modules())
    for conv, ps in shuffles:
        assert isinstance(conv, nn.Conv2d)
        r2 = ps.upscale_factor**2
        w = conv.weight.detach().view(conv.out_channels // r2, r2, *conv.weight.shape[1:])
        assert torch.equal(w, w[:, :1].expand_as(w))  # equal across the r*r sub-kernels of each channel
        assert not torch.equal(w[0, 0], w[1, 0])  # but independent across output channels
        assert conv.bias is None or not conv.bias.any()
        assert w.std().item() == pytest.approx((2 / (conv.in_channels * 9)) ** 0.5, rel=0.25)  # Kaiming scale
        # the block really is nearest-neighbour upsampling of one convolution
        x = torch.rand(1, conv.in_channels, 5, 5)
        with torch.no_grad():
            single = F.conv2d(x, w[:, 0], None if conv.bias is None else conv.bias[::r2], padding=1)
            torch.testing.assert_close(ps(conv(x)), F.interpolate(single, scale_factor=2, mode="nearest"))
    plain = build()
    plain.reset_parameters(icnr=False)  # the comparison init: independent sub-kernels
    for conv, ps in _shuffled_convs(plain):
        w = conv.weight.detach().view(-1, ps.upscale_factor**2, *conv.weight.shape[1:])
        assert not torch.equal(w, w[:, :1].expand_as(w))


# ---------------------------------------------------------------------------------------------- critic


def test_critic_scores_each_image() -> None:
    c = Critic(channels=8)
    assert c(torch.rand(5, 3, 64, 64)).shape == (5,)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in c.modules())  # WGAN-GP: no batch norm
    assert count_parameters(c) == 44_537
    assert count_parameters(Critic()) == 2_764_737
    with pytest.raises(ValueError, match="64x64"):
        c(torch.rand(1, 3, 32, 32))


# ------------------------------------------------------------------------------------------------- FAN


@pytest.mark.parametrize("heatmap_size", [16, 32, 64])
@pytest.mark.parametrize("stacks", [1, 2])
def test_fan_one_heatmap_tensor_per_stack(stacks: int, heatmap_size: int) -> None:
    fan = FAN(stacks=stacks, features=16, hourglass_depth=2, heatmap_size=heatmap_size)
    out = fan(torch.rand(2, 3, 64, 64))
    assert isinstance(out, list) and len(out) == stacks
    assert all(o.shape == (2, 68, heatmap_size, heatmap_size) for o in out)


def test_fan_parameter_counts_and_face_alignment_names() -> None:
    paper = FAN(stacks=2, features=256)
    assert count_parameters(paper) == 12_106_504
    assert count_parameters(FAN(stacks=1, features=64, hourglass_depth=3)) == 321_860  # tiny profile
    assert count_parameters(FAN(stacks=2, features=16, hourglass_depth=2)) == 33_064
    names = set(paper.state_dict())
    for key in (
        "conv1.weight",
        "conv4.downsample.2.weight",
        "m0.b2_plus_1.conv3.weight",
        "top_m_1.bn1.weight",
        "conv_last0.weight",
        "bn_end1.running_mean",
        "l1.weight",
        "bl0.weight",
        "al0.weight",
    ):
        assert key in names, key
    assert "bl1.weight" not in names  # no remapping after the last stack


def test_fan_from_config_and_bad_shapes() -> None:
    fan = FAN.from_config(load_config("tiny").model.fan)
    assert (fan.stacks, fan.features, fan.hourglass_depth, fan.heatmap_size) == (1, 64, 3, 32)
    with torch.no_grad():
        assert fan.eval()(torch.rand(1, 3, 64, 64))[-1].shape == (1, 68, 32, 32)
    with pytest.raises(ConfigError, match="heatmap_size"):
        FAN(heatmap_size=48)
    with pytest.raises(ConfigError, match="hourglass_depth"):
        FAN(features=16, hourglass_depth=5, heatmap_size=16)
    with pytest.raises(ConfigError, match="divisible by 8"):
        FAN(features=20)


# ------------------------------------------------------------------------------------------ perceptual


@pytest.fixture(scope="module")
def saved_resnet50(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torchvision.models.ResNet]:
    torch.manual_seed(123)
    net = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so loading them is tested too
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(net.state_dict(), path)  # includes layer4 and fc, which must be ignored
    return path, net


def test_perceptual_without_weights_warns_once_and_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perceptual_mod, "_warned_random", False)
    with pytest.warns(UserWarning, match="RANDOM"):
        net = PerceptualNet()
    assert net.pretrained is False and net.weights_source is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PerceptualNet(layers=("layer1",))  # second one in the process is silent


def test_perceptual_random_is_random_features_chosen_knowingly(monkeypatch: pytest.MonkeyPatch) -> None:
    """``weights="random"`` (what the paper profile needs to train without weights): the same random net as
    None, recorded as such, and not warned (None keeps its loud warning)."""
    import warnings

    monkeypatch.setattr(perceptual_mod, "_warned_random", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.manual_seed(0)
        net = PerceptualNet(weights="random", layers=("layer1",))
    assert net.pretrained is False and net.weights_source == "random"
    assert perceptual_mod._warned_random is False  # the None warning is still to come
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM"):
        none = PerceptualNet(layers=("layer1",))
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(net(x)[0], none(x)[0])  # same architecture, same random init


def test_perceptual_is_frozen_and_stays_in_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perceptual_mod, "_warned_random", True)
    net = PerceptualNet()
    parent = nn.Sequential(nn.Conv2d(3, 3, 1), net)
    parent.train()
    assert not net.training and all(not m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    feats = net(x)
    assert [f.shape[1:] for f in feats] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4)]
    sum(f.square().mean() for f in feats).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    assert count_parameters(net) == 8_543_296
    assert not hasattr(PerceptualNet(layers=("layer1",)), "layer2")  # truncated after the deepest layer


def test_perceptual_loads_a_saved_torchvision_state_dict(saved_resnet50) -> None:
    path, ref = saved_resnet50
    net = PerceptualNet(weights=str(path))
    assert net.pretrained is True and net.weights_source == str(path)
    assert PerceptualNet(weights=f"file://{path}", layers=("layer2",)).pretrained
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        h = ref.maxpool(ref.relu(ref.bn1(ref.conv1((x - mean) / std))))
        expected = []
        for layer in (ref.layer1, ref.layer2, ref.layer3):
            h = layer(h)
            expected.append(h)
        got = net(x)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.slow
def test_perceptual_weights_load_from_s3_and_from_a_local_file_named_like_a_url(
    saved_resnet50, s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``s3://`` is read as plain bytes by superfan.storage (never webdataset's gopen), ``torch.load`` with
    ``weights_only=True``; ``pipe:x`` is refused, while a local file of that name is ``./pipe:x``."""
    from superfan import storage

    path, ref = saved_resnet50
    state = torch.load(path, weights_only=True)
    buf = io.BytesIO()
    torch.save({k: v for k, v in state.items() if k.startswith(("conv1.", "bn1.", "layer1."))}, buf)
    storage.write_bytes("s3://superfan/weights/r50-layer1.pth", buf.getvalue())
    net = PerceptualNet(weights="s3://superfan/weights/r50-layer1.pth", layers=("layer1",))
    assert net.pretrained and net.weights_source == "s3://superfan/weights/r50-layer1.pth"
    torch.testing.assert_close(net.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    with pytest.raises(ConfigError, match="cannot load a state dict") as err:
        PerceptualNet(weights="s3://superfan/weights/missing.pth", layers=("layer1",))
    assert "\n" not in str(err.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipe:x").write_bytes(buf.getvalue())
    assert PerceptualNet(weights="./pipe:x", layers=("layer1",)).pretrained
    with pytest.raises(ConfigError, match="a pipe: URL would run a command"):
        PerceptualNet(weights="pipe:x", layers=("layer1",))


def test_perceptual_bad_weights_fail_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file") as err:
        PerceptualNet(weights=str(tmp_path / "missing.pth"))
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load"):
        PerceptualNet(weights=str(junk))
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ConfigError, match="not a torchvision ResNet-50"):
        PerceptualNet(weights=str(other))
    with pytest.raises(ConfigError, match="layers"):
        PerceptualNet(layers=("layer4",))


# ----------------------------------------------------------------------------------------------- bench


def test_bench_models_reports_both_generators_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import json

    from superfan.bench import models as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--batch", "2", "--iters", "1", "--device", "cpu", "--json-out", str(out)])
    assert bench.run(args) == 0
    printed = capsys.readouterr().out
    assert "12-3-2" in printed and "16-1-1" in printed and "ratio" in printed
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["models"]] == ["12-3-2", "16-1-1"]
    assert [r["params"] for r in result["models"]] == [1_556_675, 1_519_683]
    assert result["fan2_params"] == 12_106_504 and result["ratio_12_3_2_over_16_1_1"] > 0


def test_bicubic_residual_generator_starts_as_bicubic_and_learns_on_top() -> None:
    from superfan.evaluate import upsample_bicubic

    g = Generator(layout=(1, 1, 1), channels=8, residual="bicubic")
    lr = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(g(lr).clamp(0, 1), upsample_bicubic(lr))  # the fresh network is the baseline
    F.mse_loss(g(lr), torch.rand(4, 3, 64, 64)).backward()
    assert g.tail.weight.grad.abs().sum() > 0  # the zero output conv still learns
    cfg = load_config("tiny")
    assert cfg.model.generator.residual == "bicubic"
    assert load_config("paper", for_training=False).model.generator.residual == "none"
    assert Generator.from_config(cfg.model.generator).residual == "bicubic"
    with pytest.raises(ConfigError, match="residual"):
        Generator(residual="nearest")


def test_resize_upsampling_has_no_sub_pixel_convs_and_maps_16_to_64() -> None:
    from superfan.models.generator import sub_pixel_convs

    g = Generator(layout=(1, 1, 1), channels=8, upsample="resize")
    assert g(torch.rand(2, 3, 16, 16)).shape == (2, 3, 64, 64)
    assert sub_pixel_convs(g) == [] and len(sub_pixel_convs(Generator(layout=(1, 1, 1), channels=8))) == 2
    with pytest.raises(ConfigError, match="upsample"):
        Generator(upsample="deconv")
