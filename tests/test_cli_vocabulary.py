"""One vocabulary across ``superfan``, ``python -m shards`` and the sweep scripts: the same ``--version``,
a description and an example in every command's help, defaults shown, and old flag spellings that still
work with a one-line warning."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from shards.__main__ import build_parser as shards_parser
from superfan.cli import build_parser as superfan_parser
from superfan.cliargs import version
from sweeps.cli import CONFIGS_DIR
from sweeps.cli import build_parser as sweep_parser

REPO = Path(__file__).resolve().parents[1]
SWEEP_KINDS = ("loss_weights", "block_layouts", "augmentation")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    out = {"superfan": superfan_parser(), "python -m shards": shards_parser()}
    for kind in SWEEP_KINDS:
        out[f"sweeps/{kind}.py"] = sweep_parser(kind, "a sweep")
    return out


def _walk(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _walk(sub)


def test_every_command_prints_the_same_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert version().startswith("superfan ") and version() != "superfan unknown"
    for name, parser in _parsers().items():
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["--version"])
        assert exit_.value.code == 0, name
        assert capsys.readouterr().out.strip() == version(), name


def test_the_installed_entry_points_print_the_version() -> None:
    for cmd in ([sys.executable, "-m", "superfan.cli", "--version"], [sys.executable, "-m", "shards", "--version"],
                [sys.executable, "sweeps/loss_weights.py", "--version"]):  # fmt: skip
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0 and proc.stdout.strip() == version(), (cmd, proc.stdout, proc.stderr)


def test_every_command_and_subcommand_has_a_description_and_an_example() -> None:
    for name, top in _parsers().items():
        for parser in _walk(top):
            assert parser.description and parser.description.strip(), f"{name}: {parser.prog} has no description"
            assert parser.epilog and "examples:" in parser.epilog, f"{name}: {parser.prog} has no example"
            help_text = parser.format_help()
            assert "examples:\n  " in help_text, parser.prog  # the epilog's layout survives the formatter


def test_defaults_are_shown() -> None:
    text = shards_parser()._subparsers._group_actions[0].choices["pack"].format_help()  # type: ignore[union-attr]
    assert "samples per shard (default: 1000)" in " ".join(text.split())
    text = " ".join(sweep_parser("loss_weights", "x").format_help().split())
    assert "(default: ./.superfan)" in text


def test_sweeps_take_a_profile_name_or_a_path_for_config() -> None:
    parser = sweep_parser("loss_weights", "x")
    assert parser.parse_args(["--config", "paper"]).config == str(CONFIGS_DIR / "paper.yaml")
    assert parser.parse_args(["--config", "tiny"]).config == str(CONFIGS_DIR / "tiny.yaml")
    assert parser.parse_args(["--config", "my/own.yaml"]).config == "my/own.yaml"
    assert parser.parse_args([]).config == str(CONFIGS_DIR / "tiny.yaml")


@pytest.mark.parametrize(
    ("parser", "old", "new", "dest", "value"),
    [
        ("shards", ["--profile", "45,75"], ["--yaws", "45,75"], "profile", "45,75"),
        ("shards", ["--workers", "3"], ["--pack-workers", "3"], "workers", 3),
        ("shards", ["--quiet"], ["--no-progress"], "quiet", True),
        ("train", ["--workers", "2"], ["--train-workers", "2"], "workers", 2),
        ("train", ["--out", "runs"], ["--storage", "runs"], "storage", "runs"),
        ("sweep", ["--workers-per-trial", "2"], ["--train-workers", "2"], "workers_per_trial", 2),
        ("bench-train", ["--profile", "paper"], ["--config", "paper"], "profile", "paper"),
        ("bench-data", ["--workers", "1"], ["--loader-workers", "1"], "workers", "1"),
        ("bench-data", ["--samples", "99"], ["--stream-samples", "99"], "samples", 99),
        ("evaluate", ["--samples", "4"], ["--grid-faces", "4"], "samples", 4),
        ("bench-models", ["--json", "b.json"], ["--json-out", "b.json"], "json", "b.json"),
    ],
)
def test_old_spellings_work_with_a_one_line_warning(
    parser: str, old: list[str], new: list[str], dest: str, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    def parse(flags: list[str]) -> argparse.Namespace:
        if parser == "shards":
            return shards_parser().parse_args(["pack", "300w", "src", "dest", "--split", "train", *flags])
        if parser == "sweep":
            return sweep_parser("loss_weights", "x").parse_args(flags)
        argv = {"train": ["train", "fan"], "bench-train": ["bench", "train"], "bench-data": ["bench", "data"],
                "bench-models": ["bench", "models"],
                "evaluate": ["evaluate", "--data", "d", "--fan", "t"]}[parser]  # fmt: skip
        return superfan_parser().parse_args([*argv, *flags])

    new_args = parse(new)
    assert getattr(new_args, dest) == value
    assert capsys.readouterr().err == ""
    old_args = parse(old)
    assert getattr(old_args, dest) == value and vars(old_args) == vars(new_args)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{old[0]} is deprecated, use {new[0]}" in err[0], err


def test_deprecated_spellings_are_hidden_from_help() -> None:
    pack = shards_parser()._subparsers._group_actions[0].choices["pack"]  # type: ignore[union-attr]
    text = pack.format_help()
    assert "--yaws" in text and "--pack-workers" in text and "--no-progress" in text
    assert "--profile " not in text and "--workers" not in text.replace("--pack-workers", "")
