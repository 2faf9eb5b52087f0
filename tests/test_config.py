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
    cfg = load_config(None, {"losses.heatmap.type": "l1", "model.generator.layout": [16, 1, 1]})
    again = from_dict(cfg.to_dict())
    assert again == cfg
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
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
