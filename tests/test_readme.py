"""The README's commands stay true: every ``jaxmem ...`` line in its code blocks parses with
today's command line (a renamed or removed flag fails here, not on a reader's machine), every
config file it names exists and loads, and the two fresh-machine commands are what CI runs.
The commands themselves run end to end on tiny models in test_study, test_outputs (the
README's extract command, verbatim), test_cli and test_cli_errors."""

import re
import shlex
from pathlib import Path

import pytest

from jaxmem.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    """argv of every ``jaxmem`` command in the README's shell code blocks (continuations
    joined, comments dropped)."""
    found, fence, lines = [], None, []  # fence: the open block's language, None outside
    for line in README.splitlines():
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence in ("", "bash", "sh", "console"):
            lines.append(line)
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith((".venv/bin/jaxmem ", "jaxmem ")):
                if part.count('"') % 2:  # the end of an outer quoted command (ssh --command=")
                    part = part.rstrip().removesuffix('"')
                found.append(shlex.split(part, comments=True)[1:])
    return found


COMMANDS = readme_commands()


def test_the_readme_has_its_commands():
    assert len(COMMANDS) >= 12
    assert {argv[0] for argv in COMMANDS} >= {"study", "train", "attack", "score", "extract"}


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_readme_command_parses(argv):
    build_parser(argv).parse_args(argv)  # argparse exits (SystemExit) on a flag it lacks


@pytest.mark.parametrize("argv", [a for a in COMMANDS if a[0] in ("study", "frontier")],
                         ids=lambda a: a[1])
def test_readme_configs_exist_and_load(argv):
    from jaxmem.study import StudyConfig
    from jaxmem.study.frontier import load_frontier

    path = ROOT / argv[1]
    assert path.exists(), path
    if argv[0] == "frontier":
        load_frontier(path)
    else:
        StudyConfig.from_yaml(path)


def test_ci_runs_the_readme_test_command():
    test_cmd = "bash scripts/setup.sh && .venv/bin/python -m pytest -p no:cacheprovider"
    assert test_cmd in README
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    assert ("bash scripts/setup.sh && .venv/bin/jaxmem study experiments/demo.yaml "
            "--out-dir results/demo") in README
