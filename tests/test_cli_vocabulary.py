"""One vocabulary across ``superfan``, ``python -m shards`` and the sweep scripts: the same ``--version``,
a one-line description and an example in every command's help, defaults shown, the same ``--no-progress``,
``--quiet`` and ``--verbose`` in every command (each doing what its help says), and old flag spellings
that still work with a one-line warning."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from shards.__main__ import build_parser as shards_parser
from superfan.cli import build_parser as superfan_parser
from superfan.cliargs import OUTPUT_FLAGS, PROGRESS_ENV, HelpFormatter, leaf_parsers, output, output_flags, version
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


def _leaves() -> list[tuple[str, argparse.ArgumentParser]]:
    return [(name, leaf) for name, top in _parsers().items() for leaf in leaf_parsers(top)]


def test_every_command_and_subcommand_has_a_description_and_an_example() -> None:
    for name, top in _parsers().items():
        for parser in _walk(top):
            assert parser.description and parser.description.strip(), f"{name}: {parser.prog} has no description"
            assert "\n" not in parser.description.strip(), f"{parser.prog}: the description is not one line"
            assert parser.epilog and "examples:" in parser.epilog, f"{name}: {parser.prog} has no example"
            help_text = parser.format_help()
            assert "examples:\n  " in help_text, parser.prog  # the epilog's layout survives the formatter


def test_defaults_are_shown() -> None:
    for name, top in _parsers().items():
        for parser in _walk(top):
            assert issubclass(parser.formatter_class, HelpFormatter), f"{name}: {parser.prog}"  # type: ignore[arg-type]
    shown = 0
    for _, leaf in _leaves():
        text = " ".join(leaf.format_help().split())
        for action in leaf._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
                if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                    continue
                rendered = " ".join(leaf._get_formatter()._get_help_string(action).split())
                assert "default" in rendered.lower(), f"{leaf.prog} {action.option_strings[0]}: default not shown"
                assert rendered.split(" (default:")[0] in text.replace("%%", "%")
                shown += 1
    assert shown >= 30, shown  # the walk found the options
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


# ------------------------------------------------------------------------------ output flags


def test_every_command_takes_the_same_output_flags_with_one_meaning() -> None:
    """Every command that runs something (each leaf: ``superfan train fan``, ``python -m shards verify``,
    ``sweeps/augmentation.py``...) has ``--no-progress``, ``--quiet`` and ``--verbose``, on/off switches with
    the one help text of :data:`superfan.cliargs.OUTPUT_FLAGS`, ``--quiet`` and ``--verbose`` exclusive;
    and no command has another spelling of them."""
    leaves = _leaves()
    assert len(leaves) >= 16, [leaf.prog for _, leaf in leaves]  # 12 superfan, 2 shards, 3 sweeps
    for name, leaf in leaves:
        for flag, help_text in OUTPUT_FLAGS.items():
            action = leaf._option_string_actions.get(flag)
            assert action is not None, f"{leaf.prog} has no {flag}"
            assert action.option_strings == [flag] and action.dest == flag[2:].replace("-", "_"), (leaf.prog, flag)
            assert isinstance(action, argparse._StoreTrueAction) and action.help == help_text, (leaf.prog, flag)
        others = {"-q", "-v", "--silent", "--progress", "--debug", "--no-bar", "--quiet-ray"}
        assert not others & set(leaf._option_string_actions), f"{leaf.prog}: another spelling of an output flag"
        assert leaf.parse_args(_required(name, leaf) + ["--no-progress"]).no_progress is True
        with pytest.raises(SystemExit):
            leaf.parse_args([*_required(name, leaf), "--quiet", "--verbose"])


def _required(name: str, leaf: argparse.ArgumentParser) -> list[str]:
    """Arguments that make ``leaf`` parse (its required positionals and options, with plausible values)."""
    argv: list[str] = []
    for action in leaf._actions:
        if not action.option_strings and action.nargs not in ("?", "*") and action.required is not False:
            argv.append("300w" if action.dest == "format" else "x")
        elif action.option_strings and action.required:
            argv += [action.option_strings[0], "x"]
    return argv


def test_quiet_implies_no_progress_and_is_undone_after_the_command() -> None:
    args = superfan_parser().parse_args(["enhance", "./c", "a.png", "-o", "out", "--quiet"])
    assert args.no_progress is False
    assert output().progress and not output().quiet
    with output_flags(args) as flags:
        assert args.no_progress is True and flags.quiet and not flags.progress and output() == flags
    assert output().progress and not output().quiet


def test_a_ray_worker_takes_no_progress_from_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    from superfan.train.session import FORWARD_ENV

    assert PROGRESS_ENV in FORWARD_ENV  # an attached job's workers get it; an embedded cluster's inherit it
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert not output().progress and not output().quiet


def _pack(tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[str, str]:
    from shards.__main__ import main

    dest = tmp_path / f"pack{len(list(tmp_path.iterdir()))}"
    assert main(["pack", "synthetic", "6", str(dest), "--split", "train", "--pack-workers", "1", *flags]) == 0
    got = capsys.readouterr()
    return got.out, got.err


def test_shards_pack_output_flags_do_what_they_say(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _pack(tmp_path, capsys)
    assert "pack synthetic" in err and out.startswith("packed 6 samples")  # the progress bar, then the summary
    out, err = _pack(tmp_path, capsys, "--no-progress")
    assert "pack synthetic" not in err and out.startswith("packed 6 samples") and "\n  pose" in out
    out, err = _pack(tmp_path, capsys, "--quiet")
    assert "pack synthetic" not in err and out.startswith("packed 6 samples")
    out, err = _pack(tmp_path, capsys, "--verbose")
    assert version() in err and "superfan: INFO" in err and out.startswith("packed 6 samples")
    out, err = _pack(tmp_path, capsys)
    assert "INFO" not in err  # --verbose ended with its command


def _champion_candidate(tmp_path: Path) -> object:
    from superfan.champion import Candidate

    ckpt = tmp_path / "runs" / "t-e1"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.pt").write_bytes(b"x" * 100)
    (ckpt / "config.yaml").write_text("profile: tiny\n")
    metrics = {"val_auc_balanced": 0.3, "val_auc_0_30": 0.4, "val_auc_30_60": 0.3, "val_auc_60_90": 0.2,
               "val_psnr": 21.0, "val_ssim": 0.5, "val_nme": 0.08, "global_epoch": 1}  # fmt: skip
    return Candidate(str(ckpt), metrics, "t")


def test_pull_quiet_prints_the_result_line_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from superfan.champion import promote
    from superfan.cli import main

    promote([_champion_candidate(tmp_path)], str(tmp_path / "store"), "s")  # type: ignore[list-item]
    url = str(tmp_path / "store" / "champions" / "s")
    assert main(["pull", url, str(tmp_path / "a")]) == 0
    loud = capsys.readouterr().out.splitlines()
    assert main(["pull", url, str(tmp_path / "b"), "--quiet"]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(loud) > 3 and any("val_auc_balanced" in line or "AUC" in line for line in loud)
    assert len(quiet) == 1 and quiet[0].startswith("champion s/v0001") and "verified" in quiet[0]
    assert quiet[0].replace(str(tmp_path / "b"), str(tmp_path / "a")) == loud[0]


def test_a_sweeps_quiet_keeps_its_result_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Under --quiet a sweep's informational lines (the trial table, the champion's metrics, cost) go and
    the line naming the champion stays."""
    from sweeps import cli, results
    from sweeps.settings import Sweep, SweepSettings

    sweep = Sweep(kind="loss_weights", name="q", storage=str(tmp_path / "store"), config=None, space={},
                  settings=SweepSettings(), stages=[], teacher=None, config_file="x")  # type: ignore[arg-type]  # fmt: skip
    args = sweep_parser("loss_weights", "x").parse_args(["--quiet"])
    with output_flags(args):
        results.print_results([], sweep)
        cli._print_cost([], sweep)
        champ = results.promote_best([_champion_candidate(tmp_path)], sweep)
    quiet = capsys.readouterr().out.strip().splitlines()
    assert champ is not None and quiet == [f"champion: {champ.url}"], quiet
    results.print_results([], sweep)
    cli._print_cost([], sweep)
    loud = capsys.readouterr().out
    assert "best report of each trial" in loud and "cost: " in loud
