"""The README is the front door: at most 200 lines, every repository path it names exists, and every
command it shows (``superfan ...``, ``python -m shards ...``, ``python sweeps/*.py ...``) is accepted by the
real argument parser, with no deprecated spelling. The commands and paths of the docs/ pages are checked
the same way, and the quick tour's commands run as written against a small finished sweep (slow)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shards.__main__ import build_parser as shards_parser
from superfan.cli import build_parser as superfan_parser
from sweeps.cli import build_parser as sweep_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_LINES = 200
PYTHONS = {"python", "python3", "python3.11"}
SEPARATORS = {"&&", "||", ";", "|", "--"}
#: backticked names that look like paths but are outputs of a run or placeholders, not repository files
NOT_REPO = re.compile(
    r"^(\./)?\.superfan/|^(out|eval|faces|overlays|report|champion|crops|photos|shards)/"
    r"|^cluster/\.(run|env)"  # written by cluster/local.sh up (git-ignored)
)


def _code_blocks(text: str, lang: str = "bash") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _logical_lines(block: str) -> list[str]:
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _commands(tokens: list[str]) -> list[list[str]]:
    """The superfan / shards / sweep commands inside one shell line's tokens (after `ray job submit ... --`,
    `&&`, an environment assignment, ...)."""
    found = []
    for i, tok in enumerate(tokens):
        starts = i == 0 or tokens[i - 1] in SEPARATORS or re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[i - 1])
        rest = tokens[i + 1 :]
        is_cmd = tok == "superfan" or (
            tok in PYTHONS and rest and (rest[:2] == ["-m", "shards"] or re.fullmatch(r"sweeps/\w+\.py", rest[0]))
        )
        if starts and is_cmd:
            end = next((j for j in range(i + 1, len(tokens)) if tokens[j] in SEPARATORS - {"--"}), len(tokens))
            found.append(tokens[i:end])
    return found


def _parser_for(cmd: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    if cmd[0] == "superfan":
        return superfan_parser(), cmd[1:]
    if cmd[1:3] == ["-m", "shards"]:
        return shards_parser(), cmd[3:]
    script = cmd[1]
    assert (REPO / script).is_file(), f"{script} does not exist"
    return sweep_parser(Path(script).stem, "docs"), cmd[2:]


def _deprecated_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Old spellings used in argv, walking into subcommands as the parser would."""
    bad, current = [], parser
    for tok in argv:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and tok in subs[0].choices:
            current = subs[0].choices[tok]
            continue
        action = current._option_string_actions.get(tok.split("=", 1)[0])
        if action is not None and getattr(action, "replacement", None):
            bad.append(f"{tok} (use {action.replacement})")
    return bad


def check_command(cmd: list[str], *, full: bool) -> str | None:
    """None if the parser accepts cmd; else why not. ``full=False`` (a command quoted in prose, often
    without its required arguments) checks the command names and flags only."""
    parser, argv = _parser_for(cmd)
    bad = _deprecated_flags(parser, argv)
    if bad:
        return f"deprecated spelling: {', '.join(bad)}"
    if not full:
        current = parser
        for tok in argv:
            subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
            if subs and not tok.startswith("-"):
                if tok in subs[0].choices:
                    current = subs[0].choices[tok]
                elif re.fullmatch(r"[a-z][a-z0-9-]*", tok):  # not a placeholder (COMMAND, ..., [X])
                    return f"unknown command {tok!r}"
            elif tok.startswith("--") and tok.split("=", 1)[0] not in current._option_string_actions:
                return f"unknown option {tok}"
        return None
    try:
        parser.parse_args(argv)
    except SystemExit as exit_:
        return f"rejected by the parser (exit {exit_.code})"
    return None


def commands_in(text: str) -> list[tuple[list[str], bool]]:
    """(tokens, full) for every command of the bash blocks (full) and of inline code spans (flags only)."""
    out: list[tuple[list[str], bool]] = []
    for block in _code_blocks(text):
        for line in _logical_lines(block):
            out += [(cmd, True) for cmd in _commands(shlex.split(line, comments=True))]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        try:
            tokens = shlex.split(span)
        except ValueError:
            continue
        out += [(cmd, False) for cmd in _commands(tokens) if len(cmd) > 1 or cmd[0] != "superfan"]
    return out


def repo_paths_in(text: str, page: Path) -> list[tuple[str, Path]]:
    """Relative links and backticked repository paths, each with the file it must be."""
    top = {p.name for p in REPO.iterdir()}
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        rel = target.split("#", 1)[0]
        out.append((target, (page.parent / rel).resolve()))
    for span in re.findall(r"`([^`\s]+)`", text):
        path = span.rstrip(".,:;")
        if NOT_REPO.match(path) or not re.fullmatch(r"[\w.\-/]+", path) or "://" in span:
            continue
        first = path.strip("/").split("/", 1)[0]
        if ("/" in path and first in top) or path in top - {".git"}:
            out.append((span, (REPO / path).resolve()))
    return out


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


# ----------------------------------------------------------------------------------------- the README


def test_readme_is_at_most_200_lines() -> None:
    n = len(README.read_text().splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; the front door stays within {MAX_LINES}: move detail to docs/"


def test_readme_starts_with_a_picture_of_results() -> None:
    head = "\n".join(README.read_text().splitlines()[:20])
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", head)
    assert images and all((REPO / i).is_file() for i in images), images


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_named_exists(page: Path) -> None:
    missing = [name for name, path in repo_paths_in(page.read_text(), page) if not path.exists()]
    assert not missing, f"{page.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_shown_is_accepted_by_its_parser(page: Path) -> None:
    commands = commands_in(page.read_text())
    if page == README:
        assert len(commands) >= 15, commands  # the extraction itself works
    problems = [f"{shlex.join(cmd)}: {why}" for cmd, full in commands if (why := check_command(cmd, full=full))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_to_a_section_finds_it(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if "#" not in target or re.match(r"[a-z]+://", target):
            continue
        rel, anchor = target.split("#", 1)
        doc = (page.parent / rel).resolve() if rel else page
        if doc.suffix == ".md" and doc.is_file() and anchor not in _anchors(doc):
            broken.append(target)
    assert not broken, f"{page.name}: links to sections that do not exist: {broken}"


def test_the_readme_links_every_docs_page() -> None:
    text = README.read_text()
    unlinked = [p.name for p in DOCS if f"(docs/{p.name})" not in text]
    assert not unlinked, f"README.md's docs table misses {unlinked}"


def test_the_checks_catch_what_they_should() -> None:
    """The checker rejects what it exists to reject (so a pass above means something)."""
    assert check_command(["superfan", "enhance", "./c", "a.png", "-o", "out", "--frobnicate"], full=True)
    assert check_command(["superfan", "enhance", "./c", "a.png"], full=True)  # -o is required
    assert check_command(["python", "-m", "shards", "pack", "300w", "a", "b", "--split", "x", "--profile", "45"],
                         full=True)  # fmt: skip
    assert check_command(["superfan", "train", "fan", "--frob"], full=False)
    assert check_command(["superfan", "trian"], full=False)
    assert check_command(["python", "sweeps/loss_weights.py", "--config", "tiny", "--samples", "2"], full=True) is None
    text = "```bash\nray job submit --working-dir . -- python sweeps/loss_weights.py \\\n    --bogus 1\n```\n"
    ((cmd, full),) = commands_in(text)
    assert cmd[:2] == ["python", "sweeps/loss_weights.py"] and check_command(cmd, full=full)
    paths = repo_paths_in("see `superfan/nope.py` and [x](docs/nope.md)", README)
    assert [p.exists() for _, p in paths] == [False, False]


# ----------------------------------------------------------------------------- the quick tour, run


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.mark.slow
def test_the_quick_tour_runs_as_written(swept: dict[str, Any], local_inputs: dict[str, str], tmp_path: Path) -> None:
    """The README's quick tour, its bash block unchanged, in a directory laid out as ``make demo`` leaves it:
    the demo's sweep and champion are the session's small finished sweep (conftest ``swept``) under the
    demo's names, its validation shards the sweep's own, and ``.venv/bin/activate`` puts this Python's
    environment first on PATH. Every command must succeed and leave what the tour says it does."""
    (block,) = _code_blocks(_section(README.read_text(), "Quick tour"))
    enhance = _section(README.read_text(), "Enhance your own photos")
    (api,) = _code_blocks(enhance, "python")
    local = [line for line in _code_blocks(enhance)[0].splitlines() if "crops/" in line or "boxes.json" in line]
    assert len(local) == 2, local  # the crop and the boxes lines: they need no download and no extra
    home = tmp_path / "tour"
    demo = home / ".superfan"
    shutil.copytree(swept["experiment"], demo / "sweeps" / "loss-weights-tiny", ignore=shutil.ignore_patterns("report"))
    shutil.copytree(swept["store"] / "champions" / "rep", demo / "champions" / "loss-weights-tiny")
    (demo / "champions" / "rep").symlink_to("loss-weights-tiny")  # the report finds it by the sweep's own name
    (demo / "data").mkdir()
    (demo / "data" / "synthetic-128-val").symlink_to(Path(local_inputs["val"]).parent)
    bin_dir = Path(sys.executable).parent
    (home / ".venv" / "bin").mkdir(parents=True)
    (home / ".venv" / "bin" / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": path}
    env.pop("RAY_ADDRESS", None)
    _photos(home)
    (home / "api.py").write_text(api)
    script = "\n".join([block, "python api.py", *local])
    log = tmp_path / "tour.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=home, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text(errors="replace")
    assert rc == 0, text[-6000:]
    from superfan.champion import verify_champion

    assert verify_champion(home / "champion")["name"] == "rep"  # superfan pull: a verified copy
    assert "verified" in text and "lineage" in text.lower()
    report = demo / "sweeps" / "loss-weights-tiny" / "report"
    assert all((report / name).is_file() for name in ("report.md", "curves.png", "champion.png"))
    assert "profile: tiny" in text  # superfan config tiny
    assert (home / "eval" / "results.json").is_file() and "Table 2" in text  # superfan evaluate
    # the enhance lines, each into out/: the crops' faces first, then the photo's one boxed face
    assert "enhanced 2 face(s) from 2 input(s)" in text and "enhanced 1 face(s) from 1 input(s)" in text
    assert sorted(p.name for p in (home / "out" / "faces").iterdir())[-1].startswith("group")
    assert (home / "out" / "contact_sheet.png").is_file() and (home / "out" / "landmarks.json").is_file()


def _photos(home: Path) -> None:
    """The inputs the README's enhance lines name: two face crops, face1.png and face2.png, and group.jpg
    with boxes.json (one face, boxed)."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (home / "crops").mkdir()
    for name in ("crops/a.png", "crops/b.png", "face1.png", "face2.png"):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(home / name)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(home / "group.jpg")
    (home / "boxes.json").write_text(json.dumps({"group.jpg": [[100, 60, 40, 48]]}))
