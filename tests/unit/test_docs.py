"""The README cannot drift from the code: every setting is documented, the commands are real."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs

from typer.main import get_command

from ronin.beacon import demo_descriptor
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


def test_the_readme_example_queries_find_the_demo_beacon() -> None:
    queries = re.findall(r"^curl .*/v1/services\?([^'\s]+)", README, flags=re.MULTILINE)
    assert queries
    node = demo_descriptor("127.7.0.1", 30437)
    for asked in queries:
        params = parse_qs(asked)
        wanted = set(params.get("capability", []))
        classes = params.get("node_class", [node["node_class"]])
        assert node["node_class"] in classes, asked
        assert any(wanted <= set(s["capabilities"]) for s in node["services"]), asked
