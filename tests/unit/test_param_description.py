"""Job params are described once (``param_fields.FIELDS``): the validator, the OpenAPI document
the node serves and the CLI's options keep to each field's bounds and default, so none of the
three can drift from the others."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from typer.main import get_command
from typer.testing import CliRunner

from ronin.api.app import create_app
from ronin.cli import app as cli_app
from ronin.config import Settings
from ronin.discovery.param_fields import DEPTH, FIELDS, MDNS_WINDOW, ParamField
from ronin.discovery.params import KNOWN_KEYS, json_schema, parse_params
from ronin.errors import InvalidTarget
from ronin.store.database import Database

BASE: dict[str, Any] = {"target": {"type": "network_cidr", "value": "192.168.1.0/24"}}
SCALARS = [field for field in FIELDS if field.json_type != "array"]
LISTS = [field for field in FIELDS if field.json_type == "array"]
#: The commands that make a job, and the option each takes for a field.
COMMANDS = (("discover",), ("schedules", "add"))
OPTION_OF = {
    "protocols": "protocol",
    "depth": "depth",
    "ports": "port",
    "concurrency": "concurrency",
    "rate": "rate",
    "mdns_window_s": "mdns_window",
}


def name_of(field: ParamField) -> str:
    return field.name


def accepted(name: str, value: Any) -> Any:
    """What the validator makes of ``value`` as the param ``name``."""
    return getattr(parse_params(BASE | {name: value}), name)


def refused(name: str, value: Any) -> None:
    with pytest.raises(InvalidTarget) as raised:
        parse_params(BASE | {name: value})
    assert raised.value.field == name


def just_outside(field: ParamField) -> tuple[float, float]:
    """The nearest values below and above the field's bounds."""
    assert field.low is not None
    assert field.high is not None
    if field.json_type == "integer":
        return field.low - 1, field.high + 1
    return math.nextafter(field.low, -math.inf), math.nextafter(field.high, math.inf)


def items(field: ParamField, count: int) -> list[Any]:
    """``count`` distinct valid items of a list field."""
    if field.enum:
        return list(field.enum[:count])
    assert field.item_low is not None
    return list(range(field.item_low, field.item_low + count))


def stated(field: ParamField) -> dict[str, Any]:
    """What a schema must say of ``field``: its bounds, its items' and its default."""
    if field.json_type == "array":
        item_bounds = {"minimum": field.item_low, "maximum": field.item_high}
        return {
            "type": "array",
            "minItems": field.low,
            "maxItems": field.high,
            "items": item_bounds | {"enum": list(field.enum) or None},
            "default": list(field.default),
        }
    return {
        "type": field.json_type,
        "minimum": field.low,
        "maximum": field.high,
        "default": field.default,
    }


def said_by(schema: dict[str, Any]) -> dict[str, Any]:
    """The same keys, as ``schema`` says them."""
    if schema.get("type") == "array":
        item = schema["items"]
        return {
            "type": "array",
            "minItems": schema.get("minItems"),
            "maxItems": schema.get("maxItems"),
            "items": {key: item.get(key) for key in ("minimum", "maximum", "enum")},
            "default": schema.get("default"),
        }
    return {key: schema.get(key) for key in ("type", "minimum", "maximum", "default")}


@pytest.mark.parametrize("field", SCALARS, ids=name_of)
def test_a_number_is_accepted_at_its_bounds_and_refused_just_outside(field: ParamField) -> None:
    assert accepted(field.name, field.low) == field.low
    assert accepted(field.name, field.high) == field.high
    below, above = just_outside(field)
    refused(field.name, below)
    refused(field.name, above)
    assert getattr(parse_params(BASE), field.name) == field.default


@pytest.mark.parametrize("field", LISTS, ids=name_of)
def test_a_list_is_accepted_at_its_bounds_and_refused_just_outside(field: ParamField) -> None:
    assert field.low is not None
    assert accepted(field.name, items(field, field.low)) == tuple(items(field, field.low))
    refused(field.name, items(field, field.low - 1))
    most = field.high if field.high is not None else len(field.enum)
    assert accepted(field.name, items(field, most)) == tuple(items(field, most))
    refused(field.name, [*items(field, most), items(field, 1)[0]])  # one more: a repeat at most
    if field.high is not None:
        refused(field.name, items(field, field.high + 1))
    assert getattr(parse_params(BASE), field.name) == tuple(field.default)


@pytest.mark.parametrize("field", LISTS, ids=name_of)
def test_a_list_item_is_accepted_at_its_bounds_and_refused_just_outside(
    field: ParamField,
) -> None:
    if field.enum:
        for value in field.enum:
            assert accepted(field.name, [value]) == (value,)
        refused(field.name, ["-".join(field.enum)])
        return
    assert field.item_low is not None
    assert field.item_high is not None
    for value in (field.item_low, field.item_high):
        assert accepted(field.name, [value]) == (value,)
    refused(field.name, [field.item_low - 1])
    refused(field.name, [field.item_high + 1])


def test_a_null_pacing_key_is_taken_as_absent() -> None:
    # The schema refuses null; the validator takes it as the default rather than handing
    # the crawl a None window to browse mDNS for.
    assert accepted(MDNS_WINDOW.name, None) == MDNS_WINDOW.default
    assert accepted("concurrency", None) is None
    assert accepted("rate", None) is None


def test_the_json_schema_states_the_description() -> None:
    properties = json_schema()["properties"]
    assert set(properties) == KNOWN_KEYS == {"target", *(field.name for field in FIELDS)}
    for field in FIELDS:
        assert said_by(properties[field.name]) == stated(field), field.name


def served_param_schemas(document: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema of job params in the OpenAPI ``document``, and where it is."""
    if isinstance(document, dict):
        if set(document.get("properties", {})) == KNOWN_KEYS:
            yield where, document
        for key, value in document.items():
            yield from served_param_schemas(value, f"{where}/{key}")
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from served_param_schemas(value, f"{where}/{index}")


def test_the_served_openapi_document_states_the_description() -> None:
    settings = Settings(database_url="postgresql://ronin.invalid/ronin", allow="127.0.0.0/8")
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(settings.database_url, open=False)
    node = create_app(settings, Database(pool=pool, conninfo=str(settings.database_url)))
    found = dict(served_param_schemas(node.openapi()))
    assert {
        "/paths//v1/jobs/post/requestBody/content/application/json/schema",
        "/paths//v1/klf/post/requestBody/content/application/json/schema/properties/payload"
        "/properties/params",
        "/components/schemas/ScheduleRequest/properties/params",
    } <= set(found)
    for where, schema in found.items():
        for field in FIELDS:
            assert said_by(schema["properties"][field.name]) == stated(field), where


def job_options(path: tuple[str, ...]) -> dict[str, Any]:
    """The options of the command at ``path``, by name."""
    command: Any = get_command(cli_app)
    for name in path:
        command = command.commands[name]
    return {param.name: param for param in command.params}


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_the_cli_options_state_the_description(path: tuple[str, ...]) -> None:
    options = job_options(path)
    for field in FIELDS:
        option = options[OPTION_OF[field.name]]
        if field.json_type == "array":  # each use of a list's option is one item
            assert (option.min, option.max) == (field.item_low, field.item_high), field.name
            assert option.multiple, field.name
        else:
            assert (option.min, option.max) == (field.low, field.high), field.name
        assert option.help == field.help, field.name
        # --depth is always sent, so it defaults as the job would; the others send nothing.
        assert option.default == (field.default if field is DEPTH else None), field.name


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("field", SCALARS, ids=name_of)
def test_the_cli_refuses_just_outside_the_bounds(path: tuple[str, ...], field: ParamField) -> None:
    flag = "--" + OPTION_OF[field.name].replace("_", "-")
    targets = ("nightly", "127.0.0.1") if path == ("schedules", "add") else ("127.0.0.1",)
    for value in just_outside(field):
        answer = CliRunner().invoke(cli_app, [*path, *targets, f"{flag}={value!r}"])
        assert answer.exit_code == 2, answer.output
        assert "Invalid value" in answer.output
        assert flag in answer.output
