"""The one description of a job's params besides its target (PROTOCOL.md section 5): each
field's JSON type, bounds, default and help line. The validators, the OpenAPI schema and the
CLI's options are all made from ``FIELDS``, so none of them can name a bound of its own.

Beyond PROTOCOL.md section 5, three optional keys of Ronin's own: "concurrency" (probes in
flight), "rate" (probes started per second; 0 for no limit) and "mdns_window_s" (how long an
mdns job browses the local link).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ronin.errors import InvalidTarget

PROTOCOLS = ("http-api", "mdns", "dns-sd")
#: What a job probes when its params name no protocols, for the API, KLF and the CLI alike.
DEFAULT_PROTOCOLS = ("http-api",)
KOS_PORT = 30437
#: The pace when a job names none: one a home network survives (the executor applies it, so
#: a job's params say only what was asked).
DEFAULT_CONCURRENCY = 256
DEFAULT_RATE = 1000.0
DEFAULT_DEPTH = 1
DEFAULT_MDNS_WINDOW_S = 3.0

ParamType = Literal["integer", "number", "array"]
ItemType = Literal["integer", "string"]


@dataclass(frozen=True, slots=True)
class ParamField:
    """One job parameter: what the validator, the JSON schema and the CLI option all say.

    For a scalar, ``low`` and ``high`` bound its value; for a list (always without repeats),
    they bound how many items it has and ``item_low``/``item_high`` or ``enum`` its items.
    """

    name: str
    json_type: ParamType
    help: str
    low: int | None = None
    high: int | None = None
    #: What an absent key means, said in the schema; None: the key stays unset (None).
    default: Any = None
    #: A null value is taken as the key absent (the pacing keys, whose unset is "the default").
    nullable: bool = False
    #: How a refusal names a valid value ("depth must be an integer from 1 to 8").
    said_as: str = "a number"
    item_type: ItemType | None = None
    item_low: int | None = None
    item_high: int | None = None
    enum: tuple[str, ...] = ()

    def check(self, value: Any) -> Any:
        """``value`` if valid (a list as a tuple); ``InvalidTarget`` naming this field if not."""
        if value is None and self.nullable:
            return self.default
        if self.json_type == "array":
            return self._check_list(value)
        return self._check_scalar(value)

    def schema(self) -> dict[str, Any]:
        """This field's JSON Schema, for the OpenAPI document."""
        if self.json_type == "array":
            return self._list_schema()
        schema: dict[str, Any] = {"type": self.json_type, "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def _check_scalar(self, value: Any) -> Any:
        number_types = (int,) if self.json_type == "integer" else (int, float)
        if not _is_number(value, number_types) or not _within(value, self.low, self.high):
            raise InvalidTarget(
                f"{self.name} must be {self.said_as} from {self.low} to {self.high}",
                field=self.name,
            )
        return value

    def _check_list(self, value: Any) -> tuple[Any, ...]:
        item = self.name.removesuffix("s")
        if not isinstance(value, list) or not _within(len(value), self.low, self.high):
            raise InvalidTarget(self._list_rule(), field=self.name)
        for each in value:
            if not self._item_ok(each):
                raise InvalidTarget(self._item_rule(each), field=self.name)
        if len(set(value)) != len(value):
            raise InvalidTarget(f"{self.name} lists a {item} twice", field=self.name)
        return tuple(value)

    def _list_rule(self) -> str:
        if self.enum:
            return f"{self.name} must be a non-empty list of {', '.join(self.enum)}"
        return f"{self.name} must be a list of {self.low} to {self.high} {self.name}"

    def _item_ok(self, each: Any) -> bool:
        if self.enum:
            return each in self.enum
        return _is_number(each, (int,)) and _within(each, self.item_low, self.item_high)

    def _item_rule(self, each: Any) -> str:
        item = self.name.removesuffix("s")
        if self.enum:
            return f"unknown {item} {each!r}: use {', '.join(self.enum)}"
        return f"{item} {each!r} is not from {self.item_low} to {self.item_high}"

    def _list_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "minItems": self.low}
        if self.high is not None:
            schema["maxItems"] = self.high
        schema["uniqueItems"] = True
        items: dict[str, Any] = {"type": self.item_type}
        if self.enum:
            items["enum"] = list(self.enum)
        else:
            items |= {"minimum": self.item_low, "maximum": self.item_high}
        schema["items"] = items
        schema["default"] = list(self.default)
        return schema


def _is_number(value: Any, types: tuple[type, ...]) -> bool:
    """One of ``types``, and never a bool (which Python counts as an int)."""
    return isinstance(value, types) and not isinstance(value, bool)


def _within(value: float, low: int | None, high: int | None) -> bool:
    """``low <= value <= high``, where None is no bound."""
    return (low is None or low <= value) and (high is None or value <= high)


def _either(names: tuple[str, ...]) -> str:
    """``a, b or c``."""
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


PROTOCOLS_FIELD = ParamField(
    name="protocols",
    json_type="array",
    low=1,
    default=DEFAULT_PROTOCOLS,
    item_type="string",
    enum=PROTOCOLS,
    help=f"{_either(PROTOCOLS)} (repeatable; default {', '.join(DEFAULT_PROTOCOLS)}).",
)
DEPTH = ParamField(
    name="depth",
    json_type="integer",
    low=1,
    high=8,
    default=DEFAULT_DEPTH,
    said_as="an integer",
    help="1: the target only; N: follow peers N-1 hops.",
)
PORTS = ParamField(
    name="ports",
    json_type="array",
    low=1,
    high=64,
    default=(KOS_PORT,),
    item_type="integer",
    item_low=1,
    item_high=65535,
    help=f"Port to probe (repeatable; default {KOS_PORT}).",
)
CONCURRENCY = ParamField(
    name="concurrency",
    json_type="integer",
    low=1,
    high=4096,
    nullable=True,
    help=f"Probes in flight at once (default {DEFAULT_CONCURRENCY}).",
)
RATE = ParamField(
    name="rate",
    json_type="number",
    low=0,
    high=1_000_000,
    nullable=True,
    help=f"Probes started per second (default {DEFAULT_RATE:,.0f}, so a /16 takes over a "
    "minute; 0: no limit).",
)
MDNS_WINDOW = ParamField(
    name="mdns_window_s",
    json_type="number",
    low=1,
    high=60,
    default=DEFAULT_MDNS_WINDOW_S,
    nullable=True,
    help=f"Seconds to browse mDNS (default {DEFAULT_MDNS_WINDOW_S:g}).",
)
#: Every job param but the target, in the order the schema lists them.
FIELDS: tuple[ParamField, ...] = (PROTOCOLS_FIELD, DEPTH, PORTS, CONCURRENCY, RATE, MDNS_WINDOW)
