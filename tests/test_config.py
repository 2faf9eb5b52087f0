"""Config: the paper's defaults, YAML/profile loading, overrides, and one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from superfan.config import Config, from_dict, load_config
from superfan.errors import ConfigError


def test_paper_defaults() -> None:
    cfg = Config()
    assert cfg.model.generator.layout == (12, 3, 2)
    assert cfg.model.fan.stacks == 2
    assert cfg.augment.face_height == 50
    assert cfg.augment.scale == (0.85, 1.15) and cfg.augment.rotation_deg == 30
    assert cfg.losses.adversarial.gp_lambda == 10
    assert cfg.eval.auc_threshold == 0.1
    assert [(s.kind, s.epochs) for s in cfg.stages] == [("heatmap", 60), ("gan", 5), ("end2end", 5)]
    first = cfg.stages[0]
    assert (first.lr_start, first.lr_end) == (2.5e-4, 1e-5)
    assert cfg.stages[2].lr_decay == "constant"  # end-to-end "with a learning rate of 2.5e-4"


def test_round_trip_through_dict_and_yaml(tmp_path: Path) -> None:
    overrides = {"losses.heatmap.type": "l1", "model.generator.layout": [16, 1, 1]}
    cfg = load_config(None, {**overrides, "model.perceptual_weights": "random"})
    again = from_dict(cfg.to_dict())
    assert again == cfg
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())  # profile: paper, so it needs perceptual weights or 'random' to load
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"losses.pixel.weight": -1}, "losses.pixel.weight"),
        ({"model.generator.layout": [12, -3, 2]}, "model.generator.layout.1"),
        ({"losses.heatmap.type": "l3"}, "losses.heatmap.type"),
        ({"augment.scale": [1.2, 0.8]}, "augment.scale"),
        ({"degrade.blur_kernel": [4, 7]}, "degrade.blur_kernel"),
        ({"optimizer.nesterov": True}, "optimizer.nesterov"),
        ({"stages": [{"name": "a", "kind": "gan", "epochs": 1, "init_from": "b"}]}, "stage 'a'"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_field(override: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    msg = str(err.value)
    assert field in msg and "\n" not in msg


def test_cli_style_overrides_and_base_inheritance(tmp_path: Path) -> None:
    cfg = load_config(None, ["losses.perceptual.weight=0.5", "augment.strength=0"])
    assert cfg.losses.perceptual.weight == 0.5 and cfg.augment.strength == 0
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["nonsense"])
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: tiny\nsearch: {losses.pixel.weight: [0.1, 10]}\nlosses: {pixel: {weight: 2.0}}\n")
    cfg = load_config(str(sweep))
    assert cfg.profile == "tiny" and cfg.losses.pixel.weight == 2.0


def test_unknown_profile_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="unknown config profile"):
        load_config("no-such-profile")
    with pytest.raises(ConfigError, match="not found"):
        load_config("/no/such/file.yaml")


def test_paper_profile_refuses_to_train_without_perceptual_weights(tmp_path: Path) -> None:
    """Without ImageNet weights Eq. 2 is a random-projection loss: the paper profile must be told which."""
    with pytest.raises(ConfigError) as err:
        load_config("paper")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("profile paper: model.perceptual_weights is unset")
    assert "ResNet-50" in msg and "'random'" in msg
    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "configs" / "paper.yaml"
    with pytest.raises(ConfigError, match=r"profile paper \(.*paper.yaml\): model.perceptual_weights is unset"):
        load_config(str(sweep))  # base: paper; the sweep command has to pass the weights
    assert load_config(str(sweep), ["model.perceptual_weights=random"]).model.perceptual_weights == "random"
    weights = load_config("paper", {"model.perceptual_weights": str(tmp_path / "resnet50.pth")})
    assert weights.model.perceptual_weights.endswith("resnet50.pth")  # the file is read when the net is built
    # only for runs: evaluation, `superfan config`, benchmarks, defaults and saved checkpoints' configs load
    assert load_config("paper", for_training=False).model.perceptual_weights is None
    assert load_config(None).profile == "paper" and from_dict(load_config("paper", for_training=False).to_dict())
    # tiny keeps random features by default (with the loud warning when the net is built)
    assert load_config("tiny").model.perceptual_weights is None


def test_config_cli_shows_a_refused_config_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    from superfan.cli import main

    assert main(["config", "paper", "degrade.real_world=true"]) == 0
    out = capsys.readouterr()
    assert "real_world: true" in out.out and "perceptual_weights: null" in out.out
    assert "would refuse" in out.err and "model.perceptual_weights is unset" in out.err
    assert main(["config", "paper", "model.perceptual_weights=random"]) == 0
    assert "refuse" not in capsys.readouterr().err


def test_overrides_address_stages_by_index_or_name() -> None:
    cfg = load_config("tiny", ["stages.0.epochs=40", "stages.pixel.lr_start=1e-3"])
    assert cfg.stages[0].epochs == 40 and cfg.stage("pixel").lr_start == 1e-3
    for bad, says in ((["stages.9.epochs=1"], "no item '9'"), (["stages.epochs=3"], "stages is a list")):
        with pytest.raises(ConfigError, match=says):
            load_config("tiny", bad)
