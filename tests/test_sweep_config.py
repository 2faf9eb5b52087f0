"""The sweep file and its search grammar, without Ray: what each spec becomes, and one error line per mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from superfan.config import load_config
from superfan.errors import ConfigError
from sweeps.cli import build_parser, main, plan
from sweeps.settings import Sweep, SweepSettings, read_sweep_file
from sweeps.space import decode, default_point, encode, fixed_values, layouts, resolve_space, trial_config, tune_space

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "sweeps" / "configs"


@pytest.fixture(scope="module")
def base() -> dict:
    """The tiny profile as a config dict (what resolve_space checks specs against)."""
    return load_config("tiny").to_dict()


def _section(tmp_path: Path, body: str, kind: str = "loss_weights") -> dict:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: tiny\n{body}\n")
    return read_sweep_file(str(path)).section(kind)


def _space(tmp_path: Path, body: str, base: dict, kind: str = "loss_weights") -> dict:
    return resolve_space(_section(tmp_path, body, kind), base, f"x.yaml: search.{kind}")


def _error(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(f"base: tiny\n{body}\n")
    with pytest.raises(ConfigError) as err:
        read_sweep_file(str(path))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


# ------------------------------------------------------------------------------------------ the grammar


def test_around_is_value_over_and_times_the_factor(tmp_path: Path, base: dict) -> None:
    space = _space(tmp_path, "search: {loss_weights: {losses.heatmap.weight: {type: loguniform, around: 10}}}", base)
    value = base["losses"]["heatmap"]["weight"]
    spec = space["losses.heatmap.weight"]
    assert spec == {"type": "loguniform", "low": pytest.approx(value / 10), "high": pytest.approx(value * 10)}


def test_low_high_uniform_and_int(tmp_path: Path, base: dict) -> None:
    body = """search:
  augmentation:
    augment.strength: {type: loguniform, low: 0.1, high: 2}
    degrade.blur_prob: {type: uniform, low: 0.0, high: 0.8}
    data.batch_size: {type: int, low: 1, high: 64}"""
    space = _space(tmp_path, body, base, "augmentation")
    assert space["augment.strength"] == {"type": "loguniform", "low": 0.1, "high": 2.0}
    assert space["degrade.blur_prob"] == {"type": "uniform", "low": 0.0, "high": 0.8}
    assert space["data.batch_size"] == {"type": "int", "low": 1, "high": 64}
    domains = tune_space(space)
    assert (domains["data.batch_size"].lower, domains["data.batch_size"].upper) == (1, 65)  # high is inclusive
    assert (domains["augment.strength"].lower, domains["augment.strength"].upper) == (0.1, 2.0)


def test_choice_gains_the_configs_value_first_and_encodes_lists(tmp_path: Path, base: dict) -> None:
    body = """search:
  augmentation:
    degrade.blur_kernel: {type: choice, values: [[3, 5], [5, 7]]}
    degrade.blur_on: {type: choice, values: [lr, hr]}"""
    space = _space(tmp_path, body, base, "augmentation")
    own = encode(base["degrade"]["blur_kernel"])
    assert own not in ("3-5", "5-7")  # the test is about a value the choice lacks
    assert space["degrade.blur_kernel"]["values"] == [own, "3-5", "5-7"]
    assert space["degrade.blur_on"]["values"] == ["lr", "hr"]  # already there: not added twice
    point = default_point(space, base)
    assert point == {"degrade.blur_kernel": own, "degrade.blur_on": base["degrade"]["blur_on"]}


def test_layouts_become_a_choice_with_the_configs_layout(tmp_path: Path, base: dict) -> None:
    body = "search: {block_layouts: {model.generator.layout: {type: layouts, total: [8, 9], max: [8, 3, 2]}}}"
    values = _space(tmp_path, body, base, "block_layouts")["model.generator.layout"]["values"]
    assert encode(base["model"]["generator"]["layout"]) in values  # the config's layout (inserted first if new)
    assert all(8 <= sum(decode(v)) <= 9 for v in values[1:])
    assert len(values) == len(set(values))


def test_layouts_budget_caps_and_include() -> None:
    found = layouts([4, 5], max_blocks=[3, 2, 1], include=[[12, 3, 2], [2, 1, 1]])
    assert [2, 1, 1] in found and found.count([2, 1, 1]) == 1  # an included layout already inside the rule
    assert found[-1] == [12, 3, 2]
    rule = [x for x in found if x != [12, 3, 2]]
    assert all(4 <= sum(x) <= 5 and x[0] <= 3 and x[1] <= 2 and x[2] <= 1 and min(x) >= 1 for x in rule)
    assert sorted(rule) == [[1, 2, 1], [2, 1, 1], [2, 2, 1], [3, 1, 1]]
    assert [0, 0, 4] in layouts([4], min_blocks=0)  # min 0 allows empty levels; one number is the exact total


def test_fixed_values_are_overrides_not_searched(tmp_path: Path, base: dict) -> None:
    section = _section(
        tmp_path,
        "search: {augmentation: {degrade.real_world: true, degrade.blur_prob: {type: uniform, low: 0, high: 1}}}",
        "augmentation",
    )
    assert fixed_values(section) == {"degrade.real_world": True}
    assert list(resolve_space(section, base, "x")) == ["degrade.blur_prob"]


def test_encode_decode_round_trip() -> None:
    for value in ([12, 3, 2], [16, 0, 0], [30, 90], [0.5, 1.5]):
        assert decode(encode(value)) == value
    for value in ("lr", "hr", 0.3, 4, True, "a-b"):
        assert decode(encode(value)) == value


def test_trial_config_decodes_list_choices(base: dict) -> None:
    cfg = trial_config(base, {"model.generator.layout": "2-1-1", "losses.heatmap.weight": 0.5})
    assert list(cfg.model.generator.layout) == [2, 1, 1] and cfg.losses.heatmap.weight == 0.5


def test_the_configs_value_outside_the_range_is_an_error(tmp_path: Path, base: dict) -> None:
    with pytest.raises(ConfigError, match=r"x.yaml: search.loss_weights.losses.pixel.weight: the config's value "):
        _space(tmp_path, "search: {loss_weights: {losses.pixel.weight: {type: uniform, low: 2, high: 3}}}", base)
    with pytest.raises(ConfigError, match=r"search.loss_weights: 'losses.pixel.wait' is not a config field"):
        _space(tmp_path, "search: {loss_weights: {losses.pixel.wait: {type: uniform, low: 0, high: 3}}}", base)
    zero = {**base, "losses": {**base["losses"], "heatmap": {**base["losses"]["heatmap"], "weight": 0.0}}}
    with pytest.raises(ConfigError, match=r"'around' needs a positive config value"):
        _space(tmp_path, "search: {loss_weights: {losses.heatmap.weight: {type: loguniform, around: 10}}}", zero)


# ------------------------------------------------------------------------------------- the sweep file


KEY = "search.loss_weights.losses.pixel.weight"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{type: uniform, high: 2}", f"{KEY}: 'low' is required for type uniform"),
        ("{type: int, low: 1}", f"{KEY}: 'high' is required for type int"),
        ("{type: loguniform, high: 2}", f"{KEY}: 'low' is required for type loguniform (or give 'around')"),
        ("{type: loguniform, around: 0.5}", f"{KEY}: 'around' must be a factor > 1 (got 0.5)"),
        ("{type: loguniform, low: 0, high: 2}", f"{KEY}: loguniform needs 0 < low < high (got 0, 2)"),
        ("{type: uniform, low: 3, high: 2}", f"{KEY}: uniform needs low < high (got 3, 2)"),
        ("{type: uniform, low: abc, high: 2}", f"{KEY}.low: Input should be a valid number"),
        ("{type: uniform, low: 0, high: 2, step: 1}", f"{KEY}.step: unknown key (known: type, low, high)"),
        ("{type: normal, low: 0, high: 2}", f"{KEY}: unknown type 'normal' (known: loguniform, uniform, int,"),
        ("{low: 0, high: 2}", f"{KEY}: a spec needs a 'type'"),
        ("{type: choice, values: []}", f"{KEY}.values: List should have at least 1 item"),
    ],
)
def test_spec_errors_are_one_line_naming_the_field(tmp_path: Path, spec: str, message: str) -> None:
    assert _error(tmp_path, f"search: {{loss_weights: {{losses.pixel.weight: {spec}}}}}").startswith(message)


def test_layouts_errors(tmp_path: Path) -> None:
    key = "search.block_layouts.model.generator.layout"
    got = _error(tmp_path, "search: {block_layouts: {model.generator.layout: {type: layouts, total: [8], max: [8]}}}")
    assert got.startswith(f"{key}.max: List should have at least 3 items")
    got = _error(tmp_path, "search: {block_layouts: {model.generator.layout: {type: layouts, max: [8, 3, 2]}}}")
    assert got == f"{key}: 'total' is required for type layouts"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sweep: {sampels: 3}", "sweep.sampels: unknown key (known: samples, metric, mode,"),
        ("sweep: {samples: many}", "sweep.samples: Input should be a valid integer"),
        ("sweep: {samples: 0}", "sweep.samples: Input should be greater than or equal to 1"),
        ("sweep: {mode: maximize}", "sweep.mode: Input should be 'max' or 'min'"),
        ("search: {loss_weight: {}}", "search.loss_weight: unknown key (known: loss_weights, block_layouts,"),
        ("foo: 1", "foo: unknown key (a sweep file has base, sweep, search and config sections: profile,"),
    ],
)
def test_settings_and_top_level_errors(tmp_path: Path, body: str, message: str) -> None:
    assert _error(tmp_path, body).startswith(message)


def test_the_script_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("base: tiny\nsearch: {loss_weights: {losses.pixel.weight: {type: uniform, high: 2}}}\n")
    assert main("loss_weights", "test", ["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"sweeps/loss_weights.py: error: {path}: {KEY}: 'low' is required for type uniform\n"


def test_command_line_settings_are_validated_and_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main("loss_weights", "test", ["--config", str(CONFIGS / "tiny.yaml"), "--samples", "0"]) == 2
    assert capsys.readouterr().err.startswith("sweeps/loss_weights.py: error: --samples: Input should be greater")


def test_a_missing_section_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("base: tiny\nsearch: {augmentation: {degrade.real_world: true}}\n")
    with pytest.raises(ConfigError, match=r"search: has no 'loss_weights' section"):
        read_sweep_file(str(path)).section("loss_weights")


# ------------------------------------------------------------------------------- the shipped sweep files


@pytest.mark.parametrize("name", ["tiny.yaml", "paper.yaml"])
@pytest.mark.parametrize("kind", ["loss_weights", "block_layouts", "augmentation"])
def test_shipped_sweep_files_plan(name: str, kind: str) -> None:
    args = build_parser(kind, "test").parse_args(
        ["--config", str(CONFIGS / name), "--storage", "/tmp/sweep-plan-test", "model.perceptual_weights=random"]
    )
    sweep = plan(kind, args)
    assert sweep.space and sweep.total_epochs > 0
    point = default_point(sweep.space, sweep.config)
    for key, spec in sweep.space.items():  # the config's own values are a valid first point
        if spec["type"] == "choice":
            assert point[key] in spec["values"]
        else:
            assert spec["low"] <= point[key] <= spec["high"]
    if kind == "loss_weights":  # alpha stays at 1: only the ratios to it are searched
        assert set(sweep.space) == {
            "losses.perceptual.weight", "losses.heatmap.weight", "losses.adversarial.weight", "losses.landmark.weight"
        }  # fmt: skip
        assert sweep.config.losses.pixel.weight == 1.0


def test_sweep_json_round_trips_and_reads_the_old_format() -> None:
    args = build_parser("loss_weights", "test").parse_args(["--config", str(CONFIGS / "tiny.yaml"), "--seed", "7"])
    sweep = plan("loss_weights", args)
    again = Sweep.from_json(sweep.to_json())
    assert again == sweep and again.settings.seed == 7 and isinstance(again.settings, SweepSettings)
    # A sweep.json written before SweepSettings was a pydantic model (dataclasses.asdict): still read.
    old = json.loads(sweep.to_json())
    old["settings"] = {
        "samples": 2, "metric": "val_auc_balanced", "mode": "max", "multi_objective": False,
        "secondary_metric": "val_psnr", "stages": None, "epochs": {"heatmap": 4, "gan": 1, "end2end": 1},
        "teacher_epochs": 20, "grace_period": 2, "reduction_factor": 2, "workers_per_trial": None,
        "max_concurrent": None, "keep_checkpoints": 2, "promote_stages": None, "trial_memory_gb": 0.25,
        "seed": 0, "synthetic_train": 512, "synthetic_val": 128,
    }  # fmt: skip
    settings = Sweep.from_json(json.dumps(old)).settings
    assert settings.epochs == {"heatmap": 4, "gan": 1, "end2end": 1} and settings.samples == 2


def test_total_epochs_counts_the_selected_stages() -> None:
    args = build_parser("loss_weights", "test").parse_args(["--config", str(CONFIGS / "tiny.yaml"), "--epochs", "3"])
    sweep = plan("loss_weights", args)
    assert sweep.total_epochs == 3 * len(sweep.stages)
