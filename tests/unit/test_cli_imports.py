"""The operator commands start light: each imports its own module, never the node's server stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.main import get_command

from ronin.cli import app
from ronin.cli.common import COMMAND_MODULES
from tests.support.cli_probe import fresh_python, run_ronin

#: What serves the API or discovers nodes: nothing a reading command needs.
SERVER_STACK = {"fastapi", "uvicorn", "zeroconf", "aiohttp", "starlette"}
LIGHT_COMMANDS = [["map", "summary"], ["services"], ["jobs", "list"], ["watch"]]
#: After ``ronin ARGS``: write down every module it imported.
WRITE_MODULES = """
import json, os
with open(os.environ["MODULES_OUT"], "w") as out:
    json.dump(sorted(sys.modules), out)
"""
#: ``ronin`` as its console script runs it: the exit status is the command's.
RONIN = "from ronin.cli import main; main()"
#: A database URL on loopback where nothing listens: the command gets as far as connecting.
NO_DATABASE = "postgresql://ronin@127.0.0.1:1/ronin"


def imported(tmp_path: Path, args: list[str], **env: str) -> set[str]:
    """The modules ``ronin ARGS`` imported, run in a fresh interpreter."""
    out = tmp_path / "modules.json"
    run_ronin(args, WRITE_MODULES, MODULES_OUT=str(out), **env)
    return set(json.loads(out.read_text()))


def packages(modules: set[str]) -> set[str]:
    """The top-level packages of ``modules``."""
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("args", LIGHT_COMMANDS, ids=" ".join)
def test_a_reading_command_imports_no_server_stack(tmp_path: Path, args: list[str]) -> None:
    modules = imported(tmp_path, args, RONIN_DATABASE_URL=NO_DATABASE)
    assert COMMAND_MODULES[args[0]] in modules  # the probe ran the command
    assert packages(modules) & SERVER_STACK == set()
    assert "httpx" not in packages(modules)  # the remote backend is for RONIN_URL only


def test_a_network_discovery_loads_neither_mdns_nor_dns(tmp_path: Path) -> None:
    """zeroconf and dnspython are for the jobs that ask for mDNS, a domain or RONIN_DNS."""
    args = ["discover", "127.0.0.1/32", "--wait"]
    modules = imported(tmp_path, args, RONIN_DATABASE_URL=NO_DATABASE)
    assert {"ronin.jobs.worker", "ronin.jobs.discovery_executor", "aiohttp"} <= modules
    assert packages(modules) & {"zeroconf", "dns"} == set()


@pytest.mark.parametrize("args", LIGHT_COMMANDS, ids=" ".join)
def test_its_help_imports_no_server_stack(tmp_path: Path, args: list[str]) -> None:
    modules = imported(tmp_path, [*args, "--help"])
    assert COMMAND_MODULES[args[0]] in modules
    assert packages(modules) & SERVER_STACK == set()


@pytest.mark.parametrize("args", [["services"], ["jobs", "list"], ["watch"]], ids=" ".join)
def test_a_remote_reading_command_imports_no_server_stack(tmp_path: Path, args: list[str]) -> None:
    modules = imported(tmp_path, args, RONIN_URL="http://127.0.0.1:1")
    assert "ronin.cli.remote" in modules  # it did ask the (absent) node
    assert packages(modules) & SERVER_STACK == set()


def test_a_command_imports_only_its_own_module(tmp_path: Path) -> None:
    modules = imported(tmp_path, ["map", "summary", "--help"])
    commands = {module for module in COMMAND_MODULES.values() if module in modules}
    assert commands == {"ronin.cli.common", "ronin.cli.map"}


def test_every_command_is_named_with_the_module_that_registers_it() -> None:
    group = get_command(app)
    # The set, not the order: registration order follows which modules were imported first.
    assert sorted(group.commands) == sorted(COMMAND_MODULES)  # type: ignore[attr-defined]
    registered = [
        (info.name or str(getattr(info.callback, "__name__", "")), info.callback)
        for info in app.registered_commands
    ]
    registered += [
        (info.name or "", command.callback)
        for info in app.registered_groups
        if info.typer_instance is not None
        for command in info.typer_instance.registered_commands
    ]
    assert len(registered) > len(COMMAND_MODULES)
    for name, callback in registered:
        assert getattr(callback, "__module__", None) == COMMAND_MODULES[name], name


@pytest.mark.parametrize(
    ("args", "light"),
    [(["--version"], {"psycopg", "pydantic"}), (["map", "summary"], {"pydantic"})],
    ids=["--version", "map summary"],
)
def test_a_command_of_flags_only_skips_what_it_does_not_use(
    tmp_path: Path, args: list[str], light: set[str]
) -> None:
    """Typer coerces unset on-only flags (--help) through pydantic unless they read False;
    --version needs no database driver either."""
    modules = imported(tmp_path, args, RONIN_DATABASE_URL=NO_DATABASE)
    assert "typer" in packages(modules)  # the probe ran
    assert packages(modules) & light == set()


def test_an_unset_flag_still_works_when_given(tmp_path: Path) -> None:
    """--help is still --help, and a bad option is still refused (exit 2)."""
    shown = fresh_python(RONIN, ["map", "summary", "--help"])
    assert shown.returncode == 0
    assert "--json" in shown.stdout
    refused = fresh_python(RONIN, ["map", "summary", "--nope"])
    assert refused.returncode == 2


def test_the_console_scripts_import_loads_no_cli_library() -> None:
    """``from ronin.cli import main`` is what every ``spawn`` child (a sweep process) re-runs
    as the console script: it must not pay for Typer and Rich there."""
    probe = "import json, sys; from ronin.cli import main; print(json.dumps(sorted(sys.modules)))"
    done = fresh_python(probe)
    assert done.returncode == 0, done.stderr
    assert packages(set(json.loads(done.stdout))) & {"typer", "rich", "click", "psycopg"} == set()
