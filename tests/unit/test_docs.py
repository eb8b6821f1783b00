"""The docs cannot drift from the code: every setting and command is documented and real,
the README opens with the two commands, and every link between the pages resolves."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, unquote

from typer.main import get_command

from ronin.beacon import demo_descriptor
from ronin.cli import app

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FIRST_SCREEN = 60  # lines

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def table_rows(text: str, header: str) -> list[str]:
    """The rows of the Markdown table whose header row starts with `header`, so a name
    mentioned in prose elsewhere does not count as documented."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def first_cells(rows: list[str]) -> list[str]:
    """What each row documents: its first cell."""
    return [row.split("|")[1].strip() for row in rows]


SETTINGS_TABLE = "\n".join(table_rows(CONFIGURATION, "variable"))
COMMANDS_TABLE = "\n".join(table_rows(README, "command"))


def settings_in_code() -> set[str]:
    """Every RONIN_* variable the settings read, as ronin/config.py names them."""
    source = (ROOT / "ronin" / "config.py").read_text()
    return set(re.findall(r'"(RONIN_[A-Z_0-9]+)"', source))


def command_paths() -> list[list[str]]:
    """Every command of the CLI, as the words a user types after `ronin`."""
    group = get_command(app)
    paths = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", {})
        paths += [[name, sub] for sub in subs] if subs else [[name]]
    return paths


def resolves(words: list[str]) -> bool:
    """Whether `ronin WORDS...` names a real command (or, with no words, a root option)."""
    command = get_command(app)
    for word in words:
        subcommands = getattr(command, "commands", {})
        if word not in subcommands:
            return False
        command = subcommands[word]
    return True


def prose_keeping_spans(text: str) -> str:
    """The text without its code blocks (a `# comment` in one is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """The text with its code blocks and code spans blanked, so only real links are read."""
    return re.sub(r"`[^`\n]*`", "", prose_keeping_spans(text))


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    headings = re.findall(r"^#+\s+(.*)$", prose_keeping_spans(text), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    """The links of a page that point into the repository rather than to the web."""
    targets = [a or b for a, b in LINK.findall(prose(page.read_text()))]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken(page: Path, target: str) -> bool:
    """Whether a relative link from `page` misses its file, or its heading there."""
    path, _, anchor = target.partition("#")
    file = (page.parent / unquote(path)).resolve() if path else page
    if not file.exists():
        return True
    return bool(anchor) and file.suffix == ".md" and anchor not in anchors(file.read_text())


def test_every_setting_is_documented() -> None:
    settings = settings_in_code()
    assert settings
    assert {name for name in settings if f"`{name}`" not in SETTINGS_TABLE} == set()


def test_every_documented_setting_is_read_by_the_code() -> None:
    cells = "\n".join(first_cells(table_rows(CONFIGURATION, "variable")))
    documented = set(re.findall(r"`(RONIN_[A-Z_0-9]+)`", cells))
    assert documented
    assert documented - settings_in_code() == set()


def test_every_command_is_documented() -> None:
    group = get_command(app)
    commands = [
        f"ronin {name} {sub}"
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for sub in getattr(command, "commands", {})
    ]
    assert commands
    assert [c for c in commands if f"`{c}" not in README] == []


def test_every_command_is_in_the_commands_table() -> None:
    commands = [f"ronin {' '.join(path)}" for path in command_paths()]
    assert len(commands) > 10
    missing = [c for c in commands if not re.search(rf"`{c}( |`)", COMMANDS_TABLE)]
    assert missing == []


def test_every_command_in_the_table_is_real() -> None:
    cells = "\n".join(first_cells(table_rows(README, "command")))
    documented = re.findall(r"`ronin ([^`]*)`", cells)
    assert documented
    words = [re.findall(r"^(?:[a-z][a-z-]*\s*)*", row)[0].split() for row in documented]
    root_options = {o for p in get_command(app).params for o in p.opts}
    unknown = [
        row
        for row, path in zip(documented, words, strict=True)
        if not (resolves(path) if path else row.split()[0] in root_options)
    ]
    assert unknown == []


def test_ci_runs_the_readme_test_command() -> None:
    opening = README.split("```")[1]
    test_line = next(line for line in opening.splitlines() if "scripts/check" in line)
    assert "scripts/check" in (ROOT / ".ci" / "run").read_text()
    assert test_line.startswith("pip install -e '.[test]'")


def test_the_readme_opens_with_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:FIRST_SCREEN])
    opening = first_screen.split("```")[1]
    lines = [line for line in opening.splitlines() if line.startswith("pip install")]
    assert len(lines) == 2
    runs, tests = lines
    assert "ronin beacon" in runs
    assert "ronin discover" in runs
    assert "--wait" in runs
    assert tests.startswith("pip install -e '.[test]' && scripts/check")


def test_the_api_docs_example_queries_find_the_demo_beacon() -> None:
    queries = re.findall(r"^curl .*/v1/services\?([^'\s]+)", API, flags=re.MULTILINE)
    assert queries
    node = demo_descriptor("127.7.0.1", 30437)
    for asked in queries:
        params = parse_qs(asked)
        wanted = set(params.get("capability", []))
        classes = params.get("node_class", [node["node_class"]])
        assert node["node_class"] in classes, asked
        assert any(wanted <= set(s["capabilities"]) for s in node["services"]), asked


def test_every_relative_link_resolves() -> None:
    links = [(page, target) for page in PAGES for target in relative_links(page)]
    assert len(links) > len(PAGES)
    assert [f"{p.relative_to(ROOT)}: {t}" for p, t in links if broken(p, t)] == []


def test_every_docs_page_is_linked_from_the_readme_or_the_index() -> None:
    linked = {
        (page.parent / target.partition("#")[0]).resolve()
        for page in (ROOT / "README.md", ROOT / "docs" / "README.md")
        for target in relative_links(page)
    }
    pages = set((ROOT / "docs").glob("*.md"))
    assert pages
    assert {p.name for p in pages if p.resolve() not in linked} == set()
