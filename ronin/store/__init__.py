"""The only package that speaks SQL: migrations, the database pool, the map and the queue."""

import json
from typing import Any

import orjson
from psycopg.types.json import set_json_dumps, set_json_loads


def dumps(value: Any) -> str:
    """JSON text, fast; the standard library takes what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


# JSON in and out of jsonb columns: orjson is several times faster than the standard library,
# which decoding a page of 100 services (200 documents) feels.
set_json_loads(orjson.loads)
set_json_dumps(dumps)
