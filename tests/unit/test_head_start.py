"""Which commands start the embedded server while they load (``ronin.cli.head_start``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ronin.cli import head_start
from ronin.store import embedded


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The data directories a head start was asked for (none is started)."""
    calls: list[Path] = []
    monkeypatch.setattr(embedded, "start_embedded_soon", calls.append)
    monkeypatch.setenv("RONIN_DATA_DIR", str(tmp_path))
    return calls


@pytest.mark.parametrize(
    "args",
    [
        ["discover", "127.0.0.0/24", "--wait"],
        ["-v", "services"],
        ["jobs", "list", "--json"],
        ["serve"],
        ["worker"],
        ["map", "summary"],
    ],
    ids=" ".join,
)
def test_a_command_on_the_local_database_starts_it_early(
    started: list[Path], tmp_path: Path, args: list[str]
) -> None:
    head_start.start_database_early(args)
    assert started == [tmp_path]


@pytest.mark.parametrize(
    "args",
    [[], ["--version"], ["version"], ["beacon"], ["discover", "--help"], ["jobs", "--help"]],
    ids=lambda args: " ".join(args) or "(none)",
)
def test_a_command_without_the_database_does_not(started: list[Path], args: list[str]) -> None:
    head_start.start_database_early(args)
    assert started == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RONIN_DATABASE_URL", "postgresql://ronin@127.0.0.1:1/ronin"),
        ("RONIN_URL", "http://127.0.0.1:1"),
        ("RONIN_STATEMENT_TIMEOUT_S", "soon"),  # bad settings: the command says so itself
    ],
)
def test_nor_one_on_another_database_or_bad_settings(
    started: list[Path], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    head_start.start_database_early(["services"])
    assert started == []
