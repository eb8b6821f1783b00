"""The README cannot drift from the code: every setting is documented, the commands are real."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from ronin.cli import app

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    source = (ROOT / "ronin" / "config.py").read_text()
    settings = set(re.findall(r'"(RONIN_[A-Z_]+)"', source))
    assert settings
    assert {name for name in settings if f"`{name}`" not in README} == set()


def test_every_command_is_documented() -> None:
    group = get_command(app)
    commands = [
        f"ronin {name} {sub}"
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for sub in getattr(command, "commands", {})
    ]
    assert commands
    assert [c for c in commands if f"`{c}" not in README] == []


def test_ci_runs_the_readme_test_command() -> None:
    opening = README.split("```")[1]
    test_line = next(line for line in opening.splitlines() if "scripts/check" in line)
    assert "scripts/check" in (ROOT / ".ci" / "run").read_text()
    assert test_line.startswith("pip install -e '.[test]'")
